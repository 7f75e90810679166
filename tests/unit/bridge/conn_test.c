/* Unit tests for bridge/conn.c (with the session's tick): inbound messages of an open session
 * over a bufferevent pair, with the test clock: limits.message_timeout_ms closes a message
 * that does not end in time with 1008, and inbound bytes are charged as they arrive, so a
 * message that overdraws the byte bucket is refused while it arrives and is not kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bridge/conn.h"
#include "bridge/ws/ws_frame.h"

#include "worker_fixture.h"

static const char *CONFIG = "{\"listen\":\"127.0.0.1:1\",\"path\":\"/ws\","
                            "\"acl\":[{\"subscribe\":[\"**\"]}],"
                            "\"connectors\":{\"m\":{\"type\":\"memory\"}},"
                            "\"channels\":[{\"match\":\"mem.**\",\"connector\":\"m\","
                            "\"topic\":\"t\"}],"
                            "\"limits\":{\"message_timeout_ms\":1000,"
                            "\"ping_interval_ms\":0,"
                            "\"max_message_bytes\":65536,"
                            "\"inbound_bytes\":{\"per_second\":1,\"burst\":65536}}}";

struct client {
    struct bufferevent *bev;
    struct wsb_session *s;
};

static int setup(void **state)
{
    *state = fixture_new(CONFIG);
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static void spin(struct fixture *f)
{
    for (int i = 0; i < 5; i++)
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
}

/* A client frame (masked with a zero key, which leaves the payload as it is). */
static void send_frame(struct client *c, uint8_t opcode, bool fin, const void *p, size_t len)
{
    uint8_t hdr[14];
    size_t hl = 0;
    hdr[hl++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        hdr[hl++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        hdr[hl++] = 0x80 | 126;
        hdr[hl++] = (uint8_t)(len >> 8);
        hdr[hl++] = (uint8_t)len;
    } else {
        hdr[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memset(hdr + hl, 0, 4);
    hl += 4;
    bufferevent_write(c->bev, hdr, hl);
    bufferevent_write(c->bev, p, len);
}

static void send_str(struct client *c, uint8_t opcode, bool fin, const char *text)
{
    send_frame(c, opcode, fin, text, strlen(text));
}

/* What the server sent so far, as a string (frames' bytes included), drained. */
static char *received(struct client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);
    char *out = malloc(n + 1);
    evbuffer_remove(in, out, n);
    for (size_t i = 0; i < n; i++) /* frame headers may hold NUL bytes */
        if (out[i] == '\0')
            out[i] = '.';
    out[n] = '\0';
    return out;
}

static struct client open_ws(struct fixture *f)
{
    struct bufferevent *pair[2];
    assert_int_equal(bufferevent_pair_new(f->w.base, 0, pair), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    struct client c = {.bev = pair[1]};
    c.s = wsb_conn_open(&f->w, pair[0], (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(c.s);
    bufferevent_enable(c.bev, EV_READ | EV_WRITE);
    const char *req = "GET /ws HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    bufferevent_write(c.bev, req, strlen(req));
    spin(f);
    char *r = received(&c);
    assert_true(strncmp(r, "HTTP/1.1 101 ", 13) == 0);
    assert_non_null(strstr(r, "\"type\":\"welcome\""));
    free(r);
    assert_int_equal(c.s->state, WSB_SS_OPEN);
    return c;
}

static void tick(struct fixture *f, struct client *c)
{
    wsb_sweep_tick(c->s, wsb_now_ms());
    spin(f);
}

static void test_message_not_completed_in_time_closes_1008(void **state)
{
    struct fixture *f = *state;
    struct client c = open_ws(f);
    send_str(&c, WSB_OP_TEXT, false, "{\"op\":");
    spin(f);
    mono_us += 900 * 1000;
    tick(f, &c);
    assert_int_equal(c.s->state, WSB_SS_OPEN);
    /* more fragments do not move the deadline */
    send_str(&c, WSB_OP_CONT, false, "\"subscribe\",");
    spin(f);
    mono_us += 200 * 1000;
    wsb_sweep_tick(c.s, wsb_now_ms());
    assert_int_not_equal(c.s->state, WSB_SS_OPEN);
    spin(f); /* the session is freed once its close frame is out */
    assert_null(f->w.sessions);
    struct evbuffer *in = bufferevent_get_input(c.bev);
    uint8_t close[4];
    assert_true(evbuffer_get_length(in) >= 4);
    evbuffer_remove(in, close, 4);
    assert_int_equal(close[0], 0x80 | WSB_OP_CLOSE);
    assert_int_equal((close[2] << 8) | close[3], 1008);
    assert_int_equal(f->w.metrics.disconnects[wsb_metrics_close_idx(1008)], 1);
    bufferevent_free(c.bev);
}

static void test_message_completed_in_time_is_served(void **state)
{
    struct fixture *f = *state;
    struct client c = open_ws(f);
    send_str(&c, WSB_OP_TEXT, false, "{\"op\":\"subscribe\",");
    spin(f);
    mono_us += 900 * 1000;
    tick(f, &c);
    send_str(&c, WSB_OP_CONT, true, "\"id\":1,\"channel\":\"x.y\"}");
    spin(f);
    char *r = received(&c);
    assert_non_null(strstr(r, "\"code\":\"unknown_channel\""));
    free(r);
    mono_us += 5000 * 1000; /* no message in progress: nothing times out */
    tick(f, &c);
    assert_int_equal(c.s->state, WSB_SS_OPEN);
    bufferevent_free(c.bev);
}

static void test_bytes_charged_as_they_arrive(void **state)
{
    struct fixture *f = *state;
    struct client c = open_ws(f);
    double full = c.s->in_bytes.tokens;
    assert_true(full >= 65536 - 1);
    /* A message that has not ended has paid for what arrived. */
    char *big = malloc(60000);
    memset(big, 'a', 60000);
    send_frame(&c, WSB_OP_TEXT, false, big, 30000);
    spin(f);
    assert_true(c.s->in_bytes.tokens <= full - 30000 + 1);
    send_frame(&c, WSB_OP_CONT, true, big, 30000);
    spin(f);
    char *r = received(&c);
    assert_non_null(strstr(r, "\"code\":\"invalid_request\"")); /* not JSON, but admitted */
    free(r);
    /* About 5,500 bytes are left: 10,000 more overdraw, refused before the message ends and
     * not kept. */
    send_frame(&c, WSB_OP_TEXT, false, big, 10000);
    spin(f);
    r = received(&c);
    assert_non_null(strstr(r, "\"code\":\"rate_limited\""));
    free(r);
    assert_true(c.s->msg_over);
    assert_int_equal(c.s->msg.len, 0);
    assert_int_equal(f->w.metrics.rate_limited[WSB_RL_BYTES], 1);
    send_frame(&c, WSB_OP_CONT, true, big, 100);
    spin(f);
    r = received(&c);
    assert_string_equal(r, ""); /* answered once */
    free(r);
    /* Time refills the bucket (1 byte/s): 20,000 s later a 10,000-byte message passes. */
    mono_us += 20000LL * 1000000;
    send_frame(&c, WSB_OP_TEXT, true, big, 10000);
    spin(f);
    r = received(&c);
    assert_non_null(strstr(r, "\"code\":\"invalid_request\""));
    assert_null(strstr(r, "rate_limited"));
    free(r);
    assert_int_equal(c.s->state, WSB_SS_OPEN);
    free(big);
    bufferevent_free(c.bev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_message_not_completed_in_time_closes_1008, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_message_completed_in_time_is_served, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_charged_as_they_arrive, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
