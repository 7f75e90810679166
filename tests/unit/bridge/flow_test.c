/* Unit tests for bridge/flow.c: token buckets and the send-buffer verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bridge/flow.h"

#define S 1000000LL

static void test_bucket_burst_then_refill(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 10, 5, 0);
    for (int i = 0; i < 5; i++)
        assert_true(wsb_bucket_take(&b, 1, 0));
    assert_false(wsb_bucket_take(&b, 1, 0));
    /* 0.1 s earns exactly one token */
    assert_true(wsb_bucket_take(&b, 1, S / 10));
    assert_false(wsb_bucket_take(&b, 1, S / 10));
    /* a long pause never earns more than the burst */
    assert_true(wsb_bucket_take(&b, 5, 1000 * S));
    assert_false(wsb_bucket_take(&b, 1, 1000 * S));
}

static void test_bucket_exactly_at_limit(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 1, 3, 0);
    assert_true(wsb_bucket_take(&b, 3, 0));
    assert_true(b.tokens >= 0);
    assert_false(wsb_bucket_take(&b, 0.5, 0));
    assert_true(wsb_bucket_take(&b, 0, 0));
    /* more than the burst is never granted */
    assert_false(wsb_bucket_take(&b, 4, 100 * S));
    assert_true(wsb_bucket_take(&b, 3, 100 * S));
}

static void test_bucket_clock_stalls_and_jumps_back(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 2, 2, 10 * S);
    assert_true(wsb_bucket_take(&b, 2, 10 * S));
    /* clock not advancing: nothing earned */
    for (int i = 0; i < 100; i++)
        assert_false(wsb_bucket_take(&b, 1, 10 * S));
    /* clock jumps back: nothing earned, never negative */
    assert_false(wsb_bucket_take(&b, 1, 5 * S));
    assert_true(b.tokens >= 0);
    assert_true(b.tokens <= b.burst);
    /* forward from the new base only */
    assert_false(wsb_bucket_take(&b, 1, 5 * S + S / 4));
    assert_true(wsb_bucket_take(&b, 1, 5 * S + S / 2));
    /* a huge jump forward saturates at burst, no overflow */
    assert_true(wsb_bucket_take(&b, 2, INT64_MAX));
    assert_false(wsb_bucket_take(&b, 1, INT64_MAX));
    assert_true(b.tokens >= 0 && b.tokens <= b.burst);
    /* and from INT64_MIN back up */
    wsb_bucket_init(&b, 1e9, 1e9, INT64_MIN);
    assert_true(wsb_bucket_take(&b, 1e9, INT64_MIN));
    assert_true(wsb_bucket_take(&b, 1e9, INT64_MAX));
    assert_true(b.tokens >= 0 && b.tokens <= b.burst);
}

static void test_bucket_unlimited(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 0, 0, 0);
    for (int i = 0; i < 1000; i++)
        assert_true(wsb_bucket_take(&b, 1e6, 0));
    assert_int_equal(wsb_bucket_retry_after(&b, 1e9, 0), 0);
    wsb_bucket_init(&b, -5, 10, 0);
    assert_true(wsb_bucket_take(&b, 100, 0));
}

static void test_bucket_retry_after(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 0.5, 1, 0);
    assert_int_equal(wsb_bucket_retry_after(&b, 1, 0), 0);
    assert_true(wsb_bucket_take(&b, 1, 0));
    assert_int_equal(wsb_bucket_retry_after(&b, 1, 0), 2);
    assert_int_equal(wsb_bucket_retry_after(&b, 1, S), 1);
    assert_int_equal(wsb_bucket_retry_after(&b, 1, 2 * S), 0);
    /* fast bucket: less than a second still says 1 */
    wsb_bucket_init(&b, 1000, 1, 0);
    assert_true(wsb_bucket_take(&b, 1, 0));
    assert_int_equal(wsb_bucket_retry_after(&b, 1, 0), 1);
    /* retry_after does not change the bucket */
    assert_true(wsb_bucket_take(&b, 1, S / 1000));
    /* very slow bucket saturates */
    wsb_bucket_init(&b, 1e-300, 1, 0);
    assert_true(wsb_bucket_take(&b, 1, 0));
    assert_int_equal(wsb_bucket_retry_after(&b, 1, 0), UINT32_MAX);
}

static void test_bucket_reconfigure(void **state)
{
    (void)state;
    struct wsb_bucket b;
    wsb_bucket_init(&b, 10, 10, 0);
    assert_true(wsb_bucket_take(&b, 4, 0)); /* 6 left */
    wsb_bucket_reconfigure(&b, 1, 3);       /* capped at the new burst */
    assert_true(b.tokens <= 3);
    assert_true(wsb_bucket_take(&b, 3, 0));
    assert_false(wsb_bucket_take(&b, 1, 0));
    assert_true(wsb_bucket_take(&b, 1, S));
    wsb_bucket_reconfigure(&b, 100, 100); /* keeps the fill, does not top up */
    assert_false(wsb_bucket_take(&b, 1, S));
    assert_true(wsb_bucket_take(&b, 50, S + S / 2));
    wsb_bucket_reconfigure(&b, 0, 0); /* unlimited */
    assert_true(wsb_bucket_take(&b, 1e6, S + S / 2));
}

static void test_sendbuf_hard(void **state)
{
    (void)state;
    struct wsb_sendbuf s;
    wsb_sendbuf_init(&s);
    assert_int_equal(s.soft_since_us, -1);
    s.bytes = 1000;
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, 1000, 0), WSB_SB_OK); /* at limit */
    s.bytes = 1001;
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, 1000, 0), WSB_SB_HARD);
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, 0, 0), WSB_SB_OK); /* disabled */
    s.bytes = UINT64_MAX;
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, 0, 0), WSB_SB_OK);
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, UINT64_MAX - 1, 0), WSB_SB_HARD);
}

static void test_sendbuf_soft_window(void **state)
{
    (void)state;
    struct wsb_sendbuf s;
    wsb_sendbuf_init(&s);
    s.bytes = 100; /* at soft: not over */
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 5 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, -1);
    s.bytes = 101;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 5 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, 5 * S);
    /* the window start does not move while over */
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 6 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, 5 * S);
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 7 * S), WSB_SB_OK); /* exactly 2 s */
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 7 * S + 1), WSB_SB_SOFT);
    /* dropping to the soft limit resets the window */
    s.bytes = 100;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 8 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, -1);
    s.bytes = 500;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 9 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, 9 * S);
    /* hard wins over soft */
    s.bytes = 2000;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 9 * S), WSB_SB_HARD);
    /* clock going back never yields SOFT */
    s.bytes = 500;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 2, 1000, 1 * S), WSB_SB_OK);
    /* soft_seconds 0: any time over is too long */
    wsb_sendbuf_init(&s);
    s.bytes = 101;
    assert_int_equal(wsb_sendbuf_check(&s, 100, 0, 0, 0), WSB_SB_OK);
    assert_int_equal(wsb_sendbuf_check(&s, 100, 0, 0, 1), WSB_SB_SOFT);
    /* soft disabled */
    wsb_sendbuf_init(&s);
    s.bytes = 1u << 30;
    assert_int_equal(wsb_sendbuf_check(&s, 0, 0, 0, 100 * S), WSB_SB_OK);
    assert_int_equal(s.soft_since_us, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_burst_then_refill),
        cmocka_unit_test(test_bucket_exactly_at_limit),
        cmocka_unit_test(test_bucket_clock_stalls_and_jumps_back),
        cmocka_unit_test(test_bucket_unlimited),
        cmocka_unit_test(test_bucket_retry_after),
        cmocka_unit_test(test_bucket_reconfigure),
        cmocka_unit_test(test_sendbuf_hard),
        cmocka_unit_test(test_sendbuf_soft_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
