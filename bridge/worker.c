/* What the session layer asks of the state its workers share (the runtime snapshot, mail to
 * other loops), and the connector sink that turns connector events into mail. */
#include "bridge/worker.h"

#include "bridge/ids.h"
#include "bridge/mailbox.h"
#include "bridge/runtime.h"
#include "bridge/sources.h"
#include "connectors/connector.h"
#include "util/log.h"

struct wsb_runtime *wsb_shared_runtime(struct wsb_shared *sh)
{
    pthread_mutex_lock(&sh->rt_lock);
    struct wsb_runtime *rt = wsb_runtime_ref(sh->rt);
    pthread_mutex_unlock(&sh->rt_lock);
    return rt;
}

void wsb_worker_post(struct wsb_shared *sh, uint64_t mask, int type, uint64_t id,
                     struct wsb_msg *msg, const char *text, const char *text2, bool ok)
{
    for (unsigned i = 0; i < sh->nworkers; i++) {
        if (!(mask & (1u << i)))
            continue;
        struct wsb_msg *m = msg ? wsb_msg_ref(msg) : NULL;
        struct wsb_mail *mail = wsb_mail_new((enum wsb_mail_type)type, id, m, text, text2, ok);
        if (mail)
            wsb_mailbox_post(sh->workers[i]->mailbox, mail);
    }
}

void wsb_worker_broadcast_source(struct wsb_shared *sh, int type, uint64_t id)
{
    wsb_worker_post(sh, wsb_source_loops(id), type, id, NULL, NULL, NULL, true);
}

/* ---- the sink: connector threads -> mailboxes ------------------------------------- */

static void sink_message(void *ctx, struct wsb_msg *m)
{
    struct wsb_shared *sh = ctx;
    bool settle;
    uint64_t mask = wsb_sources_route(sh->sources, m->source_id, m->partition, m->offset, &settle);
    wsb_worker_post(sh, mask, WSB_MAIL_MESSAGE, m->source_id, m, NULL, NULL, true);
    if (settle)
        wsb_sources_settle(sh->sources, m->source_id);
    wsb_msg_unref(m);
}

/* Messages a connector thread handed over with message_held, per loop, until its flush (or
 * until HELD_MAX wait for one loop): one lock and at most one wake per loop and burst. With
 * one post per message, a loop that drains faster than the connector delivers was woken for
 * nearly every message (an eventfd write, an epoll return and a context switch each). */
#define HELD_MAX 128
#define SETTLE_MAX 16

struct held {
    struct wsb_mail *head, *tail;
    size_t n;
    struct wsb_mail_block *block; /* the mails, one allocation per loop and burst */
};

static _Thread_local struct wsb_shared *held_sh; /* whose loops the held mails are for */
static _Thread_local struct held held[WSB_MAX_LOOPS];
static _Thread_local size_t held_total;
/* Sources whose feed is to be settled once the held mails are posted (wsb_sources_route). */
static _Thread_local uint64_t settle_ids[SETTLE_MAX];
static _Thread_local size_t nsettle;

static void held_flush(struct wsb_shared *sh, unsigned i)
{
    struct held *h = &held[i];
    if (h->block)
        wsb_mail_block_seal(h->block); /* before the post: then its count is the loop's */
    if (h->n) {
        wsb_mailbox_post_list(sh->workers[i]->mailbox, h->head, h->tail, h->n);
        held_total -= h->n;
    }
    *h = (struct held){0};
}

static void sink_flush(void *ctx)
{
    (void)ctx;
    if (!held_total && !nsettle)
        return; /* nothing held: held_sh may be a server that is gone */
    for (unsigned i = 0; i < held_sh->nworkers; i++)
        held_flush(held_sh, i);
    for (size_t i = 0; i < nsettle; i++)
        wsb_sources_settle(held_sh->sources, settle_ids[i]);
    nsettle = 0;
}

static void sink_message_held(void *ctx, struct wsb_msg *m)
{
    struct wsb_shared *sh = ctx;
    if (held_sh != sh) {
        sink_flush(NULL); /* another server's (tests run several in one process) */
        held_sh = sh;
    }
    bool settle;
    uint64_t mask = wsb_sources_route(sh->sources, m->source_id, m->partition, m->offset, &settle);
    for (unsigned i = 0; i < sh->nworkers; i++) {
        if (!(mask & (1u << i)))
            continue;
        struct held *h = &held[i];
        if (!h->block)
            h->block = wsb_mail_block_new(HELD_MAX);
        struct wsb_mail *mail =
            h->block
                ? wsb_mail_block_take(h->block, m->source_id, wsb_msg_ref(m))
                : wsb_mail_new(WSB_MAIL_MESSAGE, m->source_id, wsb_msg_ref(m), NULL, NULL, true);
        if (!mail)
            continue;
        if (h->tail)
            h->tail->next = mail;
        else
            h->head = mail;
        h->tail = mail;
        held_total++;
        if (++h->n >= HELD_MAX)
            held_flush(sh, i);
    }
    if (settle && !(nsettle && settle_ids[nsettle - 1] == m->source_id)) {
        if (nsettle == SETTLE_MAX)
            sink_flush(NULL);
        settle_ids[nsettle++] = m->source_id;
    }
    wsb_msg_unref(m);
}

static bool sink_skip(void *ctx, uint64_t source_id, int32_t partition, int64_t next)
{
    struct wsb_shared *sh = ctx;
    return wsb_sources_skip(sh->sources, source_id, partition, next);
}

static void sink_started(void *ctx, uint64_t id, const char *positions)
{
    struct wsb_shared *sh = ctx;
    wsb_sources_started(sh->sources, id, positions);
    wsb_worker_post(ctx, wsb_source_loops(id), WSB_MAIL_STARTED, id, NULL, positions, NULL, true);
}

static void sink_failed(void *ctx, uint64_t id, const char *code, const char *message)
{
    wsb_worker_post(ctx, wsb_source_loops(id), WSB_MAIL_FAILED, id, NULL,
                    code ? code : "unavailable", message, false);
}

static void sink_publish_done(void *ctx, uint64_t cookie, bool ok, const char *message)
{
    struct wsb_shared *sh = ctx;
    unsigned w = wsb_cookie_loop(cookie);
    if (w < sh->nworkers)
        wsb_worker_post(sh, 1u << w, WSB_MAIL_PUBLISH_DONE, cookie, NULL, message, NULL, ok);
}

static void sink_state(void *ctx, const char *connector, bool up, const char *reason)
{
    (void)ctx;
    if (up)
        wsb_log(WSB_LOG_INFO, "connector up", WSB_LSTR("connector", connector));
    else
        wsb_log(WSB_LOG_WARN, "connector down", WSB_LSTR("connector", connector),
                WSB_LSTR("reason", reason));
}

void wsb_worker_sink_init(struct wsb_sink *sink, struct wsb_shared *sh)
{
    *sink = (struct wsb_sink){
        .ctx = sh,
        .message = sink_message,
        .message_held = sink_message_held,
        .flush = sink_flush,
        .skip = sink_skip,
        .source_started = sink_started,
        .source_failed = sink_failed,
        .publish_done = sink_publish_done,
        .state = sink_state,
    };
}

void wsb_worker_handoff_held(struct wsb_worker *w, int64_t now_us)
{
    if (w->gate_held_us == 0)
        w->gate_held_us = now_us > 0 ? now_us : 1;
}

void wsb_worker_handoff_resume(struct wsb_worker *w, int64_t now_us)
{
    if (w->gate_held_us) {
        if (now_us > w->gate_held_us)
            wsb_metric_add(w->metrics.handoff_held_us, (uint64_t)(now_us - w->gate_held_us));
        w->gate_held_us = 0;
    }
    wsb_mailbox_kick(w->mailbox);
}
