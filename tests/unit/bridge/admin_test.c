/* Unit tests for bridge/admin.c: a blocking HTTP client against the admin thread on port 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/thread.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bridge/admin.h"

struct fake {
    atomic_bool healthy;
    atomic_bool ready;
    atomic_int metrics_calls;
};

static bool healthy_cb(void *ctx)
{
    struct fake *f = ctx;
    return atomic_load(&f->healthy);
}

static bool ready_cb(void *ctx, char *reason, size_t len)
{
    struct fake *f = ctx;
    if (atomic_load(&f->ready))
        return true;
    snprintf(reason, len, "{\"connectors\":{\"events\":\"connecting\"}}");
    return false;
}

static char *metrics_cb(void *ctx, size_t *len)
{
    struct fake *f = ctx;
    atomic_fetch_add(&f->metrics_calls, 1);
    const char *text = "# TYPE wsbridge_connections gauge\nwsbridge_connections 3\n";
    *len = strlen(text);
    return strdup(text);
}

struct response {
    int status;
    char headers[4096];
    char body[8192];
    size_t body_len;
};

/* Sends `request` raw (HTTP/1.0 style, server closes) and reads the whole response. */
static void http(int family, int port, const char *request, struct response *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(family, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        in6->sin6_addr = in6addr_loopback;
        sl = sizeof(*in6);
    }
    assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
    size_t n = strlen(request);
    assert_int_equal(write(fd, request, n), (ssize_t)n);
    char buf[16384];
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, buf + got, sizeof(buf) - 1 - got);
        assert_true(k >= 0);
        if (k == 0)
            break;
        got += (size_t)k;
    }
    buf[got] = '\0';
    close(fd);
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    size_t hl = (size_t)(sep - buf);
    assert_true(hl < sizeof(r->headers));
    memcpy(r->headers, buf, hl);
    r->body_len = got - hl - 4;
    assert_true(r->body_len < sizeof(r->body));
    memcpy(r->body, sep + 4, r->body_len);
}

static void get(int port, const char *path, struct response *r)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    http(AF_INET, port, req, r);
}

static bool header_is(const struct response *r, const char *name_value)
{
    char needle[256];
    snprintf(needle, sizeof(needle), "\r\n%s\r\n", name_value);
    char h[4100];
    snprintf(h, sizeof(h), "%s\r\n", r->headers);
    return strcasestr(h, needle) != NULL;
}

static json_t *body_json(const struct response *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    if (j == NULL)
        fail_msg("bad JSON body: %s", r->body);
    return j;
}

static struct fake fk;
static struct wsb_admin_hooks hooks = {
    .ctx = &fk, .healthy = healthy_cb, .ready = ready_cb, .metrics = metrics_cb};

static void test_routes(void **state)
{
    (void)state;
    atomic_store(&fk.healthy, true);
    atomic_store(&fk.ready, true);
    struct wsb_admin *a = NULL;
    char err[256] = "";
    assert_int_equal(wsb_admin_start("127.0.0.1:0", &hooks, &a, err, sizeof(err)), WSB_OK);
    int port = wsb_admin_port(a);
    assert_true(port > 0);
    struct response r;

    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_true(header_is(&r, "Content-Type: application/json"));
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);

    atomic_store(&fk.healthy, false);
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 503);
    json_decref(body_json(&r));

    get(port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ready");
    json_decref(j);

    atomic_store(&fk.ready, false);
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_true(header_is(&r, "Content-Type: application/json"));
    j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "not_ready");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(j, "reason"), "connectors"), "events")),
                        "connecting");
    json_decref(j);

    get(port, "/metrics?name=x", &r);
    assert_int_equal(r.status, 200);
    assert_true(header_is(&r, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "wsbridge_connections 3\n"));
    assert_int_equal(atomic_load(&fk.metrics_calls), 1);

    get(port, "/nope", &r);
    assert_int_equal(r.status, 404);
    assert_true(header_is(&r, "Content-Type: application/json"));
    json_decref(body_json(&r));
    get(port, "/healthz/extra", &r);
    assert_int_equal(r.status, 404);

    http(AF_INET, port, "POST /healthz HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", &r);
    assert_int_equal(r.status, 405);
    assert_true(header_is(&r, "Allow: GET, HEAD"));
    json_decref(body_json(&r));
    http(AF_INET, port, "DELETE /metrics HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    http(AF_INET, port, "PATCH /metrics HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);

    atomic_store(&fk.healthy, true);
    http(AF_INET, port, "HEAD /healthz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);

    /* HTTP/1.1 keep-alive request with Connection: close also works */
    http(AF_INET, port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);

    wsb_admin_stop(a);
}

static void test_bind_conflict(void **state)
{
    (void)state;
    struct wsb_admin *a = NULL, *b = NULL;
    char err[256] = "";
    assert_int_equal(wsb_admin_start("127.0.0.1:0", &hooks, &a, err, sizeof(err)), WSB_OK);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", wsb_admin_port(a));
    assert_int_equal(wsb_admin_start(addr, &hooks, &b, err, sizeof(err)), WSB_ERR_IO);
    assert_null(b);
    char want[128];
    snprintf(want, sizeof(want), "admin listen %s: Address already in use", addr);
    assert_string_equal(err, want);
    wsb_admin_stop(a);
}

static void test_bad_listen(void **state)
{
    (void)state;
    const char *bad[] = {
        "",       "9090",    "127.0.0.1", "127.0.0.1:",  "127.0.0.1:99999", "127.0.0.1:http",
        "::1:80", "[::1]80", "[::1",      "999.1.1.1:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct wsb_admin *a = (struct wsb_admin *)1;
        char err[256] = "";
        enum wsb_err rc = wsb_admin_start(bad[i], &hooks, &a, err, sizeof(err));
        if (rc == WSB_OK)
            fail_msg("accepted %s", bad[i]);
        assert_null(a);
        assert_int_equal(strncmp(err, "admin listen ", 13), 0);
    }
}

static void test_ipv6_and_null_hooks(void **state)
{
    (void)state;
    struct wsb_admin *a = NULL;
    char err[256] = "";
    struct wsb_admin_hooks none = {0};
    if (wsb_admin_start("[::1]:0", &none, &a, err, sizeof(err)) != WSB_OK) {
        print_message("skipping IPv6: %s\n", err);
        skip();
    }
    struct response r;
    int port = wsb_admin_port(a);
    http(AF_INET6, port, "GET /healthz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    http(AF_INET6, port, "GET /readyz HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    http(AF_INET6, port, "GET /metrics HTTP/1.0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    wsb_admin_stop(a);
}

static void test_start_stop_fast(void **state)
{
    (void)state;
    for (int i = 0; i < 20; i++) {
        struct wsb_admin *a = NULL;
        char err[256];
        assert_int_equal(wsb_admin_start(":0", &hooks, &a, err, sizeof(err)), WSB_OK);
        wsb_admin_stop(a);
    }
    wsb_admin_stop(NULL);
}

/* Out of descriptors: the admin listener pauses accepting (counted for
 * wsbridge_accept_paused_total) and serves the waiting client once descriptors are free. */
struct fillers {
    int fd[256];
    int n;
    uint64_t base;
};

static void *release_after_pause(void *arg)
{
    struct fillers *f = arg;
    struct timespec ms = {0, 1000 * 1000};
    for (int i = 0; i < 5000 && wsb_admin_accept_paused() == f->base; i++)
        nanosleep(&ms, NULL);
    for (int i = 0; i < f->n; i++)
        close(f->fd[i]);
    return NULL;
}

static void test_accept_paused_counted(void **state)
{
    (void)state;
    struct wsb_admin *a = NULL;
    char err[256];
    assert_int_equal(wsb_admin_start("127.0.0.1:0", &hooks, &a, err, sizeof(err)), WSB_OK);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int probe = open("/dev/null", O_RDONLY);
    assert_true(probe >= 0);
    close(probe);
    struct rlimit low = {(rlim_t)probe + 64, old.rlim_max};
    if (low.rlim_cur > old.rlim_cur)
        low.rlim_cur = old.rlim_cur;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    static struct fillers f;
    memset(&f, 0, sizeof(f));
    f.base = wsb_admin_accept_paused();
    int fd;
    while (f.n < 256 && (fd = open("/dev/null", O_RDONLY)) >= 0)
        f.fd[f.n++] = fd;
    assert_true(f.n > 1 && f.n < 256);
    close(f.fd[--f.n]); /* one for the client's socket: the admin's accept() has none */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_after_pause, &f), 0);
    struct response r;
    http(AF_INET, wsb_admin_port(a), "GET /healthz HTTP/1.0\r\n\r\n", &r);
    pthread_join(t, NULL);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(wsb_admin_accept_paused() > f.base);
    assert_int_equal(r.status, 200);
    wsb_admin_stop(a);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),          cmocka_unit_test(test_bind_conflict),
        cmocka_unit_test(test_bad_listen),      cmocka_unit_test(test_ipv6_and_null_hooks),
        cmocka_unit_test(test_start_stop_fast), cmocka_unit_test(test_accept_paused_counted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
