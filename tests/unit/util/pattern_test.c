/* Unit tests for util/pattern.c: names, syntax, matching, captures, templates, expansion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/pattern.h"

static bool name_ok(const char *s)
{
    return wsb_channel_valid(s, strlen(s));
}

static void test_channel_valid(void **state)
{
    (void)state;
    assert_true(name_ok("a"));
    assert_true(name_ok("orders"));
    assert_true(name_ok("prices.EUR-USD.tick_1"));
    assert_false(name_ok(""));
    assert_false(name_ok("."));
    assert_false(name_ok("a."));
    assert_false(name_ok(".a"));
    assert_false(name_ok("a..b"));
    assert_false(name_ok("a.*"));
    assert_false(name_ok("a b"));
    assert_false(name_ok("a/b"));
    assert_false(name_ok("caf\xc3\xa9"));
    assert_false(wsb_channel_valid("a\0b", 3));

    char big[WSB_CHANNEL_MAX + 2];
    memset(big, 'x', sizeof(big));
    assert_true(wsb_channel_valid(big, WSB_CHANNEL_MAX));
    assert_false(wsb_channel_valid(big, WSB_CHANNEL_MAX + 1));

    assert_true(wsb_segment_valid("user-42", 7));
    assert_false(wsb_segment_valid("a.b", 3));
    assert_false(wsb_segment_valid("", 0));
    assert_false(wsb_segment_valid(NULL, 0));
}

static int check(const char *p, bool templates)
{
    char err[128];
    return wsb_pattern_check(p, templates, err, sizeof(err));
}

static void test_check(void **state)
{
    (void)state;
    assert_int_equal(check("orders", false), 0);
    assert_int_equal(check("*", false), 0);
    assert_int_equal(check("**", false), 0);
    assert_int_equal(check("a.*.b.**", false), 0);
    assert_int_equal(check("", false), -1);
    assert_int_equal(check("a.**.b", false), -1);
    assert_int_equal(check("**.a", false), -1);
    assert_int_equal(check("a*", false), -1);
    assert_int_equal(check("a.*b", false), -1);
    assert_int_equal(check("***", false), -1);
    assert_int_equal(check("a..b", false), -1);
    assert_int_equal(check("a.", false), -1);
    assert_int_equal(check(".a", false), -1);
    assert_int_equal(check("a b", false), -1);
    assert_int_equal(check(NULL, false), -1);

    /* Templates. */
    assert_int_equal(check("user.{sub}", false), -1);
    assert_int_equal(check("user.{sub}", true), 0);
    assert_int_equal(check("user-{sub}.**", true), 0);
    assert_int_equal(check("team.{claim.team}.x{sub}y", true), 0);
    assert_int_equal(check("a.{claim.}", true), -1);
    assert_int_equal(check("a.{claim.a.b}", true), -1);
    assert_int_equal(check("a.{evil}", true), -1);
    assert_int_equal(check("a.{1}", true), -1);
    assert_int_equal(check("a.{sub", true), -1);
    assert_int_equal(check("a.sub}", true), -1);
    assert_int_equal(check("a.{}", true), -1);
    assert_int_equal(check("a.*{sub}", true), -1);

    /* At most 16 captures. */
    assert_int_equal(check("*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*", false), 0);
    assert_int_equal(check("*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.**", false), 0);
    assert_int_equal(check("*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*", false), -1);

    char err[128];
    assert_int_equal(wsb_pattern_check("a.**.b", false, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "last"));
}

static bool m(const char *pat, const char *name)
{
    struct wsb_pattern *p = wsb_pattern_compile(pat, NULL, NULL, NULL);
    assert_non_null(p);
    bool r = wsb_pattern_match(p, name, strlen(name), NULL);
    wsb_pattern_free(p);
    return r;
}

static void test_match(void **state)
{
    (void)state;
    assert_true(m("orders", "orders"));
    assert_false(m("orders", "orders2"));
    assert_false(m("orders", "order"));
    assert_false(m("orders", "orders.x"));
    assert_true(m("a.b", "a.b"));
    assert_false(m("a.b", "a.b."));
    assert_false(m("a.b", "a"));
    assert_true(m("*", "x"));
    assert_false(m("*", "x.y"));
    assert_true(m("prices.*", "prices.eur"));
    assert_false(m("prices.*", "prices"));
    assert_false(m("prices.*", "prices."));
    assert_false(m("prices.*", "prices.a.b"));
    assert_true(m("a.*.c", "a.b.c"));
    assert_false(m("a.*.c", "a..c"));
    assert_true(m("**", "x"));
    assert_true(m("**", "x.y.z"));
    assert_true(m("a.**", "a.b"));
    assert_true(m("a.**", "a.b.c.d"));
    assert_false(m("a.**", "a"));
    assert_false(m("a.**", "a."));
    assert_false(m("a.**", "a..b"));
    assert_false(m("a.**", "b.c"));
    assert_false(m("*", ""));
    assert_false(m("*", "a*"));
    assert_false(m("**", "a.*"));
}

static void test_captures(void **state)
{
    (void)state;
    struct wsb_captures caps;
    struct wsb_pattern *p = wsb_pattern_compile("work.*.x.*.**", NULL, NULL, NULL);
    assert_non_null(p);
    assert_int_equal(wsb_pattern_ncaptures(p), 3);
    const char *name = "work.eu.x.7.a.b";
    assert_true(wsb_pattern_match(p, name, strlen(name), &caps));
    assert_int_equal(caps.n, 3);
    assert_int_equal(caps.cap[0].len, 2);
    assert_memory_equal(caps.cap[0].ptr, "eu", 2);
    assert_memory_equal(caps.cap[1].ptr, "7", 1);
    assert_int_equal(caps.cap[2].len, 3);
    assert_memory_equal(caps.cap[2].ptr, "a.b", 3);

    char out[64];
    assert_int_equal(wsb_pattern_expand("t-{1}-{2}.{3}", &caps, out, sizeof(out)), 10);
    assert_string_equal(out, "t-eu-7.a.b");
    assert_int_equal(wsb_pattern_expand("{4}", &caps, out, sizeof(out)), -1);
    assert_int_equal(wsb_pattern_expand("{0}", &caps, out, sizeof(out)), -1);
    assert_int_equal(wsb_pattern_expand("plain", &caps, out, sizeof(out)), 5);
    assert_int_equal(wsb_pattern_expand("{x}{", &caps, out, sizeof(out)), 4);
    assert_string_equal(out, "{x}{");
    assert_int_equal(wsb_pattern_expand("t-{1}", &caps, out, 4), -1);
    assert_int_equal(wsb_pattern_expand("t-{1}", &caps, out, 5), 4);
    assert_int_equal(wsb_pattern_expand("abc", &caps, out, 3), -1);
    wsb_pattern_free(p);

    /* A literal pattern has no captures. */
    p = wsb_pattern_compile("a.b", NULL, NULL, NULL);
    assert_true(wsb_pattern_match(p, "a.b", 3, &caps));
    assert_int_equal(caps.n, 0);
    wsb_pattern_free(p);

    char err[128];
    assert_int_equal(wsb_pattern_expand_check("t-{1}", 1, err, sizeof(err)), 0);
    assert_int_equal(wsb_pattern_expand_check("t-{2}", 1, err, sizeof(err)), -1);
    assert_int_equal(wsb_pattern_expand_check("t-{0}", 1, err, sizeof(err)), -1);
    assert_int_equal(wsb_pattern_expand_check("t-{16}", 16, err, sizeof(err)), 0);
    assert_int_equal(wsb_pattern_expand_check("no refs", 0, err, sizeof(err)), 0);
}

/* A resolver backed by a fixed table. */
struct claims {
    const char *sub;
    const char *team;
};

static const char *resolve(void *ctx, const char *name, size_t len)
{
    struct claims *c = ctx;
    if (len == 3 && memcmp(name, "sub", 3) == 0)
        return c->sub;
    if (len == 10 && memcmp(name, "claim.team", 10) == 0)
        return c->team;
    return NULL;
}

static struct wsb_pattern *compile_as(const char *pat, const char *sub, bool *dropped)
{
    struct claims c = {.sub = sub, .team = "blue"};
    return wsb_pattern_compile(pat, resolve, &c, dropped);
}

static void test_templates(void **state)
{
    (void)state;
    bool dropped = true;
    struct wsb_pattern *p = compile_as("user.{sub}.**", "alice", &dropped);
    assert_non_null(p);
    assert_false(dropped);
    assert_true(wsb_pattern_match(p, "user.alice.inbox", 16, NULL));
    assert_false(wsb_pattern_match(p, "user.bob.inbox", 14, NULL));
    assert_int_equal(wsb_pattern_ncaptures(p), 1);
    wsb_pattern_free(p);

    p = compile_as("chat.user-{sub}-{claim.team}", "alice", &dropped);
    assert_non_null(p);
    assert_true(wsb_pattern_match(p, "chat.user-alice-blue", 20, NULL));
    assert_false(wsb_pattern_match(p, "chat.user-alice", 15, NULL));
    wsb_pattern_free(p);

    /* The resolved value is not expanded again. */
    p = compile_as("x.{sub}", "a-b_C9", &dropped);
    assert_non_null(p);
    wsb_pattern_free(p);
}

static void test_template_injection(void **state)
{
    (void)state;
    const char *evil[] = {"a.*", "**",    "*", "x.y",         "",     "a b", "{sub}", "..",
                          "a.",  "user}", "{", "caf\xc3\xa9", "a\nb", "$"};
    for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
        bool dropped = false;
        struct wsb_pattern *p = compile_as("user.{sub}", evil[i], &dropped);
        assert_null(p);
        assert_true(dropped);
        p = compile_as("user-{sub}.x", evil[i], &dropped);
        assert_null(p);
        assert_true(dropped);
    }
    /* A missing value drops the pattern; so does a missing resolver. */
    bool dropped = false;
    assert_null(compile_as("user.{sub}", NULL, &dropped));
    assert_true(dropped);
    dropped = false;
    assert_null(compile_as("user.{claim.other}", "alice", &dropped));
    assert_true(dropped);
    dropped = false;
    assert_null(wsb_pattern_compile("user.{sub}", NULL, NULL, &dropped));
    assert_true(dropped);

    /* A syntax error is not "dropped". */
    dropped = true;
    assert_null(compile_as("a.**.b", "alice", &dropped));
    assert_false(dropped);
    dropped = true;
    assert_null(compile_as("a.{nope}", "alice", &dropped));
    assert_false(dropped);

    /* A resolved pattern longer than any channel name is dropped. */
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    dropped = false;
    assert_null(compile_as("a.{sub}", big, &dropped));
    assert_true(dropped);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channel_valid), cmocka_unit_test(test_check),
        cmocka_unit_test(test_match),         cmocka_unit_test(test_captures),
        cmocka_unit_test(test_templates),     cmocka_unit_test(test_template_injection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
