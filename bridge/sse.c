/* The event-stream transport: the response head, then each channel of the query subscribed
 * through the same op as a WebSocket `subscribe` (ACL, routing, sources, hub). On SSE the
 * implicit subscribe of a channel has the channel's name as its id, so an `error` event
 * names the channel it refuses; the other channels go on, and a stream with none left ends
 * (session.c). The resume token of Last-Event-ID gives each channel it names exact offsets
 * (sse_wire.h). */
#include "bridge/sse.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/filter.h"
#include "auth/jwt.h"
#include "bridge/metrics.h"
#include "bridge/ops.h"
#include "bridge/protocol.h"
#include "bridge/runtime.h"
#include "bridge/grants.h"
#include "bridge/session.h"
#include "bridge/sse_wire.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "util/log.h"

static void write_head(struct wsb_session *s, const struct wsb_http_req *req)
{
    struct evbuffer *out = wsb_session_output(s);
    if (!out)
        return;
    evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
                             "Connection: close\r\n");
    /* A page of an allowed origin (the Origin step let it through) may read the stream. */
    struct wsb_slice origin = wsb_http_header(req, "Origin");
    if (origin.ptr && origin.len < 1024)
        evbuffer_add_printf(out,
                            "Access-Control-Allow-Origin: %.*s\r\n"
                            "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n",
                            (int)origin.len, origin.ptr);
    /* retry: how long EventSource waits before it reconnects with Last-Event-ID. */
    evbuffer_add_printf(out, "\r\nretry: 1000\n\n");
}

static void subscribe(struct wsb_session *s, struct wsb_sse_request *r, size_t i)
{
    const char *ch = r->channels[i];
    size_t len = strlen(ch);
    struct wsb_request req = {
        .op = WSB_REQ_SUBSCRIBE,
        .channel = ch,
        .channel_len = len,
        .from = r->from,
        .from_timestamp_ms = r->from_timestamp_ms,
        .filter = r->filters ? r->filters[i] : NULL, /* the subscription takes it */
    };
    if (r->filters)
        r->filters[i] = NULL;
    if (len + 2 <= WSB_ID_MAX)
        snprintf(req.id, sizeof(req.id), "\"%s\"", ch); /* names are JSON-safe */
    const struct wsb_sse_pos *pos = wsb_sse_resume_find(&r->resume, ch, len);
    if (pos) {
        req.from = WSB_FROM_OFFSETS;
        req.from_offsets = pos->po;
        req.nfrom_offsets = pos->n;
    }
    wsb_ops_subscribe(s, &req);
    wsb_filter_spec_free(req.filter); /* still ours when the subscribe was refused */
}

int wsb_sse_open(struct wsb_session *s, const struct wsb_http_req *req, const char **msg)
{
    struct wsb_sse_request r;
    if (wsb_sse_request_parse(req, wsb_session_limits(s)->max_subscriptions, &r, msg) < 0)
        return -1;
    s->transport = WSB_TRANSPORT_SSE;
    s->state = WSB_SS_OPEN;
    s->discard_input = true; /* the client never speaks again */
    wsb_session_disarm_timer(s);
    write_head(s, req);
    wsb_metric_add(s->w->metrics.handshakes[WSB_HS_OK], 1);
    wsb_grants_start(s);
    wsb_log(WSB_LOG_DEBUG, "stream opened", WSB_LSTR("conn", s->sid), WSB_LSTR("ip", s->ip),
            WSB_LSTR("sub", s->ident ? s->ident->sub : NULL), WSB_LUINT("channels", r.nchannels),
            WSB_LUINT("resume", r.resume.n));
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_welcome(&b, s->sid, s->ident ? s->ident->sub : NULL, s->ident ? s->ident->exp : 0);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
    for (size_t i = 0; i < r.nchannels && s->state == WSB_SS_OPEN; i++)
        subscribe(s, &r, i);
    if (s->state == WSB_SS_OPEN && s->nsubs == 0)
        wsb_session_arm_timer(s, 0); /* every channel was refused: the stream ends */
    wsb_sse_request_cleanup(&r);
    return 0;
}
