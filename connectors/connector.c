/* The connector registry and the shared broker-message allocation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/connector.h"

#include "connectors/amqp.h"
#include "connectors/kafka.h"
#include "connectors/memory.h"

/* The only list of connectors that exist. */
static const struct wsb_connector_ops *const registry[] = {
    &wsb_amqp_ops,
    &wsb_kafka_ops,
    &wsb_memory_ops,
};

/* Adds `n` to `*total`; false on overflow. */
static bool add_size(size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total)
        return false;
    *total += n;
    return true;
}

struct wsb_msg *wsb_msg_new(uint64_t source_id, int32_t partition, int64_t offset,
                            int64_t timestamp_ms, const void *key, size_t key_len,
                            const void *payload, size_t payload_len,
                            const struct wsb_header *headers, size_t nheaders)
{
    /* Layout: struct | header array | key | payload | (name NUL value)... */
    size_t total = sizeof(struct wsb_msg);
    if (nheaders > (SIZE_MAX - total) / sizeof(struct wsb_header))
        return NULL;
    total += nheaders * sizeof(struct wsb_header);
    if (key && !add_size(&total, key_len))
        return NULL;
    if (!add_size(&total, payload_len) || !add_size(&total, 1))
        return NULL;
    for (size_t i = 0; i < nheaders; i++) {
        const char *name = headers[i].name ? headers[i].name : "";
        if (!add_size(&total, strlen(name) + 1) || !add_size(&total, headers[i].value_len))
            return NULL;
    }

    struct wsb_msg *m = malloc(total);
    if (!m)
        return NULL;
    struct wsb_header *hdrs = (struct wsb_header *)(m + 1);
    uint8_t *p = (uint8_t *)(hdrs + nheaders);

    atomic_init(&m->refs, 1);
    m->flags = 0;
    m->lost = 0;
    m->source_id = source_id;
    m->partition = partition;
    m->offset = offset;
    m->timestamp_ms = timestamp_ms;
    m->ack_token = 0;
    m->shared = NULL;
    m->key = NULL;
    m->key_len = 0;
    if (key) {
        if (key_len)
            memcpy(p, key, key_len);
        m->key = p;
        m->key_len = key_len;
        p += key_len;
    }
    if (payload_len)
        memcpy(p, payload, payload_len);
    m->payload = p;
    m->payload_len = payload_len;
    p += payload_len;
    *p++ = 0; /* a NUL after the payload is free and handy for text payloads */

    for (size_t i = 0; i < nheaders; i++) {
        const char *name = headers[i].name ? headers[i].name : "";
        size_t nlen = strlen(name) + 1;
        memcpy(p, name, nlen);
        hdrs[i].name = (const char *)p;
        p += nlen;
        if (headers[i].value_len)
            memcpy(p, headers[i].value, headers[i].value_len);
        hdrs[i].value = headers[i].value ? p : NULL;
        hdrs[i].value_len = headers[i].value_len;
        p += headers[i].value_len;
    }
    m->nheaders = nheaders;
    m->headers = nheaders ? hdrs : NULL;
    return m;
}

struct wsb_msg *wsb_msg_share(struct wsb_msg *m, uint64_t source_id)
{
    struct wsb_msg *v = malloc(sizeof(*v));
    if (!v)
        return NULL;
    *v = (struct wsb_msg){.flags = m->flags,
                          .source_id = source_id,
                          .partition = m->partition,
                          .lost = m->lost,
                          .offset = m->offset,
                          .timestamp_ms = m->timestamp_ms,
                          .key = m->key,
                          .key_len = m->key_len,
                          .payload = m->payload,
                          .payload_len = m->payload_len,
                          .nheaders = m->nheaders,
                          .headers = m->headers,
                          .shared = wsb_msg_ref(m)};
    atomic_init(&v->refs, 1);
    return v;
}

struct wsb_msg *wsb_msg_ref(struct wsb_msg *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void wsb_msg_unref(struct wsb_msg *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
        struct wsb_msg *shared = m->shared;
        free(m);
        wsb_msg_unref(shared);
    }
}

const struct wsb_connector_ops *wsb_connector_find(const char *type)
{
    if (!type)
        return NULL;
    for (size_t i = 0; i < WSB_ARRAY_LEN(registry); i++)
        if (strcmp(registry[i]->type, type) == 0)
            return registry[i];
    return NULL;
}

bool wsb_connector_any_channel_key(const char *key)
{
    for (size_t i = 0; i < WSB_ARRAY_LEN(registry); i++)
        for (const char *const *k = registry[i]->channel_keys; k && *k; k++)
            if (strcmp(*k, key) == 0)
                return true;
    return false;
}

enum wsb_err wsb_connector_new(const char *type, const char *name, const json_t *conf,
                               const struct wsb_sink *sink, struct wsb_connector **out, char *err,
                               size_t errlen)
{
    enum wsb_err rc;
    *out = NULL;
    const struct wsb_connector_ops *ops = wsb_connector_find(type);
    if (!ops) {
        snprintf(err, errlen, "unknown connector type \"%s\"", type ? type : "");
        return WSB_ERR_NOT_FOUND;
    }
    struct wsb_connector *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    c->ops = ops;
    snprintf(c->name, sizeof(c->name), "%s", name ? name : type);
    rc = ops->create(c->name, conf, sink, &c->impl, err, errlen);
    if (rc != WSB_OK)
        goto fail;
    *out = c;
    return WSB_OK;

fail:
    free(c);
    return rc;
}

void wsb_connector_free(struct wsb_connector *c)
{
    if (!c)
        return;
    if (c->impl)
        c->ops->destroy(c->impl);
    free(c);
}

int wsb_connector_check_topic_channel(const json_t *channel, const char *type,
                                      const char *const *optional,
                                      void (*report)(void *ctx, const char *path, const char *msg),
                                      void *ctx)
{
    static const char *const amqp_only[] = {"exchange", "queue", "binding_key", "routing_key"};
    char path[64], msg[96];
    int problems = 0;
    json_t *topic = json_object_get(channel, "topic");
    if (!topic) {
        snprintf(msg, sizeof(msg), "required for a %s channel", type);
        report(ctx, ".topic", msg);
        problems++;
    } else if (!json_is_string(topic) || json_string_length(topic) == 0) {
        report(ctx, ".topic", "must be a non-empty string");
        problems++;
    }
    for (size_t i = 0; i < WSB_ARRAY_LEN(amqp_only); i++) {
        if (json_object_get(channel, amqp_only[i])) {
            snprintf(path, sizeof(path), ".%s", amqp_only[i]);
            snprintf(msg, sizeof(msg), "not used by a %s channel (use \"topic\")", type);
            report(ctx, path, msg);
            problems++;
        }
    }
    for (; optional && *optional; optional++) {
        json_t *v = json_object_get(channel, *optional);
        if (v && (!json_is_string(v) || json_string_length(v) == 0)) {
            snprintf(path, sizeof(path), ".%s", *optional);
            report(ctx, path, "must be a non-empty string");
            problems++;
        }
    }
    /* Kafka's internal topics (__consumer_offsets, ...) are never a channel's. */
    static const char *const named[] = {"topic", "dead_letter_topic"};
    for (size_t i = 0; i < WSB_ARRAY_LEN(named); i++) {
        if (wsb_connector_topic_internal(json_string_value(json_object_get(channel, named[i])))) {
            snprintf(path, sizeof(path), ".%s", named[i]);
            report(ctx, path, "topics beginning with \"__\" are internal and never reachable");
            problems++;
        }
    }
    return problems;
}

bool wsb_connector_topic_internal(const char *topic)
{
    return topic != NULL && topic[0] == '_' && topic[1] == '_';
}

int wsb_connector_check_int(const json_t *v, json_int_t lo, json_int_t hi, const char *path,
                            void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    if (json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi)
        return 0;
    char msg[96];
    snprintf(msg, sizeof(msg),
             "must be an integer from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT, lo, hi);
    report(ctx, path, msg);
    return 1;
}

const char *wsb_connector_field(const json_t *fields, const char *key)
{
    const char *v = json_string_value(json_object_get(fields, key));
    return v ? v : "";
}

const char *wsb_connector_check_topic_route(const json_t *fields)
{
    /* A `**` capture can spell any topic: internal ones stay out of reach. */
    if (wsb_connector_topic_internal(wsb_connector_field(fields, "topic")) ||
        wsb_connector_topic_internal(wsb_connector_field(fields, "dead_letter_topic")))
        return "the channel maps to an internal topic";
    return NULL;
}

int wsb_format_parse(const char *name)
{
    static const char *const names[] = {"auto", "avro", "json", "raw"};
    for (size_t i = 0; name && i < WSB_ARRAY_LEN(names); i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

struct wsb_msg *wsb_msg_lost(uint64_t source_id, int32_t partition, int64_t next_offset,
                             uint64_t *left)
{
    struct wsb_msg *m =
        wsb_msg_new(source_id, partition, next_offset - 1, -1, NULL, 0, NULL, 0, NULL, 0);
    if (!m)
        return NULL;
    m->flags |= WSB_MSG_LOST;
    m->lost = *left > UINT32_MAX ? UINT32_MAX : (uint32_t)*left;
    *left -= m->lost;
    return m;
}
