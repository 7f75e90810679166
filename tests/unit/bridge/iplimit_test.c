/* Unit tests for bridge/iplimit.c: per-IP handshake rate and connection cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
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

static void test_rate(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 3, 0);
    assert_non_null(l);
    struct sockaddr_storage a = ip("192.0.2.1"), b = ip("192.0.2.2");
    uint32_t ra = 99;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
        assert_int_equal(ra, 0);
    }
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 1);
    /* another address has its own bucket */
    assert_int_equal(wsb_iplimit_acquire(l, SA(b), 0, &ra), WSB_IP_OK);
    /* refills with time */
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, &ra), WSB_IP_RATE);
    /* releasing does not give back rate tokens */
    wsb_iplimit_release(l, SA(a));
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, &ra), WSB_IP_RATE);
    wsb_iplimit_free(l);

    /* slow rate: retry_after rounds up */
    l = wsb_iplimit_new(0.25, 1, 0);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 4);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S / 2, &ra), WSB_IP_RATE);
    assert_int_equal(ra, 4);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S + S / 2, NULL), WSB_IP_RATE);
    wsb_iplimit_free(l);

    /* a burst under one still lets one handshake through */
    l = wsb_iplimit_new(1, 0, 0);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_RATE);
    wsb_iplimit_free(l);
}

static void test_cap_and_release(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 2);
    struct sockaddr_storage a = ip("2001:db8::1"), b = ip("2001:db8::2");
    uint32_t ra;
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_CAP);
    assert_int_equal(ra, 1);
    assert_int_equal(wsb_iplimit_acquire(l, SA(b), 0, &ra), WSB_IP_OK);
    wsb_iplimit_release(l, SA(a));
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_CAP);
    /* all released: unlimited rate means the entry is forgotten at once */
    wsb_iplimit_release(l, SA(a));
    wsb_iplimit_release(l, SA(a));
    wsb_iplimit_release(l, SA(a)); /* extra release is harmless */
    wsb_iplimit_release(l, SA(b));
    assert_int_equal(wsb_iplimit_size(l), 0);
    /* release of an unknown address is harmless */
    struct sockaddr_storage c = ip("10.9.9.9");
    wsb_iplimit_release(l, SA(c));
    wsb_iplimit_free(l);
}

static void test_rate_before_cap(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 2, 1);
    struct sockaddr_storage a = ip("198.51.100.7");
    uint32_t ra;
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_CAP); /* uses a token */
    assert_int_equal(ra, 1);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, &ra), WSB_IP_RATE);
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
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4), 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(mapped), 0, &ra), WSB_IP_CAP);
    assert_int_equal(wsb_iplimit_acquire(l, SA(other6), 0, &ra), WSB_IP_OK); /* compat != v4 */
    assert_int_equal(wsb_iplimit_acquire(l, SA(v6), 0, &ra), WSB_IP_OK);
    /* releasing through the mapped form frees the v4 slot */
    wsb_iplimit_release(l, SA(mapped));
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4), 0, &ra), WSB_IP_OK);
    /* the port never matters */
    struct sockaddr_storage v4b = v4;
    ((struct sockaddr_in *)&v4b)->sin_port = htons(999);
    assert_int_equal(wsb_iplimit_acquire(l, SA(v4b), 0, &ra), WSB_IP_CAP);
    /* unknown families are not limited */
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(wsb_iplimit_acquire(l, &un, 0, &ra), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, &un, 0, &ra), WSB_IP_OK);
    wsb_iplimit_release(l, &un);
    wsb_iplimit_free(l);
}

static void addr_n(struct sockaddr_storage *ss, uint32_t n)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_addr.s6_addr[0] = 0x20;
    in6->sin6_addr.s6_addr[1] = 0x01;
    memcpy(&in6->sin6_addr.s6_addr[12], &n, 4);
}

static void test_prune(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(10, 10, 5);
    struct sockaddr_storage ss;
    /* 1000 addresses connect once and leave */
    for (uint32_t i = 0; i < 1000; i++) {
        addr_n(&ss, i);
        assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 0, NULL), WSB_IP_OK);
        wsb_iplimit_release(l, SA(ss));
    }
    size_t grown = wsb_iplimit_size(l);
    assert_true(grown > 0 && grown <= 1000);
    /* one more address 10 s later: buckets are full again, the idle ones get pruned */
    for (uint32_t i = 0; i < 2000; i++) {
        addr_n(&ss, 100000 + i);
        assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 10 * S, NULL), WSB_IP_OK);
        wsb_iplimit_release(l, SA(ss));
    }
    addr_n(&ss, 0);
    /* an entry still holding a connection survives any prune */
    struct sockaddr_storage live = ip("192.0.2.77");
    for (int i = 0; i < 5; i++)
        assert_int_equal(wsb_iplimit_acquire(l, SA(live), 20 * S, NULL), WSB_IP_OK);
    for (uint32_t i = 0; i < 3000; i++) {
        addr_n(&ss, 200000 + i);
        assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 40 * S, NULL), WSB_IP_OK);
        wsb_iplimit_release(l, SA(ss));
    }
    assert_true(wsb_iplimit_size(l) <= 4096);
    assert_int_equal(wsb_iplimit_acquire(l, SA(live), 100 * S, NULL), WSB_IP_CAP);
    wsb_iplimit_free(l);
}

static void test_max_entries(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(1, 1, 1);
    wsb_iplimit_set_max_entries(l, 100);
    struct sockaddr_storage ss;
    /* 100 live connections fill the table */
    for (uint32_t i = 0; i < 100; i++) {
        addr_n(&ss, i);
        assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 0, NULL), WSB_IP_OK);
    }
    assert_int_equal(wsb_iplimit_size(l), 100);
    /* the next address is admitted but not tracked */
    addr_n(&ss, 500);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 0, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 0, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_size(l), 100);
    /* tracked ones are still limited */
    addr_n(&ss, 5);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 0, NULL), WSB_IP_RATE);
    /* once connections leave and buckets refill, new addresses are tracked again */
    for (uint32_t i = 0; i < 100; i++) {
        addr_n(&ss, i);
        wsb_iplimit_release(l, SA(ss));
    }
    addr_n(&ss, 600);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 5 * S, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_size(l), 1);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 5 * S, NULL), WSB_IP_RATE);
    wsb_iplimit_free(l);
}

static void test_reconfigure(void **state)
{
    (void)state;
    struct wsb_iplimit *l = wsb_iplimit_new(0, 0, 0);
    struct sockaddr_storage a = ip("192.0.2.9");
    for (int i = 0; i < 100; i++)
        assert_int_equal(wsb_iplimit_acquire(l, SA(a), 0, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_size(l), 0);
    wsb_iplimit_reconfigure(l, 1, 2, 1);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, NULL), WSB_IP_CAP);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, NULL), WSB_IP_RATE);
    wsb_iplimit_reconfigure(l, 1, 2, 3); /* raise the cap, bucket keeps its fill */
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), S, NULL), WSB_IP_RATE);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 2 * S, NULL), WSB_IP_OK);
    wsb_iplimit_reconfigure(l, 0, 0, 0);
    assert_int_equal(wsb_iplimit_acquire(l, SA(a), 2 * S, NULL), WSB_IP_OK);
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
        if (wsb_iplimit_acquire(w->l, SA(ss), (int64_t)i * 1000, NULL) == WSB_IP_OK)
            wsb_iplimit_release(w->l, SA(ss));
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
        assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 100 * S, NULL), WSB_IP_OK);
    assert_int_equal(wsb_iplimit_acquire(l, SA(ss), 100 * S, NULL), WSB_IP_CAP);
    wsb_iplimit_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_cap_and_release),
        cmocka_unit_test(test_rate_before_cap),
        cmocka_unit_test(test_v4_mapped),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_max_entries),
        cmocka_unit_test(test_reconfigure),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
