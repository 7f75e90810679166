/* Per-connection grants: config rules with claim conditions and templates, plus the token's
 * permissions claim. Deny unless a compiled pattern matches. */
#include "auth/acl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/pattern.h"

struct grants {
    struct wsb_pattern **pats;
    size_t n, cap;
};

struct wsb_acl {
    int refs;           /* owned by one loop thread at a time */
    struct grants g[3]; /* indexed by enum wsb_acl_action */
};

#define NUMBUFS 16
/* Entries read per list of the permissions claim: bounds the per-request check cost. */
#define PERMISSIONS_MAX 256

struct resolve_ctx {
    const json_t *claims;
    char num[NUMBUFS][24]; /* integer claims as text, one buffer per template use */
    unsigned next;
};

/* A template value: the sub claim, or a top-level string or integer claim. A value that is
 * not exactly one segment is refused here already (wsb_pattern_compile refuses it too), so
 * "a.*", "**", "x.y" or "" can never widen a pattern. */
static const char *resolve(void *vctx, const char *name, size_t name_len)
{
    struct resolve_ctx *ctx = vctx;
    const json_t *v = NULL;
    const char *s;
    char key[256];

    if (!ctx->claims)
        return NULL;
    if (name_len == 3 && memcmp(name, "sub", 3) == 0) {
        v = json_object_get(ctx->claims, "sub");
        if (!json_is_string(v))
            return NULL;
    } else if (name_len > 6 && memcmp(name, "claim.", 6) == 0 && name_len - 6 < sizeof(key)) {
        memcpy(key, name + 6, name_len - 6);
        key[name_len - 6] = '\0';
        v = json_object_get(ctx->claims, key);
    }
    if (json_is_string(v)) {
        s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
            return NULL; /* embedded NUL */
    } else if (json_is_integer(v)) {
        char *buf = ctx->num[ctx->next++ % NUMBUFS];
        snprintf(buf, sizeof(ctx->num[0]), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = buf;
    } else {
        return NULL;
    }
    return wsb_segment_valid(s, strlen(s)) ? s : NULL;
}

static const char *resolve_none(void *ctx, const char *name, size_t name_len)
{
    (void)ctx;
    (void)name;
    (void)name_len;
    return NULL;
}

static int grant(struct grants *g, struct wsb_pattern *p)
{
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 2; /* most rules grant one or two patterns */
        struct wsb_pattern **np = realloc(g->pats, ncap * sizeof(*np));
        if (!np)
            return -1;
        g->pats = np;
        g->cap = ncap;
    }
    g->pats[g->n++] = p;
    return 0;
}

/* Compiles one pattern into g. A dropped or invalid pattern grants nothing.
 * Returns -1 only on allocation failure. */
static int add_pattern(struct grants *g, const char *pattern, bool templates,
                       struct resolve_ctx *ctx)
{
    char err[128];
    bool dropped = false;
    struct wsb_pattern *p;

    if (wsb_pattern_check(pattern, templates, err, sizeof(err)) < 0)
        return 0;
    p = wsb_pattern_compile(pattern, templates ? resolve : resolve_none, ctx, &dropped);
    if (!p)
        return 0;
    if (grant(g, p) < 0) {
        wsb_pattern_free(p);
        return -1;
    }
    return 0;
}

/* JSON text of a number or boolean claim, for EQUALS against the rule's string value. */
static bool scalar_equals(const json_t *v, const char *want)
{
    char buf[64];

    if (json_is_string(v))
        return strcmp(json_string_value(v), want) == 0 && strlen(want) == json_string_length(v);
    if (json_is_true(v))
        return strcmp(want, "true") == 0;
    if (json_is_false(v))
        return strcmp(want, "false") == 0;
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return strcmp(buf, want) == 0;
    }
    if (json_is_real(v)) {
        char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        bool eq = txt && strcmp(txt, want) == 0;
        free(txt);
        return eq;
    }
    return false;
}

static bool when_holds(const struct wsb_acl_rule *r, const json_t *claims)
{
    const json_t *v, *e;
    size_t i;

    if (r->when_op == WSB_WHEN_NONE)
        return true;
    if (!claims || !r->when_claim || !r->when_value)
        return false;
    v = json_object_get(claims, r->when_claim);
    if (!v)
        return false;
    if (r->when_op == WSB_WHEN_HAS) {
        if (json_is_string(v))
            return scalar_equals(v, r->when_value);
        if (!json_is_array(v))
            return false;
        json_array_foreach(v, i, e)
        {
            if (json_is_string(e) && scalar_equals(e, r->when_value))
                return true;
        }
        return false;
    }
    if (r->when_op == WSB_WHEN_EQUALS)
        return scalar_equals(v, r->when_value);
    return false;
}

static int add_list(struct grants *g, const json_t *arr, struct resolve_ctx *ctx)
{
    size_t i;
    const json_t *e;

    if (!json_is_array(arr))
        return 0;
    json_array_foreach(arr, i, e)
    {
        if (i >= PERMISSIONS_MAX)
            break;
        if (json_is_string(e) && strlen(json_string_value(e)) == json_string_length(e) &&
            add_pattern(g, json_string_value(e), false, ctx) < 0)
            return -1;
    }
    return 0;
}

struct wsb_acl *wsb_acl_compile(const struct wsb_acl_rule *rules, size_t nrules,
                                const json_t *claims, const char *permissions_claim)
{
    struct wsb_acl *acl = calloc(1, sizeof(*acl));
    struct resolve_ctx *ctx = calloc(1, sizeof(*ctx));

    if (!acl || !ctx)
        goto fail;
    acl->refs = 1;
    ctx->claims = json_is_object(claims) ? claims : NULL;
    for (size_t i = 0; i < nrules; i++) {
        const struct wsb_acl_rule *r = &rules[i];
        if (!when_holds(r, ctx->claims))
            continue;
        for (size_t j = 0; j < r->nsubscribe; j++)
            if (add_pattern(&acl->g[WSB_ACL_SUBSCRIBE], r->subscribe[j], true, ctx) < 0)
                goto fail;
        for (size_t j = 0; j < r->npublish; j++)
            if (add_pattern(&acl->g[WSB_ACL_PUBLISH], r->publish[j], true, ctx) < 0)
                goto fail;
        for (size_t j = 0; j < r->nunfiltered; j++)
            if (add_pattern(&acl->g[WSB_ACL_UNFILTERED], r->unfiltered[j], true, ctx) < 0)
                goto fail;
    }
    if (permissions_claim && ctx->claims) {
        const json_t *perm = json_object_get(ctx->claims, permissions_claim);
        if (json_is_object(perm) &&
            (add_list(&acl->g[WSB_ACL_SUBSCRIBE], json_object_get(perm, "subscribe"), ctx) < 0 ||
             add_list(&acl->g[WSB_ACL_PUBLISH], json_object_get(perm, "publish"), ctx) < 0 ||
             add_list(&acl->g[WSB_ACL_UNFILTERED], json_object_get(perm, "unfiltered"), ctx) < 0))
            goto fail;
    }
    free(ctx);
    return acl;
fail:
    free(ctx);
    wsb_acl_free(acl);
    return NULL;
}

bool wsb_acl_rules_use_claims(const struct wsb_acl_rule *rules, size_t nrules)
{
    for (size_t i = 0; i < nrules; i++) {
        const struct wsb_acl_rule *r = &rules[i];
        if (r->when_op != WSB_WHEN_NONE)
            return true;
        for (size_t j = 0; j < r->nsubscribe; j++)
            if (strchr(r->subscribe[j], '{'))
                return true;
        for (size_t j = 0; j < r->npublish; j++)
            if (strchr(r->publish[j], '{'))
                return true;
        for (size_t j = 0; j < r->nunfiltered; j++)
            if (strchr(r->unfiltered[j], '{'))
                return true;
    }
    return false;
}

struct wsb_acl *wsb_acl_ref(struct wsb_acl *acl)
{
    if (acl)
        acl->refs++;
    return acl;
}

void wsb_acl_free(struct wsb_acl *acl)
{
    if (!acl || --acl->refs > 0)
        return;
    for (size_t a = 0; a < 3; a++) {
        for (size_t i = 0; i < acl->g[a].n; i++)
            wsb_pattern_free(acl->g[a].pats[i]);
        free(acl->g[a].pats);
    }
    free(acl);
}

bool wsb_acl_check(const struct wsb_acl *acl, enum wsb_acl_action action, const char *channel,
                   size_t len)
{
    const struct grants *g;

    if (!acl ||
        (action != WSB_ACL_SUBSCRIBE && action != WSB_ACL_PUBLISH &&
         action != WSB_ACL_UNFILTERED) ||
        !wsb_channel_valid(channel, len))
        return false;
    g = &acl->g[action];
    for (size_t i = 0; i < g->n; i++)
        if (wsb_pattern_match(g->pats[i], channel, len, NULL))
            return true;
    return false;
}
