/* Unit tests for bridge/iplimit.c: per-IP handshake rate and connection cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "bridge/iplimit.h"

#define S 1000000LL

static struct sockaddr_storage ip(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(1234);
    } else {
        assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(5678);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

/* Tickets of admitted connections, so that a test can release "one connection of address X"
 * as the session does. */
#define MAXT 8192
static struct {
    struct sockaddr_storage addr;
    struct wsb_ip_ticket t;
    bool live;
} pool[MAXT];
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (a->ss_family != b->sa_family)
        return false;
    if (b->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
    if (b->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return true;
}

static enum wsb_ip_verdict acq(struct wsb_iplimit *l, const struct sockaddr *a, int64_t now,
                               uint32_t *ra)
{
    struct wsb_ip_ticket t;
    enum wsb_ip_verdict v = wsb_iplimit_acquire(l, a, now, ra, &t);
    if (v != WSB_IP_OK)
        assert_false(t.counted);
    if (!t.counted)
        return v;
    pthread_mutex_lock(&pool_mu);
    size_t i = 0;
    while (i < MAXT && pool[i].live)
        i++;
    assert_true(i < MAXT);
    memset(&pool[i].addr, 0, sizeof(pool[i].addr));
    memcpy(&pool[i].addr, a,
           a->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    pool[i].t = t;
    pool[i].live = true;
    pthread_mutex_unlock(&pool_mu);
    return v;
}

/* Releases one counted connection of `a`; false when there is none. */
static bool rel(struct wsb_iplimit *l, const struct sockaddr *a)
{
    struct wsb_ip_ticket t = {0};
    pthread_mutex_lock(&pool_mu);
    for (size_t i = 0; i < MAXT; i++)
        if (pool[i].live && same_addr(&pool[i].addr, a)) {
            t = pool[i].t;
            pool[i].live = false;
            break;
        }
    pthread_mutex_unlock(&pool_mu);
    if (!t.counted)
        return false;
    wsb_iplimit_release(l, &t);
    assert_false(t.counted);
    return true;
}

static int reset_pool(void **state)
{
    (void)state;
    memset(pool, 0, sizeof(pool));
    return 0;
}

static void test_rate(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 3, 0);
    assert_non_null(l);
    struct sockaddr_storage a = ip("192.0.2.1"), b = ip("192.0.2.2");
    uint32_t ra = 99;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
        assert_int_equal(ra, 0);
    }
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 1);
    /* another address has its own bucket */
    assert_int_equal(acq(l, SA(b), 0, &ra), WSB_IP_OK);
    /* refills with time */
    assert_int_equal(acq(l, SA(a), S, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), S, &ra), WSB_IP_RATE);
    /* releasing does not give back rate tokens */
    rel(l, SA(a));
    assert_int_equal(acq(l, SA(a), S, &ra), WSB_IP_RATE);
    wsb_iplimit_free(l);

    /* slow rate: retry_after rounds up */
    l = wsb_iplimit_new(0.25, 1, 0);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 4);
    assert_int_equal(acq(l, SA(a), S / 2, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 4);
    assert_int_equal(acq(l, SA(a), S + S / 2, NULL), WSB_IP_RATE);
    wsb_iplimit_free(l);

    /* a burst under one still lets one handshake through */
    l = wsb_iplimit_new(1, 0, 0);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_RATE);
    wsb_iplimit_free(l);
}

static void test_cap_and_release(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 2);
    struct sockaddr_storage a = ip("2001:db8:1::1"), b = ip("2001:db8:2::1");
    uint32_t ra;
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_CAP);
    assert_int_equal(ra, 1);
    assert_int_equal(acq(l, SA(b), 0, &ra), WSB_IP_OK);
    rel(l, SA(a));
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_CAP);
    /* all released: unlimited rate means the entry is forgotten at once */
    assert_true(rel(l, SA(a)));
    assert_true(rel(l, SA(a)));
    assert_false(rel(l, SA(a)));
    assert_true(rel(l, SA(b)));
    assert_int_equal(wsb_iplimit_size(l), 0);
    /* releasing a ticket twice, or an empty one, changes nothing */
    struct wsb_ip_ticket t, t2, none = {0};
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra, &t), WSB_IP_OK);
    t2 = t;
    wsb_iplimit_release(l, &t);
    wsb_iplimit_release(l, &t);
    wsb_iplimit_release(l, &none);
    wsb_iplimit_release(l, NULL);
    assert_int_equal(wsb_iplimit_size(l), 0);
    (void)t2;
    wsb_iplimit_free(l);
}

static void test_rate_before_cap(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 2, 1);
    struct sockaddr_storage a = ip("198.51.100.7");
    uint32_t ra;
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_CAP); /* uses a token */
    assert_int_equal(ra, 1);
    assert_int_equal(acq(l, SA(a), 0, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 1);
    wsb_iplimit_free(l);
}

static void test_v4_mapped(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 1);
    struct sockaddr_storage v4 = ip("203.0.113.5"), mapped = ip("::ffff:203.0.113.5"),
                            other6 = ip("::203.0.113.5"), v6 = ip("2001:db8::5");
    uint32_t ra;
    assert_int_equal(acq(l, SA(v4), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(mapped), 0, &ra), WSB_IP_CAP);
    assert_int_equal(acq(l, SA(other6), 0, &ra), WSB_IP_OK); /* compat != v4 */
    assert_int_equal(acq(l, SA(v6), 0, &ra), WSB_IP_OK);
    /* the mapped form shares the v4 entry: releasing the v4 connection frees it for both */
    assert_true(rel(l, SA(v4)));
    assert_int_equal(acq(l, SA(mapped), 0, &ra), WSB_IP_OK);
    assert_int_equal(acq(l, SA(v4), 0, &ra), WSB_IP_CAP);
    assert_true(rel(l, SA(mapped)));
    assert_int_equal(acq(l, SA(v4), 0, &ra), WSB_IP_OK);
    /* the port never matters */
    struct sockaddr_storage v4b = v4;
    ((struct sockaddr_in *)&v4b)->sin_port = htons(999);
    assert_int_equal(acq(l, SA(v4b), 0, &ra), WSB_IP_CAP);
    /* unknown families are not limited, and nothing is counted for them */
    struct sockaddr un = {.sa_family = AF_UNIX};
    struct wsb_ip_ticket t;
    assert_int_equal(wsb_iplimit_acquire(l, &un, 0, &ra, &t), WSB_IP_OK);
    assert_false(t.counted);
    assert_int_equal(wsb_iplimit_acquire(l, &un, 0, &ra, &t), WSB_IP_OK);
    wsb_iplimit_release(l, &t);
    wsb_iplimit_free(l);
}

static void addr_n(struct sockaddr_storage *ss, uint32_t n)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_addr.s6_addr[0] = 0x20;
    in6->sin6_addr.s6_addr[1] = 0x01;
    memcpy(&in6->sin6_addr.s6_addr[4], &n, 4); /* distinct /64s */
}

static void test_prune(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(10, 10, 5);
    struct sockaddr_storage ss;
    /* 1000 addresses connect once and leave */
    for (uint32_t i = 0; i < 1000; i++) {
        addr_n(&ss, i);
        assert_int_equal(acq(l, SA(ss), 0, NULL), WSB_IP_OK);
        rel(l, SA(ss));
    }
    size_t grown = wsb_iplimit_size(l);
    assert_true(grown > 0 && grown <= 1000);
    /* one more address 10 s later: buckets are full again, the idle ones get pruned */
    for (uint32_t i = 0; i < 2000; i++) {
        addr_n(&ss, 100000 + i);
        assert_int_equal(acq(l, SA(ss), 10 * S, NULL), WSB_IP_OK);
        rel(l, SA(ss));
    }
    addr_n(&ss, 0);
    /* an entry still holding a connection survives any prune */
    struct sockaddr_storage live = ip("192.0.2.77");
    for (int i = 0; i < 5; i++)
        assert_int_equal(acq(l, SA(live), 20 * S, NULL), WSB_IP_OK);
    for (uint32_t i = 0; i < 3000; i++) {
        addr_n(&ss, 200000 + i);
        assert_int_equal(acq(l, SA(ss), 40 * S, NULL), WSB_IP_OK);
        rel(l, SA(ss));
    }
    assert_true(wsb_iplimit_size(l) <= 4096);
    assert_int_equal(acq(l, SA(live), 100 * S, NULL), WSB_IP_CAP);
    wsb_iplimit_free(l);
}

static void test_max_entries(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 1, 1);
    wsb_iplimit_set_max_entries(l, 100);
    struct sockaddr_storage ss;
    uint32_t ra = 0;
    /* 100 live connections fill the table */
    for (uint32_t i = 0; i < 100; i++) {
        addr_n(&ss, i);
        assert_int_equal(acq(l, SA(ss), 0, NULL), WSB_IP_OK);
    }
    assert_int_equal(wsb_iplimit_size(l), 100);
    /* the next address is refused (fail closed), with a retry hint, and counts nothing */
    addr_n(&ss, 500);
    assert_int_equal(acq(l, SA(ss), 0, &ra), WSB_IP_FULL);
    assert_int_equal(ra, 1);
    assert_int_equal(acq(l, SA(ss), 2 * S, &ra), WSB_IP_FULL);
    assert_false(rel(l, SA(ss)));
    assert_int_equal(wsb_iplimit_size(l), 100);
    /* tracked ones are still limited */
    addr_n(&ss, 5);
    assert_int_equal(acq(l, SA(ss), 0, NULL), WSB_IP_RATE);
    /* once connections leave and buckets refill, new addresses are tracked again */
    for (uint32_t i = 0; i < 100; i++) {
        addr_n(&ss, i);
        assert_true(rel(l, SA(ss)));
    }
    addr_n(&ss, 600);
    assert_int_equal(acq(l, SA(ss), 5 * S, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_size(l), 1);
    assert_int_equal(acq(l, SA(ss), 5 * S, NULL), WSB_IP_RATE);
    wsb_iplimit_free(l);
}

/* The old fail-open path admitted a connection untracked and its release then took one off
 * another connection's count. With tickets, a connection admitted while nothing was tracked
 * releases nothing, even after a reload turned the cap on. */
static void test_release_only_what_was_counted(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 0);
    struct sockaddr_storage a = ip("192.0.2.10");
    struct wsb_ip_ticket early, t1, t2, t3;
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &early), WSB_IP_OK);
    assert_false(early.counted);
    wsb_iplimit_reconfigure(l, 0, 0, 2);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &t1), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &t2), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &t3), WSB_IP_CAP);
    wsb_iplimit_release(l, &early); /* counted nothing: the two live ones stay counted */
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &t3), WSB_IP_CAP);
    wsb_iplimit_release(l, &t1);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &t3), WSB_IP_OK);
    wsb_iplimit_release(l, &t2);
    wsb_iplimit_release(l, &t3);
    assert_int_equal(wsb_iplimit_size(l), 0);
    wsb_iplimit_free(l);
}

static void test_ipv6_prefix(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 2);
    struct sockaddr_storage a = ip("2001:db8:1:2::1"), b = ip("2001:db8:1:2:ffff:ffff:ffff:ffff"),
                            c = ip("2001:db8:1:3::1"), v4 = ip("203.0.113.9"),
                            v4b = ip("203.0.113.10");
    struct wsb_ip_ticket ta, tb, tc, tx, t4, t4b, t4c;
    /* default /64: two addresses of one /64 share the cap; the next /64 does not */
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &ta), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(b), 0, NULL, &tb), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &tx), WSB_IP_CAP);
    assert_int_equal(wsb_iplimit_acquire(l, SA(b), 0, NULL, &tx), WSB_IP_CAP);
    assert_int_equal(wsb_iplimit_acquire(l, SA(c), 0, NULL, &tc), WSB_IP_OK);
    /* IPv4 is never cut: neighbours are separate */
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4), 0, NULL, &t4), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4b), 0, NULL, &t4b), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4b), 0, NULL, &t4c), WSB_IP_OK);
    wsb_iplimit_release(l, &t4c);
    /* reload to /128 while connections are live: new ones key on the full address, and
     * the old tickets still release the /64 entry they counted */
    wsb_iplimit_set_ipv6_prefix(l, 128);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &tx), WSB_IP_OK);
    wsb_iplimit_release(l, &tx);
    wsb_iplimit_release(l, &ta);
    wsb_iplimit_release(l, &tb);
    wsb_iplimit_release(l, &tc);
    wsb_iplimit_release(l, &t4);
    wsb_iplimit_release(l, &t4b);
    assert_int_equal(wsb_iplimit_size(l), 0);
    /* /48: the two /64s are one client */
    wsb_iplimit_set_ipv6_prefix(l, 48);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &ta), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(c), 0, NULL, &tc), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(b), 0, NULL, &tx), WSB_IP_CAP);
    wsb_iplimit_release(l, &ta);
    wsb_iplimit_release(l, &tc);
    /* a prefix that is not a byte multiple: /57 puts ::7f00:: and ::8000:: apart */
    wsb_iplimit_set_ipv6_prefix(l, 57);
    struct sockaddr_storage p1 = ip("2001:db8:0:7f::1"), p2 = ip("2001:db8:0:0::1"),
                            p3 = ip("2001:db8:0:80::1");
    assert_int_equal(wsb_iplimit_acquire(l, SA(p1), 0, NULL, &ta), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(p2), 0, NULL, &tb), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(p2), 0, NULL, &tx), WSB_IP_CAP);
    assert_int_equal(wsb_iplimit_acquire(l, SA(p3), 0, NULL, &tc), WSB_IP_OK);
    wsb_iplimit_release(l, &ta);
    wsb_iplimit_release(l, &tb);
    wsb_iplimit_release(l, &tc);
    /* out-of-range prefixes are clamped */
    wsb_iplimit_set_ipv6_prefix(l, 0);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL, &ta), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(p3), 0, NULL, &tb), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(c), 0, NULL, &tx), WSB_IP_CAP);
    wsb_iplimit_release(l, &ta);
    wsb_iplimit_release(l, &tb);
    assert_int_equal(wsb_iplimit_size(l), 0);
    wsb_iplimit_free(l);
}

static void test_reconfigure(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 0);
    struct sockaddr_storage a = ip("192.0.2.9");
    for (int i = 0; i < 100; i++)
        assert_int_equal(acq(l, SA(a), 0, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_size(l), 0);
    wsb_iplimit_reconfigure(l, 1, 2, 1);
    assert_int_equal(acq(l, SA(a), S, NULL), WSB_IP_OK);
    assert_int_equal(acq(l, SA(a), S, NULL), WSB_IP_CAP);
    assert_int_equal(acq(l, SA(a), S, NULL), WSB_IP_RATE);
    wsb_iplimit_reconfigure(l, 1, 2, 3); /* raise the cap, bucket keeps its fill */
    assert_int_equal(acq(l, SA(a), S, NULL), WSB_IP_RATE);
    assert_int_equal(acq(l, SA(a), 2 * S, NULL), WSB_IP_OK);
    wsb_iplimit_reconfigure(l, 0, 0, 0);
    assert_int_equal(acq(l, SA(a), 2 * S, NULL), WSB_IP_OK);
    wsb_iplimit_free(l);
}

struct worker {
    struct wsb_iplimit *l;
    uint32_t base;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    struct sockaddr_storage ss;
    for (uint32_t i = 0; i < 20000; i++) {
        addr_n(&ss, w->base + i % 300);
        struct wsb_ip_ticket t;
        if (wsb_iplimit_acquire(w->l, SA(ss), (int64_t)i * 1000, NULL, &t) == WSB_IP_OK)
            wsb_iplimit_release(w->l, &t);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1000, 100, 3);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.l = l, .base = (uint32_t)(i % 2) * 150};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* everything was released: every address may connect up to the cap again */
    struct sockaddr_storage ss;
    addr_n(&ss, 7);
    for (int i = 0; i < 3; i++)
        assert_int_equal(acq(l, SA(ss), 100 * S, NULL), WSB_IP_OK);
    assert_int_equal(acq(l, SA(ss), 100 * S, NULL), WSB_IP_CAP);
    wsb_iplimit_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_rate, reset_pool),
        cmocka_unit_test_setup(test_cap_and_release, reset_pool),
        cmocka_unit_test_setup(test_rate_before_cap, reset_pool),
        cmocka_unit_test_setup(test_v4_mapped, reset_pool),
        cmocka_unit_test_setup(test_prune, reset_pool),
        cmocka_unit_test_setup(test_max_entries, reset_pool),
        cmocka_unit_test_setup(test_release_only_what_was_counted, reset_pool),
        cmocka_unit_test_setup(test_ipv6_prefix, reset_pool),
        cmocka_unit_test_setup(test_reconfigure, reset_pool),
        cmocka_unit_test_setup(test_threads, reset_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
