/* One client connection: the HTTP upgrade (with origin, limits and token checks), the
 * WebSocket connection (frames, UTF-8, deflate, ping/pong, close handshake), the wsbridge.v1
 * requests, its subscriptions and its send buffer. Runs on its worker's loop only. */
#ifndef WSB_BRIDGE_SESSION_H
#define WSB_BRIDGE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bridge/hub.h"

struct wsb_worker;
struct wsb_session;

/** Takes over an accepted socket. @locality worker loop */
void wsb_session_accept(struct wsb_worker *w, int fd, const struct sockaddr *addr, int socklen);

/** Closes with 1001 (drain). */
void wsb_session_drain(struct wsb_session *s);

/** Re-checks a session against the worker's (new) runtime: ACLs and limits. */
void wsb_session_recheck(struct wsb_session *s);

/** Frees sessions on the worker's reap list. */
void wsb_session_reap(struct wsb_worker *w);

/** A publish finished (mailbox). */
void wsb_session_publish_done(struct wsb_worker *w, uint64_t cookie, bool ok, const char *msg);

/** Periodic work: pings, send-buffer soft limit, gauges. */
void wsb_session_tick(struct wsb_session *s, int64_t now_ms);

/** The next session of the worker's list. */
struct wsb_session *wsb_session_next(struct wsb_session *s);

/** Bytes queued for the client (out-queue and socket buffer). */
uint64_t wsb_session_queued(const struct wsb_session *s);

/** Puts the session on the reap list at once (shutdown after the drain timeout). */
void wsb_session_force_close(struct wsb_session *s);

/** The hub callbacks sessions implement. */
extern const struct wsb_hub_cbs wsb_session_hub_cbs;

#endif
