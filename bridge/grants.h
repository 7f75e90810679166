/* A session's grants over its life: ACL compile from the token's and a client certificate's
 * claims, re-checks after `auth` and reloads, the token-expiry deadline. Above the session layer's
 * state (session.c); called by upgrade, ops, sse, httppub and the worker loop. */
#ifndef WSB_BRIDGE_GRANTS_H
#define WSB_BRIDGE_GRANTS_H

#include <stddef.h>

struct wsb_session;
struct wsb_channel_rule;
struct wsb_filter_spec;
struct wsb_filter;
struct wsb_worker;

/** An admitted session opens: the session's buckets and pings (wsb_session_start), then its
 * ACL compiled and, for a stream, the token-expiry timer armed. */
void wsb_grants_start(struct wsb_session *s);

/** Compiles the ACL for the current identity and runtime; subscriptions it no longer allows
 * end with `unsubscribed` reason forbidden; the others' filters are resolved again (a
 * subscriber moves filter group; one whose own filter now widens ends, forbidden). Keeps the
 * old grants on OOM. */
void wsb_grants_recompile(struct wsb_session *s);

/** (Re)sets the token-expiry deadline from the identity's `exp` (4401 when it passes). */
void wsb_grants_set_expiry(struct wsb_session *s);

/** The per-record filter of a subscription to `ch` (routed to `rule`): the rule's `filter`
 * resolved with the session's claims and the channel's captures (none when the ACL grants
 * `unfiltered` on `ch`), ANDed with the client's own `client` (may be NULL). Returns 0 with
 * *out the filter (NULL: every record; the caller owns it), 1 when the client's filter asks
 * for records the channel's withholds (answer `forbidden`), -1 on OOM. */
int wsb_grants_filter(struct wsb_session *s, const struct wsb_channel_rule *rule, const char *ch,
                      size_t len, const struct wsb_filter_spec *client, struct wsb_filter **out);

/** Re-checks an open session against its worker's (new) runtime: limits and ACLs. */
void wsb_grants_recheck(struct wsb_session *s);

/** Drops the worker's shared ACL (and the runtime it was compiled from): after a reload's
 * re-checks, and when the worker is freed. Sessions keep their own references. */
void wsb_grants_forget_shared(struct wsb_worker *w);

#endif
