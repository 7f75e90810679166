/* Shared frames and per-session out-queues. */
#include "bridge/outq.h"

#include <stdlib.h>
#include <string.h>

#include "bridge/ws/ws_deflate.h"
#include "bridge/ws/ws_frame.h"

#define DEFLATE_MIN_BYTES 128 /* smaller payloads are sent uncompressed */

struct wsb_frame *wsb_frame_wrap(uint8_t opcode, bool rsv1, uint8_t *buf, size_t headroom,
                                 size_t len)
{
    uint8_t hdr[10];
    size_t hl = wsb_frame_header(hdr, opcode, true, rsv1, len);
    struct wsb_frame *f = malloc(sizeof(*f));
    if (!f || headroom < hl) {
        free(f);
        free(buf);
        return NULL;
    }
    memcpy(buf + headroom - hl, hdr, hl);
    f->refs = 1;
    f->ts_ms = -1;
    f->deflated = NULL;
    f->sse = NULL;
    f->partition = -1;
    f->offset = -1;
    f->hdr_len = hl;
    f->len = hl + len;
    f->data = buf + headroom - hl;
    f->alloc = buf;
    return f;
}

struct wsb_frame *wsb_frame_new(uint8_t opcode, bool rsv1, const uint8_t *payload, size_t len)
{
    uint8_t *buf = malloc(10 + len);
    if (!buf)
        return NULL;
    if (len)
        memcpy(buf + 10, payload, len);
    return wsb_frame_wrap(opcode, rsv1, buf, 10, len);
}

struct wsb_frame *wsb_frame_raw(const uint8_t *bytes, size_t len)
{
    struct wsb_frame *f = malloc(sizeof(*f));
    uint8_t *buf = malloc(len ? len : 1);
    if (!f || !buf) {
        free(f);
        free(buf);
        return NULL;
    }
    if (len)
        memcpy(buf, bytes, len);
    *f = (struct wsb_frame){.refs = 1,
                            .ts_ms = -1,
                            .partition = -1,
                            .offset = -1,
                            .len = len,
                            .data = buf,
                            .alloc = buf};
    return f;
}

void wsb_frame_unref(struct wsb_frame *f)
{
    if (!f || --f->refs > 0)
        return;
    if (f->deflated && f->deflated != f)
        wsb_frame_unref(f->deflated);
    if (f->sse)
        wsb_frame_unref(f->sse);
    free(f->alloc);
    free(f);
}

struct wsb_frame *wsb_frame_deflated(struct wsb_frame *f, struct wsb_deflater *z)
{
    if (f->deflated)
        return f->deflated;
    size_t plen = f->len - f->hdr_len;
    f->deflated = f;
    if (plen < DEFLATE_MIN_BYTES || !z)
        return f;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (wsb_deflate_message(z, wsb_frame_payload(f), plen, 10, &out, &out_len) != 0)
        return f;
    if (out_len >= plen) {
        free(out);
        return f;
    }
    uint8_t opcode = f->data[0] & 0x0f;
    struct wsb_frame *d = wsb_frame_wrap(opcode, true, out, 10, out_len);
    if (!d)
        return f;
    d->ts_ms = f->ts_ms;
    d->deflated = d;
    f->deflated = d;
    return d;
}

void wsb_outq_init(struct wsb_outq *q)
{
    memset(q, 0, sizeof(*q));
}

void wsb_outq_cleanup(struct wsb_outq *q)
{
    struct wsb_outq_item it;
    while (wsb_outq_pop(q, &it))
        wsb_frame_unref(it.frame);
    free(q->items);
    wsb_outq_init(q);
}

static int grow(struct wsb_outq *q)
{
    size_t cap = q->cap ? q->cap * 2 : 16;
    struct wsb_outq_item *items = malloc(cap * sizeof(*items));
    if (!items)
        return -1;
    for (size_t i = 0; i < q->count; i++)
        items[i] = q->items[(q->head + i) % q->cap];
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int wsb_outq_push(struct wsb_outq *q, struct wsb_frame *f, enum wsb_outq_kind kind, uint32_t tag)
{
    if (q->count == q->cap && grow(q) < 0) {
        wsb_frame_unref(f);
        return -1;
    }
    struct wsb_outq_item *it = &q->items[(q->head + q->count) % q->cap];
    it->frame = f;
    it->kind = kind;
    it->tag = tag;
    q->count++;
    q->bytes += f->len;
    return 0;
}

#define KEEP_CAP 64 /* an empty ring larger than this is freed */

bool wsb_outq_pop(struct wsb_outq *q, struct wsb_outq_item *out)
{
    if (q->count == 0)
        return false;
    *out = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    q->bytes -= out->frame->len;
    if (q->count == 0) {
        q->head = 0;
        if (q->cap > KEEP_CAP) {
            free(q->items);
            q->items = NULL;
            q->cap = 0;
        }
    }
    return true;
}

size_t wsb_outq_purge(struct wsb_outq *q, uint32_t tag)
{
    size_t removed = 0, keep = 0, n = q->count;
    for (size_t i = 0; i < n; i++) {
        struct wsb_outq_item it = q->items[(q->head + i) % q->cap];
        if (it.kind != WSB_OUTQ_REPLY && it.tag == tag) {
            q->bytes -= it.frame->len;
            wsb_frame_unref(it.frame);
            removed++;
            continue;
        }
        q->items[(q->head + keep) % q->cap] = it;
        keep++;
    }
    q->count = keep;
    return removed;
}

void wsb_outq_each(const struct wsb_outq *q, void (*fn)(void *ctx, uint32_t kind, uint32_t tag),
                   void *ctx)
{
    for (size_t i = 0; i < q->count; i++) {
        const struct wsb_outq_item *it = &q->items[(q->head + i) % q->cap];
        fn(ctx, it->kind, it->tag);
    }
}

size_t wsb_outq_drop_oldest(struct wsb_outq *q, uint64_t target,
                            void (*dropped)(void *ctx, uint32_t tag), void *ctx)
{
    size_t ndropped = 0, keep = 0;
    size_t n = q->count;
    /* Compact in place: walk every item once, keep replies and the messages we do not need
     * to drop. */
    for (size_t i = 0; i < n; i++) {
        struct wsb_outq_item it = q->items[(q->head + i) % q->cap];
        if (it.kind == WSB_OUTQ_MESSAGE && q->bytes > target) {
            q->bytes -= it.frame->len;
            if (dropped)
                dropped(ctx, it.tag);
            wsb_frame_unref(it.frame);
            ndropped++;
            continue;
        }
        q->items[(q->head + keep) % q->cap] = it;
        keep++;
    }
    q->count = keep;
    return ndropped;
}
