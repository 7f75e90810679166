/* Unit tests for bridge/upgrade.c: the admission steps, driven over a bufferevent pair on a
 * hand-built worker, with the clock swapped so tokens and handshake buckets follow the
 * test's time rather than the machine's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jwt.h>

#include "bridge/clock.h"
#include "bridge/conn.h"
#include "bridge/delivery.h"
#include "bridge/hub.h"
#include "bridge/iplimit.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "util/log.h"

#include "worker_fixture.h"

#define SECRET "upgrade-test-secret-0123456789abcdef"
static const char *CONFIG =
    "{\"listen\":\"127.0.0.1:1\",\"path\":\"/ws\","
    "\"allowed_origins\":[\"https://app.example\"],"
    "\"auth\":{\"jwt\":{\"algorithms\":[\"HS256\"],\"keys\":[{\"secret\":\"" SECRET "\"}]}},"
    "\"acl\":[{\"subscribe\":[\"**\"]}],"
    "\"connectors\":{\"m\":{\"type\":\"memory\"}},"
    "\"channels\":[{\"match\":\"mem.**\",\"connector\":\"m\",\"topic\":\"t\"}],"
    "\"limits\":{\"handshake_rate_per_ip\":{\"per_second\":1,\"burst\":2},"
    "\"max_connections_per_ip\":100}}";

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

static char *token(int64_t iat, int64_t exp)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
    char claims[160];
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"iat\":%lld,\"exp\":%lld}",
             (long long)iat, (long long)exp);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    char *t = jwt_encode_str(jwt);
    assert_non_null(t);
    jwt_free(jwt);
    return t;
}

/* A request head from `ip` with the usual upgrade headers plus `extra` (CRLF-terminated
 * lines, or ""). Sends it over a fresh pair and runs the loop until the answer is complete
 * (the head, and for a 101 the welcome frame). Returns the bytes received (malloc'd). */
static char *exchange(struct fixture *f, const char *ip, const char *request)
{
    struct bufferevent *pair[2];
    assert_int_equal(bufferevent_pair_new(f->w.base, 0, pair), 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    assert_non_null(wsb_conn_open(&f->w, pair[0], (struct sockaddr *)&sin, sizeof(sin)));
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    bufferevent_write(pair[1], request, strlen(request));
    struct evbuffer *in = bufferevent_get_input(pair[1]);
    for (int i = 0; i < 50; i++) {
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
        size_t n = evbuffer_get_length(in);
        const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
        const char *end = p ? memmem(p, n, "\r\n\r\n", 4) : NULL;
        if (end && (strncmp(p, "HTTP/1.1 101", 12) != 0 || memmem(p, n, "welcome", 7)))
            break;
    }
    size_t n = evbuffer_get_length(in);
    char *out = malloc(n + 1);
    evbuffer_remove(in, out, n);
    out[n] = '\0';
    /* The client goes away: EOF on the session's end. */
    bufferevent_flush(pair[1], EV_READ | EV_WRITE, BEV_FINISHED);
    bufferevent_free(pair[1]);
    event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    return out;
}

static char *upgrade(struct fixture *f, const char *ip, const char *extra)
{
    char req[2048];
    snprintf(req, sizeof(req),
             "GET /ws HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "%s\r\n",
             extra);
    return exchange(f, ip, req);
}

static char *upgrade_with_token(struct fixture *f, const char *ip, const char *tok)
{
    char extra[1024];
    snprintf(extra, sizeof(extra),
             "Origin: https://app.example\r\nSec-WebSocket-Protocol: wsbridge.v1, bearer.%s\r\n",
             tok);
    return upgrade(f, ip, extra);
}

static void assert_status(const char *resp, const char *status_line)
{
    if (strncmp(resp, status_line, strlen(status_line)) != 0)
        fail_msg("expected \"%s\", got \"%.200s\"", status_line, resp);
}

static void test_bad_upgrade_400(void **state)
{
    struct fixture *f = *state;
    char *r = exchange(f, "192.0.2.1", "GET /ws HTTP/1.1\r\nHost: bridge\r\n\r\n");
    assert_status(r, "HTTP/1.1 400 ");
    assert_non_null(strstr(r, "\"error\":\"bad_request\""));
    assert_non_null(strstr(r, "Connection: close"));
    free(r);
    r = exchange(f, "192.0.2.1", "NOT HTTP AT ALL\r\n\r\n");
    assert_status(r, "HTTP/1.1 400 ");
    free(r);
    assert_int_equal(f->w.metrics.handshakes[WSB_HS_BAD_REQUEST], 2);
}

static void test_path_404_and_version_426(void **state)
{
    struct fixture *f = *state;
    char *r = exchange(f, "192.0.2.1", "GET /other HTTP/1.1\r\nHost: bridge\r\n\r\n");
    assert_status(r, "HTTP/1.1 404 ");
    free(r);
    r = exchange(f, "192.0.2.1",
                 "GET /ws HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 8\r\n\r\n");
    assert_status(r, "HTTP/1.1 426 ");
    assert_non_null(strstr(r, "Sec-WebSocket-Version: 13\r\n"));
    free(r);
}

static void test_origin_403(void **state)
{
    struct fixture *f = *state;
    char *r = upgrade(f, "192.0.2.1", "Origin: https://evil.example\r\n");
    assert_status(r, "HTTP/1.1 403 ");
    assert_non_null(strstr(r, "origin_not_allowed"));
    free(r);
    assert_int_equal(f->w.metrics.handshakes[WSB_HS_FORBIDDEN], 1);
}

static void test_token_missing_401(void **state)
{
    struct fixture *f = *state;
    char *r = upgrade(f, "192.0.2.1", "Origin: https://app.example\r\n");
    assert_status(r, "HTTP/1.1 401 ");
    assert_non_null(strstr(r, "\"error\":\"token_missing\""));
    assert_non_null(strstr(r, "WWW-Authenticate: Bearer"));
    free(r);
    assert_int_equal(f->w.metrics.handshakes[WSB_HS_UNAUTHORIZED], 1);
}

/* The token is valid at the test's time (2017) only: the verifier reads the swapped clock. */
static void test_success_101_then_expired_401(void **state)
{
    struct fixture *f = *state;
    char *tok = token(T0 - 10, T0 + 600);
    char *r = upgrade_with_token(f, "192.0.2.1", tok);
    assert_status(r, "HTTP/1.1 101 Switching Protocols\r\n");
    assert_non_null(strstr(r, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(r, "Sec-WebSocket-Protocol: wsbridge.v1\r\n"));
    assert_non_null(strstr(r, "\"type\":\"welcome\""));
    assert_non_null(strstr(r, "\"sub\":\"alice\""));
    assert_non_null(strstr(r, "\"expires_at\":1500000600"));
    free(r);
    assert_int_equal(f->w.metrics.handshakes[WSB_HS_OK], 1);

    /* Twenty minutes later by the test clock the same token has expired (leeway 30 s). */
    wall_us += 1200 * 1000000LL;
    mono_us += 1200 * 1000000LL;
    r = upgrade_with_token(f, "192.0.2.1", tok);
    assert_status(r, "HTTP/1.1 401 ");
    assert_non_null(strstr(r, "\"error\":\"token_expired\""));
    free(r);
    free(tok);
}

/* Handshake bucket per address: 1/s, burst 2, refilled by the monotonic test clock. */
static void test_handshake_rate_429_follows_the_clock(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 2; i++) {
        char *r = upgrade(f, "192.0.2.7", "Origin: https://app.example\r\n");
        assert_status(r, "HTTP/1.1 401 ");
        free(r);
    }
    char *r = upgrade(f, "192.0.2.7", "Origin: https://app.example\r\n");
    assert_status(r, "HTTP/1.1 429 ");
    assert_non_null(strstr(r, "Retry-After: 1\r\n"));
    free(r);
    /* Another address has its own bucket. */
    r = upgrade(f, "192.0.2.8", "Origin: https://app.example\r\n");
    assert_status(r, "HTTP/1.1 401 ");
    free(r);
    /* One second later one more handshake is allowed, and only one. */
    mono_us += 1000000;
    r = upgrade(f, "192.0.2.7", "Origin: https://app.example\r\n");
    assert_status(r, "HTTP/1.1 401 ");
    free(r);
    r = upgrade(f, "192.0.2.7", "Origin: https://app.example\r\n");
    assert_status(r, "HTTP/1.1 429 ");
    free(r);
    assert_int_equal(f->w.metrics.handshakes[WSB_HS_RATE_LIMITED], 2);
}

/* A refused or finished handshake leaves nothing counted behind. */
static void test_counts_released(void **state)
{
    struct fixture *f = *state;
    char *tok = token(T0 - 10, T0 + 600);
    char *r = upgrade_with_token(f, "192.0.2.9", tok);
    assert_status(r, "HTTP/1.1 101 ");
    free(r);
    free(tok);
    r = upgrade(f, "192.0.2.9", "Origin: https://evil.example\r\n");
    assert_status(r, "HTTP/1.1 403 ");
    free(r);
    for (int i = 0; i < 5 && f->w.sessions; i++)
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    assert_null(f->w.sessions);
    assert_int_equal(atomic_load(&f->sh.connections), 0);
    assert_int_equal(atomic_load(&f->w.metrics.connections), 0);
}

/* A session's conn id and IPv4 text, formatted without printf: what "%" PRIx64 and
 * inet_ntop write. */
static void test_session_names(void **state)
{
    struct fixture *f = *state;
    static const char *const ips[] = {"0.0.0.0",     "1.2.3.4",        "10.0.0.1",
                                      "127.0.0.255", "192.168.100.20", "255.255.255.255"};
    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++) {
        struct bufferevent *pair[2];
        assert_int_equal(bufferevent_pair_new(f->w.base, 0, pair), 0);
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(40000)};
        assert_int_equal(inet_pton(AF_INET, ips[i], &sin.sin_addr), 1);
        struct wsb_session *s = wsb_conn_open(&f->w, pair[0], (struct sockaddr *)&sin, sizeof(sin));
        assert_non_null(s);
        char want[INET6_ADDRSTRLEN], sid[24];
        assert_non_null(inet_ntop(AF_INET, &sin.sin_addr, want, sizeof(want)));
        assert_string_equal(s->ip, want);
        snprintf(sid, sizeof(sid), "%" PRIx64, s->id);
        assert_string_equal(s->sid, sid);
        bufferevent_flush(pair[1], EV_READ | EV_WRITE, BEV_FINISHED); /* EOF on the session */
        bufferevent_free(pair[1]);
        for (int k = 0; k < 5 && f->w.sessions; k++)
            event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    }
    assert_null(f->w.sessions);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_upgrade_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_404_and_version_426, setup, teardown),
        cmocka_unit_test_setup_teardown(test_origin_403, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_missing_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_success_101_then_expired_401, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_rate_429_follows_the_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
