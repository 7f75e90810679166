/* Unit tests for bridge/protocol.c: request parsing, the JSON validator, server messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/protocol.h"

/* ---- helpers --------------------------------------------------------------------------- */

static int parse(const char *text, struct wsb_request *req, const char **code, char *msg,
                 size_t msglen)
{
    return wsb_request_parse((const uint8_t *)text, strlen(text), req, code, msg, msglen);
}

/* Parses a request expected to be valid; the caller cleans up. */
static void parse_ok(const char *text, struct wsb_request *req)
{
    const char *code = NULL;
    char msg[256];
    int rc = parse(text, req, &code, msg, sizeof(msg));
    if (rc != 0)
        fail_msg("rejected %s: %s", text, msg);
}

/* Expects rejection with a message containing `want` and an echoed id of `id`. */
static void parse_bad(const char *text, const char *want, const char *id)
{
    struct wsb_request req;
    const char *code = NULL;
    char msg[256];
    int rc = parse(text, &req, &code, msg, sizeof(msg));
    if (rc == 0)
        fail_msg("accepted %s", text);
    assert_string_equal(code, "invalid_request");
    if (!strstr(msg, want))
        fail_msg("%s: message \"%s\" lacks \"%s\"", text, msg, want);
    assert_string_equal(req.id, id);
    wsb_request_cleanup(&req);
}

static bool valid(const char *s)
{
    return wsb_json_valid((const uint8_t *)s, strlen(s));
}

/* Runs an encoder's output through the validator and returns it NUL-terminated. */
static const char *text_of(struct wsb_buf *b)
{
    assert_false(b->oom);
    assert_true(wsb_json_valid(b->data, b->len));
    wsb_buf_append(b, "", 1);
    b->len--;
    return (const char *)b->data;
}

/* ---- requests -------------------------------------------------------------------------- */

static void test_subscribe_basic(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"subscribe\",\"id\":1,\"channel\":\"orders\"}", &req);
    assert_int_equal(req.op, WSB_REQ_SUBSCRIBE);
    assert_string_equal(req.id, "1");
    assert_string_equal(req.channel, "orders");
    assert_int_equal(req.channel_len, 6);
    assert_int_equal(req.from, WSB_FROM_LATEST);
    wsb_request_cleanup(&req);

    parse_ok(" \n{ \"channel\" : \"a.b-c_d.9\" , \"op\" : \"subscribe\", \"from\":\"latest\"}\t",
             &req);
    assert_string_equal(req.channel, "a.b-c_d.9");
    assert_string_equal(req.id, "");
    assert_int_equal(req.from, WSB_FROM_LATEST);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":\"earliest\"}", &req);
    assert_int_equal(req.from, WSB_FROM_EARLIEST);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":null}", &req);
    assert_int_equal(req.from, WSB_FROM_LATEST);
    wsb_request_cleanup(&req);
}

static void test_subscribe_from_timestamp_and_offsets(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"timestamp\":1700000000123}}",
             &req);
    assert_int_equal(req.from, WSB_FROM_TIMESTAMP);
    assert_int_equal(req.from_timestamp_ms, 1700000000123LL);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"timestamp\":0}}", &req);
    assert_int_equal(req.from, WSB_FROM_TIMESTAMP);
    assert_int_equal(req.from_timestamp_ms, 0);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":"
             "{\"2\":40,\"0\":12,\"10\":0,\"2147483647\":9223372036854775807}}}",
             &req);
    assert_int_equal(req.from, WSB_FROM_OFFSETS);
    assert_int_equal(req.nfrom_offsets, 4);
    /* sorted by partition */
    assert_int_equal(req.from_offsets[0].partition, 0);
    assert_int_equal(req.from_offsets[0].offset, 12);
    assert_int_equal(req.from_offsets[1].partition, 2);
    assert_int_equal(req.from_offsets[1].offset, 40);
    assert_int_equal(req.from_offsets[2].partition, 10);
    assert_int_equal(req.from_offsets[2].offset, 0);
    assert_int_equal(req.from_offsets[3].partition, 2147483647);
    assert_int_equal(req.from_offsets[3].offset, INT64_MAX);
    wsb_request_cleanup(&req);
}

static void test_subscribe_from_bad(void **state)
{
    (void)state;
    const char *bad[] = {
        "\"now\"",
        "\"Latest\"",
        "1",
        "true",
        "[]",
        "{}",
        "{\"timestamp\":1,\"offsets\":{\"0\":1}}",
        "{\"since\":1}",
    };
    char text[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"op\":\"subscribe\",\"id\":\"s\",\"channel\":\"x\",\"from\":%s}", bad[i]);
        parse_bad(text, "from must be", "\"s\"");
    }
    parse_bad("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"timestamp\":-1}}",
              "from.timestamp", "");
    parse_bad("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"timestamp\":1.5}}",
              "from.timestamp", "");
    parse_bad("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"timestamp\":\"1\"}}",
              "from.timestamp", "");
    parse_bad("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":[1,2]}}",
              "from.offsets must be an object", "");
    parse_bad("{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":{}}}",
              "must not be empty", "");
    const char *bad_partitions[] = {"-1", "01", "a", "", "1.0", " 1", "2147483648", "99999999999"};
    for (size_t i = 0; i < sizeof(bad_partitions) / sizeof(bad_partitions[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":{\"%s\":1}}}",
                 bad_partitions[i]);
        parse_bad(text, "partition must be", "");
    }
    const char *bad_offsets[] = {"-1", "1.5", "\"1\"", "null", "true", "{}"};
    for (size_t i = 0; i < sizeof(bad_offsets) / sizeof(bad_offsets[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":{\"0\":%s}}}",
                 bad_offsets[i]);
        parse_bad(text, "offset must be", "");
    }
}

static void test_subscribe_offsets_limit(void **state)
{
    (void)state;
    struct wsb_buf b;
    struct wsb_request req;
    const char *code;
    char msg[256];

    for (int n = WSB_MAX_FROM_OFFSETS; n <= WSB_MAX_FROM_OFFSETS + 1; n++) {
        wsb_buf_init(&b);
        wsb_buf_puts(&b, "{\"op\":\"subscribe\",\"channel\":\"x\",\"from\":{\"offsets\":{");
        for (int i = 0; i < n; i++)
            wsb_buf_printf(&b, "%s\"%d\":%d", i ? "," : "", i, i * 2);
        wsb_buf_puts(&b, "}}}");
        int rc = wsb_request_parse(b.data, b.len, &req, &code, msg, sizeof(msg));
        if (n == WSB_MAX_FROM_OFFSETS) {
            assert_int_equal(rc, 0);
            assert_int_equal(req.nfrom_offsets, WSB_MAX_FROM_OFFSETS);
            assert_int_equal(req.from_offsets[1023].partition, 1023);
            assert_int_equal(req.from_offsets[1023].offset, 2046);
        } else {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(msg, "1024"));
        }
        wsb_request_cleanup(&req);
        wsb_buf_cleanup(&b);
    }
}

static void test_unsubscribe(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"unsubscribe\",\"id\":\"u-1\",\"channel\":\"orders\",\"future\":[1]}", &req);
    assert_int_equal(req.op, WSB_REQ_UNSUBSCRIBE);
    assert_string_equal(req.id, "\"u-1\"");
    assert_string_equal(req.channel, "orders");
    wsb_request_cleanup(&req);
    parse_bad("{\"op\":\"unsubscribe\",\"id\":2}", "channel is required", "2");
}

static void test_channel_rules(void **state)
{
    (void)state;
    const char *bad[] = {"\"\"",   "\"a..b\"", "\".a\"",         "\"a.\"",       "\"a b\"",
                         "\"a*\"", "\"a/b\"",  "\"caf\\u00e9\"", "\"a\\u0000b\""};
    char text[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "{\"op\":\"subscribe\",\"id\":7,\"channel\":%s}", bad[i]);
        parse_bad(text, "invalid channel name", "7");
    }
    parse_bad("{\"op\":\"publish\",\"channel\":5,\"data\":1}", "channel must be a string", "");
    parse_bad("{\"op\":\"ack\",\"channel\":null,\"ack_id\":1}", "channel must be a string", "");
    parse_bad("{\"op\":\"nack\",\"ack_id\":1}", "channel is required", "");

    /* 255 bytes is the limit */
    char name[300];
    memset(name, 'a', sizeof(name));
    struct wsb_request req;
    snprintf(text, sizeof(text), "{\"op\":\"subscribe\",\"channel\":\"%.*s\"}", 255, name);
    parse_ok(text, &req);
    assert_int_equal(req.channel_len, 255);
    wsb_request_cleanup(&req);
    snprintf(text, sizeof(text), "{\"op\":\"subscribe\",\"channel\":\"%.*s\"}", 256, name);
    parse_bad(text, "invalid channel name", "");
}

static void test_ids(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"unsubscribe\",\"id\":-42,\"channel\":\"c\"}", &req);
    assert_string_equal(req.id, "-42");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"unsubscribe\",\"id\":9223372036854775807,\"channel\":\"c\"}", &req);
    assert_string_equal(req.id, "9223372036854775807");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"unsubscribe\",\"id\":\"q\\\"\\u00e9\\n\",\"channel\":\"c\"}", &req);
    assert_string_equal(req.id, "\"q\\\"\xc3\xa9\\n\"");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"unsubscribe\",\"id\":\"\",\"channel\":\"c\"}", &req);
    assert_string_equal(req.id, "\"\"");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"unsubscribe\",\"id\":null,\"channel\":\"c\"}", &req);
    assert_string_equal(req.id, "");
    wsb_request_cleanup(&req);

    /* 64 bytes is fine, 65 is not */
    char text[512], s[100];
    memset(s, 'i', sizeof(s));
    snprintf(text, sizeof(text), "{\"op\":\"unsubscribe\",\"id\":\"%.*s\",\"channel\":\"c\"}", 64,
             s);
    parse_ok(text, &req);
    assert_int_equal(strlen(req.id), 66);
    wsb_request_cleanup(&req);
    snprintf(text, sizeof(text), "{\"op\":\"unsubscribe\",\"id\":\"%.*s\",\"channel\":\"c\"}", 65,
             s);
    parse_bad(text, "id is longer", "");
    /* 64 control characters escape to 6 bytes each: over WSB_ID_MAX */
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "{\"op\":\"unsubscribe\",\"channel\":\"c\",\"id\":\"");
    for (int i = 0; i < 64; i++)
        wsb_buf_puts(&b, "\\u0001");
    wsb_buf_puts(&b, "\"}");
    wsb_buf_append(&b, "", 1);
    parse_bad((const char *)b.data, "too long once encoded", "");
    wsb_buf_cleanup(&b);

    const char *bad[] = {"1.5", "1e3", "true", "false", "{}", "[1]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "{\"op\":\"unsubscribe\",\"id\":%s,\"channel\":\"c\"}",
                 bad[i]);
        parse_bad(text, "id must be a string or an integer", "");
    }
    /* a huge integer id is a number jansson cannot hold */
    parse_bad("{\"op\":\"unsubscribe\",\"id\":123456789012345678901234567890,\"channel\":\"c\"}",
              "number out of range", "");
}

static void test_errors_echo_id(void **state)
{
    (void)state;
    parse_bad("{\"id\":5}", "op is required", "5");
    parse_bad("{\"id\":\"x\",\"op\":3}", "op must be a string", "\"x\"");
    parse_bad("{\"id\":6,\"op\":\"frobnicate\"}", "unknown op", "6");
    parse_bad("{\"id\":6,\"op\":\"Subscribe\",\"channel\":\"c\"}", "unknown op", "6");
    parse_bad("{\"id\":6,\"op\":\"subscribe\\u0000\",\"channel\":\"c\"}", "unknown op", "6");
}

static void test_malformed(void **state)
{
    (void)state;
    parse_bad("", "empty request", "");
    parse_bad("[1,2]", "must be a JSON object", "");
    parse_bad("\"op\"", "must be a JSON object", "");
    parse_bad("{\"op\":\"subscribe\",", "malformed JSON", "");
    parse_bad("{\"op\":\"subscribe\",}", "malformed JSON", "");
    parse_bad("{op:\"subscribe\"}", "malformed JSON", "");
    parse_bad("{\"op\":\"subscribe\"} {}", "malformed JSON", "");
    parse_bad("{\"op\":\"subscribe\",\"op\":\"publish\",\"channel\":\"c\"}", "duplicate key", "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":{\"a\":1,\"a\":2}}", "duplicate key",
              "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1e999}", "number out of range", "");

    /* a NUL byte in the text */
    struct wsb_request req;
    const char *code;
    char msg[128];
    static const char nul[] = "{\"op\":\"auth\",\"token\":\"a\0b\"}";
    assert_int_equal(
        wsb_request_parse((const uint8_t *)nul, sizeof(nul) - 1, &req, &code, msg, sizeof(msg)),
        -1);
    assert_non_null(strstr(msg, "NUL"));
    wsb_request_cleanup(&req);

    /* a tiny message buffer truncates, never overflows */
    char tiny[4];
    assert_int_equal(parse("{}", &req, &code, tiny, sizeof(tiny)), -1);
    assert_int_equal(strlen(tiny), 3);
    wsb_request_cleanup(&req);
    assert_int_equal(parse("{}", &req, &code, NULL, 0), -1);
    wsb_request_cleanup(&req);
}

static void test_publish(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"publish\",\"id\":3,\"channel\":\"chat.u1\",\"data\":{\"text\":\"hi\"}}",
             &req);
    assert_int_equal(req.op, WSB_REQ_PUBLISH);
    assert_string_equal(req.data, "{\"text\":\"hi\"}");
    assert_int_equal(req.data_len, strlen(req.data));
    assert_null(req.key);
    assert_int_equal(req.nheaders, 0);
    wsb_request_cleanup(&req);

    /* nested data keeps its exact text, minus insignificant whitespace */
    parse_ok(
        "{\"op\":\"publish\",\"channel\":\"c\",\"data\" : { \"a\" : [ 1 , 2.50 , 1E2 , -0 , "
        "0.1 , 12345678901234567 ] ,\n\"s\" : \"x y\\\" \\u00e9 \\ud83d\\ude00\" , \"n\" : null , "
        "\"t\":true, \"o\":{\"p\":{}} } , \"key\":\"k\"}",
        &req);
    assert_string_equal(req.data,
                        "{\"a\":[1,2.50,1E2,-0,0.1,12345678901234567],\"s\":\"x y\\\" "
                        "\\u00e9 \\ud83d\\ude00\",\"n\":null,\"t\":true,\"o\":{\"p\":{}}}");
    assert_string_equal(req.key, "k");
    assert_int_equal(req.key_len, 1);
    wsb_request_cleanup(&req);

    /* scalars; `data` found even when its name is escaped or other members nest deeper */
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":\"plain\"}", &req);
    assert_string_equal(req.data, "\"plain\"");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":null}", &req);
    assert_string_equal(req.data, "null");
    wsb_request_cleanup(&req);
    parse_ok(
        "{\"x\":[[[{\"data\":0}]]],\"op\":\"publish\",\"channel\":\"c\",\"d\\u0061ta\":-1.5e+3}",
        &req);
    assert_string_equal(req.data, "-1.5e+3");
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":\"a\\u0000b\"}", &req);
    assert_string_equal(req.data, "\"a\\u0000b\"");
    wsb_request_cleanup(&req);

    parse_bad("{\"op\":\"publish\",\"id\":1,\"channel\":\"c\"}", "data is required", "1");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"key\":1}", "key must be a string",
              "");
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"key\":null,\"headers\":null}",
             &req);
    assert_null(req.key);
    wsb_request_cleanup(&req);

    /* 64 levels of data nesting pass; 65 do not */
    struct wsb_buf b;
    for (int depth = 64; depth <= 65; depth++) {
        const char *code;
        char msg[128];
        wsb_buf_init(&b);
        wsb_buf_puts(&b, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":");
        for (int i = 0; i < depth; i++)
            wsb_buf_puts(&b, "[");
        for (int i = 0; i < depth; i++)
            wsb_buf_puts(&b, "]");
        wsb_buf_puts(&b, "}");
        int rc = wsb_request_parse(b.data, b.len, &req, &code, msg, sizeof(msg));
        assert_int_equal(rc, depth == 64 ? 0 : -1);
        if (rc < 0)
            assert_non_null(strstr(msg, "nested"));
        wsb_request_cleanup(&req);
        wsb_buf_cleanup(&b);
    }
}

static void test_publish_headers(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"key\":\"k\\u0000z\","
             "\"headers\":{\"trace-id\":\"abc\",\"empty\":\"\",\"bin\":\"a\\u0000b\"}}",
             &req);
    assert_int_equal(req.key_len, 3);
    assert_memory_equal(req.key, "k\0z", 3);
    assert_int_equal(req.nheaders, 3);
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < req.nheaders; i++) {
        const struct wsb_header *h = &req.headers[i];
        if (strcmp(h->name, "trace-id") == 0) {
            assert_int_equal(h->value_len, 3);
            assert_memory_equal(h->value, "abc", 3);
            seen[0] = true;
        } else if (strcmp(h->name, "empty") == 0) {
            assert_int_equal(h->value_len, 0);
            seen[1] = true;
        } else if (strcmp(h->name, "bin") == 0) {
            assert_int_equal(h->value_len, 3);
            assert_memory_equal(h->value, "a\0b", 3);
            seen[2] = true;
        }
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{}}", &req);
    assert_int_equal(req.nheaders, 0);
    wsb_request_cleanup(&req);

    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":[]}",
              "headers must be an object", "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{\"a\":1}}",
              "header values must be strings", "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{\"a\":null}}",
              "header values must be strings", "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{\"\":\"v\"}}",
              "header names", "");
    parse_bad("{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{\"a\\u0000\":\"v\"}}",
              "must not contain NUL", "");

    /* 64 headers pass, 65 do not */
    struct wsb_buf b;
    const char *code;
    char msg[128];
    for (int n = 64; n <= 65; n++) {
        wsb_buf_init(&b);
        wsb_buf_puts(&b, "{\"op\":\"publish\",\"channel\":\"c\",\"data\":1,\"headers\":{");
        for (int i = 0; i < n; i++)
            wsb_buf_printf(&b, "%s\"h%d\":\"v%d\"", i ? "," : "", i, i);
        wsb_buf_puts(&b, "}}");
        int rc = wsb_request_parse(b.data, b.len, &req, &code, msg, sizeof(msg));
        assert_int_equal(rc, n == 64 ? 0 : -1);
        if (rc == 0)
            assert_int_equal(req.nheaders, 64);
        wsb_request_cleanup(&req);
        wsb_buf_cleanup(&b);
    }
}

static void test_ack_nack(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"ack\",\"channel\":\"jobs\",\"ack_id\":17}", &req);
    assert_int_equal(req.op, WSB_REQ_ACK);
    assert_string_equal(req.channel, "jobs");
    assert_true(req.ack_id == 17);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"ack\",\"channel\":\"jobs\",\"ack_id\":\"18446744073709551615\"}", &req);
    assert_true(req.ack_id == UINT64_MAX);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"ack\",\"channel\":\"jobs\",\"ack_id\":0}", &req);
    assert_true(req.ack_id == 0);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"nack\",\"channel\":\"jobs\",\"ack_id\":\"5\"}", &req);
    assert_int_equal(req.op, WSB_REQ_NACK);
    assert_true(req.ack_id == 5);
    assert_true(req.requeue);
    wsb_request_cleanup(&req);

    parse_ok("{\"op\":\"nack\",\"channel\":\"jobs\",\"ack_id\":5,\"requeue\":false}", &req);
    assert_false(req.requeue);
    wsb_request_cleanup(&req);
    parse_ok("{\"op\":\"nack\",\"channel\":\"jobs\",\"ack_id\":5,\"requeue\":true}", &req);
    assert_true(req.requeue);
    wsb_request_cleanup(&req);

    /* ack ignores requeue (an unknown field for it) */
    parse_ok("{\"op\":\"ack\",\"channel\":\"jobs\",\"ack_id\":5,\"requeue\":\"x\"}", &req);
    wsb_request_cleanup(&req);

    const char *bad[] = {"-1",
                         "1.0",
                         "\"\"",
                         "\"-1\"",
                         "\"1a\"",
                         "\" 1\"",
                         "true",
                         "null",
                         "[1]",
                         "{}",
                         "\"0x1\"",
                         "\"18446744073709551616\"",
                         "\"000000000000000000001\""};
    char text[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "{\"op\":\"ack\",\"id\":1,\"channel\":\"j\",\"ack_id\":%s}",
                 bad[i]);
        parse_bad(text, "ack_id must be", "1");
    }
    parse_bad("{\"op\":\"ack\",\"channel\":\"j\"}", "ack_id is required", "");
    parse_bad("{\"op\":\"nack\",\"channel\":\"j\",\"ack_id\":1,\"requeue\":1}",
              "requeue must be a boolean", "");
    parse_bad("{\"op\":\"nack\",\"channel\":\"j\",\"ack_id\":1,\"requeue\":\"true\"}",
              "requeue must be a boolean", "");
}

static void test_auth(void **state)
{
    (void)state;
    struct wsb_request req;
    parse_ok("{\"op\":\"auth\",\"id\":4,\"token\":\"eyJ.abc.def\"}", &req);
    assert_int_equal(req.op, WSB_REQ_AUTH);
    assert_string_equal(req.token, "eyJ.abc.def");
    assert_int_equal(req.token_len, 11);
    assert_null(req.channel);
    wsb_request_cleanup(&req);

    const char *bad[] = {"{\"op\":\"auth\",\"id\":4}", "{\"op\":\"auth\",\"id\":4,\"token\":\"\"}",
                         "{\"op\":\"auth\",\"id\":4,\"token\":42}",
                         "{\"op\":\"auth\",\"id\":4,\"token\":null}",
                         "{\"op\":\"auth\",\"id\":4,\"token\":\"se\\u0000cret\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_bad(bad[i], "token must be a non-empty string", "4");
}

static void test_messages_never_echo_token(void **state)
{
    (void)state;
    /* whatever goes wrong, the reply carries neither the token nor its start */
    const char *texts[] = {
        "{\"op\":\"auth\",\"token\":\"SECRETTOKEN\",\"token\":\"SECRETTOKEN\"}",
        "{\"op\":\"auth\",\"token\":\"SECRETTOKEN\"",
        "{\"op\":\"auth\",\"token\":SECRETTOKEN}",
        "{\"op\":\"auth\",\"token\":\"SECRETTOKEN\",\"x\":1e999}",
        "SECRETTOKEN",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct wsb_request req;
        const char *code;
        char msg[256];
        assert_int_equal(parse(texts[i], &req, &code, msg, sizeof(msg)), -1);
        assert_null(strstr(msg, "SECRET"));
        wsb_request_cleanup(&req);
    }
}

/* ---- the JSON validator ---------------------------------------------------------------- */

static void test_json_valid_table(void **state)
{
    (void)state;
    static const char *const good[] = {
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "1.5",
        "-0.0e-0",
        "1e999",
        "1E+2",
        "1e-2",
        "123456789012345678901234567890",
        "true",
        "false",
        "null",
        "  true  ",
        "\t\r\n null \n",
        "\"\"",
        "\"a\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u0000\"",
        "\"\\u00e9\\u20AC\"",
        "\"\\ud83d\\ude00\"",
        "\"\\uD83D\\uDE00\"",
        "\"\xc3\xa9\"",
        "\"\xe2\x82\xac\"",
        "\"\xf0\x9f\x98\x80\"",
        "\"\xef\xbf\xbf\"",
        "\"\xf4\x8f\xbf\xbf\"",
        "\"\x7f\"",
        "[]",
        "{}",
        "[ ]",
        "{ }",
        "[1,2,3]",
        "[1, [2, [3]], {}]",
        "{\"a\":1}",
        "{\"a\" : [ true , null ] }",
        "{\"a\":{\"b\":{\"c\":[]}},\"d\":\"e\"}",
        "{\"a\":1,\"a\":2}",
        "[\"\\u0041\"]",
    };
    static const char *const bad[] = {
        "",
        " ",
        "01",
        "-01",
        "00",
        "+1",
        "1.",
        ".1",
        "1.e1",
        "1e",
        "1e+",
        "-",
        "--1",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "tru",
        "truee",
        "True",
        "nul",
        "nulls",
        "\"abc",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\ud800\\ud800\"",
        "\"\\ud800x\"",
        "\"a\nb\"",
        "\"a\tb\"",
        "\"\x01\"",
        "\"\x1f\"",
        "\"\xc3\"",
        "\"\xc0\x80\"",
        "\"\xe0\x80\x80\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xf5\x80\x80\x80\"",
        "\"\xff\"",
        "\"\x80\"",
        "[",
        "]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\":1,}",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{a:1}",
        "{1:1}",
        "{\"a\" 1}",
        "[1]]",
        "{}}",
        "[}",
        "{]",
        "1 2",
        "[] []",
        "'a'",
        "\xef\xbb\xbf"
        "1",
        "\x0b"
        "1",
        "1\x0c",
        "/* c */ 1",
        "[1,\n]",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!valid(good[i]))
            fail_msg("rejected valid %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (valid(bad[i]))
            fail_msg("accepted invalid %s", bad[i]);
    /* NUL bytes: never valid outside an escape */
    assert_false(wsb_json_valid((const uint8_t *)"\"a\0\"", 4));
    assert_false(wsb_json_valid((const uint8_t *)"1\0", 2));
    assert_false(wsb_json_valid(NULL, 0));
    /* a truncated escape at the very end never reads past the buffer */
    assert_false(wsb_json_valid((const uint8_t *)"\"\\u00", 5));
    assert_false(wsb_json_valid((const uint8_t *)"\"\\", 2));
    assert_false(wsb_json_valid((const uint8_t *)"\"\\ud83d\\u", 9));
    assert_false(wsb_json_valid((const uint8_t *)"\"\xf0\x9f\x98", 4));
}

static void test_json_valid_depth(void **state)
{
    (void)state;
    /* alternating arrays and objects: 64 levels pass, 65 do not */
    for (int depth = 63; depth <= 66; depth++) {
        struct wsb_buf t;
        wsb_buf_init(&t);
        for (int i = 0; i < depth; i++)
            wsb_buf_puts(&t, i % 2 ? "[" : "{\"k\":");
        wsb_buf_puts(&t, "1");
        for (int i = depth - 1; i >= 0; i--)
            wsb_buf_puts(&t, i % 2 ? "]" : "}");
        assert_int_equal(wsb_json_valid(t.data, t.len), depth <= 64);
        wsb_buf_cleanup(&t);
    }
    /* depth resets between siblings */
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "[");
    for (int k = 0; k < 3; k++) {
        if (k)
            wsb_buf_puts(&b, ",");
        for (int i = 0; i < 63; i++)
            wsb_buf_puts(&b, "[");
        for (int i = 0; i < 63; i++)
            wsb_buf_puts(&b, "]");
    }
    wsb_buf_puts(&b, "]");
    assert_true(wsb_json_valid(b.data, b.len));
    wsb_buf_cleanup(&b);
}

/* ---- server messages ------------------------------------------------------------------- */

static void test_encode_replies(void **state)
{
    (void)state;
    struct wsb_buf b;

    wsb_buf_init(&b);
    wsb_encode_welcome(&b, "s-1", "user\"1", 1700000000);
    assert_string_equal(text_of(&b),
                        "{\"type\":\"welcome\",\"session\":\"s-1\",\"sub\":\"user\\\"1\","
                        "\"expires_at\":1700000000,\"protocol\":\"wsbridge.v1\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_welcome(&b, "s-2", NULL, 0);
    assert_string_equal(text_of(&b), "{\"type\":\"welcome\",\"session\":\"s-2\",\"sub\":null,"
                                     "\"expires_at\":null,\"protocol\":\"wsbridge.v1\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_error(&b, "\"r\"", "forbidden", "not allowed: \"orders\"");
    assert_string_equal(text_of(&b), "{\"type\":\"error\",\"id\":\"r\",\"code\":\"forbidden\","
                                     "\"message\":\"not allowed: \\\"orders\\\"\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_error(&b, "", "invalid_request", "op is required");
    assert_string_equal(text_of(&b), "{\"type\":\"error\",\"code\":\"invalid_request\","
                                     "\"message\":\"op is required\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_subscribed(&b, "1", "orders", "{\"0\":12,\"1\":40}");
    assert_string_equal(text_of(&b), "{\"type\":\"subscribed\",\"id\":1,\"channel\":\"orders\","
                                     "\"offsets\":{\"0\":12,\"1\":40}}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_subscribed(&b, NULL, "orders", NULL);
    assert_string_equal(text_of(&b), "{\"type\":\"subscribed\",\"channel\":\"orders\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_unsubscribed(&b, "2", "orders", NULL);
    assert_string_equal(text_of(&b), "{\"type\":\"unsubscribed\",\"id\":2,\"channel\":\"orders\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_unsubscribed(&b, "", "orders", "source_failed");
    assert_string_equal(text_of(&b), "{\"type\":\"unsubscribed\",\"channel\":\"orders\","
                                     "\"reason\":\"source_failed\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_published(&b, "3", "chat.u1");
    assert_string_equal(text_of(&b), "{\"type\":\"published\",\"id\":3,\"channel\":\"chat.u1\"}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_authenticated(&b, "4", 1800000000);
    assert_string_equal(text_of(&b),
                        "{\"type\":\"authenticated\",\"id\":4,\"expires_at\":1800000000}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_authenticated(&b, NULL, -5);
    assert_string_equal(text_of(&b), "{\"type\":\"authenticated\",\"expires_at\":null}");
    wsb_buf_cleanup(&b);

    wsb_buf_init(&b);
    wsb_encode_gap(&b, "ticks", UINT64_MAX);
    assert_string_equal(
        text_of(&b), "{\"type\":\"gap\",\"channel\":\"ticks\",\"dropped\":18446744073709551615}");
    wsb_buf_cleanup(&b);
}

static struct wsb_msg make_msg(const char *payload, size_t len)
{
    struct wsb_msg m;
    memset(&m, 0, sizeof(m));
    m.partition = -1;
    m.offset = -1;
    m.timestamp_ms = -1;
    m.payload = (const uint8_t *)payload;
    m.payload_len = len;
    return m;
}

static const char *encode(struct wsb_buf *b, const char *channel, const struct wsb_msg *m)
{
    wsb_buf_cleanup(b);
    wsb_buf_init(b);
    wsb_encode_message(b, channel, strlen(channel), m);
    return text_of(b);
}

/* Flags a connector's format stage sets (docs/schema-registry.md). */
static void test_encode_message_format_flags(void **state)
{
    (void)state;
    struct wsb_buf b;
    struct wsb_msg m;
    wsb_buf_init(&b);
    /* raw: JSON text is never taken as JSON */
    m = make_msg("{\"a\":1}", 7);
    m.flags = WSB_MSG_DATA_RAW;
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"{\\\"a\\\":1}\"}");
    /* a decoded key is JSON in "key"; a key flagged JSON that is not stays a string */
    m = make_msg("1", 1);
    m.key = (const uint8_t *)"{\"id\":{\"long\":7}}";
    m.key_len = strlen((const char *)m.key);
    m.flags = WSB_MSG_KEY_JSON;
    assert_string_equal(encode(&b, "o", &m), "{\"type\":\"message\",\"channel\":\"o\",\"data\":1,"
                                             "\"key\":{\"id\":{\"long\":7}}}");
    m.key = (const uint8_t *)"k1";
    m.key_len = 2;
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":1,\"key\":\"k1\"}");
    m.flags = 0;
    m.key = (const uint8_t *)"{\"id\":7}";
    m.key_len = 8;
    assert_string_equal(encode(&b, "o", &m), "{\"type\":\"message\",\"channel\":\"o\",\"data\":1,"
                                             "\"key\":\"{\\\"id\\\":7}\"}");
    wsb_buf_cleanup(&b);
}

static void test_encode_message_payloads(void **state)
{
    (void)state;
    struct wsb_buf b;
    struct wsb_msg m;
    wsb_buf_init(&b);

    m = make_msg("{\"a\": [1, 2.50]}", 16);
    assert_string_equal(
        encode(&b, "orders", &m),
        "{\"type\":\"message\",\"channel\":\"orders\",\"data\":{\"a\": [1, 2.50]}}");

    m = make_msg(" 42\n", 4);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\": 42\n}");

    m = make_msg("hello \"world\"\n", 14);
    assert_string_equal(encode(&b, "o", &m), "{\"type\":\"message\",\"channel\":\"o\","
                                             "\"data\":\"hello \\\"world\\\"\\n\"}");

    /* almost JSON is a string */
    m = make_msg("{\"a\":1,}", 8);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"{\\\"a\\\":1,}\"}");
    m = make_msg("01", 2);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"01\"}");

    m = make_msg("", 0);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"\"}");
    m.payload = NULL;
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"\"}");

    m = make_msg("caf\xc3\xa9", 5);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"caf\xc3\xa9\"}");

    /* binary: invalid UTF-8 or a NUL inside a would-be string */
    m = make_msg("\xff\x00\x01", 3);
    assert_string_equal(encode(&b, "o", &m), "{\"type\":\"message\",\"channel\":\"o\","
                                             "\"data\":\"/wAB\",\"encoding\":\"base64\"}");
    m = make_msg("a\0b", 3);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"a\\u0000b\"}");
    m = make_msg("\xed\xa0\x80", 3); /* an encoded surrogate is not UTF-8 */
    assert_string_equal(encode(&b, "o", &m), "{\"type\":\"message\",\"channel\":\"o\","
                                             "\"data\":\"7aCA\",\"encoding\":\"base64\"}");
    wsb_buf_cleanup(&b);
}

static void test_encode_message_metadata(void **state)
{
    (void)state;
    struct wsb_buf b;
    struct wsb_msg m;
    wsb_buf_init(&b);

    struct wsb_header hdrs[] = {
        {"trace", (const uint8_t *)"abc", 3},
        {"bin", (const uint8_t *)"\x00\xff", 2},
        {"nil", NULL, 0},
        {"bad\xff", (const uint8_t *)"x", 1},
        {"q\"", (const uint8_t *)"", 0},
    };
    m = make_msg("true", 4);
    m.key = (const uint8_t *)"user-1";
    m.key_len = 6;
    m.headers = hdrs;
    m.nheaders = 5;
    m.timestamp_ms = 1700000000123;
    m.partition = 3;
    m.offset = 42;
    m.ack_token = 7;
    assert_string_equal(encode(&b, "orders.eu", &m),
                        "{\"type\":\"message\",\"channel\":\"orders.eu\",\"data\":true,"
                        "\"key\":\"user-1\",\"headers\":{\"trace\":\"abc\",\"bin\":{\"base64\":"
                        "\"AP8=\"},\"nil\":null,\"q\\\"\":\"\"},\"timestamp\":1700000000123,"
                        "\"partition\":3,\"offset\":42,\"ack_id\":7}");

    /* binary key, a zero timestamp, partition 0, a token too big for a JS number */
    m = make_msg("x", 1);
    m.key = (const uint8_t *)"\xfe";
    m.key_len = 1;
    m.timestamp_ms = 0;
    m.partition = 0;
    m.offset = 0;
    m.ack_token = (1ull << 53);
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"x\",\"key\":\"/g==\","
                        "\"key_encoding\":\"base64\",\"timestamp\":0,\"partition\":0,\"offset\":0,"
                        "\"ack_id\":\"9007199254740992\"}");
    m.ack_token = (1ull << 53) - 1;
    m.key_len = 0;
    m.key = (const uint8_t *)"";
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":\"x\",\"key\":\"\","
                        "\"timestamp\":0,\"partition\":0,\"offset\":0,"
                        "\"ack_id\":9007199254740991}");

    /* headers whose names are all unusable still make a valid object */
    struct wsb_header only_bad[] = {{"\xc0", (const uint8_t *)"v", 1}};
    m = make_msg("1", 1);
    m.headers = only_bad;
    m.nheaders = 1;
    assert_string_equal(encode(&b, "o", &m),
                        "{\"type\":\"message\",\"channel\":\"o\",\"data\":1,\"headers\":{}}");

    /* appends: two messages in one buffer are two complete objects */
    wsb_buf_cleanup(&b);
    wsb_buf_init(&b);
    m = make_msg("1", 1);
    wsb_encode_message(&b, "o", 1, &m);
    size_t first = b.len;
    wsb_encode_message(&b, "o", 1, &m);
    assert_int_equal(b.len, 2 * first);
    assert_memory_equal(b.data, b.data + first, first);
    wsb_buf_cleanup(&b);
}

static void test_roundtrip_publish_to_message(void **state)
{
    (void)state;
    /* what a client publishes comes back byte-identical as `data` */
    struct wsb_request req;
    parse_ok("{\"op\":\"publish\",\"channel\":\"c\",\"data\":{\"n\":1.10,\"s\":\"\\u00e9\"}}",
             &req);
    struct wsb_msg m = make_msg(req.data, req.data_len);
    struct wsb_buf b;
    wsb_buf_init(&b);
    assert_string_equal(encode(&b, "c", &m), "{\"type\":\"message\",\"channel\":\"c\","
                                             "\"data\":{\"n\":1.10,\"s\":\"\\u00e9\"}}");
    wsb_buf_cleanup(&b);
    wsb_request_cleanup(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subscribe_basic),
        cmocka_unit_test(test_subscribe_from_timestamp_and_offsets),
        cmocka_unit_test(test_subscribe_from_bad),
        cmocka_unit_test(test_subscribe_offsets_limit),
        cmocka_unit_test(test_unsubscribe),
        cmocka_unit_test(test_channel_rules),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_errors_echo_id),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_publish),
        cmocka_unit_test(test_publish_headers),
        cmocka_unit_test(test_ack_nack),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_messages_never_echo_token),
        cmocka_unit_test(test_json_valid_table),
        cmocka_unit_test(test_json_valid_depth),
        cmocka_unit_test(test_encode_replies),
        cmocka_unit_test(test_encode_message_payloads),
        cmocka_unit_test(test_encode_message_format_flags),
        cmocka_unit_test(test_encode_message_metadata),
        cmocka_unit_test(test_roundtrip_publish_to_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
