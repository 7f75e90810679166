/* Tests for auth/filter.c: spec parsing (errors name the path), resolution from claims and
 * captures (an unusable value drops its alternative, never widens), byte-exact matching,
 * canonical keys, and the conjunction with a client's filter (narrows, refuses widening). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/filter.h"
#include "connectors/connector.h"

static struct wsb_filter_spec *spec_of(const char *text, enum wsb_filter_mode mode, size_t ncaps)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    char path[128], err[160];
    struct wsb_filter_spec *s =
        wsb_filter_spec_parse(v, mode, ncaps, path, sizeof(path), err, sizeof(err));
    json_decref(v);
    return s;
}

static void parse_error(const char *text, enum wsb_filter_mode mode, const char *want_path)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    char path[128] = "unset", err[160] = "";
    struct wsb_filter_spec *s =
        wsb_filter_spec_parse(v, mode, 1, path, sizeof(path), err, sizeof(err));
    json_decref(v);
    if (s)
        fail_msg("%s: parsed, expected an error at %s", text, want_path);
    if (strcmp(path, want_path) != 0)
        fail_msg("%s: error at \"%s\" (%s), expected \"%s\"", text, path, err, want_path);
    assert_true(err[0] != '\0');
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_error("\"x\"", WSB_FILTER_TEMPLATES, "");
    parse_error("[]", WSB_FILTER_TEMPLATES, "");
    parse_error("{}", WSB_FILTER_TEMPLATES, "");
    parse_error("{\"kye\": \"x\"}", WSB_FILTER_TEMPLATES, "kye");
    parse_error("{\"key\": 5}", WSB_FILTER_TEMPLATES, "key");
    parse_error("{\"key\": \"\"}", WSB_FILTER_LITERAL, "key");
    parse_error("{\"key\": \"{nope}\"}", WSB_FILTER_TEMPLATES, "key");
    parse_error("{\"key\": \"{2}\"}", WSB_FILTER_TEMPLATES, "key"); /* one capture only */
    parse_error("{\"key\": \"{claim.x\"}", WSB_FILTER_TEMPLATES, "key");
    parse_error("[{\"key\": \"a\"}, {\"headers\": {}}]", WSB_FILTER_TEMPLATES, "[1].headers");
    parse_error("[{\"key\": \"a\"}, {\"headers\": {\"t\": [1]}}]", WSB_FILTER_LITERAL,
                "[1].headers.t");
    parse_error("[1]", WSB_FILTER_LITERAL, "[0]");
    char big[400];
    snprintf(big, sizeof(big), "{\"key\": \"%0300d\"}", 0);
    parse_error(big, WSB_FILTER_LITERAL, "key");
    /* 17 alternatives */
    char many[1024] = "[";
    for (int i = 0; i < 17; i++)
        strcat(many, i ? ",{\"key\":\"a\"}" : "{\"key\":\"a\"}");
    strcat(many, "]");
    parse_error(many, WSB_FILTER_LITERAL, "");
    /* In literal mode braces are text. */
    struct wsb_filter_spec *s = spec_of("{\"key\": \"{sub}\"}", WSB_FILTER_LITERAL, 0);
    assert_non_null(s);
    wsb_filter_spec_free(s);
}

static struct wsb_msg *msg(const char *key, const char *h1, const char *v1)
{
    struct wsb_header h[2] = {{"other", (const uint8_t *)"z", 1}, {h1, (const uint8_t *)v1, 0}};
    if (v1)
        h[1].value_len = strlen(v1);
    return wsb_msg_new(1, 0, 0, -1, key, key ? strlen(key) : 0, "{}", 2, h, h1 ? 2 : 1);
}

static struct wsb_filter *resolve(const char *spec, const char *claims_text,
                                  const struct wsb_captures *caps)
{
    struct wsb_filter_spec *s = spec_of(spec, WSB_FILTER_TEMPLATES, caps ? caps->n : 0);
    assert_non_null(s);
    json_t *claims = claims_text ? json_loads(claims_text, JSON_ALLOW_NUL, NULL) : NULL;
    struct wsb_filter *f = wsb_filter_resolve(s, claims, caps, NULL);
    assert_non_null(f);
    json_decref(claims);
    wsb_filter_spec_free(s);
    return f;
}

static void test_resolve_and_match(void **state)
{
    (void)state;
    struct wsb_msg *u1 = msg("u1", "tenant", "t1");
    struct wsb_msg *u2 = msg("u2", "tenant", "t2");
    struct wsb_msg *nokey = msg(NULL, "tenant", "t1");
    struct wsb_msg *u1x = msg("u1x", NULL, NULL);

    struct wsb_filter *f = resolve("{\"key\": \"{sub}\"}", "{\"sub\": \"u1\"}", NULL);
    assert_int_equal(wsb_filter_alternatives(f), 1);
    assert_true(wsb_filter_match(f, u1));
    assert_false(wsb_filter_match(f, u2));
    assert_false(wsb_filter_match(f, nokey));
    assert_false(wsb_filter_match(f, u1x)); /* byte-exact, no prefix match */
    wsb_filter_free(f);

    /* Header and key ANDed; a prefix and a capture in one template. */
    struct wsb_captures caps = {.n = 1};
    caps.cap[0].ptr = "1";
    caps.cap[0].len = 1;
    f = resolve("{\"key\": \"u{1}\", \"headers\": {\"tenant\": \"t{claim.n}\"}}", "{\"n\": 1}",
                &caps);
    assert_true(wsb_filter_match(f, u1));
    assert_false(wsb_filter_match(f, u2));
    assert_false(wsb_filter_match(f, nokey));
    wsb_filter_free(f);

    /* OR: the key alternative or the tenant one. */
    f = resolve("[{\"key\": \"{sub}\"}, {\"headers\": {\"tenant\": \"{claim.tenant}\"}}]",
                "{\"sub\": \"u2\", \"tenant\": \"t1\"}", NULL);
    assert_int_equal(wsb_filter_alternatives(f), 2);
    assert_true(wsb_filter_match(f, u1));
    assert_true(wsb_filter_match(f, u2));
    assert_true(wsb_filter_match(f, nokey));
    assert_false(wsb_filter_match(f, u1x));
    wsb_filter_free(f);

    /* Invalid values drop their alternative, never widen. */
    static const char *const bad[] = {
        "{\"sub\": \"u2\"}",                       /* missing */
        "{\"sub\": \"u2\", \"tenant\": [\"t1\"]}", /* array */
        "{\"sub\": \"u2\", \"tenant\": {\"a\": 1}}",
        "{\"sub\": \"u2\", \"tenant\": \"\"}",
        "{\"sub\": \"u2\", \"tenant\": 1.5}",
        "{\"sub\": \"u2\", \"tenant\": true}",
        "{\"sub\": \"u2\", \"tenant\": null}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        f = resolve("[{\"key\": \"{sub}\"}, {\"headers\": {\"tenant\": \"{claim.tenant}\"}}]",
                    bad[i], NULL);
        assert_int_equal(wsb_filter_alternatives(f), 1);
        assert_true(wsb_filter_match(f, u2));
        assert_false(wsb_filter_match(f, u1));
        assert_false(wsb_filter_match(f, nokey));
        wsb_filter_free(f);
    }
    /* Too long after expansion (2 x 200 bytes), a NUL inside, no claims at all: nothing. */
    char claims[700];
    snprintf(claims, sizeof(claims), "{\"a\": \"%0200d\"}", 0);
    f = resolve("{\"key\": \"{claim.a}{claim.a}\"}", claims, NULL);
    assert_int_equal(wsb_filter_alternatives(f), 0);
    assert_false(wsb_filter_match(f, u1));
    assert_string_equal(wsb_filter_key(f, NULL), "F!");
    wsb_filter_free(f);
    f = resolve("{\"key\": \"{sub}\"}", "{\"sub\": \"u\\u0000\"}", NULL);
    assert_int_equal(wsb_filter_alternatives(f), 0);
    wsb_filter_free(f);
    f = resolve("{\"key\": \"{sub}\"}", NULL, NULL);
    assert_int_equal(wsb_filter_alternatives(f), 0);
    assert_false(wsb_filter_match(f, u1));
    wsb_filter_free(f);
    /* An integer claim is its decimal text. */
    f = resolve("{\"key\": \"{claim.id}\"}", "{\"id\": 42}", NULL);
    struct wsb_msg *k42 = msg("42", NULL, NULL);
    assert_true(wsb_filter_match(f, k42));
    wsb_msg_unref(k42);
    wsb_filter_free(f);

    wsb_msg_unref(u1);
    wsb_msg_unref(u2);
    wsb_msg_unref(nokey);
    wsb_msg_unref(u1x);
}

static void test_canonical_keys(void **state)
{
    (void)state;
    /* Order of alternatives and headers, and duplicates, do not change the key. */
    struct wsb_filter *a =
        resolve("[{\"headers\": {\"x\": \"1\", \"y\": \"2\"}}, {\"key\": \"k\"}]", NULL, NULL);
    struct wsb_filter *b =
        resolve("[{\"key\": \"k\"}, {\"headers\": {\"y\": \"2\", \"x\": \"1\"}}, "
                "{\"key\": \"k\"}]",
                NULL, NULL);
    struct wsb_filter *c = resolve("{\"key\": \"{sub}\"}", "{\"sub\": \"k\"}", NULL);
    struct wsb_filter *d = resolve("{\"key\": \"k2\"}", NULL, NULL);
    size_t la, lb;
    const char *ka = wsb_filter_key(a, &la), *kb = wsb_filter_key(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ka, kb, la);
    assert_int_equal(wsb_filter_alternatives(b), 2);
    assert_string_not_equal(wsb_filter_key(c, NULL), wsb_filter_key(d, NULL));
    /* Length-prefixed: a value holding the separators cannot collide. */
    struct wsb_filter *e = resolve("{\"headers\": {\"a\": \"1:b\"}}", NULL, NULL);
    struct wsb_filter *g = resolve("{\"headers\": {\"a\": \"1\", \"b\": \"x\"}}", NULL, NULL);
    assert_string_not_equal(wsb_filter_key(e, NULL), wsb_filter_key(g, NULL));
    wsb_filter_free(a);
    wsb_filter_free(b);
    wsb_filter_free(c);
    wsb_filter_free(d);
    wsb_filter_free(e);
    wsb_filter_free(g);
}

static struct wsb_filter *client(const char *text)
{
    struct wsb_filter_spec *s = spec_of(text, WSB_FILTER_LITERAL, 0);
    assert_non_null(s);
    struct wsb_filter *f = wsb_filter_resolve(s, NULL, NULL, NULL);
    wsb_filter_spec_free(s);
    assert_non_null(f);
    return f;
}

/* `chan` ANDed with the client filter `text`: a narrowing (neither widening nor OOM). */
static struct wsb_filter *narrowed(const struct wsb_filter *chan, const char *text)
{
    bool widen, oom;
    struct wsb_filter *cl = client(text);
    struct wsb_filter *f = wsb_filter_and(chan, cl, NULL, &widen, &oom);
    wsb_filter_free(cl);
    assert_non_null(f);
    assert_false(widen);
    assert_false(oom);
    return f;
}

static void test_narrowing(void **state)
{
    (void)state;
    bool widen, oom;
    struct wsb_msg *u1p = msg("u1", "kind", "paid");
    struct wsb_msg *u1r = msg("u1", "kind", "refund");
    struct wsb_msg *u2p = msg("u2", "kind", "paid");

    struct wsb_filter *chan = resolve("{\"key\": \"{sub}\"}", "{\"sub\": \"u1\"}", NULL);
    /* Same key, one more condition: narrows. */
    struct wsb_filter *f = narrowed(chan, "{\"key\": \"u1\", \"headers\": {\"kind\": \"paid\"}}");
    assert_true(wsb_filter_match(f, u1p));
    assert_false(wsb_filter_match(f, u1r));
    assert_false(wsb_filter_match(f, u2p));
    wsb_filter_free(f);
    /* Headers only: ANDed with the channel's key. */
    f = narrowed(chan, "{\"headers\": {\"kind\": \"paid\"}}");
    assert_true(wsb_filter_match(f, u1p));
    assert_false(wsb_filter_match(f, u2p));
    wsb_filter_free(f);
    /* Another key: widening, refused. */
    struct wsb_filter *cl = client("[{\"key\": \"u2\"}, {\"key\": \"u3\"}]");
    f = wsb_filter_and(chan, cl, NULL, &widen, &oom);
    assert_true(widen);
    assert_false(oom);
    wsb_filter_free(f);
    /* One of two client alternatives fits: the fitting one is kept. */
    wsb_filter_free(cl);
    cl = client("[{\"key\": \"u2\"}, {\"key\": \"u1\"}]");
    f = wsb_filter_and(chan, cl, NULL, &widen, &oom);
    assert_false(widen);
    assert_int_equal(wsb_filter_alternatives(f), 1);
    assert_true(wsb_filter_match(f, u1r));
    assert_false(wsb_filter_match(f, u2p));
    wsb_filter_free(f);
    /* No channel filter (unfiltered or bypass): the client's alone. */
    f = wsb_filter_and(NULL, cl, NULL, &widen, &oom);
    assert_false(widen);
    assert_true(wsb_filter_match(f, u2p));
    wsb_filter_free(f);
    /* Neither: NULL, every record. */
    assert_null(wsb_filter_and(NULL, NULL, NULL, &widen, &oom));
    assert_false(oom);
    /* A channel filter that resolved to nothing: nothing, but not a widening attempt. */
    wsb_filter_free(chan);
    chan = resolve("{\"key\": \"{sub}\"}", "{}", NULL);
    f = wsb_filter_and(chan, cl, NULL, &widen, &oom);
    assert_false(widen);
    assert_int_equal(wsb_filter_alternatives(f), 0);
    wsb_filter_free(f);
    wsb_filter_free(cl);
    wsb_filter_free(chan);
    wsb_msg_unref(u1p);
    wsb_msg_unref(u1r);
    wsb_msg_unref(u2p);
}

static void test_rule_counters(void **state)
{
    (void)state;
    atomic_uint_fast64_t *a = wsb_filter_rule_counter("orders");
    atomic_uint_fast64_t *b = wsb_filter_rule_counter("orders");
    atomic_uint_fast64_t *c = wsb_filter_rule_counter("prices.*");
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    char name[32];
    atomic_uint_fast64_t *last = NULL;
    for (int i = 0; i < WSB_FILTER_LABELS_MAX + 10; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        last = wsb_filter_rule_counter(name);
        assert_non_null(last);
    }
    assert_ptr_equal(last, wsb_filter_rule_counter("other"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),   cmocka_unit_test(test_resolve_and_match),
        cmocka_unit_test(test_canonical_keys), cmocka_unit_test(test_narrowing),
        cmocka_unit_test(test_rule_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
