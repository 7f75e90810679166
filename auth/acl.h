/* Per-connection access control (SPEC §2): rules with claim conditions and {sub} /
 * {claim.NAME} templates, plus the token's own permissions claim. Deny unless granted.
 * Compiled once per connection (and after a token refresh or reload), checked per request. */
#ifndef WSB_AUTH_ACL_H
#define WSB_AUTH_ACL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "config/config.h"

/* UNFILTERED: read a channel without its rule's per-record `filter` (acl[].unfiltered, or
 * "unfiltered" in the permissions claim); it grants no subscription by itself. */
enum wsb_acl_action { WSB_ACL_SUBSCRIBE, WSB_ACL_PUBLISH, WSB_ACL_UNFILTERED };

struct wsb_acl;

/** True when some rule has a `when` condition or a template: its grants depend on the
 * claims. Otherwise every identity whose claims lack the permissions claim gets the grants
 * of wsb_acl_compile(rules, nrules, NULL, NULL), which callers may then share. */
bool wsb_acl_rules_use_claims(const struct wsb_acl_rule *rules, size_t nrules);

/** Compiles the grants for one identity: every rule whose `when` holds for `claims`,
 * templates resolved from `claims` (a template value that is not one valid segment drops
 * that pattern), plus claims[permissions_claim] {"subscribe": [...], "publish": [...]}
 * when permissions_claim is non-NULL (those patterns take no templates; an "unfiltered" list
 * there grants WSB_ACL_UNFILTERED).
 * `claims` may be NULL (anonymous): only rules without `when` and without templates apply.
 * Returns NULL only on allocation failure. The caller owns the result (one reference). */
struct wsb_acl *wsb_acl_compile(const struct wsb_acl_rule *rules, size_t nrules,
                                const json_t *claims, const char *permissions_claim);
/** Another reference (not thread-safe: one thread owns the ACL at a time). */
struct wsb_acl *wsb_acl_ref(struct wsb_acl *acl);
/** Drops a reference; the last frees the grants. NULL is ignored. */
void wsb_acl_free(struct wsb_acl *acl);

/** True when `action` on `channel` is granted. The channel must be a valid channel name. */
bool wsb_acl_check(const struct wsb_acl *acl, enum wsb_acl_action action, const char *channel,
                   size_t len);

#endif
