/* Unit tests for config/expand.c: ${VAR}, ${VAR:-default}, $$ and lone '$'. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

static char *ex(const char *in, char *err)
{
    return wsb_config_expand(in, err, 128);
}

static void expect(const char *in, const char *want)
{
    char err[128];
    char *out = ex(in, err);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
}

static void expect_error(const char *in, const char *needle)
{
    char err[128];
    char *out = ex(in, err);
    assert_null(out);
    assert_non_null(strstr(err, needle));
}

static int setup(void **state)
{
    (void)state;
    setenv("WSB_T_SET", "value", 1);
    setenv("WSB_T_EMPTY", "", 1);
    setenv("WSB_T_DOLLAR", "${WSB_T_SET}", 1);
    unsetenv("WSB_T_UNSET");
    return 0;
}

static void test_plain(void **state)
{
    (void)state;
    expect("", "");
    expect("no variables", "no variables");
    expect("${WSB_T_SET}", "value");
    expect("a-${WSB_T_SET}-b-${WSB_T_SET}", "a-value-b-value");
    expect("${WSB_T_EMPTY}", "");
}

static void test_defaults(void **state)
{
    (void)state;
    expect("${WSB_T_UNSET:-fallback}", "fallback");
    expect("${WSB_T_UNSET:-}", "");
    expect("${WSB_T_SET:-fallback}", "value");
    expect("${WSB_T_EMPTY:-fallback}", "fallback"); /* shell semantics of :- */
    expect("${WSB_T_UNSET:-kafka:9092}", "kafka:9092");
    expect("${WSB_T_UNSET:-a$b}", "a$b");
}

static void test_dollar(void **state)
{
    (void)state;
    expect("$", "$");
    expect("cost: 5$", "cost: 5$");
    expect("$x", "$x");
    expect("$$", "$");
    expect("$${WSB_T_SET}", "${WSB_T_SET}");
    expect("$$$", "$$");
    /* Values are not expanded again. */
    expect("${WSB_T_DOLLAR}", "${WSB_T_SET}");
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("${WSB_T_UNSET}", "WSB_T_UNSET");
    expect_error("x ${WSB_T_UNSET} y", "not set");
    expect_error("${", "bad variable name");
    expect_error("${}", "bad variable name");
    expect_error("${1X}", "bad variable name");
    expect_error("${WSB_T_SET", "malformed");
    expect_error("${WSB_T_SET:-no end", "unterminated");
    expect_error("${WSB_T_SET-x}", "malformed");
    expect_error("${A B}", "malformed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_dollar),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
