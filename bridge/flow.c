/* Flow control arithmetic: token buckets and the send-buffer verdict. */
#include "bridge/flow.h"

#include <math.h>

static bool unlimited(const struct wsb_bucket *b)
{
    return !(b->rate > 0);
}

/* Adds the tokens earned since last_us. A clock that goes back earns nothing and moves
 * last_us back, so the next forward step is not counted twice. */
static void refill(struct wsb_bucket *b, int64_t now_us)
{
    if (now_us <= b->last_us) {
        b->last_us = now_us;
        return;
    }
    /* unsigned difference: exact for any now_us > last_us, no signed overflow */
    double elapsed = (double)((uint64_t)now_us - (uint64_t)b->last_us) / 1e6;
    double add = elapsed * b->rate;
    if (!(add >= 0) || add > b->burst - b->tokens)
        b->tokens = b->burst;
    else
        b->tokens += add;
    if (b->tokens > b->burst)
        b->tokens = b->burst;
    b->last_us = now_us;
}

static double sane(double v)
{
    return isfinite(v) && v > 0 ? v : 0;
}

void wsb_bucket_init(struct wsb_bucket *b, double rate, double burst, int64_t now_us)
{
    b->rate = isfinite(rate) ? rate : 0;
    b->burst = sane(burst);
    b->tokens = b->burst;
    b->last_us = now_us;
}

void wsb_bucket_reconfigure(struct wsb_bucket *b, double rate, double burst)
{
    b->rate = isfinite(rate) ? rate : 0;
    b->burst = sane(burst);
    if (b->tokens > b->burst)
        b->tokens = b->burst;
    if (!(b->tokens >= 0))
        b->tokens = 0;
}

bool wsb_bucket_take(struct wsb_bucket *b, double n, int64_t now_us)
{
    if (unlimited(b))
        return true;
    refill(b, now_us);
    if (!(n >= 0))
        n = 0;
    if (b->tokens >= n) {
        b->tokens -= n;
        return true;
    }
    return false;
}

uint32_t wsb_bucket_retry_after(const struct wsb_bucket *b, double n, int64_t now_us)
{
    if (unlimited(b))
        return 0;
    struct wsb_bucket tmp = *b;
    refill(&tmp, now_us);
    if (!(n >= 0) || tmp.tokens >= n)
        return 0;
    /* More than the burst can never be available; the full refill time is the best hint. */
    double need = (n > tmp.burst ? tmp.burst : n) - tmp.tokens;
    double secs = ceil(need / tmp.rate);
    if (!(secs >= 1))
        return 1;
    if (secs > UINT32_MAX)
        return UINT32_MAX;
    return (uint32_t)secs;
}

void wsb_sendbuf_init(struct wsb_sendbuf *s)
{
    s->bytes = 0;
    s->soft_since_us = -1;
}

enum wsb_sendbuf_verdict wsb_sendbuf_check(struct wsb_sendbuf *s, uint64_t soft_bytes,
                                           uint32_t soft_seconds, uint64_t hard_bytes,
                                           int64_t now_us)
{
    if (soft_bytes == 0 || s->bytes <= soft_bytes) {
        s->soft_since_us = -1;
    } else if (s->soft_since_us < 0) {
        s->soft_since_us = now_us;
    }
    if (hard_bytes != 0 && s->bytes > hard_bytes)
        return WSB_SB_HARD;
    if (s->soft_since_us >= 0 && now_us > s->soft_since_us &&
        (uint64_t)now_us - (uint64_t)s->soft_since_us > (uint64_t)soft_seconds * 1000000)
        return WSB_SB_SOFT;
    return WSB_SB_OK;
}
