/* Deliveries: the hub's callbacks into a session. A message frame joins the session's
 * out-queue under the flow-control verdict (disconnect, or drop_oldest down to the soft
 * limit, whole messages only); `delivery: ack` messages are tracked until the client acks
 * them; a source's start or failure is answered to the client. */
#include "bridge/delivery.h"

#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "bridge/clock.h"
#include "bridge/flow.h"
#include "bridge/metrics.h"
#include "bridge/outq.h"
#include "bridge/protocol.h"
#include "bridge/session.h"
#include "bridge/sse_wire.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "util/buf.h"
#include "util/log.h"

#define BURST_ITEMS 64 /* a client with more frames queued than this saw a burst */

void wsb_delivery_started(void *owner, uint32_t slot, const char *positions)
{
    struct wsb_session *s = owner;
    struct wsb_sub *sub = &s->subs[slot];
    sub->active = true;
    struct wsb_sse_pos *pos;
    if (s->transport == WSB_TRANSPORT_SSE && positions && (pos = wsb_session_sse_pos(sub)))
        wsb_sse_pos_load(pos, positions); /* the stream's resume token covers them from now */
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_subscribed(&b, sub->id, sub->channel, positions);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
    sub->id[0] = '\0';
}

static void hub_failed(void *owner, uint32_t slot, const char *code, const char *message)
{
    struct wsb_session *s = owner;
    struct wsb_sub *sub = &s->subs[slot];
    sub->hs = NULL; /* the hub frees it */
    if (sub->active) {
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_encode_unsubscribed(&b, "", sub->channel, code);
        wsb_session_reply(s, &b);
        wsb_buf_cleanup(&b);
    } else {
        wsb_session_reply_error(s, sub->id, code, message ? message : "source failed");
    }
    /* The registry entry is forgotten by the worker that handled the failure. */
    wsb_session_free_slot(s, sub);
}

static void count_drop(void *ctx, uint32_t tag)
{
    struct wsb_session *s = ctx;
    if (tag < s->cap && s->subs[tag].used)
        s->subs[tag].gap++;
    s->dropped++;
    wsb_metric_add(s->w->metrics.dropped[WSB_DROP_SLOW_CONSUMER], 1);
}

/* Remembers an ack token handed to this client; false on allocation failure. */
static bool track_unacked(struct wsb_sub *sub, uint64_t token)
{
    if (sub->nunacked == sub->capunacked) {
        size_t cap = sub->capunacked ? sub->capunacked * 2 : 8;
        uint64_t *u = realloc(sub->unacked, cap * sizeof(*u));
        if (!u)
            return false;
        sub->unacked = u;
        sub->capunacked = cap;
    }
    sub->unacked[sub->nunacked++] = token;
    return true;
}

static void hub_deliver(void *owner, uint32_t slot, struct wsb_frame *f, uint64_t ack_token)
{
    struct wsb_session *s = owner;
    struct wsb_sub *sub = &s->subs[slot];
    if (s->state != WSB_SS_OPEN || (ack_token && !track_unacked(sub, ack_token))) {
        if (ack_token)
            wsb_session_requeue(s, sub, ack_token);
        return;
    }
    const struct wsb_limits *l = wsb_session_limits(s);
    if (!ack_token) {
        s->sb.bytes = wsb_session_queued(s) + f->len;
        /* The verdict reads the clock only over the soft limit: no clock read per delivery
         * for a client that keeps up (it was ~5 % of a fan-out's CPU). */
        int64_t now = l->send_soft_bytes && s->sb.bytes > l->send_soft_bytes ? wsb_now_us() : 0;
        enum wsb_sendbuf_verdict v = wsb_sendbuf_check(
            &s->sb, l->send_soft_bytes, l->send_soft_seconds, l->send_hard_bytes, now);
        if (v != WSB_SB_OK) {
            int policy = sub->policy >= 0 ? sub->policy : (int)l->send_policy;
            if (policy == WSB_POLICY_DISCONNECT) {
                wsb_metric_add(s->w->metrics.dropped[WSB_DROP_DISCONNECTED], 1);
                wsb_log(WSB_LOG_INFO, "slow consumer disconnected", WSB_LSTR("conn", s->sid),
                        WSB_LSTR("ip", s->ip), WSB_LUINT("queued", s->sb.bytes));
                wsb_session_close(s, 4408, "slow consumer", true);
                return;
            }
            /* drop_oldest: make room down to the soft limit, whole messages only. */
            uint64_t sock = wsb_session_out_len(s);
            uint64_t target =
                l->send_soft_bytes > sock + f->len ? l->send_soft_bytes - sock - f->len : 0;
            wsb_outq_drop_oldest(&s->q, target, count_drop, s);
            if (wsb_session_queued(s) + f->len > l->send_hard_bytes && l->send_hard_bytes) {
                count_drop(s, slot);
                return;
            }
        }
    }
    /* An ack delivery is never dropped by drop_oldest (the broker gave it to this client
     * alone; it is tracked above and goes back to the broker if the client leaves). */
    wsb_outq_push(&s->q, wsb_frame_ref(f), ack_token ? WSB_OUTQ_ACK : WSB_OUTQ_MESSAGE, slot);
    if (s->q.count > BURST_ITEMS)
        wsb_session_note_burst(s);
    wsb_session_flush(s);
}

/* A record the connector could not decode: the client gets a `gap` before its next message
 * (or when its queue drains), as for a drop. Records lost at the broker: a `gap` of their
 * count in their place, queued after the messages of before the loss that the client has not
 * been sent yet (a reply item: never dropped); they are counted once per record by the
 * connector (wsbridge_records_lost_total), not per client. */
static void hub_skipped(void *owner, uint32_t slot, uint64_t count, bool lost)
{
    struct wsb_session *s = owner;
    if (lost) {
        if (slot >= s->cap || !s->subs[slot].used)
            return;
        struct wsb_buf b;
        wsb_buf_init(&b);
        wsb_encode_gap(&b, s->subs[slot].channel, count);
        wsb_session_reply(s, &b);
        wsb_buf_cleanup(&b);
        return;
    }
    if (slot < s->cap && s->subs[slot].used)
        s->subs[slot].gap += count;
    wsb_metric_add(s->w->metrics.dropped[WSB_DROP_UNDECODABLE], count);
    wsb_session_flush(s);
}

const struct wsb_hub_cbs wsb_delivery_hub_cbs = {
    .skipped = hub_skipped,
    .deliver = hub_deliver,
    .started = wsb_delivery_started,
    .failed = hub_failed,
};
