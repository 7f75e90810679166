/* Unit tests for bridge/writer.c: plaintext sessions (wsb_conn_accept on one end of a Unix
 * socket pair) are written by the loop's flush in the pass that queued their output, with no
 * write event asked for; a write the kernel takes in part, or a backlog behind it, enables
 * EV_WRITE, and the write that empties both disables it again, every frame delivered in
 * order; a session
 * freed while on the dirty list is skipped; a peer that closed kills the session; a close
 * after flush still closes TCP once the close frame is out; a plain session (no
 * bufferevent) reads its socket itself and holds no input buffer while idle, nor an output
 * buffer after the idle tick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/conn.h"
#include "bridge/sweep.h"
#include "bridge/writer.h"
#include "bridge/ws/ws_frame.h"

#include "worker_fixture.h"

static const char *CONFIG = "{\"listen\":\"127.0.0.1:1\",\"path\":\"/ws\","
                            "\"acl\":[{\"subscribe\":[\"**\"]}],"
                            "\"connectors\":{\"m\":{\"type\":\"memory\"}},"
                            "\"channels\":[{\"match\":\"mem.**\",\"connector\":\"m\","
                            "\"topic\":\"t\"}],"
                            "\"limits\":{\"ping_interval_ms\":0}}";

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* as the server does (server.c) */
    *state = fixture_new(CONFIG);
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

/* One pass of the loop: what became ready, then what those callbacks made active. */
static void pass(struct fixture *f)
{
    event_base_loop(f->w.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

struct peer {
    int fd; /* the client's end */
    struct wsb_session *s;
    uint8_t *buf; /* bytes received, not yet parsed */
    size_t len, cap;
};

/* Reads what the socket holds now (non-blocking); returns false on EOF. */
static bool peer_read(struct peer *p)
{
    for (;;) {
        if (p->cap - p->len < 65536) {
            p->cap = p->cap * 2 + 65536;
            p->buf = realloc(p->buf, p->cap);
            assert_non_null(p->buf);
        }
        ssize_t n = read(p->fd, p->buf + p->len, p->cap - p->len);
        if (n > 0) {
            p->len += (size_t)n;
            continue;
        }
        if (n == 0)
            return false;
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        return true;
    }
}

/* The next complete server frame (unmasked) from the received bytes: its opcode, payload
 * copied to `out` (up to outcap, NUL-terminated); -1 when no complete frame is there. */
static int next_frame(struct peer *p, char *out, size_t outcap)
{
    if (p->len < 2)
        return -1;
    size_t hl = 2;
    uint64_t len = p->buf[1] & 0x7f;
    if (len == 126) {
        if (p->len < 4)
            return -1;
        len = ((uint64_t)p->buf[2] << 8) | p->buf[3];
        hl = 4;
    } else if (len == 127) {
        if (p->len < 10)
            return -1;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p->buf[2 + i];
        hl = 10;
    }
    if (p->len < hl + len)
        return -1;
    int op = p->buf[0] & 0x0f;
    size_t c = len < outcap - 1 ? (size_t)len : outcap - 1;
    memcpy(out, p->buf + hl, c);
    out[c] = '\0';
    memmove(p->buf, p->buf + hl + len, p->len - hl - (size_t)len);
    p->len -= hl + (size_t)len;
    return op;
}

/* A plaintext session accepted on one end of a socket pair, upgraded: the 101 and the
 * welcome arrive after one pass, with no write event asked for. */
static struct peer open_peer(struct fixture *f, int sndbuf)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    if (sndbuf)
        assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    wsb_conn_accept(&f->w, sv[0], (struct sockaddr *)&sin, sizeof(sin));
    struct peer p = {.fd = sv[1], .s = f->w.sessions};
    assert_non_null(p.s);
    assert_true(p.s->direct);
    const char *req = "GET /ws HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(write(p.fd, req, strlen(req)), (ssize_t)strlen(req));
    pass(f);
    assert_int_equal(p.s->state, WSB_SS_OPEN);
    assert_true(peer_read(&p));
    char *end = memmem(p.buf, p.len, "\r\n\r\n", 4);
    assert_non_null(end);
    assert_true(strncmp((char *)p.buf, "HTTP/1.1 101 ", 13) == 0);
    size_t head = (size_t)(end + 4 - (char *)p.buf);
    memmove(p.buf, p.buf + head, p.len - head);
    p.len -= head;
    char msg[256];
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_TEXT);
    assert_non_null(strstr(msg, "\"type\":\"welcome\""));
    assert_int_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    return p;
}

static void peer_close(struct peer *p)
{
    close(p->fd);
    free(p->buf);
}

/* A reply of about `pad` bytes carrying `n`. */
static void reply(struct wsb_session *s, int n, size_t pad)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    char head[64];
    int hl = snprintf(head, sizeof(head), "{\"type\":\"t\",\"n\":%d,\"pad\":\"", n);
    wsb_buf_append(&b, head, (size_t)hl);
    for (size_t i = 0; i < pad; i++)
        wsb_buf_append(&b, "x", 1);
    wsb_buf_append(&b, "\"}", 2);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
}

/* The frame's "n", checked against what comes next. */
static void expect_n(const char *msg, int n)
{
    char want[32];
    snprintf(want, sizeof(want), "\"n\":%d,", n);
    assert_non_null(strstr(msg, want));
}

static void test_output_goes_out_in_the_pass_that_queued_it(void **state)
{
    struct fixture *f = *state;
    struct peer p = open_peer(f, 0);
    uint64_t writes = f->w.wr.writes;
    for (int i = 0; i < 10; i++)
        reply(p.s, i, 100);
    /* Nothing but the flush event is active: one pass writes all ten, in one write. */
    assert_true(f->w.wr.pending);
    pass(f);
    assert_false(f->w.wr.pending);
    assert_int_equal(f->w.wr.writes, writes + 1);
    assert_true(peer_read(&p));
    char msg[256];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_TEXT);
        expect_n(msg, i);
    }
    assert_int_equal(p.len, 0);
    assert_int_equal(f->w.wr.waits, 0);
    assert_false(p.s->write_armed);
    assert_int_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    assert_int_equal(wsb_session_queued(p.s), 0);
    peer_close(&p);
}

static void test_backlog_waits_for_readiness_then_drops_it(void **state)
{
    struct fixture *f = *state;
    struct peer p = open_peer(f, 4096);
    enum { N = 400, PAD = 1000 };
    for (int i = 0; i < N; i++)
        reply(p.s, i, PAD);
    pass(f);
    /* More waits than one write took: write readiness paces the rest, as libevent's path
     * always did. */
    assert_true(p.s->write_armed);
    assert_int_not_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    assert_true(f->w.wr.waits >= 1);
    assert_true(wsb_session_queued(p.s) > 0);
    /* The client reads: everything arrives, in order, and write interest is dropped. */
    char msg[2048];
    int next = 0;
    for (int spins = 0; spins < 100000 && next < N; spins++) {
        assert_true(peer_read(&p));
        int op;
        while ((op = next_frame(&p, msg, sizeof(msg))) >= 0) {
            assert_int_equal(op, WSB_OP_TEXT);
            expect_n(msg, next++);
        }
        pass(f);
    }
    assert_int_equal(next, N);
    pass(f);
    assert_int_equal(wsb_session_queued(p.s), 0);
    assert_false(p.s->write_armed);
    assert_int_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    /* And the next output goes out directly again. */
    uint64_t waits = f->w.wr.waits;
    reply(p.s, N, 10);
    pass(f);
    assert_true(peer_read(&p));
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_TEXT);
    expect_n(msg, N);
    assert_int_equal(f->w.wr.waits, waits);
    assert_false(p.s->write_armed);
    peer_close(&p);
}

static void test_partial_write_waits_for_readiness_then_drops_it(void **state)
{
    struct fixture *f = *state;
    struct peer p = open_peer(f, 4096);
    enum { PAD = 300 * 1024 };
    reply(p.s, 7, PAD); /* one frame, nothing behind it in the out-queue */
    pass(f);
    assert_int_equal(p.s->q.count, 0);
    assert_true(p.s->write_armed); /* the kernel took part of it */
    assert_int_not_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    assert_int_equal(f->w.wr.waits, 1);
    char *msg = malloc(PAD + 64);
    assert_non_null(msg);
    int op = -1;
    for (int spins = 0; spins < 100000 && op < 0; spins++) {
        assert_true(peer_read(&p));
        op = next_frame(&p, msg, PAD + 64);
        pass(f);
    }
    assert_int_equal(op, WSB_OP_TEXT);
    expect_n(msg, 7);
    assert_int_equal(strlen(msg), PAD + strlen("{\"type\":\"t\",\"n\":7,\"pad\":\"\"}"));
    free(msg);
    pass(f);
    assert_false(p.s->write_armed);
    assert_int_equal(event_pending(p.s->io, EV_WRITE, NULL), 0);
    peer_close(&p);
}

static void test_session_freed_while_dirty_is_skipped(void **state)
{
    struct fixture *f = *state;
    struct peer a = open_peer(f, 0);
    struct peer b = open_peer(f, 0);
    reply(a.s, 1, 10);
    reply(b.s, 2, 10);
    assert_int_equal(f->w.wr.n, 2);
    wsb_session_kill(a.s);
    wsb_sweep_reap(&f->w); /* freed before the flush ran (ASan: no use after free) */
    assert_int_equal(f->w.wr.n, 2);
    pass(f);
    assert_int_equal(f->w.wr.n, 0);
    char msg[256];
    assert_true(peer_read(&b));
    assert_int_equal(next_frame(&b, msg, sizeof(msg)), WSB_OP_TEXT);
    expect_n(msg, 2);
    assert_false(peer_read(&a)); /* closed with nothing more sent */
    assert_int_equal(a.len, 0);
    peer_close(&a);
    peer_close(&b);
}

static void test_peer_gone_mid_write_kills_the_session(void **state)
{
    struct fixture *f = *state;
    struct peer p = open_peer(f, 0);
    close(p.fd);
    reply(p.s, 1, 10);
    pass(f); /* EPIPE: killed; the reap runs in the same pass or the next */
    pass(f);
    assert_null(f->w.sessions);
    free(p.buf);
}

static void test_close_after_flush_closes_once_written(void **state)
{
    struct fixture *f = *state;
    struct peer p = open_peer(f, 0);
    wsb_session_close(p.s, 4408, "slow consumer", true);
    pass(f);
    pass(f);
    assert_null(f->w.sessions);
    assert_false(peer_read(&p)); /* the close frame, then EOF */
    char msg[256];
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_CLOSE);
    assert_int_equal(((uint8_t)msg[0] << 8) | (uint8_t)msg[1], 4408);
    peer_close(&p);
}

/* A client frame (masked with a zero key, FIN set) of a short payload. */
static size_t client_frame(uint8_t *out, int opcode, const char *payload)
{
    size_t len = strlen(payload);
    out[0] = (uint8_t)(0x80 | opcode);
    out[1] = (uint8_t)(0x80 | len);
    memset(out + 2, 0, 4);
    memcpy(out + 6, payload, len);
    return 6 + len;
}

/* A plain session has no bufferevent: it reads its socket itself, keeps unconsumed input
 * only while some waits (a partial request head; a partial frame lives in the frame
 * parser), stops and resumes reading on request, and ends at the peer's EOF. */
static void test_plain_session_reads_its_socket(void **state)
{
    struct fixture *f = *state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    wsb_conn_accept(&f->w, sv[0], (struct sockaddr *)&sin, sizeof(sin));
    struct peer p = {.fd = sv[1], .s = f->w.sessions};
    assert_non_null(p.s);
    assert_null(p.s->bev);
    assert_null(p.s->in);
    assert_int_not_equal(event_pending(p.s->io, EV_READ, NULL), 0);
    const char *req = "GET /ws HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    assert_int_equal(write(p.fd, req, 20), 20);
    pass(f);
    assert_int_equal(p.s->state, WSB_SS_HANDSHAKE);
    assert_non_null(p.s->in); /* the partial head waits */
    assert_int_equal(evbuffer_get_length(p.s->in), 20);
    assert_int_equal(write(p.fd, req + 20, strlen(req) - 20), (ssize_t)(strlen(req) - 20));
    pass(f);
    assert_int_equal(p.s->state, WSB_SS_OPEN);
    assert_null(p.s->in);
    assert_true(peer_read(&p));
    char *end = memmem(p.buf, p.len, "\r\n\r\n", 4);
    assert_non_null(end);
    p.len = 0; /* the 101 and the welcome */
    /* A ping in two pieces: the parser holds the partial frame, not an input buffer. */
    uint8_t fr[64];
    size_t n = client_frame(fr, WSB_OP_PING, "hello");
    assert_int_equal(write(p.fd, fr, 3), 3);
    pass(f);
    assert_null(p.s->in);
    assert_non_null(p.s->fp);
    assert_int_equal(write(p.fd, fr + 3, n - 3), (ssize_t)(n - 3));
    pass(f);
    pass(f);
    assert_null(p.s->fp);
    assert_true(peer_read(&p));
    char msg[256];
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_PONG);
    assert_string_equal(msg, "hello");
    /* Idle: the tick gives the empty output evbuffer back; output makes it again. */
    assert_non_null(p.s->out);
    wsb_sweep_tick(p.s, wsb_now_ms());
    assert_null(p.s->out);
    reply(p.s, 5, 10);
    assert_non_null(p.s->out);
    pass(f);
    assert_true(peer_read(&p));
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_TEXT);
    expect_n(msg, 5);
    wsb_sweep_tick(p.s, wsb_now_ms());
    assert_null(p.s->out);
    /* Reading paused: a ping waits in the socket; resumed: it is answered. */
    wsb_session_read(p.s, false);
    assert_int_equal(event_pending(p.s->io, EV_READ, NULL), 0);
    n = client_frame(fr, WSB_OP_PING, "again");
    assert_int_equal(write(p.fd, fr, n), (ssize_t)n);
    pass(f);
    pass(f);
    assert_true(peer_read(&p));
    assert_int_equal(p.len, 0);
    wsb_session_read(p.s, true);
    pass(f);
    pass(f);
    assert_true(peer_read(&p));
    assert_int_equal(next_frame(&p, msg, sizeof(msg)), WSB_OP_PONG);
    assert_string_equal(msg, "again");
    /* The peer's EOF ends the session. */
    shutdown(p.fd, SHUT_WR);
    pass(f);
    pass(f);
    assert_null(f->w.sessions);
    peer_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_output_goes_out_in_the_pass_that_queued_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_partial_write_waits_for_readiness_then_drops_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_backlog_waits_for_readiness_then_drops_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_session_freed_while_dirty_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_gone_mid_write_kills_the_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_after_flush_closes_once_written, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_plain_session_reads_its_socket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
