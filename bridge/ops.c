/* The wsbridge.v1 requests (SPEC §5): subscribe, unsubscribe, publish (and its answer from
 * the broker), ack/nack and auth, on top of the session's primitives. */
#include "bridge/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/acl.h"
#include "auth/filter.h"
#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/delivery.h"
#include "bridge/grants.h"
#include "bridge/ids.h"
#include "bridge/metrics.h"
#include "bridge/protocol.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/sources.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "connectors/connector.h"
#include "util/log.h"
#include "util/map.h"

static bool acl_allows(struct wsb_session *s, enum wsb_acl_action a, const char *ch, size_t len)
{
    bool ok = s->acl && wsb_acl_check(s->acl, a, ch, len);
    wsb_metric_add(s->w->metrics.acl[ok ? WSB_ACL_ALLOW : WSB_ACL_DENY], 1);
    return ok;
}

static void op_subscribe(struct wsb_session *s, struct wsb_request *r)
{
    char ch[WSB_CHANNEL_MAX + 1];
    memcpy(ch, r->channel, r->channel_len);
    ch[r->channel_len] = '\0';
    if (wsb_session_find_sub(s, ch, r->channel_len)) {
        wsb_session_reply_error(s, r->id, "already_subscribed",
                                "already subscribed to this channel");
        return;
    }
    if (s->nsubs >= wsb_session_limits(s)->max_subscriptions) {
        wsb_session_reply_error(s, r->id, "too_many_subscriptions", "max_subscriptions reached");
        return;
    }
    if (!acl_allows(s, WSB_ACL_SUBSCRIBE, ch, r->channel_len)) {
        wsb_session_reply_error(s, r->id, "forbidden", "not allowed to subscribe to this channel");
        return;
    }
    struct wsb_route route;
    int routed = wsb_config_route(s->rt->cfg, ch, r->channel_len, &route);
    if (routed < 0) {
        if (routed == WSB_ROUTE_FORBIDDEN)
            wsb_session_reply_error(s, r->id, "forbidden", route.forbidden);
        else
            wsb_session_reply_error(s, r->id, "unknown_channel", "no channel rule matches");
        return;
    }
    const struct wsb_channel_rule *rule = route.rule;
    unsigned caps = s->w->shared->connectors[rule->connector]->ops->caps;
    const char *unsupported = NULL;
    if (r->from != WSB_FROM_LATEST && !(caps & WSB_CAP_FROM_POSITION))
        unsupported = "this channel only starts from \"latest\"";
    else if (rule->delivery == WSB_DELIVERY_ACK && !(caps & WSB_CAP_ACK))
        unsupported = "this channel's connector does not support delivery: ack";
    else if (rule->delivery == WSB_DELIVERY_ACK && r->filter)
        unsupported = "a delivery: ack channel takes no filter";
    if (unsupported) {
        wsb_config_route_cleanup(&route);
        wsb_session_reply_error(s, r->id, "unsupported", unsupported);
        return;
    }
    /* Issue 15: the channel's per-record filter for this identity, narrowed by the client's. */
    struct wsb_filter *filter = NULL;
    int frc = wsb_grants_filter(s, rule, ch, r->channel_len, r->filter, &filter);
    if (frc != 0) {
        wsb_config_route_cleanup(&route);
        if (frc > 0)
            wsb_session_reply_error(s, r->id, "forbidden",
                                    "the filter asks for records this channel's filter withholds");
        else
            wsb_session_reply_error(s, r->id, "unavailable", "out of memory");
        return;
    }
    if (filter && wsb_filter_alternatives(filter) == 0) /* no claim values in the log */
        wsb_log(WSB_LOG_DEBUG, "filter matches no record for this client", WSB_LSTR("conn", s->sid),
                WSB_LSTR("channel", ch));
    struct wsb_source src = {
        .fields = route.fields,
        .ack = rule->delivery == WSB_DELIVERY_ACK,
        .max_unacked = rule->max_unacked,
        .from = r->from,
        .from_timestamp_ms = r->from_timestamp_ms,
        .from_offsets = r->from_offsets,
        .nfrom_offsets = r->nfrom_offsets,
        .value_format = (enum wsb_format)rule->value_format,
        .key_format = (enum wsb_format)rule->key_format,
    };
    struct wsb_sub *sub = wsb_session_new_sub(s);
    size_t id_len = strlen(r->id);
    char *names = sub ? malloc(r->channel_len + 1 + id_len + 1) : NULL;
    if (!names) {
        wsb_filter_free(filter);
        wsb_config_route_cleanup(&route);
        wsb_session_reply_error(s, r->id, "unavailable", "out of memory");
        return;
    }
    uint32_t slot = (uint32_t)(sub - s->subs);
    uint64_t sid;
    bool resync;
    enum wsb_err rc =
        wsb_sources_acquire(s->w->shared->sources, rule->connector, &src, s->w->idx, &sid, &resync);
    wsb_config_route_cleanup(&route); /* the connector copied what it keeps */
    if (rc != WSB_OK) {
        wsb_filter_free(filter);
        free(names);
        wsb_session_reply_error(s, r->id, "unavailable", wsb_strerror(rc));
        return;
    }
    memset(sub, 0, sizeof(*sub));
    sub->used = true;
    sub->ack = src.ack;
    sub->policy = rule->policy;
    sub->connector = rule->connector;
    sub->source_id = sid;
    wsb_session_gate_sub(s, sub, true); /* a session that holds holds this source too */
    sub->channel = memcpy(names, ch, r->channel_len + 1);
    sub->id = memcpy(names + r->channel_len + 1, r->id, id_len + 1);
    sub->client_filter = r->filter; /* kept to resolve again after a reload */
    r->filter = NULL;
    s->nsubs++;
    wsb_metric_add(s->w->metrics.subscriptions, 1);
    if (resync)
        wsb_hub_await(s->w->hub, sid); /* this loop was not fed the source: wait for where */
    bool active;
    char *positions = NULL;
    sub->hs =
        wsb_hub_attach(s->w->hub, ch, r->channel_len, sid, filter, s, slot, &active, &positions);
    if (!sub->hs) {
        wsb_session_reply_error(s, r->id, "unavailable", "out of memory");
        sub->hs = NULL;
        wsb_session_drop_sub(s, sub);
        return;
    }
    if (active) {
        wsb_delivery_started(s, slot, positions);
        free(positions);
    }
}

void wsb_ops_subscribe(struct wsb_session *s, struct wsb_request *r)
{
    op_subscribe(s, r);
}

static void op_unsubscribe(struct wsb_session *s, struct wsb_request *r)
{
    struct wsb_sub *sub = wsb_session_find_sub(s, r->channel, r->channel_len);
    if (!sub) {
        wsb_session_reply_error(s, r->id, "not_subscribed", "not subscribed to this channel");
        return;
    }
    char ch[WSB_CHANNEL_MAX + 1];
    snprintf(ch, sizeof(ch), "%s", sub->channel);
    /* Every request with an id gets an answer: a subscribe still waiting for its source is
     * answered before the unsubscribe is. */
    if (!sub->active)
        wsb_session_reply_error(s, sub->id, "cancelled",
                                "unsubscribed before the subscription started");
    wsb_session_drop_sub(s, sub);
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_unsubscribed(&b, r->id, ch, NULL);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
}

/* The rest of a publish whose channel routed to `route`. */
static void publish_routed(struct wsb_session *s, struct wsb_request *r, const char *ch,
                           const struct wsb_route *route)
{
    struct wsb_loop_metrics *m = &s->w->metrics;
    struct wsb_connector *conn = s->w->shared->connectors[route->rule->connector];
    if (!route->rule->allow_publish) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        wsb_session_reply_error(s, r->id, "forbidden", "publishing is disabled on this channel");
        return;
    }
    if (!(conn->ops->caps & WSB_CAP_PUBLISH)) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        wsb_session_reply_error(s, r->id, "unsupported",
                                "this channel's connector does not publish");
        return;
    }
    if (s->inflight >= wsb_session_limits(s)->max_inflight_publishes) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        wsb_metric_add(m->rate_limited[WSB_RL_INFLIGHT_PUBLISHES], 1);
        wsb_session_reply_error(s, r->id, "rate_limited",
                                "too many publishes awaiting confirmation");
        return;
    }
    struct wsb_pending_pub *p = calloc(1, sizeof(*p));
    if (!p) {
        wsb_session_reply_error(s, r->id, "publish_failed", "out of memory");
        return;
    }
    p->cookie = wsb_cookie(s->w->idx, ++s->w->next_cookie);
    p->s = s;
    snprintf(p->id, sizeof(p->id), "%s", r->id);
    memcpy(p->channel, ch, r->channel_len + 1);
    if (wsb_map_put_u64(&s->w->pubs, p->cookie, p) < 0) {
        free(p);
        wsb_session_reply_error(s, r->id, "publish_failed", "out of memory");
        return;
    }
    struct wsb_publish pub = {
        .fields = route->fields,
        .key = (const uint8_t *)r->key,
        .key_len = r->key_len,
        .payload = (const uint8_t *)r->data,
        .payload_len = r->data_len,
        .headers = r->headers,
        .nheaders = r->nheaders,
        .value_format = (enum wsb_format)route->rule->value_format,
        .key_format = (enum wsb_format)route->rule->key_format,
    };
    enum wsb_err rc = wsb_connector_publish(conn, &pub, p->cookie);
    if (rc != WSB_OK) {
        wsb_map_del_u64(&s->w->pubs, p->cookie);
        free(p);
        wsb_metric_add(m->publish[WSB_PUB_FAILED], 1);
        wsb_session_reply_error(s, r->id, "publish_failed", wsb_strerror(rc));
        return;
    }
    p->next_in_session = s->pubs;
    s->pubs = p;
    s->inflight++;
}

static void op_publish(struct wsb_session *s, struct wsb_request *r)
{
    struct wsb_loop_metrics *m = &s->w->metrics;
    char ch[WSB_CHANNEL_MAX + 1];
    memcpy(ch, r->channel, r->channel_len);
    ch[r->channel_len] = '\0';
    if (!acl_allows(s, WSB_ACL_PUBLISH, ch, r->channel_len)) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        wsb_session_reply_error(s, r->id, "forbidden", "not allowed to publish to this channel");
        return;
    }
    struct wsb_route route;
    int routed = wsb_config_route(s->rt->cfg, ch, r->channel_len, &route);
    if (routed < 0) {
        wsb_metric_add(m->publish[WSB_PUB_REJECTED], 1);
        if (routed == WSB_ROUTE_FORBIDDEN)
            wsb_session_reply_error(s, r->id, "forbidden", route.forbidden);
        else
            wsb_session_reply_error(s, r->id, "unknown_channel", "no channel rule matches");
        return;
    }
    publish_routed(s, r, ch, &route);
    wsb_config_route_cleanup(&route); /* the connector copied what it keeps */
}

void wsb_ops_publish_done(struct wsb_worker *w, uint64_t cookie, bool ok, const char *msg)
{
    struct wsb_pending_pub *p = wsb_map_del_u64(&w->pubs, cookie);
    if (!p)
        return;
    wsb_metric_add(w->metrics.publish[ok ? WSB_PUB_OK : WSB_PUB_FAILED], 1);
    struct wsb_session *s = p->s;
    if (s) {
        for (struct wsb_pending_pub **pp = &s->pubs; *pp; pp = &(*pp)->next_in_session) {
            if (*pp == p) {
                *pp = p->next_in_session;
                break;
            }
        }
        s->inflight--;
        struct wsb_buf b;
        wsb_buf_init(&b);
        if (ok)
            wsb_encode_published(&b, p->id, p->channel);
        else if (msg &&
                 strncmp(msg, WSB_PUBLISH_INVALID_PREFIX, strlen(WSB_PUBLISH_INVALID_PREFIX)) == 0)
            wsb_encode_error(&b, p->id, "invalid_request",
                             msg + strlen(WSB_PUBLISH_INVALID_PREFIX));
        else
            wsb_encode_error(&b, p->id, "publish_failed", msg ? msg : "broker refused");
        wsb_session_reply(s, &b);
        wsb_buf_cleanup(&b);
    }
    free(p);
}

static void op_ack(struct wsb_session *s, struct wsb_request *r)
{
    struct wsb_sub *sub = wsb_session_find_sub(s, r->channel, r->channel_len);
    if (!sub) {
        wsb_session_reply_error(s, r->id, "not_subscribed", "not subscribed to this channel");
        return;
    }
    if (!sub->ack) {
        wsb_session_reply_error(s, r->id, "invalid_request", "channel does not use delivery: ack");
        return;
    }
    /* Only deliveries this client was given can be acked by it. */
    size_t i = 0;
    while (i < sub->nunacked && sub->unacked[i] != r->ack_id)
        i++;
    if (i == sub->nunacked) {
        wsb_session_reply_error(s, r->id, "invalid_request", "unknown ack_id for this channel");
        return;
    }
    sub->unacked[i] = sub->unacked[--sub->nunacked];
    enum wsb_ack_kind kind = WSB_ACK;
    if (r->op == WSB_REQ_NACK)
        kind = r->requeue ? WSB_NACK_REQUEUE : WSB_NACK_DROP;
    wsb_connector_ack(s->w->shared->connectors[sub->connector], sub->source_id, r->ack_id, kind);
}

static void op_auth(struct wsb_session *s, struct wsb_request *r)
{
    if (!s->rt->auth) {
        wsb_session_reply_error(s, r->id, "unsupported", "authentication is not enabled");
        return;
    }
    struct wsb_identity *id = NULL;
    const char *code = NULL;
    if (wsb_auth_verify(s->rt->auth, r->token, r->token_len, wsb_wall_s(), &id, &code) != WSB_OK) {
        wsb_session_reply_error(s, r->id, "token_rejected", code ? code : "token_invalid");
        return;
    }
    const char *old = s->ident ? s->ident->sub : NULL;
    if ((old == NULL) != (id->sub == NULL) || (old && strcmp(old, id->sub) != 0)) {
        wsb_identity_unref(id);
        wsb_session_reply_error(s, r->id, "token_rejected", "token is for another subject");
        return;
    }
    if (s->ident)
        wsb_identity_unref(s->ident);
    s->ident = id;
    wsb_grants_set_expiry(s);
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_authenticated(&b, r->id, id->exp);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
    wsb_grants_recompile(s);
}

void wsb_ops_dispatch(struct wsb_session *s, const uint8_t *text, size_t len)
{
    struct wsb_request req;
    const char *code = NULL;
    char msg[160];
    if (wsb_request_parse(text, len, &req, &code, msg, sizeof(msg)) != 0) {
        wsb_session_reply_error(s, req.id, code ? code : "invalid_request", msg);
        wsb_request_cleanup(&req);
        return;
    }
    switch (req.op) {
    case WSB_REQ_SUBSCRIBE: op_subscribe(s, &req); break;
    case WSB_REQ_UNSUBSCRIBE: op_unsubscribe(s, &req); break;
    case WSB_REQ_PUBLISH: op_publish(s, &req); break;
    case WSB_REQ_ACK:
    case WSB_REQ_NACK: op_ack(s, &req); break;
    case WSB_REQ_AUTH: op_auth(s, &req); break;
    }
    wsb_request_cleanup(&req);
}
