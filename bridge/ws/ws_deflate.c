/* permessage-deflate (RFC 7692): offer negotiation, bounded inflater, one-shot deflater. */
#include "bridge/ws/ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define INFLATE_CHUNK 16384

/* ---- negotiation (RFC 7692 §5, §7.1) ---- */

struct cursor {
    const char *p, *end;
};

static bool tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static int peek(const struct cursor *c)
{
    return c->p < c->end ? (unsigned char)*c->p : -1;
}

/* Reads a token. Returns its length (0 when none). */
static size_t read_token(struct cursor *c, const char **tok)
{
    *tok = c->p;
    while (c->p < c->end && tchar((unsigned char)*c->p))
        c->p++;
    return (size_t)(c->p - *tok);
}

/* Reads a token or a quoted-string (RFC 9110 §5.6.4) into val (NUL-terminated, truncated
 * to vallen-1; *too_long set then). Returns -1 on a syntax error. */
static int read_value(struct cursor *c, char *val, size_t vallen, bool *too_long)
{
    size_t n = 0;

    *too_long = false;
    if (peek(c) == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->end)
                return -1;
            char ch = *c->p++;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (c->p >= c->end)
                    return -1;
                ch = *c->p++;
            }
            if (n + 1 < vallen)
                val[n++] = ch;
            else
                *too_long = true;
        }
    } else {
        const char *t;
        size_t tl = read_token(c, &t);
        if (tl == 0)
            return -1;
        if (tl >= vallen)
            *too_long = true;
        n = tl < vallen ? tl : vallen - 1;
        memcpy(val, t, n);
    }
    val[n] = '\0';
    return 0;
}

/* RFC 7692 §7.1.2: 1*DIGIT without leading zero, 8..15 */
static int window_bits(const char *v)
{
    if (strlen(v) == 1 && v[0] >= '8' && v[0] <= '9')
        return v[0] - '0';
    if (strlen(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return -1;
}

struct offer {
    bool is_pmd;
    bool acceptable;
    bool seen_snct, seen_cnct, seen_smwb, seen_cmwb;
    int smwb; /* 0 when not asked */
};

static void offer_param(struct offer *o, const char *name, size_t nlen, bool has_value,
                        const char *val, bool too_long)
{
    int bits = has_value && !too_long ? window_bits(val) : -1;

#define IS(s) (nlen == strlen(s) && strncasecmp(name, s, nlen) == 0)
    if (IS("server_no_context_takeover")) {
        if (o->seen_snct || has_value)
            o->acceptable = false;
        o->seen_snct = true;
    } else if (IS("client_no_context_takeover")) {
        if (o->seen_cnct || has_value)
            o->acceptable = false;
        o->seen_cnct = true;
    } else if (IS("server_max_window_bits")) {
        /* 8 is declined: zlib's raw deflate cannot produce a 256-byte window */
        if (o->seen_smwb || bits < 9)
            o->acceptable = false;
        o->seen_smwb = true;
        o->smwb = bits;
    } else if (IS("client_max_window_bits")) {
        if (o->seen_cmwb || (has_value && bits < 8))
            o->acceptable = false;
        o->seen_cmwb = true;
    } else {
        o->acceptable = false;
    }
#undef IS
}

static int write_response(const struct offer *o, struct wsb_pmd_params *out, char *resp,
                          size_t resplen)
{
    char smwb[40] = "";

    memset(out, 0, sizeof(*out));
    out->server_no_context_takeover = true;
    out->client_no_context_takeover = o->seen_cnct;
    out->server_max_window_bits = o->smwb ? o->smwb : 15;
    /* We never limit the client's window: a 15-bit inflater reads any smaller window, and
     * client_max_window_bits may only be answered when offered (RFC 7692 §7.1.2.2). */
    out->client_max_window_bits = 15;
    if (o->smwb)
        snprintf(smwb, sizeof(smwb), "; server_max_window_bits=%d", o->smwb);
    int n = snprintf(resp, resplen, "permessage-deflate; server_no_context_takeover%s%s",
                     o->seen_cnct ? "; client_no_context_takeover" : "", smwb);
    if (n < 0 || (size_t)n >= resplen) {
        if (resplen)
            resp[0] = '\0';
        return 0;
    }
    return 1;
}

int wsb_pmd_negotiate(const char *offer, size_t len, struct wsb_pmd_params *out, char *resp,
                      size_t resplen)
{
    struct cursor c = {offer, offer + len};
    bool accepted = false;
    int rc = 0;

    if (resplen)
        resp[0] = '\0';
    /* The whole header is parsed even after an accepted offer, so a malformed tail still
     * makes it malformed (-1). */
    for (;;) {
        skip_ows(&c);
        if (peek(&c) == -1)
            break;
        if (peek(&c) == ',') { /* empty list element (RFC 9110 §5.6.1) */
            c.p++;
            continue;
        }
        const char *ext;
        size_t elen = read_token(&c, &ext);
        if (elen == 0)
            return -1;
        struct offer o = {0};
        o.is_pmd = elen == 18 && strncasecmp(ext, "permessage-deflate", 18) == 0;
        o.acceptable = true;
        skip_ows(&c);
        while (peek(&c) == ';') {
            c.p++;
            skip_ows(&c);
            const char *pname;
            size_t plen = read_token(&c, &pname);
            if (plen == 0)
                return -1;
            skip_ows(&c);
            bool has_value = false, too_long = false;
            char val[16] = "";
            if (peek(&c) == '=') {
                c.p++;
                skip_ows(&c);
                if (read_value(&c, val, sizeof(val), &too_long) < 0)
                    return -1;
                has_value = true;
                skip_ows(&c);
            }
            offer_param(&o, pname, plen, has_value, val, too_long);
        }
        if (peek(&c) != -1 && peek(&c) != ',')
            return -1;
        if (o.is_pmd && o.acceptable && !accepted) {
            accepted = true;
            rc = write_response(&o, out, resp, resplen);
        }
    }
    return rc;
}

/* ---- inflater (RFC 7692 §7.2.2) ---- */

struct wsb_inflater {
    z_stream zs;
    bool reset_each_message;
    bool failed;
    bool ended; /* the message's deflate stream ended with a BFINAL block */
    uint8_t out[INFLATE_CHUNK];
};

struct wsb_inflater *wsb_inflater_new(int window_bits, bool reset_each_message)
{
    struct wsb_inflater *z = calloc(1, sizeof(*z));

    if (!z)
        return NULL;
    if (window_bits < 9 || window_bits > 15)
        window_bits = 15;
    if (inflateInit2(&z->zs, -window_bits) != Z_OK) {
        free(z);
        return NULL;
    }
    z->reset_each_message = reset_each_message;
    return z;
}

void wsb_inflater_free(struct wsb_inflater *z)
{
    if (!z)
        return;
    inflateEnd(&z->zs);
    free(z);
}

/* One inflate() call into the fixed buffer, never with room for more than one byte past
 * `limit`; delivers the output. Returns 0 (*zret set) or a close code / callback value. */
static int inflate_step(struct wsb_inflater *z, uint64_t limit, uint64_t *total,
                        wsb_inflate_out_cb cb, void *ctx, int *zret)
{
    z_stream *zs = &z->zs;
    uint64_t allowed = *total <= limit ? limit - *total : 0;
    size_t room = allowed < INFLATE_CHUNK ? (size_t)allowed + 1 : INFLATE_CHUNK;

    zs->next_out = z->out;
    zs->avail_out = (uInt)room;
    *zret = inflate(zs, Z_SYNC_FLUSH);
    size_t produced = room - zs->avail_out;
    if (*zret == Z_MEM_ERROR)
        return 1011;
    if (*zret != Z_OK && *zret != Z_STREAM_END && *zret != Z_BUF_ERROR)
        return 1007;
    if (produced > allowed)
        return 1009;
    *total += produced;
    if (produced > 0 && cb)
        return cb(ctx, z->out, produced);
    return 0;
}

/* Inflates all of `in`, delivering output in chunks of at most INFLATE_CHUNK bytes. */
static int inflate_some(struct wsb_inflater *z, const uint8_t *in, size_t len, uint64_t limit,
                        uint64_t *total, wsb_inflate_out_cb cb, void *ctx)
{
    z_stream *zs = &z->zs;
    int zret, rc;

    if (z->ended)
        return 0; /* what follows a BFINAL block (at least our tail) is ignored */
    zs->next_in = (Bytef *)in;
    zs->avail_in = 0;
    for (;;) {
        if (zs->avail_in == 0 && len > 0) {
            size_t n = len > UINT32_MAX ? UINT32_MAX : len;
            zs->avail_in = (uInt)n;
            len -= n;
        }
        rc = inflate_step(z, limit, total, cb, ctx, &zret);
        if (rc != 0)
            return rc;
        if (zret == Z_STREAM_END) {
            /* RFC 7692 §7.2.3.4: a sender may end a message with a BFINAL block; the
             * stream restarts with the next message (without its history). */
            z->ended = true;
            return 0;
        }
        /* all input used and room left in the output: zlib holds nothing more */
        if (zs->avail_in == 0 && len == 0 && zs->avail_out > 0)
            return 0;
        if (zret == Z_BUF_ERROR && zs->avail_in > 0 && zs->avail_out > 0)
            return 1007; /* no progress possible: cannot happen, but never spin */
    }
}

int wsb_inflater_feed(struct wsb_inflater *z, const uint8_t *in, size_t len, bool last,
                      uint64_t limit, uint64_t *total, wsb_inflate_out_cb cb, void *ctx)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    int rc;

    if (z->failed)
        return 1007;
    rc = inflate_some(z, in, len, limit, total, cb, ctx);
    if (rc == 0 && last)
        rc = inflate_some(z, tail, sizeof(tail), limit, total, cb, ctx);
    if (rc != 0) {
        /* the stream is mid-message or corrupt: it cannot be trusted again */
        z->failed = true;
        return rc;
    }
    if (last && (z->reset_each_message || z->ended) && inflateReset(&z->zs) != Z_OK) {
        z->failed = true;
        return 1011;
    }
    if (last)
        z->ended = false;
    return 0;
}

/* ---- deflater (RFC 7692 §7.2.1) ---- */

struct wsb_deflater {
    z_stream zs;
};

struct wsb_deflater *wsb_deflater_new(int window_bits)
{
    struct wsb_deflater *z = calloc(1, sizeof(*z));

    if (!z)
        return NULL;
    if (window_bits < 9 || window_bits > 15)
        window_bits = 15;
    if (deflateInit2(&z->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

void wsb_deflater_free(struct wsb_deflater *z)
{
    if (!z)
        return;
    deflateEnd(&z->zs);
    free(z);
}

int wsb_deflate_message(struct wsb_deflater *z, const uint8_t *in, size_t len, size_t headroom,
                        uint8_t **out, size_t *out_len)
{
    z_stream *zs = &z->zs;
    uint8_t *buf = NULL;
    size_t cap, used = 0;
    int rc = -1;

    *out = NULL;
    *out_len = 0;
    if (len > UINT32_MAX || deflateReset(zs) != Z_OK)
        return -1;
    /* deflateBound covers the data; a sync flush adds an empty stored block (5 bytes) */
    cap = deflateBound(zs, (uLong)len) + 16;
    buf = malloc(headroom + cap);
    if (!buf)
        goto cleanup;
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)len;
    for (;;) {
        zs->next_out = buf + headroom + used;
        zs->avail_out = (uInt)(cap - used);
        int ret = deflate(zs, Z_SYNC_FLUSH);
        used = cap - zs->avail_out;
        if (ret != Z_OK && ret != Z_BUF_ERROR)
            goto cleanup;
        if (zs->avail_in == 0 && zs->avail_out > 0)
            break;
        uint8_t *nbuf = realloc(buf, headroom + cap * 2);
        if (!nbuf)
            goto cleanup;
        buf = nbuf;
        cap *= 2;
    }
    /* RFC 7692 §7.2.1: remove the 0x00 0x00 0xff 0xff the sync flush ended with */
    if (used < 4 || memcmp(buf + headroom + used - 4, "\x00\x00\xff\xff", 4) != 0)
        goto cleanup;
    *out = buf;
    *out_len = used - 4;
    buf = NULL;
    rc = 0;
cleanup:
    free(buf);
    return rc;
}
