/* POST /publish: the body becomes a wsbridge.v1 `publish` request (`op` and `id` may not be in it)
 * (jansson checks it is an object; the protocol parser validates it as it does a WebSocket
 * client's), run by the publish op on a one-shot session whose first reply is the HTTP answer.
 *
 * Per-subject limits: a process-wide table (one mutex, touched twice per request, never on
 * the message path) keyed by the token's `sub` (anonymous requests by client address) holds
 * the inbound message and byte buckets (limits.inbound_rate, limits.inbound_bytes) and the
 * count of publishes awaiting the broker (limits.max_inflight_publishes). Idle entries are
 * freed as the table is walked. */
#include "bridge/httppub.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/flow.h"
#include "bridge/metrics.h"
#include "bridge/ops.h"
#include "bridge/runtime.h"
#include "bridge/grants.h"
#include "bridge/session.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "util/buf.h"
#include "util/log.h"

#define TABLE_SIZE 1024
#define IDLE_US (60 * 1000000LL) /* an entry with nothing in flight is kept this long */

struct subject {
    struct subject *next;
    uint32_t inflight;
    int64_t last_us;
    struct wsb_bucket msgs, bytes;
    char key[];
};

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static struct subject *table[TABLE_SIZE];

static uint32_t hash_key(const char *k)
{
    uint32_t h = 2166136261u;
    for (; *k; k++)
        h = (h ^ (uint8_t)*k) * 16777619u;
    return h % TABLE_SIZE;
}

/* The subject's entry (created), idle neighbours freed on the way. Under table_mu. */
static struct subject *lookup(const char *key, const struct wsb_limits *l, int64_t now)
{
    struct subject **pp = &table[hash_key(key)];
    struct subject *found = NULL;
    while (*pp) {
        struct subject *e = *pp;
        if (strcmp(e->key, key) == 0) {
            found = e;
            pp = &e->next;
        } else if (e->inflight == 0 && now - e->last_us > IDLE_US) {
            *pp = e->next;
            free(e);
        } else {
            pp = &e->next;
        }
    }
    if (found)
        return found;
    size_t kl = strlen(key);
    struct subject *e = calloc(1, sizeof(*e) + kl + 1);
    if (!e)
        return NULL;
    memcpy(e->key, key, kl + 1);
    wsb_bucket_init(&e->msgs, l->inbound_rate_per_s, l->inbound_rate_burst, now);
    wsb_bucket_init(&e->bytes, l->inbound_bytes_per_s, l->inbound_bytes_burst, now);
    e->next = table[hash_key(key)];
    table[hash_key(key)] = e;
    return e;
}

/* What the session holds while its publish is in flight. */
struct pub_state {
    bool holding;     /* counted in its subject's inflight */
    char origin[256]; /* the request's Origin (admitted by the Origin step), "" when none */
    char key[];
};

static void subject_key(const struct wsb_session *s, char *out, size_t outlen)
{
    if (s->ident && s->ident->sub)
        snprintf(out, outlen, "s:%s", s->ident->sub);
    else
        snprintf(out, outlen, "a:%s", s->ip);
}

/* Takes a message (and its bytes) and an inflight slot for the subject, or says why not. */
static const char *admit(struct wsb_session *s, size_t body_len, uint32_t *retry)
{
    const struct wsb_limits *l = wsb_session_limits(s);
    struct pub_state *ps = s->ext;
    int64_t now = wsb_now_us();
    const char *why = NULL;
    pthread_mutex_lock(&table_mu);
    struct subject *e = lookup(ps->key, l, now);
    if (!e) {
        why = "out of memory";
    } else {
        wsb_bucket_reconfigure(&e->msgs, l->inbound_rate_per_s, l->inbound_rate_burst);
        wsb_bucket_reconfigure(&e->bytes, l->inbound_bytes_per_s, l->inbound_bytes_burst);
        e->last_us = now;
        if (e->inflight >= l->max_inflight_publishes) {
            why = "too many publishes awaiting confirmation";
            wsb_metric_add(s->w->metrics.rate_limited[WSB_RL_INFLIGHT_PUBLISHES], 1);
        } else if (!wsb_bucket_take(&e->msgs, 1, now)) {
            why = "too many requests; slow down";
            *retry = wsb_bucket_retry_after(&e->msgs, 1, now);
            wsb_metric_add(s->w->metrics.rate_limited[WSB_RL_MESSAGES], 1);
        } else if (e->bytes.rate > 0 && !wsb_bucket_take(&e->bytes, (double)body_len, now)) {
            why = "too many bytes; slow down";
            *retry = wsb_bucket_retry_after(&e->bytes, (double)body_len, now);
            wsb_metric_add(s->w->metrics.rate_limited[WSB_RL_BYTES], 1);
        } else {
            e->inflight++;
            ps->holding = true;
        }
    }
    pthread_mutex_unlock(&table_mu);
    return why;
}

static void release(struct wsb_session *s)
{
    struct pub_state *ps = s->ext;
    if (!ps || !ps->holding)
        return;
    ps->holding = false;
    pthread_mutex_lock(&table_mu);
    for (struct subject *e = table[hash_key(ps->key)]; e; e = e->next) {
        if (strcmp(e->key, ps->key) == 0) {
            if (e->inflight)
                e->inflight--;
            e->last_us = wsb_now_us();
            break;
        }
    }
    pthread_mutex_unlock(&table_mu);
}

int wsb_httppub_status(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        {"invalid_request", 400}, {"token_missing", 401}, {"token_invalid", 401},
        {"token_expired", 401},   {"forbidden", 403},     {"unknown_channel", 404},
        {"too_large", 413},       {"rate_limited", 429},  {"publish_failed", 502},
        {"unavailable", 503},     {"shutting_down", 503}, {"closed", 503},
        {"internal_error", 500},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 400;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    default: return "Service Unavailable";
    }
}

/* The answer: the status from the object's type and code, the object as the body. */
static void respond(struct wsb_session *s, const struct wsb_buf *b)
{
    s->on_reply = NULL; /* one answer per request */
    release(s);
    int status = 200;
    json_t *root = json_loadb((const char *)b->data, b->len, 0, NULL);
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!type || strcmp(type, "published") != 0) {
        const char *code = json_string_value(json_object_get(root, "code"));
        status = wsb_httppub_status(code ? code : "");
    }
    json_decref(root);
    struct evbuffer *out = wsb_session_output(s);
    if (!out)
        return;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n",
                        status, reason_phrase(status), b->len);
    if (status == 429)
        evbuffer_add_printf(out, "Retry-After: 1\r\n");
    struct pub_state *ps = s->ext;
    if (ps && ps->origin[0])
        evbuffer_add_printf(out,
                            "Access-Control-Allow-Origin: %s\r\n"
                            "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n",
                            ps->origin);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, b->data, b->len);
    wsb_metric_add(s->w->metrics.bytes_out, b->len);
    wsb_session_end_after_flush(s);
}

static void on_free(struct wsb_session *s)
{
    release(s);
    free(s->ext);
    s->ext = NULL;
}

/* {channel, data, key?, headers?} -> {"op":"publish",...}; NULL when it is no object. */
static char *to_request(const uint8_t *body, size_t len, size_t *out_len)
{
    json_t *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, NULL);
    char *text = NULL;
    if (json_is_object(root) && !json_object_get(root, "op") && !json_object_get(root, "id") &&
        json_object_set_new(root, "op", json_string("publish")) == 0)
        text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    *out_len = text ? strlen(text) : 0;
    return text;
}

void wsb_httppub_open(struct wsb_session *s, const struct wsb_http_req *req, const uint8_t *body,
                      size_t len)
{
    char key[300];
    subject_key(s, key, sizeof(key));
    size_t kl = strlen(key);
    struct pub_state *ps = calloc(1, sizeof(*ps) + kl + 1);
    s->transport = WSB_TRANSPORT_HTTP;
    s->state = WSB_SS_OPEN;
    s->discard_input = true;
    s->on_reply = respond;
    s->on_free = on_free;
    wsb_session_disarm_timer(s);
    wsb_metric_add(s->w->metrics.handshakes[WSB_HS_OK], 1);
    wsb_grants_start(s);
    if (!ps) {
        wsb_session_reply_error(s, "", "unavailable", "out of memory");
        return;
    }
    memcpy(ps->key, key, kl + 1);
    struct wsb_slice origin = wsb_http_header(req, "Origin");
    if (origin.ptr && origin.len < sizeof(ps->origin))
        memcpy(ps->origin, origin.ptr, origin.len); /* calloc'd: NUL-terminated */
    s->ext = ps;
    size_t tl = 0;
    char *text = to_request(body, len, &tl);
    if (!text) {
        wsb_session_reply_error(s, "", "invalid_request",
                                "the body must be a JSON object {channel, data, key?, headers?}");
        return;
    }
    uint32_t retry = 1;
    const char *why = admit(s, len, &retry);
    if (why) {
        free(text);
        wsb_session_reply_error(s, "", "rate_limited", why);
        return;
    }
    wsb_ops_dispatch(s, (const uint8_t *)text, tl);
    free(text);
}
