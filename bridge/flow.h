/* Flow control arithmetic: token buckets (inbound rate, handshake rate) and the send-buffer
 * verdict (soft limit held for N seconds, hard limit), in the spirit of Redis's
 * client-output-buffer-limit. Pure: time is passed in. */
#ifndef WSB_BRIDGE_FLOW_H
#define WSB_BRIDGE_FLOW_H

#include <stdbool.h>
#include <stdint.h>

struct wsb_bucket {
    double tokens;
    double rate;  /* tokens per second; <= 0 means unlimited */
    double burst; /* capacity */
    int64_t last_us;
};

void wsb_bucket_init(struct wsb_bucket *b, double rate, double burst, int64_t now_us);
/** Changes rate/burst (reload) keeping the current fill, capped at the new burst. */
void wsb_bucket_reconfigure(struct wsb_bucket *b, double rate, double burst);
/** Takes `n` tokens when available. Returns true when taken. */
bool wsb_bucket_take(struct wsb_bucket *b, double n, int64_t now_us);
/** Seconds until `n` tokens are available (0 when now), rounded up to whole seconds, >= 1
 * when not available now. For Retry-After. */
uint32_t wsb_bucket_retry_after(const struct wsb_bucket *b, double n, int64_t now_us);

enum wsb_sendbuf_verdict {
    WSB_SB_OK,   /* under the soft limit, or over it for less than soft_seconds */
    WSB_SB_SOFT, /* over soft for longer than soft_seconds */
    WSB_SB_HARD, /* over the hard limit */
};

struct wsb_sendbuf {
    uint64_t bytes;        /* bytes queued for the client in user space */
    int64_t soft_since_us; /* when it went over the soft limit, -1 when under */
};

void wsb_sendbuf_init(struct wsb_sendbuf *s);
/** Judges `s->bytes` against the limits at `now_us` (updating soft_since_us). `now_us` is
 * used only when soft_bytes != 0 and bytes > soft_bytes (callers may skip the clock read).
 * soft_bytes == 0 disables the soft limit; hard_bytes == 0 disables the hard one. */
enum wsb_sendbuf_verdict wsb_sendbuf_check(struct wsb_sendbuf *s, uint64_t soft_bytes,
                                           uint32_t soft_seconds, uint64_t hard_bytes,
                                           int64_t now_us);

#endif
