/* The hand-off gate of one event loop: broker messages wait in the loop's mailbox, not in
 * the clients' out-queues, while a client that keeps up is still writing the last batch.
 * A client whose queue is over a small threshold is "behind"; while a behind client still
 * has allowance it "holds" the sources it is subscribed to: the loop hands no further
 * message of those sources to the hub (the mailbox puts them aside, in order), so a broker
 * burst reaches the sockets at the pace the clients read it instead of all at once, and the
 * other sources of the loop go on. Holding the gate
 * costs a client allowance (1 µs per µs while behind, repaid at half that rate while not),
 * so a client that stalls, or that is slower than the broker over time, soon stops holding
 * everyone back and is judged by the send-buffer limits (SPEC §2) like before.
 * Pure: no I/O, time is passed in. @locality loop */
#ifndef WSB_BRIDGE_GATE_H
#define WSB_BRIDGE_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/map.h"

/** One client's state; embedded in the session. */
struct wsb_gate_member {
    struct wsb_gate_member *prev, *next; /* in the gate's list of behind members */
    bool behind;
    bool holding;   /* counted in wsb_gate.holders */
    bool exhausted; /* allowance used up; set at debt >= allow, cleared when repaid */
    int64_t debt_us;
    int64_t allow_us;
    int64_t last_us;
};

/** Told when member `m` starts (`holding`) or stops holding: the owner then counts each
 * source `m` is subscribed to with wsb_gate_source_hold (+1, then -1 for the same ones).
 * It may call wsb_gate_source_hold, never wsb_gate_note or wsb_gate_leave. */
typedef void (*wsb_gate_hold_cb)(void *ctx, struct wsb_gate_member *m, bool holding);

struct wsb_gate {
    struct wsb_gate_member *behind; /* members that are behind */
    size_t nbehind;
    size_t holders;         /* behind members with allowance left, as of the last update */
    int64_t next_expiry_us; /* earliest time a holder runs out of allowance */
    struct wsb_map sources; /* source id -> holders subscribed to it (as uintptr_t) */
    wsb_gate_hold_cb on_hold;
    void *hold_ctx;
};

void wsb_gate_init(struct wsb_gate *g);
/** Frees the source counts. */
void wsb_gate_cleanup(struct wsb_gate *g);
/** Installs the callback that keeps the per-source counts (none: only wsb_gate_open). */
void wsb_gate_set_hold_cb(struct wsb_gate *g, wsb_gate_hold_cb cb, void *ctx);
void wsb_gate_member_init(struct wsb_gate_member *m, int64_t now_us);

/** Records whether member `m` is behind at `now_us`, with `allow_us` of allowance
 * (the most it may hold the gate in one stretch). */
void wsb_gate_note(struct wsb_gate *g, struct wsb_gate_member *m, bool behind, int64_t allow_us,
                   int64_t now_us);
/** The member leaves (session closing or freed). */
void wsb_gate_leave(struct wsb_gate *g, struct wsb_gate_member *m);
/** True when no behind member has allowance left (no source is held). */
bool wsb_gate_open(struct wsb_gate *g, int64_t now_us);

/** Counts (`delta` +1) or uncounts (-1) a holding member's subscription to `source`.
 * Returns the holders of `source` left, or -1 when a count could not be stored (out of
 * memory: that source is then not held for this member; do not uncount it later). */
long wsb_gate_source_hold(struct wsb_gate *g, uint64_t source, int delta);
/** True when the loop may hand the next message of `source` to the hub: no member with
 * allowance left that is subscribed to it is behind. Settles the allowances that ran out
 * by `now_us` first (wsb_gate_open). */
bool wsb_gate_source_open(struct wsb_gate *g, uint64_t source, int64_t now_us);

#endif
