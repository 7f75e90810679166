/* Unit tests for util/map.c: integer and string keys, replace, delete, growth through many
 * rehashes, keys that share a bucket at every table size up to 1024, string keys with
 * embedded NULs and the empty key, and wsb_map_each visiting every value once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/map.h"

/* A value distinct for each index, never NULL. */
#define V(i) ((void *)(uintptr_t)((i)*2 + 1))

/* Keys that share a bucket are built with the maps' own hashes (util/map.h). */

static void check_table(const struct wsb_map *m)
{
    /* power of two, load factor at most 1 */
    assert_true(m->nbuckets == 0 || (m->nbuckets & (m->nbuckets - 1)) == 0);
    assert_true(m->count <= m->nbuckets);
}

static void test_empty(void **state)
{
    (void)state;
    struct wsb_map m;
    wsb_map_init(&m);
    assert_null(wsb_map_get_u64(&m, 0));
    assert_null(wsb_map_get_str(&m, "a", 1));
    assert_null(wsb_map_get_str(&m, "", 0));
    assert_null(wsb_map_del_u64(&m, 7));
    assert_null(wsb_map_del_str(&m, "a", 1));
    assert_int_equal(m.count, 0);
    wsb_map_cleanup(&m);
    wsb_map_cleanup(&m);
}

static void test_one_key(void **state)
{
    (void)state;
    struct wsb_map m;
    wsb_map_init(&m);
    assert_int_equal(wsb_map_put_u64(&m, 0, V(1)), 0);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(wsb_map_get_u64(&m, 0), V(1));
    assert_null(wsb_map_get_u64(&m, 1));
    assert_int_equal(wsb_map_put_u64(&m, 0, V(2)), 0); /* replace */
    assert_int_equal(m.count, 1);
    assert_ptr_equal(wsb_map_get_u64(&m, 0), V(2));
    assert_ptr_equal(wsb_map_del_u64(&m, 0), V(2));
    assert_int_equal(m.count, 0);
    assert_null(wsb_map_get_u64(&m, 0));
    assert_null(wsb_map_del_u64(&m, 0));
    /* a NULL value is stored (and reads back as NULL) */
    assert_int_equal(wsb_map_put_u64(&m, UINT64_MAX, NULL), 0);
    assert_int_equal(m.count, 1);
    assert_null(wsb_map_del_u64(&m, UINT64_MAX));
    assert_int_equal(m.count, 0);
    wsb_map_cleanup(&m);
}

static void test_u64_many(void **state)
{
    (void)state;
    enum { N = 50000 };
    struct wsb_map m;
    wsb_map_init(&m);
    for (uint64_t i = 0; i < N; i++) {
        /* spread and sequential keys alike */
        assert_int_equal(wsb_map_put_u64(&m, i * 0x9e3779b97f4a7c15ULL, V(i)), 0);
        assert_int_equal(m.count, i + 1);
        check_table(&m);
    }
    assert_true(m.nbuckets >= N);
    for (uint64_t i = 0; i < N; i++)
        assert_ptr_equal(wsb_map_get_u64(&m, i * 0x9e3779b97f4a7c15ULL), V(i));
    assert_null(wsb_map_get_u64(&m, 1));
    /* delete the odd ones, the even ones remain */
    for (uint64_t i = 1; i < N; i += 2)
        assert_ptr_equal(wsb_map_del_u64(&m, i * 0x9e3779b97f4a7c15ULL), V(i));
    assert_int_equal(m.count, N / 2);
    for (uint64_t i = 0; i < N; i++) {
        void *v = wsb_map_get_u64(&m, i * 0x9e3779b97f4a7c15ULL);
        if (i % 2)
            assert_null(v);
        else
            assert_ptr_equal(v, V(i));
    }
    /* reinsert with new values */
    for (uint64_t i = 1; i < N; i += 2)
        assert_int_equal(wsb_map_put_u64(&m, i * 0x9e3779b97f4a7c15ULL, V(i + N)), 0);
    assert_int_equal(m.count, N);
    for (uint64_t i = 0; i < N; i++)
        assert_ptr_equal(wsb_map_get_u64(&m, i * 0x9e3779b97f4a7c15ULL), V(i % 2 ? i + N : i));
    wsb_map_cleanup(&m);
    assert_int_equal(m.count, 0);
    assert_null(m.buckets);
}

static void test_u64_colliding(void **state)
{
    (void)state;
    /* 300 keys whose hashes share their low 10 bits: one chain at 16..1024 buckets */
    enum { N = 300 };
    uint64_t keys[N];
    size_t n = 0;
    for (uint64_t k = 1; n < N; k++)
        if ((wsb_hash_u64(k) & 1023) == (wsb_hash_u64(0) & 1023))
            keys[n++] = k;
    struct wsb_map m;
    wsb_map_init(&m);
    assert_int_equal(wsb_map_put_u64(&m, 0, V(N)), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(wsb_map_put_u64(&m, keys[i], V(i)), 0);
        check_table(&m);
        /* every earlier key still found after each rehash */
        for (size_t j = 0; j <= i; j += 17)
            assert_ptr_equal(wsb_map_get_u64(&m, keys[j]), V(j));
    }
    assert_ptr_equal(wsb_map_get_u64(&m, 0), V(N));
    /* delete from the middle, the head and the tail of the chain */
    size_t order[] = {N / 2, 0, N - 1, 1, N - 2};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        assert_ptr_equal(wsb_map_del_u64(&m, keys[order[i]]), V(order[i]));
        assert_null(wsb_map_get_u64(&m, keys[order[i]]));
    }
    assert_int_equal(m.count, N + 1 - 5);
    for (size_t i = 0; i < N; i++) {
        bool gone = i == N / 2 || i == 0 || i == N - 1 || i == 1 || i == N - 2;
        if (gone)
            assert_null(wsb_map_get_u64(&m, keys[i]));
        else
            assert_ptr_equal(wsb_map_get_u64(&m, keys[i]), V(i));
    }
    assert_ptr_equal(wsb_map_get_u64(&m, 0), V(N));
    wsb_map_cleanup(&m);
}

static void test_str_keys(void **state)
{
    (void)state;
    struct wsb_map m;
    wsb_map_init(&m);
    char key[8] = "abc";
    assert_int_equal(wsb_map_put_str(&m, key, 3, V(1)), 0);
    memcpy(key, "zzz", 3); /* the key was copied */
    assert_ptr_equal(wsb_map_get_str(&m, "abc", 3), V(1));
    assert_null(wsb_map_get_str(&m, "zzz", 3));
    /* the length counts, not a NUL: prefixes, and keys with embedded NULs */
    assert_null(wsb_map_get_str(&m, "ab", 2));
    assert_null(wsb_map_get_str(&m, "abcd", 4));
    assert_null(wsb_map_get_str(&m, "abc\0", 4));
    assert_int_equal(wsb_map_put_str(&m, "abc\0", 4, V(2)), 0);
    assert_int_equal(wsb_map_put_str(&m, "a\0c", 3, V(3)), 0);
    assert_int_equal(wsb_map_put_str(&m, "", 0, V(4)), 0);
    assert_int_equal(m.count, 4);
    assert_ptr_equal(wsb_map_get_str(&m, "abc", 3), V(1));
    assert_ptr_equal(wsb_map_get_str(&m, "abc\0", 4), V(2));
    assert_ptr_equal(wsb_map_get_str(&m, "a\0c", 3), V(3));
    assert_ptr_equal(wsb_map_get_str(&m, "", 0), V(4));
    assert_ptr_equal(wsb_map_get_str(&m, "abcdef", 0), V(4)); /* len 0 is the empty key */
    /* replace keeps one entry */
    assert_int_equal(wsb_map_put_str(&m, "abc", 3, V(5)), 0);
    assert_int_equal(m.count, 4);
    assert_ptr_equal(wsb_map_get_str(&m, "abc", 3), V(5));
    /* integer and string keys in one map do not meet */
    assert_int_equal(wsb_map_put_u64(&m, 0, V(6)), 0);
    assert_ptr_equal(wsb_map_get_str(&m, "", 0), V(4));
    assert_ptr_equal(wsb_map_del_str(&m, "", 0), V(4));
    assert_ptr_equal(wsb_map_get_u64(&m, 0), V(6));
    assert_ptr_equal(wsb_map_del_str(&m, "abc\0", 4), V(2));
    assert_ptr_equal(wsb_map_get_str(&m, "abc", 3), V(5));
    assert_int_equal(m.count, 3);
    wsb_map_cleanup(&m);

    /* an integer key and a string key with the same 64-bit hash stay two entries */
    wsb_map_init(&m);
    uint64_t ik = wsb_hash_fnv1a("ab", 2);
    assert_int_equal(wsb_map_put_str(&m, "ab", 2, V(1)), 0);
    assert_null(wsb_map_get_u64(&m, ik));
    assert_int_equal(wsb_map_put_u64(&m, ik, V(2)), 0);
    assert_int_equal(m.count, 2);
    assert_ptr_equal(wsb_map_get_str(&m, "ab", 2), V(1));
    assert_ptr_equal(wsb_map_get_u64(&m, ik), V(2));
    assert_ptr_equal(wsb_map_del_str(&m, "ab", 2), V(1));
    assert_null(wsb_map_get_str(&m, "ab", 2));
    assert_ptr_equal(wsb_map_get_u64(&m, ik), V(2));
    wsb_map_cleanup(&m);
}

static void test_str_many(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct wsb_map m;
    wsb_map_init(&m);
    char k[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof(k), "chan.%d", i);
        assert_int_equal(wsb_map_put_str(&m, k, (size_t)n, V(i)), 0);
    }
    check_table(&m);
    assert_int_equal(m.count, N);
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof(k), "chan.%d", i);
        assert_ptr_equal(wsb_map_get_str(&m, k, (size_t)n), V(i));
    }
    for (int i = 0; i < N; i += 3) {
        int n = snprintf(k, sizeof(k), "chan.%d", i);
        assert_ptr_equal(wsb_map_del_str(&m, k, (size_t)n), V(i));
    }
    for (int i = 0; i < N; i++) {
        int n = snprintf(k, sizeof(k), "chan.%d", i);
        void *v = wsb_map_get_str(&m, k, (size_t)n);
        if (i % 3 == 0)
            assert_null(v);
        else
            assert_ptr_equal(v, V(i));
    }
    assert_int_equal(m.count, N - (N + 2) / 3);
    wsb_map_cleanup(&m);
}

struct seen {
    unsigned char *hits;
    size_t n, calls;
};

static void count_value(void *ctx, void *value)
{
    struct seen *s = ctx;
    uintptr_t v = (uintptr_t)value;
    assert_true(v % 2 == 1);
    size_t i = (size_t)(v / 2);
    assert_true(i < s->n);
    s->hits[i]++;
    s->calls++;
}

static void test_each(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct wsb_map m;
    wsb_map_init(&m);
    unsigned char hits[N] = {0};
    struct seen s = {hits, N, 0};
    wsb_map_each(&m, count_value, &s); /* empty map: no call */
    assert_int_equal(s.calls, 0);
    char k[16];
    for (int i = 0; i < N; i++) {
        if (i % 2) {
            assert_int_equal(wsb_map_put_u64(&m, (uint64_t)i, V(i)), 0);
        } else {
            int n = snprintf(k, sizeof(k), "%d", i);
            assert_int_equal(wsb_map_put_str(&m, k, (size_t)n, V(i)), 0);
        }
    }
    for (int i = 0; i < N; i += 10)
        assert_non_null(wsb_map_del_u64(&m, (uint64_t)i + 1));
    wsb_map_each(&m, count_value, &s);
    assert_int_equal(s.calls, N - N / 10);
    for (int i = 0; i < N; i++)
        assert_int_equal(hits[i], i % 10 == 1 ? 0 : 1);
    wsb_map_cleanup(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),    cmocka_unit_test(test_one_key),
        cmocka_unit_test(test_u64_many), cmocka_unit_test(test_u64_colliding),
        cmocka_unit_test(test_str_keys), cmocka_unit_test(test_str_many),
        cmocka_unit_test(test_each),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
