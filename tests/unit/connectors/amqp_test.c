/* Tests for connectors/amqp.c without a broker: config and channel-rule validation, and a
 * connector that cannot reach its broker reports why (not ready) and stops cleanly. */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "connectors/amqp.h"

struct problems {
    int n;
    char text[1024];
};

static void report(void *ctx, const char *path, const char *msg)
{
    struct problems *p = ctx;
    size_t len = strlen(p->text);
    snprintf(p->text + len, sizeof(p->text) - len, "%s: %s\n", path, msg);
    p->n++;
}

static int check_config(const char *json, struct problems *p)
{
    memset(p, 0, sizeof(*p));
    json_t *conf = json_loads(json, 0, NULL);
    assert_non_null(conf);
    int n = wsb_amqp_ops.check_config(conf, report, p);
    json_decref(conf);
    assert_int_equal(n, p->n);
    return n;
}

static int check_channel(const char *json, struct problems *p)
{
    memset(p, 0, sizeof(*p));
    json_t *ch = json_loads(json, 0, NULL);
    assert_non_null(ch);
    int n = wsb_amqp_ops.check_channel(ch, report, p);
    json_decref(ch);
    assert_int_equal(n, p->n);
    return n;
}

static void test_config(void **state)
{
    (void)state;
    struct problems p;
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"amqp://u:p@h:5672/%2f\"}", &p), 0);
    assert_int_equal(
        check_config("{\"type\":\"amqp\",\"url\":\"amqps://u:p@h/v\",\"heartbeat_s\":0,"
                     "\"channel_max\":16,\"connect_timeout_ms\":100,"
                     "\"reconnect_max_ms\":600000,"
                     "\"tls\":{\"ca_file\":\"/ca.pem\",\"verify\":false}}",
                     &p),
        0);
    assert_int_equal(check_config("{\"type\":\"amqp\"}", &p), 1);
    assert_non_null(strstr(p.text, ".url: required"));
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"http://h/\"}", &p), 1);
    assert_non_null(strstr(p.text, ".url: must be an amqp"));
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"amqp://h\",\"heartbeat_s\":-1,"
                                  "\"channel_max\":1,\"reconnect_max_ms\":5,\"bogus\":1,"
                                  "\"tls\":{\"verify\":\"yes\",\"cert\":\"x\"}}",
                                  &p),
                     7);
    assert_non_null(strstr(p.text, ".tls: only for an amqps:// URL"));
    assert_non_null(strstr(p.text, ".heartbeat_s:"));
    assert_non_null(strstr(p.text, ".channel_max:"));
    assert_non_null(strstr(p.text, ".reconnect_max_ms:"));
    assert_non_null(strstr(p.text, ".bogus: unknown key"));
    assert_non_null(strstr(p.text, ".tls.verify: must be true or false"));
    assert_non_null(strstr(p.text, ".tls.cert: unknown key"));
    /* client certificate: both files or neither; file names are non-empty strings */
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"amqps://h\","
                                  "\"tls\":{\"cert_file\":\"/c.pem\",\"key_file\":\"/c.key\"}}",
                                  &p),
                     0);
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"amqps://h\","
                                  "\"tls\":{\"cert_file\":\"/c.pem\",\"ca_file\":\"\"}}",
                                  &p),
                     2);
    assert_non_null(strstr(p.text, ".tls.key_file: required with tls.cert_file"));
    assert_non_null(strstr(p.text, ".tls.ca_file: must be a non-empty string"));
    assert_int_equal(check_config("{\"type\":\"amqp\",\"url\":\"amqps://h\","
                                  "\"tls\":{\"key_file\":7}}",
                                  &p),
                     2);
    assert_non_null(strstr(p.text, ".tls.key_file: must be a non-empty string"));
    assert_non_null(strstr(p.text, ".tls.cert_file: required with tls.key_file"));
}

/* amqps: the TLS files are loaded when the connector is made (a wrong path stops the start). */
static void test_tls_files_at_create(void **state)
{
    (void)state;
    struct wsb_sink sink = {0};
    char err[160];
    void *impl = NULL;
    json_t *conf = json_loads("{\"type\":\"amqp\",\"url\":\"amqps://u:p@127.0.0.1:1/%2f\","
                              "\"tls\":{\"ca_file\":\"/nonexistent/ca.pem\"}}",
                              0, NULL);
    assert_int_not_equal(wsb_amqp_ops.create("r", conf, &sink, &impl, err, sizeof(err)), WSB_OK);
    assert_null(impl);
    assert_non_null(strstr(err, "tls.ca_file"));
    json_decref(conf);
    conf = json_loads("{\"type\":\"amqp\",\"url\":\"amqps://u:p@127.0.0.1:1/%2f\","
                      "\"tls\":{\"cert_file\":\"/nonexistent/c.pem\","
                      "\"key_file\":\"/nonexistent/c.key\",\"verify\":false}}",
                      0, NULL);
    assert_int_not_equal(wsb_amqp_ops.create("r", conf, &sink, &impl, err, sizeof(err)), WSB_OK);
    assert_non_null(strstr(err, "tls.cert_file"));
    json_decref(conf);
    /* a plain URL loads no tls files (check_config refuses tls there) */
    conf = json_loads("{\"type\":\"amqp\",\"url\":\"amqp://u:p@127.0.0.1:1/%2f\","
                      "\"tls\":{\"ca_file\":\"/nonexistent/ca.pem\"}}",
                      0, NULL);
    assert_int_equal(wsb_amqp_ops.create("r", conf, &sink, &impl, err, sizeof(err)), WSB_OK);
    wsb_amqp_ops.destroy(impl);
    json_decref(conf);
}

static void test_channels(void **state)
{
    (void)state;
    struct problems p;
    assert_int_equal(check_channel("{\"exchange\":\"e\",\"binding_key\":\"a.{1}\"}", &p), 0);
    assert_int_equal(check_channel("{\"exchange\":\"e\",\"routing_key\":\"\"}", &p), 0);
    assert_int_equal(check_channel("{\"queue\":\"q\",\"delivery\":\"ack\"}", &p), 0);
    assert_int_equal(check_channel("{}", &p), 1);
    assert_non_null(strstr(p.text, ".exchange: required"));
    assert_int_equal(check_channel("{\"exchange\":\"e\",\"queue\":\"q\"}", &p), 1);
    assert_int_equal(check_channel("{\"exchange\":\"\"}", &p), 1); /* empty */
    assert_int_equal(
        check_channel("{\"queue\":\"q\",\"binding_key\":\"k\",\"routing_key\":\"r\"}", &p), 2);
    assert_int_equal(check_channel("{\"exchange\":\"e\",\"delivery\":\"ack\"}", &p), 1);
    assert_non_null(strstr(p.text, ".delivery:"));
    assert_int_equal(
        check_channel(
            "{\"queue\":\"q\",\"topic\":\"t\",\"group\":\"g\",\"dead_letter_topic\":\"d\"}", &p),
        3);
}

/* ---- A connector whose broker is not there -------------------------------------------- */

static atomic_int ups;

static void sink_message(void *ctx, struct wsb_msg *m)
{
    (void)ctx;
    wsb_msg_unref(m);
}
static void sink_started(void *ctx, uint64_t id, const char *positions)
{
    (void)ctx, (void)id, (void)positions;
}
static void sink_failed(void *ctx, uint64_t id, const char *code, const char *message)
{
    (void)ctx, (void)id, (void)code, (void)message;
}
static atomic_uint_fast64_t done_cookie; /* stored last (release): the rest is then visible */
static bool done_ok = true;
static char done_msg[200];
static void sink_publish_done(void *ctx, uint64_t cookie, bool ok, const char *message)
{
    (void)ctx;
    done_ok = ok;
    snprintf(done_msg, sizeof(done_msg), "%s", message ? message : "");
    atomic_store_explicit(&done_cookie, cookie, memory_order_release);
}
static void sink_state(void *ctx, const char *connector, bool up, const char *reason)
{
    (void)ctx, (void)connector, (void)reason;
    atomic_fetch_add(&ups, up);
}

static void test_unreachable_broker(void **state)
{
    (void)state;
    struct wsb_sink sink = {.message = sink_message,
                            .source_started = sink_started,
                            .source_failed = sink_failed,
                            .publish_done = sink_publish_done,
                            .state = sink_state};
    /* port 1 on loopback: refused at once */
    json_t *conf =
        json_loads("{\"type\":\"amqp\",\"url\":\"amqp://u:p@127.0.0.1:1/%2f\"}", 0, NULL);
    void *impl = NULL;
    char err[128];
    assert_int_equal(wsb_amqp_ops.create("r", conf, &sink, &impl, err, sizeof(err)), WSB_OK);
    json_decref(conf);
    char reason[160];
    assert_false(wsb_amqp_ops.ready(impl, reason, sizeof(reason)));
    assert_string_equal(reason, "connecting");
    assert_int_equal(wsb_amqp_ops.start(impl), WSB_OK);
    for (int i = 0; i < 200 && strstr(reason, "cannot connect") == NULL; i++) {
        usleep(10000);
        assert_false(wsb_amqp_ops.ready(impl, reason, sizeof(reason)));
    }
    assert_non_null(strstr(reason, "cannot connect to 127.0.0.1:1"));
    assert_int_equal(atomic_load(&ups), 0);
    /* a publish while down fails through the sink, not by blocking */
    json_t *pf = json_pack("{s:s, s:s}", "exchange", "e", "routing_key", "k");
    struct wsb_publish pub = {.fields = pf, .payload = (const uint8_t *)"1", .payload_len = 1};
    assert_int_equal(wsb_amqp_ops.publish(impl, &pub, 77), WSB_OK);
    json_decref(pf);
    for (int i = 0; i < 200 && atomic_load_explicit(&done_cookie, memory_order_acquire) != 77; i++)
        usleep(10000);
    assert_int_equal(atomic_load_explicit(&done_cookie, memory_order_acquire), 77);
    assert_false(done_ok);
    assert_non_null(strstr(done_msg, "not connected"));
    wsb_amqp_ops.stop(impl, 100);
    wsb_amqp_ops.destroy(impl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_tls_files_at_create),
        cmocka_unit_test(test_unreachable_broker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
