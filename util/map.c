/* Chained hash maps with integer or string keys. */
#include "util/map.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct wsb_map_entry {
    struct wsb_map_entry *next;
    uint64_t hash;
    uint64_t ikey;
    size_t klen; /* string keys: key length; SIZE_MAX marks an integer key */
    void *value;
    char skey[];
};

static uint64_t hash_str(const char *s, size_t len)
{
    return wsb_hash_u64(wsb_hash_fnv1a(s, len));
}

void wsb_map_init(struct wsb_map *m)
{
    memset(m, 0, sizeof(*m));
}

void wsb_map_cleanup(struct wsb_map *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct wsb_map_entry *e = m->buckets[i];
        while (e) {
            struct wsb_map_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(m->buckets);
    wsb_map_init(m);
}

static int grow(struct wsb_map *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    struct wsb_map_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct wsb_map_entry *e = m->buckets[i];
        while (e) {
            struct wsb_map_entry *next = e->next;
            size_t j = e->hash & (n - 1);
            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

static bool same(const struct wsb_map_entry *e, uint64_t hash, uint64_t ikey, const char *skey,
                 size_t klen)
{
    if (e->hash != hash || e->klen != klen)
        return false;
    if (klen == SIZE_MAX)
        return e->ikey == ikey;
    return memcmp(e->skey, skey, klen) == 0;
}

static struct wsb_map_entry **find(const struct wsb_map *m, uint64_t hash, uint64_t ikey,
                                   const char *skey, size_t klen)
{
    if (m->nbuckets == 0)
        return NULL;
    struct wsb_map_entry **pp = &m->buckets[hash & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if (same(*pp, hash, ikey, skey, klen))
            return pp;
    return NULL;
}

static int put(struct wsb_map *m, uint64_t hash, uint64_t ikey, const char *skey, size_t klen,
               void *value)
{
    struct wsb_map_entry **pp = find(m, hash, ikey, skey, klen);
    if (pp) {
        (*pp)->value = value;
        return 0;
    }
    if (m->count >= m->nbuckets && grow(m) < 0)
        return -1;
    size_t extra = klen == SIZE_MAX ? 0 : klen + 1;
    struct wsb_map_entry *e = malloc(sizeof(*e) + extra);
    if (!e)
        return -1;
    e->hash = hash;
    e->ikey = ikey;
    e->klen = klen;
    e->value = value;
    if (extra) {
        memcpy(e->skey, skey, klen);
        e->skey[klen] = '\0';
    }
    size_t j = hash & (m->nbuckets - 1);
    e->next = m->buckets[j];
    m->buckets[j] = e;
    m->count++;
    return 0;
}

static void *del(struct wsb_map *m, uint64_t hash, uint64_t ikey, const char *skey, size_t klen)
{
    struct wsb_map_entry **pp = find(m, hash, ikey, skey, klen);
    if (!pp)
        return NULL;
    struct wsb_map_entry *e = *pp;
    void *v = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

int wsb_map_put_u64(struct wsb_map *m, uint64_t key, void *value)
{
    return put(m, wsb_hash_u64(key), key, NULL, SIZE_MAX, value);
}

void *wsb_map_get_u64(const struct wsb_map *m, uint64_t key)
{
    struct wsb_map_entry **pp = find(m, wsb_hash_u64(key), key, NULL, SIZE_MAX);
    return pp ? (*pp)->value : NULL;
}

void *wsb_map_del_u64(struct wsb_map *m, uint64_t key)
{
    return del(m, wsb_hash_u64(key), key, NULL, SIZE_MAX);
}

int wsb_map_put_str(struct wsb_map *m, const char *key, size_t len, void *value)
{
    return put(m, hash_str(key, len), 0, key, len, value);
}

void *wsb_map_get_str(const struct wsb_map *m, const char *key, size_t len)
{
    struct wsb_map_entry **pp = find(m, hash_str(key, len), 0, key, len);
    return pp ? (*pp)->value : NULL;
}

void *wsb_map_del_str(struct wsb_map *m, const char *key, size_t len)
{
    return del(m, hash_str(key, len), 0, key, len);
}

void wsb_map_each(const struct wsb_map *m, void (*fn)(void *ctx, void *value), void *ctx)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct wsb_map_entry *e = m->buckets[i]; e; e = e->next)
            fn(ctx, e->value);
}
