/* JWT verification: the key store (PEM files, inline secrets, JWKS) and the checks of
 * RFC 7519/7515 we enforce (alg allow-list bound to key type, exp/nbf/iat with leeway,
 * iss, aud, require_exp). Verification is paid once per handshake or `auth` op. */
#ifndef WSB_AUTH_JWT_H
#define WSB_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config/config.h"
#include "util/err.h"

/** A verifier built from a config's auth section: keys loaded, immutable, shared by every
 * loop thread (verification is thread-safe). Reference-counted for reloads. */
struct wsb_auth;

/** Builds a verifier, reading key files and the JWKS file. Reads files: never on an event
 * loop. Returns WSB_OK or an error with a reason in `err` (no secret in it).
 * @locality main thread */
enum wsb_err wsb_auth_new(const struct wsb_auth_conf *conf, struct wsb_auth **out, char *err,
                          size_t errlen);
struct wsb_auth *wsb_auth_ref(struct wsb_auth *a);
void wsb_auth_unref(struct wsb_auth *a);

/** A verified identity; reference-counted. One allocation holds it, its `sub` and the
 * claim set as the token carried it (JSON text), so a long-lived session can drop the parsed
 * claims (wsb_identity_compact) and parse them again only when it needs them. */
struct wsb_identity {
    int refs;                /* owned by one loop thread at a time */
    char *sub;               /* "sub" claim, or NULL (points into this allocation) */
    int64_t exp;             /* "exp" (unix seconds), 0 when absent */
    json_t *claims;          /* the parsed claim set, owned, or NULL once compacted */
    const char *claims_text; /* the claim set's JSON text (in this allocation) */
    size_t claims_len;
};

struct wsb_identity *wsb_identity_ref(struct wsb_identity *id);
void wsb_identity_unref(struct wsb_identity *id);

/** The claim set: a new reference (parsed again from the text when compacted), or NULL on
 * allocation failure. @locality the identity's owner */
json_t *wsb_identity_claims(struct wsb_identity *id);

/** Frees the parsed claim set (~0.6-1 KiB of jansson objects for a small token); the text
 * stays. For identities kept while idle (sessions, docs/benchmarks.md Footprint). */
void wsb_identity_compact(struct wsb_identity *id);

/** Verifies a compact JWS token at time `now` (unix seconds).
 * Returns WSB_OK and a new identity (caller owns it), or WSB_ERR_AUTH with *code set to a
 * static wire reason: "token_missing", "token_malformed", "token_invalid" (signature or
 * key), "token_alg" (alg not allowed or not matching the key), "token_typ" (a `typ` header
 * other than JWT / at+jwt, RFC 9068), "token_expired",
 * "token_not_yet_valid", "token_issuer", "token_audience", "token_exp_required".
 * Never logs or copies the token into error text. @locality any */
enum wsb_err wsb_auth_verify(const struct wsb_auth *a, const char *token, size_t len, int64_t now,
                             struct wsb_identity **out, const char **code);

/** How many signature checks (one per candidate key tried) the calling thread has made
 * since it started: a token costs at most as many checks as it has candidate keys. Tests
 * only. @locality any */
unsigned long wsb_auth_signature_checks(void);

/** How many verifications the calling thread answered from its verified-token cache (an
 * RS/ES token seen before, verified by the same verifier, not expired: no signature check).
 * Tests only. @locality any */
unsigned long wsb_auth_cache_hits(void);
/** Empties the calling thread's verified-token cache: a test that counts hits starts from
 * no entry (the cache is 2-way sets, so an earlier entry in a token's set could evict it).
 * Tests only. @locality any */
void wsb_auth_cache_clear(void);

/** The leeway in seconds applied to exp/nbf. */
int wsb_auth_leeway(const struct wsb_auth *a);

#endif
