/* The wsbridge.v1 requests (SPEC §5) of an open session: subscribe, unsubscribe, publish,
 * ack/nack and auth. Built on the session's primitives; runs on the session's loop. */
#ifndef WSB_BRIDGE_OPS_H
#define WSB_BRIDGE_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_session;
struct wsb_worker;

/** Parses one complete text message and runs the request (errors are answered, never a
 * close). `text` is borrowed. */
void wsb_ops_dispatch(struct wsb_session *s, const uint8_t *text, size_t len);

struct wsb_request;

/** Runs a parsed subscribe request (the SSE transport's implicit subscribes); `r` is
 * borrowed. Errors are answered. */
void wsb_ops_subscribe(struct wsb_session *s, struct wsb_request *r);

/** The broker answered the publish with `cookie` (mailbox): `published` or `publish_failed`
 * to its session, when that is still there. */
void wsb_ops_publish_done(struct wsb_worker *w, uint64_t cookie, bool ok, const char *msg);

#endif
