/* Tests for bridge/hub.c's filter groups: subscribers with equal resolved filters share one
 * group, each group's filter runs once per message, one frame per message and channel is
 * shared by every group that takes it, a record no group takes builds no frame, a refilter
 * moves a subscriber between groups, offsets advance for filtered records too, and keyed
 * groups are found through the key index (chains of one key) while the others are scanned;
 * records skipped or lost at the broker are a gap of their count for every active subscriber,
 * filtered or not. */
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
    char positions[64];  /* the last started() positions, "" for NULL */
    uint64_t gap[NSUBS]; /* skipped(): the counts owed */
    size_t lost_calls;   /* skipped() with lost true */
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
    snprintf(rec.positions, sizeof(rec.positions), "%s", positions ? positions : "");
    rec.started++;
}

static void failed(void *owner, uint32_t slot, const char *code, const char *message)
{
    (void)owner;
    (void)slot;
    (void)code;
    (void)message;
}

static void skipped(void *owner, uint32_t slot, uint64_t count, bool lost)
{
    (void)owner;
    rec.gap[slot] += count;
    rec.lost_calls += lost;
}

static const struct wsb_hub_cbs cbs = {
    .deliver = deliver, .started = started, .failed = failed, .skipped = skipped};

/* Each test's hub (its state), made by setup with the loop metrics `m` and the records seen
 * reset; the filters' counter `filtered` is the tests' own. */
static struct wsb_loop_metrics m;
static atomic_uint_fast64_t filtered;

static int setup(void **state)
{
    memset(&rec, 0, sizeof(rec));
    memset(&m, 0, sizeof(m));
    filtered = 0;
    *state = wsb_hub_new(&cbs, &m);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    wsb_hub_free(*state);
    return 0;
}

static struct wsb_filter *spec_filter(const char *text, atomic_uint_fast64_t *counter)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    char path[64], err[128];
    struct wsb_filter_spec *s =
        wsb_filter_spec_parse(v, WSB_FILTER_LITERAL, 0, path, sizeof(path), err, sizeof(err));
    json_decref(v);
    assert_non_null(s);
    struct wsb_filter *f = wsb_filter_resolve(s, NULL, NULL, counter);
    wsb_filter_spec_free(s);
    return f;
}

static struct wsb_filter *key_filter(const char *key, atomic_uint_fast64_t *counter)
{
    char text[128];
    snprintf(text, sizeof(text), "{\"key\": \"%s\"}", key);
    return spec_filter(text, counter);
}

static struct wsb_msg *msg(const char *key, int64_t offset)
{
    return wsb_msg_new(7, 0, offset, -1, key, strlen(key), "{}", 2, NULL, 0);
}

static void test_groups_share_frames(void **state)
{
    struct wsb_hub *h = *state;
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
}

static struct wsb_msg *hmsg(const char *key, const char *kind, int64_t offset)
{
    struct wsb_header h = {"kind", (const uint8_t *)kind, strlen(kind)};
    return wsb_msg_new(7, 0, offset, -1, key, strlen(key), "{}", 2, &h, 1);
}

/* Keyed groups (one alternative with a key) are found by the record's key, several under one
 * key (different headers) in a chain; the other groups are scanned. */
static void test_key_index_and_scan(void **state)
{
    struct wsb_hub *h = *state;
    static const char *const specs[] = {
        "{\"key\": \"a\"}",                                      /* 0 keyed */
        "{\"key\": \"a\", \"headers\": {\"kind\": \"paid\"}}",   /* 1 keyed, chained */
        "{\"key\": \"a\", \"headers\": {\"kind\": \"refund\"}}", /* 2 keyed, chained */
        "[{\"key\": \"b\"}, {\"key\": \"a\"}]",                  /* 3 scanned (OR) */
        "{\"headers\": {\"kind\": \"paid\"}}",                   /* 4 scanned */
        "{\"key\": \"b\"}",                                      /* 5 keyed */
    };
    struct wsb_hub_sub *subs[6];
    bool active;
    char *pos;
    for (uint32_t i = 0; i < 6; i++) {
        subs[i] = wsb_hub_attach(h, "orders", 6, 7, spec_filter(specs[i], &filtered), NULL, i,
                                 &active, &pos);
        assert_non_null(subs[i]);
    }
    assert_int_equal(wsb_hub_groups(h, "orders", 6, 7), 6);
    wsb_hub_started(h, 7, NULL);
    struct wsb_msg *ap = hmsg("a", "paid", 0);
    wsb_hub_message(h, ap);
    static const size_t want1[6] = {1, 1, 0, 1, 1, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(rec.got[i], want1[i]);
    assert_int_equal(m.frames_encoded, 1);
    assert_int_equal(filtered, 2); /* 2 (refund) and 5 (b) */
    /* The chain's middle leaves; the rest of the chain still gets its records. */
    wsb_hub_detach(h, subs[1]);
    subs[1] = NULL;
    struct wsb_msg *ar = hmsg("a", "refund", 1);
    wsb_hub_message(h, ar);
    static const size_t want2[6] = {2, 1, 1, 2, 1, 0};
    for (int i = 0; i < 6; i++)
        assert_int_equal(rec.got[i], want2[i]);
    /* The chain's head leaves. */
    wsb_hub_detach(h, subs[0]);
    subs[0] = NULL;
    wsb_hub_message(h, ar);
    assert_int_equal(rec.got[2], 2);
    /* A record with no key: only scanned groups can take it. */
    struct wsb_msg *none = wsb_msg_new(7, 0, 2, -1, NULL, 0, "{}", 2, NULL, 0);
    size_t frames = m.frames_encoded;
    wsb_hub_message(h, none);
    assert_int_equal(m.frames_encoded, frames);
    for (uint32_t i = 0; i < 6; i++)
        wsb_hub_detach(h, subs[i]);
    assert_int_equal(m.filter_groups, 0);
    wsb_msg_unref(ap);
    wsb_msg_unref(ar);
    wsb_msg_unref(none);
}

static void test_free_with_groups(void **state)
{
    struct wsb_hub *h = *state;
    bool active;
    char *pos;
    struct wsb_hub_sub *s =
        wsb_hub_attach(h, "x", 1, 9, key_filter("k", NULL), NULL, 0, &active, &pos);
    assert_non_null(s);
    wsb_hub_failed(h, 9, "unavailable", "gone"); /* frees the subscription and its group */
    assert_int_equal(m.filter_groups, 0);
}

/* A loop that was not fed a shared source (bridge/sources.h): subscribers attached after
 * wsb_hub_await stay pending through records already posted and through a STARTED, and the
 * last awaited RESYNC activates them with its positions. */
static void test_resync(void **state)
{
    struct wsb_hub *h = *state;
    bool active;
    char *pos;
    struct wsb_hub_sub *a = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 0, &active, &pos);
    assert_false(active);
    wsb_hub_started(h, 7, "{\"0\":0}");
    assert_int_equal(rec.started, 1);
    struct wsb_msg *m0 = msg("k", 0), *m2 = msg("k", 2), *m9 = msg("k", 9);
    wsb_hub_message(h, m0);
    assert_int_equal(m.records_handed, 1);

    wsb_hub_await(h, 7);
    struct wsb_hub_sub *b = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 1, &active, &pos);
    assert_false(active); /* the source runs, but where this loop's records resume is to come */
    assert_null(pos);
    wsb_hub_message(h, m2); /* posted before the resync: not for b */
    assert_int_equal(rec.got[0], 2);
    assert_int_equal(rec.got[1], 0);
    wsb_hub_await(h, 7); /* a second resync on its way: only the last one tells */
    struct wsb_hub_sub *c = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 2, &active, &pos);
    assert_false(active);
    wsb_hub_resync(h, 7, "{\"0\":5}");
    assert_int_equal(rec.started, 1);
    wsb_hub_resync(h, 7, "{\"0\":9}");
    assert_int_equal(rec.started, 3);
    assert_string_equal(rec.positions, "{\"0\":9}");
    wsb_hub_message(h, m9);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(rec.got[i], i == 0 ? 3 : 1);
    /* Without a resync pending, an attach is active at once, after the last record. */
    struct wsb_hub_sub *d = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 3, &active, &pos);
    assert_true(active);
    assert_string_equal(pos, "{\"0\":10}");
    free(pos);
    wsb_hub_resync(h, 7, "{\"0\":99}"); /* none awaited: ignored */
    wsb_hub_resync(h, 8, "{\"0\":1}");  /* a source this loop does not know */

    /* A STARTED that comes while a resync is awaited does not activate; the resync does. */
    wsb_hub_await(h, 11);
    struct wsb_hub_sub *e = wsb_hub_attach(h, "orders", 6, 11, NULL, NULL, 4, &active, &pos);
    assert_false(active);
    wsb_hub_started(h, 11, "{\"0\":0}");
    assert_int_equal(rec.started, 3);
    wsb_hub_resync(h, 11, "{\"0\":3,\"1\":4}");
    assert_int_equal(rec.started, 4);
    assert_string_equal(rec.positions, "{\"0\":3,\"1\":4}");

    struct wsb_hub_sub *all[] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++)
        wsb_hub_detach(h, all[i]);
    wsb_msg_unref(m0);
    wsb_msg_unref(m2);
    wsb_msg_unref(m9);
}

/* WSB_MSG_LOST (records the broker no longer had) and WSB_MSG_SKIPPED (one record that could
 * not be decoded): every active subscriber, filtered or not, is owed a gap of the count, no
 * frame is built, a pending one gets nothing, and the position moves past the marker. */
static void test_lost_and_skipped(void **state)
{
    struct wsb_hub *h = *state;
    bool active;
    char *pos;
    struct wsb_hub_sub *a =
        wsb_hub_attach(h, "orders", 6, 7, key_filter("a", &filtered), NULL, 0, &active, &pos);
    struct wsb_hub_sub *b = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 1, &active, &pos);
    wsb_hub_started(h, 7, "{\"0\":0}");
    struct wsb_hub_sub *p = wsb_hub_attach(h, "orders", 6, 8, NULL, NULL, 2, &active, &pos);
    assert_false(active);

    struct wsb_msg *lost = wsb_msg_new(7, 0, 141, -1, NULL, 0, NULL, 0, NULL, 0);
    lost->flags |= WSB_MSG_LOST;
    lost->lost = 42;
    wsb_hub_message(h, lost);
    assert_int_equal(rec.gap[0], 42);
    assert_int_equal(rec.gap[1], 42);
    assert_int_equal(rec.gap[2], 0);
    assert_int_equal(rec.lost_calls, 2);
    assert_int_equal(m.frames_encoded, 0);
    struct wsb_hub_sub *c = wsb_hub_attach(h, "orders", 6, 7, NULL, NULL, 3, &active, &pos);
    assert_true(active);
    assert_string_equal(pos, "{\"0\":142}");
    free(pos);

    struct wsb_msg *skip = wsb_msg_new(7, 0, 142, -1, NULL, 0, NULL, 0, NULL, 0);
    skip->flags |= WSB_MSG_SKIPPED;
    wsb_hub_message(h, skip);
    assert_int_equal(rec.gap[0], 43);
    assert_int_equal(rec.gap[3], 1);
    assert_int_equal(rec.lost_calls, 2);

    struct wsb_msg *next = msg("b", 143);
    wsb_hub_message(h, next);
    assert_int_equal(rec.got[0], 0); /* filtered out: the gap was still owed */
    assert_int_equal(rec.got[1], 1);

    struct wsb_hub_sub *all[] = {a, b, p, c};
    for (size_t i = 0; i < 4; i++)
        wsb_hub_detach(h, all[i]);
    wsb_msg_unref(lost);
    wsb_msg_unref(skip);
    wsb_msg_unref(next);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_groups_share_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_index_and_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_and_skipped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
