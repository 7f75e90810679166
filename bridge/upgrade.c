/* The HTTP upgrade (RFC 6455 §4.2) and admission: each step is one named function that
 * either lets the request on or answers it (status, JSON body, close). At accept, before any
 * byte is read, the connection counts against its address (per-IP rate and cap, 429) and
 * the global max_connections (503). Then, once the head is complete: the head is parsed
 * (400), the path routed (404, or the demo page), the upgrade checked (400/426), the Origin
 * (403), drain (503), the token (401, or 101 then 4401 in refusal=close mode); then 101,
 * and the session opens with its ACL compiled and the welcome sent. */
#include "bridge/upgrade.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/jwt.h"
#include "auth/token.h"
#include "bridge/assets.h"
#include "bridge/clock.h"
#include "bridge/iplimit.h"
#include "bridge/metrics.h"
#include "bridge/protocol.h"
#include "bridge/httppub.h"
#include "bridge/runtime.h"
#include "bridge/grants.h"
#include "bridge/session.h"
#include "bridge/sse.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "bridge/ws/ws_frame.h"
#include "bridge/ws/ws_http.h"
#include "config/config.h"
#include "util/buf.h"
#include "util/log.h"

/* Every join of header values of a head within WSB_HTTP_MAX_HEAD fits (each value costs at
 * least its name, ": " and CRLF in the head, more than a separator). */
#define JOIN_MAX (WSB_HTTP_MAX_HEAD + 1)

/* What the request asks for (route_path). */
enum request_kind { REQ_UPGRADE, REQ_STREAM, REQ_PUBLISH };

/* One upgrade request on its way through the steps. */
struct admission {
    enum request_kind kind;
    const uint8_t *body; /* POST /publish: the body (Content-Length bytes after the head) */
    size_t body_len;
    struct wsb_session *s;
    struct wsb_worker *w;
    const struct wsb_config *cfg;
    struct wsb_http_req req;
    struct wsb_upgrade_check chk;
    const char *token_error; /* refusal=close: the token failed; 101, then 4401 */
    char join[JOIN_MAX];     /* scratch for header joins */
};

/* Joins the values of every `name` header with `sep` into out (JOIN_MAX bytes,
 * NUL-terminated). Returns the length; 0 when there is none. */
static size_t join_headers(const struct wsb_http_req *req, const char *name, const char *sep,
                           char *out)
{
    size_t n = 0, nlen = strlen(name), slen = strlen(sep);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct wsb_http_header *h = &req->headers[i];
        if (h->name.len != nlen || strncasecmp(h->name.ptr, name, nlen) != 0)
            continue;
        size_t add = (n ? slen : 0) + h->value.len;
        if (n + add >= JOIN_MAX)
            return 0; /* cannot happen within the head limit; refuse rather than cut */
        if (n) {
            memcpy(out + n, sep, slen);
            n += slen;
        }
        memcpy(out + n, h->value.ptr, h->value.len);
        n += h->value.len;
    }
    out[n] = '\0';
    return n;
}

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* The early refusals (429 and 503 at accept) come in floods when they come: the first of
 * each second is logged in full, the rest only counted, and summed up in one line once the
 * second is over (at the next refusal or on the worker's tick). */
#define REFUSAL_LOG_US 1000000

static void log_refusals_unlogged(struct wsb_worker *w, int64_t now_us)
{
    uint64_t n429 = w->refusals_unlogged[0], n503 = w->refusals_unlogged[1];
    if (n429 + n503 == 0)
        return;
    wsb_log(WSB_LOG_INFO, "handshake refusals not logged one by one",
            WSB_LUINT("rate_limited", n429), WSB_LUINT("overloaded", n503),
            WSB_LINT("period_ms", (now_us - w->refusal_logged_us) / 1000));
    w->refusals_unlogged[0] = w->refusals_unlogged[1] = 0;
}

void wsb_upgrade_tick(struct wsb_worker *w, int64_t now_us)
{
    if (now_us - w->refusal_logged_us >= REFUSAL_LOG_US)
        log_refusals_unlogged(w, now_us);
}

/* True when this refusal gets its own log line. */
static bool log_refusal(struct wsb_worker *w, int status)
{
    if (status != 429 && status != 503)
        return true;
    int64_t now = wsb_now_us();
    if (w->refusal_logged_us && now - w->refusal_logged_us < REFUSAL_LOG_US) {
        w->refusals_unlogged[status == 429 ? 0 : 1]++;
        return false;
    }
    log_refusals_unlogged(w, now);
    w->refusal_logged_us = now;
    return true;
}

static void refuse(struct wsb_session *s, int status, const char *code, const char *message,
                   const char *extra_headers, enum wsb_hs_result result)
{
    struct wsb_buf body;
    wsb_buf_init(&body);
    wsb_buf_puts(&body, "{\"error\":");
    wsb_buf_json_str(&body, code, strlen(code));
    wsb_buf_puts(&body, ",\"message\":");
    wsb_buf_json_str(&body, message, strlen(message));
    wsb_buf_puts(&body, "}");
    struct evbuffer *out = s->out;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n"
                        "%s\r\n",
                        status, status_text(status), body.len, extra_headers ? extra_headers : "");
    evbuffer_add(out, body.data, body.len);
    wsb_buf_cleanup(&body);
    wsb_metric_add(s->w->metrics.handshakes[result], 1);
    if (log_refusal(s->w, status))
        wsb_log(WSB_LOG_INFO, "handshake refused", WSB_LSTR("ip", s->ip),
                WSB_LINT("status", status), WSB_LSTR("error", code));
    wsb_session_end_after_flush(s);
}

static void serve_page(struct wsb_session *s, const char *type, const char *body)
{
    struct evbuffer *out = s->out;
    size_t len = strlen(body);
    evbuffer_add_printf(out,
                        "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\nCache-Control: no-store\r\n\r\n",
                        type, len);
    evbuffer_add(out, body, len);
    wsb_session_end_after_flush(s);
}

/* Origins guard browsers against cross-site WebSocket hijacking. A request without Origin
 * is not from a browser (browsers always send it on a WebSocket upgrade), so refusing it
 * protects nothing and locks out server-side and mobile clients: it is admitted, as
 * gorilla/websocket and Centrifugo do. "*" admits any origin. */
static bool origin_allowed(const struct wsb_config *cfg, struct wsb_slice origin)
{
    if (cfg->nallowed_origins == 0 || !origin.ptr)
        return true;
    for (size_t i = 0; i < cfg->nallowed_origins; i++) {
        const char *o = cfg->allowed_origins[i];
        if (strcmp(o, "*") == 0)
            return true;
        if (strlen(o) == origin.len && strncasecmp(o, origin.ptr, origin.len) == 0)
            return true;
    }
    return false;
}

/* ---- the steps: each returns true to go on, false when it answered ---------------------- */

static bool parse_request(struct admission *a, const char *head, size_t len)
{
    if (wsb_http_parse(head, len, &a->req) != 0) {
        refuse(a->s, 400, "bad_request", "malformed HTTP request", NULL, WSB_HS_BAD_REQUEST);
        return false;
    }
    return true;
}

/* Only the WebSocket path upgrades; /wsbridge.js and /wsbridge.d.ts are served; in --demo,
 * GET / serves the page. */
static bool route_path(struct admission *a)
{
    const struct wsb_http_req *req = &a->req;
    size_t plen = strlen(a->cfg->path);
    if (req->path.len == plen && memcmp(req->path.ptr, a->cfg->path, plen) == 0)
        return true;
    /* The event stream and HTTP publish (sse.c, httppub.c). */
    const char *sp = a->cfg->sse_enabled ? a->cfg->sse_path : NULL;
    if (sp && req->path.len == strlen(sp) && memcmp(req->path.ptr, sp, req->path.len) == 0) {
        a->kind = REQ_STREAM;
        return true;
    }
    if (a->cfg->sse_enabled && req->path.len == 8 && memcmp(req->path.ptr, "/publish", 8) == 0) {
        a->kind = REQ_PUBLISH;
        return true;
    }
    bool get = req->method.len == 3 && memcmp(req->method.ptr, "GET", 3) == 0;
    bool head = req->method.len == 4 && memcmp(req->method.ptr, "HEAD", 4) == 0;
    /* The browser library, embedded at build time (bridge/assets.h). */
    const struct wsb_asset *asset =
        req->path.len > 1 ? wsb_asset_find(req->path.ptr, req->path.len) : NULL;
    if ((get || head) && asset) {
        struct wsb_slice inm = wsb_http_header(req, "If-None-Match");
        wsb_asset_respond(asset, head, inm.ptr, inm.len, a->s->out);
        wsb_session_end_after_flush(a->s);
        return false;
    }
    const char *page = a->w->shared->demo_page;
    if (get && page && req->path.len == 1 && req->path.ptr[0] == '/') {
        serve_page(a->s, "text/html; charset=utf-8", page);
        return false;
    }
    refuse(a->s, 404, "not_found", "no such resource", NULL, WSB_HS_BAD_REQUEST);
    return false;
}

static bool check_upgrade(struct admission *a)
{
    wsb_ws_check_upgrade(&a->req, &a->chk);
    if (!a->chk.status)
        return true;
    refuse(a->s, a->chk.status, a->chk.error, a->chk.message,
           a->chk.status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL, WSB_HS_BAD_REQUEST);
    return false;
}

/* The event stream is a GET, publish a POST whose body fits max_message_bytes. */
static bool check_method(struct admission *a)
{
    const struct wsb_slice m = a->req.method;
    if (a->kind == REQ_PUBLISH && m.len == 7 && memcmp(m.ptr, "OPTIONS", 7) == 0)
        return true; /* a CORS preflight: answered once the Origin step let it through */
    const char *want = a->kind == REQ_STREAM ? "GET" : "POST";
    if (m.len != strlen(want) || memcmp(m.ptr, want, m.len) != 0) {
        refuse(a->s, 405, "method_not_allowed",
               a->kind == REQ_STREAM ? "the event stream is a GET" : "publish is a POST",
               a->kind == REQ_STREAM ? "Allow: GET\r\n" : "Allow: POST\r\n", WSB_HS_BAD_REQUEST);
        return false;
    }
    if (a->kind == REQ_STREAM)
        return true;
    if (a->body_len == SIZE_MAX) {
        refuse(a->s, 411, "invalid_request", "a Content-Length is required", NULL,
               WSB_HS_BAD_REQUEST);
        return false;
    }
    if (a->body_len > a->cfg->limits.max_message_bytes) {
        refuse(a->s, 413, "too_large", "the body exceeds max_message_bytes", NULL,
               WSB_HS_BAD_REQUEST);
        return false;
    }
    return true;
}

static bool check_origin(struct admission *a)
{
    if (origin_allowed(a->cfg, wsb_http_header(&a->req, "Origin")))
        return true;
    refuse(a->s, 403, "origin_not_allowed", "Origin is not allowed", NULL, WSB_HS_FORBIDDEN);
    return false;
}

/* Per-IP handshake rate and connection cap, taken at accept. Admitted: the address counts
 * the connection until the session is freed. */
static bool check_ip_limits(struct admission *a)
{
    struct wsb_session *s = a->s;
    uint32_t retry = 1;
    enum wsb_ip_verdict iv = wsb_iplimit_acquire(a->w->shared->iplimit, &s->addr.sa, wsb_now_us(),
                                                 &retry, &s->ip_ticket);
    if (iv == WSB_IP_OK)
        return true;
    char extra[64];
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry ? retry : 1);
    wsb_metric_add(a->w->metrics.rate_limited[iv == WSB_IP_RATE ? WSB_RL_HANDSHAKE
                                                                : WSB_RL_CONNECTIONS_PER_IP],
                   1);
    refuse(s, 429, "rate_limited",
           iv == WSB_IP_RATE  ? "too many handshakes from this address"
           : iv == WSB_IP_CAP ? "too many connections from this address"
                              : "too many client addresses at once",
           extra, WSB_HS_RATE_LIMITED);
    return false;
}

/* max_connections: every accepted connection counts (until it is freed), not only those
 * whose head has arrived, so silent sockets cannot pile up past the cap. */
static bool check_capacity(struct admission *a)
{
    struct wsb_worker *w = a->w;
    int64_t conns = atomic_fetch_add(&w->shared->connections, 1);
    if (conns >= (int64_t)a->cfg->limits.max_connections) {
        atomic_fetch_sub(&w->shared->connections, 1); /* a refused one takes no slot */
        refuse(a->s, 503, "overloaded", "max_connections reached", "Retry-After: 5\r\n",
               WSB_HS_OVERLOADED);
        return false;
    }
    a->s->counted = true;
    wsb_metric_add(w->metrics.connections, 1);
    return true;
}

static bool check_draining(struct admission *a)
{
    if (!atomic_load(&a->w->shared->draining) && !a->w->draining)
        return true;
    refuse(a->s, 503, "draining", "server is shutting down", "Retry-After: 5\r\n",
           WSB_HS_OVERLOADED);
    return false;
}

/* The token: found by the configured sources and verified. A failure is a 401, or in
 * refusal=close mode remembered for a 4401 after the 101. */
static bool authenticate(struct admission *a)
{
    struct wsb_session *s = a->s;
    const struct wsb_config *cfg = a->cfg;
    if (!s->rt->auth)
        return true;
    const struct wsb_http_req *req = &a->req;
    /* Any join the head limit allows: RS256 tokens with many claims are often several KiB.
     * Cookie headers join with "; " (RFC 6265 §5.4), subprotocol lists with ", ". The
     * cookies are joined only for the cookie source (wsb_token_find reads them for nothing
     * else). Both buffers are the loop thread's (no 8 KiB allocation per handshake) and are
     * wiped after each use, as far as they were written. */
    static _Thread_local char cookies[JOIN_MAX];
    static _Thread_local char token[WSB_TOKEN_MAX + 1];
    bool want_cookies = (cfg->auth.token_sources & WSB_TOKEN_COOKIE) && cfg->auth.cookie_name;
    /* Only a WebSocket upgrade carries the token as a subprotocol. */
    size_t pl =
        a->kind == REQ_UPGRADE ? join_headers(req, "Sec-WebSocket-Protocol", ", ", a->join) : 0;
    size_t cl = want_cookies ? join_headers(req, "Cookie", "; ", cookies) : 0;
    struct wsb_slice authz = wsb_http_header(req, "Authorization");
    struct wsb_token_inputs in = {
        .authorization = authz.ptr,
        .authorization_len = authz.len,
        .query = req->query.ptr,
        .query_len = req->query.len,
        .protocols = pl ? a->join : NULL,
        .protocols_len = pl,
        .cookies = cl ? cookies : NULL,
        .cookies_len = cl,
    };
    const char *source = NULL;
    const char *token_error = NULL;
    /* wsb_token_find writes the token and its NUL, or only out[0], on every path. */
    long tl = wsb_token_find(&cfg->auth, &in, token, WSB_TOKEN_MAX + 1, &source);
    if (tl == 0) {
        token_error = "token_missing";
    } else if (tl < 0) {
        token_error = "token_malformed";
    } else if (wsb_auth_verify(s->rt->auth, token, (size_t)tl, wsb_wall_s(), &s->ident,
                               &token_error) != WSB_OK) {
        if (!token_error)
            token_error = "token_invalid";
    }
    memset(token, 0, tl > 0 ? (size_t)tl + 1 : 1);
    if (pl)
        memset(a->join, 0, pl + 1); /* the subprotocols may carry the token */
    if (want_cookies)
        memset(cookies, 0, JOIN_MAX); /* a failed join may have written part of it */
    if (token_error && (cfg->auth.refusal == WSB_REFUSAL_HTTP || a->kind != REQ_UPGRADE)) {
        refuse(s, 401, token_error, "authentication failed",
               "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n", WSB_HS_UNAUTHORIZED);
        return false;
    }
    a->token_error = token_error;
    return true;
}

/* 101 Switching Protocols, with the subprotocol and permessage-deflate answers. */
static void switch_protocols(struct admission *a)
{
    struct wsb_session *s = a->s;
    const struct wsb_config *cfg = a->cfg;
    char accept[29];
    wsb_ws_accept_key(a->chk.key.ptr, a->chk.key.len, accept);
    size_t pl = join_headers(&a->req, "Sec-WebSocket-Protocol", ", ", a->join);
    const char *proto = pl ? wsb_token_select_protocol(a->join, pl) : NULL; /* a constant */
    if (pl)
        memset(a->join, 0, pl + 1); /* the subprotocols may carry the token */
    char ext[256] = "";
    struct wsb_pmd_params pmdp;
    if (cfg->permessage_deflate && !a->token_error) {
        char *offers = a->join; /* the subprotocols are done with */
        size_t ol = join_headers(&a->req, "Sec-WebSocket-Extensions", ", ", offers);
        if (ol > 0 && wsb_pmd_negotiate(offers, ol, &pmdp, ext, sizeof(ext)) == 1) {
            s->inflater =
                wsb_inflater_new(pmdp.client_max_window_bits, pmdp.client_no_context_takeover);
            s->pmd = s->inflater != NULL;
            /* Shared compressed frames use a 15-bit window; a client that asked for a
             * smaller server window gets its messages uncompressed, which RFC 7692 allows
             * per message (RSV1 clear). */
            s->deflate_out = s->pmd && pmdp.server_max_window_bits >= 15;
        }
    }
    /* One evbuffer_add of the whole head, copied together without printf. */
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Accept: ";
    char resp[sizeof(head) + sizeof(accept) + sizeof(ext) + 128];
    size_t n = 0;
#define PUT(p, l) (memcpy(resp + n, (p), (l)), n += (l))
    PUT(head, sizeof(head) - 1);
    PUT(accept, strlen(accept));
    PUT("\r\n", 2);
    if (proto) {
        PUT("Sec-WebSocket-Protocol: ", 24);
        PUT(proto, strlen(proto)); /* SUBPROTOCOL, a constant */
        PUT("\r\n", 2);
    }
    if (s->pmd) {
        PUT("Sec-WebSocket-Extensions: ", 26);
        PUT(ext, strnlen(ext, sizeof(ext) - 1));
        PUT("\r\n", 2);
    }
    PUT("\r\n", 2);
#undef PUT
    evbuffer_add(s->out, resp, n);
    s->state = WSB_SS_OPEN;
    s->opened_us = wsb_now_us();
    wsb_session_disarm_timer(s);
}

/* The WebSocket is open: 4401 for a refused token, else ACL compile, timers and welcome. */
static void open_session(struct admission *a)
{
    struct wsb_session *s = a->s;
    struct wsb_worker *w = a->w;
    if (a->token_error) {
        wsb_metric_add(w->metrics.handshakes[WSB_HS_UNAUTHORIZED], 1);
        wsb_log(WSB_LOG_INFO, "token refused", WSB_LSTR("conn", s->sid), WSB_LSTR("ip", s->ip),
                WSB_LSTR("error", a->token_error));
        wsb_session_close_token_error(s, a->token_error);
        return;
    }
    wsb_metric_add(w->metrics.handshakes[WSB_HS_OK], 1);
    wsb_grants_start(s);
    wsb_log(WSB_LOG_DEBUG, "connected", WSB_LSTR("conn", s->sid), WSB_LSTR("ip", s->ip),
            WSB_LSTR("sub", s->ident ? s->ident->sub : NULL));
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_welcome(&b, s->sid, s->ident ? s->ident->sub : NULL, s->ident ? s->ident->exp : 0);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
}

/* An admitted stream or publish request goes to its transport. */
static void open_http(struct admission *a)
{
    const struct wsb_slice m = a->req.method;
    if (m.len == 7 && memcmp(m.ptr, "OPTIONS", 7) == 0) {
        /* The preflight of a cross-origin fetch with a JSON body and Authorization. */
        struct wsb_slice origin = wsb_http_header(&a->req, "Origin");
        struct evbuffer *out = a->s->out;
        evbuffer_add_printf(out, "HTTP/1.1 204 No Content\r\nConnection: close\r\n");
        if (origin.ptr && origin.len < 1024)
            evbuffer_add_printf(out,
                                "Access-Control-Allow-Origin: %.*s\r\n"
                                "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
                                "Access-Control-Allow-Methods: POST\r\n"
                                "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                                "Access-Control-Max-Age: 600\r\n",
                                (int)origin.len, origin.ptr);
        evbuffer_add(out, "\r\n", 2);
        wsb_session_end_after_flush(a->s);
        return;
    }
    if (a->kind == REQ_PUBLISH) {
        wsb_httppub_open(a->s, &a->req, a->body, a->body_len);
        return;
    }
    const char *msg = NULL;
    if (wsb_sse_open(a->s, &a->req, &msg) < 0)
        refuse(a->s, 400, "invalid_request", msg ? msg : "invalid request", NULL,
               WSB_HS_BAD_REQUEST);
}

static void handshake(struct wsb_session *s, const char *head, size_t head_len, const uint8_t *body,
                      size_t body_len)
{
    struct admission a = {.s = s, .w = s->w, .cfg = s->rt->cfg, .body = body, .body_len = body_len};
    if (!parse_request(&a, head, head_len) || !route_path(&a))
        return;
    if (a.kind != REQ_UPGRADE) {
        bool preflight = a.req.method.len == 7 && memcmp(a.req.method.ptr, "OPTIONS", 7) == 0;
        if (check_method(&a) && check_origin(&a) && (preflight || check_draining(&a)) &&
            (preflight || authenticate(&a)))
            open_http(&a);
        return;
    }
    if (!check_upgrade(&a) || !check_origin(&a) || !check_draining(&a) || !authenticate(&a))
        return;
    switch_protocols(&a);
    open_session(&a);
}

/* The body a POST /publish head announces: 0 when none is expected, SIZE_MAX when the
 * length is missing or chunked (refused by check_method). */
static size_t announced_body(const struct wsb_session *s, const char *head, size_t len)
{
    /* The method is the head's first token: anything but "POST " announces no body, and is
     * parsed once, by handshake() (not twice per upgrade). */
    if (len < 5 || memcmp(head, "POST ", 5) != 0 || !s->rt->cfg->sse_enabled)
        return 0;
    struct wsb_http_req *req = malloc(sizeof(*req));
    size_t body = 0;
    if (!req || wsb_http_parse(head, len, req) != 0 || !s->rt->cfg->sse_enabled ||
        req->method.len != 4 || memcmp(req->method.ptr, "POST", 4) != 0 || req->path.len != 8 ||
        memcmp(req->path.ptr, "/publish", 8) != 0) {
        free(req);
        return 0;
    }
    struct wsb_slice cl = wsb_http_header(req, "Content-Length");
    body = SIZE_MAX;
    if (cl.ptr && cl.len > 0 && cl.len <= 12 && !wsb_http_header(req, "Transfer-Encoding").ptr) {
        body = 0;
        for (size_t i = 0; i < cl.len && body != SIZE_MAX; i++)
            body = cl.ptr[i] >= '0' && cl.ptr[i] <= '9' ? body * 10 + (size_t)(cl.ptr[i] - '0')
                                                        : SIZE_MAX;
    }
    free(req);
    return body;
}

bool wsb_upgrade_admit_peer(struct wsb_session *s)
{
    struct admission a = {.s = s, .w = s->w, .cfg = s->rt->cfg};
    return check_ip_limits(&a) && check_capacity(&a);
}

void wsb_upgrade_read(struct wsb_session *s, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    size_t n = len < WSB_HTTP_MAX_HEAD + 4 ? len : WSB_HTTP_MAX_HEAD + 4;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    long end = wsb_http_head_end(p, n);
    if (end == 0)
        return;
    if (end < 0) {
        refuse(s, 431, "headers_too_large", "request head is too large", NULL, WSB_HS_BAD_REQUEST);
        return;
    }
    size_t body = announced_body(s, p, (size_t)end);
    size_t want = body == SIZE_MAX || body > s->rt->cfg->limits.max_message_bytes ? 0 : body;
    if (want && len < (size_t)end + want) {
        /* Wait for the whole body (bounded by max_message_bytes; the handshake deadline
         * still runs); the read high-water mark must not stop short of it. */
        wsb_session_set_read_max(
            s, (size_t)end + want + 4096 > 256 * 1024 ? (size_t)end + want + 4096 : 256 * 1024);
        return;
    }
    p = (const char *)evbuffer_pullup(in, (ssize_t)((size_t)end + want));
    handshake(s, p, (size_t)end, (const uint8_t *)p + end, body == SIZE_MAX ? SIZE_MAX : body);
    /* The head may carry the token (query, Authorization, subprotocol, cookie): wiped in
     * the input's chain before the chain goes back to the allocator or is reused. The
     * pulled-up bytes are contiguous and the buffer's own. */
    memset((char *)p, 0, (size_t)end);
    evbuffer_drain(in, (size_t)end + want);
}
