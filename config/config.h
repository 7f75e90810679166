/* The configuration snapshot: strict JSON loading, validation, `${VAR}` expansion and the
 * channel routing table. A loaded config is immutable and reference-counted so a reload can
 * swap it while live sessions still hold the old one. */
#ifndef WSB_CONFIG_CONFIG_H
#define WSB_CONFIG_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "util/pattern.h"

enum wsb_token_source {
    WSB_TOKEN_HEADER = 1u << 0,      /* Authorization: Bearer T */
    WSB_TOKEN_QUERY = 1u << 1,       /* ?access_token=T */
    WSB_TOKEN_SUBPROTOCOL = 1u << 2, /* Sec-WebSocket-Protocol: bearer.T */
    WSB_TOKEN_COOKIE = 1u << 3,      /* Cookie: NAME=T */
};

enum wsb_refusal { WSB_REFUSAL_HTTP, WSB_REFUSAL_CLOSE };

enum wsb_jwt_alg {
    WSB_ALG_HS256 = 1u << 0,
    WSB_ALG_HS384 = 1u << 1,
    WSB_ALG_HS512 = 1u << 2,
    WSB_ALG_RS256 = 1u << 3,
    WSB_ALG_RS384 = 1u << 4,
    WSB_ALG_RS512 = 1u << 5,
    WSB_ALG_ES256 = 1u << 6,
    WSB_ALG_ES384 = 1u << 7,
};

struct wsb_key_conf {
    char *kid;    /* NULL when absent */
    char *file;   /* PEM file path, or NULL */
    char *secret; /* inline HMAC secret (after ${VAR} expansion), or NULL */
};

struct wsb_auth_conf {
    bool enabled;           /* false when the "auth" section is absent: anonymous clients */
    unsigned token_sources; /* enum wsb_token_source bits; default header|query|subprotocol */
    char *cookie_name;      /* for "cookie:NAME", else NULL */
    enum wsb_refusal refusal;
    unsigned algorithms; /* enum wsb_jwt_alg bits */
    struct wsb_key_conf *keys;
    size_t nkeys;
    char *jwks_file; /* or NULL */
    char *issuer;    /* or NULL: not checked */
    char *audience;  /* or NULL: not checked */
    int leeway_s;
    bool require_exp;
    char *permissions_claim; /* or NULL */
};

enum wsb_acl_when_op { WSB_WHEN_NONE, WSB_WHEN_HAS, WSB_WHEN_EQUALS };

struct wsb_acl_rule {
    enum wsb_acl_when_op when_op; /* NONE: rule always applies */
    char *when_claim;             /* claim name, e.g. "roles" */
    char *when_value;             /* HAS: array contains (or string equals); EQUALS: equals */
    char **subscribe;             /* patterns, may hold {sub} and {claim.NAME} */
    size_t nsubscribe;
    char **publish;
    size_t npublish;
    char **unfiltered; /* channel patterns read without their rule's `filter` (bypass) */
    size_t nunfiltered;
};

enum wsb_sb_policy { WSB_POLICY_DISCONNECT, WSB_POLICY_DROP_OLDEST };

struct wsb_limits {
    uint32_t max_connections;
    uint32_t max_connections_per_ip;
    uint32_t ipv6_prefix; /* IPv6 per-address limits key on this many leading bits */
    double handshake_rate_per_s, handshake_rate_burst;
    uint32_t handshake_timeout_ms;
    uint32_t ping_interval_ms;
    uint32_t pong_timeout_ms;
    uint64_t max_message_bytes;
    uint32_t message_timeout_ms; /* a message must be complete this long after it started */
    uint32_t max_subscriptions;
    uint32_t source_linger_ms;
    uint32_t max_inflight_publishes;
    double inbound_rate_per_s, inbound_rate_burst;   /* messages */
    double inbound_bytes_per_s, inbound_bytes_burst; /* bytes; 0 = unlimited */
    uint64_t send_soft_bytes;
    uint32_t send_soft_seconds;
    uint64_t send_hard_bytes;
    enum wsb_sb_policy send_policy;
};

enum wsb_delivery { WSB_DELIVERY_BROADCAST, WSB_DELIVERY_ACK };

/** One connector instance ("connectors": {"NAME": {...}}). */
struct wsb_connector_conf {
    char *name;
    char *type;   /* "kafka", "amqp", "memory" */
    json_t *conf; /* the whole object, validated by the connector's check_config; owned */
};

struct wsb_connector_ops;
struct wsb_filter_spec;

/** One channel rule. */
struct wsb_channel_rule {
    char *match;
    struct wsb_pattern *pattern;         /* compiled `match` */
    size_t connector;                    /* index into wsb_config.connectors */
    const struct wsb_connector_ops *ops; /* the connector's type; NULL when unknown */
    /* The broker members: every key of the rule the core does not know, as written (string
     * members are templates with {1}.. captures), validated by the connector's check_channel
     * and its `channel_keys`. An object, never NULL once loaded; owned. */
    json_t *fields;
    enum wsb_delivery delivery;
    uint32_t max_unacked;
    int policy;         /* enum wsb_sb_policy, or -1 to use limits.send_buffer.policy */
    bool allow_publish; /* "publish": true/false (default true) */
    int value_format;   /* enum wsb_format (connectors/connector.h) */
    int key_format;
    /* `filter` compiled (auth/filter.h; templates), or NULL: every record. Owned. */
    struct wsb_filter_spec *filter;
    /* wsbridge_filtered_records_total{rule=match} (process-wide, never freed), or NULL. */
    atomic_uint_fast64_t *filter_counter;
};

struct wsb_config {
    int refs;
    char *file;                               /* source path, or "<demo>" */
    char *listen;                             /* "host:port" */
    char *path;                               /* upgrade path, default "/ws" */
    char *admin_listen;                       /* "host:port" or NULL (admin disabled) */
    char *tls_cert, *tls_key, *tls_client_ca; /* NULL when no TLS */
    uint32_t tls_watch_ms;                    /* file check interval; 0 = SIGHUP only */
    bool permessage_deflate;
    bool sse_enabled; /* sse.enabled: GET sse_path streams events, POST /publish answers */
    char *sse_path;   /* sse.path, default "/sse" */
    uint32_t drain_timeout_ms;
    uint32_t workers; /* event-loop threads; 0 = one per core */
    char **allowed_origins;
    size_t nallowed_origins;
    struct wsb_auth_conf auth;
    struct wsb_acl_rule *acl;
    size_t nacl;
    struct wsb_connector_conf *connectors;
    size_t nconnectors;
    struct wsb_channel_rule *channels;
    size_t nchannels;
    struct wsb_limits limits;
    char *log_level; /* "debug" | "info" | "warn" | "error" */
    bool log_json;   /* "format": "json" (default) or "text" */
    bool demo;       /* started with --demo */
};

/** Called once per problem: `path` is the JSON path ("channels[2].connector"),
 * `msg` says what is wrong. Both borrowed for the call. */
typedef void (*wsb_config_err_cb)(void *ctx, const char *file, const char *path, const char *msg);

/** The HS256 secret of the demo config when WSBRIDGE_DEMO_SECRET is unset. It is public:
 * the core should warn when `auth.keys[0].secret` equals it. */
#define WSB_CONFIG_DEMO_PLACEHOLDER_SECRET "wsbridge-demo-placeholder-secret-not-for-production"

/** Loads and validates `file` (or, with file == NULL, only the defaults; `demo` sets the
 * demo defaults and the demo connector/channel). Every problem is reported through `err`;
 * returns NULL when there was at least one. The caller owns one reference.
 * Reads files: never call on an event loop. @locality main thread */
struct wsb_config *wsb_config_load(const char *file, bool demo, wsb_config_err_cb err, void *ctx);

/** Same, from a JSON text already in memory (tests, fuzzing). `name` labels errors. */
struct wsb_config *wsb_config_load_text(const char *name, const char *text, size_t len, bool demo,
                                        wsb_config_err_cb err, void *ctx);

/** `--check-config`: loads `file` and prints `ok`, or one `FILE: PATH: problem` line per
 * problem, to `out`. Returns 0 when valid, 1 otherwise. @locality main thread */
int wsb_config_check_file(const char *file, FILE *out);

/** For SIGHUP: reports through `err` (path, "changed; takes effect after a restart") each
 * setting that differs between `old` and `next` but is not reloadable (listen, path, admin,
 * workers, permessage_deflate, and any change to `connectors`). Returns how many; the core
 * may still swap in `next` and keep running with the old listeners/connectors. */
int wsb_config_restart_needed(const struct wsb_config *old, const struct wsb_config *next,
                              wsb_config_err_cb err, void *ctx);

struct wsb_config *wsb_config_ref(struct wsb_config *c);
void wsb_config_unref(struct wsb_config *c);

/** Expands ${VAR} and ${VAR:-default} in `in` using getenv. `${VAR:-d}` uses `d` when VAR is
 * unset or empty; `$$` is a literal `$`; any other `$` stays literal. Values are not expanded
 * again. Returns a malloc'd string, or NULL with a reason in `err` when a variable is unset and
 * has no default, or the syntax is broken. */
char *wsb_config_expand(const char *in, char *err, size_t errlen);

/** The result of routing a channel name. */
struct wsb_route {
    const struct wsb_channel_rule *rule; /* borrowed from the config */
    /* The rule's broker object with the captures expanded in every string member: the
     * rule's own (borrowed) when its pattern captures nothing, else `owned`. */
    const json_t *fields;
    json_t *owned;
    const char *forbidden; /* WSB_ROUTE_FORBIDDEN: the connector's reason (static) */
};

#define WSB_ROUTE_NONE (-1)      /* no rule matches, or an expansion does not fit */
#define WSB_ROUTE_FORBIDDEN (-2) /* the connector's check_route refuses the expansion */

/** An expanded broker member longer than this does not route (WSB_ROUTE_NONE). */
#define WSB_ROUTE_FIELD_MAX 255

/** Routes a channel: first matching rule wins. Returns 0 and fills `out` (release it with
 * wsb_config_route_cleanup); WSB_ROUTE_NONE when no rule matches or an expansion does not fit;
 * WSB_ROUTE_FORBIDDEN when the matching rule's connector refuses what the captures spell
 * (answer `forbidden` with out->forbidden). Only a 0 result needs the cleanup.
 * @locality any (the config is immutable) */
int wsb_config_route(const struct wsb_config *c, const char *channel, size_t len,
                     struct wsb_route *out);

/** Releases what a successful wsb_config_route allocated. */
void wsb_config_route_cleanup(struct wsb_route *r);

#endif
