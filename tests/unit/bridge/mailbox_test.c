/* Unit tests for bridge/mailbox.c: order, and what the hand-off gate may hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "bridge/mailbox.h"
#include "connectors/connector.h"

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

static bool gate(void *ctx, uint64_t source)
{
    (void)ctx;
    (void)source;
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

/* A burst's records for one loop in one block of mails: handed over in order with a held
 * gate in between, each carrying its message; the block goes with its last mail (ASan's
 * leak check in the sanitizer pass), and a block sealed empty at once. */
static void test_mail_block(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct seen s = {.open = false};
    gate_ctx = &s;
    struct wsb_mailbox *mb = wsb_mailbox_new(base, record, &s);
    wsb_mailbox_set_gate(mb, gate);
    struct wsb_mail_block *b = wsb_mail_block_new(4);
    assert_non_null(b);
    struct wsb_mail *head = NULL, *tail = NULL;
    for (uint64_t i = 1; i <= 3; i++) {
        struct wsb_msg *m = wsb_msg_new(7, 0, (int64_t)i, -1, NULL, 0, "{}", 2, NULL, 0);
        struct wsb_mail *mail = wsb_mail_block_take(b, i, m);
        assert_non_null(mail);
        if (tail)
            tail->next = mail;
        else
            head = mail;
        tail = mail;
    }
    wsb_mail_block_seal(b);
    assert_int_equal(wsb_mailbox_post_list(mb, head, tail, 3), 0);
    run(base);
    assert_int_equal(s.n, 0); /* held by the gate */
    s.open = true;
    wsb_mailbox_kick(mb);
    run(base);
    assert_int_equal(s.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.type[i], WSB_MAIL_MESSAGE);
        assert_int_equal(s.id[i], (uint64_t)i + 1);
    }
    struct wsb_mail_block *full = wsb_mail_block_new(1);
    struct wsb_mail *only = wsb_mail_block_take(full, 9, NULL);
    assert_non_null(only);
    assert_null(wsb_mail_block_take(full, 10, NULL)); /* full */
    wsb_mail_block_seal(full);
    wsb_mail_free(only);                        /* the last of its block: frees it */
    wsb_mail_block_seal(wsb_mail_block_new(2)); /* none taken: freed here */
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
    post(mb, WSB_MAIL_RESYNC, 11); /* where a loop's records resume: in order with them */
    post(mb, WSB_MAIL_FAILED, 4);
    post(mb, WSB_MAIL_STARTED, 5);
    post(mb, WSB_MAIL_PUBLISH_DONE, 6);
    post(mb, WSB_MAIL_RELOAD, 7);
    run(base);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.id[1], 5);
    assert_int_equal(s.id[2], 6);
    assert_int_equal(s.id[3], 7);
    assert_int_equal(wsb_mailbox_depth(mb), 4);

    /* The gate opens: the records, the resync and the failure, in their order. */
    s.open = true;
    wsb_mailbox_kick(mb);
    run(base);
    assert_false(wsb_mailbox_held(mb));
    assert_int_equal(s.n, 8);
    assert_int_equal(s.id[4], 1);
    assert_int_equal(s.id[5], 3);
    assert_int_equal(s.id[6], 11);
    assert_int_equal(s.id[7], 4);
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

/* Producers on other threads, a loop whose event base has no lock (as the workers' bases,
 * loop.c): every mail arrives, each producer's in its order, and no post touches the base
 * from the producer's thread (under TSan, the unit pass of scripts/test.sh, such a call is
 * a reported race). Single posts and bursts (wsb_mailbox_post_list) mixed. */
#define PRODUCERS 3
#define PER_PRODUCER 20000

struct feed {
    struct event_base *base;
    uint64_t next[PRODUCERS]; /* next sequence number expected from each producer */
    uint64_t total;
    bool out_of_order;
};

static void take(void *ctx, struct wsb_mail *m)
{
    struct feed *f = ctx;
    unsigned p = (unsigned)(m->id >> 32);
    uint64_t seq = m->id & 0xffffffffu;
    if (p >= PRODUCERS || seq != f->next[p])
        f->out_of_order = true;
    else
        f->next[p]++;
    if (++f->total == (uint64_t)PRODUCERS * PER_PRODUCER)
        event_base_loopexit(f->base, NULL);
    wsb_mail_free(m);
}

struct producer {
    struct wsb_mailbox *mb;
    unsigned idx;
};

static void *produce(void *arg)
{
    struct producer *pr = arg;
    uint64_t seq = 0;
    while (seq < PER_PRODUCER) {
        uint64_t burst = seq % 7 == 3 ? 5 : 1;
        if (seq + burst > PER_PRODUCER)
            burst = PER_PRODUCER - seq;
        struct wsb_mail *head = NULL, *tail = NULL;
        for (uint64_t i = 0; i < burst; i++, seq++) {
            struct wsb_mail *m = wsb_mail_new(WSB_MAIL_MESSAGE, (uint64_t)pr->idx << 32 | seq, NULL,
                                              NULL, NULL, true);
            if (!m)
                abort();
            if (tail)
                tail->next = m;
            else
                head = m;
            tail = m;
        }
        if (burst == 1)
            wsb_mailbox_post(pr->mb, head);
        else
            wsb_mailbox_post_list(pr->mb, head, tail, burst);
    }
    return NULL;
}

/* libevent is not built with TSan, so a producer calling it on a lockless base would race
 * unseen: the test's own event_active (found before libevent's) notes any call made off the
 * loop's thread while the producers run, then does libevent's work. */
static pthread_t loop_thread;
static atomic_bool watching, foreign_call; /* the producers read and write them */

void event_active(struct event *ev, int res, short ncalls)
{
    static void (*real)(struct event *, int, short);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "event_active");
    if (watching && !pthread_equal(pthread_self(), loop_thread))
        foreign_call = true;
    real(ev, res, ncalls);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopexit(arg, NULL);
}

/* Long bursts: the loop hands at most a batch per wake-up and puts the rest back in front of
 * what was posted since, and a gate that closes mid-burst holds the rest; order never
 * changes and nothing is lost. */
struct ordered {
    uint64_t last;
    int n, close_at;
    bool open;
};
static struct ordered *ord_ctx;

static void check_order(void *ctx, struct wsb_mail *m)
{
    struct ordered *o = ctx;
    assert_true(m->id == o->last + 1);
    o->last = m->id;
    if (++o->n == o->close_at)
        o->open = false;
    wsb_mail_free(m);
}

static bool ord_gate(void *ctx, uint64_t source)
{
    (void)ctx;
    (void)source;
    return ord_ctx->open;
}

static void test_long_bursts_keep_order(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct ordered o = {.open = true, .close_at = 700};
    ord_ctx = &o;
    struct wsb_mailbox *mb = wsb_mailbox_new(base, check_order, &o);
    wsb_mailbox_set_gate(mb, ord_gate);
    uint64_t id = 0;
    for (int i = 0; i < 600; i++)
        post(mb, WSB_MAIL_MESSAGE, ++id);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(o.n, 256); /* one batch, the rest put back */
    for (int i = 0; i < 300; i++)
        post(mb, WSB_MAIL_MESSAGE, ++id); /* behind the rest */
    run(base);
    assert_int_equal(o.n, 700); /* the gate closed at 700 */
    assert_true(wsb_mailbox_held(mb));
    for (int i = 0; i < 10; i++)
        post(mb, WSB_MAIL_MESSAGE, ++id);
    assert_int_equal(wsb_mailbox_depth(mb), id - 700);
    o.open = true;
    wsb_mailbox_kick(mb);
    for (int i = 0; i < 8; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(o.last, id);
    assert_int_equal(wsb_mailbox_depth(mb), 0);
    wsb_mailbox_free(mb);
    event_base_free(base);
}

/* Per source: a client behind on source 1 holds source 1's mails only. Source 2's records go
 * on; source 1's records, its resync and its failure are put aside in their order and handed
 * over first when the gate opens for it, before its mails posted meanwhile. */
static uint64_t held_source; /* the source the gate holds (0: none) */

static bool source_gate(void *ctx, uint64_t source)
{
    (void)ctx;
    return source != held_source;
}

struct tagged {
    int n;
    uint64_t src[64];
    enum wsb_mail_type type[64];
    int seq[64]; /* from the mail's text */
};

static void record_tagged(void *ctx, struct wsb_mail *m)
{
    struct tagged *t = ctx;
    if (t->n < 64) {
        t->src[t->n] = m->id;
        t->type[t->n] = m->type;
        t->seq[t->n] = m->text ? atoi(m->text) : -1;
        t->n++;
    }
    wsb_mail_free(m);
}

static void post_seq(struct wsb_mailbox *mb, enum wsb_mail_type type, uint64_t src, int seq)
{
    char text[16];
    snprintf(text, sizeof(text), "%d", seq);
    struct wsb_mail *m = wsb_mail_new(type, src, NULL, text, NULL, true);
    assert_non_null(m);
    assert_int_equal(wsb_mailbox_post(mb, m), 0);
}

static void test_gate_holds_only_its_source(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct tagged t = {0};
    struct wsb_mailbox *mb = wsb_mailbox_new(base, record_tagged, &t);
    wsb_mailbox_set_gate(mb, source_gate);
    held_source = 1;
    post_seq(mb, WSB_MAIL_MESSAGE, 1, 1);
    post_seq(mb, WSB_MAIL_MESSAGE, 2, 1);
    post_seq(mb, WSB_MAIL_MESSAGE, 1, 2);
    post_seq(mb, WSB_MAIL_RESYNC, 1, 3);
    post_seq(mb, WSB_MAIL_MESSAGE, 2, 2);
    post_seq(mb, WSB_MAIL_MESSAGE, 1, 4);
    post_seq(mb, WSB_MAIL_FAILED, 1, 5);
    post_seq(mb, WSB_MAIL_MESSAGE, 2, 3);
    run(base);
    /* source 2 went on, in its order */
    assert_int_equal(t.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t.src[i], 2);
        assert_int_equal(t.seq[i], i + 1);
    }
    assert_true(wsb_mailbox_held(mb));
    assert_int_equal(wsb_mailbox_held_sources(mb), 1);
    assert_int_equal(wsb_mailbox_depth(mb), 5);

    /* Still held: a kick hands nothing of source 1 over; more of source 2 goes on. */
    wsb_mailbox_kick(mb);
    post_seq(mb, WSB_MAIL_MESSAGE, 2, 4);
    run(base);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.src[3], 2);

    /* The gate opens for source 1 while one more of its records is posted: what was put
     * aside goes first, then the new one, all in order. */
    held_source = 0;
    post_seq(mb, WSB_MAIL_MESSAGE, 1, 6);
    wsb_mailbox_kick(mb);
    run(base);
    assert_false(wsb_mailbox_held(mb));
    assert_int_equal(t.n, 10);
    const enum wsb_mail_type types[] = {WSB_MAIL_MESSAGE, WSB_MAIL_MESSAGE, WSB_MAIL_RESYNC,
                                        WSB_MAIL_MESSAGE, WSB_MAIL_FAILED,  WSB_MAIL_MESSAGE};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(t.src[4 + i], 1);
        assert_int_equal(t.seq[4 + i], i + 1);
        assert_int_equal(t.type[4 + i], types[i]);
    }
    assert_int_equal(wsb_mailbox_depth(mb), 0);

    /* Put aside when the mailbox is freed: freed with it (ASan's leak check). */
    held_source = 2;
    post_seq(mb, WSB_MAIL_MESSAGE, 2, 5);
    post_seq(mb, WSB_MAIL_MESSAGE, 3, 1);
    run(base);
    assert_int_equal(t.n, 11);
    assert_int_equal(t.src[10], 3);
    wsb_mailbox_free(mb);
    event_base_free(base);
}

/* Many records of three sources, interleaved, with the gate closing and opening for the
 * first two at random (a seeded sequence) between wake-ups and while a side is being handed
 * over: every record arrives once, in its source's order; source 3 is never put aside. */
#define SOURCES 3
#define PER_SOURCE 5000

struct multi {
    int next[SOURCES + 1];
    int total;
    bool closed[SOURCES + 1];
    unsigned rnd;
    bool src3_held;
};
static struct multi *multi_ctx;

static unsigned next_rand(struct multi *m)
{
    m->rnd = m->rnd * 1103515245u + 12345u;
    return (m->rnd >> 16) & 0x7fff;
}

static bool multi_gate(void *ctx, uint64_t source)
{
    (void)ctx;
    if (multi_ctx->closed[source] && source == 3)
        multi_ctx->src3_held = true;
    return !multi_ctx->closed[source];
}

static void multi_take(void *ctx, struct wsb_mail *m)
{
    struct multi *mu = ctx;
    int seq = atoi(m->text);
    assert_int_equal(seq, mu->next[m->id]);
    mu->next[m->id]++;
    mu->total++;
    if (next_rand(mu) % 97 == 0) /* the gate turns while a batch or a side is handed over */
        mu->closed[1 + next_rand(mu) % 2] ^= true;
    wsb_mail_free(m);
}

static void test_sources_keep_their_order(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct multi mu = {.rnd = 42};
    multi_ctx = &mu;
    struct wsb_mailbox *mb = wsb_mailbox_new(base, multi_take, &mu);
    wsb_mailbox_set_gate(mb, multi_gate);
    int sent[SOURCES + 1] = {0};
    int held_seen = 0;
    while (sent[1] + sent[2] + sent[3] < SOURCES * PER_SOURCE) {
        for (int k = 0; k < 50; k++) {
            uint64_t src = 1 + next_rand(&mu) % SOURCES;
            if (sent[src] < PER_SOURCE)
                post_seq(mb, WSB_MAIL_MESSAGE, src, sent[src]++);
        }
        if (next_rand(&mu) % 3 == 0)
            mu.closed[1 + next_rand(&mu) % 2] ^= true;
        if (next_rand(&mu) % 2 == 0)
            wsb_mailbox_kick(mb);
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        held_seen += wsb_mailbox_held(mb);
    }
    assert_true(held_seen > 10); /* sides were put aside and handed over many times */
    mu.closed[1] = mu.closed[2] = false;
    for (int i = 0; i < 200 && mu.total < SOURCES * PER_SOURCE; i++) {
        wsb_mailbox_kick(mb);
        event_base_loop(base, EVLOOP_NONBLOCK);
        mu.closed[1] = mu.closed[2] = false; /* multi_take may have closed one again */
    }
    assert_int_equal(mu.total, SOURCES * PER_SOURCE);
    for (int s = 1; s <= SOURCES; s++)
        assert_int_equal(mu.next[s], PER_SOURCE);
    assert_false(mu.src3_held);
    assert_false(wsb_mailbox_held(mb));
    assert_int_equal(wsb_mailbox_depth(mb), 0);
    wsb_mailbox_free(mb);
    event_base_free(base);
}

static void test_producer_threads_and_a_lockless_base(void **state)
{
    (void)state;
    struct event_config *ec = event_config_new();
    assert_non_null(ec);
    assert_int_equal(event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK), 0);
    struct feed f = {.base = event_base_new_with_config(ec)};
    event_config_free(ec);
    assert_non_null(f.base);
    struct wsb_mailbox *mb = wsb_mailbox_new(f.base, take, &f);
    assert_non_null(mb);
    struct event *timeout = evtimer_new(f.base, on_timeout, f.base);
    struct timeval tv = {30, 0}; /* a lost wake-up ends the loop here, with mails missing */
    evtimer_add(timeout, &tv);

    loop_thread = pthread_self();
    watching = true;
    pthread_t th[PRODUCERS];
    struct producer pr[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pr[i] = (struct producer){mb, i};
        assert_int_equal(pthread_create(&th[i], NULL, produce, &pr[i]), 0);
    }
    event_base_dispatch(f.base);
    for (unsigned i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);

    watching = false;
    assert_false(foreign_call);
    assert_false(f.out_of_order);
    assert_int_equal(f.total, (uint64_t)PRODUCERS * PER_PRODUCER);
    assert_int_equal(wsb_mailbox_depth(mb), 0);
    event_free(timeout);
    wsb_mailbox_free(mb);
    event_base_free(f.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_in_order_when_open),
        cmocka_unit_test(test_gate_holds_records_only),
        cmocka_unit_test(test_gate_holds_only_its_source),
        cmocka_unit_test(test_sources_keep_their_order),
        cmocka_unit_test(test_mail_block),
        cmocka_unit_test(test_long_bursts_keep_order),
        cmocka_unit_test(test_producer_threads_and_a_lockless_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
