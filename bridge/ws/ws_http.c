/* Strict HTTP/1.x request-head parser (RFC 9112) and WebSocket upgrade checks (RFC 6455 §4). */
#include "bridge/ws/ws_http.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include "util/form.h"

long wsb_http_head_end(const char *buf, size_t len)
{
    size_t scan = len < WSB_HTTP_MAX_HEAD ? len : WSB_HTTP_MAX_HEAD;

    for (size_t i = 3; i < scan; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            return (long)(i + 1);
    }
    return len >= WSB_HTTP_MAX_HEAD ? -1 : 0;
}

/* RFC 9110 §5.6.2 tchar: DIGIT, ALPHA and "!#$%&'*+-.^_`|~", as a bitmap of the 128 ASCII
 * codes (ws_http_test checks it against that definition for every byte). */
static bool is_tchar(unsigned char c)
{
    static const uint64_t tchar[2] = {0x03ff6cfa00000000u, 0x57ffffffc7fffffeu};
    return c < 128 && (tchar[c >> 6] >> (c & 63) & 1);
}

/* field-vchar / SP / HTAB, with obs-text allowed (RFC 9110 §5.5) */
static bool is_field_char(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool slice_ieq(const char *p, size_t n, const char *s)
{
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

/* Finds the CRLF ending the line that starts at pos. Returns the CR's index or -1 on a bare
 * CR or when the line does not end inside the head. A bare LF before the CR is left to the
 * line's parser, which refuses it (LF is neither a tchar, a target byte nor a field-char),
 * so the line is searched by memchr rather than byte by byte. */
static long line_end(const char *buf, size_t len, size_t pos)
{
    const char *cr = pos < len ? memchr(buf + pos, '\r', len - pos) : NULL;
    if (!cr)
        return -1;
    size_t i = (size_t)(cr - buf);
    return i + 1 < len && buf[i + 1] == '\n' ? (long)i : -1;
}

static int parse_request_line(const char *buf, size_t end, struct wsb_http_req *req)
{
    size_t i = 0;

    while (i < end && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == 0 || i >= end || buf[i] != ' ')
        return -1;
    req->method = (struct wsb_slice){buf, i};

    size_t t = ++i;
    while (i < end && (unsigned char)buf[i] > 0x20 && (unsigned char)buf[i] < 0x7f)
        i++;
    if (i == t || i >= end || buf[i] != ' ')
        return -1;
    req->target = (struct wsb_slice){buf + t, i - t};
    const char *q = memchr(req->target.ptr, '?', req->target.len);
    if (q) {
        req->path = (struct wsb_slice){req->target.ptr, (size_t)(q - req->target.ptr)};
        req->query = (struct wsb_slice){q + 1, req->target.len - req->path.len - 1};
    } else {
        req->path = req->target;
        req->query = (struct wsb_slice){q, 0};
    }

    i++;
    if (end - i != 8 || memcmp(buf + i, "HTTP/1.", 7) != 0 || buf[i + 7] < '0' || buf[i + 7] > '9')
        return -1;
    req->version_minor = buf[i + 7] - '0';
    return 0;
}

static int parse_header(const char *buf, size_t pos, size_t end, struct wsb_http_header *h)
{
    size_t i = pos;

    while (i < end && is_tchar((unsigned char)buf[i]))
        i++;
    /* no name, or whitespace before the colon (RFC 9112 §5.1), or a line starting with
     * whitespace (obs-fold, RFC 9112 §5.2) */
    if (i == pos || i >= end || buf[i] != ':')
        return -1;
    h->name = (struct wsb_slice){buf + pos, i - pos};
    i++;
    for (size_t k = i; k < end; k++) {
        if (!is_field_char((unsigned char)buf[k]))
            return -1;
    }
    size_t e = end;
    while (i < e && is_ows(buf[i]))
        i++;
    while (e > i && is_ows(buf[e - 1]))
        e--;
    h->value = (struct wsb_slice){buf + i, e - i};
    return 0;
}

int wsb_http_parse(const char *buf, size_t len, struct wsb_http_req *req)
{
    /* Everything but the header slots (2 KiB): only the first nheaders are ever read. */
    memset(req, 0, offsetof(struct wsb_http_req, headers));
    if (len > WSB_HTTP_MAX_HEAD)
        return -1;

    long end = line_end(buf, len, 0);
    if (end < 0 || parse_request_line(buf, (size_t)end, req) < 0)
        return -1;
    size_t pos = (size_t)end + 2;
    for (;;) {
        end = line_end(buf, len, pos);
        if (end < 0)
            return -1;
        if ((size_t)end == pos) /* the empty line ends the head, and must end the buffer */
            return (size_t)end + 2 == len ? 0 : -1;
        if (req->nheaders == WSB_HTTP_MAX_HEADERS)
            return -1;
        if (parse_header(buf, pos, (size_t)end, &req->headers[req->nheaders]) < 0)
            return -1;
        req->nheaders++;
        pos = (size_t)end + 2;
    }
}

struct wsb_slice wsb_http_header(const struct wsb_http_req *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct wsb_http_header *h = &req->headers[i];
        if (slice_ieq(h->name.ptr, h->name.len, name))
            return h->value;
    }
    return (struct wsb_slice){NULL, 0};
}

static size_t count_headers(const struct wsb_http_req *req, const char *name)
{
    size_t n = 0;

    for (size_t i = 0; i < req->nheaders; i++)
        n += slice_ieq(req->headers[i].name.ptr, req->headers[i].name.len, name);
    return n;
}

bool wsb_http_header_has_token(const struct wsb_http_req *req, const char *name, const char *token)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct wsb_http_header *h = &req->headers[i];
        if (!slice_ieq(h->name.ptr, h->name.len, name))
            continue;
        const char *p = h->value.ptr, *end = p + h->value.len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            const char *s = p;
            while (s < e && is_ows(*s))
                s++;
            const char *t = e;
            while (t > s && is_ows(t[-1]))
                t--;
            if (slice_ieq(s, (size_t)(t - s), token))
                return true;
            p = comma ? comma + 1 : end;
        }
    }
    return false;
}

long wsb_http_header_join(const struct wsb_http_req *req, const char *name, char *out,
                          size_t outlen)
{
    size_t n = 0;

    if (outlen == 0)
        return -1;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct wsb_http_header *h = &req->headers[i];
        if (!slice_ieq(h->name.ptr, h->name.len, name))
            continue;
        size_t sep = n ? 2 : 0;
        if (n + sep + h->value.len + 1 > outlen)
            return -1;
        memcpy(out + n, ", ", sep);
        n += sep;
        memcpy(out + n, h->value.ptr, h->value.len);
        n += h->value.len;
    }
    out[n] = '\0';
    return (long)n;
}

/* A Sec-WebSocket-Key is the base64 of 16 bytes: 22 alphabet characters and "==". */
static bool key_valid(struct wsb_slice key)
{
    if (key.len != 24 || key.ptr[22] != '=' || key.ptr[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        char c = key.ptr[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    return true;
}

static void refuse(struct wsb_upgrade_check *out, int status, const char *error,
                   const char *message)
{
    out->status = status;
    out->error = error;
    out->message = message;
}

void wsb_ws_check_upgrade(const struct wsb_http_req *req, struct wsb_upgrade_check *out)
{
    memset(out, 0, sizeof(*out));
    /* A non-GET is answered 400 rather than 405: it is simply not a valid upgrade. */
    if (!(req->method.len == 3 && memcmp(req->method.ptr, "GET", 3) == 0)) {
        refuse(out, 400, "bad_request", "WebSocket upgrade requires GET");
        return;
    }
    if (req->version_minor < 1) {
        refuse(out, 400, "bad_request", "WebSocket upgrade requires HTTP/1.1");
        return;
    }
    struct wsb_slice host = wsb_http_header(req, "Host");
    if (!host.ptr || host.len == 0 || count_headers(req, "Host") != 1) {
        refuse(out, 400, "bad_request", "missing or duplicate Host header");
        return;
    }
    if (!wsb_http_header_has_token(req, "Upgrade", "websocket")) {
        refuse(out, 400, "bad_request", "missing Upgrade: websocket");
        return;
    }
    if (!wsb_http_header_has_token(req, "Connection", "Upgrade")) {
        refuse(out, 400, "bad_request", "missing Connection: Upgrade");
        return;
    }
    /* RFC 6455 §4.4: another (or no) version gets 426 and Sec-WebSocket-Version: 13 */
    struct wsb_slice ver = wsb_http_header(req, "Sec-WebSocket-Version");
    if (!ver.ptr || ver.len != 2 || memcmp(ver.ptr, "13", 2) != 0 ||
        count_headers(req, "Sec-WebSocket-Version") != 1) {
        refuse(out, 426, "unsupported_version", "only WebSocket version 13 is supported");
        return;
    }
    struct wsb_slice key = wsb_http_header(req, "Sec-WebSocket-Key");
    if (!key.ptr || count_headers(req, "Sec-WebSocket-Key") != 1 || !key_valid(key)) {
        refuse(out, 400, "bad_request", "missing or invalid Sec-WebSocket-Key");
        return;
    }
    out->key = key;
}

/* SHA-1 fetched from the provider once: EVP_sha1() in EVP_DigestInit looked it up again on
 * every handshake (with a context allocated and freed around it). */
static EVP_MD *sha1_md;
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;

static void sha1_fetch(void)
{
    sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL);
}

void wsb_ws_accept_key(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[EVP_MAX_MD_SIZE], stack[128], *in;
    unsigned int md_len = 0;
    size_t len = key_len + sizeof(guid) - 1;

    out[0] = '\0';
    pthread_once(&sha1_once, sha1_fetch);
    /* One buffer for the one-shot digest: a key of the valid size (24) is joined on the
     * stack. */
    in = len <= sizeof(stack) ? stack : malloc(len);
    if (!in)
        return;
    memcpy(in, key, key_len);
    memcpy(in + key_len, guid, sizeof(guid) - 1);
    if (EVP_Digest(in, len, md, &md_len, sha1_md ? sha1_md : EVP_sha1(), NULL) == 1 && md_len == 20)
        EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
    if (in != stack)
        free(in);
}

long wsb_http_query_param(struct wsb_slice query, const char *name, char *out, size_t outlen)
{
    return wsb_form_param(query.ptr, query.len, name, out, outlen);
}

struct wsb_slice wsb_http_cookie(struct wsb_slice cookie_header, const char *name)
{
    const char *p = cookie_header.ptr, *end = p ? p + cookie_header.len : NULL;
    size_t nlen = strlen(name);

    /* RFC 6265 §4.2.1: cookie-pair *( ";" SP cookie-pair ); parsed leniently on spaces */
    while (p && p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        while (p < pe && is_ows(*p))
            p++;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq) {
            const char *ne = eq;
            while (ne > p && is_ows(ne[-1]))
                ne--;
            if ((size_t)(ne - p) == nlen && memcmp(p, name, nlen) == 0) {
                const char *v = eq + 1, *ve = pe;
                while (v < ve && is_ows(*v))
                    v++;
                while (ve > v && is_ows(ve[-1]))
                    ve--;
                if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                return (struct wsb_slice){v, (size_t)(ve - v)};
            }
        }
        p = semi ? semi + 1 : end;
    }
    return (struct wsb_slice){NULL, 0};
}
