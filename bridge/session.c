/* Sessions: identity, subscriptions, replies and the send queue, timers, the close
 * handshake, token expiry and ACL re-checks. Calls nothing above it (conn, upgrade, ops). */
#include "bridge/session.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/acl.h"
#include "auth/filter.h"
#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/ids.h"
#include "bridge/iplimit.h"
#include "bridge/mailbox.h"
#include "bridge/metrics.h"
#include "bridge/runtime.h"
#include "bridge/sources.h"
#include "bridge/sse_wire.h"
#include "bridge/worker.h"
#include "bridge/writer.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "connectors/connector.h"
#include "util/buf.h"
#include "util/log.h"

#define CLOSE_WAIT_MS 2000    /* how long we wait for the client's close frame */
#define FAIL_FLUSH_MS 1000    /* how long a failed connection may take to flush */
#define COPY_BELOW 4096       /* smaller frames are copied into the socket buffer */
#define GATE_MAX (128 * 1024) /* a client with more queued is behind (gate.h) */
#define GATE_ALLOW_US 500000  /* the most a behind client holds its loop's hand-off */

static void on_timer(evutil_socket_t fd, short what, void *arg);

const struct wsb_limits *wsb_session_limits(const struct wsb_session *s)
{
    return &s->rt->cfg->limits;
}

uint64_t wsb_session_queued(const struct wsb_session *s)
{
    return s->q.bytes + wsb_session_out_len(s);
}

/* ---- low-level output ------------------------------------------------------------- */

static void frame_cleanup(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    wsb_frame_unref(arg);
}

/* Hands a frame to the socket buffer (takes over the reference). libevent allocates a chain
 * of at least 1 KiB for every reference however small the data (docs/flow-control.md), so a
 * small frame is copied instead, packed with its neighbours into shared chains; a large one
 * is referenced, not copied per client. */
static void write_frame(struct wsb_session *s, struct wsb_frame *f)
{
    struct evbuffer *out = wsb_session_output(s);
    if (!out) {
        wsb_frame_unref(f);
        return;
    }
    size_t len = f->len;
    if (len < COPY_BELOW) {
        int rc = evbuffer_add(out, f->data, len);
        wsb_frame_unref(f);
        if (rc < 0)
            return;
    } else if (evbuffer_add_reference(out, f->data, len, frame_cleanup, f) < 0) {
        wsb_frame_unref(f);
        return;
    }
    wsb_metric_add(s->w->metrics.bytes_out, len);
}

/* ---- the hand-off gate (gate.h) --------------------------------------------------- */

/* A client is behind with more than this queued: never below what flush keeps in the socket
 * buffer (the write callback that sees the queue shrink only runs below that), at most a
 * quarter of hard_bytes and half of soft_bytes above it, so a client that keeps up stays
 * far from both limits whatever the broker hands over at once. */
static uint64_t gate_threshold(const struct wsb_limits *l)
{
    uint64_t t = GATE_MAX;
    if (l->send_hard_bytes && l->send_hard_bytes / 4 < t)
        t = l->send_hard_bytes / 4;
    if (l->send_soft_bytes && l->send_soft_bytes / 2 < t)
        t = l->send_soft_bytes / 2;
    return t < WSB_SESSION_SOCKET_CHUNK ? WSB_SESSION_SOCKET_CHUNK : t;
}

/* How long a behind client may hold its loop: half of soft_seconds at most, so a stalled
 * client is still judged (4408 or gaps) within soft_seconds + 1 s. */
static int64_t gate_allow_us(const struct wsb_limits *l)
{
    int64_t a = GATE_ALLOW_US;
    if (l->send_soft_bytes && (int64_t)l->send_soft_seconds * 500000 < a)
        a = (int64_t)l->send_soft_seconds * 500000;
    return a;
}

void wsb_session_gate_hold(void *ctx, struct wsb_gate_member *m, bool holding)
{
    struct wsb_worker *w = ctx;
    struct wsb_session *s =
        (struct wsb_session *)(void *)((char *)m - offsetof(struct wsb_session, gm));
    bool opened = false;
    for (size_t i = 0; i < s->cap; i++) {
        struct wsb_sub *sub = &s->subs[i];
        if (!sub->used || sub->held == holding)
            continue;
        if (holding) {
            sub->held = wsb_gate_source_hold(&w->gate, sub->source_id, 1) > 0;
        } else {
            sub->held = false;
            opened |= wsb_gate_source_hold(&w->gate, sub->source_id, -1) == 0;
        }
    }
    /* A source nobody holds any more: its mails put aside go on at once. */
    if (opened && w->mailbox)
        wsb_mailbox_kick(w->mailbox);
}

void wsb_session_gate_sub(struct wsb_session *s, struct wsb_sub *sub, bool on)
{
    struct wsb_gate *g = &s->w->gate;
    if (on && s->gm.holding && sub->used && !sub->held && g->on_hold) {
        sub->held = wsb_gate_source_hold(g, sub->source_id, 1) > 0;
    } else if (!on && sub->held) {
        sub->held = false;
        if (wsb_gate_source_hold(g, sub->source_id, -1) == 0 && s->w->mailbox)
            wsb_mailbox_kick(s->w->mailbox);
    }
}

static void gate_note(struct wsb_session *s)
{
    const struct wsb_limits *l = wsb_session_limits(s);
    bool behind = s->state == WSB_SS_OPEN && wsb_session_queued(s) > gate_threshold(l);
    if (!behind && !s->gm.behind)
        return;
    wsb_gate_note(&s->w->gate, &s->gm, behind, gate_allow_us(l), wsb_now_us());
}

static void gate_leave(struct wsb_session *s)
{
    if (!s->gm.behind)
        return;
    wsb_gate_leave(&s->w->gate, &s->gm);
}

void wsb_session_note_burst(struct wsb_session *s)
{
    s->w->trim_due = true;
}

void wsb_session_send_control(struct wsb_session *s, uint8_t opcode, const void *p, size_t len)
{
    if (s->transport != WSB_TRANSPORT_WS)
        return;
    uint8_t hdr[10];
    size_t hl = wsb_frame_header(hdr, opcode, true, false, len);
    struct evbuffer *out = wsb_session_output(s);
    if (!out)
        return;
    evbuffer_add(out, hdr, hl);
    if (len)
        evbuffer_add(out, p, len);
    wsb_metric_add(s->w->metrics.bytes_out, hl + len);
}

/* A server JSON object as the session's transport carries it: a text frame, or an SSE
 * event of the object's type. */
static struct wsb_frame *reply_frame(const struct wsb_session *s, const uint8_t *json, size_t len)
{
    if (s->transport != WSB_TRANSPORT_SSE)
        return wsb_frame_new(WSB_OP_TEXT, false, json, len);
    char type[32];
    wsb_sse_type_of(json, len, type, sizeof(type));
    struct wsb_buf e;
    wsb_buf_init(&e);
    wsb_sse_event(&e, type, json, len);
    struct wsb_frame *f = e.oom ? NULL : wsb_frame_raw(e.data, e.len);
    wsb_buf_cleanup(&e);
    return f;
}

void wsb_session_reply(struct wsb_session *s, struct wsb_buf *b)
{
    if (s->state != WSB_SS_OPEN || b->oom)
        return;
    if (s->transport == WSB_TRANSPORT_HTTP) {
        if (s->on_reply)
            s->on_reply(s, b);
        return;
    }
    struct wsb_frame *f = reply_frame(s, b->data, b->len);
    if (!f)
        return;
    wsb_outq_push(&s->q, f, WSB_OUTQ_REPLY, 0);
    wsb_session_flush(s);
}

void wsb_session_reply_error(struct wsb_session *s, const char *id, const char *code,
                             const char *msg)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_error(&b, id, code, msg);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
}

static void emit_gap(struct wsb_session *s, struct wsb_sub *sub)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_gap(&b, sub->channel, sub->gap);
    sub->gap = 0;
    struct wsb_frame *f = b.oom ? NULL : reply_frame(s, b.data, b.len);
    wsb_buf_cleanup(&b);
    if (f)
        write_frame(s, f);
}

/* SSE: `id:` with the resume token of every channel of the stream, written just before the
 * message event it belongs to. */
static void write_sse_id(struct wsb_session *s)
{
    const struct wsb_sse_pos *stack[64] = {0};
    const struct wsb_sse_pos **chans = s->cap <= 64 ? stack : malloc(s->cap * sizeof(*chans));
    if (!chans)
        return;
    for (size_t i = 0; i < s->cap; i++)
        chans[i] = s->subs[i].used ? s->subs[i].pos : NULL;
    char tok[WSB_SSE_ID_MAX + 1];
    size_t n = wsb_sse_token_encode(chans, s->cap, tok, sizeof(tok));
    if (chans != stack)
        free(chans);
    struct evbuffer *out = n ? wsb_session_output(s) : NULL;
    if (!out)
        return;
    evbuffer_add(out, "id: ", 4);
    evbuffer_add(out, tok, n);
    evbuffer_add(out, "\n", 1);
    wsb_metric_add(s->w->metrics.bytes_out, n + 5);
}

/* SSE: the shared `event: message` variant of a message frame (the reference moves to it),
 * after the `id:` line that covers the stream's positions once it is delivered. */
static struct wsb_frame *sse_message(struct wsb_session *s, uint32_t tag, struct wsb_frame *f)
{
    struct wsb_frame *e = wsb_sse_message_frame(f);
    if (e)
        wsb_frame_ref(e);
    wsb_frame_unref(f);
    if (!e || e->partition < 0 || e->offset < 0 || tag >= s->cap || !s->subs[tag].used)
        return e;
    struct wsb_sse_pos *pos = wsb_session_sse_pos(&s->subs[tag]);
    if (pos && wsb_sse_pos_set(pos, e->partition, e->offset + 1) == 0)
        write_sse_id(s);
    return e;
}

struct wsb_sse_pos *wsb_session_sse_pos(struct wsb_sub *sub)
{
    if (!sub->pos) {
        sub->pos = calloc(1, sizeof(*sub->pos));
        if (sub->pos)
            sub->pos->hash = wsb_sse_channel_hash(sub->channel, strlen(sub->channel));
    }
    return sub->pos;
}

/* Moves frames from the out-queue into the socket buffer while it has room. */
void wsb_session_flush(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD || s->state == WSB_SS_HANDSHAKE)
        return;
    struct wsb_outq_item it;
    int64_t now = -1;
    while (wsb_session_out_len(s) < WSB_SESSION_SOCKET_CHUNK && s->state != WSB_SS_DEAD &&
           wsb_outq_pop(&s->q, &it)) {
        struct wsb_frame *f = it.frame;
        if (it.kind != WSB_OUTQ_REPLY) {
            if (it.tag < s->cap && s->subs[it.tag].used && s->subs[it.tag].gap)
                emit_gap(s, &s->subs[it.tag]);
            if (s->transport == WSB_TRANSPORT_SSE && !(f = sse_message(s, it.tag, f)))
                continue;
            if (s->deflate_out) {
                struct wsb_frame *d = wsb_frame_deflated(f, s->w->deflater);
                if (d != f) {
                    wsb_frame_ref(d);
                    wsb_frame_unref(f);
                    f = d;
                }
            }
            wsb_metric_add(s->w->metrics.messages_out, 1);
            s->messages_out++;
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
    if (s->read_paused && wsb_session_queued(s) <= wsb_session_limits(s)->send_soft_bytes) {
        s->read_paused = false;
        if (!s->discard_input)
            wsb_session_read(s, true);
    }
    gate_note(s);
}

/* ---- the socket ------------------------------------------------------------------- */

void wsb_session_io_update(struct wsb_session *s)
{
    if (!s->io)
        return;
    short want = 0;
    if (s->state != WSB_SS_DEAD) {
        if (s->read_on && (!s->in || evbuffer_get_length(s->in) < s->read_max))
            want |= EV_READ;
        if (s->write_armed && wsb_session_out_len(s))
            want |= EV_WRITE;
    }
    if (want == s->io_what)
        return;
    /* Rare (a write the kernel refused part of, a read pause): one event for both, assigned
     * again for the new interest (an event_new'd event may be, once deleted). */
    event_del(s->io);
    s->io_what = want;
    if (!want)
        return;
    event_assign(s->io, s->w->base, s->fd, (short)(want | EV_PERSIST), event_get_callback(s->io),
                 s);
    event_add(s->io, NULL);
}

struct evbuffer *wsb_session_output(struct wsb_session *s)
{
    if (!s->out && s->direct && !wsb_writer_output(s))
        wsb_session_kill(s);
    return s->out;
}

size_t wsb_session_out_len(const struct wsb_session *s)
{
    return s->out ? evbuffer_get_length(s->out) : 0;
}

void wsb_session_read(struct wsb_session *s, bool on)
{
    if (s->bev) {
        if (on)
            bufferevent_enable(s->bev, EV_READ);
        else
            bufferevent_disable(s->bev, EV_READ);
        return;
    }
    s->read_on = on;
    wsb_session_io_update(s);
}

void wsb_session_set_read_max(struct wsb_session *s, size_t max)
{
    if (s->bev) {
        bufferevent_setwatermark(s->bev, EV_READ, 0, max);
        return;
    }
    s->read_max = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
    wsb_session_io_update(s);
}

int wsb_session_fd(const struct wsb_session *s)
{
    return s->bev ? (int)bufferevent_getfd(s->bev) : s->fd;
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void count_disconnect(struct wsb_session *s, uint16_t code)
{
    wsb_metric_add(s->w->metrics.disconnects[wsb_metrics_close_idx(code)], 1);
}

/* Arms the timer event for the earliest deadline set. */
static void rearm(struct wsb_session *s)
{
    int64_t next = 0;
    const int64_t due[3] = {s->oneshot_ms, s->ping_ms, s->expiry_ms};
    for (size_t i = 0; i < 3; i++)
        if (due[i] && (!next || due[i] < next))
            next = due[i];
    if (!next) {
        event_del(s->timer);
        return;
    }
    int64_t in = next - wsb_now_ms();
    if (in < 0)
        in = 0;
    struct timeval tv = {(time_t)(in / 1000), (suseconds_t)((in % 1000) * 1000)};
    evtimer_add(s->timer, &tv);
}

/* A deadline `ms` from now (never 0, which means unset). */
static int64_t deadline(int64_t ms)
{
    int64_t t = wsb_now_ms() + ms;
    return t ? t : 1;
}

void wsb_session_arm_timer(struct wsb_session *s, uint32_t ms)
{
    s->oneshot_ms = deadline(ms);
    rearm(s);
}

void wsb_session_disarm_timer(struct wsb_session *s)
{
    s->oneshot_ms = 0;
    rearm(s);
}

void wsb_session_set_expiry(struct wsb_session *s, int64_t in_ms)
{
    if (!s->expiry_on)
        return;
    s->expiry_ms = in_ms < 0 ? 0 : deadline(in_ms);
    rearm(s);
}

/* A closing session sends no more pings and no longer expires. */
static void stop_periodic(struct wsb_session *s)
{
    s->ping_ms = 0;
    s->expiry_ms = 0;
    rearm(s);
}

static void drop_queued(struct wsb_session *s)
{
    size_t n = 0;
    struct wsb_outq_item it;
    while (wsb_outq_pop(&s->q, &it)) {
        if (it.kind != WSB_OUTQ_REPLY)
            n++;
        wsb_frame_unref(it.frame);
    }
    if (n)
        wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], n);
    gate_leave(s);
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
/* The error code an SSE stream or HTTP answer ends with, for a WebSocket close code. */
static const char *close_error_code(uint16_t code)
{
    switch (code) {
    case 1001: return "shutting_down";
    case 4408: return "slow_consumer";
    case 4429: return "rate_limited";
    case 1011: return "internal_error";
    default: return "closed";
    }
}

/* An SSE stream ends with an `error` event (what is queued is dropped first, as a WebSocket
 * close does); an HTTP request is answered with the error. */
static void end_with_error(struct wsb_session *s, uint16_t code, const char *err,
                           const char *message)
{
    if (s->transport == WSB_TRANSPORT_HTTP) {
        wsb_session_reply_error(s, "", err, message ? message : err);
        return;
    }
    drop_queued(s);
    wsb_session_reply_error(s, "", err, message ? message : err);
    count_disconnect(s, code);
    s->state = WSB_SS_CLOSING; /* counted: end_stream must not count it again */
    wsb_session_end_stream(s);
}

void wsb_session_close(struct wsb_session *s, uint16_t code, const char *reason, bool fail)
{
    if (s->state != WSB_SS_OPEN)
        return;
    if (s->transport != WSB_TRANSPORT_WS) {
        end_with_error(s, code, close_error_code(code), reason);
        return;
    }
    s->state = WSB_SS_CLOSING;
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
    wsb_session_send_control(s, WSB_OP_CLOSE, payload, rl + 2);
    stop_periodic(s);
    if (fail) {
        s->close_after_flush = true;
        wsb_session_arm_timer(s, FAIL_FLUSH_MS);
    } else {
        wsb_session_arm_timer(s, CLOSE_WAIT_MS);
    }
    wsb_log(WSB_LOG_DEBUG, "closing", WSB_LSTR("conn", s->sid), WSB_LINT("code", code));
}

void wsb_session_close_echo(struct wsb_session *s, uint16_t code, const uint8_t *payload,
                            size_t len)
{
    s->state = WSB_SS_CLOSING;
    detach_later(s);
    count_disconnect(s, code == 1005 ? 1000 : code);
    drop_queued(s);
    /* Echo the status code (RFC 6455 §5.5.1); an empty close gets an empty close. */
    wsb_session_send_control(s, WSB_OP_CLOSE, payload, len >= 2 ? 2 : 0);
    s->close_after_flush = true;
    wsb_session_arm_timer(s, FAIL_FLUSH_MS);
    wsb_session_written(s);
}

void wsb_session_kill(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD)
        return;
    if (s->state == WSB_SS_OPEN)
        count_disconnect(s, 1006);
    s->state = WSB_SS_DEAD;
    gate_leave(s);
    if (s->bev)
        bufferevent_disable(s->bev, EV_READ | EV_WRITE);
    else
        wsb_session_io_update(s); /* a dead session wants no event */
    s->reap_next = s->w->reap;
    s->w->reap = s;
    event_active(s->w->reap_ev, EV_READ, 0);
}

void wsb_session_end_stream(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD)
        return;
    if (s->state == WSB_SS_OPEN)
        count_disconnect(s, 1000);
    detach_later(s);
    stop_periodic(s);
    wsb_session_end_after_flush(s);
}

void wsb_session_end_after_flush(struct wsb_session *s)
{
    s->state = WSB_SS_CLOSING;
    s->close_after_flush = true;
    s->discard_input = true;
    s->linger = true;
    wsb_session_arm_timer(s, FAIL_FLUSH_MS);
    wsb_session_written(s);
}

void wsb_session_written(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD)
        return;
    wsb_session_flush(s);
    if (!s->close_after_flush || wsb_session_out_len(s) != 0)
        return;
    /* Lingering close: a client may still be sending its request (it was refused at accept,
     * or its head was too large). Closing with unread input would reset the connection, and
     * the reset can destroy our answer before the client reads it; so we send FIN and read
     * (and drop) until the client's EOF or the FAIL_FLUSH_MS timer. */
    int fd = wsb_session_fd(s);
    if (s->linger && fd >= 0 && shutdown(fd, SHUT_WR) == 0) {
        s->linger = false;
        return;
    }
    wsb_session_kill(s);
}

/* ---- subscriptions ---------------------------------------------------------------- */

struct wsb_sub *wsb_session_find_sub(struct wsb_session *s, const char *channel, size_t len)
{
    for (size_t i = 0; i < s->cap; i++) {
        struct wsb_sub *sub = &s->subs[i];
        if (sub->used && strlen(sub->channel) == len && memcmp(sub->channel, channel, len) == 0)
            return sub;
    }
    return NULL;
}

struct wsb_sub *wsb_session_new_sub(struct wsb_session *s)
{
    for (size_t i = 0; i < s->cap; i++)
        if (!s->subs[i].used)
            return &s->subs[i];
    /* One slot first: most clients hold one subscription (4 slots were 1.4 KiB of an idle
     * connection's ~6.6 KiB when a slot held its channel and id in line; docs/benchmarks.md). */
    size_t cap = s->cap ? s->cap * 2 : 1;
    struct wsb_sub *subs = realloc(s->subs, cap * sizeof(*subs));
    if (!subs)
        return NULL;
    memset(subs + s->cap, 0, (cap - s->cap) * sizeof(*subs));
    struct wsb_sub *sub = &subs[s->cap];
    s->subs = subs;
    s->cap = cap;
    return sub;
}

static void release_source(struct wsb_session *s, uint64_t source_id)
{
    if (wsb_sources_release(s->w->shared->sources, source_id, s->w->idx))
        wsb_worker_broadcast_source(s->w->shared, WSB_MAIL_STOPPED, source_id);
}

/* Hands a delivery the client will never ack back to the broker (nothing is lost). */
void wsb_session_requeue(struct wsb_session *s, const struct wsb_sub *sub, uint64_t token)
{
    wsb_connector_ack(s->w->shared->connectors[sub->connector], sub->source_id, token,
                      WSB_NACK_REQUEUE);
}

void wsb_session_free_slot(struct wsb_session *s, struct wsb_sub *sub)
{
    if (sub->pos) {
        wsb_sse_pos_cleanup(sub->pos);
        free(sub->pos);
        sub->pos = NULL;
    }
    /* What is still queued for it does not go out any more (its ack deliveries are in the
     * unacked list, which drop_sub gave back to the broker); what is already in the socket
     * buffer (at most WSB_SESSION_SOCKET_CHUNK) does. */
    wsb_outq_purge(&s->q, (uint32_t)(sub - s->subs));
    sub->gap = 0;
    free(sub->unacked);
    sub->unacked = NULL;
    sub->nunacked = sub->capunacked = 0;
    wsb_filter_spec_free(sub->client_filter);
    sub->client_filter = NULL;
    free(sub->channel); /* and the id after it */
    sub->channel = sub->id = NULL;
    wsb_session_gate_sub(s, sub, false);
    sub->used = false;
    s->nsubs--;
    wsb_metric_add(s->w->metrics.subscriptions, -1);
    /* A stream with no channel left ends (at the next turn of the loop, after the event
     * that says why). */
    if (s->transport == WSB_TRANSPORT_SSE && s->nsubs == 0 && s->state == WSB_SS_OPEN)
        wsb_session_arm_timer(s, 0);
}

void wsb_session_drop_sub(struct wsb_session *s, struct wsb_sub *sub)
{
    if (sub->hs)
        wsb_hub_detach(s->w->hub, sub->hs);
    sub->hs = NULL;
    for (size_t i = 0; i < sub->nunacked; i++)
        wsb_session_requeue(s, sub, sub->unacked[i]);
    release_source(s, sub->source_id);
    wsb_session_free_slot(s, sub);
}

/* ---- identity ------------------------------------------------------------------- */

void wsb_session_close_token_error(struct wsb_session *s, const char *code)
{
    if (s->transport != WSB_TRANSPORT_WS) {
        if (s->state == WSB_SS_OPEN)
            end_with_error(s, 4401, code, "the token is no longer valid");
        return;
    }
    char reason[96];
    snprintf(reason, sizeof(reason), "{\"error\":\"%s\"}", code);
    wsb_session_close(s, 4401, reason, false);
    s->close_only = true;
}

void wsb_session_start(struct wsb_session *s)
{
    struct wsb_worker *w = s->w;
    const struct wsb_limits *l = wsb_session_limits(s);
    int64_t now_us = wsb_now_us();
    wsb_metric_add(w->metrics.sessions_opened[s->transport], 1);
    wsb_bucket_init(&s->in_msgs, l->inbound_rate_per_s, l->inbound_rate_burst, now_us);
    wsb_bucket_init(&s->in_bytes, l->inbound_bytes_per_s, l->inbound_bytes_burst, now_us);
    if (s->transport == WSB_TRANSPORT_HTTP)
        return; /* one request: no pings, no token expiry */
    s->expiry_on = true;
    if (l->ping_interval_ms) {
        s->ping_ms = deadline(l->ping_interval_ms);
        rearm(s);
    }
}

/* ---- timers ----------------------------------------------------------------------- */

/* The one-shot deadline passed. */
static void oneshot_due(struct wsb_session *s)
{
    switch (s->state) {
    case WSB_SS_HANDSHAKE:
        wsb_metric_add(s->w->metrics.handshakes[WSB_HS_TIMEOUT], 1);
        wsb_log(WSB_LOG_DEBUG, "handshake timeout", WSB_LSTR("ip", s->ip));
        wsb_session_kill(s);
        break;
    case WSB_SS_OPEN:
        if (s->transport == WSB_TRANSPORT_SSE) {
            wsb_log(WSB_LOG_DEBUG, "stream has no channel left", WSB_LSTR("conn", s->sid));
            wsb_session_end_stream(s);
            break;
        }
        /* Pong deadline passed: the peer is gone; drop TCP (the client sees 1006). */
        wsb_log(WSB_LOG_DEBUG, "pong timeout", WSB_LSTR("conn", s->sid));
        wsb_session_kill(s);
        break;
    default: wsb_session_kill(s); break;
    }
}

/* The token's exp (+ leeway) passed: 4401 token_expired. */
static void expiry_due(struct wsb_session *s)
{
    if (s->state != WSB_SS_OPEN)
        return;
    wsb_log(WSB_LOG_INFO, "token expired", WSB_LSTR("conn", s->sid),
            WSB_LSTR("sub", s->ident ? s->ident->sub : NULL));
    wsb_session_close_token_error(s, "token_expired");
}

static void ping_due(struct wsb_session *s)
{
    if (s->state != WSB_SS_OPEN || s->awaiting_pong)
        return;
    if (s->transport == WSB_TRANSPORT_SSE) {
        /* A comment line keeps proxies from timing the stream out; a dead peer shows up as
         * a write error or through the send-buffer limits. */
        struct evbuffer *out = wsb_session_output(s);
        if (out)
            evbuffer_add(out, ":\n\n", 3);
        wsb_metric_add(s->w->metrics.bytes_out, 3);
        return;
    }
    s->ping_sent_ms = wsb_now_ms();
    s->awaiting_pong = true;
    wsb_session_send_control(s, WSB_OP_PING, &s->ping_sent_ms, sizeof(s->ping_sent_ms));
    if (wsb_session_limits(s)->pong_timeout_ms)
        wsb_session_arm_timer(s, wsb_session_limits(s)->pong_timeout_ms);
}

/* The session's one timer: runs what is due (one-shot first), then arms for what is next. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_session *s = arg;
    int64_t now = wsb_now_ms();
    if (s->oneshot_ms && now >= s->oneshot_ms) {
        s->oneshot_ms = 0;
        oneshot_due(s);
    }
    if (s->expiry_ms && now >= s->expiry_ms && s->state != WSB_SS_DEAD) {
        s->expiry_ms = 0;
        expiry_due(s);
    }
    if (s->ping_ms && now >= s->ping_ms && s->state != WSB_SS_DEAD) {
        uint32_t every = wsb_session_limits(s)->ping_interval_ms;
        s->ping_ms = every ? deadline(every) : 0;
        ping_due(s);
    }
    if (s->state != WSB_SS_DEAD)
        rearm(s);
}

/* ---- new / free ------------------------------------------------------------------- */

/* What "%" PRIx64 prints (the id is never 0 but 0 prints "0"), without printf: one
 * snprintf and glibc's inet_ntop (sprintf inside) were ~1 us of every handshake. */
static void format_sid(char out[24], uint64_t id)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = hex[id & 15];
        id >>= 4;
    } while (id);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* Dotted decimal, as inet_ntop(AF_INET) writes it. */
static void format_ipv4(char out[INET_ADDRSTRLEN], const struct in_addr *a)
{
    const unsigned char *b = (const unsigned char *)&a->s_addr;
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        if (i)
            out[n++] = '.';
        n += wsb_fmt_u64(out + n, b[i]);
    }
    out[n] = '\0';
}

struct wsb_session *wsb_session_new(struct wsb_worker *w, struct bufferevent *bev,
                                    const struct sockaddr *addr, int socklen)
{
    struct wsb_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->w = w;
    s->id = wsb_session_id(w->idx, ++w->next_session);
    format_sid(s->sid, s->id);
    if ((size_t)socklen <= sizeof(s->addr))
        memcpy(&s->addr, addr, (size_t)socklen);
    if (addr->sa_family == AF_INET)
        format_ipv4(s->ip, &((const struct sockaddr_in *)addr)->sin_addr);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, s->ip, sizeof(s->ip));
    /* The current snapshot, not the worker's cached one: a reload is visible to every
     * handshake that starts after the swap, before the worker has seen its RELOAD mail. */
    s->rt = wsb_shared_runtime(w->shared);
    s->bev = bev;
    s->out = bev ? bufferevent_get_output(bev) : NULL;
    s->fd = -1;
    s->read_max = 256 * 1024;
    s->timer = evtimer_new(w->base, on_timer, s);
    if (!s->timer) {
        wsb_runtime_unref(s->rt);
        free(s);
        return NULL;
    }
    wsb_buf_init(&s->msg);
    wsb_outq_init(&s->q);
    wsb_sendbuf_init(&s->sb);
    wsb_gate_member_init(&s->gm, wsb_now_us());
    s->state = WSB_SS_HANDSHAKE;
    wsb_session_arm_timer(s, s->rt->cfg->limits.handshake_timeout_ms);
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    return s;
}

struct wsb_session *wsb_session_next(struct wsb_session *s)
{
    return s->next;
}

void wsb_session_force_close(struct wsb_session *s)
{
    wsb_session_kill(s);
}

void wsb_session_drain(struct wsb_session *s)
{
    if (s->transport == WSB_TRANSPORT_HTTP)
        return; /* a publish awaiting its broker is answered with the outcome, not cut short */
    if (s->state == WSB_SS_OPEN)
        wsb_session_close(s, 1001, "server shutting down", false);
    else if (s->state == WSB_SS_HANDSHAKE)
        wsb_session_kill(s);
}
