/* Connections: accept, the socket callbacks (a plain socket's io event, a TLS bufferevent's),
 * and reading WebSocket frames (UTF-8, permessage-deflate, control frames, inbound limits) of
 * an open session. The HTTP upgrade is upgrade.c's; complete text messages go to ops.c. */
#include "bridge/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>

#include "bridge/clock.h"
#include "bridge/metrics.h"
#include "bridge/ops.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/upgrade.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "util/log.h"

#define READ_CHUNK (16 * 1024)
#define READ_MAX (64 * 1024) /* the most one read takes from the socket */
#define RATE_STRIKES_MIN 10  /* refused messages in a row before 4429 */

/* A message over an inbound limit is answered rate_limited; persistent abuse (more refusals
 * in a row than the message burst, at least RATE_STRIKES_MIN) closes with 4429. */
static void refuse_message(struct wsb_session *s, enum wsb_rl_kind kind)
{
    wsb_metric_add(s->w->metrics.rate_limited[kind], 1);
    uint32_t max = (uint32_t)wsb_session_limits(s)->inbound_rate_burst;
    if (max < RATE_STRIKES_MIN)
        max = RATE_STRIKES_MIN;
    if (++s->strikes > max) {
        wsb_log(WSB_LOG_INFO, "inbound rate limit exceeded", WSB_LSTR("conn", s->sid),
                WSB_LSTR("ip", s->ip));
        wsb_session_close(s, 4429, "rate limit exceeded", true);
        return;
    }
    wsb_session_reply_error(s, "", "rate_limited", "too many requests; slow down");
}

/* Inbound bytes are charged as they arrive (inflated bytes for a compressed message), so a
 * message pays while it is being received. One that overdraws the bucket is refused at
 * once; the rest of it is read but not kept. */
static void charge_bytes(struct wsb_session *s, size_t len)
{
    if (s->msg_over || s->in_bytes.rate <= 0)
        return;
    if (wsb_bucket_take(&s->in_bytes, (double)len, wsb_now_us()))
        return;
    s->msg_over = true;
    wsb_buf_cleanup(&s->msg);
    refuse_message(s, WSB_RL_BYTES);
}

/* The message bucket, taken when a message is complete. */
static bool admit_message(struct wsb_session *s)
{
    if (s->msg_over)
        return false; /* refused when it overdrew the byte bucket */
    if (wsb_bucket_take(&s->in_msgs, 1, wsb_now_us())) {
        s->strikes = 0;
        return true;
    }
    refuse_message(s, WSB_RL_MESSAGES);
    return false;
}

/* ---- WebSocket input -------------------------------------------------------------- */

static int inflated_chunk(void *ctx, const uint8_t *p, size_t len)
{
    struct wsb_session *s = ctx;
    charge_bytes(s, len);
    if (!s->msg_binary) {
        if (wsb_utf8_feed(&s->utf8, p, len) < 0)
            return 1007;
        if (s->msg_over)
            return 0;
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
        s->msg_over = false;
        s->msg_binary = ev->opcode == WSB_OP_BINARY;
        wsb_utf8_init(&s->utf8);
        /* A message that does not end in this event must end within message_timeout_ms
         * (the session's tick checks), or it would pin up to max_message_bytes. */
        s->msg_pending = !ev->message_end;
        s->msg_started_ms = wsb_now_ms();
    }
    if (ev->compressed) {
        int rc = wsb_inflater_feed(s->inflater, ev->payload, ev->len, ev->message_end,
                                   wsb_session_limits(s)->max_message_bytes, &s->msg_total,
                                   inflated_chunk, s);
        if (rc == 1009) {
            wsb_session_close(s, 1009, "message too big", true);
            return;
        }
        if (rc == 1007) {
            wsb_session_close(s, 1007, "invalid data", true);
            return;
        }
        if (rc != 0) {
            wsb_session_close(s, (uint16_t)rc, NULL, true);
            return;
        }
    } else if (ev->len) {
        s->msg_total += ev->len;
        if (inflated_chunk(s, ev->payload, ev->len) != 0) {
            wsb_session_close(s, 1007, "invalid UTF-8", true);
            return;
        }
    }
    if (!ev->message_end || s->state != WSB_SS_OPEN)
        return;
    s->msg_pending = false;
    if (!s->msg_binary && !wsb_utf8_complete(&s->utf8)) {
        wsb_session_close(s, 1007, "invalid UTF-8", true);
        return;
    }
    if (!admit_message(s))
        return;
    if (s->msg_binary) {
        wsb_session_reply_error(s, "", "invalid_request", "binary messages are not supported");
        return;
    }
    wsb_ops_dispatch(s, s->msg.data, s->msg.len);
    if (s->msg.cap > 64 * 1024) /* do not keep a large buffer around */
        wsb_buf_cleanup(&s->msg);
}

static void on_control(struct wsb_session *s, const struct wsb_frame_ev *ev)
{
    switch (ev->opcode) {
    case WSB_OP_PING:
        if (s->state == WSB_SS_OPEN)
            wsb_session_send_control(s, WSB_OP_PONG, ev->payload, ev->len);
        break;
    case WSB_OP_PONG:
        if (s->awaiting_pong && ev->len == sizeof(int64_t) &&
            memcmp(ev->payload, &s->ping_sent_ms, sizeof(int64_t)) == 0) {
            s->awaiting_pong = false;
            double rtt = (double)(wsb_now_ms() - s->ping_sent_ms) / 1000.0;
            wsb_histogram_observe(&s->w->metrics.ping_rtt, rtt);
            if (s->state == WSB_SS_OPEN)
                wsb_session_disarm_timer(s);
        }
        break;
    case WSB_OP_CLOSE: {
        uint16_t code = 0;
        uint16_t bad = wsb_close_payload_check(ev->payload, ev->len, &code);
        if (s->state == WSB_SS_CLOSING) {
            /* The answer to our close: done (RFC 6455 §7.1.1, the server closes TCP). */
            s->close_after_flush = true;
            wsb_session_written(s);
            return;
        }
        if (bad) {
            wsb_session_close(s, bad, "invalid close frame", true);
            return;
        }
        wsb_session_close_echo(s, code, ev->payload, ev->len);
        break;
    }
    }
}

static void parse_frames(struct wsb_session *s, struct evbuffer *in)
{
    uint8_t chunk[READ_CHUNK];
    while (s->state == WSB_SS_OPEN || s->state == WSB_SS_CLOSING) {
        int n = evbuffer_remove(in, chunk, sizeof(chunk));
        if (n <= 0)
            return;
        if (s->discard_input)
            continue;
        size_t off = 0;
        while (off < (size_t)n && s->state != WSB_SS_DEAD) {
            struct wsb_frame_ev ev;
            size_t used = wsb_frame_parse(s->fp, chunk + off, (size_t)n - off, &ev);
            off += used;
            if (ev.type == WSB_FEV_ERROR) {
                if (s->state == WSB_SS_OPEN)
                    wsb_session_close(s, ev.close_code, ev.reason, true);
                else
                    wsb_session_kill(s);
                s->discard_input = true;
                break;
            }
            if (s->close_only) {
                /* After a 4401 close only the client's close frame is looked at. */
                if (ev.type == WSB_FEV_CONTROL && ev.opcode == WSB_OP_CLOSE)
                    on_control(s, &ev);
            } else if (ev.type == WSB_FEV_DATA && s->state == WSB_SS_OPEN) {
                on_data(s, &ev);
            } else if (ev.type == WSB_FEV_CONTROL) {
                on_control(s, &ev);
            }
            if (ev.type == WSB_FEV_NONE && used == 0)
                break;
            if (s->state == WSB_SS_CLOSING && s->close_after_flush)
                s->discard_input = true;
        }
    }
}

/* The parser lives while a read ends inside a frame or a fragmented message; a connection
 * that is idle between messages holds none (the limits are the session's current ones). */
static void read_frames(struct wsb_session *s, struct evbuffer *in)
{
    if (!s->fp) {
        if (evbuffer_get_length(in) == 0)
            return;
        s->fp = malloc(sizeof(*s->fp));
        if (!s->fp) {
            wsb_session_kill(s);
            return;
        }
        wsb_frame_parser_init(s->fp, wsb_session_limits(s)->max_message_bytes, s->pmd);
    }
    parse_frames(s, in);
    if (wsb_frame_parser_at_rest(s->fp)) {
        free(s->fp);
        s->fp = NULL;
    }
}

/* ---- libevent callbacks ----------------------------------------------------------- */

/* What was read (a bufferevent's input, or a plain session's `in`). */
static void input(struct wsb_session *s, struct evbuffer *in)
{
    if (s->state == WSB_SS_HANDSHAKE)
        wsb_upgrade_read(s, in);
    if (s->state == WSB_SS_OPEN || s->state == WSB_SS_CLOSING)
        read_frames(s, in);
    else if (s->state != WSB_SS_HANDSHAKE)
        evbuffer_drain(in, evbuffer_get_length(in));
    /* Back-pressure on a client that sends while not reading. */
    if (s->state == WSB_SS_OPEN && !s->read_paused && wsb_session_limits(s)->send_hard_bytes &&
        wsb_session_queued(s) > wsb_session_limits(s)->send_hard_bytes) {
        s->read_paused = true;
        wsb_session_read(s, false);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    input(arg, bufferevent_get_input(bev));
}

/* One recv of up to `room` bytes (at most READ_CHUNK) appended to `in`: what libevent's
 * evbuffer_read does, without its FIONREAD ioctl before every read (3 per handshake: the
 * head, the subscribe, the EOF) and with up to 16 KiB per call instead of its 4 KiB. Returns
 * recv's result, or -2 when `in` could not grow. Not inlined: its buffer is gone by the
 * time the input is parsed. */
static __attribute__((noinline)) long recv_into(struct evbuffer *in, int fd, size_t room, bool wipe)
{
    char buf[READ_CHUNK];
    ssize_t n = recv(fd, buf, room < sizeof(buf) ? room : sizeof(buf), 0);
    bool added = n <= 0 || evbuffer_add(in, buf, (size_t)n) == 0;
    if (wipe && n > 0)
        explicit_bzero(buf, (size_t)n); /* a request head: it may carry the token */
    return added ? (long)n : -2;
}

/* A plain session's socket is readable: one read of at most READ_MAX (a bufferevent's
 * max_single_read) and below read_max (its read high-water mark); EOF or an error ends the
 * connection. The input evbuffer exists while input waits: an idle connection holds none. */
static void read_socket(struct wsb_session *s)
{
    if (!s->in && !(s->in = evbuffer_new())) {
        wsb_session_kill(s);
        return;
    }
    size_t have = evbuffer_get_length(s->in);
    size_t room = s->read_max > have ? s->read_max - have : 0;
    if (room > READ_MAX)
        room = READ_MAX;
    if (room == 0)
        return;
    long n = recv_into(s->in, s->fd, room, s->state == WSB_SS_HANDSHAKE);
    if (n <= 0) {
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        wsb_session_kill(s); /* EOF, or ECONNRESET and the like */
        return;
    }
    input(s, s->in);
    if (s->in && evbuffer_get_length(s->in) == 0) {
        evbuffer_free(s->in);
        s->in = NULL;
    }
}

/* A plain session's one event: write readiness (asked for only while write_armed), then
 * input; afterwards it is added for what is wanted now. */
static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct wsb_session *s = arg;
    if (what & EV_WRITE)
        wsb_writer_ready(s);
    if ((what & EV_READ) && s->state != WSB_SS_DEAD && s->read_on)
        read_socket(s);
    wsb_session_io_update(s);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    wsb_writer_drained(arg);
    wsb_session_written(arg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct wsb_session *s = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        wsb_session_kill(s);
}

/* ---- accept ----------------------------------------------------------------------- */

/* wss://: a socket-based OpenSSL bufferevent that does the server handshake first. Its
 * output evbuffer holds the plaintext SSL_write has not taken yet (libevent keeps data there
 * until the TLS layer accepts it, and writes records straight to the socket), so the send-buffer
 * accounting still counts exactly what the kernel has not taken. The SSL object keeps a
 * reference to the context of the runtime it was made from: a reload that swaps the context
 * leaves this connection as it is. */
static struct bufferevent *tls_bufferevent(struct wsb_worker *w, int fd)
{
    struct wsb_runtime *rt = wsb_shared_runtime(w->shared);
    SSL *ssl = rt->tls ? SSL_new(rt->tls) : NULL;
    wsb_runtime_unref(rt);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    /* A client that closes TCP without close_notify is an EOF, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

/* A session on a bufferevent: TLS, or a unit test's pair. */
static struct wsb_session *open_session(struct wsb_worker *w, struct bufferevent *bev,
                                        const struct sockaddr *addr, int socklen)
{
    struct wsb_session *s = wsb_session_new(w, bev, addr, socklen);
    if (!s) {
        bufferevent_free(bev);
        return NULL;
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(bev, EV_WRITE, WSB_SESSION_SOCKET_CHUNK / 2, 0);
    /* libevent writes at most 16 KiB per socket per loop pass by default: let one pass
     * drain what the session's flush queued (many frames per writev). */
    bufferevent_set_max_single_write(bev, WSB_SESSION_SOCKET_CHUNK);
    bufferevent_set_max_single_read(bev, READ_MAX);
    bufferevent_setwatermark(bev, EV_READ, 0, 256 * 1024);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    wsb_upgrade_admit_peer(s);
    return s;
}

/* True once a listener could not take TCP_NODELAY for its connections (never expected). */
static atomic_bool nodelay_each;

void wsb_conn_listener_init(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        atomic_store(&nodelay_each, true);
}

/* A plain socket: no bufferevent (session.h), written by the loop's flush (writer.h), write
 * readiness asked for only when the kernel refuses part of a write. */
static void open_plain(struct wsb_worker *w, int fd, const struct sockaddr *addr, int socklen)
{
    struct evbuffer *out = evbuffer_new();
    struct event *io = event_new(w->base, fd, EV_READ | EV_PERSIST, on_io, NULL);
    struct wsb_session *s = out && io ? wsb_session_new(w, NULL, addr, socklen) : NULL;
    if (!s) {
        if (io)
            event_free(io);
        if (out)
            evbuffer_free(out);
        evutil_closesocket(fd);
        return;
    }
    s->fd = fd; /* closed with the session from here on */
    s->out = out;
    s->io = io;
    if (!wsb_writer_attach(s)) {
        wsb_session_kill(s);
        return;
    }
    wsb_session_read(s, true);
    wsb_upgrade_admit_peer(s);
}

void wsb_conn_accept(struct wsb_worker *w, int fd, const struct sockaddr *addr, int socklen)
{
    int one = 1;
    if (atomic_load_explicit(&nodelay_each, memory_order_relaxed))
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!w->shared->tls) {
        open_plain(w, fd, addr, socklen);
        return;
    }
    struct bufferevent *bev = tls_bufferevent(w, fd);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    struct wsb_session *s = open_session(w, bev, addr, socklen);
    if (s)
        s->tls = true;
}

struct wsb_session *wsb_conn_open(struct wsb_worker *w, struct bufferevent *bev,
                                  const struct sockaddr *addr, int socklen)
{
    return open_session(w, bev, addr, socklen);
}
