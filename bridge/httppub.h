/* HTTP publish (SPEC §11): `POST /publish` with a JSON body {channel, data, key?, headers?}
 * and the token, answered `200 {"type":"published",...}` once the broker confirmed, or with
 * the §5 error object and a 4xx/5xx status. The request runs as a one-shot session (the
 * HTTP transport) through the same publish op as a WebSocket client's, so ACLs, routing and
 * the broker's confirmation are shared; inbound rate limits and max_inflight_publishes are
 * counted per token subject (anonymous: per address) across every worker. Called by
 * upgrade; above ops. */
#ifndef WSB_BRIDGE_HTTPPUB_H
#define WSB_BRIDGE_HTTPPUB_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/ws/ws_http.h"

struct wsb_session;

/** Publishes the body of an admitted request (origin, drain, token passed). Every outcome
 * is answered on the session, which then ends. @locality session loop */
void wsb_httppub_open(struct wsb_session *s, const struct wsb_http_req *req, const uint8_t *body,
                      size_t len);

/** The HTTP status for a §5 error code (400 when unknown). */
int wsb_httppub_status(const char *code);

#endif
