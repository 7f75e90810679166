/* Unit tests for bridge/gate.c: who holds the hand-off gate, and for how long. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bridge/gate.h"

#define MS 1000LL
#define ALLOW (500 * MS)

static void test_open_when_nobody_behind(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    assert_true(wsb_gate_open(&g, 0));
    wsb_gate_note(&g, &a, false, ALLOW, 10 * MS);
    assert_true(wsb_gate_open(&g, 10 * MS));
}

static void test_behind_member_holds_until_it_catches_up(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a, b;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    wsb_gate_member_init(&b, 0);
    wsb_gate_note(&g, &a, true, ALLOW, 0);
    wsb_gate_note(&g, &b, true, ALLOW, 0);
    assert_false(wsb_gate_open(&g, 1 * MS));
    wsb_gate_note(&g, &a, false, ALLOW, 2 * MS);
    assert_false(wsb_gate_open(&g, 2 * MS)); /* b still behind */
    wsb_gate_note(&g, &b, false, ALLOW, 3 * MS);
    assert_true(wsb_gate_open(&g, 3 * MS));
    assert_int_equal(g.nbehind, 0);
}

static void test_stalled_member_stops_holding_after_its_allowance(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    wsb_gate_note(&g, &a, true, ALLOW, 0);
    assert_false(wsb_gate_open(&g, ALLOW - 1));
    assert_true(wsb_gate_open(&g, ALLOW));
    /* still behind (it never reads): it never holds again while behind */
    wsb_gate_note(&g, &a, true, ALLOW, ALLOW + 10 * MS);
    assert_true(wsb_gate_open(&g, ALLOW + 10 * MS));
    assert_true(wsb_gate_open(&g, 100 * ALLOW));
    assert_int_equal(g.nbehind, 1);
}

static void test_allowance_is_repaid_at_half_speed(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    wsb_gate_note(&g, &a, true, ALLOW, 0);
    assert_true(wsb_gate_open(&g, ALLOW)); /* exhausted */
    wsb_gate_note(&g, &a, false, ALLOW, ALLOW);
    /* caught up, but not fully repaid: behind again, it does not hold */
    wsb_gate_note(&g, &a, true, ALLOW, ALLOW + ALLOW);
    assert_true(wsb_gate_open(&g, 2 * ALLOW));
    wsb_gate_note(&g, &a, false, ALLOW, 2 * ALLOW);
    /* 2 x ALLOW of not being behind repays ALLOW */
    wsb_gate_note(&g, &a, true, ALLOW, 4 * ALLOW);
    assert_false(wsb_gate_open(&g, 4 * ALLOW));
}

static void test_fast_member_behind_briefly_keeps_holding(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    /* behind 2 ms of every 10 ms, for 10 s: never exhausted */
    for (int64_t t = 0; t < 10000 * MS; t += 10 * MS) {
        wsb_gate_note(&g, &a, true, ALLOW, t);
        assert_false(wsb_gate_open(&g, t + 1 * MS));
        wsb_gate_note(&g, &a, false, ALLOW, t + 2 * MS);
        assert_true(wsb_gate_open(&g, t + 2 * MS));
    }
    assert_false(a.exhausted);
}

static void test_slow_member_behind_most_of_the_time_is_let_go(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    /* behind 9 ms of every 10 ms: it would pace the whole loop to itself */
    int64_t t = 0;
    bool let_go = false;
    for (; t < 5000 * MS && !let_go; t += 10 * MS) {
        wsb_gate_note(&g, &a, true, ALLOW, t);
        if (wsb_gate_open(&g, t + 9 * MS))
            let_go = true;
        wsb_gate_note(&g, &a, false, ALLOW, t + 9 * MS);
    }
    assert_true(let_go);
    assert_true(t <= 1000 * MS); /* 500 ms of debt at 0.85 ms per 10 ms: ~600 ms */
}

static void test_leave_releases(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a, b;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    wsb_gate_member_init(&b, 0);
    wsb_gate_note(&g, &a, true, ALLOW, 0);
    wsb_gate_note(&g, &b, true, ALLOW, 0);
    wsb_gate_leave(&g, &a);
    assert_false(wsb_gate_open(&g, 1));
    wsb_gate_leave(&g, &b);
    assert_true(wsb_gate_open(&g, 1));
    assert_int_equal(g.nbehind, 0);
    assert_null(g.behind);
    wsb_gate_leave(&g, &b); /* twice is harmless */
    assert_int_equal(g.holders, 0);
}

static void test_zero_allowance_never_holds(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 0);
    wsb_gate_note(&g, &a, true, 0, 0);
    assert_true(wsb_gate_open(&g, 0));
}

static void test_clock_going_back(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct wsb_gate_member a;
    wsb_gate_init(&g);
    wsb_gate_member_init(&a, 100 * MS);
    wsb_gate_note(&g, &a, true, ALLOW, 100 * MS);
    wsb_gate_note(&g, &a, true, ALLOW, 50 * MS);
    assert_false(wsb_gate_open(&g, 60 * MS));
    assert_true(a.debt_us >= 0 && a.debt_us <= ALLOW);
    assert_true(wsb_gate_open(&g, 100 * MS + ALLOW));
}

/* Per source: a member that holds counts its sources (through the hold callback, as the
 * session does for its subscriptions); only those sources are held, and a member whose
 * allowance runs out stops holding them. */
struct subs {
    uint64_t src[2];
    int n;
    int calls;
};

static void hold_cb(void *ctx, struct wsb_gate_member *m, bool holding)
{
    struct wsb_gate *g = ctx;
    struct subs *s = (struct subs *)(void *)((char *)m + sizeof(*m)); /* laid out after m */
    s->calls++;
    for (int i = 0; i < s->n; i++)
        assert_true(wsb_gate_source_hold(g, s->src[i], holding ? 1 : -1) >= 0);
}

struct client {
    struct wsb_gate_member m;
    struct subs s;
};

static void test_members_hold_their_sources_only(void **state)
{
    (void)state;
    struct wsb_gate g;
    struct client a = {.s = {.src = {1}, .n = 1}}, b = {.s = {.src = {1, 2}, .n = 2}};
    wsb_gate_init(&g);
    wsb_gate_set_hold_cb(&g, hold_cb, &g);
    wsb_gate_member_init(&a.m, 0);
    wsb_gate_member_init(&b.m, 0);
    assert_true(wsb_gate_source_open(&g, 1, 0));
    /* a (source 1) is behind: source 1 held, 2 and 3 go on */
    wsb_gate_note(&g, &a.m, true, ALLOW, 0);
    assert_int_equal(a.s.calls, 1);
    assert_false(wsb_gate_source_open(&g, 1, 1 * MS));
    assert_true(wsb_gate_source_open(&g, 2, 1 * MS));
    assert_true(wsb_gate_source_open(&g, 3, 1 * MS));
    assert_false(wsb_gate_open(&g, 1 * MS));
    /* b (sources 1 and 2) too: both held; a catches up, 1 stays held for b */
    wsb_gate_note(&g, &b.m, true, ALLOW, 2 * MS);
    assert_false(wsb_gate_source_open(&g, 2, 2 * MS));
    wsb_gate_note(&g, &a.m, false, ALLOW, 3 * MS);
    assert_int_equal(a.s.calls, 2);
    assert_false(wsb_gate_source_open(&g, 1, 3 * MS));
    assert_false(wsb_gate_source_open(&g, 2, 3 * MS));
    /* still behind (a note with no change calls nothing) */
    wsb_gate_note(&g, &b.m, true, ALLOW, 4 * MS);
    assert_int_equal(b.s.calls, 1);
    /* b's allowance runs out: found by the next question, and both sources go on */
    assert_false(wsb_gate_source_open(&g, 2, 2 * MS + ALLOW - 1));
    assert_true(wsb_gate_source_open(&g, 2, 2 * MS + ALLOW));
    assert_int_equal(b.s.calls, 2);
    assert_true(wsb_gate_source_open(&g, 1, 2 * MS + ALLOW));
    assert_int_equal(g.holders, 0);
    assert_int_equal(g.sources.count, 0);
    /* b catches up, repays its allowance (2 x ALLOW), falls behind and holds again, then
     * leaves: its sources are released */
    wsb_gate_note(&g, &b.m, false, ALLOW, 10 * ALLOW);
    wsb_gate_note(&g, &b.m, true, ALLOW, 12 * ALLOW);
    assert_false(wsb_gate_source_open(&g, 2, 12 * ALLOW));
    wsb_gate_leave(&g, &b.m);
    assert_true(wsb_gate_source_open(&g, 2, 12 * ALLOW));
    assert_int_equal(g.sources.count, 0);
    wsb_gate_cleanup(&g);
}

static void test_source_counts(void **state)
{
    (void)state;
    struct wsb_gate g;
    wsb_gate_init(&g);
    assert_int_equal(wsb_gate_source_hold(&g, 7, 1), 1);
    assert_int_equal(wsb_gate_source_hold(&g, 7, 1), 2);
    assert_int_equal(wsb_gate_source_hold(&g, 8, 1), 1);
    assert_int_equal(wsb_gate_source_hold(&g, 7, -1), 1);
    assert_int_equal(wsb_gate_source_hold(&g, 7, -1), 0);
    assert_int_equal(wsb_gate_source_hold(&g, 7, -1), 0); /* never below 0 */
    assert_int_equal(g.sources.count, 1);
    wsb_gate_cleanup(&g); /* frees source 8's count */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_when_nobody_behind),
        cmocka_unit_test(test_behind_member_holds_until_it_catches_up),
        cmocka_unit_test(test_stalled_member_stops_holding_after_its_allowance),
        cmocka_unit_test(test_allowance_is_repaid_at_half_speed),
        cmocka_unit_test(test_fast_member_behind_briefly_keeps_holding),
        cmocka_unit_test(test_slow_member_behind_most_of_the_time_is_let_go),
        cmocka_unit_test(test_leave_releases),
        cmocka_unit_test(test_members_hold_their_sources_only),
        cmocka_unit_test(test_source_counts),
        cmocka_unit_test(test_zero_allowance_never_holds),
        cmocka_unit_test(test_clock_going_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
