/* A growable byte buffer with JSON-string helpers. Plain value type; owner frees. */
#ifndef WSB_UTIL_BUF_H
#define WSB_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    bool oom; /* set once an allocation failed; further appends are ignored */
};

void wsb_buf_init(struct wsb_buf *b);
void wsb_buf_cleanup(struct wsb_buf *b);
/** Makes room for `n` more bytes. Returns 0 or -1 (and sets oom). */
int wsb_buf_reserve(struct wsb_buf *b, size_t n);
void wsb_buf_append(struct wsb_buf *b, const void *p, size_t n);
void wsb_buf_puts(struct wsb_buf *b, const char *s);
void wsb_buf_printf(struct wsb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends v in decimal (what "%" PRIu64 / PRId64 print), without printf's parsing. */
void wsb_buf_u64(struct wsb_buf *b, uint64_t v);
void wsb_buf_i64(struct wsb_buf *b, int64_t v);
/** Writes v in decimal to out (at least 20 bytes; no NUL). Returns the length. */
size_t wsb_fmt_u64(char *out, uint64_t v);
/** Appends `p` as a JSON string literal with quotes, escaping per RFC 8259. `p` must be
 * valid UTF-8 (callers check); control characters become \u00XX. A length whose escaped
 * size would overflow size_t sets oom, like a failed allocation. */
void wsb_buf_json_str(struct wsb_buf *b, const void *p, size_t n);
/** Appends standard base64 (RFC 4648 §4, with padding); a length over SIZE_MAX / 2 sets oom. */
void wsb_buf_base64(struct wsb_buf *b, const void *p, size_t n);
/** Detaches the data (caller frees) and resets the buffer. */
uint8_t *wsb_buf_steal(struct wsb_buf *b, size_t *len);

#endif
