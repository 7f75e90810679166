/* Source registry. */
#include "bridge/sources.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/map.h"

#define MAX_PARTITIONS 65536

struct entry {
    uint64_t id;
    size_t connector;
    size_t refs;
    char *key;                    /* NULL for private sources */
    bool may_linger;              /* shared broadcast source */
    int64_t linger_at;            /* refs == 0: stop when CLOCK_MONOTONIC ms reaches this; else 0 */
    struct entry *lnext, **lprev; /* the lingering list while linger_at != 0 */
    /* The feed of a shared source (see wsb_sources_route): the loops the sink posts its
     * records to, the references per loop, and the next offset per partition as the sink
     * saw the records (the position a loop that was not fed resumes at). */
    uint32_t fed;
    uint32_t nrefs[WSB_MAX_LOOPS];
    bool started;
    int64_t *next; /* -1: unknown */
    size_t npart;
};

struct wsb_sources {
    pthread_mutex_t lock; /* guards everything but the counters */
    pthread_cond_t cond;  /* wakes the linger thread: new deadline or shutdown */
    struct wsb_connector *const *connectors;
    size_t nconnectors;
    unsigned nloops;
    uint64_t seq;
    struct wsb_map by_key; /* key -> entry (shared sources) */
    struct wsb_map by_id;  /* id -> entry */

    uint32_t linger_ms;
    struct entry *lingering;
    size_t nlingering;
    void (*stopped)(void *ctx, uint64_t id);
    void *stopped_ctx;
    void (*resync)(void *ctx, unsigned loop, uint64_t id, const char *positions);
    void *resync_ctx;
    pthread_t thread;
    bool thread_started, quit;

    atomic_uint_fast64_t started_total, stopped_total;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct wsb_sources *wsb_sources_new(struct wsb_connector *const *connectors, size_t n,
                                    unsigned nloops)
{
    struct wsb_sources *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->started_total, 0);
    atomic_init(&s->stopped_total, 0);
    s->connectors = connectors;
    s->nconnectors = n;
    s->nloops = nloops;
    wsb_map_init(&s->by_key);
    wsb_map_init(&s->by_id);
    return s;
}

static void free_entry(void *ctx, void *v)
{
    (void)ctx;
    struct entry *e = v;
    free(e->key);
    free(e->next);
    free(e);
}

void wsb_sources_shutdown(struct wsb_sources *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->quit = true;
    s->linger_ms = 0;
    s->stopped = NULL;
    bool join = s->thread_started;
    s->thread_started = false;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (join)
        pthread_join(s->thread, NULL);
}

void wsb_sources_free(struct wsb_sources *s)
{
    if (!s)
        return;
    wsb_sources_shutdown(s);
    pthread_cond_destroy(&s->cond);
    wsb_map_each(&s->by_id, free_entry, NULL);
    wsb_map_cleanup(&s->by_id);
    wsb_map_cleanup(&s->by_key);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static char *make_key(const struct wsb_sources *s, size_t connector, const struct wsb_source *src)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    /* Channels reading one stream in different formats are different sources: the
     * connector renders each record once per source. */
    wsb_buf_u64(&b, connector);
    wsb_buf_puts(&b, src->ack ? "\x1f"
                                "1\x1f"
                              : "\x1f"
                                "0\x1f");
    wsb_buf_i64(&b, (int)src->value_format);
    wsb_buf_append(&b, "\x1f", 1);
    wsb_buf_i64(&b, (int)src->key_format);
    wsb_buf_append(&b, "\x1f", 1);
    /* The broker members that name what is read, as the connector lists them; without a
     * list, the whole object as one text whatever the order its keys were written in. */
    const char *const *names = s->connectors[connector]->ops->source_keys;
    if (names) {
        for (; *names; names++) {
            const json_t *v = json_object_get(src->fields, *names);
            wsb_buf_puts(&b, *names);
            wsb_buf_append(&b, v ? "=" : "!", 1);
            wsb_buf_puts(&b, v ? wsb_connector_field(src->fields, *names) : "");
            wsb_buf_append(&b, "\x1f", 1);
        }
    } else {
        char *text = src->fields ? json_dumps(src->fields, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (src->fields && !text) {
            wsb_buf_cleanup(&b);
            return NULL;
        }
        wsb_buf_puts(&b, text ? text : "");
        free(text);
    }
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}

static void linger_unlink(struct wsb_sources *s, struct entry *e)
{
    if (!e->linger_at)
        return;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    *e->lprev = e->lnext;
    e->linger_at = 0;
    s->nlingering--;
}

static void remove_entry(struct wsb_sources *s, struct entry *e)
{
    linger_unlink(s, e);
    wsb_map_del_u64(&s->by_id, e->id);
    if (e->key)
        wsb_map_del_str(&s->by_key, e->key, strlen(e->key));
    free_entry(NULL, e);
}

static int set_next(struct entry *e, int32_t partition, int64_t next)
{
    if (partition < 0 || partition >= MAX_PARTITIONS)
        return -1;
    if ((size_t)partition >= e->npart) {
        size_t n = (size_t)partition + 1;
        int64_t *p = realloc(e->next, n * sizeof(*p));
        if (!p)
            return -1;
        for (size_t i = e->npart; i < n; i++)
            p[i] = -1;
        e->next = p;
        e->npart = n;
    }
    e->next[partition] = next;
    return 0;
}

char *wsb_positions_json(const int64_t *next, size_t npart)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "{");
    bool first = true;
    for (size_t i = 0; i < npart; i++) {
        if (next[i] < 0)
            continue;
        wsb_buf_puts(&b, first ? "\"" : ",\"");
        wsb_buf_u64(&b, i);
        wsb_buf_append(&b, "\":", 2);
        wsb_buf_i64(&b, next[i]);
        first = false;
    }
    wsb_buf_puts(&b, "}");
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}

/* A shared source's feed: true when the sink routes its records by `fed` (a resync callback
 * is set and the source is shared), false when every loop of its id gets them. */
static bool feeds(const struct wsb_sources *s, const struct entry *e)
{
    return s->resync && e->key;
}

/* Loop `loop` takes a reference on a shared source (lock held): when its loop was not fed,
 * it is from now on, and once the source runs it is told where (a RESYNC after the last
 * record it was posted). True when the caller must wait for that resync. */
static bool feed_join(struct wsb_sources *s, struct entry *e, unsigned loop)
{
    e->nrefs[loop]++;
    uint32_t bit = 1u << loop;
    if (!feeds(s, e) || (e->fed & bit))
        return false;
    e->fed |= bit;
    if (!e->started)
        return false; /* its STARTED, with the positions, is still to come */
    /* the positions a loop that starts being fed resumes at */
    char *pos = wsb_positions_json(e->next, e->npart);
    s->resync(s->resync_ctx, loop, e->id, pos ? pos : "{}");
    free(pos);
    return true;
}

enum wsb_err wsb_sources_acquire(struct wsb_sources *s, size_t connector,
                                 const struct wsb_source *src, unsigned loop, uint64_t *id,
                                 bool *resync)
{
    *resync = false;
    if (connector >= s->nconnectors || loop >= WSB_MAX_LOOPS)
        return WSB_ERR_INVALID;
    /* Shared: every subscriber of the source sees the same stream from now on. Positions
     * other than latest are a private read for one subscriber. An ack source is private to
     * one subscription: the broker (or connector) hands each message to one of its
     * consumers, so it reaches exactly one client whatever the number of loops, and
     * max_unacked bounds that subscription alone. */
    bool shared = src->from == WSB_FROM_LATEST && !src->ack;
    char *key = NULL;
    if (shared && !(key = make_key(s, connector, src)))
        return WSB_ERR_NOMEM;

    enum wsb_err rc = WSB_OK;
    pthread_mutex_lock(&s->lock);
    struct entry *e = key ? wsb_map_get_str(&s->by_key, key, strlen(key)) : NULL;
    if (e) {
        linger_unlink(s, e); /* a lingering source is read again without a cold start */
        e->refs++;
        *resync = feed_join(s, e, loop);
        *id = e->id;
        free(key);
        goto out;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        free(key);
        rc = WSB_ERR_NOMEM;
        goto out;
    }
    uint64_t mask = shared ? ((1u << s->nloops) - 1) : (1u << loop);
    e->id = wsb_source_id(++s->seq, mask);
    e->connector = connector;
    e->refs = 1;
    e->nrefs[loop] = 1;
    e->fed = 1u << loop;
    e->key = key;
    e->may_linger = shared && !src->ack; /* nobody may be handed an ack source's message */
    if (wsb_map_put_u64(&s->by_id, e->id, e) < 0 ||
        (key && wsb_map_put_str(&s->by_key, key, strlen(key), e) < 0)) {
        wsb_map_del_u64(&s->by_id, e->id);
        free_entry(NULL, e);
        rc = WSB_ERR_NOMEM;
        goto out;
    }
    rc = wsb_connector_subscribe(s->connectors[connector], e->id, src);
    if (rc != WSB_OK) {
        remove_entry(s, e);
        goto out;
    }
    atomic_fetch_add_explicit(&s->started_total, 1, memory_order_relaxed);
    *id = e->id;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void stop_entry(struct wsb_sources *s, struct entry *e)
{
    wsb_connector_unsubscribe(s->connectors[e->connector], e->id);
    remove_entry(s, e);
    atomic_fetch_add_explicit(&s->stopped_total, 1, memory_order_relaxed);
}

static void *linger_run(void *arg);

bool wsb_sources_release(struct wsb_sources *s, uint64_t id, unsigned loop)
{
    bool stopped = false;
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    /* Its loop stays fed until the sink settles it (wsb_sources_settle): records the sink
     * holds for the loop must reach it before a later resync. */
    if (e && loop < WSB_MAX_LOOPS && e->nrefs[loop] > 0)
        e->nrefs[loop]--;
    if (e && e->refs > 0 && --e->refs == 0) {
        if (e->may_linger && s->linger_ms > 0 && s->stopped && !s->quit &&
            (s->thread_started ||
             (s->thread_started = pthread_create(&s->thread, NULL, linger_run, s) == 0))) {
            e->linger_at = mono_ms() + s->linger_ms;
            e->lnext = s->lingering;
            e->lprev = &s->lingering;
            if (s->lingering)
                s->lingering->lprev = &e->lnext;
            s->lingering = e;
            s->nlingering++;
            pthread_cond_broadcast(&s->cond);
        } else {
            stop_entry(s, e);
            stopped = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return stopped;
}

/* The linger thread: stops sources whose linger ran out and tells the loops. */
static void *linger_run(void *arg)
{
    struct wsb_sources *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->quit) {
        int64_t now = mono_ms(), next = 0;
        uint64_t expired[64];
        size_t n = 0;
        for (struct entry *e = s->lingering, *nx; e && n < WSB_ARRAY_LEN(expired); e = nx) {
            nx = e->lnext;
            if (e->linger_at <= now) {
                expired[n++] = e->id;
                stop_entry(s, e);
            } else if (!next || e->linger_at < next) {
                next = e->linger_at;
            }
        }
        if (n) {
            void (*cb)(void *, uint64_t) = s->stopped;
            void *ctx = s->stopped_ctx;
            pthread_mutex_unlock(&s->lock);
            for (size_t i = 0; i < n; i++)
                cb(ctx, expired[i]);
            pthread_mutex_lock(&s->lock);
            continue;
        }
        if (!next) {
            pthread_cond_wait(&s->cond, &s->lock);
        } else {
            struct timespec ts = {.tv_sec = next / 1000, .tv_nsec = (long)(next % 1000) * 1000000L};
            pthread_cond_timedwait(&s->cond, &s->lock, &ts);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void wsb_sources_set_stopped_cb(struct wsb_sources *s, void (*cb)(void *ctx, uint64_t id),
                                void *ctx)
{
    pthread_mutex_lock(&s->lock);
    s->stopped = cb;
    s->stopped_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

void wsb_sources_set_resync_cb(struct wsb_sources *s,
                               void (*cb)(void *ctx, unsigned loop, uint64_t id,
                                          const char *positions),
                               void *ctx)
{
    pthread_mutex_lock(&s->lock);
    s->resync = cb;
    s->resync_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

void wsb_sources_started(struct wsb_sources *s, uint64_t id, const char *positions)
{
    json_t *root = positions ? json_loads(positions, 0, NULL) : NULL;
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e && !e->started) {
        e->started = true;
        const char *k;
        json_t *v;
        if (json_is_object(root))
            json_object_foreach(root, k, v)
            {
                char *end;
                long p = strtol(k, &end, 10);
                if (*end == '\0' && json_is_integer(v))
                    set_next(e, (int32_t)p, (int64_t)json_integer_value(v));
            }
    }
    pthread_mutex_unlock(&s->lock);
    json_decref(root);
}

uint64_t wsb_sources_route(struct wsb_sources *s, uint64_t id, int32_t partition, int64_t offset,
                           bool *settle)
{
    *settle = false;
    uint64_t loops = wsb_source_loops(id);
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e && feeds(s, e)) {
        if (partition >= 0 && offset >= 0)
            set_next(e, partition, offset + 1);
        loops = e->fed;
        for (unsigned i = 0; i < s->nloops && !*settle; i++)
            *settle = (e->fed & (1u << i)) && !e->nrefs[i];
    }
    pthread_mutex_unlock(&s->lock);
    return loops;
}

bool wsb_sources_skip(struct wsb_sources *s, uint64_t id, int32_t partition, int64_t next)
{
    bool skip = true; /* an id the registry no longer knows: nobody reads it */
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e) {
        skip = feeds(s, e) && !e->fed;
        if (skip && partition >= 0 && next >= 0)
            set_next(e, partition, next);
    }
    pthread_mutex_unlock(&s->lock);
    return skip;
}

void wsb_sources_settle(struct wsb_sources *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e && feeds(s, e))
        for (unsigned i = 0; i < s->nloops; i++)
            if (!e->nrefs[i])
                e->fed &= ~(1u << i);
    pthread_mutex_unlock(&s->lock);
}

void wsb_sources_set_linger(struct wsb_sources *s, uint32_t ms)
{
    pthread_mutex_lock(&s->lock);
    s->linger_ms = ms;
    /* Deadlines already running keep theirs, except that a shorter linger shortens them. */
    int64_t cap = mono_ms() + ms;
    for (struct entry *e = s->lingering; e; e = e->lnext)
        if (e->linger_at > cap)
            e->linger_at = cap;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void wsb_sources_stats(struct wsb_sources *s, uint64_t *started, uint64_t *stopped, size_t *reading,
                       size_t *lingering)
{
    *started = atomic_load_explicit(&s->started_total, memory_order_relaxed);
    *stopped = atomic_load_explicit(&s->stopped_total, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    *lingering = s->nlingering;
    *reading = s->by_id.count - s->nlingering;
    pthread_mutex_unlock(&s->lock);
}

void wsb_sources_forget(struct wsb_sources *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e)
        stop_entry(s, e);
    pthread_mutex_unlock(&s->lock);
}

long wsb_sources_connector(struct wsb_sources *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    long c = e ? (long)e->connector : -1;
    pthread_mutex_unlock(&s->lock);
    return c;
}

size_t wsb_sources_count(struct wsb_sources *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->by_id.count;
    pthread_mutex_unlock(&s->lock);
    return n;
}
