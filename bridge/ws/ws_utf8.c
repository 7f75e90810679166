/* Incremental UTF-8 validator: a small explicit automaton over RFC 3629 §4's byte ranges. */
#include "bridge/ws/ws_utf8.h"

#include <string.h>

/* The state packs what the next byte must be: bits 0-7 the continuation bytes still
 * needed, bits 8-15 the lowest and bits 16-23 the highest allowed next byte. The narrow
 * ranges after E0, ED, F0 and F4 are what reject overlongs, surrogates (U+D800..DFFF) and
 * code points above U+10FFFF at the first offending byte (RFC 3629 §4 table). */
#define REJECT 0xffffffffu
#define PACK(need, lo, hi) ((uint32_t)(need) | (uint32_t)(lo) << 8 | (uint32_t)(hi) << 16)

static uint32_t lead(uint8_t b)
{
    if (b >= 0xc2 && b <= 0xdf)
        return PACK(1, 0x80, 0xbf);
    if (b == 0xe0)
        return PACK(2, 0xa0, 0xbf);
    if (b == 0xed)
        return PACK(2, 0x80, 0x9f);
    if (b >= 0xe1 && b <= 0xef)
        return PACK(2, 0x80, 0xbf);
    if (b == 0xf0)
        return PACK(3, 0x90, 0xbf);
    if (b >= 0xf1 && b <= 0xf3)
        return PACK(3, 0x80, 0xbf);
    if (b == 0xf4)
        return PACK(3, 0x80, 0x8f);
    return REJECT; /* 80..C1 (stray continuation, overlong lead) and F5..FF */
}

static uint32_t step(uint32_t state, uint8_t b)
{
    if (state == 0)
        return b < 0x80 ? 0 : lead(b);
    uint8_t lo = (uint8_t)(state >> 8), hi = (uint8_t)(state >> 16);
    if (b < lo || b > hi)
        return REJECT;
    uint32_t need = (state & 0xff) - 1;
    return need == 0 ? 0 : PACK(need, 0x80, 0xbf);
}

int wsb_utf8_feed(struct wsb_utf8 *u, const uint8_t *p, size_t len)
{
    uint32_t state = u->state;
    size_t i = 0;

    if (state == REJECT)
        return -1;
    while (i < len) {
        if (state == 0) {
            /* ASCII fast path: eight bytes at a time while no high bit is set */
            while (len - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            while (i < len && p[i] < 0x80)
                i++;
            if (i == len)
                break;
        }
        state = step(state, p[i++]);
        if (state == REJECT) {
            u->state = REJECT;
            return -1;
        }
    }
    u->state = state;
    return 0;
}

bool wsb_utf8_valid(const uint8_t *p, size_t len)
{
    struct wsb_utf8 u;

    wsb_utf8_init(&u);
    return wsb_utf8_feed(&u, p, len) == 0 && wsb_utf8_complete(&u);
}
