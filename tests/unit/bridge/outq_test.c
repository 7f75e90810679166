/* Unit tests for bridge/outq.c: out-queue order, byte accounting, drop_oldest, purge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bridge/outq.h"
#include "bridge/ws/ws_frame.h"

static struct wsb_frame *frame(size_t len)
{
    uint8_t buf[256];
    memset(buf, 'x', sizeof(buf));
    struct wsb_frame *f = wsb_frame_new(WSB_OP_TEXT, false, buf, len);
    assert_non_null(f);
    return f;
}

static void count(void *ctx, uint32_t tag)
{
    (void)tag;
    (*(size_t *)ctx)++;
}

static void test_fifo_and_bytes(void **state)
{
    (void)state;
    struct wsb_outq q;
    wsb_outq_init(&q);
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(wsb_outq_push(&q, frame(100), WSB_OUTQ_MESSAGE, i), 0);
    assert_int_equal(q.count, 100);
    assert_int_equal(q.bytes, 100 * 102);
    struct wsb_outq_item it;
    for (uint32_t i = 0; i < 100; i++) {
        assert_true(wsb_outq_pop(&q, &it));
        assert_int_equal(it.tag, i);
        wsb_frame_unref(it.frame);
    }
    assert_false(wsb_outq_pop(&q, &it));
    assert_int_equal(q.bytes, 0);
    /* a ring grown by a burst is given back once empty */
    assert_null(q.items);
    assert_int_equal(q.cap, 0);
    wsb_outq_cleanup(&q);
}

static void test_drop_oldest_keeps_replies_and_acks(void **state)
{
    (void)state;
    struct wsb_outq q;
    wsb_outq_init(&q);
    wsb_outq_push(&q, frame(100), WSB_OUTQ_MESSAGE, 1);
    wsb_outq_push(&q, frame(100), WSB_OUTQ_ACK, 2);
    wsb_outq_push(&q, frame(100), WSB_OUTQ_REPLY, 0);
    wsb_outq_push(&q, frame(100), WSB_OUTQ_MESSAGE, 1);
    wsb_outq_push(&q, frame(100), WSB_OUTQ_MESSAGE, 1);
    size_t n = 0;
    assert_int_equal(wsb_outq_drop_oldest(&q, 0, count, &n), 3);
    assert_int_equal(n, 3);
    assert_int_equal(q.count, 2);
    assert_int_equal(q.bytes, 2 * 102);
    struct wsb_outq_item it;
    assert_true(wsb_outq_pop(&q, &it));
    assert_int_equal(it.kind, WSB_OUTQ_ACK);
    wsb_frame_unref(it.frame);
    assert_true(wsb_outq_pop(&q, &it));
    assert_int_equal(it.kind, WSB_OUTQ_REPLY);
    wsb_frame_unref(it.frame);
    wsb_outq_cleanup(&q);
}

static void test_purge_removes_one_subscription(void **state)
{
    (void)state;
    struct wsb_outq q;
    wsb_outq_init(&q);
    for (uint32_t i = 0; i < 40; i++)
        wsb_outq_push(&q, frame(10),
                      i % 4 == 3 ? WSB_OUTQ_REPLY : (i % 2 ? WSB_OUTQ_ACK : WSB_OUTQ_MESSAGE),
                      i % 3);
    size_t before = q.count;
    size_t purged = wsb_outq_purge(&q, 1);
    assert_true(purged > 0);
    assert_int_equal(q.count, before - purged);
    assert_int_equal(q.bytes, q.count * 12);
    struct wsb_outq_item it;
    uint32_t last_replies = 0;
    while (wsb_outq_pop(&q, &it)) {
        assert_true(it.kind == WSB_OUTQ_REPLY || it.tag != 1);
        last_replies += it.kind == WSB_OUTQ_REPLY;
        wsb_frame_unref(it.frame);
    }
    assert_int_equal(last_replies, 10); /* every reply stays, whatever its tag */
    wsb_outq_cleanup(&q);
}

static void visit(void *ctx, uint32_t kind, uint32_t tag)
{
    (void)kind;
    uint32_t *sum = ctx;
    *sum += tag;
}

static void test_each_visits_in_order(void **state)
{
    (void)state;
    struct wsb_outq q;
    wsb_outq_init(&q);
    struct wsb_outq_item it;
    /* wrap the ring: push 10, pop 5, push 10 */
    for (uint32_t i = 0; i < 10; i++)
        wsb_outq_push(&q, frame(1), WSB_OUTQ_MESSAGE, i);
    for (int i = 0; i < 5; i++) {
        wsb_outq_pop(&q, &it);
        wsb_frame_unref(it.frame);
    }
    for (uint32_t i = 10; i < 20; i++)
        wsb_outq_push(&q, frame(1), WSB_OUTQ_MESSAGE, i);
    uint32_t sum = 0;
    wsb_outq_each(&q, visit, &sum);
    assert_int_equal(sum, (5 + 19) * 15 / 2);
    wsb_outq_cleanup(&q);
    assert_int_equal(q.count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_bytes),
        cmocka_unit_test(test_drop_oldest_keeps_replies_and_acks),
        cmocka_unit_test(test_purge_removes_one_subscription),
        cmocka_unit_test(test_each_visits_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
