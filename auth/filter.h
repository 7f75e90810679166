/* Per-record filters (issue 15, SPEC §11 `channels[].filter`): a filter spec compiled from a
 * channel rule (templates `{sub}`, `{claim.NAME}`, `{N}`) or from a client's `subscribe.filter`
 * (literal values), resolved per subscription against the identity and the channel's
 * captures into an immutable filter that compares a record's key and headers byte-exactly.
 * Pure code but for the per-rule counters of wsbridge_filtered_records_total. */
#ifndef WSB_AUTH_FILTER_H
#define WSB_AUTH_FILTER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/pattern.h"

#define WSB_FILTER_VALUE_MAX 256  /* bytes of a resolved key / header value, and of a name */
#define WSB_FILTER_ALTS_MAX 16    /* alternatives in one list */
#define WSB_FILTER_HEADERS_MAX 16 /* header conditions in one alternative */
#define WSB_FILTER_LABELS_MAX 256 /* distinct `rule` labels; later rules share "other" */

struct wsb_msg;

/** How a spec's values are read: templates (channel rules) or literal text (clients). */
enum wsb_filter_mode { WSB_FILTER_TEMPLATES, WSB_FILTER_LITERAL };

/** A compiled filter spec: alternatives (ORed) of conditions (ANDed). Immutable. */
struct wsb_filter_spec;

/** A resolved filter: the spec with every value known. Immutable once built; any thread may
 * match. A filter with no alternative matches nothing. */
struct wsb_filter;

/** Compiles `v`: an object `{"key": T?, "headers": {"NAME": T, ...}?}` with at least one
 * condition, or a non-empty array of such objects. In TEMPLATES mode T may hold `{sub}`,
 * `{claim.NAME}` and `{1}`..`{16}` (a `{N}` beyond `ncaptures` is an error); in LITERAL mode T
 * is the value itself. On error returns NULL, writes the place relative to the spec to
 * errpath ("[1].headers.tenant", "key"; "" for the whole) and the reason to err. The caller
 * owns the result. */
struct wsb_filter_spec *wsb_filter_spec_parse(const json_t *v, enum wsb_filter_mode mode,
                                              size_t ncaptures, char *errpath, size_t pathlen,
                                              char *err, size_t errlen);
void wsb_filter_spec_free(struct wsb_filter_spec *spec);

/** Resolves `spec` for one subscription. `claims` (may be NULL) gives `{sub}` (the `sub`
 * string claim) and `{claim.NAME}` (a top-level string, or an integer as decimal text);
 * `caps` (may be NULL) gives `{N}`. An alternative with a template whose value is missing,
 * of another type (array, object, real, boolean, null), empty, holding a NUL, or whose
 * resolved value exceeds WSB_FILTER_VALUE_MAX bytes is dropped: it never widens. When every
 * alternative drops, the filter matches nothing. `counter` (may be NULL) is incremented by
 * the hub for each record a group with this filter did not take. Returns NULL only on
 * allocation failure. The caller owns the result (wsb_filter_free). */
struct wsb_filter *wsb_filter_resolve(const struct wsb_filter_spec *spec, const json_t *claims,
                                      const struct wsb_captures *caps,
                                      atomic_uint_fast64_t *counter);

/** The conjunction of a channel filter and a client filter, either NULL for "no filter":
 * every pair of alternatives ANDed, pairs that pin one field to two values left out. Sets
 * *widen when `chan` has at least one alternative and no pair survives (the client asked for
 * records the channel filter withholds). The result takes `counter` (NULL, when both inputs
 * are NULL: unfiltered). Returns NULL with *oom on allocation failure. */
struct wsb_filter *wsb_filter_and(const struct wsb_filter *chan, const struct wsb_filter *client,
                                  atomic_uint_fast64_t *counter, bool *widen, bool *oom);

void wsb_filter_free(struct wsb_filter *f);

/** True when the record's key and headers satisfy one alternative: the key equal byte for
 * byte (a record without key satisfies no key condition), and for each header condition one
 * header of that name with that value. No allocation. @locality any */
bool wsb_filter_match(const struct wsb_filter *f, const struct wsb_msg *m);

/** The canonical text of a filter (equal filters, equal text; the hub's group key). Borrowed,
 * NUL-terminated; *len may be NULL. */
const char *wsb_filter_key(const struct wsb_filter *f, size_t *len);

/** Number of alternatives (0: matches nothing). */
size_t wsb_filter_alternatives(const struct wsb_filter *f);

/** True when the filter is one alternative with a key condition (the hub indexes such groups
 * by key); *key / *len then borrow that key. */
bool wsb_filter_single_key(const struct wsb_filter *f, const uint8_t **key, size_t *len);

/** The counter given at resolve time (may be NULL). */
atomic_uint_fast64_t *wsb_filter_counter(const struct wsb_filter *f);

/* ---- wsbridge_filtered_records_total{rule} ------------------------------------------------ */

/** The process-wide counter for channel rule `match` (created on first use; never freed, so
 * filters may keep the pointer across reloads). Past WSB_FILTER_LABELS_MAX labels, one shared
 * counter labelled "other". NULL only on allocation failure. @locality any (a mutex) */
atomic_uint_fast64_t *wsb_filter_rule_counter(const char *match);

/** Calls fn(label, value) for every rule counter. @locality any (a mutex) */
void wsb_filter_rule_counters(void (*fn)(void *ctx, const char *label, uint64_t value), void *ctx);

#endif
