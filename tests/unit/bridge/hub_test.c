/* Tests for bridge/hub.c's filter groups: subscribers with equal resolved filters share one
 * group, each group's filter runs once per message, one frame per message and channel is
 * shared by every group that takes it, a record no group takes builds no frame, a refilter
 * moves a subscriber between groups, and offsets advance for filtered records too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/filter.h"
#include "bridge/hub.h"
#include "bridge/metrics.h"
#include "bridge/outq.h"
#include "connectors/connector.h"

#define NSUBS 12

static struct {
    size_t got[NSUBS];
    struct wsb_frame *last[NSUBS];
    size_t started;
} rec;

static void deliver(void *owner, uint32_t slot, struct wsb_frame *f, uint64_t ack)
{
    (void)owner;
    (void)ack;
    rec.got[slot]++;
    rec.last[slot] = f;
}

static void started(void *owner, uint32_t slot, const char *positions)
{
    (void)owner;
    (void)slot;
    (void)positions;
    rec.started++;
}

static void failed(void *owner, uint32_t slot, const char *code, const char *message)
{
    (void)owner;
    (void)slot;
    (void)code;
    (void)message;
}

static const struct wsb_hub_cbs cbs = {
    .deliver = deliver, .started = started, .failed = failed, .skipped = NULL};

static struct wsb_filter *key_filter(const char *key, atomic_uint_fast64_t *counter)
{
    char text[128];
    snprintf(text, sizeof(text), "{\"key\": \"%s\"}", key);
    json_t *v = json_loads(text, 0, NULL);
    char path[64], err[128];
    struct wsb_filter_spec *s =
        wsb_filter_spec_parse(v, WSB_FILTER_LITERAL, 0, path, sizeof(path), err, sizeof(err));
    json_decref(v);
    assert_non_null(s);
    struct wsb_filter *f = wsb_filter_resolve(s, NULL, NULL, counter);
    wsb_filter_spec_free(s);
    return f;
}

static struct wsb_msg *msg(const char *key, int64_t offset)
{
    return wsb_msg_new(7, 0, offset, -1, key, strlen(key), "{}", 2, NULL, 0);
}

static void test_groups_share_frames(void **state)
{
    (void)state;
    memset(&rec, 0, sizeof(rec));
    struct wsb_loop_metrics m;
    memset(&m, 0, sizeof(m));
    atomic_uint_fast64_t filtered = 0;
    struct wsb_hub *h = wsb_hub_new(&cbs, &m);
    struct wsb_hub_sub *subs[NSUBS];
    bool active;
    char *pos;
    /* 10 subscribers in 3 filter groups (a, b, c), 2 unfiltered. */
    static const char *const keys[NSUBS] = {"a", "a", "a", "a", "b",  "b",
                                            "b", "c", "c", "c", NULL, NULL};
    for (uint32_t i = 0; i < NSUBS; i++) {
        subs[i] = wsb_hub_attach(h, "orders", 6, 7, keys[i] ? key_filter(keys[i], &filtered) : NULL,
                                 NULL, i, &active, &pos);
        assert_non_null(subs[i]);
        assert_false(active);
    }
    assert_int_equal(wsb_hub_groups(h, "orders", 6, 7), 4);
    assert_int_equal(m.filter_groups, 3);
    wsb_hub_started(h, 7, "{\"0\":0}");
    assert_int_equal(rec.started, NSUBS);

    struct wsb_msg *a = msg("a", 0);
    wsb_hub_message(h, a);
    assert_int_equal(m.frames_encoded, 1);
    for (uint32_t i = 0; i < NSUBS; i++)
        assert_int_equal(rec.got[i], keys[i] && strcmp(keys[i], "a") != 0 ? 0 : 1);
    assert_ptr_equal(rec.last[0], rec.last[10]); /* one frame, shared by reference */
    assert_int_equal(filtered, 2);               /* groups b and c did not take it */

    /* Without the unfiltered subscribers, a record nobody's filter takes builds nothing. */
    wsb_hub_detach(h, subs[10]);
    wsb_hub_detach(h, subs[11]);
    subs[10] = subs[11] = NULL;
    assert_int_equal(wsb_hub_groups(h, "orders", 6, 7), 3);
    struct wsb_msg *z = msg("zzz", 1);
    wsb_hub_message(h, z);
    assert_int_equal(m.frames_encoded, 1);
    assert_int_equal(filtered, 5);
    /* ... but the positions moved past it: a subscriber joining now starts after it. */
    struct wsb_hub_sub *late =
        wsb_hub_attach(h, "orders", 6, 7, key_filter("a", NULL), NULL, 0, &active, &pos);
    assert_true(active);
    assert_string_equal(pos, "{\"0\":2}");
    free(pos);
    wsb_hub_detach(h, late);
    assert_int_equal(wsb_hub_groups(h, "orders", 6, 7), 3);

    /* A refilter moves a subscriber between groups; the same filter is a no-op. */
    assert_int_equal(wsb_hub_refilter(h, subs[0], key_filter("a", &filtered)), 0);
    assert_int_equal(wsb_hub_refilter(h, subs[0], key_filter("c", &filtered)), 1);
    size_t before = rec.got[0];
    struct wsb_msg *c = msg("c", 2);
    wsb_hub_message(h, c);
    assert_int_equal(rec.got[0], before + 1);
    assert_int_equal(m.frames_encoded, 2);
    /* The last subscriber of b leaves its group when moved: the group goes away. */
    for (uint32_t i = 4; i < 7; i++)
        assert_int_equal(wsb_hub_refilter(h, subs[i], NULL), 1);
    assert_int_equal(wsb_hub_groups(h, "orders", 6, 7), 3); /* a, c, unfiltered */
    assert_int_equal(m.filter_groups, 2);

    for (uint32_t i = 0; i < NSUBS; i++)
        wsb_hub_detach(h, subs[i]);
    assert_int_equal(wsb_hub_channels(h), 0);
    assert_int_equal(m.filter_groups, 0);
    wsb_msg_unref(a);
    wsb_msg_unref(z);
    wsb_msg_unref(c);
    wsb_hub_free(h);
}

static void test_free_with_groups(void **state)
{
    (void)state;
    struct wsb_loop_metrics m;
    memset(&m, 0, sizeof(m));
    struct wsb_hub *h = wsb_hub_new(&cbs, &m);
    bool active;
    char *pos;
    struct wsb_hub_sub *s =
        wsb_hub_attach(h, "x", 1, 9, key_filter("k", NULL), NULL, 0, &active, &pos);
    assert_non_null(s);
    wsb_hub_failed(h, 9, "unavailable", "gone"); /* frees the subscription and its group */
    assert_int_equal(m.filter_groups, 0);
    wsb_hub_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups_share_frames),
        cmocka_unit_test(test_free_with_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
