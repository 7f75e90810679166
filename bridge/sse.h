/* The Server-Sent Events transport (SPEC §11): an admitted `GET <sse.path>` becomes a session
 * like a WebSocket one (same hub, out-queue, send-buffer limits, token expiry) whose output
 * is an event stream and which subscribes to the channels of its query, resuming from its
 * Last-Event-ID. Above ops (it subscribes through them); called by upgrade. */
#ifndef WSB_BRIDGE_SSE_H
#define WSB_BRIDGE_SSE_H

#include "bridge/ws/ws_http.h"

struct wsb_session;

/** Starts the stream of a request that passed admission (origin, drain, token): `200
 * text/event-stream`, the welcome event, one subscription per channel. Returns 0, or -1
 * with *msg when the request is malformed (nothing written; the caller answers 400).
 * @locality session loop */
int wsb_sse_open(struct wsb_session *s, const struct wsb_http_req *req, const char **msg);

#endif
