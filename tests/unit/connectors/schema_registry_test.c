/* Tests for connectors/schema_registry: the response parsers, config checks, and the client
 * against an in-process evhttp registry on a thread of its own: one fetch per id however many
 * lookups (single-flight, cached), auth headers, 404 as not found, a registry that goes away
 * (down with a reason naming it, then back without any lookup), the latest version of a
 * subject. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "connectors/schema_registry.h"

/* ---- A registry ------------------------------------------------------------------------ */

struct registry {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    pthread_t thread;
    int port;
    atomic_int ids_1, latest, delay_ms;
    char auth[256];
    pthread_mutex_t lock;
};

static void serve(struct evhttp_request *req, void *arg)
{
    struct registry *r = arg;
    const char *uri = evhttp_request_get_uri(req);
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    pthread_mutex_lock(&r->lock);
    snprintf(r->auth, sizeof(r->auth), "%s", auth ? auth : "");
    pthread_mutex_unlock(&r->lock);
    if (atomic_load(&r->delay_ms))
        usleep((useconds_t)atomic_load(&r->delay_ms) * 1000);
    struct evbuffer *b = evbuffer_new();
    int code = 200;
    if (strcmp(uri, "/schemas/ids/1") == 0) {
        atomic_fetch_add(&r->ids_1, 1);
        evbuffer_add_printf(b, "{\"schema\":\"\\\"string\\\"\"}");
    } else if (strcmp(uri, "/subjects/orders-value/versions/latest") == 0) {
        atomic_fetch_add(&r->latest, 1);
        evbuffer_add_printf(b, "{\"subject\":\"orders-value\",\"version\":2,\"id\":7,"
                               "\"schema\":\"\\\"long\\\"\"}");
    } else {
        code = 404;
        evbuffer_add_printf(b, "{\"error_code\":40403,\"message\":\"Schema not found\"}");
    }
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Not Found", b);
    evbuffer_free(b);
}

static void *registry_run(void *arg)
{
    struct registry *r = arg;
    event_base_dispatch(r->base);
    return NULL;
}

static void registry_listen(struct registry *r)
{
    r->sock = evhttp_bind_socket_with_handle(r->http, "127.0.0.1", (ev_uint16_t)r->port);
    assert_non_null(r->sock);
    if (!r->port) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(evhttp_bound_socket_get_fd(r->sock), (struct sockaddr *)&ss, &len);
        r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
}

static struct registry *registry_start(void)
{
    struct registry *r = calloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->base = event_base_new();
    r->http = evhttp_new(r->base);
    evhttp_set_gencb(r->http, serve, r);
    registry_listen(r);
    pthread_create(&r->thread, NULL, registry_run, r);
    return r;
}

static void registry_stop(struct registry *r)
{
    event_base_loopexit(r->base, NULL); /* unlike loopbreak, not lost before dispatch */
    pthread_join(r->thread, NULL);
    evhttp_free(r->http);
    event_base_free(r->base);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Closes and reopens the listening socket (the registry's thread is stopped meanwhile). */
static void registry_down(struct registry *r)
{
    event_base_loopexit(r->base, NULL); /* unlike loopbreak, not lost before dispatch */
    pthread_join(r->thread, NULL);
    evhttp_del_accept_socket(r->http, r->sock);
    r->sock = NULL;
}

static void registry_up(struct registry *r)
{
    registry_listen(r);
    pthread_create(&r->thread, NULL, registry_run, r);
}

/* ---- Helpers --------------------------------------------------------------------------- */

static atomic_int wakes;
static void on_wake(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&wakes, 1);
}

static struct wsb_sr *client(int port, const char *extra)
{
    char text[512], err[256] = "";
    snprintf(text, sizeof(text), "{\"url\":\"http://127.0.0.1:%d/\"%s}", port, extra ? extra : "");
    json_t *conf = json_loads(text, 0, NULL);
    assert_non_null(conf);
    struct wsb_sr *sr = wsb_sr_new(conf, on_wake, NULL, err, sizeof(err));
    json_decref(conf);
    if (!sr)
        fail_msg("wsb_sr_new: %s", err);
    assert_int_equal(wsb_sr_start(sr), WSB_OK);
    return sr;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Polls lookup of id until it is no longer pending (5 s at most). */
static enum wsb_sr_status wait_schema(struct wsb_sr *sr, uint32_t id, char **text)
{
    for (int i = 0; i < 500; i++) {
        enum wsb_sr_status st = wsb_sr_schema(sr, id, text);
        if (st != WSB_SR_PENDING)
            return st;
        sleep_ms(10);
    }
    return WSB_SR_PENDING;
}

/* ---- Tests ----------------------------------------------------------------------------- */

static void test_parsers(void **state)
{
    (void)state;
    char *s = NULL;
    uint32_t id = 0;
    const char *ok = "{\"schema\":\"{\\\"type\\\":\\\"string\\\"}\"}";
    assert_int_equal(wsb_sr_parse_schema(ok, strlen(ok), &s), WSB_OK);
    assert_string_equal(s, "{\"type\":\"string\"}");
    free(s);
    const char *typed = "{\"schema\":\"x\",\"schemaType\":\"PROTOBUF\"}";
    assert_int_equal(wsb_sr_parse_schema(typed, strlen(typed), &s), WSB_ERR_UNSUPPORTED);
    const char *avro = "{\"schema\":\"\\\"int\\\"\",\"schemaType\":\"AVRO\"}";
    assert_int_equal(wsb_sr_parse_schema(avro, strlen(avro), &s), WSB_OK);
    free(s);
    const char *bad[] = {"", "[]", "{\"schema\":1}", "{\"error_code\":40403}", "{"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(wsb_sr_parse_schema(bad[i], strlen(bad[i]), &s), WSB_ERR_INVALID);
        assert_null(s);
    }
    const char *latest =
        "{\"subject\":\"t-value\",\"version\":3,\"id\":42,\"schema\":\"\\\"int\\\"\"}";
    assert_int_equal(wsb_sr_parse_latest(latest, strlen(latest), &id, &s), WSB_OK);
    assert_int_equal(id, 42);
    assert_string_equal(s, "\"int\"");
    free(s);
    const char *noid = "{\"subject\":\"t-value\",\"schema\":\"\\\"int\\\"\"}";
    assert_int_equal(wsb_sr_parse_latest(noid, strlen(noid), &id, &s), WSB_ERR_INVALID);
    const char *negid = "{\"id\":-1,\"schema\":\"\\\"int\\\"\"}";
    assert_int_equal(wsb_sr_parse_latest(negid, strlen(negid), &id, &s), WSB_ERR_INVALID);
}

static int nproblems;
static char last_path[128];
static void report(void *ctx, const char *path, const char *msg)
{
    (void)ctx;
    (void)msg;
    nproblems++;
    snprintf(last_path, sizeof(last_path), "%s", path);
}

static int check(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    nproblems = 0;
    last_path[0] = '\0';
    int n = wsb_sr_check_config(j, report, NULL);
    json_decref(j);
    assert_int_equal(n, nproblems);
    return n;
}

static void test_config(void **state)
{
    (void)state;
    assert_int_equal(check("{\"url\":\"http://r:8081\"}"), 0);
    assert_int_equal(check("{\"url\":\"http://r:8081/p\",\"username\":\"u\",\"password\":\"p\","
                           "\"cache_ttl_s\":60,\"max_held_records\":5}"),
                     0);
    assert_int_equal(check("{\"url\":\"http://r\",\"bearer\":\"t\"}"), 0);
    assert_int_equal(check("{}"), 1);
    assert_int_equal(check("{\"url\":\"https://r\"}"), 1);
    assert_int_equal(check("{\"url\":\"http://r\",\"usr\":\"x\"}"), 1);
    assert_string_equal(last_path, ".schema_registry.usr");
    assert_int_equal(check("{\"url\":\"http://r\",\"username\":\"u\"}"), 1);
    assert_int_equal(check("{\"url\":\"http://r\",\"username\":\"u\",\"password\":\"p\","
                           "\"bearer\":\"t\"}"),
                     1);
    assert_int_equal(check("{\"url\":\"http://r\",\"cache_ttl_s\":0}"), 1);
    assert_int_equal(check("{\"url\":\"http://r\",\"max_held_records\":\"9\"}"), 1);
}

static void test_single_flight_and_cache(void **state)
{
    (void)state;
    struct registry *r = registry_start();
    atomic_store(&r->delay_ms, 100); /* lookups pile up while the fetch is out */
    struct wsb_sr *sr = client(r->port, ",\"bearer\":\"tok\"");
    char *text = NULL;
    int before = atomic_load(&wakes);
    for (int i = 0; i < 20; i++)
        assert_int_equal(wsb_sr_schema(sr, 1, &text), WSB_SR_PENDING);
    assert_int_equal(wait_schema(sr, 1, &text), WSB_SR_FOUND);
    assert_string_equal(text, "\"string\"");
    free(text);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(wsb_sr_schema(sr, 1, &text), WSB_SR_FOUND);
        free(text);
    }
    assert_int_equal(atomic_load(&r->ids_1), 1);
    assert_int_equal((int)wsb_sr_fetches(sr), 1);
    assert_true(atomic_load(&wakes) > before);
    pthread_mutex_lock(&r->lock);
    assert_string_equal(r->auth, "Bearer tok");
    pthread_mutex_unlock(&r->lock);
    char reason[256];
    assert_true(wsb_sr_ready(sr, reason, sizeof(reason)));
    wsb_sr_free(sr);
    registry_stop(r);
}

static void test_not_found_latest_and_basic_auth(void **state)
{
    (void)state;
    struct registry *r = registry_start();
    struct wsb_sr *sr = client(r->port, ",\"username\":\"u\",\"password\":\"p\"");
    char *text = NULL;
    assert_int_equal(wait_schema(sr, 999, &text), WSB_SR_NOT_FOUND);
    assert_int_equal(wsb_sr_schema(sr, 999, &text), WSB_SR_NOT_FOUND); /* remembered */
    assert_int_equal((int)wsb_sr_fetches(sr), 1);
    pthread_mutex_lock(&r->lock);
    assert_string_equal(r->auth, "Basic dTpw"); /* base64("u:p") */
    pthread_mutex_unlock(&r->lock);
    uint32_t id = 0;
    enum wsb_sr_status st = WSB_SR_PENDING;
    for (int i = 0; i < 500 && st == WSB_SR_PENDING; i++) {
        st = wsb_sr_latest(sr, "orders-value", &id, &text);
        if (st == WSB_SR_PENDING)
            sleep_ms(10);
    }
    assert_int_equal(st, WSB_SR_FOUND);
    assert_int_equal(id, 7);
    assert_string_equal(text, "\"long\"");
    free(text);
    char reason[256];
    assert_true(wsb_sr_ready(sr, reason, sizeof(reason))); /* a 404 is an answer */
    wsb_sr_free(sr);
    registry_stop(r);
}

static void test_down_then_back_without_lookups(void **state)
{
    (void)state;
    struct registry *r = registry_start();
    struct wsb_sr *sr = client(r->port, NULL);
    registry_down(r);
    char *text = NULL, reason[512] = "";
    assert_int_equal(wait_schema(sr, 1, &text), WSB_SR_DOWN);
    assert_false(wsb_sr_ready(sr, reason, sizeof(reason)));
    char want[64];
    snprintf(want, sizeof(want), "127.0.0.1:%d", r->port);
    if (!strstr(reason, "schema registry") || !strstr(reason, want))
        fail_msg("reason \"%s\" does not name the registry", reason);
    registry_up(r);
    /* No lookup from here: the client's own probe fetches the failed id again. */
    bool ready = false;
    for (int i = 0; i < 1000 && !ready; i++) {
        ready = wsb_sr_ready(sr, reason, sizeof(reason));
        if (!ready)
            sleep_ms(10);
    }
    assert_true(ready);
    assert_int_equal(wsb_sr_schema(sr, 1, &text), WSB_SR_FOUND);
    free(text);
    wsb_sr_free(sr);
    registry_stop(r);
}

static void test_free_with_a_fetch_in_flight(void **state)
{
    (void)state;
    struct registry *r = registry_start();
    atomic_store(&r->delay_ms, 300);
    struct wsb_sr *sr = client(r->port, NULL);
    char *text = NULL;
    assert_int_equal(wsb_sr_schema(sr, 1, &text), WSB_SR_PENDING);
    sleep_ms(50);
    wsb_sr_free(sr); /* abandons the request; nothing leaks, nothing is called after */
    registry_stop(r);
}

int main(void)
{
    evthread_use_pthreads(); /* the test's registry is stopped from the test's thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_single_flight_and_cache),
        cmocka_unit_test(test_not_found_latest_and_basic_auth),
        cmocka_unit_test(test_down_then_back_without_lookups),
        cmocka_unit_test(test_free_with_a_fetch_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
