/* Channel names and channel patterns: `*` one segment, trailing `**` one or more,
 * `{1}` capture insertion, `{sub}` / `{claim.NAME}` templates (ACLs). Pure code. */
#ifndef WSB_UTIL_PATTERN_H
#define WSB_UTIL_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

#define WSB_CHANNEL_MAX 255 /* bytes in a channel name */
#define WSB_PATTERN_MAX_CAPTURES 16

/** True when `name` is a valid channel name: 1..WSB_CHANNEL_MAX bytes of dot-separated,
 * non-empty segments of [A-Za-z0-9_-]. */
bool wsb_channel_valid(const char *name, size_t len);

/** True when `seg` is one valid segment ([A-Za-z0-9_-]+). Used to refuse template values
 * that would widen a pattern (a `{sub}` of "a.*" is never substituted). */
bool wsb_segment_valid(const char *seg, size_t len);

/** A compiled pattern; opaque, immutable, any thread may match concurrently. */
struct wsb_pattern;

/** Resolves a template name ("sub", "claim.roles") to a value. Returns NULL when the
 * name is unknown or has no scalar value. Borrowed result, valid during compile. */
typedef const char *(*wsb_template_cb)(void *ctx, const char *name, size_t name_len);

/** Checks pattern syntax without templates resolved: segments of [A-Za-z0-9_-] or `*`, an
 * optional final `**`, and, when `allow_templates`, `{name}` pieces inside segments.
 * Writes a short reason to `err` on failure. Returns 0 when valid, -1 otherwise. */
int wsb_pattern_check(const char *pattern, bool allow_templates, char *err, size_t errlen);

/** Compiles `pattern`. Templates are resolved through `resolve` (may be NULL when the
 * pattern has none). A template whose value is missing or is not a single valid segment
 * makes the whole pattern unusable: returns NULL with *dropped = true (never widens access).
 * Returns NULL with *dropped = false on syntax error or allocation failure.
 * The caller owns the result (wsb_pattern_free). */
struct wsb_pattern *wsb_pattern_compile(const char *pattern, wsb_template_cb resolve, void *ctx,
                                        bool *dropped);
void wsb_pattern_free(struct wsb_pattern *p);

/** Segment captures of one match: the text matched by each `*` and by `**`, in order. */
struct wsb_captures {
    size_t n;
    struct {
        const char *ptr; /* into the matched name */
        size_t len;
    } cap[WSB_PATTERN_MAX_CAPTURES];
};

/** Matches a full channel name. `caps` may be NULL. Returns true on match. */
bool wsb_pattern_match(const struct wsb_pattern *p, const char *name, size_t len,
                       struct wsb_captures *caps);

/** Expands `{1}`..`{16}` in `tmpl` with `caps` into `out` (NUL-terminated).
 * Returns the length written, or -1 when out is too small or a capture is missing. */
int wsb_pattern_expand(const char *tmpl, const struct wsb_captures *caps, char *out, size_t outlen);

/** Checks that every `{N}` in `tmpl` refers to a capture index <= ncaptures. */
int wsb_pattern_expand_check(const char *tmpl, size_t ncaptures, char *err, size_t errlen);

/** Number of captures a (template-free) pattern produces: one per `*` plus one for `**`. */
size_t wsb_pattern_ncaptures(const struct wsb_pattern *p);

#endif
