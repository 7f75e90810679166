/* libFuzzer target: wsb_request_parse on random text, and wsb_encode_message on random bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bridge/protocol.h"
#include "bridge/ws/ws_utf8.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/pattern.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* Every reply we could send about this request is valid JSON. */
static void check_replies(const struct wsb_request *req, const char *msg)
{
    struct wsb_buf b;

    wsb_buf_init(&b);
    wsb_encode_error(&b, req->id, "invalid_request", msg);
    CHECK(wsb_json_valid(b.data, b.len));
    b.len = 0;
    wsb_encode_published(&b, req->id, req->channel ? req->channel : "c");
    CHECK(wsb_json_valid(b.data, b.len));
    wsb_buf_cleanup(&b);
}

static void check_request(const uint8_t *data, size_t size)
{
    struct wsb_request req;
    const char *code = NULL;
    char msg[160];

    int rc = wsb_request_parse(data, size, &req, &code, msg, sizeof(msg));
    CHECK(code != NULL);
    CHECK(strlen(req.id) <= WSB_ID_MAX);
    CHECK(req.id[0] == '\0' || wsb_json_valid((const uint8_t *)req.id, strlen(req.id)));
    if (rc != 0) {
        CHECK(rc == -1 && msg[0] != '\0');
    } else {
        if (req.op != WSB_REQ_AUTH)
            CHECK(req.channel && wsb_channel_valid(req.channel, req.channel_len));
        else
            CHECK(req.token && req.token_len > 0);
        if (req.op == WSB_REQ_PUBLISH)
            CHECK(req.data && wsb_json_valid((const uint8_t *)req.data, req.data_len));
        if (req.op == WSB_REQ_SUBSCRIBE && req.from == WSB_FROM_OFFSETS)
            CHECK(req.nfrom_offsets > 0 && req.nfrom_offsets <= WSB_MAX_FROM_OFFSETS);
        CHECK(req.nheaders <= 64);
        for (size_t i = 0; i < req.nheaders; i++)
            CHECK(req.headers[i].name[0] != '\0');
    }
    check_replies(&req, msg);
    wsb_request_cleanup(&req);
}

/* Decodes padded base64 and compares it with p[0..n). */
static bool b64_equals(const char *s, size_t slen, const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(slen * 3 / 4 + 1);
    CHECK(d != NULL);
    long dn = wsb_base64_decode(s, slen, false, d);
    bool eq = dn >= 0 && (size_t)dn == n && (n == 0 || memcmp(d, p, n) == 0);
    free(d);
    return eq;
}

/* The message encoding of arbitrary payload bytes is JSON that gives the bytes back. */
static void check_message(const uint8_t *data, size_t size)
{
    struct wsb_buf b;
    struct wsb_msg m;
    struct wsb_header h = {"h", data, size / 2};
    json_error_t err;

    memset(&m, 0, sizeof(m));
    m.partition = size % 2 ? 1 : -1;
    m.offset = (int64_t)size;
    m.timestamp_ms = -1;
    m.payload = data;
    m.payload_len = size;
    m.key = data + size / 2;
    m.key_len = size - size / 2;
    m.headers = &h;
    m.nheaders = 1;
    m.ack_token = size;

    wsb_buf_init(&b);
    wsb_encode_message(&b, "c", 1, &m);
    CHECK(!b.oom);
    json_t *root = json_loadb((const char *)b.data, b.len, JSON_ALLOW_NUL, &err);
    if (!root) {
        /* the payload went out verbatim and holds numbers jansson cannot represent, or
         * nests deeper than jansson allows */
        CHECK(json_error_code(&err) == json_error_numeric_overflow ||
              json_error_code(&err) == json_error_null_byte_in_key ||
              json_error_code(&err) == json_error_stack_overflow);
        CHECK(wsb_json_valid(data, size));
        wsb_buf_cleanup(&b);
        return;
    }
    json_t *d = json_object_get(root, "data");
    json_t *enc = json_object_get(root, "encoding");
    if (size > 0 && wsb_json_valid(data, size)) {
        CHECK(!enc);
        json_t *want = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        CHECK(!want || json_equal(want, d));
        json_decref(want);
    } else if (wsb_utf8_valid(data, size)) {
        CHECK(!enc && json_is_string(d) && json_string_length(d) == size &&
              memcmp(json_string_value(d), data, size) == 0);
    } else {
        CHECK(json_is_string(enc) && strcmp(json_string_value(enc), "base64") == 0);
        CHECK(json_is_string(d) &&
              b64_equals(json_string_value(d), json_string_length(d), data, size));
    }
    json_t *k = json_object_get(root, "key");
    CHECK(json_is_string(k));
    if (json_object_get(root, "key_encoding"))
        CHECK(b64_equals(json_string_value(k), json_string_length(k), m.key, m.key_len));
    else
        CHECK(json_string_length(k) == m.key_len &&
              memcmp(json_string_value(k), m.key, m.key_len) == 0);
    json_t *hv = json_object_get(json_object_get(root, "headers"), "h");
    if (json_is_object(hv)) {
        json_t *b64 = json_object_get(hv, "base64");
        CHECK(json_is_string(b64) &&
              b64_equals(json_string_value(b64), json_string_length(b64), h.value, h.value_len));
    } else {
        CHECK(json_is_string(hv) && json_string_length(hv) == h.value_len &&
              memcmp(json_string_value(hv), h.value, h.value_len) == 0);
    }
    json_decref(root);
    wsb_buf_cleanup(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_request(data, size);
    check_message(data, size);
    return 0;
}
