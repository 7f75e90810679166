/* Unit tests for bridge/ids.h: the bit layouts of source ids, publish cookies and session
 * ids round-trip for every loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "bridge/ids.h"

static void test_source_ids(void **state)
{
    (void)state;
    uint64_t all = (UINT64_C(1) << WSB_MAX_LOOPS) - 1;
    for (unsigned loop = 0; loop < WSB_MAX_LOOPS; loop++) {
        uint64_t id = wsb_source_id(12345, UINT64_C(1) << loop);
        assert_int_equal(wsb_source_loops(id), UINT64_C(1) << loop);
        assert_int_equal(id >> WSB_SOURCE_LOOP_BITS, 12345);
    }
    uint64_t shared = wsb_source_id((UINT64_C(1) << 48) - 1, all);
    assert_int_equal(wsb_source_loops(shared), all);
    /* ids from different sequence numbers never collide, whatever their masks */
    assert_true(wsb_source_id(1, all) != wsb_source_id(2, all));
    assert_true(wsb_source_id(1, 1) != wsb_source_id(2, 1));
}

static void test_cookies(void **state)
{
    (void)state;
    for (unsigned loop = 0; loop < WSB_MAX_LOOPS; loop++) {
        assert_int_equal(wsb_cookie_loop(wsb_cookie(loop, 1)), loop);
        assert_int_equal(wsb_cookie_loop(wsb_cookie(loop, UINT64_MAX)), loop);
    }
    assert_true(wsb_cookie(0, 1) != wsb_cookie(1, 1));
}

static void test_session_ids(void **state)
{
    (void)state;
    for (unsigned loop = 0; loop < WSB_MAX_LOOPS; loop++) {
        uint64_t id = wsb_session_id(loop, 7);
        assert_int_equal(id >> WSB_SESSION_LOOP_SHIFT, loop);
        assert_int_equal(wsb_session_id(loop, UINT64_MAX) >> WSB_SESSION_LOOP_SHIFT, loop);
    }
    assert_true(wsb_session_id(0, 1) != wsb_session_id(1, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_ids),
        cmocka_unit_test(test_cookies),
        cmocka_unit_test(test_session_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
