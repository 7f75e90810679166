/* The HTTP upgrade of a session in the handshake state, one named admission step after
 * another (see upgrade.c). Calls down into the session only; never into conn. */
#ifndef WSB_BRIDGE_UPGRADE_H
#define WSB_BRIDGE_UPGRADE_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct wsb_session;
struct wsb_worker;

/** The accept-time steps: the new connection counts against its address (per-IP handshake
 * rate and connection cap: 429) and against max_connections (503) until it is freed.
 * Returns false when it was refused (the answer is on its way, the session closing).
 * @locality session loop */
bool wsb_upgrade_admit_peer(struct wsb_session *s);

/** Looks for a complete request head in `in` (the session's input). Without one it waits
 * (a head over 8 KiB is refused with 431). With one it runs the admission steps: afterwards
 * the session is open (101 sent, head drained from `in`) or closing (refused or page
 * served). @locality session loop */
void wsb_upgrade_read(struct wsb_session *s, struct evbuffer *in);

/** The worker's periodic call: writes the line that sums up the early refusals (429/503)
 * not logged one by one once their second is over. @locality worker loop */
void wsb_upgrade_tick(struct wsb_worker *w, int64_t now_us);

#endif
