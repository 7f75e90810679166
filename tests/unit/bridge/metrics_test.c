/* Unit tests for bridge/metrics.c: close-code index, histograms and the text exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/metrics.h"
#include "util/err.h"

/* The value of the sample line `series` (name plus labels) in `text`; fails when absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    fail_msg("no sample %s", series);
    return -1;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, line, n) == 0 && p[n] == '\n')
            return true;
    return false;
}

struct fake_connector {
    const char *name;
    uint64_t in;
    int up;
};

static void connector_cb(void *ctx, size_t i, const char **name, uint64_t *in, int *up)
{
    const struct fake_connector *c = ctx;
    *name = c[i].name;
    *in = c[i].in;
    *up = c[i].up;
}

static void test_close_idx(void **state)
{
    (void)state;
    assert_int_equal(wsb_metrics_close_idx(1000), WSB_CLOSE_IDX_1000);
    assert_int_equal(wsb_metrics_close_idx(1001), WSB_CLOSE_IDX_1001);
    assert_int_equal(wsb_metrics_close_idx(4408), WSB_CLOSE_IDX_4408);
    assert_int_equal(wsb_metrics_close_idx(4429), WSB_CLOSE_IDX_4429);
    assert_int_equal(wsb_metrics_close_idx(1005), WSB_CLOSE_IDX_OTHER);
    assert_int_equal(wsb_metrics_close_idx(0), WSB_CLOSE_IDX_OTHER);
    assert_int_equal(wsb_metrics_close_idx(65535), WSB_CLOSE_IDX_OTHER);
}

static void test_bounds_sorted(void **state)
{
    (void)state;
    assert_true(wsb_hist_bounds[0] == 0.0005);
    assert_true(wsb_hist_bounds[WSB_HIST_BUCKETS - 1] == 10);
    for (size_t i = 1; i < WSB_HIST_BUCKETS; i++)
        assert_true(wsb_hist_bounds[i] > wsb_hist_bounds[i - 1]);
}

static void test_histogram_observe(void **state)
{
    (void)state;
    struct wsb_histogram h;
    memset(&h, 0, sizeof(h));
    wsb_histogram_observe(&h, 0.0005); /* on the bound: le is inclusive */
    wsb_histogram_observe(&h, 0.0006);
    wsb_histogram_observe(&h, 10);
    wsb_histogram_observe(&h, 11);
    wsb_histogram_observe(&h, -1);    /* clamps to 0 */
    wsb_histogram_observe(&h, 1e300); /* no overflow */
    assert_int_equal(atomic_load(&h.buckets[0]), 2);
    assert_int_equal(atomic_load(&h.buckets[1]), 1);
    assert_int_equal(atomic_load(&h.buckets[WSB_HIST_BUCKETS - 1]), 1);
    assert_int_equal(atomic_load(&h.buckets[WSB_HIST_BUCKETS]), 2);
    assert_int_equal(atomic_load(&h.count), 6);
}

static void test_render(void **state)
{
    (void)state;
    static struct wsb_loop_metrics a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    wsb_metric_add(a.connections, 3);
    wsb_metric_add(b.connections, 2);
    wsb_metric_add(a.subscriptions, 7);
    wsb_metric_add(b.send_buffer_bytes, 4096);
    wsb_metric_add(a.handshakes[WSB_HS_OK], 5);
    wsb_metric_add(b.handshakes[WSB_HS_OK], 1);
    wsb_metric_add(b.handshakes[WSB_HS_TIMEOUT], 2);
    wsb_metric_add(a.messages_out, 10);
    wsb_metric_add(b.bytes_out, 1234);
    wsb_metric_add(a.frames_encoded, 9);
    wsb_metric_add(a.dropped[WSB_DROP_DISCONNECTED], 4);
    wsb_metric_add(a.disconnects[wsb_metrics_close_idx(4408)], 1);
    wsb_metric_add(b.disconnects[wsb_metrics_close_idx(3000)], 2);
    wsb_metric_add(a.publish[WSB_PUB_REJECTED], 1);
    wsb_metric_add(b.rate_limited[WSB_RL_INFLIGHT_PUBLISHES], 8);
    wsb_metric_add(a.acl[WSB_ACL_DENY], 6);
    wsb_metric_add(a.accept_paused, 2);
    wsb_metric_add(b.accept_paused, 1);
    wsb_metric_add(a.mailbox_mails, 40);
    wsb_metric_add(b.mailbox_mails, 2);
    wsb_metric_add(a.handoff_held_us, 250000);
    wsb_metric_add(b.handoff_held_us, 1500000);
    wsb_histogram_observe(&a.delivery_latency, 0.002);
    wsb_histogram_observe(&b.delivery_latency, 0.003);
    wsb_histogram_observe(&b.delivery_latency, 30);
    wsb_histogram_observe(&a.ping_rtt, 0.0001);

    struct fake_connector conns[] = {{"events", 100, 1}, {"we\"ird\\na\nme", 5, 0}};
    struct wsb_loop_metrics *loops[] = {&a, &b};
    struct wsb_metrics_source src = {.loops = loops,
                                     .nloops = 2,
                                     .admin_accept_paused = 4,
                                     .nconnectors = 2,
                                     .connector = connector_cb,
                                     .ctx = conns};
    size_t len = 0;
    char *t = wsb_metrics_render(&src, &len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    assert_int_equal(t[len - 1], '\n');

    assert_true(sample(t, "wsbridge_connections") == 5);
    assert_true(sample(t, "wsbridge_subscriptions") == 7);
    assert_true(sample(t, "wsbridge_send_buffer_bytes") == 4096);
    assert_true(sample(t, "wsbridge_handshakes_total{result=\"ok\"}") == 6);
    assert_true(sample(t, "wsbridge_handshakes_total{result=\"timeout\"}") == 2);
    const char *hs[] = {"bad_request", "forbidden", "unauthorized", "rate_limited", "overloaded"};
    char series[256];
    for (size_t i = 0; i < 5; i++) {
        snprintf(series, sizeof(series), "wsbridge_handshakes_total{result=\"%s\"}", hs[i]);
        assert_true(sample(t, series) == 0);
    }
    assert_true(sample(t, "wsbridge_messages_out_total") == 10);
    assert_true(sample(t, "wsbridge_bytes_out_total") == 1234);
    assert_true(sample(t, "wsbridge_frames_encoded_total") == 9);
    assert_true(sample(t, "wsbridge_accept_paused_total") == 7); /* both loops + the admin */
    assert_true(sample(t, "wsbridge_mailbox_mails") == 42);
    assert_true(sample(t, "wsbridge_handoff_held_seconds_total") == 1.75);
    assert_true(sample(t, "wsbridge_messages_dropped_total{reason=\"disconnected\"}") == 4);
    assert_true(sample(t, "wsbridge_messages_dropped_total{reason=\"slow_consumer\"}") == 0);
    assert_true(sample(t, "wsbridge_disconnects_total{code=\"4408\"}") == 1);
    assert_true(sample(t, "wsbridge_disconnects_total{code=\"other\"}") == 2);
    assert_true(sample(t, "wsbridge_disconnects_total{code=\"1000\"}") == 0);
    assert_true(sample(t, "wsbridge_publish_total{result=\"rejected\"}") == 1);
    assert_true(sample(t, "wsbridge_publish_total{result=\"ok\"}") == 0);
    assert_true(sample(t, "wsbridge_publish_total{result=\"failed\"}") == 0);
    assert_true(sample(t, "wsbridge_rate_limited_total{kind=\"inflight_publishes\"}") == 8);
    assert_true(sample(t, "wsbridge_rate_limited_total{kind=\"connections_per_ip\"}") == 0);
    assert_true(sample(t, "wsbridge_rate_limited_total{kind=\"messages\"}") == 0);
    assert_true(sample(t, "wsbridge_acl_decisions_total{result=\"deny\"}") == 6);
    assert_true(sample(t, "wsbridge_acl_decisions_total{result=\"allow\"}") == 0);

    assert_true(sample(t, "wsbridge_messages_in_total{connector=\"events\"}") == 100);
    assert_true(sample(t, "wsbridge_connector_up{connector=\"events\"}") == 1);
    assert_true(sample(t, "wsbridge_messages_in_total{connector=\"we\\\"ird\\\\na\\nme\"}") == 5);
    assert_true(sample(t, "wsbridge_connector_up{connector=\"we\\\"ird\\\\na\\nme\"}") == 0);

    /* histograms: cumulative buckets */
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_bucket{le=\"0.001\"}") == 0);
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_bucket{le=\"0.0025\"}") == 1);
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_bucket{le=\"0.005\"}") == 2);
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_bucket{le=\"10\"}") == 2);
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_bucket{le=\"+Inf\"}") == 3);
    assert_true(sample(t, "wsbridge_delivery_latency_seconds_count") == 3);
    double sum = sample(t, "wsbridge_delivery_latency_seconds_sum");
    assert_true(sum > 30.0049 && sum < 30.0051);
    assert_true(sample(t, "wsbridge_ping_rtt_seconds_bucket{le=\"0.0005\"}") == 1);
    assert_true(sample(t, "wsbridge_ping_rtt_seconds_count") == 1);

    /* HELP and TYPE for every family, TYPE before the family's samples */
    const char *families[][2] = {
        {"wsbridge_connections", "gauge"},
        {"wsbridge_handshakes_total", "counter"},
        {"wsbridge_subscriptions", "gauge"},
        {"wsbridge_messages_in_total", "counter"},
        {"wsbridge_messages_out_total", "counter"},
        {"wsbridge_bytes_out_total", "counter"},
        {"wsbridge_messages_dropped_total", "counter"},
        {"wsbridge_disconnects_total", "counter"},
        {"wsbridge_publish_total", "counter"},
        {"wsbridge_rate_limited_total", "counter"},
        {"wsbridge_acl_decisions_total", "counter"},
        {"wsbridge_frames_encoded_total", "counter"},
        {"wsbridge_accept_paused_total", "counter"},
        {"wsbridge_delivery_latency_seconds", "histogram"},
        {"wsbridge_ping_rtt_seconds", "histogram"},
        {"wsbridge_connector_up", "gauge"},
        {"wsbridge_send_buffer_bytes", "gauge"},
        {"wsbridge_mailbox_mails", "gauge"},
        {"wsbridge_handoff_held_seconds_total", "counter"},
    };
    for (size_t i = 0; i < WSB_ARRAY_LEN(families); i++) {
        snprintf(series, sizeof(series), "# TYPE %s %s", families[i][0], families[i][1]);
        assert_true(has_line(t, series));
        const char *type = strstr(t, series);
        snprintf(series, sizeof(series), "\n%s", families[i][0]);
        const char *first = strstr(t, series);
        assert_non_null(first);
        assert_true(first > type);
        snprintf(series, sizeof(series), "# HELP %s ", families[i][0]);
        assert_non_null(strstr(t, series));
    }
    /* every line is a comment or "series value" */
    for (const char *p = t; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        if (*p != '#') {
            const char *sp = memchr(p, ' ', (size_t)(nl - p));
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            assert_ptr_equal(end, nl);
        }
        p = nl + 1;
    }
    free(t);
}

static void test_render_empty(void **state)
{
    (void)state;
    struct wsb_metrics_source src = {0};
    size_t len;
    char *t = wsb_metrics_render(&src, &len);
    assert_non_null(t);
    assert_true(sample(t, "wsbridge_connections") == 0);
    assert_true(sample(t, "wsbridge_ping_rtt_seconds_bucket{le=\"+Inf\"}") == 0);
    assert_true(has_line(t, "# TYPE wsbridge_connector_up gauge"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_idx),         cmocka_unit_test(test_bounds_sorted),
        cmocka_unit_test(test_histogram_observe), cmocka_unit_test(test_render),
        cmocka_unit_test(test_render_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
