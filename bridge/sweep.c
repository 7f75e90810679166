/* A worker's passes over its sessions at safe points: the periodic check and the reaping of
 * closed sessions (sweep.h). */
#include "bridge/sweep.h"

#include <stdatomic.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/acl.h"
#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/iplimit.h"
#include "bridge/metrics.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "util/log.h"

/* ---- the periodic check ------------------------------------------------------------ */

/* The policy of the channels whose droppable messages wait: disconnect when any of them says
 * so, else drop_oldest; -1 when only replies and ack deliveries wait. */
struct tick_policy {
    struct wsb_session *s;
    int policy;
};

static void tick_policy_visit(void *ctx, uint32_t kind, uint32_t tag)
{
    struct tick_policy *tp = ctx;
    struct wsb_session *s = tp->s;
    if (kind != WSB_OUTQ_MESSAGE || tag >= s->cap || !s->subs[tag].used)
        return;
    int p =
        s->subs[tag].policy >= 0 ? s->subs[tag].policy : (int)wsb_session_limits(s)->send_policy;
    if (tp->policy != WSB_POLICY_DISCONNECT)
        tp->policy = p;
}

static void count_tick_drop(void *ctx, uint32_t tag)
{
    struct wsb_session *s = ctx;
    if (tag < s->cap && s->subs[tag].used)
        s->subs[tag].gap++;
    wsb_metric_add(s->w->metrics.dropped[WSB_DROP_SLOW_CONSUMER], 1);
}

void wsb_sweep_tick(struct wsb_session *s, int64_t now_ms)
{
    if (s->state != WSB_SS_OPEN)
        return;
    const struct wsb_limits *l = wsb_session_limits(s);
    if (s->msg_pending && now_ms - s->msg_started_ms > (int64_t)l->message_timeout_ms) {
        wsb_log(WSB_LOG_INFO, "message not completed in time", WSB_LSTR("conn", s->sid),
                WSB_LSTR("ip", s->ip), WSB_LUINT("received", s->msg_total));
        wsb_session_close(s, 1008, "message timeout", true);
        return;
    }
    /* An idle connection keeps no buffers: the out-queue's ring (16 items), the inbound
     * message buffer and a plain socket's output evbuffer are given back here, at most once a tick,
     * and allocated again on demand (docs/benchmarks.md, memory per idle connection). */
    if (s->q.count == 0 && s->q.items)
        wsb_outq_cleanup(&s->q);
    if (!s->msg_pending && s->msg.data)
        wsb_buf_cleanup(&s->msg);
    wsb_writer_release(s); /* and a plain socket's empty output evbuffer */
    /* The soft limit is also judged when no new message arrives, with the policy of the
     * channels whose messages wait (as on delivery, delivery.c). */
    s->sb.bytes = wsb_session_queued(s);
    if (!s->q.count || wsb_sendbuf_check(&s->sb, l->send_soft_bytes, l->send_soft_seconds,
                                         l->send_hard_bytes, wsb_now_us()) == WSB_SB_OK)
        return;
    struct tick_policy tp = {.s = s, .policy = -1};
    wsb_outq_each(&s->q, tick_policy_visit, &tp);
    int policy = tp.policy >= 0 ? tp.policy : (int)l->send_policy;
    if (policy == WSB_POLICY_DISCONNECT) {
        wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], 1);
        wsb_log(WSB_LOG_INFO, "slow consumer disconnected", WSB_LSTR("conn", s->sid),
                WSB_LSTR("ip", s->ip), WSB_LUINT("queued", s->sb.bytes));
        wsb_session_close(s, 4408, "slow consumer", true);
        return;
    }
    /* drop_oldest: down to the soft limit, whole messages; the gaps go out with the flush. */
    uint64_t sock = wsb_session_out_len(s);
    uint64_t target = l->send_soft_bytes > sock ? l->send_soft_bytes - sock : 0;
    if (wsb_outq_drop_oldest(&s->q, target, count_tick_drop, s))
        wsb_session_flush(s);
}

/* ---- reaping ----------------------------------------------------------------------- */

static void session_free(struct wsb_session *s)
{
    struct wsb_worker *w = s->w;
    if (s->on_free)
        s->on_free(s);
    for (size_t i = 0; i < s->cap; i++)
        if (s->subs[i].used)
            wsb_session_drop_sub(s, &s->subs[i]);
    for (struct wsb_pending_pub *p = s->pubs; p; p = p->next_in_session)
        p->s = NULL;
    wsb_iplimit_release(w->shared->iplimit, &s->ip_ticket);
    if (s->counted) {
        atomic_fetch_sub(&w->shared->connections, 1);
        wsb_metric_add(w->metrics.connections, -1);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    wsb_outq_cleanup(&s->q);
    wsb_writer_detach(s);
    if (s->bev) {
        bufferevent_free(s->bev);
    } else {
        if (s->io)
            event_free(s->io);
        if (s->in)
            evbuffer_free(s->in);
        if (s->out)
            evbuffer_free(s->out);
        if (s->fd >= 0)
            evutil_closesocket(s->fd);
    }
    event_free(s->timer);
    if (s->inflater)
        wsb_inflater_free(s->inflater);
    free(s->fp);
    if (s->acl)
        wsb_acl_free(s->acl);
    if (s->ident)
        wsb_identity_unref(s->ident);
    json_decref(s->tls_claims);
    wsb_buf_cleanup(&s->msg);
    free(s->subs);
    wsb_runtime_unref(s->rt);
    free(s);
}

void wsb_sweep_reap(struct wsb_worker *w)
{
    while (w->detach) {
        struct wsb_session *s = w->detach;
        w->detach = s->detach_next;
        s->detach_queued = false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->subs[i].used)
                wsb_session_drop_sub(s, &s->subs[i]);
    }
    while (w->reap) {
        struct wsb_session *s = w->reap;
        w->reap = s->reap_next;
        session_free(s);
    }
}
