/* libFuzzer target: bounded inflater (limit, splits, reuse), negotiation, deflate round trip. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/ws/ws_deflate.h"

/* assert() would vanish under NDEBUG */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed: %s\n", #x);                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct sink {
    uint64_t seen;
    uint8_t *copy; /* when set, output is collected here (up to cap) */
    size_t len, cap;
};

static int sink_cb(void *ctx, const uint8_t *p, size_t len)
{
    struct sink *s = ctx;

    CHECK(len > 0 && len <= 16384);
    s->seen += len;
    if (s->copy) {
        CHECK(s->len + len <= s->cap);
        memcpy(s->copy + s->len, p, len);
        s->len += len;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool reset = data[0] & 1;
    int bits = 9 + (data[0] >> 1) % 7;
    uint64_t limit = (uint64_t)data[1] << 10; /* 0 .. 255 KiB */
    size_t step = 1 + (data[0] >> 4) * 7;
    const uint8_t *in = data + 2;
    size_t len = size - 2;

    /* the input as two compressed messages, in pieces */
    struct wsb_inflater *z = wsb_inflater_new(bits, reset);
    if (!z)
        return 0;
    for (int msg = 0; msg < 2; msg++) {
        struct sink s = {0};
        uint64_t total = 0;
        size_t off = 0;
        int rc = 0;
        do {
            size_t n = len - off < step ? len - off : step;
            rc = wsb_inflater_feed(z, in + off, n, off + n == len, limit, &total, sink_cb, &s);
            off += n;
        } while (rc == 0 && off < len);
        CHECK(rc == 0 || rc == 1007 || rc == 1009);
        CHECK(total <= limit && s.seen == total);
        if (rc != 0)
            break;
    }
    wsb_inflater_free(z);

    /* negotiation on the raw bytes */
    struct wsb_pmd_params params;
    char resp[128];
    int r = wsb_pmd_negotiate((const char *)in, len, &params, resp, sizeof(resp));
    CHECK(r >= -1 && r <= 1);
    if (r == 1) {
        CHECK(strncmp(resp, "permessage-deflate; server_no_context_takeover", 46) == 0);
        CHECK(params.server_max_window_bits >= 9 && params.server_max_window_bits <= 15);
    }

    /* round trip through our own deflater */
    struct wsb_deflater *d = wsb_deflater_new(bits);
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (d && wsb_deflate_message(d, in, len, 14, &out, &out_len) == 0) {
        struct wsb_inflater *zi = wsb_inflater_new(15, false);
        struct sink s = {0, malloc(len + 1), 0, len};
        uint64_t total = 0;
        CHECK(zi);
        CHECK(wsb_inflater_feed(zi, out + 14, out_len, true, len, &total, sink_cb, &s) == 0);
        CHECK(s.len == len && memcmp(s.copy, in, len) == 0);
        free(s.copy);
        wsb_inflater_free(zi);
        free(out);
    }
    wsb_deflater_free(d);
    return 0;
}
