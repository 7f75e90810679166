/* Frames and out-queues. A frame is a complete server WebSocket frame (header + payload),
 * built once and shared by reference by every session of one loop that sends it; its
 * compressed variant is built at most once, on first need. An out-queue holds a session's
 * frames that are not yet handed to the socket buffer, with byte accounting, so the
 * flow-control policy can drop whole messages (never a partial frame). */
#ifndef WSB_BRIDGE_OUTQ_H
#define WSB_BRIDGE_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_deflater;

/** A refcounted frame. Loop-local: refs are not atomic. */
struct wsb_frame {
    int refs;
    int64_t ts_ms;              /* broker timestamp for the latency histogram, -1 */
    struct wsb_frame *deflated; /* compressed variant (or this frame when not worth it) */
    struct wsb_frame *sse;      /* Server-Sent Events variant (sse_wire.h), NULL until asked */
    int32_t partition;          /* the broker position of a message frame, -1 when none */
    int64_t offset;
    size_t hdr_len; /* bytes of WebSocket header at the front of data */
    size_t len;     /* total bytes */
    uint8_t *data;  /* header then payload */
    void *alloc;    /* what to free */
};

/** Builds a frame of `opcode` with payload copied in. NULL on OOM. @locality loop */
struct wsb_frame *wsb_frame_new(uint8_t opcode, bool rsv1, const uint8_t *payload, size_t len);
/** Builds a frame around a malloc'd buffer that already has `headroom` free bytes before the
 * payload (takes ownership of buf). */
struct wsb_frame *wsb_frame_wrap(uint8_t opcode, bool rsv1, uint8_t *buf, size_t headroom,
                                 size_t len);
/** A frame of raw bytes with no WebSocket header (hdr_len 0): an SSE event. NULL on OOM. */
struct wsb_frame *wsb_frame_raw(const uint8_t *bytes, size_t len);
static inline struct wsb_frame *wsb_frame_ref(struct wsb_frame *f)
{
    f->refs++;
    return f;
}
void wsb_frame_unref(struct wsb_frame *f);
/** The permessage-deflate variant of a text/binary frame, built on first call with `z`
 * (returns `f` itself when the payload is small or does not shrink). Borrowed result. */
struct wsb_frame *wsb_frame_deflated(struct wsb_frame *f, struct wsb_deflater *z);
/** The payload of a frame. */
static inline const uint8_t *wsb_frame_payload(const struct wsb_frame *f)
{
    return f->data + f->hdr_len;
}

enum wsb_outq_kind {
    WSB_OUTQ_REPLY,   /* never dropped */
    WSB_OUTQ_MESSAGE, /* a channel message: may be dropped by drop_oldest */
    WSB_OUTQ_ACK,     /* a delivery of a `delivery: ack` channel: never dropped by
                       * drop_oldest (the broker hands it to one client only), purged only
                       * with its subscription (whose unacked deliveries go back) */
};

struct wsb_outq_item {
    struct wsb_frame *frame; /* owned reference */
    uint32_t kind;           /* enum wsb_outq_kind */
    uint32_t tag;            /* MESSAGE: the session's subscription slot */
};

/** FIFO ring of frames with byte accounting. */
struct wsb_outq {
    struct wsb_outq_item *items;
    size_t cap, head, count;
    uint64_t bytes;
};

void wsb_outq_init(struct wsb_outq *q);
void wsb_outq_cleanup(struct wsb_outq *q);
/** Appends (takes over the frame reference). Returns 0 or -1 on OOM (reference dropped). */
int wsb_outq_push(struct wsb_outq *q, struct wsb_frame *f, enum wsb_outq_kind kind, uint32_t tag);
/** Removes the head item into *out. Returns false when empty. An emptied queue gives its
 * ring back when it had grown (a burst does not pin memory). */
bool wsb_outq_pop(struct wsb_outq *q, struct wsb_outq_item *out);
/** Removes every MESSAGE and ACK item tagged `tag` (a subscription that ended), keeping the
 * order of the rest. Returns how many were removed. */
size_t wsb_outq_purge(struct wsb_outq *q, uint32_t tag);
/** Calls `fn(ctx, kind, tag)` for each queued item, oldest first. */
void wsb_outq_each(const struct wsb_outq *q, void (*fn)(void *ctx, uint32_t kind, uint32_t tag),
                   void *ctx);
/** Drops the oldest MESSAGE items until q->bytes <= target. Calls `dropped(ctx, tag)` for each
 * dropped message. Returns how many were dropped. REPLY and ACK items are kept in order. */
size_t wsb_outq_drop_oldest(struct wsb_outq *q, uint64_t target,
                            void (*dropped)(void *ctx, uint32_t tag), void *ctx);

#endif
