/* The one interface between the core and a broker. The core knows no broker; a connector
 * knows no WebSocket. A connector owns its broker client and its thread(s); it talks to the
 * core only through the sink it is given at creation, and the core talks to it only through
 * the non-blocking calls below (they enqueue commands for the connector's thread). */
#ifndef WSB_CONNECTORS_CONNECTOR_H
#define WSB_CONNECTORS_CONNECTOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/err.h"

/* ---- Broker messages ------------------------------------------------------------------ */

struct wsb_header {
    const char *name; /* NUL-terminated */
    const uint8_t *value;
    size_t value_len;
};

/* wsb_msg.flags: how the core renders a message (set by the connector before handing it on). */
enum {
    WSB_MSG_DATA_RAW = 1u << 0, /* payload is never taken as JSON: a string, else base64 */
    WSB_MSG_KEY_JSON = 1u << 1, /* key is JSON text (a decoded key): rendered as is */
    WSB_MSG_SKIPPED = 1u << 2,  /* no message: a record of the source was skipped (it could
                                   not be decoded); subscribers get a `gap` for it, and the
                                   partition's position moves past `offset` */
    WSB_MSG_LOST = 1u << 3,     /* no message: `lost` records of the partition up to `offset`
                                   were lost before the connector read them (the broker no
                                   longer had them: a consumer offset reset past them);
                                   subscribers get a `gap` of that many, and the position
                                   moves past `offset` */
};

/** One broker message, immutable after creation, shared by reference between threads.
 * Created by a connector with wsb_msg_new (one allocation holding every byte). */
struct wsb_msg {
    atomic_int refs;
    uint32_t flags;       /* WSB_MSG_*, 0 by default */
    uint64_t source_id;   /* the source this message belongs to */
    int32_t partition;    /* Kafka partition, -1 when none */
    uint32_t lost;        /* WSB_MSG_LOST: how many records (in what was padding) */
    int64_t offset;       /* Kafka offset, -1 when none */
    int64_t timestamp_ms; /* broker timestamp, -1 when unknown */
    uint64_t ack_token;   /* non-zero on `delivery: ack` sources: pass back to ack() */
    const uint8_t *key;   /* NULL when the message has no key */
    size_t key_len;
    const uint8_t *payload;
    size_t payload_len;
    size_t nheaders;
    const struct wsb_header *headers;
    struct wsb_msg *shared; /* wsb_msg_share: the message whose bytes these are (a reference) */
};

/** Allocates a message and copies key, payload and headers into it. refs = 1.
 * Returns NULL on allocation failure. @locality any */
struct wsb_msg *wsb_msg_new(uint64_t source_id, int32_t partition, int64_t offset,
                            int64_t timestamp_ms, const void *key, size_t key_len,
                            const void *payload, size_t payload_len,
                            const struct wsb_header *headers, size_t nheaders);
/** A message of `m`'s (same partition, offset, timestamp, flags) for `source_id`, whose key,
 * payload and headers are `m`'s bytes, held by a reference to `m` rather than copied: one
 * stored message handed to several sources. refs = 1, ack_token 0. NULL on allocation
 * failure. @locality any */
struct wsb_msg *wsb_msg_share(struct wsb_msg *m, uint64_t source_id);
/** A WSB_MSG_LOST marker for `source_id`: records of `partition` before `next_offset` that
 * the broker no longer has. It carries as many of *left as fit its count (at most
 * UINT32_MAX) and takes them off *left; call again while *left > 0. NULL on allocation
 * failure (*left unchanged). @locality any */
struct wsb_msg *wsb_msg_lost(uint64_t source_id, int32_t partition, int64_t next_offset,
                             uint64_t *left);
struct wsb_msg *wsb_msg_ref(struct wsb_msg *m);
void wsb_msg_unref(struct wsb_msg *m);

/* ---- Sources: what a channel maps to ------------------------------------------------- */

enum wsb_from_kind { WSB_FROM_LATEST, WSB_FROM_EARLIEST, WSB_FROM_TIMESTAMP, WSB_FROM_OFFSETS };

/** How a channel's record values and keys are read and written (`value_format`,
 * `key_format`). AUTO decodes registry-framed Avro when the connector has a schema registry
 * and passes anything else through; AVRO must decode (a record that does not is skipped with
 * a gap) and publishes encode with the subject's latest schema; JSON is the payload as is;
 * RAW never takes the payload as JSON (a string, else base64). */
enum wsb_format { WSB_FORMAT_AUTO = 0, WSB_FORMAT_AVRO, WSB_FORMAT_JSON, WSB_FORMAT_RAW };

/** "auto", "avro", "json", "raw" -> the format; -1 when none of them. @locality any */
int wsb_format_parse(const char *name);

struct wsb_partition_offset {
    int32_t partition;
    int64_t offset; /* next offset to deliver */
};

/** A source to read. Borrowed for the duration of the call; the connector copies what it
 * keeps.
 *
 * The core names no broker field: `fields` holds the channel rule's broker members (every key
 * the connector listed in `channel_keys`), `{n}` captures expanded, and the connector reads
 * them with wsb_connector_field (an absent member reads as ""). */
struct wsb_source {
    const json_t *fields; /* borrowed; NULL reads as no member at all */
    bool ack;             /* delivery: ack */
    uint32_t max_unacked; /* ack sources: at most this many unacked deliveries */
    enum wsb_from_kind from;
    int64_t from_timestamp_ms;
    const struct wsb_partition_offset *from_offsets;
    size_t nfrom_offsets;
    enum wsb_format value_format;
    enum wsb_format key_format;
};

/** A message to publish. Borrowed for the call. As for wsb_source, the broker members
 * (a topic; an exchange and routing key) are read from `fields` with wsb_connector_field. */
struct wsb_publish {
    const json_t *fields; /* the channel rule's broker members, expanded; borrowed */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *payload;
    size_t payload_len;
    const struct wsb_header *headers;
    size_t nheaders;
    enum wsb_format value_format; /* AVRO: the payload (JSON text) is encoded by the connector */
    enum wsb_format key_format;
};

/** A publish_done message beginning with this prefix refuses the client's data (the client
 * gets `invalid_request` with the rest of the message) rather than reporting a broker
 * failure (`publish_failed`). */
#define WSB_PUBLISH_INVALID_PREFIX "invalid_request: "

enum wsb_ack_kind { WSB_ACK, WSB_NACK_REQUEUE, WSB_NACK_DROP };

/** A connector-specific figure for /metrics (one series per connector, labelled with the
 * connector's name only: aggregated, never per client). Strings are static. */
struct wsb_connector_stat {
    const char *name; /* a metric family name, "wsbridge_..." */
    const char *type; /* "counter" or "gauge" */
    const char *help;
    double value;
};
#define WSB_CONNECTOR_MAX_STATS 16

/* ---- The sink: how a connector hands events to the core ------------------------------ */

/** Implemented by the core (the mailboxes). Every callback may be called from any connector
 * thread, never blocks for long and never calls back into the connector.
 * @locality connector thread */
struct wsb_sink {
    void *ctx;
    /** A message for `m->source_id`. Takes ownership of the caller's reference. */
    void (*message)(void *ctx, struct wsb_msg *m);
    /** The same, but the core may hold the message until `flush` is called on the same
     * thread: a connector that hands over messages in bursts calls this for each and `flush`
     * once at the end of the burst (before any other sink call), so the event loops are woken
     * once per burst rather than once per message. */
    void (*message_held)(void *ctx, struct wsb_msg *m);
    /** Hands over every message this thread gave to `message_held`. */
    void (*flush)(void *ctx);
    /** Optional (may be NULL): asked before building the record at (`partition`, offset
     * `next` - 1) of `source_id`. True: nobody reads the source now; the core took the
     * position `next` and the connector drops the record without building a message (a
     * shared source lingering with no subscriber). False: build and hand it over as usual.
     * Ask only for records handed over in order right after (not ones a format stage may
     * still hold). */
    bool (*skip)(void *ctx, uint64_t source_id, int32_t partition, int64_t next);
    /** The source is reading. `positions` is a JSON object of partition -> next offset
     * at which delivery starts ({"0": 12, "1": 40}) or NULL when the broker has none. */
    void (*source_started)(void *ctx, uint64_t source_id, const char *positions);
    /** The source could not start or stopped for good. `code` is a wire error code
     * ("unavailable", "unknown_channel", "unsupported"). */
    void (*source_failed)(void *ctx, uint64_t source_id, const char *code, const char *message);
    /** A publish finished: ok, or failed with a reason. */
    void (*publish_done)(void *ctx, uint64_t cookie, bool ok, const char *message);
    /** The connector's readiness changed. `reason` is NULL when up. */
    void (*state)(void *ctx, const char *connector, bool up, const char *reason);
};

/* ---- The vtable ---------------------------------------------------------------------- */

/** Records rendered by a connector's format stage, and its schema registry requests. */
struct wsb_format_stats {
    uint64_t decoded;        /* decoded from Avro */
    uint64_t undecodable;    /* skipped: not decodable under value_format/key_format avro */
    uint64_t passed_unknown; /* auto: framed with an id the registry does not know, passed */
    uint64_t registry_fetches;
};

struct wsb_connector;

/** wsb_connector_ops.caps: what the core may ask of a connector's channels. The core answers
 * `unsupported` itself for what a connector does not declare. */
enum {
    WSB_CAP_FROM_POSITION = 1u << 0, /* subscribe `from` earliest, a timestamp or offsets */
    WSB_CAP_ACK = 1u << 1,           /* channels with `delivery: ack` */
    WSB_CAP_PUBLISH = 1u << 2,       /* publish */
};

struct wsb_connector_ops {
    const char *type; /* "kafka", "amqp", "memory" */
    unsigned caps;    /* WSB_CAP_* */
    /** The broker members a channel rule of this connector may have (NULL-terminated). The
     * core keeps them, as written, in the rule's broker object; any other key the core does
     * not know is an unknown key. Each string member may use `{n}` captures. */
    const char *const *channel_keys;
    /** Optional: the members among channel_keys that name what a source reads (NULL-terminated).
     * Two shared sources are one when these match (with the connector, delivery and formats);
     * members not listed (a publish routing key, a dead-letter topic) do not split a source.
     * NULL: every member counts. */
    const char *const *source_keys;

    /** Validates the connector's config object strictly (unknown keys are errors). Reports
     * each problem with `report(ctx, path_suffix, msg)`, path_suffix like ".brokers".
     * Returns the number of problems. @locality any */
    int (*check_config)(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx);

    /** Validates a channel rule's broker fields for this connector type (e.g. kafka needs
     * "topic"). `rule` is a JSON object of the channel. Same reporting as check_config. */
    int (*check_channel)(const json_t *channel,
                         void (*report)(void *ctx, const char *path, const char *msg), void *ctx);
    /** Optional. A routed channel's broker object (captures expanded) that must never be
     * reached (e.g. a Kafka internal topic spelled by a `**` capture): returns the reason, a
     * static string; NULL when the route is fine. The client gets `forbidden`.
     * @locality any */
    const char *(*check_route)(const json_t *fields);

    /** Creates the connector (no thread yet, no network). */
    enum wsb_err (*create)(const char *name, const json_t *conf, const struct wsb_sink *sink,
                           void **impl, char *err, size_t errlen);
    /** Starts its thread(s); connecting happens there. */
    enum wsb_err (*start)(void *impl);
    /** Flushes pending publishes, acks and commits for up to timeout_ms, then stops and joins
     * its threads. After it returns, the sink is never called again. */
    void (*stop)(void *impl, uint32_t timeout_ms);
    void (*destroy)(void *impl);

    /** Starts reading `src` for `source_id` (non-blocking). Answers come through the sink:
     * source_started or source_failed, then messages. */
    enum wsb_err (*subscribe)(void *impl, uint64_t source_id, const struct wsb_source *src);
    /** Stops reading `source_id`; unacked deliveries go back to the broker. Non-blocking. */
    void (*unsubscribe)(void *impl, uint64_t source_id);
    /** Publishes (non-blocking); the result comes through sink->publish_done(cookie). */
    enum wsb_err (*publish)(void *impl, const struct wsb_publish *p, uint64_t cookie);
    /** Acks or nacks a delivery of an ack source (non-blocking). */
    void (*ack)(void *impl, uint64_t source_id, uint64_t ack_token, enum wsb_ack_kind kind);
    /** True when connected and usable; otherwise writes a reason. @locality any */
    bool (*ready)(void *impl, char *reason, size_t reasonlen);
    /** Messages received from the broker so far. @locality any */
    uint64_t (*messages_in)(void *impl);
    /** Optional: record-format counters (value_format / key_format, docs/schema-registry.md).
     * False when the connector has none. @locality any */
    bool (*format_stats)(void *impl, struct wsb_format_stats *out);
    /** Optional (NULL: none): writes up to `max` figures of its own; returns how many.
     * @locality any */
    size_t (*stats)(void *impl, struct wsb_connector_stat *out, size_t max);
};

/** A connector instance: the vtable and its state. */
struct wsb_connector {
    const struct wsb_connector_ops *ops;
    void *impl;
    char name[64];
};

/** Shared check_channel for connectors whose channels name a "topic": "topic" is a required
 * non-empty string, the AMQP fields (exchange, queue, binding_key, routing_key) are refused,
 * and each name in the NULL-terminated `optional` list must be a non-empty string when
 * present. A literal "topic" or "dead_letter_topic" that is internal (below) is refused.
 * `type` names the connector in messages. Returns the number of problems. */
int wsb_connector_check_topic_channel(const json_t *channel, const char *type,
                                      const char *const *optional,
                                      void (*report)(void *ctx, const char *path, const char *msg),
                                      void *ctx);

/** A config check the connectors share: unless `v` is an integer from `lo` to `hi`, reports
 * `path` "must be an integer from LO to HI". Returns the number of problems (0 or 1).
 * @locality any */
int wsb_connector_check_int(const json_t *v, json_int_t lo, json_int_t hi, const char *path,
                            void (*report)(void *ctx, const char *path, const char *msg),
                            void *ctx);

/** True for a topic name a channel must never reach: Kafka's internal topics
 * (`__consumer_offsets`, `__transaction_state`, ...) all begin with "__". @locality any */
bool wsb_connector_topic_internal(const char *topic);

/** check_route of the topic connectors: "topic" or "dead_letter_topic" internal. */
const char *wsb_connector_check_topic_route(const json_t *fields);

/** The string member `key` of a broker object (wsb_source.fields, wsb_publish.fields); ""
 * when absent or not a string, or when `fields` is NULL. Valid as long as `fields`.
 * @locality any */
const char *wsb_connector_field(const json_t *fields, const char *key);

/** True when some registered connector type lists `key` in its channel_keys (a rule that
 * names no connector is checked against all of them). @locality any */
bool wsb_connector_any_channel_key(const char *key);

/** The registry: the only place that lists which connectors exist. NULL when unknown. */
const struct wsb_connector_ops *wsb_connector_find(const char *type);

/** Creates a connector instance of `type`. The caller owns the result. */
enum wsb_err wsb_connector_new(const char *type, const char *name, const json_t *conf,
                               const struct wsb_sink *sink, struct wsb_connector **out, char *err,
                               size_t errlen);
void wsb_connector_free(struct wsb_connector *c);

static inline enum wsb_err wsb_connector_start(struct wsb_connector *c)
{
    return c->ops->start(c->impl);
}
static inline void wsb_connector_stop(struct wsb_connector *c, uint32_t timeout_ms)
{
    c->ops->stop(c->impl, timeout_ms);
}
static inline enum wsb_err wsb_connector_subscribe(struct wsb_connector *c, uint64_t source_id,
                                                   const struct wsb_source *src)
{
    return c->ops->subscribe(c->impl, source_id, src);
}
static inline void wsb_connector_unsubscribe(struct wsb_connector *c, uint64_t source_id)
{
    c->ops->unsubscribe(c->impl, source_id);
}
static inline enum wsb_err wsb_connector_publish(struct wsb_connector *c,
                                                 const struct wsb_publish *p, uint64_t cookie)
{
    return c->ops->publish(c->impl, p, cookie);
}
static inline void wsb_connector_ack(struct wsb_connector *c, uint64_t source_id,
                                     uint64_t ack_token, enum wsb_ack_kind kind)
{
    if (c->ops->ack)
        c->ops->ack(c->impl, source_id, ack_token, kind);
}
static inline bool wsb_connector_ready(struct wsb_connector *c, char *reason, size_t len)
{
    return c->ops->ready(c->impl, reason, len);
}
static inline uint64_t wsb_connector_messages_in(struct wsb_connector *c)
{
    return c->ops->messages_in(c->impl);
}
static inline bool wsb_connector_format_stats(struct wsb_connector *c, struct wsb_format_stats *out)
{
    return c->ops->format_stats && c->ops->format_stats(c->impl, out);
}
static inline size_t wsb_connector_stats(struct wsb_connector *c, struct wsb_connector_stat *out,
                                         size_t max)
{
    return c->ops->stats ? c->ops->stats(c->impl, out, max) : 0;
}

#endif
