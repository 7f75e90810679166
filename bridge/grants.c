/* A session's grants over its life: the claims its ACL is compiled from (the token's, and a
 * verified client certificate's), the compile when it opens, after an `auth` op and after a
 * reload (subscriptions no longer allowed end), and the token-expiry deadline (4401). Above the
 * session, whose primitives it uses. */
#include "bridge/grants.h"

#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "auth/acl.h"
#include "auth/filter.h"
#include "auth/jwt.h"
#include "bridge/clock.h"
#include "bridge/hub.h"
#include "bridge/protocol.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/tls.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "util/buf.h"
#include "util/log.h"

void wsb_grants_set_expiry(struct wsb_session *s)
{
    if (!s->ident || s->ident->exp <= 0) {
        wsb_session_set_expiry(s, -1);
        return;
    }
    int64_t at = s->ident->exp + wsb_auth_leeway(s->rt->auth);
    int64_t in = at - wsb_wall_s();
    wsb_session_set_expiry(s, in < 0 ? 0 : in * 1000);
}

/* The claims the ACL sees: the token's, without any mtls_* names it may carry, plus those of a
 * verified client certificate. A new reference, or NULL (anonymous, no certificate). */
static json_t *acl_claims(const struct wsb_session *s)
{
    json_t *tok = s->ident ? wsb_identity_claims(s->ident) : NULL;
    bool spoof = tok && (json_object_get(tok, WSB_TLS_CLAIM_SUBJECT) != NULL ||
                         json_object_get(tok, WSB_TLS_CLAIM_CN) != NULL);
    if (!s->tls_claims && !spoof)
        return tok;
    json_t *c = tok ? json_copy(tok) : json_object();
    json_decref(tok);
    if (!c)
        return NULL;
    json_object_del(c, WSB_TLS_CLAIM_SUBJECT);
    json_object_del(c, WSB_TLS_CLAIM_CN);
    if (s->tls_claims)
        json_object_update(c, s->tls_claims);
    return c;
}

static int resolve_filter(struct wsb_session *s, const json_t *claims,
                          const struct wsb_channel_rule *rule, const char *ch, size_t len,
                          const struct wsb_filter_spec *client, struct wsb_filter **out)
{
    *out = NULL;
    struct wsb_filter *chan = NULL, *mine = NULL;
    bool bypass = wsb_acl_check(s->acl, WSB_ACL_UNFILTERED, ch, len);
    if (rule->filter && !bypass) {
        struct wsb_captures caps = {0};
        if (!wsb_pattern_match(rule->pattern, ch, len, &caps))
            caps.n = 0;
        if (!(chan = wsb_filter_resolve(rule->filter, claims, &caps, rule->filter_counter)))
            return -1;
    }
    if (client && !(mine = wsb_filter_resolve(client, NULL, NULL, NULL))) {
        wsb_filter_free(chan);
        return -1;
    }
    bool widen, oom;
    *out = wsb_filter_and(chan, mine, rule->filter_counter, &widen, &oom);
    wsb_filter_free(chan);
    wsb_filter_free(mine);
    if (oom)
        return -1;
    if (widen) {
        wsb_filter_free(*out);
        *out = NULL;
        return 1;
    }
    return 0;
}

int wsb_grants_filter(struct wsb_session *s, const struct wsb_channel_rule *rule, const char *ch,
                      size_t len, const struct wsb_filter_spec *client, struct wsb_filter **out)
{
    /* Only a channel filter reads the claims (parsed from the identity's text). */
    json_t *claims = rule->filter ? acl_claims(s) : NULL;
    int rc = resolve_filter(s, claims, rule, ch, len, client, out);
    json_decref(claims);
    return rc;
}

/* Ends `sub` on the server's side: drops it, then tells the client (`unsubscribed` with
 * `code`). The channel's name is copied first: dropping frees the slot that holds it. */
static void end_sub(struct wsb_session *s, struct wsb_sub *sub, const char *code)
{
    char ch[WSB_CHANNEL_MAX + 1];
    snprintf(ch, sizeof(ch), "%s", sub->channel);
    wsb_session_drop_sub(s, sub);
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_encode_unsubscribed(&b, "", ch, code);
    wsb_session_reply(s, &b);
    wsb_buf_cleanup(&b);
}

/* A subscription's filter again, after new grants or a new config: a subscriber whose
 * filter changed moves group; one whose own filter now asks for more than the channel's
 * allows ends (forbidden). A channel that no longer routes keeps its filter. */
static void refilter(struct wsb_session *s, const json_t *claims, struct wsb_sub *sub)
{
    struct wsb_route route;
    size_t len = strlen(sub->channel);
    if (wsb_config_route(s->rt->cfg, sub->channel, len, &route) < 0)
        return;
    struct wsb_filter *f;
    int rc = resolve_filter(s, claims, route.rule, sub->channel, len, sub->client_filter, &f);
    wsb_config_route_cleanup(&route);
    if (rc < 0)
        return; /* out of memory: keep what it had */
    if (rc == 0 && (rc = wsb_hub_refilter(s->w->hub, sub->hs, f)) >= 0)
        return;
    end_sub(s, sub, rc == 1 ? "forbidden" : "unavailable");
}

/* The ACL for `claims` under the session's runtime. When no rule reads a claim and the claims
 * carry no permissions claim, every such session of the worker gets the same grants: they
 * are compiled once per worker and runtime and shared (~250 bytes per idle connection,
 * docs/benchmarks.md Footprint). A new reference, or NULL on allocation failure. */
static struct wsb_acl *compile_acl(struct wsb_session *s, const json_t *claims)
{
    const struct wsb_config *cfg = s->rt->cfg;
    const char *perm = cfg->auth.enabled ? cfg->auth.permissions_claim : NULL;
    if (wsb_acl_rules_use_claims(cfg->acl, cfg->nacl) ||
        (perm && claims && json_object_get(claims, perm)))
        return wsb_acl_compile(cfg->acl, cfg->nacl, claims, perm);
    struct wsb_worker *w = s->w;
    if (!w->acl || w->acl_rt != s->rt) {
        struct wsb_acl *acl = wsb_acl_compile(cfg->acl, cfg->nacl, NULL, NULL);
        if (!acl)
            return NULL;
        wsb_grants_forget_shared(w);
        w->acl = acl;
        w->acl_rt = wsb_runtime_ref(s->rt); /* pinned, so no other snapshot reuses the address */
    }
    return wsb_acl_ref(w->acl);
}

void wsb_grants_forget_shared(struct wsb_worker *w)
{
    wsb_acl_free(w->acl);
    w->acl = NULL;
    wsb_runtime_unref(w->acl_rt);
    w->acl_rt = NULL;
}

void wsb_grants_recompile(struct wsb_session *s)
{
    json_t *claims = acl_claims(s);
    if (!claims && (s->ident || s->tls_claims))
        return; /* allocation failure: keep the old grants */
    struct wsb_acl *acl = compile_acl(s, claims);
    if (!acl) {
        json_decref(claims);
        return; /* keep the old grants on allocation failure */
    }
    if (s->acl)
        wsb_acl_free(s->acl);
    s->acl = acl;
    /* Subscriptions the new grants no longer allow end now. */
    for (size_t i = 0; i < s->cap; i++) {
        struct wsb_sub *sub = &s->subs[i];
        if (!sub->used || wsb_acl_check(acl, WSB_ACL_SUBSCRIBE, sub->channel, strlen(sub->channel)))
            continue;
        end_sub(s, sub, "forbidden");
    }
    for (size_t i = 0; i < s->cap; i++) {
        struct wsb_sub *sub = &s->subs[i];
        if (sub->used && sub->hs && !sub->ack)
            refilter(s, claims, sub);
    }
    json_decref(claims);
    /* An idle session keeps its claims as the token's text only: they are parsed again when
     * needed (an `auth`, a reload, a filtered subscribe), not held as jansson objects. */
    if (s->ident)
        wsb_identity_compact(s->ident);
}

void wsb_grants_start(struct wsb_session *s)
{
    wsb_session_start(s);
    if (s->tls) {
        /* A client certificate that verified against tls.client_ca names the client too. */
        json_t *c = json_object();
        if (c && wsb_tls_peer_claims(bufferevent_openssl_get_ssl(s->bev), c))
            s->tls_claims = c;
        else
            json_decref(c);
    }
    wsb_grants_recompile(s);
    if (s->transport == WSB_TRANSPORT_HTTP)
        return; /* one request: its token was checked just now */
    wsb_grants_set_expiry(s);
}

void wsb_grants_recheck(struct wsb_session *s)
{
    if (s->state != WSB_SS_OPEN)
        return;
    struct wsb_runtime *rt = s->w->rt;
    if (rt != s->rt) {
        wsb_runtime_ref(rt);
        wsb_runtime_unref(s->rt);
        s->rt = rt;
    }
    const struct wsb_limits *l = wsb_session_limits(s);
    wsb_bucket_reconfigure(&s->in_msgs, l->inbound_rate_per_s, l->inbound_rate_burst);
    wsb_bucket_reconfigure(&s->in_bytes, l->inbound_bytes_per_s, l->inbound_bytes_burst);
    wsb_grants_recompile(s);
}
