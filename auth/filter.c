/* Per-record filters: spec parsing, per-subscription resolution, conjunction with a client's
 * filter, canonical group keys and the byte-exact match the hub runs once per group. */
#include "auth/filter.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/connector.h"
#include "util/buf.h"

/* ---- Specs ------------------------------------------------------------------------------ */

enum piece_kind { P_LIT, P_SUB, P_CLAIM, P_CAP };

struct piece {
    enum piece_kind kind;
    char *text; /* P_LIT: the bytes; P_CLAIM: the claim name (NUL-terminated) */
    size_t len;
    unsigned cap; /* P_CAP: 1-based capture index */
};

struct tmpl {
    struct piece *p;
    size_t n;
};

struct spec_hdr {
    char *name;
    size_t name_len;
    struct tmpl value;
};

struct spec_alt {
    bool has_key;
    struct tmpl key;
    struct spec_hdr *h;
    size_t nh;
};

struct wsb_filter_spec {
    struct spec_alt *alts;
    size_t n;
};

static void tmpl_free(struct tmpl *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->p[i].text);
    free(t->p);
    t->p = NULL;
    t->n = 0;
}

void wsb_filter_spec_free(struct wsb_filter_spec *spec)
{
    if (!spec)
        return;
    for (size_t i = 0; i < spec->n; i++) {
        struct spec_alt *a = &spec->alts[i];
        tmpl_free(&a->key);
        for (size_t j = 0; j < a->nh; j++) {
            free(a->h[j].name);
            tmpl_free(&a->h[j].value);
        }
        free(a->h);
    }
    free(spec->alts);
    free(spec);
}

static int add_piece(struct tmpl *t, enum piece_kind kind, const char *text, size_t len,
                     unsigned cap)
{
    struct piece *np = realloc(t->p, (t->n + 1) * sizeof(*np));
    if (!np)
        return -1;
    t->p = np;
    struct piece *p = &t->p[t->n];
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->cap = cap;
    if (text) {
        if (!(p->text = malloc(len + 1)))
            return -1;
        memcpy(p->text, text, len);
        p->text[len] = '\0';
        p->len = len;
    }
    t->n++;
    return 0;
}

struct perr {
    char *path, *msg;
    size_t pathlen, msglen;
};

static void seterr(struct perr *e, const char *path, const char *msg)
{
    if (e->pathlen)
        snprintf(e->path, e->pathlen, "%s", path);
    if (e->msglen)
        snprintf(e->msg, e->msglen, "%s", msg);
}

/* One value: a JSON string, literal or a template. Returns 0, or -1 with err set. */
static int parse_value(const json_t *v, enum wsb_filter_mode mode, size_t ncaps, struct tmpl *t,
                       const char *path, struct perr *e)
{
    if (!json_is_string(v)) {
        seterr(e, path, "must be a string");
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > WSB_FILTER_VALUE_MAX || memchr(s, '\0', n)) {
        seterr(e, path, "must be 1..256 bytes with no NUL");
        return -1;
    }
    if (mode == WSB_FILTER_LITERAL) {
        if (add_piece(t, P_LIT, s, n, 0) < 0)
            goto oom;
        return 0;
    }
    size_t i = 0;
    while (i < n) {
        const char *open = memchr(s + i, '{', n - i);
        size_t lit = open ? (size_t)(open - (s + i)) : n - i;
        if (lit && add_piece(t, P_LIT, s + i, lit, 0) < 0)
            goto oom;
        i += lit;
        if (!open)
            break;
        const char *close = memchr(open, '}', n - i);
        if (!close) {
            seterr(e, path, "unclosed '{' (templates: {sub}, {claim.NAME}, {N})");
            return -1;
        }
        const char *name = open + 1;
        size_t nl = (size_t)(close - name);
        if (nl == 3 && memcmp(name, "sub", 3) == 0) {
            if (add_piece(t, P_SUB, NULL, 0, 0) < 0)
                goto oom;
        } else if (nl > 6 && memcmp(name, "claim.", 6) == 0 && !memchr(name, '{', nl)) {
            if (add_piece(t, P_CLAIM, name + 6, nl - 6, 0) < 0)
                goto oom;
        } else if (nl >= 1 && nl <= 2 && name[0] >= '1' && name[0] <= '9' &&
                   (nl == 1 || (name[1] >= '0' && name[1] <= '9'))) {
            unsigned c = (unsigned)(name[0] - '0');
            if (nl == 2)
                c = c * 10 + (unsigned)(name[1] - '0');
            if (c > ncaps || c > WSB_PATTERN_MAX_CAPTURES) {
                char m[96];
                snprintf(m, sizeof(m), "{%u} refers to a capture the channel pattern has not (%zu)",
                         c, ncaps);
                seterr(e, path, m);
                return -1;
            }
            if (add_piece(t, P_CAP, NULL, 0, c) < 0)
                goto oom;
        } else {
            seterr(e, path, "unknown template (use {sub}, {claim.NAME} or {N})");
            return -1;
        }
        i = (size_t)(close - s) + 1;
    }
    return 0;
oom:
    seterr(e, path, "out of memory");
    return -1;
}

static int parse_alt(const json_t *o, enum wsb_filter_mode mode, size_t ncaps, struct spec_alt *a,
                     const char *path, struct perr *e)
{
    char sub[512];
    const char *k;
    const json_t *v;

    if (!json_is_object(o)) {
        seterr(e, path, "must be an object {\"key\": ..., \"headers\": {...}}");
        return -1;
    }
    json_object_foreach((json_t *)o, k, v)
    {
        snprintf(sub, sizeof(sub), "%s%skey", path, path[0] ? "." : "");
        if (strcmp(k, "key") == 0) {
            a->has_key = true;
            if (parse_value(v, mode, ncaps, &a->key, sub, e) < 0)
                return -1;
        } else if (strcmp(k, "headers") == 0) {
            snprintf(sub, sizeof(sub), "%s%sheaders", path, path[0] ? "." : "");
            if (!json_is_object(v) || json_object_size(v) == 0) {
                seterr(e, sub, "must be a non-empty object of NAME: value");
                return -1;
            }
            if (json_object_size(v) > WSB_FILTER_HEADERS_MAX) {
                seterr(e, sub, "more than 16 header conditions");
                return -1;
            }
            if (!(a->h = calloc(json_object_size(v), sizeof(*a->h)))) {
                seterr(e, sub, "out of memory");
                return -1;
            }
            const char *name;
            size_t nlen;
            const json_t *hv;
            json_object_keylen_foreach((json_t *)v, name, nlen, hv)
            {
                char hp[600];
                snprintf(hp, sizeof(hp), "%s.%.*s", sub, (int)(nlen > 64 ? 64 : nlen), name);
                if (nlen == 0 || nlen > WSB_FILTER_VALUE_MAX || memchr(name, '\0', nlen)) {
                    seterr(e, hp, "header name must be 1..256 bytes with no NUL");
                    return -1;
                }
                struct spec_hdr *h = &a->h[a->nh++];
                if (!(h->name = strndup(name, nlen))) {
                    seterr(e, hp, "out of memory");
                    return -1;
                }
                h->name_len = nlen;
                if (parse_value(hv, mode, ncaps, &h->value, hp, e) < 0)
                    return -1;
            }
        } else {
            snprintf(sub, sizeof(sub), "%s%s%.64s", path, path[0] ? "." : "", k);
            seterr(e, sub, "unknown key (a filter has \"key\" and \"headers\")");
            return -1;
        }
    }
    if (!a->has_key && a->nh == 0) {
        seterr(e, path, "needs \"key\" or \"headers\"");
        return -1;
    }
    return 0;
}

struct wsb_filter_spec *wsb_filter_spec_parse(const json_t *v, enum wsb_filter_mode mode,
                                              size_t ncaptures, char *errpath, size_t pathlen,
                                              char *err, size_t errlen)
{
    struct perr pe = {errpath, err, pathlen, errlen}, *e = &pe;
    struct wsb_filter_spec *spec = calloc(1, sizeof(*spec));
    bool list = json_is_array(v);
    size_t n = list ? json_array_size(v) : 1;
    char path[32];

    if (!spec) {
        seterr(e, "", "out of memory");
        return NULL;
    }
    if (!list && !json_is_object(v)) {
        seterr(e, "", "must be an object or an array of objects");
        goto fail;
    }
    if (n == 0 || n > WSB_FILTER_ALTS_MAX) {
        seterr(e, "", "a list of alternatives holds 1..16 objects");
        goto fail;
    }
    if (!(spec->alts = calloc(n, sizeof(*spec->alts)))) {
        seterr(e, "", "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        spec->n = i + 1;
        path[0] = '\0';
        if (list)
            snprintf(path, sizeof(path), "[%zu]", i);
        if (parse_alt(list ? json_array_get(v, i) : v, mode, ncaptures, &spec->alts[i], path, e) <
            0)
            goto fail;
    }
    return spec;
fail:
    wsb_filter_spec_free(spec);
    return NULL;
}

/* ---- Resolved filters ------------------------------------------------------------------- */

struct fhdr {
    char *name;
    size_t name_len;
    uint8_t *value;
    size_t value_len;
};

struct falt {
    bool has_key;
    uint8_t *key;
    size_t key_len;
    struct fhdr *h;
    size_t nh;
    char *canon; /* this alternative's canonical text */
    size_t canon_len;
};

struct wsb_filter {
    struct falt *alts;
    size_t n;
    char *canon;
    size_t canon_len;
    atomic_uint_fast64_t *counter;
};

static void falt_cleanup(struct falt *a)
{
    free(a->key);
    for (size_t j = 0; j < a->nh; j++) {
        free(a->h[j].name);
        free(a->h[j].value);
    }
    free(a->h);
    free(a->canon);
    memset(a, 0, sizeof(*a));
}

void wsb_filter_free(struct wsb_filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        falt_cleanup(&f->alts[i]);
    free(f->alts);
    free(f->canon);
    free(f);
}

/* A template value from the claims; NULL when it is not a usable filter value. `num` holds an
 * integer's decimal text. */
static const char *claim_value(const json_t *claims, const char *name, char num[32], size_t *len)
{
    const json_t *v = claims ? json_object_get(claims, name) : NULL;
    if (json_is_string(v)) {
        *len = json_string_length(v);
        const char *s = json_string_value(v);
        return *len && !memchr(s, '\0', *len) ? s : NULL;
    }
    if (json_is_integer(v)) {
        int k = snprintf(num, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        *len = (size_t)k;
        return num;
    }
    return NULL;
}

/* Expands `t` into `out` (NUL-terminated). Returns the length, or -1 when a value is unusable
 * or the result exceeds WSB_FILTER_VALUE_MAX. */
static int expand(const struct tmpl *t, const json_t *claims, const struct wsb_captures *caps,
                  char out[WSB_FILTER_VALUE_MAX + 1])
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct piece *p = &t->p[i];
        const char *s = NULL;
        size_t len = 0;
        char num[32];
        switch (p->kind) {
        case P_LIT:
            s = p->text;
            len = p->len;
            break;
        case P_SUB: {
            const json_t *v = claims ? json_object_get(claims, "sub") : NULL;
            if (json_is_string(v)) {
                s = json_string_value(v);
                len = json_string_length(v);
                if (!len || memchr(s, '\0', len))
                    s = NULL;
            }
            break;
        }
        case P_CLAIM: s = claim_value(claims, p->text, num, &len); break;
        case P_CAP:
            if (caps && p->cap >= 1 && p->cap <= caps->n) {
                s = caps->cap[p->cap - 1].ptr;
                len = caps->cap[p->cap - 1].len;
            }
            break;
        }
        if (!s || len == 0 || len > WSB_FILTER_VALUE_MAX - n)
            return -1;
        memcpy(out + n, s, len);
        n += len;
    }
    if (n == 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}

static int cmp_hdr(const void *a, const void *b)
{
    const struct fhdr *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c || x->name_len != y->name_len)
        return c ? c : (x->name_len < y->name_len ? -1 : 1);
    n = x->value_len < y->value_len ? x->value_len : y->value_len;
    c = memcmp(x->value, y->value, n);
    if (c || x->value_len != y->value_len)
        return c ? c : (x->value_len < y->value_len ? -1 : 1);
    return 0;
}

static int cmp_alt(const void *a, const void *b)
{
    const struct falt *x = a, *y = b;
    size_t n = x->canon_len < y->canon_len ? x->canon_len : y->canon_len;
    int c = memcmp(x->canon, y->canon, n);
    if (c || x->canon_len == y->canon_len)
        return c;
    return x->canon_len < y->canon_len ? -1 : 1;
}

/* Sorts and de-duplicates an alternative's headers and writes its canonical text:
 * "(" ["k" LEN ":" KEY] ("h" LEN ":" NAME LEN ":" VALUE)* ")". */
static int falt_finish(struct falt *a)
{
    if (a->nh > 1) /* (qsort's base must not be NULL, even for 0 items) */
        qsort(a->h, a->nh, sizeof(*a->h), cmp_hdr);
    size_t w = 0;
    for (size_t i = 0; i < a->nh; i++) {
        if (w && cmp_hdr(&a->h[w - 1], &a->h[i]) == 0) {
            free(a->h[i].name);
            free(a->h[i].value);
            continue;
        }
        a->h[w++] = a->h[i];
    }
    a->nh = w;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "(");
    if (a->has_key) {
        wsb_buf_printf(&b, "k%zu:", a->key_len);
        wsb_buf_append(&b, a->key, a->key_len);
    }
    for (size_t i = 0; i < a->nh; i++) {
        wsb_buf_printf(&b, "h%zu:", a->h[i].name_len);
        wsb_buf_append(&b, a->h[i].name, a->h[i].name_len);
        wsb_buf_printf(&b, "%zu:", a->h[i].value_len);
        wsb_buf_append(&b, a->h[i].value, a->h[i].value_len);
    }
    wsb_buf_puts(&b, ")");
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return -1;
    }
    a->canon = (char *)wsb_buf_steal(&b, &a->canon_len);
    a->canon_len--; /* the NUL */
    return 0;
}

/* Sorts and de-duplicates the alternatives and writes the filter's canonical text. */
static int filter_finish(struct wsb_filter *f)
{
    if (f->n > 1)
        qsort(f->alts, f->n, sizeof(*f->alts), cmp_alt);
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (w && cmp_alt(&f->alts[w - 1], &f->alts[i]) == 0) {
            falt_cleanup(&f->alts[i]);
            continue;
        }
        f->alts[w++] = f->alts[i];
    }
    f->n = w;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, f->n ? "F" : "F!"); /* "F!": matches nothing */
    for (size_t i = 0; i < f->n; i++)
        wsb_buf_append(&b, f->alts[i].canon, f->alts[i].canon_len);
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return -1;
    }
    f->canon = (char *)wsb_buf_steal(&b, &f->canon_len);
    f->canon_len--;
    return 0;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* Resolves one alternative into `out`. Returns 1 when resolved, 0 when dropped, -1 on OOM. */
static int resolve_alt(const struct spec_alt *a, const json_t *claims,
                       const struct wsb_captures *caps, struct falt *out)
{
    char val[WSB_FILTER_VALUE_MAX + 1];
    int n;
    memset(out, 0, sizeof(*out));
    if (a->has_key) {
        if ((n = expand(&a->key, claims, caps, val)) < 0)
            return 0;
        out->has_key = true;
        if (!(out->key = dup_bytes(val, (size_t)n)))
            return -1;
        out->key_len = (size_t)n;
    }
    if (a->nh && !(out->h = calloc(a->nh, sizeof(*out->h))))
        return -1;
    for (size_t j = 0; j < a->nh; j++) {
        if ((n = expand(&a->h[j].value, claims, caps, val)) < 0)
            return 0;
        struct fhdr *h = &out->h[out->nh++];
        h->name = (char *)dup_bytes(a->h[j].name, a->h[j].name_len);
        h->name_len = a->h[j].name_len;
        h->value = dup_bytes(val, (size_t)n);
        h->value_len = (size_t)n;
        if (!h->name || !h->value)
            return -1;
    }
    return falt_finish(out) < 0 ? -1 : 1;
}

/* Keeps the alternative a step just built at f->alts[f->n] (r = 1) or frees it (r = 0: it
 * can never match; r < 0: out of memory, then -1). */
static int take_alt(struct wsb_filter *f, int r)
{
    if (r > 0) {
        f->n++;
        return 0;
    }
    falt_cleanup(&f->alts[f->n]);
    return r < 0 ? -1 : 0;
}

struct wsb_filter *wsb_filter_resolve(const struct wsb_filter_spec *spec, const json_t *claims,
                                      const struct wsb_captures *caps,
                                      atomic_uint_fast64_t *counter)
{
    struct wsb_filter *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->counter = counter;
    if (!json_is_object(claims))
        claims = NULL;
    if (spec->n && !(f->alts = calloc(spec->n, sizeof(*f->alts))))
        goto fail;
    for (size_t i = 0; i < spec->n; i++)
        if (take_alt(f, resolve_alt(&spec->alts[i], claims, caps, &f->alts[f->n])) < 0)
            goto fail; /* a dropped alternative never widens */
    if (filter_finish(f) < 0)
        goto fail;
    return f;
fail:
    wsb_filter_free(f);
    return NULL;
}

/* A copy of header condition `c` into `d` (counted in its alternative already, so that
 * falt_cleanup frees what was copied); -1 on OOM. */
static int copy_hdr(const struct fhdr *c, struct fhdr *d)
{
    d->name = (char *)dup_bytes(c->name, c->name_len);
    d->name_len = c->name_len;
    d->value = dup_bytes(c->value, c->value_len);
    d->value_len = c->value_len;
    return d->name && d->value ? 0 : -1;
}

static int copy_alt(const struct falt *a, struct falt *out)
{
    memset(out, 0, sizeof(*out));
    out->has_key = a->has_key;
    if (a->has_key && !(out->key = dup_bytes(a->key, a->key_len)))
        return -1;
    out->key_len = a->key_len;
    if (a->nh && !(out->h = calloc(a->nh, sizeof(*out->h))))
        return -1;
    for (size_t j = 0; j < a->nh; j++)
        if (copy_hdr(&a->h[j], &out->h[out->nh++]) < 0)
            return -1;
    return 0;
}

/* x AND y into out. Returns 1, 0 when they pin one field to two values, -1 on OOM. */
static int and_alt(const struct falt *x, const struct falt *y, struct falt *out)
{
    if (x->has_key && y->has_key &&
        (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0))
        return 0;
    for (size_t i = 0; i < x->nh; i++)
        for (size_t j = 0; j < y->nh; j++)
            if (x->h[i].name_len == y->h[j].name_len &&
                memcmp(x->h[i].name, y->h[j].name, x->h[i].name_len) == 0 &&
                (x->h[i].value_len != y->h[j].value_len ||
                 memcmp(x->h[i].value, y->h[j].value, x->h[i].value_len) != 0))
                return 0;
    if (copy_alt(x->has_key ? x : y, out) < 0)
        return -1;
    if (!x->has_key && !y->has_key) {
        free(out->key);
        out->key = NULL;
        out->has_key = false;
        out->key_len = 0;
    }
    /* Headers: x's (already in out when x gave the key) plus the other's. */
    const struct falt *rest[2] = {x, y};
    size_t total = x->nh + y->nh;
    struct fhdr *h = calloc(total ? total : 1, sizeof(*h));
    if (!h)
        return -1;
    for (size_t j = 0; j < out->nh; j++) {
        free(out->h[j].name);
        free(out->h[j].value);
    }
    free(out->h);
    out->h = h;
    out->nh = 0;
    for (int r = 0; r < 2; r++)
        for (size_t j = 0; j < rest[r]->nh; j++)
            if (copy_hdr(&rest[r]->h[j], &out->h[out->nh++]) < 0)
                return -1;
    return falt_finish(out) < 0 ? -1 : 1;
}

struct wsb_filter *wsb_filter_and(const struct wsb_filter *chan, const struct wsb_filter *client,
                                  atomic_uint_fast64_t *counter, bool *widen, bool *oom)
{
    *widen = false;
    *oom = false;
    if (!chan && !client)
        return NULL;
    struct wsb_filter *f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    f->counter = counter;
    size_t cap = chan && client ? chan->n * client->n : (chan ? chan->n : client->n);
    if (cap && !(f->alts = calloc(cap, sizeof(*f->alts))))
        goto fail;
    if (!chan || !client) {
        const struct wsb_filter *one = chan ? chan : client;
        for (size_t i = 0; i < one->n; i++) {
            if (copy_alt(&one->alts[i], &f->alts[f->n]) < 0 || falt_finish(&f->alts[f->n]) < 0) {
                falt_cleanup(&f->alts[f->n]);
                goto fail;
            }
            f->n++;
        }
    } else {
        for (size_t i = 0; i < chan->n; i++)
            for (size_t j = 0; j < client->n; j++)
                if (take_alt(f, and_alt(&chan->alts[i], &client->alts[j], &f->alts[f->n])) < 0)
                    goto fail;
        *widen = chan->n > 0 && f->n == 0;
    }
    if (filter_finish(f) < 0)
        goto fail;
    return f;
fail:
    wsb_filter_free(f);
    *oom = true;
    return NULL;
}

static bool header_has(const struct wsb_msg *m, const struct fhdr *c)
{
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct wsb_header *h = &m->headers[i];
        if (h->value_len == c->value_len && h->name &&
            strncmp(h->name, c->name, c->name_len) == 0 && h->name[c->name_len] == '\0' &&
            memcmp(h->value, c->value, c->value_len) == 0)
            return true;
    }
    return false;
}

bool wsb_filter_match(const struct wsb_filter *f, const struct wsb_msg *m)
{
    for (size_t i = 0; i < f->n; i++) {
        const struct falt *a = &f->alts[i];
        if (a->has_key &&
            (!m->key || m->key_len != a->key_len || memcmp(m->key, a->key, a->key_len) != 0))
            continue;
        size_t j = 0;
        while (j < a->nh && header_has(m, &a->h[j]))
            j++;
        if (j == a->nh)
            return true;
    }
    return false;
}

const char *wsb_filter_key(const struct wsb_filter *f, size_t *len)
{
    if (len)
        *len = f->canon_len;
    return f->canon;
}

size_t wsb_filter_alternatives(const struct wsb_filter *f)
{
    return f->n;
}

bool wsb_filter_single_key(const struct wsb_filter *f, const uint8_t **key, size_t *len)
{
    if (f->n != 1 || !f->alts[0].has_key)
        return false;
    *key = f->alts[0].key;
    *len = f->alts[0].key_len;
    return true;
}

atomic_uint_fast64_t *wsb_filter_counter(const struct wsb_filter *f)
{
    return f->counter;
}

/* ---- Rule counters ---------------------------------------------------------------------- */

struct rule_counter {
    char *label;
    atomic_uint_fast64_t value;
};

static pthread_mutex_t counters_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rule_counter *counters[WSB_FILTER_LABELS_MAX + 1];
static size_t ncounters;

atomic_uint_fast64_t *wsb_filter_rule_counter(const char *match)
{
    atomic_uint_fast64_t *out = NULL;
    if (!match)
        match = "other";
    pthread_mutex_lock(&counters_mu);
    size_t i;
    for (i = 0; i < ncounters; i++)
        if (strcmp(counters[i]->label, match) == 0)
            break;
    if (i == ncounters && ncounters >= WSB_FILTER_LABELS_MAX)
        match = "other";
    for (i = 0; i < ncounters; i++)
        if (strcmp(counters[i]->label, match) == 0)
            break;
    if (i == ncounters) {
        struct rule_counter *c = calloc(1, sizeof(*c));
        if (c && (c->label = strdup(match))) {
            counters[ncounters++] = c;
        } else {
            free(c);
            c = NULL;
        }
        out = c ? &c->value : NULL;
    } else {
        out = &counters[i]->value;
    }
    pthread_mutex_unlock(&counters_mu);
    return out;
}

void wsb_filter_rule_counters(void (*fn)(void *ctx, const char *label, uint64_t value), void *ctx)
{
    pthread_mutex_lock(&counters_mu);
    for (size_t i = 0; i < ncounters; i++)
        fn(ctx, counters[i]->label,
           atomic_load_explicit(&counters[i]->value, memory_order_relaxed));
    pthread_mutex_unlock(&counters_mu);
}
