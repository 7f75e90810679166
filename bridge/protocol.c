/* The wsbridge.v1 application protocol: request parser and server message encoders. */
#include "bridge/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/filter.h"
#include "bridge/ws/ws_utf8.h"
#include "util/form.h"
#include "util/json_text.h"
#include "util/pattern.h"

#define ID_STR_MAX 64 /* bytes of a string id before encoding */
#define MAX_HEADERS 64
#define JS_SAFE_INT 9007199254740991ull /* 2^53 - 1: the largest integer a JS number holds */

#define PUT(out, lit) wsb_buf_append((out), (lit), sizeof(lit) - 1)

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* ---- Request parsing ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    enum wsb_op op;
} ops[] = {
    {"subscribe", WSB_REQ_SUBSCRIBE}, {"unsubscribe", WSB_REQ_UNSUBSCRIBE},
    {"publish", WSB_REQ_PUBLISH},     {"ack", WSB_REQ_ACK},
    {"nack", WSB_REQ_NACK},           {"auth", WSB_REQ_AUTH},
};

static int fail(char *msg, size_t msglen, const char *reason)
{
    if (msglen)
        snprintf(msg, msglen, "%s", reason);
    return -1;
}

/* An optional member: NULL when absent or null. */
static json_t *opt(json_t *root, const char *name)
{
    json_t *v = json_object_get(root, name);
    return json_is_null(v) ? NULL : v;
}

static int parse_id(struct wsb_request *req, char *msg, size_t msglen)
{
    json_t *id = opt(req->root, "id");

    if (!id)
        return 0;
    if (json_is_integer(id)) {
        snprintf(req->id, sizeof(req->id), "%" JSON_INTEGER_FORMAT, json_integer_value(id));
        return 0;
    }
    if (!json_is_string(id))
        return fail(msg, msglen, "id must be a string or an integer");
    size_t n = json_string_length(id);
    if (n > ID_STR_MAX)
        return fail(msg, msglen, "id is longer than 64 bytes");
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_json_str(&b, json_string_value(id), n);
    int rc = 0;
    if (b.oom || b.len > WSB_ID_MAX)
        rc = fail(msg, msglen, "id is too long once encoded");
    else
        memcpy(req->id, b.data, b.len);
    wsb_buf_cleanup(&b);
    return rc;
}

static int parse_channel(struct wsb_request *req, char *msg, size_t msglen)
{
    json_t *ch = json_object_get(req->root, "channel");

    if (!ch)
        return fail(msg, msglen, "channel is required");
    if (!json_is_string(ch))
        return fail(msg, msglen, "channel must be a string");
    req->channel = json_string_value(ch);
    req->channel_len = json_string_length(ch);
    if (!wsb_channel_valid(req->channel, req->channel_len)) {
        req->channel = NULL;
        req->channel_len = 0;
        return fail(msg, msglen,
                    "invalid channel name (dot-separated [A-Za-z0-9_-] segments, <= 255 bytes)");
    }
    return 0;
}

static int cmp_partition(const void *a, const void *b)
{
    const struct wsb_partition_offset *x = a, *y = b;
    return (x->partition > y->partition) - (x->partition < y->partition);
}

/* A partition name: decimal, no sign, no leading zero, <= INT32_MAX. */
static bool parse_partition(const char *s, size_t n, int32_t *out)
{
    int64_t v = 0;

    if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((uint8_t)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}

static int parse_offsets(struct wsb_request *req, json_t *offs, const char **code, char *msg,
                         size_t msglen)
{
    const char *key;
    size_t key_len, i = 0;
    json_t *v;

    if (!json_is_object(offs))
        return fail(msg, msglen, "from.offsets must be an object of \"PARTITION\": OFFSET");
    size_t n = json_object_size(offs);
    if (n == 0)
        return fail(msg, msglen, "from.offsets must not be empty");
    if (n > WSB_MAX_FROM_OFFSETS)
        return fail(msg, msglen, "from.offsets has more than 1024 partitions");
    req->from_offsets = calloc(n, sizeof(*req->from_offsets));
    if (!req->from_offsets) {
        *code = "unavailable";
        return fail(msg, msglen, "out of memory");
    }
    json_object_keylen_foreach(offs, key, key_len, v)
    {
        if (i >= n)
            break;
        struct wsb_partition_offset *po = &req->from_offsets[i];
        if (!parse_partition(key, key_len, &po->partition))
            return fail(msg, msglen, "from.offsets: partition must be a decimal integer >= 0");
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return fail(msg, msglen, "from.offsets: offset must be an integer >= 0");
        po->offset = json_integer_value(v);
        i++;
    }
    req->nfrom_offsets = i;
    qsort(req->from_offsets, i, sizeof(*req->from_offsets), cmp_partition);
    return 0;
}

static int parse_from(struct wsb_request *req, const char **code, char *msg, size_t msglen)
{
    static const char usage[] = "from must be \"latest\", \"earliest\", {\"timestamp\": MS} or "
                                "{\"offsets\": {\"PARTITION\": OFFSET}}";
    json_t *from = opt(req->root, "from"), *v;

    req->from = WSB_FROM_LATEST;
    if (!from)
        return 0;
    if (json_is_string(from)) {
        const char *s = json_string_value(from);
        size_t n = json_string_length(from);
        if (n == 6 && memcmp(s, "latest", 6) == 0)
            return 0;
        if (n == 8 && memcmp(s, "earliest", 8) == 0) {
            req->from = WSB_FROM_EARLIEST;
            return 0;
        }
        return fail(msg, msglen, usage);
    }
    if (!json_is_object(from) || json_object_size(from) != 1)
        return fail(msg, msglen, usage);
    if ((v = json_object_get(from, "timestamp"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return fail(msg, msglen, "from.timestamp must be an integer >= 0 (ms)");
        req->from = WSB_FROM_TIMESTAMP;
        req->from_timestamp_ms = json_integer_value(v);
        return 0;
    }
    if ((v = json_object_get(from, "offsets"))) {
        req->from = WSB_FROM_OFFSETS;
        return parse_offsets(req, v, code, msg, msglen);
    }
    return fail(msg, msglen, usage);
}

/* subscribe.filter: the client's own narrowing, literal values (issue 15). */
static int parse_filter(struct wsb_request *req, char *msg, size_t msglen)
{
    json_t *f = opt(req->root, "filter");
    char path[96], why[128];

    if (!f)
        return 0;
    req->filter =
        wsb_filter_spec_parse(f, WSB_FILTER_LITERAL, 0, path, sizeof(path), why, sizeof(why));
    if (req->filter)
        return 0;
    if (msglen)
        snprintf(msg, msglen, "filter%s%s: %s", path[0] && path[0] != '[' ? "." : "", path, why);
    return -1;
}

static int parse_publish(struct wsb_request *req, const uint8_t *text, size_t len,
                         const char **code, char *msg, size_t msglen)
{
    json_t *data = json_object_get(req->root, "data"), *key, *hdrs, *v;
    const uint8_t *vs, *ve;
    const char *name;
    size_t name_len;

    if (!data)
        return fail(msg, msglen, "data is required");
    /* Forward the client's own text (numbers keep their exact spelling) minus whitespace;
     * jansson's re-encoding is the fallback and never expected. */
    if (wsb_json_find_member(text, text + len, "data", &vs, &ve))
        req->data = wsb_json_compact(vs, ve, &req->data_len);
    else if ((req->data = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY)))
        req->data_len = strlen(req->data);
    if (!req->data) {
        *code = "unavailable";
        return fail(msg, msglen, "out of memory");
    }
    /* What a client publishes comes back verbatim only within the validator's depth. */
    if (!wsb_json_valid((const uint8_t *)req->data, req->data_len))
        return fail(msg, msglen, "data is nested more than 64 levels deep");

    if ((key = opt(req->root, "key"))) {
        if (!json_is_string(key))
            return fail(msg, msglen, "key must be a string");
        req->key = json_string_value(key);
        req->key_len = json_string_length(key);
    }

    if (!(hdrs = opt(req->root, "headers")))
        return 0;
    if (!json_is_object(hdrs))
        return fail(msg, msglen, "headers must be an object of string values");
    size_t n = json_object_size(hdrs);
    if (n > MAX_HEADERS)
        return fail(msg, msglen, "headers has more than 64 entries");
    if (n == 0)
        return 0;
    req->headers = calloc(n, sizeof(*req->headers));
    if (!req->headers) {
        *code = "unavailable";
        return fail(msg, msglen, "out of memory");
    }
    json_object_keylen_foreach(hdrs, name, name_len, v)
    {
        if (req->nheaders >= n)
            break;
        if (name_len == 0 || memchr(name, '\0', name_len))
            return fail(msg, msglen, "header names must be non-empty and contain no NUL");
        if (!json_is_string(v))
            return fail(msg, msglen, "header values must be strings");
        struct wsb_header *h = &req->headers[req->nheaders++];
        h->name = name;
        h->value = (const uint8_t *)json_string_value(v);
        h->value_len = json_string_length(v);
    }
    return 0;
}

/* ack_id: an integer >= 0 or a string of decimal digits, up to UINT64_MAX. */
static int parse_ack(struct wsb_request *req, char *msg, size_t msglen)
{
    static const char bad[] = "ack_id must be an integer >= 0 or a decimal string";
    json_t *a = json_object_get(req->root, "ack_id"), *rq;

    if (!a)
        return fail(msg, msglen, "ack_id is required");
    if (json_is_integer(a)) {
        if (json_integer_value(a) < 0)
            return fail(msg, msglen, bad);
        req->ack_id = (uint64_t)json_integer_value(a);
    } else if (json_is_string(a)) {
        const char *s = json_string_value(a);
        size_t n = json_string_length(a);
        uint64_t v = 0;
        if (n == 0 || n > 20)
            return fail(msg, msglen, bad);
        for (size_t i = 0; i < n; i++) {
            unsigned d = (unsigned)(uint8_t)s[i] - '0';
            if (d > 9 || v > (UINT64_MAX - d) / 10)
                return fail(msg, msglen, bad);
            v = v * 10 + d;
        }
        req->ack_id = v;
    } else {
        return fail(msg, msglen, bad);
    }
    if (req->op == WSB_REQ_NACK && (rq = opt(req->root, "requeue"))) {
        if (!json_is_boolean(rq))
            return fail(msg, msglen, "requeue must be a boolean");
        req->requeue = json_is_true(rq);
    }
    return 0;
}

static int parse_auth(struct wsb_request *req, char *msg, size_t msglen)
{
    json_t *t = json_object_get(req->root, "token");

    /* never echo the token, even in part */
    if (!json_is_string(t) || json_string_length(t) == 0 ||
        memchr(json_string_value(t), '\0', json_string_length(t)))
        return fail(msg, msglen, "token must be a non-empty string");
    req->token = json_string_value(t);
    req->token_len = json_string_length(t);
    return 0;
}

int wsb_request_parse(const uint8_t *text, size_t len, struct wsb_request *req, const char **code,
                      char *msg, size_t msglen)
{
    json_error_t jerr;
    json_t *op;
    size_t i;

    memset(req, 0, sizeof(*req));
    req->from = WSB_FROM_LATEST;
    req->requeue = true;
    *code = "invalid_request";
    if (msglen)
        msg[0] = '\0';

    if (!text || len == 0)
        return fail(msg, msglen, "empty request");
    if (memchr(text, '\0', len))
        return fail(msg, msglen, "request contains a NUL byte");
    /* JSON_ALLOW_NUL: \u0000 may appear in string values (`data`, key, header values); the
     * fields used as C strings are checked below. JSON_DECODE_ANY so a scalar gets the
     * specific "must be an object" reply. The parser's messages quote the input, so only
     * the error class and position are reported. */
    req->root = json_loadb((const char *)text, len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!req->root) {
        switch (json_error_code(&jerr)) {
        case json_error_duplicate_key: return fail(msg, msglen, "duplicate key in request");
        case json_error_null_byte_in_key:
            return fail(msg, msglen, "object keys must not contain NUL");
        case json_error_numeric_overflow: return fail(msg, msglen, "number out of range");
        case json_error_stack_overflow: return fail(msg, msglen, "request nested too deeply");
        case json_error_out_of_memory:
            *code = "unavailable";
            return fail(msg, msglen, "out of memory");
        default:
            if (msglen)
                snprintf(msg, msglen, "malformed JSON at byte %d", jerr.position);
            return -1;
        }
    }
    if (!json_is_object(req->root))
        return fail(msg, msglen, "request must be a JSON object");
    if (parse_id(req, msg, msglen) < 0)
        return -1;

    if (!(op = json_object_get(req->root, "op")))
        return fail(msg, msglen, "op is required");
    if (!json_is_string(op))
        return fail(msg, msglen, "op must be a string");
    for (i = 0; i < WSB_ARRAY_LEN(ops); i++)
        if (strlen(ops[i].name) == json_string_length(op) &&
            memcmp(ops[i].name, json_string_value(op), json_string_length(op)) == 0)
            break;
    if (i == WSB_ARRAY_LEN(ops))
        return fail(msg, msglen, "unknown op");
    req->op = ops[i].op;

    if (req->op == WSB_REQ_AUTH)
        return parse_auth(req, msg, msglen);
    if (parse_channel(req, msg, msglen) < 0)
        return -1;
    switch (req->op) {
    case WSB_REQ_SUBSCRIBE:
        if (parse_from(req, code, msg, msglen) < 0)
            return -1;
        return parse_filter(req, msg, msglen);
    case WSB_REQ_PUBLISH: return parse_publish(req, text, len, code, msg, msglen);
    case WSB_REQ_ACK:
    case WSB_REQ_NACK: return parse_ack(req, msg, msglen);
    default: return 0;
    }
}

void wsb_request_cleanup(struct wsb_request *req)
{
    json_decref(req->root);
    free(req->from_offsets);
    free(req->data);
    free(req->headers);
    wsb_filter_spec_free(req->filter);
    memset(req, 0, sizeof(*req));
}

/* ---- Server messages ---------------------------------------------------------------------- */

static void put_u64(struct wsb_buf *out, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    wsb_buf_append(out, tmp + i, sizeof(tmp) - i);
}

static void put_i64(struct wsb_buf *out, int64_t v)
{
    if (v < 0) {
        PUT(out, "-");
        put_u64(out, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(out, (uint64_t)v);
    }
}

static void put_str(struct wsb_buf *out, const char *s)
{
    wsb_buf_json_str(out, s, strlen(s));
}

static void put_id(struct wsb_buf *out, const char *id)
{
    if (id && id[0]) {
        PUT(out, ",\"id\":");
        wsb_buf_puts(out, id);
    }
}

static void put_expiry(struct wsb_buf *out, int64_t expires_at)
{
    if (expires_at > 0)
        put_i64(out, expires_at);
    else
        PUT(out, "null");
}

void wsb_encode_welcome(struct wsb_buf *out, const char *session, const char *sub,
                        int64_t expires_at)
{
    PUT(out, "{\"type\":\"welcome\",\"session\":");
    put_str(out, session);
    PUT(out, ",\"sub\":");
    if (sub)
        put_str(out, sub);
    else
        PUT(out, "null");
    PUT(out, ",\"expires_at\":");
    put_expiry(out, expires_at);
    PUT(out, ",\"protocol\":\"wsbridge.v1\"}");
}

void wsb_encode_error(struct wsb_buf *out, const char *id, const char *code, const char *message)
{
    PUT(out, "{\"type\":\"error\"");
    put_id(out, id);
    PUT(out, ",\"code\":");
    put_str(out, code);
    PUT(out, ",\"message\":");
    put_str(out, message ? message : "");
    PUT(out, "}");
}

void wsb_encode_subscribed(struct wsb_buf *out, const char *id, const char *channel,
                           const char *positions)
{
    PUT(out, "{\"type\":\"subscribed\"");
    put_id(out, id);
    PUT(out, ",\"channel\":");
    put_str(out, channel);
    if (positions && positions[0]) {
        PUT(out, ",\"offsets\":");
        wsb_buf_puts(out, positions);
    }
    PUT(out, "}");
}

void wsb_encode_unsubscribed(struct wsb_buf *out, const char *id, const char *channel,
                             const char *reason)
{
    PUT(out, "{\"type\":\"unsubscribed\"");
    put_id(out, id);
    PUT(out, ",\"channel\":");
    put_str(out, channel);
    if (reason) {
        PUT(out, ",\"reason\":");
        put_str(out, reason);
    }
    PUT(out, "}");
}

void wsb_encode_published(struct wsb_buf *out, const char *id, const char *channel)
{
    PUT(out, "{\"type\":\"published\"");
    put_id(out, id);
    PUT(out, ",\"channel\":");
    put_str(out, channel);
    PUT(out, "}");
}

void wsb_encode_authenticated(struct wsb_buf *out, const char *id, int64_t expires_at)
{
    PUT(out, "{\"type\":\"authenticated\"");
    put_id(out, id);
    PUT(out, ",\"expires_at\":");
    put_expiry(out, expires_at);
    PUT(out, "}");
}

void wsb_encode_gap(struct wsb_buf *out, const char *channel, uint64_t dropped)
{
    PUT(out, "{\"type\":\"gap\",\"channel\":");
    put_str(out, channel);
    PUT(out, ",\"dropped\":");
    put_u64(out, dropped);
    PUT(out, "}");
}

void wsb_encode_message(struct wsb_buf *out, const char *channel, size_t channel_len,
                        const struct wsb_msg *m)
{
    bool payload_b64 = false;

    /* one reservation covers the common case (JSON payload, short key, no headers) */
    wsb_buf_reserve(out, 160 + channel_len + m->payload_len + m->key_len);
    PUT(out, "{\"type\":\"message\",\"channel\":");
    wsb_buf_json_str(out, channel, channel_len);
    PUT(out, ",\"data\":");
    if (m->payload_len > 0 && !(m->flags & WSB_MSG_DATA_RAW) &&
        wsb_json_valid(m->payload, m->payload_len)) {
        wsb_buf_append(out, m->payload, m->payload_len);
    } else if (wsb_utf8_valid(m->payload, m->payload_len)) {
        wsb_buf_json_str(out, m->payload, m->payload_len);
    } else {
        PUT(out, "\"");
        wsb_buf_base64(out, m->payload, m->payload_len);
        PUT(out, "\"");
        payload_b64 = true;
    }
    if (payload_b64)
        PUT(out, ",\"encoding\":\"base64\"");

    if (m->key) {
        PUT(out, ",\"key\":");
        if ((m->flags & WSB_MSG_KEY_JSON) && wsb_json_valid(m->key, m->key_len)) {
            wsb_buf_append(out, m->key, m->key_len); /* a decoded (Avro) key */
        } else if (wsb_utf8_valid(m->key, m->key_len)) {
            wsb_buf_json_str(out, m->key, m->key_len);
        } else {
            PUT(out, "\"");
            wsb_buf_base64(out, m->key, m->key_len);
            PUT(out, "\",\"key_encoding\":\"base64\"");
        }
    }

    if (m->nheaders > 0) {
        bool first = true;
        PUT(out, ",\"headers\":{");
        for (size_t i = 0; i < m->nheaders; i++) {
            const struct wsb_header *h = &m->headers[i];
            size_t nlen = h->name ? strlen(h->name) : 0;
            if (!h->name || !wsb_utf8_valid((const uint8_t *)h->name, nlen))
                continue; /* a name that is not text cannot be a JSON member name */
            if (!first)
                PUT(out, ",");
            first = false;
            wsb_buf_json_str(out, h->name, nlen);
            PUT(out, ":");
            if (!h->value) {
                PUT(out, "null");
            } else if (wsb_utf8_valid(h->value, h->value_len)) {
                wsb_buf_json_str(out, h->value, h->value_len);
            } else {
                PUT(out, "{\"base64\":\"");
                wsb_buf_base64(out, h->value, h->value_len);
                PUT(out, "\"}");
            }
        }
        PUT(out, "}");
    }

    if (m->timestamp_ms >= 0) {
        PUT(out, ",\"timestamp\":");
        put_i64(out, m->timestamp_ms);
    }
    if (m->partition >= 0) {
        PUT(out, ",\"partition\":");
        put_i64(out, m->partition);
        PUT(out, ",\"offset\":");
        put_i64(out, m->offset);
    }
    if (m->ack_token != 0) {
        /* beyond 2^53 a JS number would round it: send it as a string to echo back */
        PUT(out, ",\"ack_id\":");
        if (m->ack_token <= JS_SAFE_INT) {
            put_u64(out, m->ack_token);
        } else {
            PUT(out, "\"");
            put_u64(out, m->ack_token);
            PUT(out, "\"");
        }
    }
    PUT(out, "}");
}
