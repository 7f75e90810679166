/* Kafka consumer groups for `delivery: ack` sources. See kafka_group.h and docs/kafka.md. */
#include "connectors/kafka_group.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/kafka_reset.h"
#include "util/log.h"

#define POLL_BATCH 500          /* records per loop turn */
#define TICK_MS 100             /* loop wake-up without events: commits, lag */
#define STATS_INTERVAL_MS "100" /* commits are sent right after a statistics tick */
#define REVOKE_WAIT_MS 5000     /* a revoked partition waits this long for outstanding acks */
#define PAUSE_SLACK 500         /* records that may wait beyond the members' room */
#define DLQ_REASON_HEADER "x-wsbridge-reason"
#define MAX_STACK_HEADERS 32

struct rec {
    struct rec *next;  /* the partition's records, in offset order */
    struct rec *mnext; /* the owner's outstanding records */
    struct part *p;
    struct wsb_msg *msg; /* source_id 0: copied for each delivery */
    uint64_t token;      /* of the current delivery; 0 while queued */
    struct member *owner;
    bool acked;
    bool delivered; /* handed out before: the next hand-out is a redelivery */
};

struct part {
    struct part *next;
    int32_t partition;
    struct rec *head, *tail;
    size_t nqueued; /* records waiting for a member */
    bool paused;
    bool revoking;
    int64_t committed; /* the offset last committed (or -1) */
    int64_t pending;   /* the offset to commit next (-1: nothing new) */
    int64_t seen;      /* the offset after the last record taken (-1: none yet) */
};

struct member {
    struct member *next;
    uint64_t id;
    uint32_t max_unacked;
    uint32_t out;
    struct rec *outstanding;
    char *dlq; /* dead_letter_topic or NULL */
};

struct group {
    struct group *next;
    struct wsb_kgroups *gs;
    char *id;
    char *topic;
    struct wsb_cmdq *q; /* and the group's thread */
    atomic_bool done;
    int nmembers; /* the connector thread's count (members subscribed through it) */
    uint64_t *ids;
    int nids, capids;

    struct wsb_kresets *resets; /* offset resets noted by on_group_log (kafka_reset.h) */

    /* Group-thread owned. */
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    rd_kafka_t *producer;
    struct member *members, *rr;
    struct part *parts;
    uint64_t next_token;
    bool stopping;
    uint32_t stop_timeout_ms;
    bool steady;     /* the last statistics showed the group stable (join state steady) */
    bool commit_due; /* a statistics tick came: commit now if steady */
    int64_t lag;     /* this group's share of st->lag */
};

struct wsb_kgroups {
    char name[64];
    rd_kafka_conf_t *consumer_conf, *producer_conf;
    struct wsb_sink sink;
    atomic_uint_fast64_t *messages_in;
    struct group *groups; /* connector thread */
    struct group *dying;  /* stopping, joined when done */
    pthread_mutex_t lock; /* guards the groups lists for stats */
    struct wsb_kgroups_stats *st;
    wsb_kgroups_log_cb log;
    int log_level;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Records and members (group thread) ---------------------------------------------- */

static struct part *part_find(struct group *g, int32_t partition)
{
    for (struct part *p = g->parts; p; p = p->next)
        if (p->partition == partition)
            return p;
    return NULL;
}

static struct member *member_find(struct group *g, uint64_t id)
{
    for (struct member *m = g->members; m; m = m->next)
        if (m->id == id)
            return m;
    return NULL;
}

static void rec_free(struct rec *r)
{
    wsb_msg_unref(r->msg);
    free(r);
}

/* Takes r off its owner's outstanding list (it stays in its partition). */
static void rec_disown(struct group *g, struct rec *r)
{
    struct member *m = r->owner;
    if (!m)
        return;
    for (struct rec **pp = &m->outstanding; *pp; pp = &(*pp)->mnext) {
        if (*pp == r) {
            *pp = r->mnext;
            break;
        }
    }
    r->mnext = NULL;
    r->owner = NULL;
    r->token = 0;
    m->out--;
    atomic_fetch_sub(&g->gs->st->unacked, 1);
}

/* Back to the queue of its partition (it is handed out again unless the partition goes). */
static void rec_requeue(struct group *g, struct rec *r)
{
    rec_disown(g, r);
    r->p->nqueued++;
}

/* Pops the acked run at the head of p; the offset after it becomes p->pending. */
static void part_advance(struct part *p)
{
    while (p->head && p->head->acked) {
        struct rec *r = p->head;
        p->head = r->next;
        if (!p->head)
            p->tail = NULL;
        p->pending = r->msg->offset + 1;
        rec_free(r);
    }
}

static void part_free_records(struct group *g, struct part *p)
{
    while (p->head) {
        struct rec *r = p->head;
        p->head = r->next;
        rec_disown(g, r);
        rec_free(r);
    }
    p->tail = NULL;
    p->nqueued = 0;
}

/* ---- Commits --------------------------------------------------------------------------- */

static void commit_failed(struct group *g, const rd_kafka_topic_partition_list_t *offsets);

/* Commits every partition's contiguous acked run (async unless `sync`). */
static void commit(struct group *g, bool sync)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    for (struct part *p = g->parts; p; p = p->next) {
        if (p->pending < 0 || p->pending == p->committed)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(l, g->topic, p->partition)->offset = p->pending;
        p->committed = p->pending;
        p->pending = -1;
    }
    if (!l)
        return;
    rd_kafka_resp_err_t e = rd_kafka_commit(g->rk, l, sync ? 0 : 1);
    if (e) { /* the commit callback counts the successes (sync ones too) */
        commit_failed(g, l);
        wsb_log(WSB_LOG_WARN, "kafka group commit failed", WSB_LSTR("connector", g->gs->name),
                WSB_LSTR("group", g->id), WSB_LSTR("reason", rd_kafka_err2str(e)));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* A commit that failed (a rebalance in progress, say) is tried again with the next one. */
static void commit_failed(struct group *g, const rd_kafka_topic_partition_list_t *offsets)
{
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        struct part *p = part_find(g, offsets->elems[i].partition);
        if (!p || p->committed != offsets->elems[i].offset)
            continue;
        p->committed = -1;
        if (p->pending < 0)
            p->pending = offsets->elems[i].offset;
    }
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    struct group *g = opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&g->gs->st->commits, 1);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    if (err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
        err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION)
        g->steady = false; /* no more commits until the statistics show it stable again */
    commit_failed(g, offsets);
    wsb_log(WSB_LOG_DEBUG, "kafka group commit failed", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LSTR("reason", rd_kafka_err2str(err)));
}

/* ---- Dispatch and flow control -------------------------------------------------------- */

/* The next member with room after the last one served, or NULL. */
static struct member *pick(struct group *g)
{
    struct member *start = g->rr && g->rr->next ? g->rr->next : g->members;
    struct member *m = start;
    if (!m)
        return NULL;
    do {
        if (m->out < m->max_unacked) {
            g->rr = m;
            return m;
        }
        m = m->next ? m->next : g->members;
    } while (m != start);
    return NULL;
}

static bool hand_out(struct group *g, struct rec *r, struct member *m)
{
    const struct wsb_msg *o = r->msg;
    struct wsb_msg *d =
        wsb_msg_new(m->id, o->partition, o->offset, o->timestamp_ms, o->key, o->key_len, o->payload,
                    o->payload_len, o->headers, o->nheaders);
    if (!d)
        return false;
    if (++g->next_token == 0)
        g->next_token = 1;
    d->ack_token = g->next_token;
    r->token = d->ack_token;
    r->owner = m;
    r->mnext = m->outstanding;
    m->outstanding = r;
    m->out++;
    r->p->nqueued--;
    atomic_fetch_add(&g->gs->st->unacked, 1);
    if (r->delivered)
        atomic_fetch_add(&g->gs->st->redeliveries, 1);
    r->delivered = true;
    g->gs->sink.message(g->gs->sink.ctx, d);
    return true;
}

static void set_paused(struct group *g, struct part *p, bool pause)
{
    if (p->paused == pause)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, g->topic, p->partition);
    rd_kafka_resp_err_t e =
        pause ? rd_kafka_pause_partitions(g->rk, l) : rd_kafka_resume_partitions(g->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        p->paused = pause;
}

/* Flow control: records held = handed out (at most `capacity`, the sum of the members'
 * max_unacked) + waiting. A partition is paused when more than capacity + PAUSE_SLACK
 * records wait (every member is full and a little more came), and the paused ones resume
 * when no more than capacity / 2 wait: memory stays within 2 x clients x max_unacked +
 * PAUSE_SLACK records. The slack is there because a resume costs a fetch round trip (and
 * the pause drops what librdkafka prefetched): pausing at the members' room alone paused
 * and resumed every few acks and cut a busy group's throughput by 6. */
static uint64_t capacity(const struct group *g)
{
    uint64_t c = 0;
    for (const struct member *m = g->members; m; m = m->next)
        c += m->max_unacked;
    return c;
}

static uint64_t waiting(const struct group *g)
{
    uint64_t w = 0;
    for (const struct part *p = g->parts; p; p = p->next)
        if (!p->revoking)
            w += p->nqueued;
    return w;
}

/* Hands queued records to members with room, partition by partition in offset order, then
 * pauses or resumes the partitions (see capacity()). */
static void dispatch(struct group *g)
{
    bool full = false;
    for (struct part *p = g->parts; p; p = p->next) {
        if (p->revoking)
            continue;
        for (struct rec *r = p->head; r && p->nqueued && !full; r = r->next) {
            if (r->owner || r->acked)
                continue;
            struct member *m = pick(g);
            if (!m || !hand_out(g, r, m))
                full = true;
        }
    }
    if (!g->rk || g->stopping)
        return;
    uint64_t cap = capacity(g), w = waiting(g);
    for (struct part *p = g->parts; p; p = p->next) {
        if (p->revoking)
            continue;
        if (w > cap + PAUSE_SLACK && p->nqueued > 0)
            set_paused(g, p, true);
        else if (w <= cap / 2)
            set_paused(g, p, false);
    }
}

/* ---- Dead letters ---------------------------------------------------------------------- */

static void on_dlq_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct group *g = opaque;
    if (m->err)
        wsb_log(WSB_LOG_WARN, "kafka dead letter failed", WSB_LSTR("connector", g->gs->name),
                WSB_LSTR("group", g->id), WSB_LSTR("reason", rd_kafka_err2str(m->err)));
    else
        atomic_fetch_add(&g->gs->st->dead_lettered, 1);
}

static bool dead_letter(struct group *g, const char *topic, const struct wsb_msg *m)
{
    if (!g->producer) {
        rd_kafka_conf_t *c = rd_kafka_conf_dup(g->gs->producer_conf);
        char why[256];
        rd_kafka_conf_set_opaque(c, g);
        rd_kafka_conf_set_dr_msg_cb(c, on_dlq_delivery);
        if (!(g->producer = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why)))) {
            rd_kafka_conf_destroy(c);
            wsb_log(WSB_LOG_WARN, "kafka dead letter producer", WSB_LSTR("connector", g->gs->name),
                    WSB_LSTR("reason", why));
            return false;
        }
    }
    rd_kafka_headers_t *h = rd_kafka_headers_new(m->nheaders + 4);
    char num[32];
    for (size_t i = 0; i < m->nheaders; i++)
        rd_kafka_header_add(h, m->headers[i].name, -1, m->headers[i].value,
                            (ssize_t)m->headers[i].value_len);
    rd_kafka_header_add(h, DLQ_REASON_HEADER, -1, "nack", -1);
    rd_kafka_header_add(h, "x-wsbridge-topic", -1, g->topic, -1);
    snprintf(num, sizeof(num), "%" PRId32, m->partition);
    rd_kafka_header_add(h, "x-wsbridge-partition", -1, num, -1);
    snprintf(num, sizeof(num), "%" PRId64, m->offset);
    rd_kafka_header_add(h, "x-wsbridge-offset", -1, num, -1);
    rd_kafka_resp_err_t e = rd_kafka_producev(g->producer, RD_KAFKA_V_TOPIC(topic),
                                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                              RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
                                              RD_KAFKA_V_VALUE((void *)m->payload, m->payload_len),
                                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(h);
        wsb_log(WSB_LOG_WARN, "kafka dead letter failed", WSB_LSTR("connector", g->gs->name),
                WSB_LSTR("group", g->id), WSB_LSTR("reason", rd_kafka_err2str(e)));
        return false;
    }
    return true;
}

/* ---- Commands (group thread) ---------------------------------------------------------- */

static void do_subscribe(struct group *g, const struct wsb_cmd *c)
{
    const char *dlt = wsb_connector_field(c->src.fields, "dead_letter_topic");
    struct member *m = calloc(1, sizeof(*m));
    if (!m || (*dlt && !(m->dlq = strdup(dlt)))) {
        free(m);
        g->gs->sink.source_failed(g->gs->sink.ctx, c->id, "unavailable", "out of memory");
        return;
    }
    m->id = c->id;
    m->max_unacked = c->src.max_unacked ? c->src.max_unacked : 100;
    m->next = g->members;
    g->members = m;
    wsb_log(WSB_LOG_DEBUG, "kafka group member", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LUINT("source", m->id));
    g->gs->sink.source_started(g->gs->sink.ctx, c->id, NULL);
}

static void do_unsubscribe(struct group *g, uint64_t id)
{
    for (struct member **pp = &g->members; *pp; pp = &(*pp)->next) {
        struct member *m = *pp;
        if (m->id != id)
            continue;
        while (m->outstanding)
            rec_requeue(g, m->outstanding);
        *pp = m->next;
        if (g->rr == m)
            g->rr = NULL;
        free(m->dlq);
        free(m);
        return;
    }
}

static void do_ack(struct group *g, uint64_t id, uint64_t token, enum wsb_ack_kind kind)
{
    struct member *m = member_find(g, id);
    if (!m)
        return;
    struct rec *r = m->outstanding;
    while (r && r->token != token)
        r = r->mnext;
    if (!r)
        return; /* its partition went away in a rebalance: another consumer has it */
    if (kind == WSB_NACK_REQUEUE) {
        rec_requeue(g, r);
        return;
    }
    if (kind == WSB_NACK_DROP) {
        if (!m->dlq || !dead_letter(g, m->dlq, r->msg))
            atomic_fetch_add(&g->gs->st->dropped, 1);
    }
    rec_disown(g, r);
    r->acked = true;
    part_advance(r->p);
}

/* Serves every queued command. */
static void serve(struct group *g)
{
    for (struct wsb_cmd *list = wsb_cmdq_take(g->q), *c; list; wsb_cmd_free(c)) {
        c = list;
        list = c->next;
        switch (c->kind) {
        case WSB_CMD_SUBSCRIBE: do_subscribe(g, c); break;
        case WSB_CMD_UNSUBSCRIBE: do_unsubscribe(g, c->id); break;
        case WSB_CMD_ACK: do_ack(g, c->id, c->ack_token, c->ack_kind); break;
        case WSB_CMD_STOP:
            g->stopping = true;
            g->stop_timeout_ms = c->timeout_ms;
            break;
        case WSB_CMD_PUBLISH:
        case WSB_CMD_SYNC: break;
        }
    }
}

/* ---- Rebalances ------------------------------------------------------------------------ */

static bool outstanding_in_revoking(struct group *g)
{
    for (struct part *p = g->parts; p; p = p->next)
        if (p->revoking)
            for (struct rec *r = p->head; r; r = r->next)
                if (r->owner)
                    return true;
    return false;
}

/* Revoked partitions: no more dispatch; wait (bounded) for their outstanding acks, commit
 * what is contiguous, then drop their records (the next owner reads them from the
 * committed offset). Lost partitions (session timed out) are dropped without a commit. */
static void revoke(struct group *g, const rd_kafka_topic_partition_list_t *l, bool lost)
{
    for (int i = 0; i < l->cnt; i++) {
        struct part *p = part_find(g, l->elems[i].partition);
        if (p) {
            p->revoking = true;
            for (struct rec *r = p->head; r; r = r->next)
                if (!r->owner && !r->acked)
                    p->nqueued--;
        }
    }
    if (!lost && !g->stopping) {
        /* What is contiguous now is committed first: the group may move on (and refuse
         * commits) while we wait for the rest. */
        commit(g, true);
        int64_t deadline = mono_ms() + REVOKE_WAIT_MS;
        while (outstanding_in_revoking(g)) {
            int64_t left = deadline - mono_ms();
            if (left <= 0 || g->stopping)
                break;
            wsb_cmdq_wait(g->q, (int)(left < TICK_MS ? left : TICK_MS));
            serve(g);
            dispatch(g); /* the partitions kept go on */
        }
    }
    if (!lost) {
        /* Only the revoked partitions' runs: commit() takes every pending one, fine too. */
        commit(g, true);
    }
    for (struct part **pp = &g->parts; *pp;) {
        struct part *p = *pp;
        if (!p->revoking) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        part_free_records(g, p);
        free(p);
    }
    wsb_log(WSB_LOG_INFO, "kafka group partitions revoked", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LINT("partitions", l->cnt), WSB_LBOOL("lost", lost));
}

static void assign(struct group *g, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++) {
        if (part_find(g, l->elems[i].partition))
            continue;
        struct part *p = calloc(1, sizeof(*p));
        if (!p)
            continue; /* its records find no partition and are skipped: never committed */
        p->partition = l->elems[i].partition;
        p->committed = -1;
        p->pending = -1;
        p->seen = -1;
        p->next = g->parts;
        g->parts = p;
    }
    wsb_log(WSB_LOG_INFO, "kafka group partitions assigned", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LINT("partitions", l->cnt));
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct group *g = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign(g, parts);
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            re = rd_kafka_assign(rk, parts);
    } else {
        revoke(g, parts, rd_kafka_assignment_lost(rk));
        if (cooperative)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            re = rd_kafka_assign(rk, NULL);
    }
    if (e) {
        re = rd_kafka_error_code(e);
        rd_kafka_error_destroy(e);
    }
    if (re)
        wsb_log(WSB_LOG_WARN, "kafka group rebalance", WSB_LSTR("connector", g->gs->name),
                WSB_LSTR("group", g->id), WSB_LSTR("reason", rd_kafka_err2str(re)));
}

/* librdkafka before 2.10 treats an OffsetCommit answered ILLEGAL_GENERATION as the loss of
 * the whole assignment (confluentinc/librdkafka#4059): a commit sent while a rebalance is
 * under way (queued behind the JoinGroup on the coordinator connection) makes the member
 * drop its partitions without committing, and another member reads them again from the
 * last commit. So periodic commits are sent only right after a statistics tick that shows
 * the group steady; the commits of the revoke callback (the safe point) are not gated. */
/* The value of "join_state" in the "cgrp" object of librdkafka's statistics JSON
 * ("cgrp": { "state": "up", ..., "join_state": "steady", ...}): true when "steady". */
static bool stats_steady(const char *json)
{
    const char *p = strstr(json, "\"cgrp\"");
    if (!p || !(p = strstr(p, "\"join_state\"")))
        return false;
    p += strlen("\"join_state\"");
    while (*p == ' ' || *p == ':')
        p++;
    return strncmp(p, "\"steady\"", 8) == 0;
}

/* True when the statistics were taken less than 50 ms ago ("ts": librdkafka's monotonic
 * clock in microseconds, CLOCK_MONOTONIC on Linux): a tick served late says little about
 * the group now. */
static bool stats_fresh(const char *json)
{
    const char *p = strstr(json, "\"ts\"");
    if (!p)
        return false;
    p += 4;
    while (*p == ' ' || *p == ':')
        p++;
    long long ts = strtoll(p, NULL, 10);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long us = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
    return ts > 0 && us - ts < 50000;
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    (void)len;
    struct group *g = opaque;
    g->steady = stats_steady(json);
    g->commit_due = g->steady && stats_fresh(json);
    return 0; /* librdkafka frees json */
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    struct group *g = opaque;
    wsb_log(WSB_LOG_WARN, "kafka group error", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LSTR("reason", reason));
}

/* ---- The group thread ------------------------------------------------------------------ */

/* The group consumer's log callback (librdkafka's threads): offset resets noted for take(),
 * as kafka.c's handles do; the line passed on to the connector's logger. */
static void on_group_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct group *g = rd_kafka_opaque(rk);
    struct wsb_kreset_note n;
    if (wsb_kreset_parse(level, fac, buf, &n))
        wsb_kresets_note(g->resets, rk, &n);
    if (level <= g->gs->log_level && g->gs->log)
        g->gs->log(rk, level, fac, buf);
}

/* `lost` records before `rkm` were skipped by an offset reset (the broker no longer had
 * them): counted, logged, and a gap of that count for every member (each record would have
 * gone to one of them). Records of before the loss still waiting for a member may reach one
 * after its gap. */
static void group_lost(struct group *g, const rd_kafka_message_t *rkm, uint64_t lost)
{
    atomic_fetch_add(&g->gs->st->lost, lost);
    wsb_log(WSB_LOG_WARN, "kafka records lost", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id), WSB_LSTR("topic", g->topic),
            WSB_LINT("partition", rkm->partition),
            WSB_LINT("expected", rkm->offset - (int64_t)lost), WSB_LINT("offset", rkm->offset),
            WSB_LUINT("lost", lost),
            WSB_LSTR("reason", "consumer offset reset: records no longer on the broker"));
    for (struct member *m = g->members; m; m = m->next) {
        for (uint64_t left = lost; left > 0;) {
            struct wsb_msg *d = wsb_msg_lost(m->id, rkm->partition, rkm->offset, &left);
            if (!d)
                break;
            g->gs->sink.message(g->gs->sink.ctx, d);
        }
    }
}

static void take(struct group *g, rd_kafka_message_t *rkm)
{
    struct part *p = part_find(g, rkm->partition);
    if (!p || p->revoking)
        return;
    if (rkm->offset < p->seen)
        return; /* fetched again after a pause: already held or acked */
    uint64_t lost = wsb_kresets_check(g->resets, g->rk, g->topic, rkm->partition, rkm->offset);
    if (lost)
        group_lost(g, rkm, lost);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);
    struct wsb_header stack[MAX_STACK_HEADERS], *hv = stack;
    size_t nh = 0;
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        nh = rd_kafka_header_cnt(hdrs);
        if (nh > MAX_STACK_HEADERS && !(hv = malloc(nh * sizeof(*hv))))
            nh = 0, hv = stack;
        for (size_t i = 0; i < nh; i++) {
            const char *name;
            const void *val;
            size_t size;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &size)) {
                nh = i;
                break;
            }
            hv[i] = (struct wsb_header){.name = name, .value = val, .value_len = size};
        }
    }
    struct rec *r = calloc(1, sizeof(*r));
    if (r)
        r->msg = wsb_msg_new(0, rkm->partition, rkm->offset, ts, rkm->key, rkm->key_len,
                             rkm->payload, rkm->len, hv, nh);
    if (hv != stack)
        free(hv);
    if (!r || !r->msg) {
        /* Out of memory: pause and read it again later (its offset is never committed
         * past, as nothing later is held). */
        free(r);
        set_paused(g, p, true);
        return;
    }
    atomic_fetch_add(g->gs->messages_in, 1);
    p->seen = rkm->offset + 1;
    r->p = p;
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    p->nqueued++;
    /* Past the high mark: pause now, so librdkafka drops what it prefetched for this
     * partition (and fetches it again from here on resume) instead of us holding it. The
     * consumer queue is still drained: rebalances and statistics come through it. */
    if (waiting(g) > capacity(g) + PAUSE_SLACK)
        set_paused(g, p, true);
}

/* Reads up to POLL_BATCH events; true when there may be more. */
static bool consume(struct group *g)
{
    for (int n = 0; n < POLL_BATCH; n++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(g->rk, 0);
        if (!rkm)
            return false;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                wsb_log(WSB_LOG_WARN, "kafka group consumer error",
                        WSB_LSTR("connector", g->gs->name), WSB_LSTR("group", g->id),
                        WSB_LSTR("error", rd_kafka_message_errstr(rkm)));
        } else {
            take(g, rkm);
        }
        rd_kafka_message_destroy(rkm);
    }
    return true;
}

static void update_lag(struct group *g)
{
    int64_t lag = 0;
    for (struct part *p = g->parts; p; p = p->next) {
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(g->rk, g->topic, p->partition, &lo, &hi) || hi < 0)
            continue;
        int64_t pos = p->pending >= 0 ? p->pending : p->committed;
        if (pos < 0)
            pos = p->head ? p->head->msg->offset : lo;
        if (hi > pos)
            lag += hi - pos;
    }
    atomic_fetch_add(&g->gs->st->lag, lag - g->lag);
    g->lag = lag;
}

static void *run(void *arg)
{
    struct group *g = arg;
    bool more = false;
    int64_t next_lag = 0;
    while (!g->stopping) {
        wsb_cmdq_wait(g->q, more ? 0 : TICK_MS);
        serve(g);
        if (g->stopping)
            break;
        more = consume(g);
        dispatch(g);
        int64_t now = mono_ms();
        if (g->commit_due && g->steady)
            commit(g, false);
        g->commit_due = false;
        if (g->producer)
            rd_kafka_poll(g->producer, 0);
        if (now >= next_lag) {
            update_lag(g);
            next_lag = now + 1000;
        }
    }
    /* Stop: what is contiguous is committed, the rest goes back to the group with us
     * leaving it (close serves the revoke: outstanding records are not waited for). */
    while (g->members)
        do_unsubscribe(g, g->members->id);
    if (g->steady)
        commit(g, true); /* else the revoke of the close commits */
    rd_kafka_consumer_close(g->rk);
    if (g->producer) {
        rd_kafka_flush(g->producer, (int)(g->stop_timeout_ms ? g->stop_timeout_ms : 1000));
        rd_kafka_destroy(g->producer);
        g->producer = NULL;
    }
    for (struct part *p; (p = g->parts);) {
        g->parts = p->next;
        part_free_records(g, p);
        free(p);
    }
    rd_kafka_queue_io_event_enable(g->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(g->queue);
    rd_kafka_destroy(g->rk);
    g->rk = NULL;
    atomic_fetch_sub(&g->gs->st->lag, g->lag);
    g->lag = 0;
    wsb_log(WSB_LOG_INFO, "kafka group left", WSB_LSTR("connector", g->gs->name),
            WSB_LSTR("group", g->id));
    atomic_store(&g->done, true);
    return NULL;
}

/* ---- The connector thread's side ------------------------------------------------------ */

struct wsb_kgroups *wsb_kgroups_new(const char *connector, const rd_kafka_conf_t *consumer_conf,
                                    const rd_kafka_conf_t *producer_conf,
                                    const struct wsb_sink *sink, atomic_uint_fast64_t *messages_in,
                                    struct wsb_kgroups_stats *stats, wsb_kgroups_log_cb log,
                                    int log_level)
{
    struct wsb_kgroups *gs = calloc(1, sizeof(*gs));
    if (!gs)
        return NULL;
    snprintf(gs->name, sizeof(gs->name), "%s", connector);
    gs->consumer_conf = rd_kafka_conf_dup(consumer_conf);
    gs->producer_conf = rd_kafka_conf_dup(producer_conf);
    gs->sink = *sink;
    gs->messages_in = messages_in;
    gs->st = stats;
    gs->log = log;
    gs->log_level = log_level;
    pthread_mutex_init(&gs->lock, NULL);
    return gs;
}

static void group_free(struct group *g)
{
    wsb_cmdq_join(g->q);
    atomic_fetch_sub(&g->gs->st->groups, 1);
    wsb_cmdq_free(g->q);
    free(g->ids);
    free(g->id);
    free(g->topic);
    wsb_kresets_free(g->resets);
    free(g);
}

/* Joins the groups whose thread has finished. */
static void reap(struct wsb_kgroups *gs)
{
    pthread_mutex_lock(&gs->lock);
    for (struct group **pp = &gs->dying; *pp;) {
        struct group *g = *pp;
        if (!atomic_load(&g->done)) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        group_free(g);
    }
    pthread_mutex_unlock(&gs->lock);
}

static struct group *group_start(struct wsb_kgroups *gs, const struct wsb_source *src, char *err,
                                 size_t errlen)
{
    struct group *g = calloc(1, sizeof(*g));
    if (!g || !(g->id = strdup(wsb_connector_field(src->fields, "group"))) ||
        !(g->topic = strdup(wsb_connector_field(src->fields, "topic"))) ||
        !(g->q = wsb_cmdq_new()) || !(g->resets = wsb_kresets_new())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    g->gs = gs;
    atomic_init(&g->done, false);
    rd_kafka_conf_t *c = rd_kafka_conf_dup(gs->consumer_conf);
    char why[256];
    if (rd_kafka_conf_set(c, "group.id", g->id, why, sizeof(why)) ||
        rd_kafka_conf_set(c, "partition.assignment.strategy", "cooperative-sticky", why,
                          sizeof(why)) ||
        rd_kafka_conf_set(c, "enable.auto.commit", "false", why, sizeof(why)) ||
        rd_kafka_conf_set(c, "enable.auto.offset.store", "false", why, sizeof(why)) ||
        rd_kafka_conf_set(c, "queued.min.messages", "1000", why, sizeof(why)) ||
        rd_kafka_conf_set(c, "queued.max.messages.kbytes", "4096", why, sizeof(why)) ||
        rd_kafka_conf_set(c, "statistics.interval.ms", STATS_INTERVAL_MS, why, sizeof(why)) ||
        /* offset resets are read in the log (on_group_log): warnings logged, at once */
        rd_kafka_conf_set(c, "log.queue", "false", why, sizeof(why)) ||
        (gs->log_level < 4 && rd_kafka_conf_set(c, "log_level", "4", why, sizeof(why)))) {
        rd_kafka_conf_destroy(c);
        snprintf(err, errlen, "kafka group consumer: %s", why);
        goto fail;
    }
    rd_kafka_conf_set_opaque(c, g);
    rd_kafka_conf_set_log_cb(c, on_group_log);
    rd_kafka_conf_set_error_cb(c, on_error);
    rd_kafka_conf_set_rebalance_cb(c, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(c, on_commit);
    rd_kafka_conf_set_stats_cb(c, on_stats);
    if (!(g->rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why)))) {
        rd_kafka_conf_destroy(c);
        snprintf(err, errlen, "kafka group consumer: %s", why);
        goto fail;
    }
    rd_kafka_poll_set_consumer(g->rk);
    g->queue = rd_kafka_queue_get_consumer(g->rk);
    rd_kafka_queue_io_event_enable(g->queue, wsb_cmdq_fd(g->q), &WSB_CMDQ_WAKE_PAYLOAD,
                                   sizeof(WSB_CMDQ_WAKE_PAYLOAD));
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, g->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(g->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        snprintf(err, errlen, "kafka group subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }
    if (wsb_cmdq_start(g->q, run, g) != WSB_OK) {
        snprintf(err, errlen, "cannot start a thread");
        goto fail;
    }
    atomic_fetch_add(&gs->st->groups, 1);
    wsb_log(WSB_LOG_INFO, "kafka group joining", WSB_LSTR("connector", gs->name),
            WSB_LSTR("group", g->id), WSB_LSTR("topic", g->topic));
    return g;

fail:
    if (g) {
        if (g->queue) {
            rd_kafka_queue_io_event_enable(g->queue, -1, NULL, 0);
            rd_kafka_queue_destroy(g->queue);
        }
        if (g->rk)
            rd_kafka_destroy_flags(g->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        wsb_cmdq_free(g->q);
        wsb_kresets_free(g->resets);
        free(g->id);
        free(g->topic);
        free(g);
    }
    return NULL;
}

static struct group *group_of(struct wsb_kgroups *gs, uint64_t id, int *slot)
{
    for (struct group *g = gs->groups; g; g = g->next)
        for (int i = 0; i < g->nids; i++)
            if (g->ids[i] == id) {
                if (slot)
                    *slot = i;
                return g;
            }
    return NULL;
}

/* Stops group g (it has no member left): off the list, to the dying ones. */
static void retire(struct wsb_kgroups *gs, struct group *g)
{
    pthread_mutex_lock(&gs->lock);
    for (struct group **pp = &gs->groups; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    g->next = gs->dying;
    gs->dying = g;
    pthread_mutex_unlock(&gs->lock);
    wsb_cmdq_stop(g->q, 1000);
}

void wsb_kgroups_subscribe(struct wsb_kgroups *gs, const struct wsb_cmd *c)
{
    char err[300];
    const char *group = wsb_connector_field(c->src.fields, "group"),
               *topic = wsb_connector_field(c->src.fields, "topic");
    reap(gs);
    if (!*group) {
        gs->sink.source_failed(gs->sink.ctx, c->id, "unsupported",
                               "delivery: ack on kafka needs a \"group\"");
        return;
    }
    if (group_of(gs, c->id, NULL)) {
        gs->sink.source_failed(gs->sink.ctx, c->id, "unavailable", "source already subscribed");
        return;
    }
    struct group *g = gs->groups;
    while (g && strcmp(g->id, group) != 0)
        g = g->next;
    if (g && strcmp(g->topic, topic) != 0) {
        snprintf(err, sizeof(err), "group %s already consumes topic %s here", g->id, g->topic);
        gs->sink.source_failed(gs->sink.ctx, c->id, "unsupported", err);
        return;
    }
    bool fresh = !g;
    if (fresh) {
        if (!(g = group_start(gs, &c->src, err, sizeof(err)))) {
            wsb_log(WSB_LOG_WARN, "kafka group failed", WSB_LSTR("connector", gs->name),
                    WSB_LSTR("group", group), WSB_LSTR("reason", err));
            gs->sink.source_failed(gs->sink.ctx, c->id, "unavailable", err);
            return;
        }
        pthread_mutex_lock(&gs->lock);
        g->next = gs->groups;
        gs->groups = g;
        pthread_mutex_unlock(&gs->lock);
    }
    if (g->nids == g->capids) {
        int cap = g->capids ? g->capids * 2 : 8;
        uint64_t *n = realloc(g->ids, (size_t)cap * sizeof(*n));
        if (!n) {
            gs->sink.source_failed(gs->sink.ctx, c->id, "unavailable", "out of memory");
            if (fresh)
                retire(gs, g);
            return;
        }
        g->ids = n;
        g->capids = cap;
    }
    if (wsb_cmdq_subscribe(g->q, c->id, &c->src) != WSB_OK) {
        gs->sink.source_failed(gs->sink.ctx, c->id, "unavailable", "out of memory");
        if (fresh)
            retire(gs, g);
        return;
    }
    g->ids[g->nids++] = c->id;
}

bool wsb_kgroups_unsubscribe(struct wsb_kgroups *gs, uint64_t id)
{
    int slot;
    struct group *g = group_of(gs, id, &slot);
    if (!g)
        return false;
    g->ids[slot] = g->ids[--g->nids];
    wsb_cmdq_unsubscribe(g->q, id);
    if (g->nids == 0) {
        /* The last member: the consumer leaves the group so its partitions go to the
         * replicas that have clients. A new subscription starts a new consumer. */
        retire(gs, g);
    }
    reap(gs);
    return true;
}

void wsb_kgroups_ack(struct wsb_kgroups *gs, uint64_t id, uint64_t token, enum wsb_ack_kind kind)
{
    struct group *g = group_of(gs, id, NULL);
    if (g)
        wsb_cmdq_ack(g->q, id, token, kind);
}

void wsb_kgroups_free(struct wsb_kgroups *gs, uint32_t timeout_ms)
{
    if (!gs)
        return;
    pthread_mutex_lock(&gs->lock);
    for (struct group *g = gs->groups; g; g = g->next)
        wsb_cmdq_stop(g->q, timeout_ms);
    while (gs->groups) {
        struct group *g = gs->groups;
        gs->groups = g->next;
        g->next = gs->dying;
        gs->dying = g;
    }
    while (gs->dying) {
        struct group *g = gs->dying;
        gs->dying = g->next;
        group_free(g);
    }
    pthread_mutex_unlock(&gs->lock);
    rd_kafka_conf_destroy(gs->consumer_conf);
    rd_kafka_conf_destroy(gs->producer_conf);
    pthread_mutex_destroy(&gs->lock);
    free(gs);
}
