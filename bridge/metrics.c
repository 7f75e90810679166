/* Metrics: per-loop counters summed at scrape time into the Prometheus text format 0.0.4. */
#include "bridge/metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "auth/filter.h"
#include "connectors/connector.h"
#include "util/buf.h"
#include "util/err.h"

const double wsb_hist_bounds[WSB_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static const char *const hs_labels[WSB_HS__COUNT] = {
    [WSB_HS_OK] = "ok",
    [WSB_HS_BAD_REQUEST] = "bad_request",
    [WSB_HS_FORBIDDEN] = "forbidden",
    [WSB_HS_UNAUTHORIZED] = "unauthorized",
    [WSB_HS_RATE_LIMITED] = "rate_limited",
    [WSB_HS_OVERLOADED] = "overloaded",
    [WSB_HS_TIMEOUT] = "timeout",
};
static const char *const drop_labels[WSB_DROP__COUNT] = {
    [WSB_DROP_SLOW_CONSUMER] = "slow_consumer",
    [WSB_DROP_DISCONNECTED] = "disconnected",
    [WSB_DROP_UNDECODABLE] = "undecodable",
};
static const char *const rl_labels[WSB_RL__COUNT] = {
    [WSB_RL_MESSAGES] = "messages",
    [WSB_RL_BYTES] = "bytes",
    [WSB_RL_HANDSHAKE] = "handshake",
    [WSB_RL_CONNECTIONS_PER_IP] = "connections_per_ip",
    [WSB_RL_INFLIGHT_PUBLISHES] = "inflight_publishes",
};
static const char *const pub_labels[WSB_PUB__COUNT] = {
    [WSB_PUB_OK] = "ok",
    [WSB_PUB_FAILED] = "failed",
    [WSB_PUB_REJECTED] = "rejected",
};
static const char *const acl_labels[WSB_ACL__COUNT] = {
    [WSB_ACL_ALLOW] = "allow",
    [WSB_ACL_DENY] = "deny",
};
static const char *const close_labels[WSB_CLOSE__COUNT] = {
#define X(c) [WSB_CLOSE_IDX_##c] = #c,
    WSB_CLOSE_CODES
#undef X
        [WSB_CLOSE_IDX_OTHER] = "other",
};

enum wsb_close_idx wsb_metrics_close_idx(uint16_t code)
{
    switch (code) {
#define X(c)                                                                                       \
    case c: return WSB_CLOSE_IDX_##c;
        WSB_CLOSE_CODES
#undef X
    default: return WSB_CLOSE_IDX_OTHER;
    }
}

void wsb_histogram_observe(struct wsb_histogram *h, double seconds)
{
    if (!(seconds >= 0)) /* negative (clock skew) or NaN counts as zero */
        seconds = 0;
    size_t i = 0;
    while (i < WSB_HIST_BUCKETS && seconds > wsb_hist_bounds[i])
        i++;
    double us = seconds * 1e6;
    uint64_t add = us >= 1.8e19 ? UINT64_MAX / 2 : (uint64_t)llround(us);
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, add, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void family(struct wsb_buf *b, const char *name, const char *type, const char *help)
{
    wsb_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Exposition format: label values escape backslash, double quote and line feed. */
static void label_value(struct wsb_buf *b, const char *v)
{
    for (; *v; v++) {
        switch (*v) {
        case '\\': wsb_buf_puts(b, "\\\\"); break;
        case '"': wsb_buf_puts(b, "\\\""); break;
        case '\n': wsb_buf_puts(b, "\\n"); break;
        default: wsb_buf_append(b, v, 1); break;
        }
    }
}

/* Sums one counter (at `offset` inside wsb_loop_metrics) over every loop. */
static uint64_t sum_u(const struct wsb_metrics_source *src, size_t offset)
{
    uint64_t t = 0;
    for (size_t i = 0; i < src->nloops; i++) {
        atomic_uint_fast64_t *p = (atomic_uint_fast64_t *)((char *)src->loops[i] + offset);
        t += LOAD(*p);
    }
    return t;
}

static int64_t sum_i(const struct wsb_metrics_source *src, size_t offset)
{
    int64_t t = 0;
    for (size_t i = 0; i < src->nloops; i++) {
        atomic_int_fast64_t *p = (atomic_int_fast64_t *)((char *)src->loops[i] + offset);
        t += LOAD(*p);
    }
    return t;
}

#define SUM_U(field) sum_u(src, offsetof(struct wsb_loop_metrics, field))
#define SUM_I(field) sum_i(src, offsetof(struct wsb_loop_metrics, field))

static void gauge(struct wsb_buf *b, const char *name, const char *help, int64_t v)
{
    family(b, name, "gauge", help);
    wsb_buf_printf(b, "%s %lld\n", name, (long long)v);
}

static void counter(struct wsb_buf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "counter", help);
    wsb_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* A counter family with one fixed-enum label; `base` is the offset of element 0. */
static void labelled(struct wsb_buf *b, const struct wsb_metrics_source *src, const char *name,
                     const char *help, const char *label, const char *const *values, size_t n,
                     size_t base)
{
    family(b, name, "counter", help);
    for (size_t k = 0; k < n; k++)
        wsb_buf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, values[k],
                       (unsigned long long)sum_u(src, base + k * sizeof(atomic_uint_fast64_t)));
}

static void histogram(struct wsb_buf *b, const struct wsb_metrics_source *src, const char *name,
                      const char *help, size_t offset)
{
    uint64_t buckets[WSB_HIST_BUCKETS + 1] = {0};
    uint64_t sum_us = 0;
    for (size_t i = 0; i < src->nloops; i++) {
        struct wsb_histogram *h = (struct wsb_histogram *)((char *)src->loops[i] + offset);
        for (size_t k = 0; k <= WSB_HIST_BUCKETS; k++)
            buckets[k] += LOAD(h->buckets[k]);
        sum_us += LOAD(h->sum_us);
    }
    /* _count is the +Inf bucket so the exposition is self-consistent even while a loop is
     * midway through an observation. */
    family(b, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t k = 0; k < WSB_HIST_BUCKETS; k++) {
        cum += buckets[k];
        wsb_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, wsb_hist_bounds[k],
                       (unsigned long long)cum);
    }
    cum += buckets[WSB_HIST_BUCKETS];
    wsb_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    wsb_buf_printf(b, "%s_sum %.6f\n", name, (double)sum_us / 1e6);
    wsb_buf_printf(b, "%s_count %llu\n", name, (unsigned long long)cum);
}

static void connectors(struct wsb_buf *b, const struct wsb_metrics_source *src, bool up_family)
{
    if (up_family)
        family(b, "wsbridge_connector_up", "gauge",
               "Whether the connector is connected and ready (1) or not (0).");
    else
        family(b, "wsbridge_messages_in_total", "counter",
               "Messages received from the broker, per connector.");
    for (size_t i = 0; i < src->nconnectors && src->connector != NULL; i++) {
        const char *name = NULL;
        uint64_t in = 0;
        int up = 0;
        src->connector(src->ctx, i, &name, &in, &up);
        wsb_buf_puts(b, up_family ? "wsbridge_connector_up{connector=\""
                                  : "wsbridge_messages_in_total{connector=\"");
        label_value(b, name != NULL ? name : "");
        if (up_family)
            wsb_buf_printf(b, "\"} %d\n", up ? 1 : 0);
        else
            wsb_buf_printf(b, "\"} %llu\n", (unsigned long long)in);
    }
}

/* Avro through a schema registry (docs/schema-registry.md), for connectors that have one. */
static void formats(struct wsb_buf *b, const struct wsb_metrics_source *src)
{
    static const char *const results[] = {"decoded", "undecodable", "passed_unknown"};
    bool header = false;
    for (int fam = 0; fam < 2; fam++) {
        header = false;
        for (size_t i = 0; i < src->nconnectors && src->formats; i++) {
            const char *name = NULL;
            struct wsb_format_stats st = {0};
            if (!src->formats(src->ctx, i, &name, &st))
                continue;
            if (!header)
                family(b,
                       fam == 0 ? "wsbridge_schema_registry_records_total"
                                : "wsbridge_schema_registry_fetches_total",
                       "counter",
                       fam == 0 ? "Records with a schema-registry format, by result."
                                : "HTTP requests made to the schema registry.");
            header = true;
            if (fam == 1) {
                wsb_buf_puts(b, "wsbridge_schema_registry_fetches_total{connector=\"");
                label_value(b, name ? name : "");
                wsb_buf_printf(b, "\"} %llu\n", (unsigned long long)st.registry_fetches);
                continue;
            }
            const uint64_t v[] = {st.decoded, st.undecodable, st.passed_unknown};
            for (size_t r = 0; r < 3; r++) {
                wsb_buf_puts(b, "wsbridge_schema_registry_records_total{connector=\"");
                label_value(b, name ? name : "");
                wsb_buf_printf(b, "\",result=\"%s\"} %llu\n", results[r], (unsigned long long)v[r]);
            }
        }
    }
}

/* The connectors' own figures: one family per name, one series per connector having it. */
static void connector_stats(struct wsb_buf *b, const struct wsb_metrics_source *src)
{
    enum { MAXC = 32 };
    struct wsb_connector_stat st[MAXC][WSB_CONNECTOR_MAX_STATS];
    size_t n[MAXC] = {0};
    const char *names[MAXC] = {0};
    size_t nc = src->nconnectors < MAXC ? src->nconnectors : MAXC;
    if (!src->connector_stats || !src->connector)
        return;
    for (size_t i = 0; i < nc; i++) {
        uint64_t in;
        int up;
        src->connector(src->ctx, i, &names[i], &in, &up);
        n[i] = src->connector_stats(src->ctx, i, st[i], WSB_CONNECTOR_MAX_STATS);
    }
    for (size_t i = 0; i < nc; i++) {
        for (size_t k = 0; k < n[i]; k++) {
            const char *name = st[i][k].name;
            bool seen = false; /* rendered with an earlier connector */
            for (size_t j = 0; j < i && !seen; j++)
                for (size_t l = 0; l < n[j] && !seen; l++)
                    seen = strcmp(st[j][l].name, name) == 0;
            if (seen)
                continue;
            family(b, name, st[i][k].type, st[i][k].help);
            for (size_t j = i; j < nc; j++) {
                for (size_t l = 0; l < n[j]; l++) {
                    if (strcmp(st[j][l].name, name) != 0)
                        continue;
                    wsb_buf_printf(b, "%s{connector=\"", name);
                    label_value(b, names[j] ? names[j] : "");
                    wsb_buf_printf(b, "\"} %.17g\n", st[j][l].value);
                }
            }
        }
    }
}

static void filtered_row(void *ctx, const char *label, uint64_t value)
{
    struct wsb_buf *b = ctx;
    wsb_buf_puts(b, "wsbridge_filtered_records_total{rule=\"");
    label_value(b, label);
    wsb_buf_printf(b, "\"} %llu\n", (unsigned long long)value);
}

char *wsb_metrics_render(const struct wsb_metrics_source *src, size_t *len)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    if (wsb_buf_reserve(&b, 8192) < 0)
        goto cleanup;

    gauge(&b, "wsbridge_connections",
          "Open client connections, counted from accept (HTTP upgrades included).",
          SUM_I(connections));
    labelled(&b, src, "wsbridge_handshakes_total", "WebSocket handshakes by outcome.", "result",
             hs_labels, WSB_HS__COUNT, offsetof(struct wsb_loop_metrics, handshakes));
    static const char *const transport_labels[] = {"websocket", "sse", "http"};
    labelled(&b, src, "wsbridge_sessions_opened_total",
             "Sessions admitted, by transport (WebSocket, SSE stream, HTTP publish).", "transport",
             transport_labels, 3, offsetof(struct wsb_loop_metrics, sessions_opened));
    gauge(&b, "wsbridge_subscriptions", "Active channel subscriptions.", SUM_I(subscriptions));
    connectors(&b, src, false);
    counter(&b, "wsbridge_messages_out_total", "Message frames queued to clients.",
            SUM_U(messages_out));
    counter(&b, "wsbridge_bytes_out_total", "Bytes written to client sockets.", SUM_U(bytes_out));
    labelled(&b, src, "wsbridge_messages_dropped_total",
             "Messages not delivered to a client, by reason.", "reason", drop_labels,
             WSB_DROP__COUNT, offsetof(struct wsb_loop_metrics, dropped));
    labelled(&b, src, "wsbridge_disconnects_total", "Closed WebSocket sessions by close code.",
             "code", close_labels, WSB_CLOSE__COUNT,
             offsetof(struct wsb_loop_metrics, disconnects));
    labelled(&b, src, "wsbridge_publish_total", "Client publishes by outcome.", "result",
             pub_labels, WSB_PUB__COUNT, offsetof(struct wsb_loop_metrics, publish));
    labelled(&b, src, "wsbridge_rate_limited_total", "Requests refused by a rate limit, by kind.",
             "kind", rl_labels, WSB_RL__COUNT, offsetof(struct wsb_loop_metrics, rate_limited));
    labelled(&b, src, "wsbridge_acl_decisions_total", "ACL checks by decision.", "result",
             acl_labels, WSB_ACL__COUNT, offsetof(struct wsb_loop_metrics, acl));
    counter(&b, "wsbridge_accept_paused_total",
            "Times a listener stopped accepting for a back-off because accept() failed (out "
            "of file descriptors).",
            SUM_U(accept_paused) + src->admin_accept_paused);
    counter(&b, "wsbridge_frames_encoded_total",
            "Message frames encoded (once per loop, channel and message).", SUM_U(frames_encoded));
    counter(&b, "wsbridge_records_handed_total",
            "Broker records handed to event loops (once per record and loop with a subscriber "
            "of its source).",
            SUM_U(records_handed));
    gauge(&b, "wsbridge_filter_groups",
          "Groups of subscribers sharing one resolved per-record filter (per loop and channel).",
          SUM_I(filter_groups));
    family(&b, "wsbridge_filtered_records_total", "counter",
           "Records a filter group did not take (once per record and group), by the channel "
           "rule's match pattern.");
    wsb_filter_rule_counters(filtered_row, &b);
    histogram(&b, src, "wsbridge_delivery_latency_seconds",
              "Broker timestamp to frame written to the client socket.",
              offsetof(struct wsb_loop_metrics, delivery_latency));
    histogram(&b, src, "wsbridge_ping_rtt_seconds", "WebSocket ping to pong round trip.",
              offsetof(struct wsb_loop_metrics, ping_rtt));
    connectors(&b, src, true);
    formats(&b, src);
    connector_stats(&b, src);
    gauge(&b, "wsbridge_send_buffer_bytes", "Bytes queued in user space for clients.",
          SUM_I(send_buffer_bytes));
    gauge(&b, "wsbridge_mailbox_mails",
          "Broker messages and events waiting in the workers' mailboxes (sampled every 500 ms).",
          SUM_I(mailbox_mails));
    family(&b, "wsbridge_handoff_held_seconds_total", "counter",
           "Time the workers' hand-off gates held broker messages back while a client caught "
           "up, summed over workers.");
    wsb_buf_printf(&b, "wsbridge_handoff_held_seconds_total %.6f\n",
                   (double)SUM_U(handoff_held_us) / 1e6);
    if (src->sources) {
        uint64_t started = 0, stopped = 0;
        size_t reading = 0, lingering = 0;
        src->sources(src->ctx, &started, &stopped, &reading, &lingering);
        counter(&b, "wsbridge_sources_started_total", "Broker sources started (upstream reads).",
                started);
        counter(&b, "wsbridge_sources_stopped_total", "Broker sources stopped.", stopped);
        family(&b, "wsbridge_sources", "gauge",
               "Broker sources being read, for subscribers or lingering after the last left.");
        wsb_buf_printf(&b, "wsbridge_sources{state=\"subscribed\"} %zu\n", reading);
        wsb_buf_printf(&b, "wsbridge_sources{state=\"lingering\"} %zu\n", lingering);
    }

    wsb_buf_append(&b, "", 1); /* NUL terminator, not counted */
    if (b.oom)
        goto cleanup;
    size_t n;
    char *out = (char *)wsb_buf_steal(&b, &n);
    if (len != NULL)
        *len = n - 1;
    return out;

cleanup:
    wsb_buf_cleanup(&b);
    return NULL;
}
