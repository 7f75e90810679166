/* A worker's passes over its sessions at safe points, outside their own callbacks: the
 * periodic check (message timeout, idle buffers given back, the send-buffer soft limit judged
 * with the policy of the channels whose messages wait) and the reaping of closed sessions.
 * Above session (it uses the session's primitives; the session never calls it). Everything
 * here runs on the worker's loop. */
#ifndef WSB_BRIDGE_SWEEP_H
#define WSB_BRIDGE_SWEEP_H

#include <stdint.h>

struct wsb_session;
struct wsb_worker;

/** Periodic work for one session: the message timeout (1008), idle buffers given back, and
 * the send-buffer soft limit, judged with the policy of the channels whose messages wait
 * (disconnect if any says so, else drop_oldest). @locality the session's loop */
void wsb_sweep_tick(struct wsb_session *s, int64_t now_ms);

/** Ends the subscriptions of sessions queued to detach, then frees the sessions on the
 * worker's reap list. Never call it from a session's own callback. @locality the loop */
void wsb_sweep_reap(struct wsb_worker *w);

#endif
