/* The hub of one event loop: channel -> filter groups -> subscribers, source -> channels. Each
 * broker message that reaches the loop is checked once per filter group and encoded into its
 * `message` frame at most once per channel, handed by reference to every subscriber of every
 * group that takes it. Loop-local: no locks. The hub never includes the session;
 * it reaches subscribers through the callbacks below. */
#ifndef WSB_BRIDGE_HUB_H
#define WSB_BRIDGE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_msg;
struct wsb_frame;
struct wsb_filter;
struct wsb_loop_metrics;

struct wsb_hub_cbs {
    /** A message frame for one subscriber. Borrowed: ref it to keep it. `ack_token` is
     * non-zero on `delivery: ack` sources (this subscriber alone got the message). */
    void (*deliver)(void *owner, uint32_t slot, struct wsb_frame *f, uint64_t ack_token);
    /** A pending subscription's source started; positions is JSON text or NULL. */
    void (*started)(void *owner, uint32_t slot, const char *positions);
    /** The source failed; the hub frees the subscription right after this call (forget the
     * handle; do not call the hub from here). */
    void (*failed)(void *owner, uint32_t slot, const char *code, const char *message);
    /** `count` records of the source will never reach the subscriber, who is owed a `gap`
     * for them: one the connector could not decode (WSB_MSG_SKIPPED, count 1), or records
     * lost at the broker (WSB_MSG_LOST, `lost` true). */
    void (*skipped)(void *owner, uint32_t slot, uint64_t count, bool lost);
};

struct wsb_hub;
struct wsb_hub_sub;

struct wsb_hub *wsb_hub_new(const struct wsb_hub_cbs *cbs, struct wsb_loop_metrics *metrics);
/** Frees every channel and source; subscriptions must be detached first. */
void wsb_hub_free(struct wsb_hub *h);

/** Attaches subscriber (owner, slot) to `channel` fed by `source_id`, in the group of the
 * subscribers whose resolved filter has the same canonical text as `filter` (taken, freed by
 * the hub; NULL: unfiltered, every record). On success *active says whether the source
 * already runs; then *positions is the malloc'd JSON of the next offset per partition at
 * which this subscriber's delivery starts (or NULL when the source has none). A pending
 * subscriber gets cbs->started later. Returns NULL on OOM. */
struct wsb_hub_sub *wsb_hub_attach(struct wsb_hub *h, const char *channel, size_t len,
                                   uint64_t source_id, struct wsb_filter *filter, void *owner,
                                   uint32_t slot, bool *active, char **positions);
void wsb_hub_detach(struct wsb_hub *h, struct wsb_hub_sub *sub);

/** Moves `sub` to the group of `filter` (taken; NULL: unfiltered) between two messages (a
 * reload or a new token changed what it may see). Returns 0 when the filter is the one it
 * has, 1 when it moved, -1 on OOM (it then gets nothing; end the subscription). */
int wsb_hub_refilter(struct wsb_hub *h, struct wsb_hub_sub *sub, struct wsb_filter *filter);

/** Number of filter groups (the unfiltered one included) of `channel` fed by `source_id`
 * on this loop (tests). */
size_t wsb_hub_groups(const struct wsb_hub *h, const char *channel, size_t len, uint64_t source_id);

/** Mailbox events. wsb_hub_message takes no ownership of `m`. */
void wsb_hub_message(struct wsb_hub *h, const struct wsb_msg *m);
void wsb_hub_started(struct wsb_hub *h, uint64_t source_id, const char *positions);
void wsb_hub_failed(struct wsb_hub *h, uint64_t source_id, const char *code, const char *msg);
void wsb_hub_stopped(struct wsb_hub *h, uint64_t source_id);
/** The registry posted this loop a RESYNC for `source_id` (it was not fed the source's
 * records; bridge/sources.h): until that resync is in, subscribers attached stay pending,
 * whatever the source's state. Call before wsb_hub_attach. */
void wsb_hub_await(struct wsb_hub *h, uint64_t source_id);
/** The RESYNC: the source's records for this loop resume at `positions` (JSON text). The
 * last awaited one activates the pending subscribers with those positions. */
void wsb_hub_resync(struct wsb_hub *h, uint64_t source_id, const char *positions);

/** Number of channels with at least one subscriber (for tests and metrics). */
size_t wsb_hub_channels(const struct wsb_hub *h);

#endif
