/* Tests for connectors/avro_json: the wire header, the JSON form of every Avro type
 * (records, unions, enums, arrays, maps, bytes, fixed, decimals), refusals on encode, and
 * malformed input on decode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/avro_json.h"

static const char ORDER_SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"shop\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\"},"
    "{\"name\":\"ok\",\"type\":\"boolean\"},"
    "{\"name\":\"qty\",\"type\":\"int\"},"
    "{\"name\":\"ratio\",\"type\":\"double\"},"
    "{\"name\":\"f\",\"type\":\"float\"},"
    "{\"name\":\"note\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"status\",\"type\":{\"type\":\"enum\",\"name\":\"Status\","
    "\"symbols\":[\"NEW\",\"PAID\",\"SHIPPED\"]}},"
    "{\"name\":\"price\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\","
    "\"precision\":10,\"scale\":2}},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
    "{\"name\":\"attrs\",\"type\":{\"type\":\"map\",\"values\":\"long\"}},"
    "{\"name\":\"customer\",\"type\":{\"type\":\"record\",\"name\":\"Customer\",\"fields\":["
    "{\"name\":\"name\",\"type\":\"string\"},"
    "{\"name\":\"address\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"Address\","
    "\"fields\":[{\"name\":\"city\",\"type\":\"string\"}]}]}]}},"
    "{\"name\":\"raw\",\"type\":\"bytes\"},"
    "{\"name\":\"hash\",\"type\":{\"type\":\"fixed\",\"name\":\"H\",\"size\":2}},"
    "{\"name\":\"amount\",\"type\":{\"type\":\"fixed\",\"name\":\"Amt\",\"size\":4,"
    "\"logicalType\":\"decimal\",\"precision\":9,\"scale\":3}},"
    "{\"name\":\"choice\",\"type\":[\"null\",\"long\",\"Status\",\"shop.Address\"],"
    "\"default\":null}"
    "]}";

static const char ORDER_JSON[] =
    "{\"id\":42,\"ok\":true,\"qty\":-3,\"ratio\":0.5,\"f\":1.5,\"note\":{\"string\":\"hi "
    "\\\"x\\\"\"},"
    "\"status\":\"PAID\",\"price\":\"-12.05\",\"tags\":[\"a\",\"b\"],\"attrs\":{\"k\":7},"
    "\"customer\":{\"name\":\"Zo\\u00e9\",\"address\":{\"shop.Address\":{\"city\":\"Oslo\"}}},"
    "\"raw\":\"\\u0000\\u00ff\",\"hash\":\"ab\",\"amount\":\"1.500\","
    "\"choice\":{\"shop.Status\":\"NEW\"}}";

static struct wsb_avro_schema *order_schema(void)
{
    char err[256] = "";
    struct wsb_avro_schema *s =
        wsb_avro_schema_new(ORDER_SCHEMA, strlen(ORDER_SCHEMA), err, sizeof(err));
    if (!s)
        fail_msg("schema: %s", err);
    return s;
}

/* Encodes `json` then decodes it; returns the decoded text (malloc'd). */
static char *round_trip(struct wsb_avro_schema *s, const char *json, struct wsb_buf *bin)
{
    char err[256] = "";
    json_error_t je;
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    assert_non_null(v);
    wsb_buf_init(bin);
    if (wsb_avro_encode(s, v, bin, err, sizeof(err)) != WSB_OK)
        fail_msg("encode: %s", err);
    json_decref(v);
    struct wsb_buf out;
    wsb_buf_init(&out);
    if (wsb_avro_decode(s, bin->data, bin->len, &out, err, sizeof(err)) != WSB_OK)
        fail_msg("decode: %s", err);
    wsb_buf_append(&out, "", 1);
    return (char *)wsb_buf_steal(&out, NULL);
}

static void assert_json_equal(const char *a, const char *b)
{
    json_t *x = json_loads(a, JSON_ALLOW_NUL, NULL), *y = json_loads(b, JSON_ALLOW_NUL, NULL);
    assert_non_null(x);
    assert_non_null(y);
    if (!json_equal(x, y))
        fail_msg("JSON differs:\n  %s\n  %s", a, b);
    json_decref(x);
    json_decref(y);
}

static void test_wire_header(void **state)
{
    (void)state;
    uint8_t h[WSB_AVRO_WIRE_HEADER];
    uint32_t id = 0;
    wsb_avro_wire_header(h, 0x01020304);
    assert_int_equal(h[0], 0);
    assert_true(wsb_avro_wire_split(h, sizeof(h), &id));
    assert_int_equal(id, 0x01020304);
    assert_false(wsb_avro_wire_split(h, 4, &id));
    h[0] = 1;
    assert_false(wsb_avro_wire_split(h, sizeof(h), &id));
    assert_false(wsb_avro_wire_split((const uint8_t *)"{\"a\":1}", 7, &id));
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    struct wsb_avro_schema *s = order_schema();
    struct wsb_buf bin;
    char *out = round_trip(s, ORDER_JSON, &bin);
    assert_json_equal(out, ORDER_JSON);
    free(out);
    wsb_buf_cleanup(&bin);
    /* the same schema object decodes again (its value is reused) */
    out = round_trip(s, ORDER_JSON, &bin);
    assert_json_equal(out, ORDER_JSON);
    free(out);
    wsb_buf_cleanup(&bin);
    wsb_avro_schema_free(s);
}

/* Bytes known from the Avro spec: long 1 = 0x02, -1 = 0x01; a string is a length then bytes. */
static void test_decode_known_bytes(void **state)
{
    (void)state;
    const char *sch = "{\"type\":\"record\",\"name\":\"R\",\"fields\":["
                      "{\"name\":\"a\",\"type\":\"long\"},{\"name\":\"b\",\"type\":\"string\"},"
                      "{\"name\":\"u\",\"type\":[\"null\",\"int\"]}]}";
    char err[256];
    struct wsb_avro_schema *s = wsb_avro_schema_new(sch, strlen(sch), err, sizeof(err));
    assert_non_null(s);
    const uint8_t rec[] = {0x01, 0x04, 'h', 'i', 0x02, 0x54}; /* -1, "hi", {int: 42} */
    struct wsb_buf out;
    wsb_buf_init(&out);
    assert_int_equal(wsb_avro_decode(s, rec, sizeof(rec), &out, err, sizeof(err)), WSB_OK);
    wsb_buf_append(&out, "", 1);
    assert_string_equal((char *)out.data, "{\"a\":-1,\"b\":\"hi\",\"u\":{\"int\":42}}");
    out.len = 0;
    /* truncated, trailing bytes, bad union branch, bad UTF-8: errors, output untouched */
    assert_int_not_equal(wsb_avro_decode(s, rec, 3, &out, err, sizeof(err)), WSB_OK);
    const uint8_t trailing[] = {0x01, 0x04, 'h', 'i', 0x00, 0x00};
    assert_int_not_equal(wsb_avro_decode(s, trailing, sizeof(trailing), &out, err, sizeof(err)),
                         WSB_OK);
    const uint8_t branch[] = {0x01, 0x04, 'h', 'i', 0x08, 0x00};
    assert_int_not_equal(wsb_avro_decode(s, branch, sizeof(branch), &out, err, sizeof(err)),
                         WSB_OK);
    const uint8_t badutf[] = {0x01, 0x04, 0xff, 'i', 0x00};
    assert_int_not_equal(wsb_avro_decode(s, badutf, sizeof(badutf), &out, err, sizeof(err)),
                         WSB_OK);
    assert_int_equal(out.len, 0);
    wsb_buf_cleanup(&out);
    wsb_avro_schema_free(s);
}

static void test_decimals(void **state)
{
    (void)state;
    const char *sch = "{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":30,"
                      "\"scale\":4}";
    char err[256];
    struct wsb_avro_schema *s = wsb_avro_schema_new(sch, strlen(sch), err, sizeof(err));
    assert_non_null(s);
    struct {
        const char *in, *out;
    } cases[] = {
        {"\"0\"", "\"0.0000\""},
        {"\"-0.0001\"", "\"-0.0001\""},
        {"\"123456789012345678901234.5\"", "\"123456789012345678901234.5000\""},
        {"\"-128\"", "\"-128.0000\""},
        {"12", "\"12.0000\""},
        {"-2.25", "\"-2.2500\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wsb_buf bin;
        char *out = round_trip(s, cases[i].in, &bin);
        assert_string_equal(out, cases[i].out);
        free(out);
        wsb_buf_cleanup(&bin);
    }
    /* -1 at scale 4 is the unscaled -10000 = 0xD8F0: two bytes, minimal */
    struct wsb_buf bin;
    free(round_trip(s, "\"-1\"", &bin));
    assert_int_equal(bin.len, 3); /* length 2 (zigzag 0x04) + 2 bytes */
    assert_int_equal(bin.data[1], 0xD8);
    assert_int_equal(bin.data[2], 0xF0);
    wsb_buf_cleanup(&bin);
    /* too many fractional digits, too many digits, not a number */
    const char *bad[] = {"\"1.00001\"", "\"1234567890123456789012345678.9\"", "\"1e5\"", "\"\"",
                         "true"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        wsb_buf_init(&bin);
        assert_int_equal(wsb_avro_encode(s, v, &bin, err, sizeof(err)), WSB_ERR_INVALID);
        json_decref(v);
        wsb_buf_cleanup(&bin);
    }
    wsb_avro_schema_free(s);
}

static void expect_refusal(struct wsb_avro_schema *s, const char *json, const char *needle)
{
    char err[256] = "";
    json_t *v = json_loads(json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);
    struct wsb_buf bin;
    wsb_buf_init(&bin);
    assert_int_equal(wsb_avro_encode(s, v, &bin, err, sizeof(err)), WSB_ERR_INVALID);
    if (!strstr(err, needle))
        fail_msg("reason \"%s\" does not mention \"%s\"", err, needle);
    json_decref(v);
    wsb_buf_cleanup(&bin);
}

static void test_encode_refusals(void **state)
{
    (void)state;
    struct wsb_avro_schema *s = order_schema();
    json_t *good = json_loads(ORDER_JSON, JSON_ALLOW_NUL, NULL);
    const struct {
        const char *field;
        const char *value;
        const char *needle;
    } cases[] = {
        {"id", "\"x\"", "data.id"},
        {"qty", "4294967296", "int"},
        {"status", "\"LOST\"", "enum"},
        {"tags", "[1]", "data.tags[0]"},
        {"note", "{\"int\":1}", "data.note"},
        {"hash", "\"abc\"", "fixed"},
        {"customer", "{\"name\":\"a\",\"address\":null,\"extra\":1}", "unknown field"},
        {"raw", "\"\\u0100\"", "U+00FF"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_deep_copy(good);
        json_object_set_new(v, cases[i].field, json_loads(cases[i].value, JSON_DECODE_ANY, NULL));
        char *text = json_dumps(v, JSON_COMPACT);
        expect_refusal(s, text, cases[i].needle);
        free(text);
        json_decref(v);
    }
    json_t *v = json_deep_copy(good);
    json_object_del(v, "qty");
    char *text = json_dumps(v, JSON_COMPACT);
    expect_refusal(s, text, "missing field \"qty\"");
    free(text);
    json_decref(v);
    /* a missing field with a default takes it; a bare value for [null, X] is accepted */
    v = json_deep_copy(good);
    json_object_del(v, "choice");
    json_object_set_new(v, "note", json_string("bare"));
    text = json_dumps(v, JSON_COMPACT);
    struct wsb_buf bin;
    char *out = round_trip(s, text, &bin);
    json_t *back = json_loads(out, JSON_ALLOW_NUL, NULL);
    if (!back)
        fail_msg("%s", out);
    assert_true(json_is_null(json_object_get(back, "choice")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(back, "note"), "string")),
                        "bare");
    json_decref(back);
    free(out);
    free(text);
    wsb_buf_cleanup(&bin);
    json_decref(v);
    json_decref(good);
    wsb_avro_schema_free(s);
}

static void test_bad_schemas(void **state)
{
    (void)state;
    const char *bad[] = {"", "{",
                         "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\","
                         "\"type\":\"Nope\"}]}",
                         "{\"type\":\"wat\"}", "42"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        assert_null(wsb_avro_schema_new(bad[i], strlen(bad[i]), err, sizeof(err)));
        assert_true(err[0] != '\0');
    }
}

/* A recursive type (a linked list) decodes through its named reference. */
static void test_recursive(void **state)
{
    (void)state;
    const char *sch = "{\"type\":\"record\",\"name\":\"Node\",\"fields\":[{\"name\":\"v\","
                      "\"type\":\"int\"},{\"name\":\"next\",\"type\":[\"null\",\"Node\"]}]}";
    char err[256];
    struct wsb_avro_schema *s = wsb_avro_schema_new(sch, strlen(sch), err, sizeof(err));
    assert_non_null(s);
    const char *json = "{\"v\":1,\"next\":{\"Node\":{\"v\":2,\"next\":null}}}";
    struct wsb_buf bin;
    char *out = round_trip(s, json, &bin);
    assert_json_equal(out, json);
    free(out);
    wsb_buf_cleanup(&bin);
    wsb_avro_schema_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_header),        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_decode_known_bytes), cmocka_unit_test(test_decimals),
        cmocka_unit_test(test_encode_refusals),    cmocka_unit_test(test_bad_schemas),
        cmocka_unit_test(test_recursive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
