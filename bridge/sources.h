/* The source registry: which broker sources are being read, shared by every loop. One
 * upstream read per shared source however many clients (on however many loops) subscribe;
 * the last release stops it. Guarded by one mutex: touched on subscribe/unsubscribe, and by
 * the connector sink once per record (wsb_sources_route / wsb_sources_skip: a map lookup).
 * A source id carries the set of loops its events go to in its low bits (starts, failures,
 * stops); a shared source's records go only to the loops *fed* (below).
 *
 * The feed of a shared source: a loop is fed from its first reference on; it stays fed until
 * the sink settles it after its last reference went (so records the sink holds for it still
 * reach it in order). A loop that is not fed gets none of the source's records, and the
 * registry keeps the next offset per partition instead; when it takes a reference again, it
 * is posted a RESYNC with those positions (through the resync callback, under the registry's
 * lock, so before any record the sink routes to it afterwards), and its new subscribers wait
 * for that resync to learn where their delivery starts. With no loop fed (a lingering
 * source), the connector asks wsb_sources_skip per record and builds nothing. */
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
                                 const struct wsb_source *src, unsigned loop, uint64_t *id,
                                 bool *resync);

/** Drops one reference. Returns true when that stopped the source (the caller tells the
 * loops in the id's mask). A shared broadcast source whose last reference goes lingers
 * instead (returns false): it keeps reading for the linger time, so a reconnect re-acquires
 * it warm (its loops' hubs keep its positions exact meanwhile); then the registry's own
 * thread unsubscribes it and calls the stopped callback. Unknown ids (already failed) are
 * ignored. `loop` is the caller's loop (the one that acquired). @locality loop */
bool wsb_sources_release(struct wsb_sources *s, uint64_t id, unsigned loop);

/** The callback that tells the loops of a source stopped by the linger thread (called on
 * that thread, outside the registry's lock). No linger happens before it is set. */
void wsb_sources_set_stopped_cb(struct wsb_sources *s, void (*cb)(void *ctx, uint64_t id),
                                void *ctx);

/** Turns the feeds on: `cb` posts a RESYNC mail for source `id` with `positions` (JSON text,
 * {"PARTITION": NEXT, ...}) to loop `loop`. Called under the registry's lock: it must only
 * post. Without it every loop of a source's id gets every record. @locality main thread */
void wsb_sources_set_resync_cb(struct wsb_sources *s,
                               void (*cb)(void *ctx, unsigned loop, uint64_t id,
                                          const char *positions),
                               void *ctx);

/** The connector reported source `id` started with `positions` (JSON text or NULL): the
 * positions a loop fed later resumes at, until records move them. Call before the STARTED
 * mails are posted. @locality connector thread */
void wsb_sources_started(struct wsb_sources *s, uint64_t id, const char *positions);

/** A record of source `id` (partition and offset, -1 when none) is being handed over: returns
 * the loops to post it to (a shared source's fed loops, possibly none; any other source's id
 * mask) and notes its position. *settle is true when a fed loop has no reference left: call
 * wsb_sources_settle once the records held for the loops are posted. @locality connector
 * thread */
uint64_t wsb_sources_route(struct wsb_sources *s, uint64_t id, int32_t partition, int64_t offset,
                           bool *settle);

/** Stops feeding the loops of source `id` that have no reference left. Call only when the
 * calling thread holds none of its records unposted. @locality connector thread */
void wsb_sources_settle(struct wsb_sources *s, uint64_t id);

/** True when no loop is fed the record of source `id` about to be handed over (or the id is
 * gone): its position `next` (the offset after it) on `partition` is noted and the caller
 * drops it unbuilt. False: hand it over as usual. @locality connector thread */
bool wsb_sources_skip(struct wsb_sources *s, uint64_t id, int32_t partition, int64_t next);

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

/** The resume positions {"PARTITION":NEXT_OFFSET,...} of the partitions whose next offset is
 * known (next[i] >= 0), "{}" when none: a malloc'd string the caller frees, NULL on OOM.
 * Shared by the registry's RESYNC and the hub's `subscribed` answers. */
char *wsb_positions_json(const int64_t *next, size_t npart);

#endif
