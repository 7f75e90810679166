/* Small chained hash maps: uint64 -> pointer and string -> pointer. Not thread-safe: each
 * map is owned by one thread (or guarded by its owner's lock). */
#ifndef WSB_UTIL_MAP_H
#define WSB_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

struct wsb_map_entry;

/** The hashes the maps use, for callers that hash keys of their own (the per-IP table) and
 * for tests that build keys sharing a bucket: `wsb_hash_u64` is the murmur3 finalizer an
 * integer key goes through; a string key's hash is `wsb_hash_u64(wsb_hash_fnv1a(key))`. */
static inline uint64_t wsb_hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t wsb_hash_fnv1a(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

struct wsb_map {
    struct wsb_map_entry **buckets;
    size_t nbuckets; /* power of two, 0 before first insert */
    size_t count;
};

void wsb_map_init(struct wsb_map *m);
/** Frees the table (not the values). */
void wsb_map_cleanup(struct wsb_map *m);

/** Integer keys. put replaces an existing value. Returns 0 or -1 on allocation failure. */
int wsb_map_put_u64(struct wsb_map *m, uint64_t key, void *value);
void *wsb_map_get_u64(const struct wsb_map *m, uint64_t key);
/** Removes and returns the value, NULL when absent. */
void *wsb_map_del_u64(struct wsb_map *m, uint64_t key);

/** String keys (copied). */
int wsb_map_put_str(struct wsb_map *m, const char *key, size_t len, void *value);
void *wsb_map_get_str(const struct wsb_map *m, const char *key, size_t len);
void *wsb_map_del_str(struct wsb_map *m, const char *key, size_t len);

/** Calls fn for every value; fn must not modify the map. */
void wsb_map_each(const struct wsb_map *m, void (*fn)(void *ctx, void *value), void *ctx);

#endif
