/* Tests for records lost at the broker (connectors/kafka_reset.c): librdkafka's offset-reset
 * warnings as 2.0.2 and later versions write them, lines that are not losses, and the judging
 * of the next record: a reset past records counts them, ordinary offset holes (compaction,
 * transaction markers, aborted transactions: a jump with no reset) never count, records
 * fetched before the reset keep the note, a second reset keeps the first position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "connectors/kafka_reset.h"

#define WARN 4
#define DEBUG 7

static void test_parse_2_0(void **state)
{
    (void)state;
    struct wsb_kreset_note n;
    /* librdkafka 2.0.2, rd_kafka_offset_reset after a fetch found the position out of range */
    assert_true(wsb_kreset_parse(
        WARN, "OFFSET",
        "orders.v1 [3]: offset reset (at offset 1200, broker 1) to BEGINNING: fetch failed "
        "due to requested offset not available on the broker: Broker: Offset out of range",
        &n));
    assert_string_equal(n.topic, "orders.v1");
    assert_int_equal(n.partition, 3);
    assert_int_equal(n.at, 1200);
    /* As librdkafka 2.0.2 hands it to the log callback: with its thread's name */
    assert_true(wsb_kreset_parse(WARN, "OFFSET",
                                 "[thrd:main]: lossy [0]: offset reset (at offset 20, broker 1) "
                                 "to cached BEGINNING offset 290: fetch failed due to requested "
                                 "offset not available on the broker: Broker: Offset out of range",
                                 &n));
    assert_string_equal(n.topic, "lossy");
    assert_int_equal(n.partition, 0);
    assert_int_equal(n.at, 20);
    assert_false(wsb_kreset_parse(WARN, "OFFSET", "[thrd:main lossy [0]: offset reset (at", &n));
    /* The cached log start offset variant */
    assert_true(wsb_kreset_parse(WARN, "OFFSET",
                                 "t_x-1 [0]: offset reset (at offset 7, broker 2) to cached "
                                 "BEGINNING offset 500: fetch failed due to requested offset "
                                 "not available on the broker: Broker: Offset out of range",
                                 &n));
    assert_string_equal(n.topic, "t_x-1");
    assert_int_equal(n.partition, 0);
    assert_int_equal(n.at, 7);
}

static void test_parse_later_versions(void **state)
{
    (void)state;
    struct wsb_kreset_note n;
    /* librdkafka >= 2.1 prints the fetch position with its leader epoch */
    assert_true(wsb_kreset_parse(WARN, "OFFSET",
                                 "prices [12]: offset reset (at offset 99 (leader epoch 4), "
                                 "broker 3) to offset 150 (leader epoch 4): fetch failed due to "
                                 "requested offset not available on the broker: Broker: Offset "
                                 "out of range",
                                 &n));
    assert_string_equal(n.topic, "prices");
    assert_int_equal(n.partition, 12);
    assert_int_equal(n.at, 99);
}

static void test_parse_refusals(void **state)
{
    (void)state;
    struct wsb_kreset_note n;
    const char *line = "orders [0]: offset reset (at offset 10, broker 1) to BEGINNING: x: y";
    assert_true(wsb_kreset_parse(WARN, "OFFSET", line, &n));
    /* A reset without an error is debug-logged (a start position looked up): no loss. */
    assert_false(wsb_kreset_parse(DEBUG, "OFFSET", line, &n));
    assert_false(wsb_kreset_parse(WARN, "FETCH", line, &n));
    assert_false(wsb_kreset_parse(WARN, NULL, line, &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET", NULL, &n));
    /* A logical position is no record position. */
    assert_false(wsb_kreset_parse(
        WARN, "OFFSET", "orders [0]: offset reset (at offset INVALID, broker 1) to END: a: b", &n));
    assert_false(wsb_kreset_parse(
        WARN, "OFFSET", "orders [0]: offset reset (at offset BEGINNING, broker -1) to x", &n));
    /* Other OFFSET warnings, and malformed lines */
    assert_false(
        wsb_kreset_parse(WARN, "OFFSET", "orders [0]: failed to commit offsets: Broker: x", &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET", "", &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET", " [0]: offset reset (at offset 1, b", &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET", "t [x]: offset reset (at offset 1, b", &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET", "t [0]: offset reset (at offset 1", &n));
    assert_false(
        wsb_kreset_parse(WARN, "OFFSET", "t [99999999999]: offset reset (at offset 1, b", &n));
    assert_false(wsb_kreset_parse(WARN, "OFFSET",
                                  "t [0]: offset reset (at offset 1234567890123456789012, b", &n));
    char longtopic[400];
    memset(longtopic, 'a', 300);
    strcpy(longtopic + 300, " [0]: offset reset (at offset 1, broker 1) to END: a: b");
    assert_false(wsb_kreset_parse(WARN, "OFFSET", longtopic, &n));
}

static struct wsb_kreset_note note(const char *topic, int32_t partition, int64_t at)
{
    struct wsb_kreset_note n = {.partition = partition, .at = at};
    strcpy(n.topic, topic);
    return n;
}

static void test_holes_are_not_losses(void **state)
{
    (void)state;
    struct wsb_kresets *t = wsb_kresets_new();
    int client;
    /* Offsets 10, 11, then 20 (a compacted range, transaction markers, an aborted
     * transaction): no reset was noted, so nothing is lost. */
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 0, 10), 0);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 0, 11), 0);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 0, 20), 0);
    /* A reset of another partition, topic or consumer leaves this one alone. */
    struct wsb_kreset_note n = note("orders", 1, 30);
    wsb_kresets_note(t, &client, &n);
    n = note("prices", 0, 30);
    wsb_kresets_note(t, &client, &n);
    int other;
    n = note("orders", 0, 30);
    wsb_kresets_note(t, &other, &n);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 0, 40), 0);
    assert_int_equal(wsb_kresets_pending(t), 3);
    wsb_kresets_free(t);
}

static void test_reset_counts_skipped(void **state)
{
    (void)state;
    struct wsb_kresets *t = wsb_kresets_new();
    int client;
    /* The consumer expected 100 (out of range: the broker starts at 250 now). */
    struct wsb_kreset_note n = note("orders", 2, 100);
    wsb_kresets_note(t, &client, &n);
    /* Records fetched before the reset are still queued: they keep the note. */
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 2, 98), 0);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 2, 99), 0);
    assert_int_equal(wsb_kresets_pending(t), 1);
    /* The first record after the reset: 150 records were skipped, and the note is spent. */
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 2, 250), 150);
    assert_int_equal(wsb_kresets_pending(t), 0);
    /* A later hole is an ordinary hole again. */
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 2, 260), 0);
    /* A reset that skipped nothing (the next record is the expected one) counts 0. */
    n = note("orders", 2, 261);
    wsb_kresets_note(t, &client, &n);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 2, 261), 0);
    assert_int_equal(wsb_kresets_pending(t), 0);
    wsb_kresets_free(t);
}

static void test_second_reset_keeps_first_position(void **state)
{
    (void)state;
    struct wsb_kresets *t = wsb_kresets_new();
    int client;
    /* Reset at 100 to a cached log start (40) that was gone too: reset again at 40. The
     * consumer expected 100; the first record read is 300. */
    struct wsb_kreset_note n = note("orders", 0, 100);
    wsb_kresets_note(t, &client, &n);
    n = note("orders", 0, 40);
    wsb_kresets_note(t, &client, &n);
    assert_int_equal(wsb_kresets_pending(t), 1);
    assert_int_equal(wsb_kresets_check(t, &client, "orders", 0, 300), 200);
    wsb_kresets_free(t);
}

static void test_forget_and_bound(void **state)
{
    (void)state;
    struct wsb_kresets *t = wsb_kresets_new();
    int a, b;
    struct wsb_kreset_note n = note("orders", 0, 10);
    wsb_kresets_note(t, &a, &n);
    n = note("prices", 0, 10);
    wsb_kresets_note(t, &a, &n);
    wsb_kresets_note(t, &b, &n);
    wsb_kresets_forget(t, &a, "orders");
    assert_int_equal(wsb_kresets_pending(t), 2);
    assert_int_equal(wsb_kresets_check(t, &a, "orders", 0, 50), 0);
    wsb_kresets_forget(t, &a, NULL);
    assert_int_equal(wsb_kresets_pending(t), 1);
    assert_int_equal(wsb_kresets_check(t, &b, "prices", 0, 50), 40);
    /* At most 256 notes: the oldest go first. */
    for (int i = 0; i < 300; i++) {
        n = note("orders", i, 10);
        wsb_kresets_note(t, &a, &n);
    }
    assert_int_equal(wsb_kresets_pending(t), 256);
    assert_int_equal(wsb_kresets_check(t, &a, "orders", 0, 50), 0);
    assert_int_equal(wsb_kresets_check(t, &a, "orders", 299, 50), 40);
    wsb_kresets_free(t);
    wsb_kresets_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_2_0),
        cmocka_unit_test(test_parse_later_versions),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_holes_are_not_losses),
        cmocka_unit_test(test_reset_counts_skipped),
        cmocka_unit_test(test_second_reset_keeps_first_position),
        cmocka_unit_test(test_forget_and_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
