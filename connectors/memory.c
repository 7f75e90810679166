/* The "memory" connector: an in-process broker with retained in-memory topics. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/cbase.h"
#include "connectors/memory.h"

#define DEFAULT_RETAIN 10000

/* A message waiting in (or taken from) a topic's work queue. */
struct qitem {
    struct qitem *next;
    struct wsb_msg *msg; /* the stored message (source_id 0) */
    uint64_t token;
};

struct topic {
    struct topic *next;
    char *name;
    struct wsb_msg **ring; /* retained messages, ring[head] has offset `base` */
    size_t head, count;
    int64_t base, next_offset;
    bool has_queue; /* work queue for ack sources, created by the first one */
    struct qitem *qhead, *qtail;
    size_t qlen;
};

struct source {
    struct source *next;
    uint64_t id;
    struct topic *topic;
    bool ack;
    uint32_t max_unacked;
    char *dead_letter_topic;
    struct qitem *unacked; /* in delivery order */
    uint32_t nunacked;
};

struct mem {
    struct wsb_cbase base; /* first: the shared vtable entries take a struct mem as it */
    char name[64];
    struct wsb_sink sink;
    size_t retain;

    /* Thread-owned from here on. */
    struct topic *topics;
    struct source *sources;
    uint64_t next_token;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Topics -------------------------------------------------------------------------- */

static struct topic *topic_get(struct mem *mm, const char *name, bool create)
{
    for (struct topic *t = mm->topics; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    if (!create)
        return NULL;
    struct topic *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->name = strdup(name);
    t->ring = calloc(mm->retain, sizeof(*t->ring));
    if (!t->name || !t->ring) {
        free(t->name);
        free(t->ring);
        free(t);
        return NULL;
    }
    t->next = mm->topics;
    mm->topics = t;
    return t;
}

static struct wsb_msg *topic_at(const struct mem *mm, const struct topic *t, int64_t offset)
{
    return t->ring[(t->head + (size_t)(offset - t->base)) % mm->retain];
}

static void queue_push_tail(struct topic *t, struct qitem *q)
{
    q->next = NULL;
    if (t->qtail)
        t->qtail->next = q;
    else
        t->qhead = q;
    t->qtail = q;
    t->qlen++;
}

static void queue_push_head(struct topic *t, struct qitem *q)
{
    q->next = t->qhead;
    t->qhead = q;
    if (!t->qtail)
        t->qtail = q;
    t->qlen++;
}

static struct qitem *queue_pop(struct topic *t)
{
    struct qitem *q = t->qhead;
    if (!q)
        return NULL;
    t->qhead = q->next;
    if (!t->qhead)
        t->qtail = NULL;
    t->qlen--;
    q->next = NULL;
    return q;
}

static void qitem_free(struct qitem *q)
{
    wsb_msg_unref(q->msg);
    free(q);
}

/* ---- Delivery ------------------------------------------------------------------------ */

/* The stored message for one source: its bytes shared, not copied (a topic read by several
 * sources, or retained and read again, is still one copy). */
static void deliver_to(struct mem *mm, uint64_t source_id, struct wsb_msg *m, uint64_t token)
{
    struct wsb_msg *c = wsb_msg_share(m, source_id);
    if (!c)
        return; /* out of memory: the message is lost for this source */
    c->ack_token = token;
    atomic_fetch_add(&mm->base.messages_in, 1);
    mm->sink.message(mm->sink.ctx, c);
}

/* Hands queued messages of `t` to its ack sources, round-robin: the source served last is
 * moved to the tail of the source list. */
static void dispatch_queue(struct mem *mm, struct topic *t)
{
    while (t->qhead) {
        struct source **pp = &mm->sources, *s = NULL;
        for (; *pp; pp = &(*pp)->next) {
            struct source *c = *pp;
            if (c->ack && c->topic == t && (c->max_unacked == 0 || c->nunacked < c->max_unacked)) {
                s = c;
                break;
            }
        }
        if (!s)
            return;
        *pp = s->next; /* move to the tail */
        s->next = NULL;
        struct source **tail = &mm->sources;
        while (*tail)
            tail = &(*tail)->next;
        *tail = s;

        struct qitem *q = queue_pop(t);
        q->token = ++mm->next_token;
        struct qitem **u = &s->unacked;
        while (*u)
            u = &(*u)->next;
        *u = q;
        s->nunacked++;
        deliver_to(mm, s->id, q->msg, q->token);
    }
}

/* Appends `m` (refs owned) to `t`, fans it out and queues it for ack sources. */
static void topic_append(struct mem *mm, struct topic *t, struct wsb_msg *m)
{
    m->source_id = 0;
    m->partition = 0;
    m->offset = t->next_offset++;
    if (m->timestamp_ms < 0)
        m->timestamp_ms = now_ms();

    if (t->count == mm->retain) {
        wsb_msg_unref(t->ring[t->head]);
        t->head = (t->head + 1) % mm->retain;
        t->count--;
        t->base++;
    }
    if (t->count == 0)
        t->base = m->offset;
    t->ring[(t->head + t->count) % mm->retain] = wsb_msg_ref(m);
    t->count++;

    for (struct source *s = mm->sources; s; s = s->next)
        if (!s->ack && s->topic == t)
            deliver_to(mm, s->id, m, 0);

    if (t->has_queue) {
        struct qitem *q = calloc(1, sizeof(*q));
        if (q) {
            q->msg = wsb_msg_ref(m);
            queue_push_tail(t, q);
            if (t->qlen > mm->retain)
                qitem_free(queue_pop(t));
        }
        dispatch_queue(mm, t);
    }
    wsb_msg_unref(m);
}

/* ---- Commands ------------------------------------------------------------------------ */

static struct source *source_find(struct mem *mm, uint64_t id, struct source ***prev)
{
    for (struct source **pp = &mm->sources; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            if (prev)
                *prev = pp;
            return *pp;
        }
    return NULL;
}

static int64_t start_offset(const struct topic *t, const struct mem *mm,
                            const struct wsb_source *src)
{
    switch (src->from) {
    case WSB_FROM_LATEST: return t->next_offset;
    case WSB_FROM_EARLIEST: return t->base;
    case WSB_FROM_TIMESTAMP:
        for (int64_t o = t->base; o < t->next_offset; o++)
            if (topic_at(mm, t, o)->timestamp_ms >= src->from_timestamp_ms)
                return o;
        return t->next_offset;
    case WSB_FROM_OFFSETS:
        for (size_t i = 0; i < src->nfrom_offsets; i++) {
            int64_t o = src->from_offsets[i].offset;
            if (src->from_offsets[i].partition != 0)
                continue;
            return o < t->base ? t->base : o > t->next_offset ? t->next_offset : o;
        }
        return t->next_offset; /* partition not given: latest */
    }
    return t->next_offset;
}

static void do_subscribe(struct mem *mm, const struct wsb_cmd *c)
{
    if (source_find(mm, c->id, NULL)) {
        mm->sink.source_failed(mm->sink.ctx, c->id, "unavailable", "source already subscribed");
        return;
    }
    const char *dlt = wsb_connector_field(c->src.fields, "dead_letter_topic");
    struct topic *t = topic_get(mm, wsb_connector_field(c->src.fields, "topic"), true);
    struct source *s = calloc(1, sizeof(*s));
    char *dlq = *dlt ? strdup(dlt) : NULL;
    if (!t || !s || (*dlt && !dlq)) {
        free(s);
        free(dlq);
        mm->sink.source_failed(mm->sink.ctx, c->id, "unavailable", "out of memory");
        return;
    }
    s->id = c->id;
    s->topic = t;
    s->ack = c->src.ack;
    s->max_unacked = c->src.max_unacked;
    s->dead_letter_topic = dlq;
    s->next = mm->sources;
    mm->sources = s;

    if (s->ack) {
        t->has_queue = true;
        mm->sink.source_started(mm->sink.ctx, s->id, NULL);
        dispatch_queue(mm, t);
        return;
    }
    int64_t from = start_offset(t, mm, &c->src);
    char positions[48];
    snprintf(positions, sizeof(positions), "{\"0\":%" PRId64 "}", from);
    mm->sink.source_started(mm->sink.ctx, s->id, positions);
    for (int64_t o = from; o < t->next_offset; o++)
        deliver_to(mm, s->id, topic_at(mm, t, o), 0);
}

static void source_free(struct source *s)
{
    free(s->dead_letter_topic);
    free(s);
}

static void do_unsubscribe(struct mem *mm, uint64_t id)
{
    struct source **pp;
    struct source *s = source_find(mm, id, &pp);
    if (!s)
        return;
    *pp = s->next;
    struct topic *t = s->topic;
    /* Unacked go back to the head of the queue in their original order. */
    struct qitem *rev = NULL;
    while (s->unacked) {
        struct qitem *q = s->unacked;
        s->unacked = q->next;
        q->next = rev;
        rev = q;
    }
    while (rev) {
        struct qitem *q = rev;
        rev = q->next;
        queue_push_head(t, q);
    }
    source_free(s);
    if (t->has_queue)
        dispatch_queue(mm, t);
}

static void do_ack(struct mem *mm, const struct wsb_cmd *c)
{
    struct source *s = source_find(mm, c->id, NULL);
    if (!s || !s->ack)
        return;
    struct qitem **pp = &s->unacked;
    while (*pp && (*pp)->token != c->ack_token)
        pp = &(*pp)->next;
    struct qitem *q = *pp;
    if (!q)
        return;
    *pp = q->next;
    s->nunacked--;
    struct topic *t = s->topic;
    if (c->ack_kind == WSB_NACK_REQUEUE) {
        queue_push_head(t, q);
    } else {
        if (c->ack_kind == WSB_NACK_DROP && s->dead_letter_topic) {
            struct topic *dlq = topic_get(mm, s->dead_letter_topic, true);
            const struct wsb_msg *m = q->msg;
            struct wsb_msg *d =
                dlq ? wsb_msg_new(0, 0, -1, m->timestamp_ms, m->key, m->key_len, m->payload,
                                  m->payload_len, m->headers, m->nheaders)
                    : NULL;
            if (d)
                topic_append(mm, dlq, d);
        }
        qitem_free(q);
    }
    dispatch_queue(mm, t);
}

static void do_publish(struct mem *mm, struct wsb_cmd *c)
{
    struct topic *t = topic_get(mm, wsb_connector_field(c->pub.fields, "topic"), true);
    if (!t) {
        mm->sink.publish_done(mm->sink.ctx, c->id, false, "out of memory");
        return;
    }
    topic_append(mm, t, c->msg);
    c->msg = NULL;
    mm->sink.publish_done(mm->sink.ctx, c->id, true, NULL);
}

static void *run(void *arg)
{
    struct mem *mm = arg;
    mm->sink.state(mm->sink.ctx, mm->name, true, NULL);
    for (;;) {
        wsb_cmdq_wait(mm->base.q, -1);
        for (struct wsb_cmd *list = wsb_cmdq_take(mm->base.q), *c; list; wsb_cmd_free(c)) {
            c = list;
            list = c->next;
            switch (c->kind) {
            case WSB_CMD_SUBSCRIBE: do_subscribe(mm, c); break;
            case WSB_CMD_UNSUBSCRIBE: do_unsubscribe(mm, c->id); break;
            case WSB_CMD_PUBLISH: do_publish(mm, c); break;
            case WSB_CMD_ACK: do_ack(mm, c); break;
            case WSB_CMD_SYNC: break;
            case WSB_CMD_STOP:
                /* Everything is in memory: nothing to flush. Nothing follows a stop. */
                wsb_cmd_free(c);
                while (list) {
                    c = list;
                    list = c->next;
                    wsb_cmd_free(c);
                }
                return NULL;
            }
        }
    }
}

/* ---- The vtable ---------------------------------------------------------------------- */

static int check_config(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    int problems = 0;
    if (!json_is_object(conf)) {
        report(ctx, "", "must be an object");
        return 1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)conf, key, v)
    {
        char path[160];
        snprintf(path, sizeof(path), ".%s", key);
        if (strcmp(key, "type") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "memory") != 0) {
                report(ctx, path, "must be \"memory\"");
                problems++;
            }
        } else if (strcmp(key, "retain") == 0) {
            problems += wsb_connector_check_int(v, 1, 10000000, path, report, ctx);
        } else {
            report(ctx, path, "unknown key");
            problems++;
        }
    }
    return problems;
}

static int check_channel(const json_t *channel,
                         void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    static const char *const optional[] = {"dead_letter_topic", NULL};
    return wsb_connector_check_topic_channel(channel, "memory", optional, report, ctx);
}

static enum wsb_err create(const char *name, const json_t *conf, const struct wsb_sink *sink,
                           void **impl, char *err, size_t errlen)
{
    *impl = NULL;
    struct mem *mm = calloc(1, sizeof(*mm));
    if (!mm) {
        snprintf(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    snprintf(mm->name, sizeof(mm->name), "%s", name);
    mm->sink = *sink;
    mm->retain = DEFAULT_RETAIN;
    json_t *retain = conf ? json_object_get(conf, "retain") : NULL;
    if (json_is_integer(retain) && json_integer_value(retain) > 0)
        mm->retain = (size_t)json_integer_value(retain);
    if (wsb_cbase_init(&mm->base, err, errlen) != WSB_OK) {
        free(mm);
        return WSB_ERR_IO;
    }
    wsb_cbase_set_up(&mm->base, true, NULL); /* in process: always ready */
    *impl = mm;
    return WSB_OK;
}

static enum wsb_err start(void *impl)
{
    struct mem *mm = impl;
    return wsb_cmdq_start(mm->base.q, run, mm);
}

static void destroy(void *impl)
{
    struct mem *mm = impl;
    if (!mm)
        return;
    wsb_cbase_stop(mm, 0); /* everything is in memory: nothing to flush */
    while (mm->sources) {
        struct source *s = mm->sources;
        mm->sources = s->next;
        while (s->unacked) {
            struct qitem *q = s->unacked;
            s->unacked = q->next;
            qitem_free(q);
        }
        source_free(s);
    }
    while (mm->topics) {
        struct topic *t = mm->topics;
        mm->topics = t->next;
        for (size_t i = 0; i < t->count; i++)
            wsb_msg_unref(t->ring[(t->head + i) % mm->retain]);
        while (t->qhead)
            qitem_free(queue_pop(t));
        free(t->ring);
        free(t->name);
        free(t);
    }
    wsb_cbase_cleanup(&mm->base);
    free(mm);
}

void wsb_memory_sync(void *impl)
{
    struct mem *mm = impl;
    wsb_cmdq_sync(mm->base.q);
}

/* As kafka's (the memory connector stands in for it in tests); "group" is not used. */
static const char *const channel_keys[] = {"topic", "group", "dead_letter_topic", NULL};
static const char *const source_keys[] = {"topic", "group", NULL};

const struct wsb_connector_ops wsb_memory_ops = {
    .type = "memory",
    .caps = WSB_CAP_FROM_POSITION | WSB_CAP_ACK | WSB_CAP_PUBLISH,
    .channel_keys = channel_keys,
    .source_keys = source_keys,
    .check_route = wsb_connector_check_topic_route,
    .check_config = check_config,
    .check_channel = check_channel,
    .create = create,
    .start = start,
    .stop = wsb_cbase_stop,
    .destroy = destroy,
    .subscribe = wsb_cbase_subscribe_topic,
    .unsubscribe = wsb_cbase_unsubscribe,
    .publish = wsb_cbase_publish_topic,
    .ack = wsb_cbase_ack,
    .ready = wsb_cbase_ready,
    .messages_in = wsb_cbase_messages_in,
};
