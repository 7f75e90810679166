/* The source registry: which broker sources are being read, shared by every loop. One
 * upstream read per shared source however many clients (on however many loops) subscribe;
 * the last release stops it. Guarded by one mutex: touched on subscribe/unsubscribe, never
 * per message. A source id carries the set of loops its events go to in its low bits, so the
 * sink routes a message without a lookup. */
#ifndef WSB_BRIDGE_SOURCES_H
#define WSB_BRIDGE_SOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/ids.h"
#include "connectors/connector.h"

struct wsb_sources;

struct wsb_sources *wsb_sources_new(struct wsb_connector *const *connectors, size_t n,
                                    unsigned nloops);
void wsb_sources_free(struct wsb_sources *s);

/** Finds or starts the source `src` on connector `connector` and takes one reference.
 * A shared source (from latest, broadcast) is keyed by its broker fields; any other (another
 * start position, or `delivery: ack`) is private to the calling subscription and loop. Calls the
 * connector's subscribe (non-blocking) when it starts a source. Returns WSB_OK and *id. @locality
 * loop */
enum wsb_err wsb_sources_acquire(struct wsb_sources *s, size_t connector,
                                 const struct wsb_source *src, unsigned loop, uint64_t *id);

/** Drops one reference. Returns true when that stopped the source (the caller tells the
 * loops in the id's mask). A shared broadcast source whose last reference goes lingers
 * instead (returns false): it keeps reading for the linger time, so a reconnect re-acquires
 * it warm (its loops' hubs keep its positions exact meanwhile); then the registry's own
 * thread unsubscribes it and calls the stopped callback. Unknown ids (already failed) are
 * ignored. @locality loop */
bool wsb_sources_release(struct wsb_sources *s, uint64_t id);

/** The callback that tells the loops of a source stopped by the linger thread (called on
 * that thread, outside the registry's lock). No linger happens before it is set. */
void wsb_sources_set_stopped_cb(struct wsb_sources *s, void (*cb)(void *ctx, uint64_t id),
                                void *ctx);

/** Ends lingering for good: joins the linger thread (so the stopped callback and connector
 * calls never come after it returns); lingering sources stay until wsb_sources_free, later
 * releases stop at once. Call before the loops and connectors go. @locality main thread */
void wsb_sources_shutdown(struct wsb_sources *s);

/** limits.source_linger_ms; 0 stops sources at their last release. A shorter value also
 * shortens lingers under way. @locality any */
void wsb_sources_set_linger(struct wsb_sources *s, uint32_t ms);

/** Sources started and stopped so far, and those reading now for subscribers / lingering.
 * @locality any */
void wsb_sources_stats(struct wsb_sources *s, uint64_t *started, uint64_t *stopped, size_t *reading,
                       size_t *lingering);

/** Forgets a failed source so the next acquire starts a fresh one. @locality any */
void wsb_sources_forget(struct wsb_sources *s, uint64_t id);

/** Connector index of a source, or -1 when unknown. */
long wsb_sources_connector(struct wsb_sources *s, uint64_t id);

/** Number of sources being read. */
size_t wsb_sources_count(struct wsb_sources *s);

#endif
