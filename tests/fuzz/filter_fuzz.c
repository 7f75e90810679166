/* libFuzzer target for auth/filter.c: the filter spec parser (a channel rule's `filter` with
 * templates, and a client's `subscribe.filter` with literal values), then resolution, the
 * conjunction and matching, with invariants. Input: "CLAIMS_JSON\nSPEC_JSON\nKEY\nHNAME=HVALUE";
 * the spec is parsed in both modes. */
/* The fuzz tree is RelWithDebInfo (NDEBUG): keep the invariants checked. */
#undef NDEBUG
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/filter.h"
#include "connectors/connector.h"

static char *line(const char **p, const char *end)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *e = nl ? nl : end;
    char *s = strndup(*p, (size_t)(e - *p));
    *p = nl ? nl + 1 : end;
    return s;
}

static void check(struct wsb_filter_spec *spec, const json_t *claims,
                  const struct wsb_captures *caps, const struct wsb_msg *m)
{
    struct wsb_filter *a = wsb_filter_resolve(spec, claims, caps, NULL);
    struct wsb_filter *b = wsb_filter_resolve(spec, claims, caps, NULL);
    if (!a || !b)
        goto out;
    /* Resolution is deterministic: same canonical key. */
    size_t la, lb;
    const char *ka = wsb_filter_key(a, &la), *kb = wsb_filter_key(b, &lb);
    assert(la == lb && memcmp(ka, kb, la) == 0);
    bool ma = wsb_filter_match(a, m);
    if (wsb_filter_alternatives(a) == 0)
        assert(!ma); /* nothing, never all */
    /* A filter ANDed with itself takes the same records, with no widening; with one
     * alternative it is the same filter (more may leave redundant pairs in the text). */
    bool widen, oom;
    struct wsb_filter *c = wsb_filter_and(a, b, NULL, &widen, &oom);
    if (c) {
        assert(!widen);
        assert(wsb_filter_match(c, m) == ma);
        size_t lc;
        const char *kc = wsb_filter_key(c, &lc);
        if (wsb_filter_alternatives(a) <= 1)
            assert(lc == la && memcmp(kc, ka, la) == 0);
        wsb_filter_free(c);
    }
    /* ANDed with anything, a record matching the result matches the channel's filter. */
    c = wsb_filter_and(a, NULL, NULL, &widen, &oom);
    if (c) {
        assert(wsb_filter_match(c, m) == ma);
        wsb_filter_free(c);
    }
out:
    wsb_filter_free(a);
    wsb_filter_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    char *claims_text = line(&p, end), *spec_text = line(&p, end), *key = line(&p, end),
         *hdr = line(&p, end);
    json_t *claims = json_loads(claims_text, JSON_ALLOW_NUL, NULL);
    json_t *spec_json = json_loads(spec_text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    char *eq = strchr(hdr, '=');
    struct wsb_header h = {hdr, (const uint8_t *)"", 0};
    if (eq) {
        *eq = '\0';
        h.value = (const uint8_t *)eq + 1;
        h.value_len = strlen(eq + 1);
    }
    struct wsb_msg *m = wsb_msg_new(1, 0, 0, -1, key, strlen(key), "{}", 2, &h, hdr[0] ? 1 : 0);
    struct wsb_captures caps = {.n = 2};
    caps.cap[0].ptr = "c1";
    caps.cap[0].len = 2;
    caps.cap[1].ptr = key;
    caps.cap[1].len = strlen(key);
    char path[128], err[160];
    if (spec_json && m) {
        for (int mode = 0; mode < 2; mode++) {
            struct wsb_filter_spec *s =
                wsb_filter_spec_parse(spec_json, mode ? WSB_FILTER_LITERAL : WSB_FILTER_TEMPLATES,
                                      caps.n, path, sizeof(path), err, sizeof(err));
            if (!s) {
                assert(err[0] != '\0');
                continue;
            }
            check(s, claims, &caps, m);
            wsb_filter_spec_free(s);
        }
    }
    wsb_msg_unref(m);
    json_decref(spec_json);
    json_decref(claims);
    free(claims_text);
    free(spec_text);
    free(key);
    free(hdr);
    return 0;
}
