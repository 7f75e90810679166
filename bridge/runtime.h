/* Runtime snapshots: an immutable configuration with the key material built from it.
 * Workers and sessions hold references; a reload builds a new one and swaps it in, and a
 * session keeps the one it started with until its worker re-checks it. */
#ifndef WSB_BRIDGE_RUNTIME_H
#define WSB_BRIDGE_RUNTIME_H

#include <stdatomic.h>
#include <stddef.h>

struct ssl_ctx_st;
struct wsb_auth;
struct wsb_config;

struct wsb_runtime {
    atomic_int refs;
    struct wsb_config *cfg;
    struct wsb_auth *auth;  /* NULL when auth is disabled */
    struct ssl_ctx_st *tls; /* the listener's TLS context (bridge/tls.h); NULL without tls */
};

/** Builds a snapshot of `cfg` with one reference: JWT keys and, with a `tls` section, a TLS
 * context read from the certificate, key and CA files now (so a reload re-reads them). On
 * success it takes over the caller's reference to `cfg`; on failure (NULL, reason in err, e.g.
 * "tls.key /path: does not match ...") the caller keeps it. */
struct wsb_runtime *wsb_runtime_new(struct wsb_config *cfg, char *err, size_t errlen);

/** @locality any */
struct wsb_runtime *wsb_runtime_ref(struct wsb_runtime *rt);
/** Drops one reference; the last frees the snapshot. NULL is ignored. @locality any */
void wsb_runtime_unref(struct wsb_runtime *rt);

#endif
