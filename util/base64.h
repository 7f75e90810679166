/* RFC 4648 base64 decoding (the encoder appends to a buffer: wsb_buf_base64). Pure. */
#ifndef WSB_UTIL_BASE64_H
#define WSB_UTIL_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Decodes `in`: with `url`, RFC 4648 §5 base64url without padding (JWT segments, the SSE
 * resume token); else §4 base64 padded with '=' to a multiple of 4. Returns the decoded
 * length, or -1 when `in` is not that. `out` must hold len * 3 / 4 + 1 bytes.
 * @locality any */
long wsb_base64_decode(const char *in, size_t len, bool url, uint8_t *out);

#endif
