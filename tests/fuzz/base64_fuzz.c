/* libFuzzer target for util/base64.c (JWT segments, the SSE resume token, Basic credentials:
 * untrusted bytes). Decodes the input in both alphabets from an exactly sized copy into an
 * output of exactly the documented size, and checks that what decodes survives a round trip
 * through the encoder (wsb_buf_base64) in both forms. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/base64.h"
#include "util/buf.h"

/* assert() would vanish under NDEBUG */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

/* Decodes `text` (len bytes) and compares it with `want`. */
static void decodes_to(const char *text, size_t len, bool url, const uint8_t *want, size_t n)
{
    uint8_t *out = malloc(len * 3 / 4 + 1);
    CHECK(out);
    long got = wsb_base64_decode(text, len, url, out);
    CHECK(got == (long)n && memcmp(out, want, n) == 0);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    CHECK(in);
    memcpy(in, data, size);
    for (int url = 0; url < 2; url++) {
        uint8_t *out = malloc(size * 3 / 4 + 1);
        CHECK(out);
        long n = wsb_base64_decode(in, size, url, out);
        CHECK(n >= -1 && (n < 0 || (size_t)n <= size * 3 / 4));
        if (n >= 0) {
            struct wsb_buf b;
            wsb_buf_init(&b);
            wsb_buf_base64(&b, out, (size_t)n);
            CHECK(!b.oom && b.len % 4 == 0);
            /* The canonical text decodes to the same bytes, padded (§4) ... */
            decodes_to((const char *)b.data, b.len, false, out, (size_t)n);
            /* ... and in the url alphabet without padding (§5). */
            size_t l = b.len;
            while (l && b.data[l - 1] == '=')
                l--;
            for (size_t i = 0; i < l; i++)
                b.data[i] = b.data[i] == '+' ? '-' : b.data[i] == '/' ? '_' : b.data[i];
            decodes_to((const char *)b.data, l, true, out, (size_t)n);
            wsb_buf_cleanup(&b);
        }
        free(out);
    }
    free(in);
    return 0;
}
