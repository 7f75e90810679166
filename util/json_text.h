/* Strict JSON text (RFC 8259) without a parse tree: a validator, raw member extraction and
 * whitespace compaction. Pure: bytes in, no I/O. */
#ifndef WSB_UTIL_JSON_TEXT_H
#define WSB_UTIL_JSON_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** True when p[0..len) is exactly one valid JSON value (RFC 8259) with optional surrounding
 * whitespace, nesting <= 64. Pure, no allocation. */
bool wsb_json_valid(const uint8_t *p, size_t len);

/** Finds the value of member `name` (ASCII; escapes in the text are decoded) in the JSON
 * object text [p, end), which must already be valid (jansson accepted it). On success the
 * raw value text is [*vs, *ve) and true is returned. */
bool wsb_json_find_member(const uint8_t *p, const uint8_t *end, const char *name,
                          const uint8_t **vs, const uint8_t **ve);

/** Copies valid JSON text [p, end) without insignificant whitespace. Returns a malloc'd,
 * NUL-terminated string (NULL on OOM) and its length in *len. */
char *wsb_json_compact(const uint8_t *p, const uint8_t *end, size_t *len);

#endif
