/* libFuzzer target: the frame decoder gives the same events for any split of its input. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/ws/ws_frame.h"

/* assert() would vanish under NDEBUG */
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "check failed: %s\n", #x);                                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct rec {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct rec *r, const void *p, size_t n)
{
    CHECK(r->len + n <= r->cap);
    memcpy(r->p + r->len, p, n);
    r->len += n;
}

/* Parses `in` in pieces whose sizes come from `splits` (0 = all at once), recording a
 * canonical event stream: message boundaries, payload bytes, control frames, the error. */
static void run(const uint8_t *in, size_t len, const uint8_t *splits, size_t nsplits, uint64_t max,
                bool rsv1, struct rec *r)
{
    struct wsb_frame_parser p;
    uint8_t *copy = malloc(len ? len : 1);
    size_t off = 0, k = 0;
    bool open = false;
    uint64_t msg = 0;

    memcpy(copy, in, len);
    wsb_frame_parser_init(&p, max, rsv1);
    while (off < len) {
        size_t n = nsplits ? 1 + splits[k++ % nsplits] % 64 : len;
        if (n > len - off)
            n = len - off;
        uint8_t *b = copy + off;
        size_t left = n;
        for (;;) {
            struct wsb_frame_ev ev;
            size_t used = wsb_frame_parse(&p, b, left, &ev);
            CHECK(used <= left);
            if (ev.type == WSB_FEV_ERROR) {
                CHECK(ev.close_code == 1002 || ev.close_code == 1009);
                CHECK(ev.reason != NULL);
                put(r, "E", 1);
                put(r, &ev.close_code, 2);
                goto done;
            }
            if (ev.type == WSB_FEV_DATA) {
                CHECK(ev.payload >= b && ev.payload + ev.len <= b + left);
                CHECK(ev.opcode == WSB_OP_TEXT || ev.opcode == WSB_OP_BINARY);
                CHECK(ev.compressed ? rsv1 : true);
                CHECK(ev.message_start == !open);
                if (ev.message_start) {
                    uint8_t h[2] = {ev.opcode, ev.compressed};
                    put(r, "S", 1);
                    put(r, h, 2);
                    open = true;
                    msg = 0;
                }
                msg += ev.len;
                CHECK(msg <= max);
                put(r, ev.payload, ev.len);
                if (ev.message_end) {
                    put(r, "F", 1);
                    open = false;
                }
            } else if (ev.type == WSB_FEV_CONTROL) {
                CHECK(ev.len <= 125);
                CHECK(ev.opcode == WSB_OP_CLOSE || ev.opcode == WSB_OP_PING ||
                      ev.opcode == WSB_OP_PONG);
                uint8_t h[2] = {ev.opcode, (uint8_t)ev.len};
                put(r, "C", 1);
                put(r, h, 2);
                put(r, ev.payload, ev.len);
                uint16_t code;
                (void)wsb_close_payload_check(ev.payload, ev.len, &code);
            } else {
                CHECK(used == left);
                break;
            }
            b += used;
            left -= used;
        }
        off += n;
    }
done:
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    /* byte 0: options; byte 1: message limit; byte 2: split-table length */
    bool rsv1 = data[0] & 1;
    uint64_t max = data[1] == 255 ? UINT64_MAX : (uint64_t)data[1] * 16;
    size_t nsplits = data[2] % 16;
    data += 3;
    size = size - 3;
    if (nsplits > size)
        nsplits = size;
    const uint8_t *splits = data;
    data += nsplits;
    size -= nsplits;

    size_t cap = 4 * size + 16;
    struct rec a = {malloc(cap), 0, cap}, b = {malloc(cap), 0, cap}, c = {malloc(cap), 0, cap};
    run(data, size, NULL, 0, max, rsv1, &a);
    run(data, size, splits, nsplits, max, rsv1, &b);
    static const uint8_t one[1] = {0};
    run(data, size, one, 1, max, rsv1, &c);
    CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
    CHECK(a.len == c.len && memcmp(a.p, c.p, a.len) == 0);
    free(a.p);
    free(b.p);
    free(c.p);

    uint8_t hdr[10];
    uint64_t len = 0;
    for (size_t i = 0; i < size && i < 8; i++)
        len = len << 8 | data[i];
    size_t n = wsb_frame_header(hdr, WSB_OP_BINARY, true, rsv1, len);
    CHECK(n == 2 || n == 4 || n == 10);
    return 0;
}
