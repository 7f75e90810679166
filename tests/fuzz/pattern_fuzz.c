/* libFuzzer target for util/pattern.c: compiles random patterns and templates, matches random
 * names and checks invariants. Input: "PATTERN\nNAME\nSUBVALUE\nTEMPLATE". */
/* The fuzz tree is RelWithDebInfo (NDEBUG): keep the invariants checked. */
#undef NDEBUG
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/pattern.h"

struct fields {
    char *part[4];
};

static const char *resolve(void *ctx, const char *name, size_t len)
{
    struct fields *f = ctx;
    if (len == 3 && memcmp(name, "sub", 3) == 0)
        return f->part[2];
    if (len > 6 && memcmp(name, "claim.", 6) == 0)
        return (len % 2) ? f->part[2] : "c";
    return NULL;
}

/* Replaces every "{sub}" in `pat` with `value` (test oracle for template resolution). */
static char *substitute(const char *pat, const char *value)
{
    size_t n = strlen(pat), vlen = strlen(value);
    char *out = malloc(n * (vlen + 1) + 1), *o = out;
    for (size_t i = 0; i < n;) {
        if (strncmp(pat + i, "{sub}", 5) == 0) {
            memcpy(o, value, vlen);
            o += vlen;
            i += 5;
        } else {
            *o++ = pat[i++];
        }
    }
    *o = '\0';
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fields f = {{NULL}};
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    /* Split into at most four NUL-terminated parts; missing parts are empty. */
    char *p = copy;
    for (int i = 0; i < 4; i++) {
        f.part[i] = p;
        char *nl = strchr(p, '\n');
        if (!nl || i == 3) {
            p = p + strlen(p);
            continue;
        }
        *nl = '\0';
        p = nl + 1;
    }
    const char *pat = f.part[0], *name = f.part[1], *sub = f.part[2], *tmpl = f.part[3];
    size_t nlen = strlen(name);
    char err[128];

    bool dropped = true;
    struct wsb_pattern *cp = wsb_pattern_compile(pat, resolve, &f, &dropped);
    int syntax_ok = wsb_pattern_check(pat, true, err, sizeof(err));
    int plain_ok = wsb_pattern_check(pat, false, err, sizeof(err));
    if (cp)
        assert(syntax_ok == 0 && !dropped);
    if (syntax_ok != 0)
        assert(!cp && !dropped);
    if (plain_ok == 0)
        assert(syntax_ok == 0 && cp); /* no templates: never dropped */
    if (dropped)
        assert(!cp);
    if (strstr(pat, "{sub}") && syntax_ok == 0 && !wsb_segment_valid(sub, strlen(sub)))
        assert(dropped && !cp);

    if (cp) {
        struct wsb_captures caps;
        bool hit = wsb_pattern_match(cp, name, nlen, &caps);
        if (hit) {
            assert(wsb_channel_valid(name, nlen));
            assert(caps.n == wsb_pattern_ncaptures(cp));
            for (size_t i = 0; i < caps.n; i++)
                assert(caps.cap[i].ptr >= name && caps.cap[i].ptr + caps.cap[i].len <= name + nlen);
            char out[64];
            int n = wsb_pattern_expand(tmpl, &caps, out, sizeof(out));
            assert(n < (int)sizeof(out));
            if (n >= 0)
                assert(strlen(out) == (size_t)n);
            /* A template that passed expand_check always expands into enough room. */
            if (wsb_pattern_expand_check(tmpl, caps.n, err, sizeof(err)) == 0) {
                size_t room = strlen(tmpl) * WSB_CHANNEL_MAX + 1;
                char *big = malloc(room);
                assert(wsb_pattern_expand(tmpl, &caps, big, room) >= 0);
                free(big);
            }
        }
        /* A template-free, wildcard-free pattern matches exactly its own text. */
        if (plain_ok == 0 && !strchr(pat, '*'))
            assert(hit == (strcmp(pat, name) == 0));
        /* {sub} resolution is a plain substitution of a valid segment. */
        if (strstr(pat, "{sub}") && !strchr(pat, '*') && !strstr(pat, "{claim.")) {
            char *lit = substitute(pat, sub);
            assert(wsb_pattern_match(cp, lit, strlen(lit), NULL) ==
                   (strlen(lit) <= WSB_CHANNEL_MAX));
            free(lit);
        }
        wsb_pattern_free(cp);
    }
    wsb_channel_valid(name, nlen);
    free(copy);
    return 0;
}
