/* Tests for auth/token.c: each token source enabled and disabled, order, malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/token.h"

#define TOK "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_"
#define ALL (WSB_TOKEN_HEADER | WSB_TOKEN_QUERY | WSB_TOKEN_SUBPROTOCOL | WSB_TOKEN_COOKIE)

struct in {
    const char *authorization, *query, *protocols, *cookies;
};

static long find(unsigned sources, struct in i, char *out, size_t outlen, const char **src)
{
    struct wsb_auth_conf conf = {
        .enabled = true, .token_sources = sources, .cookie_name = "wsb_token"};
    struct wsb_token_inputs in = {
        .authorization = i.authorization,
        .authorization_len = i.authorization ? strlen(i.authorization) : 0,
        .query = i.query,
        .query_len = i.query ? strlen(i.query) : 0,
        .protocols = i.protocols,
        .protocols_len = i.protocols ? strlen(i.protocols) : 0,
        .cookies = i.cookies,
        .cookies_len = i.cookies ? strlen(i.cookies) : 0,
    };
    return wsb_token_find(&conf, &in, out, outlen, src);
}

static void test_sources(void **state)
{
    static const struct {
        unsigned sources;
        struct in in;
        long want; /* 1: TOK found, 0: none, -1: malformed */
        const char *source;
    } cases[] = {
        {ALL, {.authorization = "Bearer " TOK}, 1, "header"},
        {ALL, {.authorization = "bearer   " TOK "  "}, 1, "header"},
        {ALL, {.authorization = "BEARER\t" TOK}, 1, "header"},
        {ALL, {.authorization = "Basic dXNlcjpwYXNz"}, 0, NULL},
        {ALL, {.authorization = "Bearer"}, -1, "header"},
        {ALL, {.authorization = "Bearer a b"}, -1, "header"},
        {ALL, {.authorization = "BearerX " TOK}, 0, NULL},
        {ALL & ~WSB_TOKEN_HEADER, {.authorization = "Bearer " TOK}, 0, NULL},
        {ALL, {.query = "access_token=" TOK}, 1, "query"},
        {ALL, {.query = "a=1&access_token=" TOK "&b=2"}, 1, "query"},
        {ALL,
         {.query = "access%5Ftoken=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln%2D%5f"},
         1,
         "query"},
        {ALL, {.query = "access_token=%zz"}, -1, "query"},
        {ALL, {.query = "access_token=abc%"}, -1, "query"},
        {ALL, {.query = "access_token=a%20b"}, -1, "query"},
        {ALL, {.query = "access_tokens=" TOK}, 0, NULL},
        {ALL, {.query = "access_token"}, -1, "query"},
        {ALL, {.query = "access_token="}, -1, "query"},
        {ALL, {.query = "a=1&access_token=&b=2"}, -1, "query"},
        /* an empty query token is not skipped for a later source */
        {ALL, {.query = "access_token=", .protocols = "bearer." TOK}, -1, "query"},
        {ALL, {.query = "&&&"}, 0, NULL},
        {ALL & ~WSB_TOKEN_QUERY, {.query = "access_token=" TOK}, 0, NULL},
        {ALL, {.protocols = "wsbridge.v1, bearer." TOK}, 1, "subprotocol"},
        {ALL, {.protocols = "bearer." TOK ",wsbridge.v1"}, 1, "subprotocol"},
        {ALL, {.protocols = "wsbridge.v1"}, 0, NULL},
        {ALL, {.protocols = "bearer."}, -1, "subprotocol"},
        {ALL, {.protocols = "bearer.a=b"}, -1, "subprotocol"},
        {ALL & ~WSB_TOKEN_SUBPROTOCOL, {.protocols = "bearer." TOK}, 0, NULL},
        {ALL, {.cookies = "a=b; wsb_token=" TOK "; c=d"}, 1, "cookie"},
        {ALL, {.cookies = "wsb_token=\"" TOK "\""}, 1, "cookie"},
        {ALL, {.cookies = "wsb_tokenx=" TOK}, 0, NULL},
        {ALL, {.cookies = "wsb_token="}, -1, "cookie"},
        {ALL & ~WSB_TOKEN_COOKIE, {.cookies = "wsb_token=" TOK}, 0, NULL},
        /* order: header before query before subprotocol before cookie */
        {ALL, {.authorization = "Bearer " TOK, .query = "access_token=x.y.z"}, 1, "header"},
        {ALL, {.query = "access_token=" TOK, .protocols = "bearer.x.y.z"}, 1, "query"},
        {ALL, {.protocols = "bearer." TOK, .cookies = "wsb_token=x.y.z"}, 1, "subprotocol"},
        /* a non-Bearer Authorization falls through to the next source */
        {ALL, {.authorization = "Basic x", .query = "access_token=" TOK}, 1, "query"},
        {0, {.authorization = "Bearer " TOK, .query = "access_token=" TOK}, 0, NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[WSB_TOKEN_MAX + 1];
        const char *src = "unset";
        long n = find(cases[i].sources, cases[i].in, out, sizeof(out), &src);
        if (cases[i].want == 1) {
            if (n != (long)strlen(TOK) || strcmp(out, TOK) != 0)
                fail_msg("case %zu: got %ld '%s'", i, n, out);
        } else if (n != cases[i].want) {
            fail_msg("case %zu: got %ld, want %ld", i, n, cases[i].want);
        }
        if (cases[i].want != 0 && strcmp(src, cases[i].source) != 0)
            fail_msg("case %zu: source %s, want %s", i, src, cases[i].source);
        if (cases[i].want == 0 && src != NULL)
            fail_msg("case %zu: source %s on none", i, src);
    }
}

static void test_limits(void **state)
{
    static char big[WSB_TOKEN_MAX + 32];
    char out[64];
    const char *src;
    (void)state;
    /* out too small */
    assert_int_equal(find(ALL, (struct in){.authorization = "Bearer " TOK}, out, 8, &src), -1);
    /* longer than WSB_TOKEN_MAX */
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', WSB_TOKEN_MAX + 1);
    big[7 + WSB_TOKEN_MAX + 1] = '\0';
    char *huge = malloc(WSB_TOKEN_MAX + 2);
    assert_int_equal(find(ALL, (struct in){.authorization = big}, huge, WSB_TOKEN_MAX + 2, &src),
                     -1);
    free(huge);
    /* cookie source without a cookie name is off */
    struct wsb_auth_conf conf = {.token_sources = WSB_TOKEN_COOKIE};
    struct wsb_token_inputs in = {.cookies = "wsb_token=" TOK, .cookies_len = 10 + strlen(TOK)};
    assert_int_equal(wsb_token_find(&conf, &in, out, sizeof(out), &src), 0);
}

/* Every byte value as a one-character token: only A-Z a-z 0-9 - _ . are accepted (RFC 7515
 * §7.1), in each source. */
static void test_charset(void **state)
{
    const char *src;
    char out[8];
    (void)state;
    for (int c = 0; c < 256; c++) {
        bool want = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
        char hdr[] = {'B', 'e', 'a', 'r', 'e', 'r', ' ', (char)c};
        struct wsb_auth_conf conf = {.token_sources = WSB_TOKEN_HEADER};
        struct wsb_token_inputs in = {.authorization = hdr, .authorization_len = sizeof(hdr)};
        long r = wsb_token_find(&conf, &in, out, sizeof(out), &src);
        if (c == ' ' || c == '\t') /* trimmed: a bare "Bearer", present and empty */
            assert_int_equal(r, -1);
        else
            assert_int_equal(r, want ? 1 : -1);
        if (want)
            assert_int_equal((unsigned char)out[0], c);
        char cookie[] = {'w', 's', 'b', '_', 't', 'o', 'k', 'e', 'n', '=', (char)c};
        conf =
            (struct wsb_auth_conf){.token_sources = WSB_TOKEN_COOKIE, .cookie_name = "wsb_token"};
        in = (struct wsb_token_inputs){.cookies = cookie, .cookies_len = sizeof(cookie)};
        r = wsb_token_find(&conf, &in, out, sizeof(out), &src);
        if (c != ' ' && c != '\t' && c != '"')
            assert_int_equal(r, want ? 1 : -1);
    }
}

static void test_select_protocol(void **state)
{
    static const struct {
        const char *offer;
        bool picked;
    } cases[] = {
        {"wsbridge.v1", true},
        {"bearer." TOK ", wsbridge.v1", true},
        {" wsbridge.v1 ,bearer.x", true},
        {"bearer.wsbridge.v1", false},
        {"wsbridge.v2", false},
        {"wsbridge.v1x", false},
        {"", false},
        {",,,", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *p = wsb_token_select_protocol(cases[i].offer, strlen(cases[i].offer));
        if (cases[i].picked)
            assert_string_equal(p, "wsbridge.v1");
        else
            assert_null(p);
    }
    assert_null(wsb_token_select_protocol(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_charset),
        cmocka_unit_test(test_select_protocol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
