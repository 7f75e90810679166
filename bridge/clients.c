/* Client introspection: the cross-thread request behind GET /clients and its JSON answer. */
#include "bridge/clients.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/session.h"
#include "bridge/worker.h"

struct wsb_clients_req {
    atomic_int refs;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum wsb_clients_sort sort;
    size_t top;
    unsigned pending; /* workers yet to answer (under lock) */
    size_t total;     /* connections seen by the workers that answered */
    int64_t now_us;   /* one instant for every worker, so ages (and lags) compare */
    int64_t wall_ms;
    struct wsb_client_info *infos;
    size_t n, cap;
};

static const char *const sort_names[] = {
    [WSB_CLIENTS_SEND_BUFFER] = "send_buffer",
    [WSB_CLIENTS_LAG] = "lag",
    [WSB_CLIENTS_AGE] = "age",
};

bool wsb_clients_sort_parse(const char *s, enum wsb_clients_sort *out)
{
    for (size_t i = 0; i < sizeof(sort_names) / sizeof(sort_names[0]); i++) {
        if (strcmp(s, sort_names[i]) == 0) {
            *out = (enum wsb_clients_sort)i;
            return true;
        }
    }
    return false;
}

void wsb_client_info_cleanup(struct wsb_client_info *ci)
{
    free(ci->sub);
    for (size_t i = 0; i < ci->nchannels; i++)
        free(ci->channels[i]);
    free(ci->channels);
    memset(ci, 0, sizeof(*ci));
}

int64_t wsb_clients_key(enum wsb_clients_sort sort, uint64_t buffered_bytes, int64_t lag_ms,
                        int64_t age_us)
{
    switch (sort) {
    case WSB_CLIENTS_LAG: return lag_ms;
    case WSB_CLIENTS_AGE: return age_us;
    case WSB_CLIENTS_SEND_BUFFER:
    default: return buffered_bytes > INT64_MAX ? INT64_MAX : (int64_t)buffered_bytes;
    }
}

struct wsb_clients_req *wsb_clients_req_new(unsigned nworkers, size_t top,
                                            enum wsb_clients_sort sort)
{
    struct wsb_clients_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    r->pending = nworkers;
    r->top = top;
    r->sort = sort;
    r->now_us = wsb_now_us();
    r->wall_ms = wsb_wall_ms();
    return r;
}

struct wsb_clients_req *wsb_clients_req_ref(struct wsb_clients_req *r)
{
    atomic_fetch_add(&r->refs, 1);
    return r;
}

void wsb_clients_req_unref(struct wsb_clients_req *r)
{
    if (r == NULL || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (size_t i = 0; i < r->n; i++)
        wsb_client_info_cleanup(&r->infos[i]);
    free(r->infos);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

enum wsb_clients_sort wsb_clients_req_sort(const struct wsb_clients_req *r)
{
    return r->sort;
}

size_t wsb_clients_req_top(const struct wsb_clients_req *r)
{
    return r->top;
}

void wsb_clients_req_answer(struct wsb_clients_req *r, struct wsb_client_info *infos, size_t n,
                            size_t total)
{
    pthread_mutex_lock(&r->lock);
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 16;
        while (cap < r->n + n)
            cap *= 2;
        struct wsb_client_info *p = realloc(r->infos, cap * sizeof(*p));
        if (p != NULL) {
            r->infos = p;
            r->cap = cap;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (r->n < r->cap)
            r->infos[r->n++] = infos[i];
        else
            wsb_client_info_cleanup(&infos[i]); /* OOM: this snapshot is lost, not leaked */
    }
    r->total += total;
    if (r->pending > 0)
        r->pending--;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

bool wsb_clients_req_wait(struct wsb_clients_req *r, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->lock);
    while (r->pending > 0)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
            break;
    bool complete = r->pending == 0;
    pthread_mutex_unlock(&r->lock);
    return complete;
}

static enum wsb_clients_sort cmp_sort;

static int cmp_info(const void *a, const void *b)
{
    const struct wsb_client_info *x = a, *y = b;
    int64_t kx = wsb_clients_key(cmp_sort, x->buffered_bytes, x->lag_ms, x->age_us);
    int64_t ky = wsb_clients_key(cmp_sort, y->buffered_bytes, y->lag_ms, y->age_us);
    if (kx != ky)
        return kx > ky ? -1 : 1;
    return strcmp(x->session, y->session); /* stable, deterministic order */
}

static json_t *info_json(const struct wsb_client_info *ci)
{
    json_t *chans = json_array();
    for (size_t i = 0; chans != NULL && i < ci->nchannels; i++)
        json_array_append_new(chans, json_string(ci->channels[i]));
    return json_pack("{s:s, s:o, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:s}", "session",
                     ci->session, "sub", ci->sub ? json_string(ci->sub) : json_null(), "peer",
                     ci->peer, "worker", (json_int_t)ci->worker, "subscriptions",
                     chans ? chans : json_array(), "buffered_bytes", (json_int_t)ci->buffered_bytes,
                     "dropped", (json_int_t)ci->dropped, "messages_out",
                     (json_int_t)ci->messages_out, "lag_ms", (json_int_t)ci->lag_ms, "age_ms",
                     (json_int_t)ci->age_ms, "over_soft_limit_ms", (json_int_t)ci->over_soft_ms,
                     "tls", ci->tls, "transport", ci->transport ? ci->transport : "websocket");
}

char *wsb_clients_req_render(struct wsb_clients_req *r, size_t *len)
{
    char *out = NULL;
    pthread_mutex_lock(&r->lock);
    static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER; /* qsort has no context */
    pthread_mutex_lock(&sort_lock);
    cmp_sort = r->sort;
    if (r->n > 1)
        qsort(r->infos, r->n, sizeof(*r->infos), cmp_info);
    pthread_mutex_unlock(&sort_lock);
    json_t *list = json_array();
    json_t *doc = NULL;
    for (size_t i = 0; list != NULL && i < r->n && i < r->top; i++)
        json_array_append_new(list, info_json(&r->infos[i]));
    if (list != NULL)
        doc = json_pack("{s:s, s:I, s:I, s:b, s:o}", "sort", sort_names[r->sort], "top",
                        (json_int_t)r->top, "total", (json_int_t)r->total, "complete",
                        r->pending == 0, "clients", list);
    pthread_mutex_unlock(&r->lock);
    if (doc != NULL) {
        out = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
    }
    if (out != NULL && len != NULL)
        *len = strlen(out);
    return out;
}

/* ---- a worker's part -------------------------------------------------------------- */

/* Broker timestamp of the oldest message still in the out-queue to now; 0 when none. */
static int64_t lag_ms(const struct wsb_session *s, int64_t wall_ms)
{
    for (size_t i = 0; i < s->q.count; i++) {
        const struct wsb_outq_item *it = &s->q.items[(s->q.head + i) % s->q.cap];
        if (it->kind == WSB_OUTQ_REPLY)
            continue;
        return it->frame->ts_ms >= 0 && wall_ms > it->frame->ts_ms ? wall_ms - it->frame->ts_ms : 0;
    }
    return 0;
}

static bool listed(const struct wsb_session *s)
{
    return s->state == WSB_SS_OPEN || s->state == WSB_SS_CLOSING;
}

/* Sessions opened after the request's instant count as just opened. */
static int64_t age_us(const struct wsb_session *s, int64_t now_us)
{
    return now_us > s->opened_us ? now_us - s->opened_us : 0;
}

static bool session_key(const struct wsb_session *s, enum wsb_clients_sort sort, int64_t now_us,
                        int64_t wall_ms, int64_t *key)
{
    if (!listed(s))
        return false;
    *key = wsb_clients_key(sort, wsb_session_queued(s),
                           sort == WSB_CLIENTS_LAG ? lag_ms(s, wall_ms) : 0, age_us(s, now_us));
    return true;
}

static bool session_snapshot(const struct wsb_session *s, int64_t now_us, int64_t wall_ms,
                             struct wsb_client_info *ci)
{
    memset(ci, 0, sizeof(*ci));
    if (!listed(s))
        return false;
    snprintf(ci->session, sizeof(ci->session), "%s", s->sid);
    uint16_t port = 0;
    if (s->addr.sa.sa_family == AF_INET)
        port = ntohs(s->addr.in.sin_port);
    else if (s->addr.sa.sa_family == AF_INET6)
        port = ntohs(s->addr.in6.sin6_port);
    snprintf(ci->peer, sizeof(ci->peer), s->addr.sa.sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
             s->ip, (unsigned)port);
    ci->worker = s->w->idx;
    ci->buffered_bytes = wsb_session_queued(s);
    ci->dropped = s->dropped;
    ci->messages_out = s->messages_out;
    ci->lag_ms = lag_ms(s, wall_ms);
    ci->age_us = age_us(s, now_us);
    ci->age_ms = ci->age_us / 1000;
    ci->over_soft_ms = s->sb.soft_since_us >= 0 && now_us > s->sb.soft_since_us
                           ? (now_us - s->sb.soft_since_us) / 1000
                           : 0;
    ci->tls = s->tls;
    ci->transport = s->transport == WSB_TRANSPORT_SSE    ? "sse"
                    : s->transport == WSB_TRANSPORT_HTTP ? "http"
                                                         : "websocket";
    if (s->ident && s->ident->sub && !(ci->sub = strdup(s->ident->sub)))
        goto oom;
    if (s->nsubs && !(ci->channels = calloc(s->nsubs, sizeof(*ci->channels))))
        goto oom;
    for (size_t i = 0; i < s->cap && ci->nchannels < s->nsubs; i++) {
        if (!s->subs[i].used)
            continue;
        if (!(ci->channels[ci->nchannels] = strdup(s->subs[i].channel)))
            goto oom;
        ci->nchannels++;
    }
    return true;

oom:
    wsb_client_info_cleanup(ci);
    return false;
}

struct keyed {
    int64_t key;
    const struct wsb_session *s;
};

static int cmp_keyed(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    return x->key > y->key ? -1 : x->key < y->key ? 1 : 0;
}

void wsb_clients_collect(struct wsb_worker *w, struct wsb_clients_req *r)
{
    /* The request's instant, not this loop's: loops collect at different times, and the
     * ages of sessions on two workers must sort as their opening times do. */
    int64_t now = r->now_us, wall = r->wall_ms;
    struct keyed *all = w->nsessions ? calloc(w->nsessions, sizeof(*all)) : NULL;
    struct wsb_client_info *infos = NULL;
    size_t n = 0, k = 0;
    for (struct wsb_session *s = w->sessions; s != NULL && all != NULL && n < w->nsessions;
         s = wsb_session_next(s)) {
        if (session_key(s, r->sort, now, wall, &all[n].key))
            all[n++].s = s;
    }
    if (n > 0) {
        qsort(all, n, sizeof(*all), cmp_keyed);
        size_t want = n < r->top ? n : r->top;
        infos = calloc(want, sizeof(*infos));
        for (size_t i = 0; infos != NULL && i < want; i++)
            if (session_snapshot(all[i].s, now, wall, &infos[k]))
                k++;
    }
    wsb_clients_req_answer(r, infos, k, n);
    free(infos);
    free(all);
}
