/* Client sessions: upgrade, WebSocket protocol, wsbridge.v1 requests, send buffer. */
#include "bridge/session.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/acl.h"
#include "auth/jwt.h"
#include "auth/token.h"
#include "bridge/flow.h"
#include "bridge/iplimit.h"
#include "bridge/mailbox.h"
#include "bridge/metrics.h"
#include "bridge/outq.h"
#include "bridge/protocol.h"
#include "bridge/sources.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "bridge/ws/ws_frame.h"
#include "bridge/ws/ws_http.h"
#include "bridge/ws/ws_utf8.h"
#include "config/config.h"
#include "connectors/connector.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/pattern.h"

#define SOCKET_CHUNK (256 * 1024) /* bytes kept in the socket buffer; the rest waits in outq */
#define READ_CHUNK (16 * 1024)
#define CLOSE_WAIT_MS 2000  /* how long we wait for the client's close frame */
#define FAIL_FLUSH_MS 1000  /* how long a failed connection may take to flush */
#define RATE_STRIKES_MIN 10 /* refused messages in a row before 4429 */

enum state { S_HANDSHAKE, S_OPEN, S_CLOSING, S_DEAD };

struct sub {
    bool used;
    bool active;
    bool ack;
    int policy; /* enum wsb_sb_policy or -1 */
    size_t connector;
    uint64_t source_id;
    struct wsb_hub_sub *hs;
    uint64_t gap;      /* messages dropped and not reported yet */
    uint64_t *unacked; /* ack sources: tokens delivered to this client, not yet acked */
    size_t nunacked, capunacked;
    char id[WSB_ID_MAX + 1];
    char channel[WSB_CHANNEL_MAX + 1];
};

struct pending_pub {
    uint64_t cookie;
    struct wsb_session *s; /* NULL once the session is gone */
    struct pending_pub *next_in_session;
    char id[WSB_ID_MAX + 1];
    char channel[WSB_CHANNEL_MAX + 1];
};

struct wsb_session {
    struct wsb_worker *w;
    struct wsb_session *prev, *next, *reap_next, *detach_next;
    bool detach_queued;
    uint64_t id;
    char sid[24];
    struct bufferevent *bev;
    struct sockaddr_storage addr;
    char ip[INET6_ADDRSTRLEN];
    struct wsb_ip_ticket ip_ticket; /* what the per-IP table counted for us */
    bool counted;                   /* in shared->connections and metrics.connections */
    enum state state;
    struct wsb_runtime *rt;

    /* WebSocket */
    struct wsb_frame_parser fp;
    struct wsb_utf8 utf8;
    struct wsb_inflater *inflater;
    bool pmd;
    bool deflate_out;   /* compress messages we send */
    bool discard_input; /* input is read and thrown away */
    bool close_only;    /* after 4401: requests are ignored, a close frame ends it */
    struct wsb_buf msg;
    bool msg_binary;
    uint64_t msg_total;

    /* application */
    struct wsb_identity *ident;
    struct wsb_acl *acl;
    struct sub *subs;
    size_t nsubs; /* used slots */
    size_t cap;
    uint32_t inflight;
    struct pending_pub *pubs;
    struct wsb_bucket in_msgs, in_bytes;
    uint32_t strikes;

    /* output */
    struct wsb_outq q;
    struct wsb_sendbuf sb;
    bool close_after_flush;
    bool read_paused;

    /* timers */
    struct event *timer; /* handshake deadline, pong deadline, close wait */
    struct event *ping_ev;
    struct event *exp_ev;
    int64_t ping_sent_ms;
    bool awaiting_pong;
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void session_kill(struct wsb_session *s);
static void session_close(struct wsb_session *s, uint16_t code, const char *reason, bool fail);
static void flush(struct wsb_session *s);

static const struct wsb_limits *limits(const struct wsb_session *s)
{
    return &s->rt->cfg->limits;
}

static uint64_t out_bytes(const struct wsb_session *s)
{
    return s->q.bytes + evbuffer_get_length(bufferevent_get_output(s->bev));
}

/* ---- low-level output ------------------------------------------------------------- */

static void frame_cleanup(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    wsb_frame_unref(arg);
}

/* Hands a frame to the socket buffer (takes over the reference). */
static void write_frame(struct wsb_session *s, struct wsb_frame *f)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    size_t len = f->len;
    if (evbuffer_add_reference(out, f->data, f->len, frame_cleanup, f) < 0) {
        wsb_frame_unref(f);
        return;
    }
    wsb_metric_add(s->w->metrics.bytes_out, len);
}

static void send_control(struct wsb_session *s, uint8_t opcode, const void *p, size_t len)
{
    uint8_t hdr[10];
    size_t hl = wsb_frame_header(hdr, opcode, true, false, len);
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add(out, hdr, hl);
    if (len)
        evbuffer_add(out, p, len);
    wsb_metric_add(s->w->metrics.bytes_out, hl + len);
}

static void send_reply(struct wsb_session *s, struct wsb_buf *b)
{
    if (s->state != S_OPEN || b->oom)
        return;
    struct wsb_frame *f = wsb_frame_new(WSB_OP_TEXT, false, b->data, b->len);
    if (!f)
        return;
    wsb_outq_push(&s->q, f, WSB_OUTQ_REPLY, 0);
    flush(s);
}

static void reply_error(struct wsb_session *s, const char *id, const char *code, const char *msg)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_error(&b, id, code, msg);
    send_reply(s, &b);
    wsb_buf_cleanup(&b);
}

static void emit_gap(struct wsb_session *s, struct sub *sub)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_gap(&b, sub->channel, sub->gap);
    sub->gap = 0;
    struct wsb_frame *f = b.oom ? NULL : wsb_frame_new(WSB_OP_TEXT, false, b.data, b.len);
    wsb_buf_cleanup(&b);
    if (f)
        write_frame(s, f);
}

/* Moves frames from the out-queue into the socket buffer while it has room. */
static void flush(struct wsb_session *s)
{
    if (s->state == S_DEAD || s->state == S_HANDSHAKE)
        return;
    struct evbuffer *out = bufferevent_get_output(s->bev);
    struct wsb_outq_item it;
    int64_t now = -1;
    while (evbuffer_get_length(out) < SOCKET_CHUNK && wsb_outq_pop(&s->q, &it)) {
        struct wsb_frame *f = it.frame;
        if (it.kind == WSB_OUTQ_MESSAGE) {
            if (it.tag < s->cap && s->subs[it.tag].used && s->subs[it.tag].gap)
                emit_gap(s, &s->subs[it.tag]);
            if (s->deflate_out) {
                struct wsb_frame *d = wsb_frame_deflated(f, s->w->deflater);
                if (d != f) {
                    wsb_frame_ref(d);
                    wsb_frame_unref(f);
                    f = d;
                }
            }
            wsb_metric_add(s->w->metrics.messages_out, 1);
            if (f->ts_ms >= 0) {
                if (now < 0)
                    now = wsb_wall_ms();
                double lat = (double)(now - f->ts_ms) / 1000.0;
                wsb_histogram_observe(&s->w->metrics.delivery_latency, lat < 0 ? 0 : lat);
            }
        }
        write_frame(s, f);
    }
    if (s->q.count == 0) {
        for (size_t i = 0; i < s->cap; i++)
            if (s->subs[i].used && s->subs[i].gap)
                emit_gap(s, &s->subs[i]);
    }
    if (s->read_paused && out_bytes(s) <= limits(s)->send_soft_bytes) {
        s->read_paused = false;
        if (!s->discard_input)
            bufferevent_enable(s->bev, EV_READ);
    }
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void count_disconnect(struct wsb_session *s, uint16_t code)
{
    wsb_metric_add(s->w->metrics.disconnects[wsb_metrics_close_idx(code)], 1);
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

static void arm_timer(struct wsb_session *s, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void drop_queued(struct wsb_session *s)
{
    size_t n = 0;
    struct wsb_outq_item it;
    while (wsb_outq_pop(&s->q, &it)) {
        if (it.kind == WSB_OUTQ_MESSAGE)
            n++;
        wsb_frame_unref(it.frame);
    }
    if (n)
        wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], n);
}

/* A closing session takes no more messages: its subscriptions end (ack deliveries go back to
 * the broker) at the next safe point, never inside a hub callback that may be walking the
 * subscriber list. */
static void detach_later(struct wsb_session *s)
{
    if (s->detach_queued || s->nsubs == 0)
        return;
    s->detach_queued = true;
    s->detach_next = s->w->detach;
    s->w->detach = s;
    event_active(s->w->reap_ev, EV_READ, 0);
}

/* Starts the close handshake (RFC 6455 §7.1.2). `fail`: we close TCP as soon as our close
 * frame is flushed (protocol errors, slow consumers); otherwise we wait for the client's
 * close frame for a while. */
static void session_close(struct wsb_session *s, uint16_t code, const char *reason, bool fail)
{
    if (s->state != S_OPEN)
        return;
    s->state = S_CLOSING;
    detach_later(s);
    count_disconnect(s, code);
    drop_queued(s);
    uint8_t payload[125];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof(payload) - 2)
        rl = sizeof(payload) - 2;
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (rl)
        memcpy(payload + 2, reason, rl);
    send_control(s, WSB_OP_CLOSE, payload, rl + 2);
    if (s->ping_ev)
        event_del(s->ping_ev);
    if (s->exp_ev)
        event_del(s->exp_ev);
    if (fail) {
        s->close_after_flush = true;
        arm_timer(s, FAIL_FLUSH_MS);
    } else {
        arm_timer(s, CLOSE_WAIT_MS);
    }
    wsb_log(WSB_LOG_DEBUG, "closing", WSB_LSTR("conn", s->sid), WSB_LINT("code", code));
}

static void session_kill(struct wsb_session *s)
{
    if (s->state == S_DEAD)
        return;
    if (s->state == S_OPEN)
        count_disconnect(s, 1006);
    s->state = S_DEAD;
    bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    s->reap_next = s->w->reap;
    s->w->reap = s;
    event_active(s->w->reap_ev, EV_READ, 0);
}

/* ---- subscriptions ---------------------------------------------------------------- */

static struct sub *find_sub(struct wsb_session *s, const char *channel, size_t len)
{
    for (size_t i = 0; i < s->cap; i++) {
        struct sub *sub = &s->subs[i];
        if (sub->used && strlen(sub->channel) == len && memcmp(sub->channel, channel, len) == 0)
            return sub;
    }
    return NULL;
}

static struct sub *new_sub(struct wsb_session *s)
{
    for (size_t i = 0; i < s->cap; i++)
        if (!s->subs[i].used)
            return &s->subs[i];
    size_t cap = s->cap ? s->cap * 2 : 4;
    struct sub *subs = realloc(s->subs, cap * sizeof(*subs));
    if (!subs)
        return NULL;
    memset(subs + s->cap, 0, (cap - s->cap) * sizeof(*subs));
    struct sub *sub = &subs[s->cap];
    s->subs = subs;
    s->cap = cap;
    return sub;
}

static void release_source(struct wsb_session *s, uint64_t source_id)
{
    if (wsb_sources_release(s->w->shared->sources, source_id))
        wsb_worker_broadcast_source(s->w->shared, WSB_MAIL_STOPPED, source_id);
}

/* Ends a subscription: hub, registry, slot. */
/* Hands a delivery the client will never ack back to the broker (nothing is lost). */
static void requeue(struct wsb_session *s, const struct sub *sub, uint64_t token)
{
    wsb_connector_ack(s->w->shared->connectors[sub->connector], sub->source_id, token,
                      WSB_NACK_REQUEUE);
}

static void forget_unacked(struct sub *sub)
{
    free(sub->unacked);
    sub->unacked = NULL;
    sub->nunacked = sub->capunacked = 0;
}

static void drop_sub(struct wsb_session *s, struct sub *sub)
{
    if (sub->hs)
        wsb_hub_detach(s->w->hub, sub->hs);
    sub->hs = NULL;
    for (size_t i = 0; i < sub->nunacked; i++)
        requeue(s, sub, sub->unacked[i]);
    forget_unacked(sub);
    release_source(s, sub->source_id);
    sub->used = false;
    s->nsubs--;
    wsb_metric_add(s->w->metrics.subscriptions, -1);
}

static void hub_started(void *owner, uint32_t slot, const char *positions)
{
    struct wsb_session *s = owner;
    struct sub *sub = &s->subs[slot];
    sub->active = true;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_subscribed(&b, sub->id, sub->channel, positions);
    send_reply(s, &b);
    wsb_buf_cleanup(&b);
    sub->id[0] = '\0';
}

static void hub_failed(void *owner, uint32_t slot, const char *code, const char *message)
{
    struct wsb_session *s = owner;
    struct sub *sub = &s->subs[slot];
    sub->hs = NULL; /* the hub frees it */
    if (sub->active) {
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_encode_unsubscribed(&b, "", sub->channel, code);
        send_reply(s, &b);
        wsb_buf_cleanup(&b);
    } else {
        reply_error(s, sub->id, code, message ? message : "source failed");
    }
    /* The registry entry is forgotten by the worker that handled the failure. */
    forget_unacked(sub);
    sub->used = false;
    s->nsubs--;
    wsb_metric_add(s->w->metrics.subscriptions, -1);
}

static void count_drop(void *ctx, uint32_t tag)
{
    struct wsb_session *s = ctx;
    if (tag < s->cap && s->subs[tag].used)
        s->subs[tag].gap++;
    wsb_metric_add(s->w->metrics.dropped[WSB_DROP_SLOW_CONSUMER], 1);
}

/* Remembers an ack token handed to this client; false on allocation failure. */
static bool track_unacked(struct sub *sub, uint64_t token)
{
    if (sub->nunacked == sub->capunacked) {
        size_t cap = sub->capunacked ? sub->capunacked * 2 : 8;
        uint64_t *u = realloc(sub->unacked, cap * sizeof(*u));
        if (!u)
            return false;
        sub->unacked = u;
        sub->capunacked = cap;
    }
    sub->unacked[sub->nunacked++] = token;
    return true;
}

static void hub_deliver(void *owner, uint32_t slot, struct wsb_frame *f, uint64_t ack_token)
{
    struct wsb_session *s = owner;
    struct sub *sub = &s->subs[slot];
    if (s->state != S_OPEN || (ack_token && !track_unacked(sub, ack_token))) {
        if (ack_token)
            requeue(s, sub, ack_token);
        return;
    }
    const struct wsb_limits *l = limits(s);
    if (!ack_token) {
        s->sb.bytes = out_bytes(s) + f->len;
        enum wsb_sendbuf_verdict v = wsb_sendbuf_check(
            &s->sb, l->send_soft_bytes, l->send_soft_seconds, l->send_hard_bytes, wsb_now_us());
        if (v != WSB_SB_OK) {
            int policy = sub->policy >= 0 ? sub->policy : (int)l->send_policy;
            if (policy == WSB_POLICY_DISCONNECT) {
                wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], 1);
                wsb_log(WSB_LOG_INFO, "slow consumer disconnected", WSB_LSTR("conn", s->sid),
                        WSB_LSTR("ip", s->ip), WSB_LUINT("queued", s->sb.bytes));
                session_close(s, 4408, "slow consumer", true);
                return;
            }
            /* drop_oldest: make room down to the soft limit, whole messages only. */
            uint64_t sock = evbuffer_get_length(bufferevent_get_output(s->bev));
            uint64_t target =
                l->send_soft_bytes > sock + f->len ? l->send_soft_bytes - sock - f->len : 0;
            wsb_outq_drop_oldest(&s->q, target, count_drop, s);
            if (out_bytes(s) + f->len > l->send_hard_bytes && l->send_hard_bytes) {
                count_drop(s, slot);
                return;
            }
        }
    }
    wsb_outq_push(&s->q, wsb_frame_ref(f), WSB_OUTQ_MESSAGE, slot);
    flush(s);
}

const struct wsb_hub_cbs wsb_session_hub_cbs = {
    .deliver = hub_deliver,
    .started = hub_started,
    .failed = hub_failed,
};

/* ---- requests --------------------------------------------------------------------- */

static bool acl_allows(struct wsb_session *s, enum wsb_acl_action a, const char *ch, size_t len)
{
    bool ok = s->acl && wsb_acl_check(s->acl, a, ch, len);
    wsb_metric_add(s->w->metrics.acl[ok ? WSB_ACL_ALLOW : WSB_ACL_DENY], 1);
    return ok;
}

static void op_subscribe(struct wsb_session *s, struct wsb_request *r)
{
    char ch[WSB_CHANNEL_MAX + 1];
    memcpy(ch, r->channel, r->channel_len);
    ch[r->channel_len] = '\0';
    if (find_sub(s, ch, r->channel_len)) {
        reply_error(s, r->id, "already_subscribed", "already subscribed to this channel");
        return;
    }
    if (s->nsubs >= limits(s)->max_subscriptions) {
        reply_error(s, r->id, "too_many_subscriptions", "max_subscriptions reached");
        return;
    }
    if (!acl_allows(s, WSB_ACL_SUBSCRIBE, ch, r->channel_len)) {
        reply_error(s, r->id, "forbidden", "not allowed to subscribe to this channel");
        return;
    }
    struct wsb_route route;
    int routed = wsb_config_route(s->rt->cfg, ch, r->channel_len, &route);
    if (routed < 0) {
        if (routed == WSB_ROUTE_INTERNAL)
            reply_error(s, r->id, "forbidden", "the channel maps to an internal topic");
        else
            reply_error(s, r->id, "unknown_channel", "no channel rule matches");
        return;
    }
    const struct wsb_channel_rule *rule = route.rule;
    struct wsb_source src = {
        .topic = route.topic,
        .exchange = route.exchange,
        .binding_key = route.binding_key,
        .queue = route.queue,
        .group = route.group,
        .dead_letter_topic = route.dead_letter_topic,
        .ack = rule->delivery == WSB_DELIVERY_ACK,
        .max_unacked = rule->max_unacked,
        .from = r->from,
        .from_timestamp_ms = r->from_timestamp_ms,
        .from_offsets = r->from_offsets,
        .nfrom_offsets = r->nfrom_offsets,
    };
    struct sub *sub = new_sub(s);
    if (!sub) {
        reply_error(s, r->id, "unavailable", "out of memory");
        return;
    }
    uint32_t slot = (uint32_t)(sub - s->subs);
    uint64_t sid;
    enum wsb_err rc =
        wsb_sources_acquire(s->w->shared->sources, rule->connector, &src, s->w->idx, &sid);
    if (rc != WSB_OK) {
        reply_error(s, r->id, "unavailable", wsb_strerror(rc));
        return;
    }
    memset(sub, 0, sizeof(*sub));
    sub->used = true;
    sub->ack = src.ack;
    sub->policy = rule->policy;
    sub->connector = rule->connector;
    sub->source_id = sid;
    memcpy(sub->channel, ch, r->channel_len + 1);
    snprintf(sub->id, sizeof(sub->id), "%s", r->id);
    s->nsubs++;
    wsb_metric_add(s->w->metrics.subscriptions, 1);
    bool active;
    char *positions = NULL;
    sub->hs = wsb_hub_attach(s->w->hub, ch, r->channel_len, sid, s, slot, &active, &positions);
    if (!sub->hs) {
        reply_error(s, r->id, "unavailable", "out of memory");
        sub->hs = NULL;
        drop_sub(s, sub);
        return;
    }
    if (active) {
        hub_started(s, slot, positions);
        free(positions);
    }
}

static void op_unsubscribe(struct wsb_session *s, struct wsb_request *r)
{
    struct sub *sub = find_sub(s, r->channel, r->channel_len);
    if (!sub) {
        reply_error(s, r->id, "not_subscribed", "not subscribed to this channel");
        return;
    }
    char ch[WSB_CHANNEL_MAX + 1];
    memcpy(ch, sub->channel, sizeof(ch));
    /* Every request with an id gets an answer: a subscribe still waiting for its source is
     * answered before the unsubscribe is. */
    if (!sub->active)
        reply_error(s, sub->id, "cancelled", "unsubscribed before the subscription started");
    drop_sub(s, sub);
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_unsubscribed(&b, r->id, ch, NULL);
    send_reply(s, &b);
    wsb_buf_cleanup(&b);
}

static void op_publish(struct wsb_session *s, struct wsb_request *r)
{
    struct wsb_loop_metrics *m = &s->w->metrics;
    char ch[WSB_CHANNEL_MAX + 1];
    memcpy(ch, r->channel, r->channel_len);
    ch[r->channel_len] = '\0';
    if (!acl_allows(s, WSB_ACL_PUBLISH, ch, r->channel_len)) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        reply_error(s, r->id, "forbidden", "not allowed to publish to this channel");
        return;
    }
    struct wsb_route route;
    int routed = wsb_config_route(s->rt->cfg, ch, r->channel_len, &route);
    if (routed < 0) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        if (routed == WSB_ROUTE_INTERNAL)
            reply_error(s, r->id, "forbidden", "the channel maps to an internal topic");
        else
            reply_error(s, r->id, "unknown_channel", "no channel rule matches");
        return;
    }
    if (!route.rule->allow_publish) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        reply_error(s, r->id, "forbidden", "publishing is disabled on this channel");
        return;
    }
    if (s->inflight >= limits(s)->max_inflight_publishes) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        wsb_metric_add(m->rate_limited[WSB_RL_INFLIGHT_PUBLISHES], 1);
        reply_error(s, r->id, "rate_limited", "too many publishes awaiting confirmation");
        return;
    }
    struct pending_pub *p = calloc(1, sizeof(*p));
    if (!p) {
        reply_error(s, r->id, "publish_failed", "out of memory");
        return;
    }
    p->cookie = ((uint64_t)s->w->idx << 56) | ++s->w->next_cookie;
    p->s = s;
    snprintf(p->id, sizeof(p->id), "%s", r->id);
    memcpy(p->channel, ch, r->channel_len + 1);
    if (wsb_map_put_u64(&s->w->pubs, p->cookie, p) < 0) {
        free(p);
        reply_error(s, r->id, "publish_failed", "out of memory");
        return;
    }
    struct wsb_publish pub = {
        .topic = route.topic,
        .exchange = route.exchange,
        .routing_key = route.routing_key,
        .key = (const uint8_t *)r->key,
        .key_len = r->key_len,
        .payload = (const uint8_t *)r->data,
        .payload_len = r->data_len,
        .headers = r->headers,
        .nheaders = r->nheaders,
    };
    enum wsb_err rc =
        wsb_connector_publish(s->w->shared->connectors[route.rule->connector], &pub, p->cookie);
    if (rc != WSB_OK) {
        wsb_map_del_u64(&s->w->pubs, p->cookie);
        free(p);
        wsb_metric_add(m->publish[WSB_PUB_FAILED], 1);
        reply_error(s, r->id, "publish_failed", wsb_strerror(rc));
        return;
    }
    p->next_in_session = s->pubs;
    s->pubs = p;
    s->inflight++;
}

void wsb_session_publish_done(struct wsb_worker *w, uint64_t cookie, bool ok, const char *msg)
{
    struct pending_pub *p = wsb_map_del_u64(&w->pubs, cookie);
    if (!p)
        return;
    wsb_metric_add(w->metrics.publish[ok ? WSB_PUB_OK : WSB_PUB_FAILED], 1);
    struct wsb_session *s = p->s;
    if (s) {
        for (struct pending_pub **pp = &s->pubs; *pp; pp = &(*pp)->next_in_session) {
            if (*pp == p) {
                *pp = p->next_in_session;
                break;
            }
        }
        s->inflight--;
        struct wsb_buf b;
        wsb_buf_init(&b);
        if (ok)
            wsb_encode_published(&b, p->id, p->channel);
        else
            wsb_encode_error(&b, p->id, "publish_failed", msg ? msg : "broker refused");
        send_reply(s, &b);
        wsb_buf_cleanup(&b);
    }
    free(p);
}

static void op_ack(struct wsb_session *s, struct wsb_request *r)
{
    struct sub *sub = find_sub(s, r->channel, r->channel_len);
    if (!sub) {
        reply_error(s, r->id, "not_subscribed", "not subscribed to this channel");
        return;
    }
    if (!sub->ack) {
        reply_error(s, r->id, "invalid_request", "channel does not use delivery: ack");
        return;
    }
    /* Only deliveries this client was given can be acked by it. */
    size_t i = 0;
    while (i < sub->nunacked && sub->unacked[i] != r->ack_id)
        i++;
    if (i == sub->nunacked) {
        reply_error(s, r->id, "invalid_request", "unknown ack_id for this channel");
        return;
    }
    sub->unacked[i] = sub->unacked[--sub->nunacked];
    enum wsb_ack_kind kind = WSB_ACK;
    if (r->op == WSB_REQ_NACK)
        kind = r->requeue ? WSB_NACK_REQUEUE : WSB_NACK_DROP;
    wsb_connector_ack(s->w->shared->connectors[sub->connector], sub->source_id, r->ack_id, kind);
}

static void set_expiry(struct wsb_session *s);
static void recompile_acl(struct wsb_session *s);

static void op_auth(struct wsb_session *s, struct wsb_request *r)
{
    if (!s->rt->auth) {
        reply_error(s, r->id, "unsupported", "authentication is not enabled");
        return;
    }
    struct wsb_identity *id = NULL;
    const char *code = NULL;
    if (wsb_auth_verify(s->rt->auth, r->token, r->token_len, wsb_wall_s(), &id, &code) != WSB_OK) {
        reply_error(s, r->id, "token_rejected", code ? code : "token_invalid");
        return;
    }
    const char *old = s->ident ? s->ident->sub : NULL;
    if ((old == NULL) != (id->sub == NULL) || (old && strcmp(old, id->sub) != 0)) {
        wsb_identity_unref(id);
        reply_error(s, r->id, "token_rejected", "token is for another subject");
        return;
    }
    if (s->ident)
        wsb_identity_unref(s->ident);
    s->ident = id;
    set_expiry(s);
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_authenticated(&b, r->id, id->exp);
    send_reply(s, &b);
    wsb_buf_cleanup(&b);
    recompile_acl(s);
}

static void dispatch(struct wsb_session *s, const uint8_t *text, size_t len)
{
    struct wsb_request req;
    const char *code = NULL;
    char msg[160];
    if (wsb_request_parse(text, len, &req, &code, msg, sizeof(msg)) != 0) {
        reply_error(s, req.id, code ? code : "invalid_request", msg);
        wsb_request_cleanup(&req);
        return;
    }
    switch (req.op) {
    case WSB_REQ_SUBSCRIBE: op_subscribe(s, &req); break;
    case WSB_REQ_UNSUBSCRIBE: op_unsubscribe(s, &req); break;
    case WSB_REQ_PUBLISH: op_publish(s, &req); break;
    case WSB_REQ_ACK:
    case WSB_REQ_NACK: op_ack(s, &req); break;
    case WSB_REQ_AUTH: op_auth(s, &req); break;
    }
    wsb_request_cleanup(&req);
}

/* Inbound limits: a message bucket and a byte bucket; persistent abuse closes with 4429. */
static bool admit_message(struct wsb_session *s, size_t len)
{
    int64_t now = wsb_now_us();
    bool ok = wsb_bucket_take(&s->in_msgs, 1, now);
    enum wsb_rl_kind kind = WSB_RL_MESSAGES;
    if (ok && s->in_bytes.rate > 0 && !wsb_bucket_take(&s->in_bytes, (double)len, now)) {
        ok = false;
        kind = WSB_RL_BYTES;
    }
    if (ok) {
        s->strikes = 0;
        return true;
    }
    wsb_metric_add(s->w->metrics.rate_limited[kind], 1);
    uint32_t max = (uint32_t)limits(s)->inbound_rate_burst;
    if (max < RATE_STRIKES_MIN)
        max = RATE_STRIKES_MIN;
    if (++s->strikes > max) {
        wsb_log(WSB_LOG_INFO, "inbound rate limit exceeded", WSB_LSTR("conn", s->sid),
                WSB_LSTR("ip", s->ip));
        session_close(s, 4429, "rate limit exceeded", true);
        return false;
    }
    reply_error(s, "", "rate_limited", "too many requests; slow down");
    return false;
}

/* ---- WebSocket input -------------------------------------------------------------- */

static int inflated_chunk(void *ctx, const uint8_t *p, size_t len)
{
    struct wsb_session *s = ctx;
    if (!s->msg_binary) {
        if (wsb_utf8_feed(&s->utf8, p, len) < 0)
            return 1007;
        wsb_buf_append(&s->msg, p, len);
        if (s->msg.oom)
            return 1011;
    }
    return 0;
}

static void on_data(struct wsb_session *s, const struct wsb_frame_ev *ev)
{
    if (ev->message_start) {
        s->msg.len = 0;
        s->msg.oom = false;
        s->msg_total = 0;
        s->msg_binary = ev->opcode == WSB_OP_BINARY;
        wsb_utf8_init(&s->utf8);
    }
    if (ev->compressed) {
        int rc = wsb_inflater_feed(s->inflater, ev->payload, ev->len, ev->message_end,
                                   limits(s)->max_message_bytes, &s->msg_total, inflated_chunk, s);
        if (rc == 1009) {
            session_close(s, 1009, "message too big", true);
            return;
        }
        if (rc == 1007) {
            session_close(s, 1007, "invalid data", true);
            return;
        }
        if (rc != 0) {
            session_close(s, (uint16_t)rc, NULL, true);
            return;
        }
    } else if (ev->len) {
        s->msg_total += ev->len;
        if (inflated_chunk(s, ev->payload, ev->len) != 0) {
            session_close(s, 1007, "invalid UTF-8", true);
            return;
        }
    }
    if (!ev->message_end)
        return;
    if (!s->msg_binary && !wsb_utf8_complete(&s->utf8)) {
        session_close(s, 1007, "invalid UTF-8", true);
        return;
    }
    if (!admit_message(s, (size_t)s->msg_total))
        return;
    if (s->msg_binary) {
        reply_error(s, "", "invalid_request", "binary messages are not supported");
        return;
    }
    dispatch(s, s->msg.data, s->msg.len);
    if (s->msg.cap > 64 * 1024) /* do not keep a large buffer around */
        wsb_buf_cleanup(&s->msg);
}

static void on_control(struct wsb_session *s, const struct wsb_frame_ev *ev)
{
    switch (ev->opcode) {
    case WSB_OP_PING:
        if (s->state == S_OPEN)
            send_control(s, WSB_OP_PONG, ev->payload, ev->len);
        break;
    case WSB_OP_PONG:
        if (s->awaiting_pong && ev->len == sizeof(int64_t) &&
            memcmp(ev->payload, &s->ping_sent_ms, sizeof(int64_t)) == 0) {
            s->awaiting_pong = false;
            double rtt = (double)(wsb_now_ms() - s->ping_sent_ms) / 1000.0;
            wsb_histogram_observe(&s->w->metrics.ping_rtt, rtt);
            if (s->state == S_OPEN)
                event_del(s->timer);
        }
        break;
    case WSB_OP_CLOSE: {
        uint16_t code = 0;
        uint16_t bad = wsb_close_payload_check(ev->payload, ev->len, &code);
        if (s->state == S_CLOSING) {
            /* The answer to our close: done (RFC 6455 §7.1.1, the server closes TCP). */
            s->close_after_flush = true;
            on_write(s->bev, s);
            return;
        }
        if (bad) {
            session_close(s, bad, "invalid close frame", true);
            return;
        }
        s->state = S_CLOSING;
        detach_later(s);
        count_disconnect(s, code == 1005 ? 1000 : code);
        drop_queued(s);
        /* Echo the status code (RFC 6455 §5.5.1); an empty close gets an empty close. */
        send_control(s, WSB_OP_CLOSE, ev->payload, ev->len >= 2 ? 2 : 0);
        s->close_after_flush = true;
        arm_timer(s, FAIL_FLUSH_MS);
        on_write(s->bev, s);
        break;
    }
    }
}

static void read_frames(struct wsb_session *s, struct evbuffer *in)
{
    uint8_t chunk[READ_CHUNK];
    while (s->state == S_OPEN || s->state == S_CLOSING) {
        int n = evbuffer_remove(in, chunk, sizeof(chunk));
        if (n <= 0)
            return;
        if (s->discard_input)
            continue;
        size_t off = 0;
        while (off < (size_t)n && s->state != S_DEAD) {
            struct wsb_frame_ev ev;
            size_t used = wsb_frame_parse(&s->fp, chunk + off, (size_t)n - off, &ev);
            off += used;
            if (ev.type == WSB_FEV_ERROR) {
                if (s->state == S_OPEN)
                    session_close(s, ev.close_code, ev.reason, true);
                else
                    session_kill(s);
                s->discard_input = true;
                break;
            }
            if (s->close_only) {
                /* After a 4401 close only the client's close frame is looked at. */
                if (ev.type == WSB_FEV_CONTROL && ev.opcode == WSB_OP_CLOSE)
                    on_control(s, &ev);
            } else if (ev.type == WSB_FEV_DATA && s->state == S_OPEN) {
                on_data(s, &ev);
            } else if (ev.type == WSB_FEV_CONTROL) {
                on_control(s, &ev);
            }
            if (ev.type == WSB_FEV_NONE && used == 0)
                break;
            if (s->state == S_CLOSING && s->close_after_flush)
                s->discard_input = true;
        }
    }
}

/* ---- handshake -------------------------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void refuse(struct wsb_session *s, int status, const char *code, const char *message,
                   const char *extra_headers, enum wsb_hs_result result)
{
    struct wsb_buf body;
    wsb_buf_init(&body);
    wsb_buf_puts(&body, "{\"error\":");
    wsb_buf_json_str(&body, code, strlen(code));
    wsb_buf_puts(&body, ",\"message\":");
    wsb_buf_json_str(&body, message, strlen(message));
    wsb_buf_puts(&body, "}");
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n"
                        "%s\r\n",
                        status, status_text(status), body.len, extra_headers ? extra_headers : "");
    evbuffer_add(out, body.data, body.len);
    wsb_buf_cleanup(&body);
    wsb_metric_add(s->w->metrics.handshakes[result], 1);
    wsb_log(WSB_LOG_INFO, "handshake refused", WSB_LSTR("ip", s->ip), WSB_LINT("status", status),
            WSB_LSTR("error", code));
    s->state = S_CLOSING;
    s->close_after_flush = true;
    s->discard_input = true;
    arm_timer(s, FAIL_FLUSH_MS);
    bufferevent_disable(s->bev, EV_READ);
    on_write(s->bev, s);
}

static void serve_page(struct wsb_session *s, const char *type, const char *body)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    size_t len = strlen(body);
    evbuffer_add_printf(out,
                        "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\nCache-Control: no-store\r\n\r\n",
                        type, len);
    evbuffer_add(out, body, len);
    s->state = S_CLOSING;
    s->close_after_flush = true;
    s->discard_input = true;
    arm_timer(s, FAIL_FLUSH_MS);
    bufferevent_disable(s->bev, EV_READ);
    on_write(s->bev, s);
}

/* Origins guard browsers against cross-site WebSocket hijacking. A request without Origin
 * is not from a browser (browsers always send it on a WebSocket upgrade), so refusing it
 * protects nothing and locks out server-side and mobile clients: it is admitted, as
 * gorilla/websocket and Centrifugo do. "*" admits any origin. */
static bool origin_allowed(const struct wsb_config *cfg, struct wsb_slice origin)
{
    if (cfg->nallowed_origins == 0 || !origin.ptr)
        return true;
    for (size_t i = 0; i < cfg->nallowed_origins; i++) {
        const char *o = cfg->allowed_origins[i];
        if (strcmp(o, "*") == 0)
            return true;
        if (strlen(o) == origin.len && strncasecmp(o, origin.ptr, origin.len) == 0)
            return true;
    }
    return false;
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg);
static void on_expiry(evutil_socket_t fd, short what, void *arg);

static void set_expiry(struct wsb_session *s)
{
    if (!s->exp_ev)
        return;
    event_del(s->exp_ev);
    if (!s->ident || s->ident->exp <= 0)
        return;
    int64_t at = s->ident->exp + wsb_auth_leeway(s->rt->auth);
    int64_t in = at - wsb_wall_s();
    if (in < 0)
        in = 0;
    struct timeval tv = {(time_t)in, 0};
    evtimer_add(s->exp_ev, &tv);
}

static void recompile_acl(struct wsb_session *s)
{
    const struct wsb_config *cfg = s->rt->cfg;
    struct wsb_acl *acl = wsb_acl_compile(cfg->acl, cfg->nacl, s->ident ? s->ident->claims : NULL,
                                          cfg->auth.enabled ? cfg->auth.permissions_claim : NULL);
    if (!acl)
        return; /* keep the old grants on allocation failure */
    if (s->acl)
        wsb_acl_free(s->acl);
    s->acl = acl;
    /* Subscriptions the new grants no longer allow end now. */
    for (size_t i = 0; i < s->cap; i++) {
        struct sub *sub = &s->subs[i];
        if (!sub->used || wsb_acl_check(acl, WSB_ACL_SUBSCRIBE, sub->channel, strlen(sub->channel)))
            continue;
        char ch[WSB_CHANNEL_MAX + 1];
        memcpy(ch, sub->channel, sizeof(ch));
        drop_sub(s, sub);
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_encode_unsubscribed(&b, "", ch, "forbidden");
        send_reply(s, &b);
        wsb_buf_cleanup(&b);
    }
}

static void close_with_token_error(struct wsb_session *s, const char *code)
{
    char reason[96];
    snprintf(reason, sizeof(reason), "{\"error\":\"%s\"}", code);
    session_close(s, 4401, reason, false);
    s->close_only = true;
}

static void handshake(struct wsb_session *s, const char *head, size_t head_len)
{
    struct wsb_worker *w = s->w;
    const struct wsb_config *cfg = s->rt->cfg;
    struct wsb_http_req req;
    if (wsb_http_parse(head, head_len, &req) != 0) {
        refuse(s, 400, "bad_request", "malformed HTTP request", NULL, WSB_HS_BAD_REQUEST);
        return;
    }
    size_t plen = strlen(cfg->path);
    bool is_ws_path = req.path.len == plen && memcmp(req.path.ptr, cfg->path, plen) == 0;
    if (!is_ws_path) {
        bool get = req.method.len == 3 && memcmp(req.method.ptr, "GET", 3) == 0;
        if (get && w->shared->demo_page && req.path.len == 1 && req.path.ptr[0] == '/') {
            serve_page(s, "text/html; charset=utf-8", w->shared->demo_page);
            return;
        }
        refuse(s, 404, "not_found", "no such resource", NULL, WSB_HS_BAD_REQUEST);
        return;
    }
    struct wsb_upgrade_check chk;
    wsb_ws_check_upgrade(&req, &chk);
    if (chk.status) {
        refuse(s, chk.status, chk.error, chk.message,
               chk.status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, WSB_HS_BAD_REQUEST);
        return;
    }
    if (!origin_allowed(cfg, wsb_http_header(&req, "Origin"))) {
        refuse(s, 403, "origin_not_allowed", "Origin is not allowed", NULL, WSB_HS_FORBIDDEN);
        return;
    }
    char extra[64];
    uint32_t retry = 1;
    enum wsb_ip_verdict iv = wsb_iplimit_acquire(
        w->shared->iplimit, (const struct sockaddr *)&s->addr, wsb_now_us(), &retry, &s->ip_ticket);
    if (iv != WSB_IP_OK) {
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry ? retry : 1);
        wsb_metric_add(w->metrics.rate_limited[iv == WSB_IP_RATE ? WSB_RL_HANDSHAKE
                                                                 : WSB_RL_CONNECTIONS_PER_IP],
                       1);
        refuse(s, 429, "rate_limited",
               iv == WSB_IP_RATE  ? "too many handshakes from this address"
               : iv == WSB_IP_CAP ? "too many connections from this address"
                                  : "too many client addresses at once",
               extra, WSB_HS_RATE_LIMITED);
        return;
    }
    if (atomic_load(&w->shared->draining) || w->draining) {
        refuse(s, 503, "draining", "server is shutting down", "Retry-After: 5\r\n",
               WSB_HS_OVERLOADED);
        return;
    }
    int64_t conns = atomic_fetch_add(&w->shared->connections, 1);
    s->counted = true;
    wsb_metric_add(w->metrics.connections, 1);
    if (conns >= (int64_t)cfg->limits.max_connections) {
        refuse(s, 503, "overloaded", "max_connections reached", "Retry-After: 5\r\n",
               WSB_HS_OVERLOADED);
        return;
    }

    /* Authentication. */
    const char *token_error = NULL;
    if (s->rt->auth) {
        char joined_proto[1024], joined_cookie[4096];
        long pl = wsb_http_header_join(&req, "Sec-WebSocket-Protocol", joined_proto,
                                       sizeof(joined_proto));
        long cl = wsb_http_header_join(&req, "Cookie", joined_cookie, sizeof(joined_cookie));
        struct wsb_slice authz = wsb_http_header(&req, "Authorization");
        struct wsb_token_inputs in = {
            .authorization = authz.ptr,
            .authorization_len = authz.len,
            .query = req.query.ptr,
            .query_len = req.query.len,
            .protocols = pl > 0 ? joined_proto : NULL,
            .protocols_len = pl > 0 ? (size_t)pl : 0,
            .cookies = cl > 0 ? joined_cookie : NULL,
            .cookies_len = cl > 0 ? (size_t)cl : 0,
        };
        char *token = malloc(WSB_TOKEN_MAX + 1);
        const char *source = NULL;
        long tl = token ? wsb_token_find(&cfg->auth, &in, token, WSB_TOKEN_MAX + 1, &source) : -1;
        if (tl == 0) {
            token_error = "token_missing";
        } else if (tl < 0) {
            token_error = "token_malformed";
        } else if (wsb_auth_verify(s->rt->auth, token, (size_t)tl, wsb_wall_s(), &s->ident,
                                   &token_error) != WSB_OK) {
            if (!token_error)
                token_error = "token_invalid";
        }
        if (token) {
            memset(token, 0, WSB_TOKEN_MAX + 1);
            free(token);
        }
        if (token_error && cfg->auth.refusal == WSB_REFUSAL_HTTP) {
            refuse(s, 401, token_error, "authentication failed",
                   "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", WSB_HS_UNAUTHORIZED);
            return;
        }
    }

    /* Accept. */
    char accept[29];
    wsb_ws_accept_key(chk.key.ptr, chk.key.len, accept);
    char protos[1024];
    long pl = wsb_http_header_join(&req, "Sec-WebSocket-Protocol", protos, sizeof(protos));
    const char *proto = pl > 0 ? wsb_token_select_protocol(protos, (size_t)pl) : NULL;
    char ext[256] = "";
    struct wsb_pmd_params pmdp;
    if (cfg->permessage_deflate && !token_error) {
        char offers[2048];
        long ol = wsb_http_header_join(&req, "Sec-WebSocket-Extensions", offers, sizeof(offers));
        if (ol > 0 && wsb_pmd_negotiate(offers, (size_t)ol, &pmdp, ext, sizeof(ext)) == 1) {
            s->inflater =
                wsb_inflater_new(pmdp.client_max_window_bits, pmdp.client_no_context_takeover);
            s->pmd = s->inflater != NULL;
            /* Shared compressed frames use a 15-bit window; a client that asked for a
             * smaller server window gets its messages uncompressed, which RFC 7692 allows
             * per message (RSV1 clear). */
            s->deflate_out = s->pmd && pmdp.server_max_window_bits >= 15;
        }
    }
    struct evbuffer *out = bufferevent_get_output(s->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                        accept);
    if (proto)
        evbuffer_add_printf(out, "Sec-WebSocket-Protocol: %s\r\n", proto);
    if (s->pmd)
        evbuffer_add_printf(out, "Sec-WebSocket-Extensions: %s\r\n", ext);
    evbuffer_add(out, "\r\n", 2);

    s->state = S_OPEN;
    event_del(s->timer);
    wsb_frame_parser_init(&s->fp, cfg->limits.max_message_bytes, s->pmd);
    if (token_error) {
        wsb_metric_add(w->metrics.handshakes[WSB_HS_UNAUTHORIZED], 1);
        wsb_log(WSB_LOG_INFO, "token refused", WSB_LSTR("conn", s->sid), WSB_LSTR("ip", s->ip),
                WSB_LSTR("error", token_error));
        close_with_token_error(s, token_error);
        return;
    }
    wsb_metric_add(w->metrics.handshakes[WSB_HS_OK], 1);
    int64_t now_us = wsb_now_us();
    wsb_bucket_init(&s->in_msgs, cfg->limits.inbound_rate_per_s, cfg->limits.inbound_rate_burst,
                    now_us);
    wsb_bucket_init(&s->in_bytes, cfg->limits.inbound_bytes_per_s, cfg->limits.inbound_bytes_burst,
                    now_us);
    recompile_acl(s);
    s->ping_ev = event_new(w->base, -1, EV_PERSIST, on_ping_timer, s);
    s->exp_ev = evtimer_new(w->base, on_expiry, s);
    if (cfg->limits.ping_interval_ms) {
        struct timeval tv = {cfg->limits.ping_interval_ms / 1000,
                             (cfg->limits.ping_interval_ms % 1000) * 1000};
        event_add(s->ping_ev, &tv);
    }
    set_expiry(s);
    wsb_log(WSB_LOG_DEBUG, "connected", WSB_LSTR("conn", s->sid), WSB_LSTR("ip", s->ip),
            WSB_LSTR("sub", s->ident ? s->ident->sub : NULL));
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_welcome(&b, s->sid, s->ident ? s->ident->sub : NULL, s->ident ? s->ident->exp : 0);
    send_reply(s, &b);
    wsb_buf_cleanup(&b);
}

static void read_handshake(struct wsb_session *s, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    size_t n = len < WSB_HTTP_MAX_HEAD + 4 ? len : WSB_HTTP_MAX_HEAD + 4;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    long end = wsb_http_head_end(p, n);
    if (end == 0)
        return;
    if (end < 0) {
        refuse(s, 431, "headers_too_large", "request head is too large", NULL, WSB_HS_BAD_REQUEST);
        return;
    }
    handshake(s, p, (size_t)end);
    evbuffer_drain(in, (size_t)end);
}

/* ---- libevent callbacks ----------------------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct wsb_session *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (s->state == S_HANDSHAKE)
        read_handshake(s, in);
    if (s->state == S_OPEN || s->state == S_CLOSING)
        read_frames(s, in);
    else if (s->state != S_HANDSHAKE)
        evbuffer_drain(in, evbuffer_get_length(in));
    /* Back-pressure on a client that sends while not reading. */
    if (s->state == S_OPEN && !s->read_paused && limits(s)->send_hard_bytes &&
        out_bytes(s) > limits(s)->send_hard_bytes) {
        s->read_paused = true;
        bufferevent_disable(bev, EV_READ);
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct wsb_session *s = arg;
    if (s->state == S_DEAD)
        return;
    flush(s);
    if (s->close_after_flush && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        session_kill(s);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct wsb_session *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        session_kill(s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_session *s = arg;
    switch (s->state) {
    case S_HANDSHAKE:
        wsb_metric_add(s->w->metrics.handshakes[WSB_HS_TIMEOUT], 1);
        wsb_log(WSB_LOG_DEBUG, "handshake timeout", WSB_LSTR("ip", s->ip));
        session_kill(s);
        break;
    case S_OPEN:
        /* Pong deadline passed: the peer is gone; drop TCP (the client sees 1006). */
        wsb_log(WSB_LOG_DEBUG, "pong timeout", WSB_LSTR("conn", s->sid));
        session_kill(s);
        break;
    default: session_kill(s); break;
    }
}

static void on_ping_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_session *s = arg;
    if (s->state != S_OPEN || s->awaiting_pong)
        return;
    s->ping_sent_ms = wsb_now_ms();
    s->awaiting_pong = true;
    send_control(s, WSB_OP_PING, &s->ping_sent_ms, sizeof(s->ping_sent_ms));
    if (limits(s)->pong_timeout_ms)
        arm_timer(s, limits(s)->pong_timeout_ms);
}

static void on_expiry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_session *s = arg;
    if (s->state != S_OPEN)
        return;
    wsb_log(WSB_LOG_INFO, "token expired", WSB_LSTR("conn", s->sid),
            WSB_LSTR("sub", s->ident ? s->ident->sub : NULL));
    close_with_token_error(s, "token_expired");
}

void wsb_session_tick(struct wsb_session *s, int64_t now_ms)
{
    (void)now_ms;
    if (s->state != S_OPEN)
        return;
    /* The soft limit is also judged when no new message arrives. */
    const struct wsb_limits *l = limits(s);
    s->sb.bytes = out_bytes(s);
    if (s->q.count &&
        wsb_sendbuf_check(&s->sb, l->send_soft_bytes, l->send_soft_seconds, l->send_hard_bytes,
                          wsb_now_us()) != WSB_SB_OK &&
        l->send_policy == WSB_POLICY_DISCONNECT) {
        wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], 1);
        session_close(s, 4408, "slow consumer", true);
    }
}

/* ---- accept / free ---------------------------------------------------------------- */

void wsb_session_accept(struct wsb_worker *w, int fd, const struct sockaddr *addr, int socklen)
{
    struct wsb_session *s = calloc(1, sizeof(*s));
    if (!s) {
        evutil_closesocket(fd);
        return;
    }
    s->w = w;
    s->id = ((uint64_t)w->idx << 48) | ++w->next_session;
    snprintf(s->sid, sizeof(s->sid), "%" PRIx64, s->id);
    if ((size_t)socklen <= sizeof(s->addr))
        memcpy(&s->addr, addr, (size_t)socklen);
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, s->ip, sizeof(s->ip));
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, s->ip, sizeof(s->ip));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The current snapshot, not the worker's cached one: a reload is visible to every
     * handshake that starts after the swap, before the worker has seen its RELOAD mail. */
    s->rt = wsb_shared_runtime(w->shared);
    s->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    s->timer = evtimer_new(w->base, on_timer, s);
    if (!s->bev || !s->timer) {
        if (s->bev)
            bufferevent_free(s->bev);
        else
            evutil_closesocket(fd);
        if (s->timer)
            event_free(s->timer);
        wsb_runtime_unref(s->rt);
        free(s);
        return;
    }
    wsb_buf_init(&s->msg);
    wsb_outq_init(&s->q);
    wsb_sendbuf_init(&s->sb);
    s->state = S_HANDSHAKE;
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_WRITE, SOCKET_CHUNK / 2, 0);
    /* libevent writes at most 16 KiB per socket per loop pass by default: let one pass
     * drain what flush() queued (many frames per writev). */
    bufferevent_set_max_single_write(s->bev, SOCKET_CHUNK);
    bufferevent_set_max_single_read(s->bev, 64 * 1024);
    bufferevent_setwatermark(s->bev, EV_READ, 0, 256 * 1024);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    arm_timer(s, s->rt->cfg->limits.handshake_timeout_ms);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
}

struct wsb_session *wsb_session_next(struct wsb_session *s)
{
    return s->next;
}

uint64_t wsb_session_queued(const struct wsb_session *s)
{
    return out_bytes(s);
}

void wsb_session_force_close(struct wsb_session *s)
{
    session_kill(s);
}

void wsb_session_drain(struct wsb_session *s)
{
    if (s->state == S_OPEN)
        session_close(s, 1001, "server shutting down", false);
    else if (s->state == S_HANDSHAKE)
        session_kill(s);
}

void wsb_session_recheck(struct wsb_session *s)
{
    if (s->state != S_OPEN)
        return;
    struct wsb_runtime *rt = s->w->rt;
    if (rt != s->rt) {
        wsb_runtime_ref(rt);
        wsb_runtime_unref(s->rt);
        s->rt = rt;
    }
    const struct wsb_limits *l = limits(s);
    wsb_bucket_reconfigure(&s->in_msgs, l->inbound_rate_per_s, l->inbound_rate_burst);
    wsb_bucket_reconfigure(&s->in_bytes, l->inbound_bytes_per_s, l->inbound_bytes_burst);
    recompile_acl(s);
}

static void session_free(struct wsb_session *s)
{
    struct wsb_worker *w = s->w;
    for (size_t i = 0; i < s->cap; i++)
        if (s->subs[i].used)
            drop_sub(s, &s->subs[i]);
    for (struct pending_pub *p = s->pubs; p; p = p->next_in_session)
        p->s = NULL;
    wsb_iplimit_release(w->shared->iplimit, &s->ip_ticket);
    if (s->counted) {
        atomic_fetch_sub(&w->shared->connections, 1);
        wsb_metric_add(w->metrics.connections, -1);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    wsb_outq_cleanup(&s->q);
    bufferevent_free(s->bev);
    event_free(s->timer);
    if (s->ping_ev)
        event_free(s->ping_ev);
    if (s->exp_ev)
        event_free(s->exp_ev);
    if (s->inflater)
        wsb_inflater_free(s->inflater);
    if (s->acl)
        wsb_acl_free(s->acl);
    if (s->ident)
        wsb_identity_unref(s->ident);
    wsb_buf_cleanup(&s->msg);
    free(s->subs);
    wsb_runtime_unref(s->rt);
    free(s);
}

void wsb_session_reap(struct wsb_worker *w)
{
    while (w->detach) {
        struct wsb_session *s = w->detach;
        w->detach = s->detach_next;
        s->detach_queued = false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->subs[i].used)
                drop_sub(s, &s->subs[i]);
    }
    while (w->reap) {
        struct wsb_session *s = w->reap;
        w->reap = s->reap_next;
        session_free(s);
    }
}
