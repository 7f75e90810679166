/* Unit tests for the session's side of the per-source hand-off gate (session.c
 * wsb_session_gate_hold, wsb_session_gate_sub): a session that holds counts each of its
 * subscriptions' sources once, a subscription taken or freed while it holds is counted or
 * uncounted, and a source nobody holds any more has its mails put aside handed over at once
 * (a kick of the loop's mailbox). A hand-built worker and sessions, a real mailbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "bridge/gate.h"
#include "bridge/mailbox.h"
#include "bridge/session.h"
#include "bridge/worker.h"

#define ALLOW 500000

static struct wsb_worker *gate_worker;
static int64_t now_us;

static bool source_open(void *ctx, uint64_t source)
{
    (void)ctx;
    return wsb_gate_source_open(&gate_worker->gate, source, now_us);
}

struct seen {
    int n;
    uint64_t src[16];
};

static void record(void *ctx, struct wsb_mail *m)
{
    struct seen *s = ctx;
    if (s->n < 16)
        s->src[s->n++] = m->id;
    wsb_mail_free(m);
}

static void post(struct wsb_mailbox *mb, uint64_t source)
{
    struct wsb_mail *m = wsb_mail_new(WSB_MAIL_MESSAGE, source, NULL, NULL, NULL, true);
    assert_non_null(m);
    wsb_mailbox_post(mb, m);
}

static void run(struct event_base *base)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* A session with `n` subscriptions to `sources` (room for one more). */
static struct wsb_session *session(struct wsb_worker *w, const uint64_t *sources, size_t n)
{
    struct wsb_session *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->w = w;
    s->cap = n + 1;
    s->subs = calloc(s->cap, sizeof(*s->subs));
    assert_non_null(s->subs);
    for (size_t i = 0; i < n; i++) {
        s->subs[i].used = true;
        s->subs[i].source_id = sources[i];
    }
    s->nsubs = n;
    wsb_gate_member_init(&s->gm, 0);
    return s;
}

static void free_session(struct wsb_session *s)
{
    free(s->subs);
    free(s);
}

static void test_session_holds_its_sources(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct wsb_worker *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    gate_worker = w;
    now_us = 0;
    struct seen seen = {0};
    w->mailbox = wsb_mailbox_new(base, record, &seen);
    assert_non_null(w->mailbox);
    wsb_mailbox_set_gate(w->mailbox, source_open);
    wsb_gate_init(&w->gate);
    wsb_gate_set_hold_cb(&w->gate, wsb_session_gate_hold, w);

    const uint64_t a_src[] = {1, 2}, b_src[] = {2};
    struct wsb_session *a = session(w, a_src, 2), *b = session(w, b_src, 1);

    /* a falls behind: sources 1 and 2 held, 3 goes on */
    wsb_gate_note(&w->gate, &a->gm, true, ALLOW, now_us);
    assert_true(a->subs[0].held && a->subs[1].held);
    post(w->mailbox, 1);
    post(w->mailbox, 2);
    post(w->mailbox, 3);
    run(base);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.src[0], 3);
    assert_int_equal(wsb_mailbox_held_sources(w->mailbox), 2);

    /* b (source 2) behind too; a subscribes to 4 while it holds: 4 is held for a */
    wsb_gate_note(&w->gate, &b->gm, true, ALLOW, now_us);
    a->subs[2].used = true;
    a->subs[2].source_id = 4;
    a->nsubs++;
    wsb_session_gate_sub(a, &a->subs[2], true);
    assert_true(a->subs[2].held);
    assert_false(wsb_gate_source_open(&w->gate, 4, now_us));

    /* a's subscription to 1 ends: nobody holds 1, its mail goes on at once */
    wsb_session_gate_sub(a, &a->subs[0], false);
    a->subs[0].used = false;
    assert_false(a->subs[0].held);
    run(base);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.src[1], 1);

    /* a catches up: 2 is still held by b, 4 opens */
    wsb_gate_note(&w->gate, &a->gm, false, ALLOW, now_us);
    assert_false(a->subs[1].held || a->subs[2].held);
    assert_true(wsb_gate_source_open(&w->gate, 4, now_us));
    run(base);
    assert_int_equal(seen.n, 2);

    /* b's allowance runs out (found at the 5 ms re-check, a kick): 2 goes on */
    now_us = ALLOW;
    wsb_mailbox_kick(w->mailbox);
    run(base);
    assert_int_equal(seen.n, 3);
    assert_int_equal(seen.src[2], 2);
    assert_false(wsb_mailbox_held(w->mailbox));
    assert_false(b->subs[0].held);
    assert_int_equal(w->gate.sources.count, 0);

    wsb_gate_leave(&w->gate, &b->gm);
    wsb_gate_leave(&w->gate, &a->gm);
    free_session(a);
    free_session(b);
    wsb_gate_cleanup(&w->gate);
    wsb_mailbox_free(w->mailbox);
    free(w);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_holds_its_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
