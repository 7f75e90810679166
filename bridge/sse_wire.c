/* The SSE wire format: events, the shared message event, the resume token.
 *
 * Token: base64url (no padding) of
 *   0x01 (version), then per channel: FNV-1a hash of its name (4 bytes, little endian),
 *   the number of partitions (varint), then per partition its number and next offset
 *   (varints).
 * Channel names stay out of the token (it stays small and says nothing about the topics).
 * Two channels of one stream with the same hash cannot both be named: the decoder refuses a
 * token naming a hash twice, so such a stream resumes both from its `from`. */
#include "bridge/sse_wire.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/filter.h"
#include "bridge/outq.h"
#include "bridge/ws/ws_http.h"
#include "util/base64.h"

#define TOKEN_VERSION 1

void wsb_sse_event(struct wsb_buf *out, const char *type, const uint8_t *json, size_t len)
{
    wsb_buf_puts(out, "event: ");
    wsb_buf_puts(out, type);
    wsb_buf_puts(out, "\ndata: ");
    size_t i = 0, start = 0;
    while (i < len) {
        if (json[i] == '\r' || json[i] == '\n') {
            wsb_buf_append(out, json + start, i - start);
            wsb_buf_puts(out, "\ndata: ");
            if (json[i] == '\r' && i + 1 < len && json[i + 1] == '\n')
                i++;
            start = ++i;
            continue;
        }
        i++;
    }
    wsb_buf_append(out, json + start, len - start);
    wsb_buf_puts(out, "\n\n");
}

void wsb_sse_type_of(const uint8_t *json, size_t len, char *out, size_t outlen)
{
    static const char pre[] = "{\"type\":\"";
    size_t pl = sizeof(pre) - 1;
    snprintf(out, outlen, "message");
    if (len <= pl || memcmp(json, pre, pl) != 0)
        return;
    size_t i = pl;
    while (i < len && json[i] != '"' && i - pl + 1 < outlen)
        i++;
    if (i >= len || json[i] != '"')
        return;
    memcpy(out, json + pl, i - pl);
    out[i - pl] = '\0';
}

struct wsb_frame *wsb_sse_message_frame(struct wsb_frame *f)
{
    if (f->sse)
        return f->sse;
    struct wsb_buf b;
    wsb_buf_init(&b);
    size_t plen = f->len - f->hdr_len;
    wsb_buf_reserve(&b, plen + 32);
    wsb_sse_event(&b, "message", wsb_frame_payload(f), plen);
    struct wsb_frame *e = b.oom ? NULL : wsb_frame_raw(b.data, b.len);
    wsb_buf_cleanup(&b);
    if (!e)
        return NULL;
    e->ts_ms = f->ts_ms;
    e->partition = f->partition;
    e->offset = f->offset;
    f->sse = e;
    return e;
}

/* ---- positions ------------------------------------------------------------------------ */

uint32_t wsb_sse_channel_hash(const char *channel, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)channel[i];
        h *= 16777619u;
    }
    return h;
}

int wsb_sse_pos_set(struct wsb_sse_pos *p, int32_t partition, int64_t next)
{
    if (partition < 0 || next < 0)
        return -1;
    for (size_t i = 0; i < p->n; i++) {
        if (p->po[i].partition == partition) {
            p->po[i].offset = next;
            return 0;
        }
    }
    if (p->n >= WSB_SSE_TOKEN_PARTITIONS)
        return -1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        struct wsb_partition_offset *po = realloc(p->po, cap * sizeof(*po));
        if (!po)
            return -1;
        p->po = po;
        p->cap = cap;
    }
    p->po[p->n++] = (struct wsb_partition_offset){partition, next};
    return 0;
}

void wsb_sse_pos_load(struct wsb_sse_pos *p, const char *positions)
{
    if (!positions)
        return;
    json_t *root = json_loads(positions, 0, NULL);
    const char *k;
    json_t *v;
    if (json_is_object(root)) {
        json_object_foreach(root, k, v)
        {
            char *end;
            long part = strtol(k, &end, 10);
            if (*end == '\0' && part >= 0 && part <= INT32_MAX && json_is_integer(v))
                wsb_sse_pos_set(p, (int32_t)part, json_integer_value(v));
        }
    }
    json_decref(root);
}

void wsb_sse_pos_cleanup(struct wsb_sse_pos *p)
{
    free(p->po);
    memset(p, 0, sizeof(*p));
}

/* ---- token ---------------------------------------------------------------------------- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void put_varint(struct wsb_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        tmp[n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
    wsb_buf_append(b, tmp, n);
}

size_t wsb_sse_token_encode(const struct wsb_sse_pos *const *chans, size_t n, char *out,
                            size_t outlen)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_reserve(&b, 256);
    uint8_t v = TOKEN_VERSION;
    wsb_buf_append(&b, &v, 1);
    size_t named = 0;
    for (size_t i = 0; i < n; i++) {
        const struct wsb_sse_pos *p = chans[i];
        if (!p || p->n == 0)
            continue;
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = chans[j] && chans[j]->n && chans[j]->hash == p->hash;
        if (dup)
            continue; /* two names, one hash: neither can be told apart; the first one wins */
        if (++named > WSB_SSE_TOKEN_CHANNELS)
            break;
        uint8_t h[4] = {(uint8_t)p->hash, (uint8_t)(p->hash >> 8), (uint8_t)(p->hash >> 16),
                        (uint8_t)(p->hash >> 24)};
        wsb_buf_append(&b, h, 4);
        put_varint(&b, p->n);
        for (size_t k = 0; k < p->n; k++) {
            put_varint(&b, (uint64_t)p->po[k].partition);
            put_varint(&b, (uint64_t)p->po[k].offset);
        }
    }
    size_t need = (b.len * 4 + 2) / 3;
    if (b.oom || named == 0 || named > WSB_SSE_TOKEN_CHANNELS || need > WSB_SSE_ID_MAX ||
        need + 1 > outlen) {
        wsb_buf_cleanup(&b);
        return 0;
    }
    const uint8_t *d = b.data;
    size_t o = 0, i = 0;
    for (; i + 2 < b.len; i += 3) {
        uint32_t x = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        out[o++] = B64URL[x >> 18 & 63];
        out[o++] = B64URL[x >> 12 & 63];
        out[o++] = B64URL[x >> 6 & 63];
        out[o++] = B64URL[x & 63];
    }
    if (b.len - i == 1) {
        uint32_t x = (uint32_t)d[i] << 16;
        out[o++] = B64URL[x >> 18 & 63];
        out[o++] = B64URL[x >> 12 & 63];
    } else if (b.len - i == 2) {
        uint32_t x = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
        out[o++] = B64URL[x >> 18 & 63];
        out[o++] = B64URL[x >> 12 & 63];
        out[o++] = B64URL[x >> 6 & 63];
    }
    out[o] = '\0';
    wsb_buf_cleanup(&b);
    return o;
}

static bool get_varint(const uint8_t *d, size_t len, size_t *at, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*at >= len)
            return false;
        uint8_t c = d[(*at)++];
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

int wsb_sse_token_decode(const char *tok, size_t len, struct wsb_sse_resume *r)
{
    memset(r, 0, sizeof(*r));
    if (len == 0 || len > WSB_SSE_ID_MAX || len % 4 == 1)
        return -1;
    uint8_t *d = malloc(len);
    if (!d)
        return -1;
    long dn = wsb_base64_decode(tok, len, true, d);
    if (dn < 0) {
        free(d);
        return -1;
    }
    size_t n = (size_t)dn, at = 0;
    int rc = -1;
    if (n < 1 || d[at++] != TOKEN_VERSION)
        goto out;
    while (at < n) {
        if (r->n >= WSB_SSE_TOKEN_CHANNELS || n - at < 4)
            goto out;
        struct wsb_sse_pos *chans = realloc(r->chans, (r->n + 1) * sizeof(*chans));
        if (!chans)
            goto out;
        r->chans = chans;
        struct wsb_sse_pos *p = &r->chans[r->n++];
        memset(p, 0, sizeof(*p));
        p->hash = (uint32_t)d[at] | (uint32_t)d[at + 1] << 8 | (uint32_t)d[at + 2] << 16 |
                  (uint32_t)d[at + 3] << 24;
        at += 4;
        uint64_t np;
        if (!get_varint(d, n, &at, &np) || np == 0 || np > WSB_SSE_TOKEN_PARTITIONS)
            goto out;
        for (uint64_t k = 0; k < np; k++) {
            uint64_t part, off;
            if (!get_varint(d, n, &at, &part) || !get_varint(d, n, &at, &off) || part > INT32_MAX ||
                off > INT64_MAX)
                goto out;
            for (size_t j = 0; j < p->n; j++)
                if (p->po[j].partition == (int32_t)part)
                    goto out; /* a partition twice */
            if (wsb_sse_pos_set(p, (int32_t)part, (int64_t)off) < 0)
                goto out;
        }
        for (size_t j = 0; j + 1 < r->n; j++)
            if (r->chans[j].hash == p->hash)
                goto out; /* a channel twice */
    }
    rc = 0;
out:
    free(d);
    if (rc < 0)
        wsb_sse_resume_cleanup(r);
    return rc;
}

const struct wsb_sse_pos *wsb_sse_resume_find(const struct wsb_sse_resume *r, const char *channel,
                                              size_t len)
{
    uint32_t h = wsb_sse_channel_hash(channel, len);
    for (size_t i = 0; i < r->n; i++)
        if (r->chans[i].hash == h)
            return &r->chans[i];
    return NULL;
}

void wsb_sse_resume_cleanup(struct wsb_sse_resume *r)
{
    for (size_t i = 0; i < r->n; i++)
        wsb_sse_pos_cleanup(&r->chans[i]);
    free(r->chans);
    memset(r, 0, sizeof(*r));
}

/* ---- the request ----------------------------------------------------------------------- */

static int add_channel(struct wsb_sse_request *r, const char *name, size_t len, size_t max,
                       const char **msg)
{
    if (!wsb_channel_valid(name, len)) {
        *msg = "invalid channel name (dot-separated [A-Za-z0-9_-] segments, <= 255 bytes)";
        return -1;
    }
    for (size_t i = 0; i < r->nchannels; i++) {
        if (strlen(r->channels[i]) == len && memcmp(r->channels[i], name, len) == 0) {
            *msg = "a channel is named twice";
            return -1;
        }
    }
    if (r->nchannels >= max) {
        *msg = "more channels than max_subscriptions";
        return -1;
    }
    void *c = realloc(r->channels, (r->nchannels + 1) * sizeof(*r->channels));
    if (!c) {
        *msg = "out of memory";
        return -1;
    }
    r->channels = c;
    memcpy(r->channels[r->nchannels], name, len);
    r->channels[r->nchannels][len] = '\0';
    r->nchannels++;
    return 0;
}

/* The query's next `name=value` pair from *p (advanced past it), or false at the end. */
static bool next_pair(const char **p, const char *end, struct wsb_slice *pair)
{
    if (!*p || *p >= end)
        return false;
    const char *amp = memchr(*p, '&', (size_t)(end - *p));
    const char *pe = amp ? amp : end;
    *pair = (struct wsb_slice){*p, (size_t)(pe - *p)};
    *p = amp ? amp + 1 : end;
    return true;
}

/* Every `channel=` of the query, percent-decoded. */
static int parse_channels(const struct wsb_http_req *req, size_t max, struct wsb_sse_request *r,
                          const char **msg)
{
    const char *p = req->query.ptr, *end = p ? p + req->query.len : NULL;
    char name[WSB_CHANNEL_MAX + 2];
    struct wsb_slice pair;
    while (next_pair(&p, end, &pair)) {
        long n = wsb_http_query_param(pair, "channel", name, sizeof(name));
        if (n == -2 || (n >= 0 && (size_t)n > WSB_CHANNEL_MAX)) {
            *msg = "invalid channel name (dot-separated [A-Za-z0-9_-] segments, <= 255 bytes)";
            return -1;
        }
        if (n >= 0 && add_channel(r, name, (size_t)n, max, msg) < 0)
            return -1;
    }
    if (r->nchannels == 0) {
        *msg = "at least one channel= is required";
        return -1;
    }
    return 0;
}

/* `filter=`: a JSON object from channel names of the request to the filter a WebSocket
 * subscribe would carry, literal values only (subscribe.filter, issue 15). A name that is
 * not among the `channel=`s, a malformed filter or a second `filter=` is a 400: a stream
 * never starts wider than asked. */
static int parse_filters(const struct wsb_http_req *req, struct wsb_sse_request *r,
                         const char **msg)
{
    static _Thread_local char why_msg[384];
    const char *p = req->query.ptr, *end = p ? p + req->query.len : NULL;
    struct wsb_slice pair, found = {0};
    size_t seen = 0;
    char probe[1];
    while (next_pair(&p, end, &pair)) { /* every pair: a second filter= is refused */
        if (wsb_http_query_param(pair, "filter", probe, sizeof(probe)) != -1) {
            seen++;
            found = pair;
        }
    }
    if (seen == 0)
        return 0;
    *msg = "filter must be a JSON object from channel names to filters";
    if (seen > 1)
        return -1;
    char *text = malloc(found.len + 1);
    if (!text) {
        *msg = "out of memory";
        return -1;
    }
    int rc = -1;
    json_t *root = NULL;
    long n = wsb_http_query_param(found, "filter", text, found.len + 1);
    if (n < 0)
        goto out;
    root = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (!root || !json_is_object(root))
        goto out;
    if (!(r->filters = calloc(r->nchannels, sizeof(*r->filters)))) {
        *msg = "out of memory";
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v)
    {
        size_t i = 0;
        while (i < r->nchannels && strcmp(r->channels[i], name) != 0)
            i++;
        if (i == r->nchannels) {
            *msg = "filter names a channel that is not one of the channel= of the request";
            goto out;
        }
        char path[96], why[128];
        r->filters[i] =
            wsb_filter_spec_parse(v, WSB_FILTER_LITERAL, 0, path, sizeof(path), why, sizeof(why));
        if (!r->filters[i]) {
            /* The channel name is valid (checked above), so it is safe to echo. */
            snprintf(why_msg, sizeof(why_msg), "filter of %.96s%s%s: %s", name,
                     path[0] && path[0] != '[' ? "." : "", path, why);
            *msg = why_msg;
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    free(text);
    return rc;
}

static int parse_from(const struct wsb_http_req *req, struct wsb_sse_request *r, const char **msg)
{
    char v[32];
    long n = wsb_http_query_param(req->query, "from", v, sizeof(v));
    r->from = WSB_FROM_LATEST;
    if (n == -1 || (n == 6 && strcmp(v, "latest") == 0))
        return 0;
    if (n == 8 && strcmp(v, "earliest") == 0) {
        r->from = WSB_FROM_EARLIEST;
        return 0;
    }
    bool digits = n > 0 && n <= 18;
    for (long i = 0; digits && i < n; i++)
        digits = v[i] >= '0' && v[i] <= '9';
    if (!digits) {
        *msg = "from must be latest, earliest or a timestamp in ms";
        return -1;
    }
    r->from = WSB_FROM_TIMESTAMP;
    r->from_timestamp_ms = strtoll(v, NULL, 10);
    return 0;
}

static int parse_resume(const struct wsb_http_req *req, struct wsb_sse_request *r, const char **msg)
{
    struct wsb_slice h = wsb_http_header(req, "Last-Event-ID");
    char *q = NULL;
    const char *tok = h.ptr;
    size_t len = h.len;
    if (!tok) {
        q = malloc(WSB_SSE_ID_MAX + 2);
        if (!q) {
            *msg = "out of memory";
            return -1;
        }
        long n = wsb_http_query_param(req->query, "last_event_id", q, WSB_SSE_ID_MAX + 2);
        if (n == -2) {
            free(q);
            *msg = "invalid last_event_id";
            return -1;
        }
        tok = n >= 0 ? q : NULL;
        len = n >= 0 ? (size_t)n : 0;
    }
    int rc = 0;
    if (tok && len && wsb_sse_token_decode(tok, len, &r->resume) < 0) {
        *msg = "invalid Last-Event-ID (not a resume token of this bridge)";
        rc = -1;
    }
    free(q);
    return rc;
}

int wsb_sse_request_parse(const struct wsb_http_req *req, size_t max_channels,
                          struct wsb_sse_request *r, const char **msg)
{
    memset(r, 0, sizeof(*r));
    if (parse_channels(req, max_channels, r, msg) < 0 || parse_filters(req, r, msg) < 0 ||
        parse_from(req, r, msg) < 0 || parse_resume(req, r, msg) < 0) {
        wsb_sse_request_cleanup(r);
        return -1;
    }
    return 0;
}

void wsb_sse_request_cleanup(struct wsb_sse_request *r)
{
    for (size_t i = 0; r->filters && i < r->nchannels; i++)
        wsb_filter_spec_free(r->filters[i]);
    free(r->filters);
    r->filters = NULL;
    free(r->channels);
    r->channels = NULL;
    r->nchannels = 0;
    wsb_sse_resume_cleanup(&r->resume);
}
