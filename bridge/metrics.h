/* Counters and histograms. Each event loop owns one `struct wsb_loop_metrics` and is its only
 * writer (relaxed atomics, so a scrape from the admin thread is race-free); a scrape sums the
 * loops. Labels are fixed enums: never per-client or per-channel values. */
#ifndef WSB_BRIDGE_METRICS_H
#define WSB_BRIDGE_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wsb_hs_result {
    WSB_HS_OK,
    WSB_HS_BAD_REQUEST,  /* 400 / 426 / 404 */
    WSB_HS_FORBIDDEN,    /* 403 origin */
    WSB_HS_UNAUTHORIZED, /* 401 or 4401 in refusal=close mode */
    WSB_HS_RATE_LIMITED, /* 429 */
    WSB_HS_OVERLOADED,   /* 503 */
    WSB_HS_TIMEOUT,      /* handshake_timeout_ms */
    WSB_HS__COUNT
};

enum wsb_drop_reason {
    WSB_DROP_SLOW_CONSUMER,
    WSB_DROP_DISCONNECTED,
    WSB_DROP_UNDECODABLE, /* a record the connector could not decode (value_format avro) */
    WSB_DROP__COUNT
};

enum wsb_rl_kind {
    WSB_RL_MESSAGES,
    WSB_RL_BYTES,
    WSB_RL_HANDSHAKE,
    WSB_RL_CONNECTIONS_PER_IP,
    WSB_RL_INFLIGHT_PUBLISHES,
    WSB_RL__COUNT
};

enum wsb_publish_result { WSB_PUB_OK, WSB_PUB_FAILED, WSB_PUB_REJECTED, WSB_PUB__COUNT };

enum wsb_acl_decision { WSB_ACL_ALLOW, WSB_ACL_DENY, WSB_ACL__COUNT };

/* Close codes counted by wsbridge_disconnects_total{code}; anything else counts as "other". */
/* clang-format off */
#define WSB_CLOSE_CODES \
    X(1000) X(1001) X(1002) X(1003) X(1006) X(1007) X(1008) X(1009) X(1011) X(1013) \
    X(4401) X(4408) X(4429)
/* clang-format on */
enum wsb_close_idx {
#define X(c) WSB_CLOSE_IDX_##c,
    WSB_CLOSE_CODES
#undef X
        WSB_CLOSE_IDX_OTHER,
    WSB_CLOSE__COUNT
};
/** Index of a close code in wsb_loop_metrics.disconnects. */
enum wsb_close_idx wsb_metrics_close_idx(uint16_t code);

#define WSB_HIST_BUCKETS 14
/** Upper bounds in seconds of the histogram buckets (+Inf is implicit). */
extern const double wsb_hist_bounds[WSB_HIST_BUCKETS];

struct wsb_histogram {
    atomic_uint_fast64_t buckets[WSB_HIST_BUCKETS + 1]; /* last = +Inf */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us; /* sum of observations, microseconds */
};

/** Records one observation (seconds). @locality owner loop */
void wsb_histogram_observe(struct wsb_histogram *h, double seconds);

struct wsb_loop_metrics {
    atomic_int_fast64_t connections; /* open client connections, from accept */
    atomic_int_fast64_t subscriptions;
    atomic_int_fast64_t send_buffer_bytes; /* user-space bytes queued for clients */
    atomic_int_fast64_t filter_groups;     /* hub groups of subscribers with a filter */
    atomic_uint_fast64_t handshakes[WSB_HS__COUNT];
    atomic_uint_fast64_t sessions_opened[3]; /* by transport: websocket, sse, http */
    atomic_uint_fast64_t messages_out;       /* message frames queued to clients */
    atomic_uint_fast64_t bytes_out;          /* bytes written to sockets */
    atomic_uint_fast64_t frames_encoded;     /* message frames built (once per loop/channel/msg) */
    atomic_uint_fast64_t records_handed;     /* broker records posted to this loop (its hub) */
    atomic_uint_fast64_t dropped[WSB_DROP__COUNT];
    atomic_uint_fast64_t disconnects[WSB_CLOSE__COUNT];
    atomic_uint_fast64_t publish[WSB_PUB__COUNT];
    atomic_uint_fast64_t rate_limited[WSB_RL__COUNT];
    atomic_uint_fast64_t acl[WSB_ACL__COUNT];
    atomic_uint_fast64_t accept_paused;   /* listener paused after accept() failed (EMFILE...) */
    atomic_int_fast64_t mailbox_mails;    /* mails waiting in the loop's mailbox (on the tick) */
    atomic_uint_fast64_t handoff_held_us; /* time the loop's hand-off gate held its mailbox */
    struct wsb_histogram delivery_latency;
    struct wsb_histogram ping_rtt;
};

/** Convenience for the owner loop: relaxed add. */
#define wsb_metric_add(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

struct wsb_connector_stat;

/** What a scrape needs from the rest of the process. */
struct wsb_format_stats; /* connectors/connector.h */

struct wsb_metrics_source {
    struct wsb_loop_metrics *const *loops; /* one per event loop */
    size_t nloops;
    uint64_t admin_accept_paused; /* the admin listener's back-offs (wsb_admin_accept_paused) */
    size_t nconnectors;
    /** i-th connector's name, messages received, and readiness. */
    void (*connector)(void *ctx, size_t i, const char **name, uint64_t *messages_in, int *up);
    /** The i-th connector's record-format counters; false when it has none (NULL: none). */
    bool (*formats)(void *ctx, size_t i, const char **name, struct wsb_format_stats *out);
    /** i-th connector's own figures (wsb_connector_stats); NULL: none. */
    size_t (*connector_stats)(void *ctx, size_t i, struct wsb_connector_stat *out, size_t max);
    /** Broker sources started and stopped so far, reading now and lingering now (NULL: none). */
    void (*sources)(void *ctx, uint64_t *started, uint64_t *stopped, size_t *reading,
                    size_t *lingering);
    void *ctx;
};

/** Renders the Prometheus text exposition (version 0.0.4) into a malloc'd string.
 * Returns NULL on allocation failure. @locality any (admin thread) */
char *wsb_metrics_render(const struct wsb_metrics_source *src, size_t *len);

#endif
