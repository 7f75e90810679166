/* The configuration schema table and the reference documentation generated from it. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "config/schema.h"

#define C(f) offsetof(struct wsb_config, f)
#define K(f) offsetof(struct wsb_key_conf, f)
#define A(f) offsetof(struct wsb_acl_rule, f)
#define R(f) offsetof(struct wsb_channel_rule, f)
#define L(f) offsetof(struct wsb_config, limits.f)
#define U32MAX 4294967295.0
#define U64MAX 18446744073709551615.0

static const struct cfg_enum refusal_enum[] = {
    {"http", WSB_REFUSAL_HTTP}, {"close", WSB_REFUSAL_CLOSE}, {NULL, 0}};
static const struct cfg_enum policy_enum[] = {
    {"disconnect", WSB_POLICY_DISCONNECT}, {"drop_oldest", WSB_POLICY_DROP_OLDEST}, {NULL, 0}};
static const struct cfg_enum delivery_enum[] = {
    {"broadcast", WSB_DELIVERY_BROADCAST}, {"ack", WSB_DELIVERY_ACK}, {NULL, 0}};
/* enum wsb_format's values (connectors/connector.h) */
static const struct cfg_enum format_enum[] = {
    {"auto", 0}, {"avro", 1}, {"json", 2}, {"raw", 3}, {NULL, 0}};
static const struct cfg_enum level_enum[] = {
    {"debug", 0}, {"info", 1}, {"warn", 2}, {"error", 3}, {NULL, 0}};

/* Rows are ordered parent before child; docs print them in this order. */
const struct cfg_field wsb_cfg_fields[] = {
    {"listen", CT_STR, C(listen), .def = "\"0.0.0.0:8080\"", .flags = CF_LISTEN,
     .doc = "Address of the WebSocket listener, `host:port` or `[v6]:port`."},
    {"path", CT_STR, C(path), .def = "\"/ws\"", .doc = "HTTP path of the WebSocket upgrade."},
    {"workers", CT_U32, C(workers), .max = 1024, .def = "0",
     .doc = "Event-loop threads; 0 means one per CPU core."},
    {"admin", CT_OBJ, C(admin_listen), .flags = CF_NULLABLE,
     .doc = "Admin HTTP server (health, readiness, metrics); `null` disables it."},
    {"admin.listen", CT_STR, C(admin_listen), .def = "\"0.0.0.0:9090\"", .flags = CF_LISTEN,
     .doc = "Address of the admin listener."},
    {"tls", CT_OBJ, 0, .flags = CF_NULLABLE | CF_RELOAD,
     .doc = "TLS for the WebSocket listener; absent or `null` means plain TCP. `cert` and "
            "`key` are required together."},
    {"tls.cert", CT_STR, C(tls_cert), .flags = CF_NULLABLE | CF_RELOAD,
     .doc = "PEM certificate chain."},
    {"tls.key", CT_STR, C(tls_key), .flags = CF_NULLABLE | CF_RELOAD, .doc = "PEM private key."},
    {"tls.client_ca", CT_STR, C(tls_client_ca), .flags = CF_NULLABLE | CF_RELOAD,
     .doc = "PEM CA bundle; when set, clients must present a certificate (mTLS)."},
    {"tls.watch_interval_ms", CT_U32, C(tls_watch_ms), .max = 3600000, .def = "10000",
     .flags = CF_RELOAD,
     .doc = "How often the certificate, key and CA files are checked for a change; a change "
            "reloads the configuration as SIGHUP does. 0: only on SIGHUP."},
    {"permessage_deflate", CT_BOOL, C(permessage_deflate), .def = "true",
     .doc = "Offer permessage-deflate (RFC 7692)."},
    {"sse", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Server-Sent Events transport and HTTP publish on the main listener (docs/sse.md)."},
    {"sse.enabled", CT_BOOL, C(sse_enabled), .def = "true", .flags = CF_RELOAD,
     .doc = "Serve `GET <sse.path>` (an event stream) and `POST /publish`."},
    {"sse.path", CT_STR, C(sse_path), .def = "\"/sse\"", .flags = CF_RELOAD,
     .doc = "HTTP path of the event stream; must differ from `path`."},
    {"drain_timeout_ms", CT_U32, C(drain_timeout_ms), .max = 3600000, .def = "10000",
     .flags = CF_RELOAD, .doc = "On SIGTERM, how long to wait for clients and brokers."},
    {"allowed_origins", CT_STRARR, C(allowed_origins), C(nallowed_origins), .flags = CF_RELOAD,
     .doc = "Allowed `Origin` header values; `[\"*\"]` or absent allows any origin. A request "
            "without `Origin` (not a browser) is admitted. Required with a `cookie:` token "
            "source."},

    {"auth", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Token authentication. Absent: anonymous clients (auth disabled)."},
    {"auth.token_sources", CT_CUSTOM, 0, .def = "[\"header\", \"query\", \"subprotocol\"]",
     .custom = CC_TOKEN_SOURCES, .flags = CF_RELOAD,
     .doc = "Where tokens are read, in order: `header`, `query`, `subprotocol`, `cookie:NAME`."},
    {"auth.refusal", CT_ENUM, C(auth.refusal), .def = "\"http\"", .enums = refusal_enum,
     .flags = CF_RELOAD,
     .doc = "How a bad token is refused: `http` (401 before the upgrade) or `close` (upgrade, "
            "then close 4401)."},
    {"auth.jwt", CT_OBJ, 0, .flags = CF_REQUIRED | CF_RELOAD, .doc = "JWT verification."},
    {"auth.jwt.algorithms", CT_CUSTOM, 0, .def = "[\"RS256\", \"ES256\", \"HS256\"]",
     .custom = CC_ALGORITHMS, .flags = CF_RELOAD,
     .doc = "Accepted `alg` values: HS256/384/512, RS256/384/512, ES256/384. `none` is refused."},
    {"auth.jwt.keys", CT_OBJARR, C(auth.keys), C(auth.nkeys), sizeof(struct wsb_key_conf),
     .flags = CF_RELOAD,
     .doc = "Verification keys; each has exactly one of `file` or `secret`. At least one of "
            "`keys` or `jwks_file` is required."},
    {"auth.jwt.keys[].kid", CT_STR, K(kid), .flags = CF_RELOAD,
     .doc = "Key id matched against the token's `kid` header."},
    {"auth.jwt.keys[].file", CT_STR, K(file), .flags = CF_RELOAD,
     .doc = "PEM public key (RSA or EC)."},
    {"auth.jwt.keys[].secret", CT_STR, K(secret), .flags = CF_RELOAD,
     .doc = "Inline HMAC secret; use `${VAR}` to take it from the environment."},
    {"auth.jwt.jwks_file", CT_STR, C(auth.jwks_file), .flags = CF_RELOAD,
     .doc = "A JWKS document on disk."},
    {"auth.jwt.issuer", CT_STR, C(auth.issuer), .flags = CF_RELOAD,
     .doc = "Required `iss`; absent means not checked."},
    {"auth.jwt.audience", CT_STR, C(auth.audience), .flags = CF_RELOAD,
     .doc = "Required `aud`; absent means not checked."},
    {"auth.jwt.leeway_s", CT_INT, C(auth.leeway_s), .max = 3600, .def = "30", .flags = CF_RELOAD,
     .doc = "Clock skew allowed on `exp` / `nbf`, seconds."},
    {"auth.jwt.require_exp", CT_BOOL, C(auth.require_exp), .def = "true", .flags = CF_RELOAD,
     .doc = "Refuse tokens without `exp`."},
    {"auth.jwt.permissions_claim", CT_STR, C(auth.permissions_claim), .flags = CF_RELOAD,
     .doc = "Claim holding `{\"subscribe\": [...], \"publish\": [...]}` grants of the token."},

    {"acl", CT_OBJARR, C(acl), C(nacl), sizeof(struct wsb_acl_rule), .flags = CF_RELOAD,
     .doc = "Grant rules; access is the union of matching rules. Deny by default."},
    {"acl[].when", CT_CUSTOM, 0, .custom = CC_ACL_WHEN, .flags = CF_RELOAD,
     .doc = "`{\"claim\": NAME, \"has\": VALUE}` or `{\"claim\": NAME, \"equals\": VALUE}`; "
            "absent: the rule always applies."},
    {"acl[].subscribe", CT_STRARR, A(subscribe), A(nsubscribe), .flags = CF_RELOAD | CF_PATTERN,
     .doc = "Channel patterns; may use `{sub}` and `{claim.NAME}`."},
    {"acl[].publish", CT_STRARR, A(publish), A(npublish), .flags = CF_RELOAD | CF_PATTERN,
     .doc = "Channel patterns; may use `{sub}` and `{claim.NAME}`."},
    {"acl[].unfiltered", CT_STRARR, A(unfiltered), A(nunfiltered), .flags = CF_RELOAD | CF_PATTERN,
     .doc = "Channel patterns read without their channel rule's `filter` (e.g. admins); "
            "may use `{sub}` and `{claim.NAME}`. Also read from the permissions claim."},

    {"connectors", CT_CUSTOM, 0, .custom = CC_CONNECTORS,
     .doc = "Broker connections: `NAME: {\"type\": TYPE, ...}` with TYPE `kafka`, `amqp` or "
            "`memory`; the "
            "other keys are validated by the connector type."},

    {"channels", CT_OBJARR, C(channels), C(nchannels), sizeof(struct wsb_channel_rule),
     .flags = CF_RELOAD,
     .doc = "Channel rules; the first rule whose `match` matches wins. Every other key of a rule "
            "is a broker member of its connector's type (see docs/kafka.md and docs/amqp.md), "
            "checked by the connector; `{1}`.. in a string member insert captures."},
    {"channels[].match", CT_STR, R(match), .flags = CF_REQUIRED | CF_RELOAD,
     .doc = "Channel pattern (`*` one segment, trailing `**` one or more)."},
    {"channels[].connector", CT_CUSTOM, 0, .custom = CC_CHANNEL_CONNECTOR,
     .flags = CF_REQUIRED | CF_RELOAD, .doc = "Name of a key of `connectors`."},
    {"channels[].delivery", CT_ENUM, R(delivery), .def = "\"broadcast\"", .enums = delivery_enum,
     .flags = CF_RELOAD, .doc = "`broadcast` (fan-out) or `ack` (work queue, client acks)."},
    {"channels[].max_unacked", CT_U32, R(max_unacked), .min = 1, .max = 1000000, .def = "100",
     .flags = CF_RELOAD, .doc = "Ack delivery: unacked messages per subscription."},
    {"channels[].policy", CT_ENUM, R(policy), .enums = policy_enum, .flags = CF_RELOAD,
     .doc = "Send-buffer policy override for this channel; default `limits.send_buffer.policy`."},
    {"channels[].publish", CT_BOOL, R(allow_publish), .def = "true", .flags = CF_RELOAD,
     .doc = "Whether clients may publish to this channel (ACL permitting)."},
    {"channels[].value_format", CT_ENUM, R(value_format), .def = "\"auto\"", .enums = format_enum,
     .flags = CF_RELOAD,
     .doc = "Kafka record values: `auto` (decode schema-registry Avro when the connector has a "
            "`schema_registry` and the record is framed with a known id, pass anything else "
            "through), `avro` (must decode; a record that does not is skipped with a `gap`; "
            "publishes are encoded with the subject's latest schema), `json` (as is), `raw` "
            "(never taken as JSON). See docs/schema-registry.md."},
    {"channels[].filter", CT_CUSTOM, 0, .custom = CC_CHANNEL_FILTER, .flags = CF_RELOAD,
     .doc = "Per-record filter: `{\"key\": T}`, `{\"headers\": {\"NAME\": T}}` (conditions "
            "ANDed) or a list of such objects (ORed); T may use `{sub}`, `{claim.NAME}` and "
            "`{N}`. A missing or invalid value means no records, never all. Not with "
            "`delivery: ack`. See docs/filters.md."},
    {"channels[].key_format", CT_ENUM, R(key_format), .def = "\"auto\"", .enums = format_enum,
     .flags = CF_RELOAD,
     .doc = "Kafka record keys, as `value_format` (registry subject `NAME-key` rather than "
            "`NAME-value`)."},

    {"limits", CT_OBJ, 0, .flags = CF_RELOAD, .doc = "Resource limits."},
    {"limits.max_connections", CT_U32, L(max_connections), .min = 1, .max = U32MAX, .def = "100000",
     .flags = CF_RELOAD,
     .doc = "Open client connections, counted from accept (before the request head)."},
    {"limits.max_connections_per_ip", CT_U32, L(max_connections_per_ip), .min = 1, .max = U32MAX,
     .def = "1000", .flags = CF_RELOAD,
     .doc = "Open connections per client IP, counted from accept."},
    {"limits.ipv6_prefix", CT_U32, L(ipv6_prefix), .min = 1, .max = 128, .def = "64",
     .flags = CF_RELOAD,
     .doc = "IPv6 clients are limited per prefix of this length (a /64 is usually one "
            "subscriber); IPv4 per address."},
    {"limits.handshake_rate_per_ip", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Token bucket for upgrades per client IP."},
    {"limits.handshake_rate_per_ip.per_second", CT_DBL, L(handshake_rate_per_s), .max = 1e9,
     .def = "20", .flags = CF_RELOAD, .doc = "Refill rate; 0 = unlimited."},
    {"limits.handshake_rate_per_ip.burst", CT_DBL, L(handshake_rate_burst), .max = 1e9, .def = "40",
     .flags = CF_RELOAD, .doc = "Bucket size."},
    {"limits.handshake_timeout_ms", CT_U32, L(handshake_timeout_ms), .min = 1, .max = 600000,
     .def = "5000", .flags = CF_RELOAD, .doc = "Time allowed for the HTTP upgrade (and TLS)."},
    {"limits.ping_interval_ms", CT_U32, L(ping_interval_ms), .max = 3600000, .def = "25000",
     .flags = CF_RELOAD, .doc = "Server pings; 0 disables."},
    {"limits.pong_timeout_ms", CT_U32, L(pong_timeout_ms), .min = 1, .max = 3600000, .def = "10000",
     .flags = CF_RELOAD, .doc = "Close when no pong within this time."},
    {"limits.max_message_bytes", CT_U64, L(max_message_bytes), .min = 125, .max = 67108864,
     .def = "1048576", .flags = CF_RELOAD,
     .doc = "Largest inbound message (after reassembly and inflation), 125 B .. 64 MiB."},
    {"limits.message_timeout_ms", CT_U32, L(message_timeout_ms), .min = 100, .max = 3600000,
     .def = "10000", .flags = CF_RELOAD,
     .doc = "A message (fragmented, compressed or one slow frame) not complete this long after "
            "its first byte closes the connection with 1008; checked twice a second."},
    {"limits.max_subscriptions", CT_U32, L(max_subscriptions), .min = 1, .max = 1000000,
     .def = "100", .flags = CF_RELOAD, .doc = "Subscriptions per connection."},
    {"limits.source_linger_ms", CT_U32, L(source_linger_ms), .max = 3600000, .def = "5000",
     .flags = CF_RELOAD,
     .doc = "How long a shared broadcast source keeps reading after its last subscriber left, so "
            "a reconnect re-subscribes without a cold start; 0 stops it at once."},
    {"limits.max_inflight_publishes", CT_U32, L(max_inflight_publishes), .min = 1, .max = 1000000,
     .def = "64", .flags = CF_RELOAD, .doc = "Publishes awaiting a broker answer per connection."},
    {"limits.inbound_rate", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Token bucket for client messages per connection."},
    {"limits.inbound_rate.per_second", CT_DBL, L(inbound_rate_per_s), .max = 1e9, .def = "50",
     .flags = CF_RELOAD, .doc = "Messages per second; 0 = unlimited."},
    {"limits.inbound_rate.burst", CT_DBL, L(inbound_rate_burst), .max = 1e9, .def = "100",
     .flags = CF_RELOAD, .doc = "Bucket size, messages."},
    {"limits.inbound_bytes", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Token bucket for client bytes per connection."},
    {"limits.inbound_bytes.per_second", CT_DBL, L(inbound_bytes_per_s), .max = 1e15, .def = "0",
     .flags = CF_RELOAD, .doc = "Bytes per second; 0 = unlimited."},
    {"limits.inbound_bytes.burst", CT_DBL, L(inbound_bytes_burst), .max = 1e15, .def = "0",
     .flags = CF_RELOAD, .doc = "Bucket size, bytes."},
    {"limits.send_buffer", CT_OBJ, 0, .flags = CF_RELOAD,
     .doc = "Per-client output buffer limits (slow consumers)."},
    {"limits.send_buffer.soft_bytes", CT_U64, L(send_soft_bytes), .min = 1, .max = U64MAX,
     .def = "1048576", .flags = CF_RELOAD,
     .doc = "Soft limit; exceeded for `soft_seconds` triggers the policy. <= `hard_bytes`."},
    {"limits.send_buffer.soft_seconds", CT_U32, L(send_soft_seconds), .max = 86400, .def = "10",
     .flags = CF_RELOAD, .doc = "How long the soft limit may be exceeded."},
    {"limits.send_buffer.hard_bytes", CT_U64, L(send_hard_bytes), .min = 1, .max = U64MAX,
     .def = "8388608", .flags = CF_RELOAD, .doc = "Hard limit; exceeding it triggers the policy."},
    {"limits.send_buffer.policy", CT_ENUM, L(send_policy), .def = "\"disconnect\"",
     .enums = policy_enum, .flags = CF_RELOAD,
     .doc = "`disconnect` (close 4408) or `drop_oldest` (drop the oldest queued messages)."},

    {"log", CT_OBJ, 0, .flags = CF_RELOAD, .doc = "Logging."},
    {"log.level", CT_STR, C(log_level), .def = "\"info\"", .enums = level_enum, .flags = CF_RELOAD,
     .doc = "`debug`, `info`, `warn` or `error`."},
    {"log.format", CT_CUSTOM, 0, .def = "\"json\"", .custom = CC_LOG_FORMAT, .flags = CF_RELOAD,
     .doc = "`json` (one object per line) or `text`."},
};

const size_t wsb_cfg_nfields = sizeof(wsb_cfg_fields) / sizeof(wsb_cfg_fields[0]);

static const char *type_name(const struct cfg_field *f)
{
    switch (f->type) {
    case CT_OBJ: return "object";
    case CT_STR: return "string";
    case CT_BOOL: return "boolean";
    case CT_U32:
    case CT_U64:
    case CT_INT: return "integer";
    case CT_DBL: return "number";
    case CT_ENUM: return "string (enum)";
    case CT_STRARR: return "array of strings";
    case CT_OBJARR: return "array of objects";
    case CT_CUSTOM: break;
    }
    switch (f->custom) {
    case CC_TOKEN_SOURCES:
    case CC_ALGORITHMS: return "array of strings";
    case CC_ACL_WHEN:
    case CC_CONNECTORS: return "object";
    case CC_CHANNEL_FILTER: return "object or array of objects";
    default: return "string";
    }
}

void wsb_config_write_docs(FILE *out)
{
    fputs("| Key | Type | Default | Reload | Description |\n", out);
    fputs("|-----|------|---------|--------|-------------|\n", out);
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        fprintf(out, "| `%s` | %s", f->path, type_name(f));
        if (f->flags & CF_NULLABLE)
            fputs(" or null", out);
        if ((f->type == CT_U32 || f->type == CT_U64 || f->type == CT_INT || f->type == CT_DBL) &&
            f->max > 0) {
            if (f->max >= 1e15)
                fprintf(out, ", >= %.0f", f->min);
            else
                fprintf(out, ", %.0f..%.0f", f->min, f->max);
        }
        if (f->enums) {
            fputs(": ", out);
            for (const struct cfg_enum *e = f->enums; e->name; e++)
                fprintf(out, "%s`%s`", e == f->enums ? "" : ", ", e->name);
        }
        fprintf(out, " | %s%s%s | %s | %s%s |\n", f->def ? "`" : "", f->def ? f->def : "-",
                f->def ? "`" : "", (f->flags & CF_RELOAD) ? "yes" : "no",
                (f->flags & CF_REQUIRED) ? "**Required.** " : "", f->doc);
    }
}
