/* Runtime snapshots: config + keys, refcounted. */
#include "bridge/runtime.h"

#include <stdio.h>
#include <stdlib.h>

#include "auth/jwt.h"
#include "bridge/tls.h"
#include "config/config.h"

struct wsb_runtime *wsb_runtime_new(struct wsb_config *cfg, char *err, size_t errlen)
{
    struct wsb_runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&rt->refs, 1);
    if (cfg->auth.enabled && wsb_auth_new(&cfg->auth, &rt->auth, err, errlen) != WSB_OK) {
        free(rt);
        return NULL;
    }
    if (cfg->tls_cert != NULL && wsb_tls_ctx_new(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca,
                                                 &rt->tls, err, errlen) != WSB_OK) {
        if (rt->auth)
            wsb_auth_unref(rt->auth);
        free(rt);
        return NULL;
    }
    rt->cfg = cfg;
    return rt;
}

struct wsb_runtime *wsb_runtime_ref(struct wsb_runtime *rt)
{
    atomic_fetch_add(&rt->refs, 1);
    return rt;
}

void wsb_runtime_unref(struct wsb_runtime *rt)
{
    if (!rt || atomic_fetch_sub(&rt->refs, 1) != 1)
        return;
    if (rt->auth)
        wsb_auth_unref(rt->auth);
    wsb_tls_ctx_free(rt->tls);
    wsb_config_unref(rt->cfg);
    free(rt);
}
