/* Unit tests for util/log.c: stderr is redirected to a temp file and every line parsed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

static int saved_stderr = -1;
static FILE *capture_file;

static void capture_begin(void)
{
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* Restores stderr and returns everything written meanwhile (caller frees). */
static char *capture_end(size_t *len)
{
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    fseek(capture_file, 0, SEEK_END);
    long n = ftell(capture_file);
    rewind(capture_file);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, capture_file), (size_t)n);
    s[n] = '\0';
    fclose(capture_file);
    if (len)
        *len = (size_t)n;
    return s;
}

/* Parses exactly one JSON line. */
static json_t *one_line(const char *s)
{
    size_t n = strlen(s);
    assert_true(n > 0);
    assert_int_equal(s[n - 1], '\n');
    assert_null(memchr(s, '\n', n - 1));
    json_error_t e;
    json_t *j = json_loadb(s, n, 0, &e);
    if (j == NULL)
        fail_msg("bad JSON line: %s (%s)", e.text, s);
    return j;
}

static void test_json_fields(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_INFO, true);
    capture_begin();
    wsb_log(WSB_LOG_INFO, "connected", WSB_LSTR("ip", "10.0.0.1"), WSB_LUINT("conn", 42),
            WSB_LINT("delta", -7), WSB_LDBL("ratio", 0.25), WSB_LBOOL("tls", true),
            WSB_LSTR("sub", NULL), WSB_LDBL("nan", NAN));
    char *out = capture_end(NULL);
    json_t *j = one_line(out);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "connected");
    assert_string_equal(json_string_value(json_object_get(j, "ip")), "10.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(j, "conn")), 42);
    assert_int_equal(json_integer_value(json_object_get(j, "delta")), -7);
    assert_true(json_real_value(json_object_get(j, "ratio")) == 0.25);
    assert_true(json_is_true(json_object_get(j, "tls")));
    assert_true(json_is_null(json_object_get(j, "sub")));
    assert_true(json_is_null(json_object_get(j, "nan")));

    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    assert_int_equal(regexec(&re, json_string_value(json_object_get(j, "ts")), 0, NULL, 0), 0);
    regfree(&re);
    /* ts, level, msg come first */
    assert_int_equal(strncmp(out, "{\"ts\":\"", 7), 0);
    assert_non_null(strstr(out, "\",\"level\":\"info\",\"msg\":\"connected\","));
    json_decref(j);
    free(out);

    /* beyond jansson's int64, so checked as text */
    capture_begin();
    wsb_log(WSB_LOG_INFO, "big", WSB_LUINT("big", UINT64_MAX), WSB_LINT("min", INT64_MIN));
    out = capture_end(NULL);
    assert_non_null(strstr(out, "\"big\":18446744073709551615,\"min\":-9223372036854775808}\n"));
    free(out);
}

static void test_json_escaping(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_DEBUG, true);
    capture_begin();
    wsb_log(WSB_LOG_WARN, "quote\" back\\ nl\n tab\t ctl\x01 del\x7f",
            WSB_LSTR("utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
            WSB_LSTR("bad", "a\xff"
                            "b\xc0\xaf"
                            "c\xed\xa0\x80"
                            "d\xf4\x90\x80\x80"
                            "e\xe2\x82"),
            WSB_LSTR("k\"ey", "v"));
    char *out = capture_end(NULL);
    json_t *j = one_line(out);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "quote\" back\\ nl\n tab\t ctl\x01 del\x7f");
    assert_string_equal(json_string_value(json_object_get(j, "utf8")),
                        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    /* every invalid byte is one U+FFFD */
    const char *r = "\xef\xbf\xbd";
    char want[128];
    snprintf(want, sizeof(want), "a%sb%s%sc%s%s%sd%s%s%s%se%s%s", r, r, r, r, r, r, r, r, r, r, r,
             r);
    assert_string_equal(json_string_value(json_object_get(j, "bad")), want);
    assert_string_equal(json_string_value(json_object_get(j, "k\"ey")), "v");
    json_decref(j);
    free(out);
}

static void test_level_filter(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_WARN, true);
    assert_false(wsb_log_enabled(WSB_LOG_INFO));
    assert_true(wsb_log_enabled(WSB_LOG_ERROR));
    size_t len;
    capture_begin();
    wsb_log0(WSB_LOG_DEBUG, "no");
    wsb_log0(WSB_LOG_INFO, "no");
    wsb_log0(WSB_LOG_ERROR, "yes");
    char *out = capture_end(&len);
    json_t *j = one_line(out);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "yes");
    json_decref(j);
    free(out);
}

static void test_level_parse(void **state)
{
    (void)state;
    assert_int_equal(wsb_log_level_parse("debug"), WSB_LOG_DEBUG);
    assert_int_equal(wsb_log_level_parse("info"), WSB_LOG_INFO);
    assert_int_equal(wsb_log_level_parse("warn"), WSB_LOG_WARN);
    assert_int_equal(wsb_log_level_parse("error"), WSB_LOG_ERROR);
    assert_int_equal(wsb_log_level_parse("INFO"), -1);
    assert_int_equal(wsb_log_level_parse(""), -1);
    assert_int_equal(wsb_log_level_parse("trace"), -1);
    assert_int_equal(wsb_log_level_parse(NULL), -1);
}

static void test_truncation(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_INFO, true);
    size_t big = 20000;
    char *s = malloc(big + 1);
    assert_non_null(s);
    for (size_t i = 0; i < big; i++)
        s[i] = i % 3 == 0 ? '"' : (char)('a' + i % 26);
    s[big] = '\0';
    size_t len;
    capture_begin();
    wsb_log(WSB_LOG_INFO, "big", WSB_LUINT("before", 1), WSB_LSTR("payload", s),
            WSB_LUINT("after", 2));
    /* a multibyte character straddling the cut is never split */
    memset(s, 0, big);
    for (size_t i = 0; i + 3 <= 9000; i += 3)
        memcpy(s + i, "\xe2\x82\xac", 3);
    wsb_log(WSB_LOG_INFO, "euro", WSB_LSTR("e", s));
    /* many small fields: the last ones are dropped, never half-written */
    struct wsb_log_field f[2000];
    char keys[2000][8];
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        f[i] = WSB_LUINT(keys[i], 1234567);
    }
    wsb_log_fields(WSB_LOG_INFO, "many", f, 2000);
    char *out = capture_end(&len);
    free(s);

    char *line = out;
    for (int n = 0; n < 3; n++) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        size_t ll = (size_t)(nl - line) + 1;
        assert_true(ll <= 8192);
        char save = nl[1];
        nl[1] = '\0';
        json_t *j = one_line(line);
        nl[1] = save;
        assert_true(json_is_true(json_object_get(j, "truncated")));
        if (n == 0) {
            assert_int_equal(json_integer_value(json_object_get(j, "before")), 1);
            assert_null(json_object_get(j, "after"));
            assert_true(json_string_length(json_object_get(j, "payload")) > 4000);
        } else if (n == 1) {
            const char *e = json_string_value(json_object_get(j, "e"));
            assert_non_null(e);
            assert_int_equal(strlen(e) % 3, 0);
        } else {
            assert_int_equal(json_integer_value(json_object_get(j, "k0")), 1234567);
            assert_null(json_object_get(j, "k1999"));
        }
        json_decref(j);
        line = nl + 1;
    }
    assert_int_equal(*line, '\0');
    free(out);
}

static void test_text_format(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_INFO, false);
    capture_begin();
    wsb_log(WSB_LOG_ERROR, "listen failed", WSB_LSTR("addr", "0.0.0.0:8080"),
            WSB_LSTR("why", "in use"), WSB_LINT("code", -3), WSB_LBOOL("ok", false),
            WSB_LSTR("empty", ""));
    char *out = capture_end(NULL);
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z ERROR listen "
                             "failed addr=0\\.0\\.0\\.0:8080 why=\"in use\" code=-3 ok=false "
                             "empty=\"\"\n$",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    if (regexec(&re, out, 0, NULL, 0) != 0)
        fail_msg("unexpected text line: %s", out);
    regfree(&re);
    free(out);
    wsb_log_init(WSB_LOG_INFO, true);
}

static void *log_thread(void *arg)
{
    char id[16];
    snprintf(id, sizeof(id), "t%d", (int)(intptr_t)arg);
    char pad[600];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < 200; i++)
        wsb_log(WSB_LOG_INFO, "tick", WSB_LSTR("thread", id), WSB_LINT("i", i),
                WSB_LSTR("pad", pad));
    return NULL;
}

static void test_threads_whole_lines(void **state)
{
    (void)state;
    wsb_log_init(WSB_LOG_INFO, true);
    pthread_t t[8];
    capture_begin();
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    char *out = capture_end(NULL);
    int lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *j = json_loads(l, 0, &e);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "msg")), "tick");
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 8 * 200);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields),         cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_level_filter),        cmocka_unit_test(test_level_parse),
        cmocka_unit_test(test_truncation),          cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_threads_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
