/* A session's grants over its life: ACL compile from the token's and a client certificate's
 * claims, re-checks after `auth` and reloads, the token-expiry timer. Above the session layer's
 * state (session.c); called by upgrade, ops, sse, httppub and the worker loop. */
#ifndef WSB_BRIDGE_GRANTS_H
#define WSB_BRIDGE_GRANTS_H

struct wsb_session;

/** An admitted session opens: the session's buckets and pings (wsb_session_start), then its
 * ACL compiled and, for a stream, the token-expiry timer armed. */
void wsb_grants_start(struct wsb_session *s);

/** Compiles the ACL for the current identity and runtime; subscriptions it no longer allows
 * end with `unsubscribed` reason forbidden. Keeps the old grants on OOM. */
void wsb_grants_recompile(struct wsb_session *s);

/** (Re)arms the token-expiry timer from the identity's `exp` (4401 when it passes). */
void wsb_grants_set_expiry(struct wsb_session *s);

/** Re-checks an open session against its worker's (new) runtime: limits and ACLs. */
void wsb_grants_recheck(struct wsb_session *s);

#endif
