/* What the session layer asks of the state its workers share (the runtime snapshot, mail to
 * other loops), and the connector sink that turns connector events into mail. */
#include "bridge/worker.h"

#include "bridge/ids.h"
#include "bridge/mailbox.h"
#include "bridge/runtime.h"
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
    wsb_worker_post(sh, wsb_source_loops(m->source_id), WSB_MAIL_MESSAGE, m->source_id, m, NULL,
                    NULL, true);
    wsb_msg_unref(m);
}

static void sink_started(void *ctx, uint64_t id, const char *positions)
{
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
