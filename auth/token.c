/* Finding the bearer token in a handshake's headers, query, subprotocols or cookies. */
#include "auth/token.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>
#include "util/form.h"

#define SUBPROTOCOL "wsbridge.v1"

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A compact JWS only holds base64url characters and dots (RFC 7515 §7.1): A-Z a-z 0-9 - _ .,
 * here a bitmap of the 128 ASCII codes. A token's characters come in random order, so the
 * comparisons this replaces mispredicted on most of them (~4 ns a character). */
static const uint64_t jwt_chars[2] = {
    0x03ff600000000000u, /* '-' 45, '.' 46, '0'-'9' 48-57 */
    0x07fffffe87fffffeu, /* 'A'-'Z' 65-90, '_' 95, 'a'-'z' 97-122 */
};

static bool jwt_char(unsigned char c)
{
    return c < 128 && ((jwt_chars[c >> 6] >> (c & 63)) & 1);
}

static void trim(const char **p, size_t *len)
{
    while (*len && is_ows(**p)) {
        (*p)++;
        (*len)--;
    }
    while (*len && is_ows((*p)[*len - 1]))
        (*len)--;
}

/* Copies a candidate token into out after checking its charset and size. */
static long emit(const char *t, size_t len, char *out, size_t outlen)
{
    if (len == 0 || len > WSB_TOKEN_MAX || len >= outlen)
        return -1;
    for (size_t i = 0; i < len; i++)
        if (!jwt_char((unsigned char)t[i]))
            return -1;
    memcpy(out, t, len);
    out[len] = '\0';
    return (long)len;
}

/* RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive
 * (RFC 9110 §11.1). Another scheme is not ours: 0. */
static long from_header(const char *v, size_t len, char *out, size_t outlen)
{
    trim(&v, &len);
    if (len < 6 || strncasecmp(v, "Bearer", 6) != 0)
        return 0;
    if (len > 6 && !is_ows(v[6]))
        return 0;
    v += 6;
    len -= 6;
    trim(&v, &len);
    return emit(v, len, out, outlen);
}

static bool name_is(const char *p, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(p, want, len) == 0;
}

/* The first access_token parameter of the query. */
static long from_query(const char *q, size_t len, char *out, size_t outlen)
{
    char tmp[WSB_TOKEN_MAX + 1];
    long n = wsb_form_param(q, len, "access_token", tmp, sizeof(tmp));
    if (n == -1) /* absent */
        return 0;
    if (n < 0) /* present but undecodable */
        return -1;
    /* "access_token=" (or a bare "access_token") is a token that is present and empty:
     * malformed, like an empty cookie or a bare "Bearer", never "no token". */
    return emit(tmp, (size_t)n, out, outlen);
}

/* Calls f on each comma-separated, trimmed entry until it returns non-zero. */
static long each_entry(const char *s, size_t len, char sep,
                       long (*f)(const char *e, size_t elen, void *ctx), void *ctx)
{
    const char *end = s + len;

    while (s < end) {
        const char *c = memchr(s, sep, (size_t)(end - s));
        const char *eend = c ? c : end;
        const char *e = s;
        size_t elen = (size_t)(eend - s);
        long r;

        trim(&e, &elen);
        if (elen && (r = f(e, elen, ctx)) != 0)
            return r;
        s = eend + (c ? 1 : 0);
    }
    return 0;
}

struct out_ctx {
    char *out;
    size_t outlen;
    const char *cookie;
};

static long proto_entry(const char *e, size_t elen, void *ctx)
{
    struct out_ctx *o = ctx;

    if (elen < 7 || memcmp(e, "bearer.", 7) != 0)
        return 0;
    return emit(e + 7, elen - 7, o->out, o->outlen);
}

/* RFC 6265 §4.2.1: cookie-pair = name "=" value, value optionally in double quotes. */
static long cookie_entry(const char *e, size_t elen, void *ctx)
{
    struct out_ctx *o = ctx;
    const char *eq = memchr(e, '=', elen);
    const char *v;
    size_t nlen, vlen;

    if (!eq)
        return 0;
    nlen = (size_t)(eq - e);
    while (nlen && is_ows(e[nlen - 1]))
        nlen--;
    if (!name_is(e, nlen, o->cookie))
        return 0;
    v = eq + 1;
    vlen = elen - (size_t)(v - e);
    trim(&v, &vlen);
    if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
        v++;
        vlen -= 2;
    }
    return emit(v, vlen, o->out, o->outlen);
}

long wsb_token_find(const struct wsb_auth_conf *conf, const struct wsb_token_inputs *in, char *out,
                    size_t outlen, const char **source)
{
    struct out_ctx o = {.out = out, .outlen = outlen, .cookie = conf->cookie_name};
    long r;

    *source = NULL;
    if (outlen)
        out[0] = '\0';
    if ((conf->token_sources & WSB_TOKEN_HEADER) && in->authorization) {
        *source = "header";
        if ((r = from_header(in->authorization, in->authorization_len, out, outlen)) != 0)
            return r;
    }
    if ((conf->token_sources & WSB_TOKEN_QUERY) && in->query) {
        *source = "query";
        if ((r = from_query(in->query, in->query_len, out, outlen)) != 0)
            return r;
    }
    if ((conf->token_sources & WSB_TOKEN_SUBPROTOCOL) && in->protocols) {
        *source = "subprotocol";
        if ((r = each_entry(in->protocols, in->protocols_len, ',', proto_entry, &o)) != 0)
            return r;
    }
    if ((conf->token_sources & WSB_TOKEN_COOKIE) && conf->cookie_name && in->cookies) {
        *source = "cookie";
        if ((r = each_entry(in->cookies, in->cookies_len, ';', cookie_entry, &o)) != 0)
            return r;
    }
    *source = NULL;
    return 0;
}

static long select_entry(const char *e, size_t elen, void *ctx)
{
    (void)ctx;
    return name_is(e, elen, SUBPROTOCOL) ? 1 : 0;
}

const char *wsb_token_select_protocol(const char *protocols, size_t len)
{
    if (!protocols)
        return NULL;
    return each_entry(protocols, len, ',', select_entry, NULL) ? SUBPROTOCOL : NULL;
}
