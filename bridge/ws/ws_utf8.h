/* Incremental UTF-8 validation (RFC 3629), failing at the first byte that cannot start or
 * continue a valid sequence, across fragment boundaries. Pure. */
#ifndef WSB_WS_UTF8_H
#define WSB_WS_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_utf8 {
    uint32_t state; /* 0 = accept (between code points) */
};

static inline void wsb_utf8_init(struct wsb_utf8 *u)
{
    u->state = 0;
}

/** Feeds bytes. Returns 0 while still possibly valid, -1 as soon as invalid. */
int wsb_utf8_feed(struct wsb_utf8 *u, const uint8_t *p, size_t len);

/** True when the bytes fed so far end on a code point boundary. */
static inline bool wsb_utf8_complete(const struct wsb_utf8 *u)
{
    return u->state == 0;
}

/** One-shot check of a whole buffer. */
bool wsb_utf8_valid(const uint8_t *p, size_t len);

#endif
