/* Per-IP admission: a chained hash table of addresses (IPv6 cut to a prefix), each with a
 * handshake-rate bucket and a live connection count, under one mutex. */
#include "bridge/iplimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "bridge/flow.h"
#include "util/map.h"

#define MIN_BUCKETS 64
#define DEFAULT_MAX_ENTRIES (1u << 20)
#define DEFAULT_IPV6_PREFIX 64

struct ipent {
    struct ipent *next;
    uint8_t key[16]; /* IPv6, or IPv4 as ::ffff:a.b.c.d */
    uint32_t conns;
    struct wsb_bucket bucket;
};

struct wsb_iplimit {
    pthread_mutex_t mu;
    struct ipent **slots;
    size_t nslots; /* power of two */
    size_t size;
    size_t max_entries;
    int64_t last_full_scan_us;
    uint64_t seed[2];
    double rate;
    double burst;
    uint32_t cap;
    unsigned v6_prefix; /* 1..128 */
};

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Fills key from addr; false for families we do not track. IPv6 keeps its first `v6_prefix`
 * bits; the rest are zeroed (a mapped IPv4 address is never cut). */
static bool addr_key(const struct sockaddr *addr, unsigned v6_prefix, uint8_t key[16])
{
    if (addr == NULL)
        return false;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        memcpy(key, v4mapped_prefix, 12);
        memcpy(key + 12, &in->sin_addr, 4);
        return true;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        memcpy(key, &in6->sin6_addr, 16);
        if (memcmp(key, v4mapped_prefix, 12) == 0)
            return true;
        for (unsigned bit = v6_prefix; bit < 128; bit++)
            key[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
        return true;
    }
    return false;
}

/* Seeded so that a client choosing many IPv6 addresses cannot aim them at one chain. */
static size_t slot_of(const struct wsb_iplimit *l, const uint8_t key[16])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    uint64_t h = wsb_hash_u64(a ^ l->seed[0]);
    h = wsb_hash_u64(h ^ b ^ l->seed[1]);
    return (size_t)h & (l->nslots - 1);
}

/* A limited rate with a burst under one would refuse every handshake: one is the floor. */
static void set_limits(struct wsb_iplimit *l, double rate, double burst, uint32_t cap)
{
    l->rate = rate;
    l->burst = rate > 0 && !(burst >= 1) ? 1 : burst;
    l->cap = cap;
}

struct wsb_iplimit *wsb_iplimit_new(double rate, double burst, uint32_t cap)
{
    struct wsb_iplimit *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->slots = calloc(MIN_BUCKETS, sizeof(*l->slots));
    if (l->slots == NULL || pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l->slots);
        free(l);
        return NULL;
    }
    l->nslots = MIN_BUCKETS;
    l->max_entries = DEFAULT_MAX_ENTRIES;
    l->last_full_scan_us = INT64_MIN;
    l->v6_prefix = DEFAULT_IPV6_PREFIX;
    if (getrandom(l->seed, sizeof(l->seed), GRND_NONBLOCK) != (ssize_t)sizeof(l->seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        l->seed[0] = wsb_hash_u64((uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)l);
        l->seed[1] = wsb_hash_u64((uint64_t)ts.tv_sec ^ l->seed[0]);
    }
    set_limits(l, rate, burst, cap);
    return l;
}

void wsb_iplimit_free(struct wsb_iplimit *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nslots; i++) {
        struct ipent *e = l->slots[i];
        while (e != NULL) {
            struct ipent *next = e->next;
            free(e);
            e = next;
        }
    }
    free(l->slots);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void wsb_iplimit_reconfigure(struct wsb_iplimit *l, double rate, double burst, uint32_t cap)
{
    pthread_mutex_lock(&l->mu);
    set_limits(l, rate, burst, cap);
    for (size_t i = 0; i < l->nslots; i++)
        for (struct ipent *e = l->slots[i]; e != NULL; e = e->next)
            wsb_bucket_reconfigure(&e->bucket, l->rate, l->burst);
    pthread_mutex_unlock(&l->mu);
}

void wsb_iplimit_set_ipv6_prefix(struct wsb_iplimit *l, unsigned prefix)
{
    pthread_mutex_lock(&l->mu);
    l->v6_prefix = prefix < 1 ? 1 : prefix > 128 ? 128 : prefix;
    pthread_mutex_unlock(&l->mu);
}

void wsb_iplimit_set_max_entries(struct wsb_iplimit *l, size_t max)
{
    pthread_mutex_lock(&l->mu);
    l->max_entries = max > 0 ? max : 1;
    pthread_mutex_unlock(&l->mu);
}

size_t wsb_iplimit_size(struct wsb_iplimit *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->size;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Idle: no live connection, and its bucket would be full by now, so forgetting it changes
 * nothing (a new entry starts full). */
static bool idle(const struct ipent *e, int64_t now_us)
{
    if (e->conns != 0)
        return false;
    if (!(e->bucket.rate > 0))
        return true;
    struct wsb_bucket b = e->bucket;
    wsb_bucket_take(&b, 0, now_us); /* refills */
    return b.tokens >= b.burst;
}

static void prune(struct wsb_iplimit *l, int64_t now_us)
{
    for (size_t i = 0; i < l->nslots; i++) {
        struct ipent **pp = &l->slots[i];
        while (*pp != NULL) {
            struct ipent *e = *pp;
            if (idle(e, now_us)) {
                *pp = e->next;
                free(e);
                l->size--;
            } else {
                pp = &e->next;
            }
        }
    }
    l->last_full_scan_us = now_us;
}

static void grow(struct wsb_iplimit *l)
{
    size_t n = l->nslots * 2;
    struct ipent **slots = calloc(n, sizeof(*slots));
    if (slots == NULL)
        return; /* longer chains, still correct */
    struct ipent **old = l->slots;
    size_t oldn = l->nslots;
    l->slots = slots;
    l->nslots = n;
    for (size_t i = 0; i < oldn; i++) {
        struct ipent *e = old[i];
        while (e != NULL) {
            struct ipent *next = e->next;
            size_t s = slot_of(l, e->key);
            e->next = slots[s];
            slots[s] = e;
            e = next;
        }
    }
    free(old);
}

static struct ipent *find(struct wsb_iplimit *l, const uint8_t key[16], struct ipent ***where)
{
    struct ipent **pp = &l->slots[slot_of(l, key)];
    for (; *pp != NULL; pp = &(*pp)->next)
        if (memcmp((*pp)->key, key, 16) == 0)
            break;
    if (where != NULL)
        *where = pp;
    return *pp;
}

/* Makes room for one more entry: at the load threshold, prune idle entries first and grow
 * only if the table is still half-loaded (so scans stay amortized). Returns false when the
 * table is at max_entries and holds only live entries. */
static bool make_room(struct wsb_iplimit *l, int64_t now_us)
{
    if (l->size >= l->max_entries) {
        /* At most one full scan per second when saturated. */
        if (now_us < l->last_full_scan_us ||
            (uint64_t)now_us - (uint64_t)l->last_full_scan_us >= 1000000)
            prune(l, now_us);
        return l->size < l->max_entries;
    }
    if (l->size < l->nslots)
        return true;
    prune(l, now_us);
    if (l->size >= l->nslots / 2)
        grow(l);
    return true;
}

enum wsb_ip_verdict wsb_iplimit_acquire(struct wsb_iplimit *l, const struct sockaddr *addr,
                                        int64_t now_us, uint32_t *retry_after_s,
                                        struct wsb_ip_ticket *ticket)
{
    uint8_t key[16];
    enum wsb_ip_verdict v = WSB_IP_OK;
    struct ipent *e;
    if (retry_after_s != NULL)
        *retry_after_s = 0;
    memset(ticket, 0, sizeof(*ticket));

    pthread_mutex_lock(&l->mu);
    if (!addr_key(addr, l->v6_prefix, key))
        goto out; /* not an IP address: nothing to key on */
    if (!(l->rate > 0) && l->cap == 0)
        goto out; /* nothing to enforce, nothing to track */
    e = find(l, key, NULL);
    if (e == NULL) {
        /* Full of live entries, or out of memory: refuse rather than admit uncounted. */
        if (!make_room(l, now_us) || (e = calloc(1, sizeof(*e))) == NULL) {
            v = WSB_IP_FULL;
            if (retry_after_s != NULL)
                *retry_after_s = 1;
            goto out;
        }
        memcpy(e->key, key, 16);
        wsb_bucket_init(&e->bucket, l->rate, l->burst, now_us);
        size_t s = slot_of(l, key);
        e->next = l->slots[s];
        l->slots[s] = e;
        l->size++;
    }
    if (!wsb_bucket_take(&e->bucket, 1, now_us)) {
        v = WSB_IP_RATE;
        if (retry_after_s != NULL)
            *retry_after_s = wsb_bucket_retry_after(&e->bucket, 1, now_us);
        goto out;
    }
    if (l->cap != 0 && e->conns >= l->cap) {
        v = WSB_IP_CAP;
        if (retry_after_s != NULL)
            *retry_after_s = 1;
        goto out;
    }
    e->conns++;
    memcpy(ticket->key, key, 16);
    ticket->counted = true;
out:
    pthread_mutex_unlock(&l->mu);
    return v;
}

void wsb_iplimit_release(struct wsb_iplimit *l, struct wsb_ip_ticket *ticket)
{
    if (ticket == NULL || !ticket->counted)
        return;
    ticket->counted = false;
    pthread_mutex_lock(&l->mu);
    struct ipent **where;
    struct ipent *e = find(l, ticket->key, &where);
    /* A counted entry cannot have been pruned (it has a connection): e is ours. */
    if (e != NULL && e->conns > 0) {
        e->conns--;
        /* Nothing to remember when rate is unlimited: drop it now. */
        if (e->conns == 0 && !(e->bucket.rate > 0)) {
            *where = e->next;
            free(e);
            l->size--;
        }
    }
    pthread_mutex_unlock(&l->mu);
}
