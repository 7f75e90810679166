/* Source registry. */
#include "bridge/sources.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/map.h"

struct entry {
    uint64_t id;
    size_t connector;
    size_t refs;
    char *key; /* NULL for private sources */
};

struct wsb_sources {
    pthread_mutex_t lock;
    struct wsb_connector *const *connectors;
    size_t nconnectors;
    unsigned nloops;
    uint64_t seq;
    struct wsb_map by_key; /* key -> entry (shared sources) */
    struct wsb_map by_id;  /* id -> entry */
};

struct wsb_sources *wsb_sources_new(struct wsb_connector *const *connectors, size_t n,
                                    unsigned nloops)
{
    struct wsb_sources *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
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
    free(e);
}

void wsb_sources_free(struct wsb_sources *s)
{
    if (!s)
        return;
    wsb_map_each(&s->by_id, free_entry, NULL);
    wsb_map_cleanup(&s->by_id);
    wsb_map_cleanup(&s->by_key);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void add_field(struct wsb_buf *b, const char *v)
{
    wsb_buf_puts(b, v ? v : "");
    wsb_buf_append(b, "\x1f", 1);
}

static char *make_key(size_t connector, const struct wsb_source *src)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_printf(&b, "%zu\x1f%d\x1f", connector, src->ack ? 1 : 0);
    add_field(&b, src->topic);
    add_field(&b, src->exchange);
    add_field(&b, src->binding_key);
    add_field(&b, src->queue);
    add_field(&b, src->group);
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}

static void remove_entry(struct wsb_sources *s, struct entry *e)
{
    wsb_map_del_u64(&s->by_id, e->id);
    if (e->key)
        wsb_map_del_str(&s->by_key, e->key, strlen(e->key));
    free_entry(NULL, e);
}

enum wsb_err wsb_sources_acquire(struct wsb_sources *s, size_t connector,
                                 const struct wsb_source *src, unsigned loop, uint64_t *id)
{
    if (connector >= s->nconnectors || loop >= WSB_MAX_LOOPS)
        return WSB_ERR_INVALID;
    /* Shared: every subscriber of the source sees the same stream from now on. Positions
     * other than latest are a private read for one subscriber. An ack source is private to
     * one subscription: the broker (or connector) hands each message to one of its
     * consumers, so it reaches exactly one client whatever the number of loops, and
     * max_unacked bounds that subscription alone. */
    bool shared = src->from == WSB_FROM_LATEST && !src->ack;
    char *key = NULL;
    if (shared && !(key = make_key(connector, src)))
        return WSB_ERR_NOMEM;

    enum wsb_err rc = WSB_OK;
    pthread_mutex_lock(&s->lock);
    struct entry *e = key ? wsb_map_get_str(&s->by_key, key, strlen(key)) : NULL;
    if (e) {
        e->refs++;
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
    e->key = key;
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
    *id = e->id;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

bool wsb_sources_release(struct wsb_sources *s, uint64_t id)
{
    bool stopped = false;
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e && --e->refs == 0) {
        wsb_connector_unsubscribe(s->connectors[e->connector], id);
        remove_entry(s, e);
        stopped = true;
    }
    pthread_mutex_unlock(&s->lock);
    return stopped;
}

void wsb_sources_forget(struct wsb_sources *s, uint64_t id)
{
    pthread_mutex_lock(&s->lock);
    struct entry *e = wsb_map_get_u64(&s->by_id, id);
    if (e) {
        wsb_connector_unsubscribe(s->connectors[e->connector], id);
        remove_entry(s, e);
    }
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
