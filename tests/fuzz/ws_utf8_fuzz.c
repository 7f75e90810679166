/* libFuzzer target: incremental UTF-8 validation agrees with one-shot and a reference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/ws/ws_utf8.h"

/* assert() would vanish under NDEBUG */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed: %s\n", #x);                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Reference (RFC 3629 §3 arithmetic). Returns the length of the longest prefix that is
 * valid or could still become valid, i.e. the index of the first bad byte, or len. */
static size_t ref_first_bad(const uint8_t *p, size_t n, bool *complete)
{
    size_t i = 0;

    *complete = true;
    while (i < n) {
        uint8_t b = p[i];
        uint32_t cp, min;
        size_t k;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            cp = b & 0x1f, k = 1, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            cp = b & 0x0f, k = 2, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            cp = b & 0x07, k = 3, min = 0x10000;
        } else {
            return i;
        }
        if (b == 0xc0 || b == 0xc1 || b > 0xf4)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n) {
                *complete = false;
                return n;
            }
            if ((p[i + j] & 0xc0) != 0x80)
                return i + j;
            cp = cp << 6 | (p[i + j] & 0x3f);
            /* after the second byte the range is known: overlong, surrogate, too big */
            if (j == 1) {
                uint32_t hi = cp << (6 * (k - 1)) | ((1u << (6 * (k - 1))) - 1);
                uint32_t lo = cp << (6 * (k - 1));
                if (hi < min || lo > 0x10ffff || (k == 2 && lo >= 0xd800 && lo <= 0xdfff))
                    return i + j;
            }
        }
        i += k + 1;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool complete;
    size_t bad = ref_first_bad(data, size, &complete);
    bool valid = bad == size && complete;

    CHECK(wsb_utf8_valid(data, size) == valid);

    /* byte at a time: fails exactly at the first bad byte */
    struct wsb_utf8 u;
    wsb_utf8_init(&u);
    size_t i = 0;
    while (i < size && wsb_utf8_feed(&u, data + i, 1) == 0)
        i++;
    CHECK(i == bad);
    if (i == size)
        CHECK(wsb_utf8_complete(&u) == complete);

    /* chunks whose sizes come from the data itself */
    wsb_utf8_init(&u);
    size_t off = 0;
    int rc = 0;
    while (off < size && rc == 0) {
        size_t n = 1 + data[off] % 23;
        if (n > size - off)
            n = size - off;
        rc = wsb_utf8_feed(&u, data + off, n);
        off += n;
    }
    CHECK((rc == 0 && wsb_utf8_complete(&u)) == valid);
    return 0;
}
