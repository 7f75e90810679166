/* The hand-off gate of one event loop: broker messages wait in the loop's mailbox, not in
 * the clients' out-queues, while a client that keeps up is still writing the last batch.
 * A client whose queue is over a small threshold is "behind"; while any behind client still
 * has allowance, the loop hands no further message to the hub, so a broker burst reaches
 * the sockets at the pace the clients read it instead of all at once. Holding the gate
 * costs a client allowance (1 µs per µs while behind, repaid at half that rate while not),
 * so a client that stalls, or that is slower than the broker over time, soon stops holding
 * everyone back and is judged by the send-buffer limits (SPEC §2) like before.
 * Pure: no I/O, time is passed in. @locality loop */
#ifndef WSB_BRIDGE_GATE_H
#define WSB_BRIDGE_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

struct wsb_gate {
    struct wsb_gate_member *behind; /* members that are behind */
    size_t nbehind;
    size_t holders;         /* behind members with allowance left, as of the last update */
    int64_t next_expiry_us; /* earliest time a holder runs out of allowance */
};

void wsb_gate_init(struct wsb_gate *g);
void wsb_gate_member_init(struct wsb_gate_member *m, int64_t now_us);

/** Records whether member `m` is behind at `now_us`, with `allow_us` of allowance
 * (the most it may hold the gate in one stretch). */
void wsb_gate_note(struct wsb_gate *g, struct wsb_gate_member *m, bool behind, int64_t allow_us,
                   int64_t now_us);
/** The member leaves (session closing or freed). */
void wsb_gate_leave(struct wsb_gate *g, struct wsb_gate_member *m);
/** True when the loop may hand the next message to the hub: no behind member has allowance
 * left. */
bool wsb_gate_open(struct wsb_gate *g, int64_t now_us);

#endif
