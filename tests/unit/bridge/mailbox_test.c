/* Unit tests for bridge/mailbox.c: order, and what the hand-off gate may hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include <event2/event.h>

#include "bridge/mailbox.h"

struct seen {
    bool open; /* what the gate answers */
    int n;
    enum wsb_mail_type type[32];
    uint64_t id[32];
};

static void record(void *ctx, struct wsb_mail *m)
{
    struct seen *s = ctx;
    if (s->n < 32) {
        s->type[s->n] = m->type;
        s->id[s->n] = m->id;
        s->n++;
    }
    wsb_mail_free(m);
}

static struct seen *gate_ctx;

static bool gate(void *ctx)
{
    (void)ctx;
    return gate_ctx->open;
}

static void post(struct wsb_mailbox *mb, enum wsb_mail_type type, uint64_t id)
{
    struct wsb_mail *m = wsb_mail_new(type, id, NULL, NULL, NULL, true);
    assert_non_null(m);
    assert_int_equal(wsb_mailbox_post(mb, m), 0);
}

static void run(struct event_base *base)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static void test_records_in_order_when_open(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct seen s = {.open = true};
    gate_ctx = &s;
    struct wsb_mailbox *mb = wsb_mailbox_new(base, record, &s);
    wsb_mailbox_set_gate(mb, gate);
    post(mb, WSB_MAIL_MESSAGE, 1);
    post(mb, WSB_MAIL_PUBLISH_DONE, 2);
    post(mb, WSB_MAIL_MESSAGE, 3);
    assert_int_equal(wsb_mailbox_depth(mb), 3);
    run(base);
    /* Records in their order; mails the gate never holds are handled first. */
    assert_int_equal(s.n, 3);
    assert_int_equal(s.id[0], 2);
    assert_int_equal(s.id[1], 1);
    assert_int_equal(s.id[2], 3);
    assert_int_equal(wsb_mailbox_depth(mb), 0);
    wsb_mailbox_free(mb);
    event_base_free(base);
}

/* While the gate holds the records for a client that is behind, a healthy client's publish
 * answer, a new source's start and a reload are not held with them; a source's failure
 * stays behind its records. */
static void test_gate_holds_records_only(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct seen s = {.open = false};
    gate_ctx = &s;
    struct wsb_mailbox *mb = wsb_mailbox_new(base, record, &s);
    wsb_mailbox_set_gate(mb, gate);
    post(mb, WSB_MAIL_MESSAGE, 1);
    post(mb, WSB_MAIL_PUBLISH_DONE, 2);
    run(base);
    assert_true(wsb_mailbox_held(mb));
    assert_int_equal(s.n, 1);
    assert_int_equal(s.type[0], WSB_MAIL_PUBLISH_DONE);

    /* Posted while held: the answers and the start wake the loop, the records wait. */
    post(mb, WSB_MAIL_MESSAGE, 3);
    post(mb, WSB_MAIL_FAILED, 4);
    post(mb, WSB_MAIL_STARTED, 5);
    post(mb, WSB_MAIL_PUBLISH_DONE, 6);
    post(mb, WSB_MAIL_RELOAD, 7);
    run(base);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.id[1], 5);
    assert_int_equal(s.id[2], 6);
    assert_int_equal(s.id[3], 7);
    assert_int_equal(wsb_mailbox_depth(mb), 3);

    /* The gate opens: the records and the failure, in their order. */
    s.open = true;
    wsb_mailbox_kick(mb);
    run(base);
    assert_false(wsb_mailbox_held(mb));
    assert_int_equal(s.n, 7);
    assert_int_equal(s.id[4], 1);
    assert_int_equal(s.id[5], 3);
    assert_int_equal(s.id[6], 4);
    assert_int_equal(wsb_mailbox_depth(mb), 0);

    /* Mails still waiting are freed with the mailbox. */
    s.open = false;
    post(mb, WSB_MAIL_MESSAGE, 8);
    run(base);
    post(mb, WSB_MAIL_MESSAGE, 9);
    post(mb, WSB_MAIL_STOP, 10);
    wsb_mailbox_free(mb);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_in_order_when_open),
        cmocka_unit_test(test_gate_holds_records_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
