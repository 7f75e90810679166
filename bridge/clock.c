/* The clock: CLOCK_MONOTONIC and CLOCK_REALTIME, or a test's clock. */
#include "bridge/clock.h"

#include <stdatomic.h>
#include <stddef.h>
#include <time.h>

static _Atomic(const struct wsb_clock *) current;

void wsb_clock_set(const struct wsb_clock *c)
{
    atomic_store(&current, c);
}

int64_t wsb_now_us(void)
{
    const struct wsb_clock *c = atomic_load_explicit(&current, memory_order_relaxed);
    if (c)
        return c->mono_us(c->ctx);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wsb_now_ms(void)
{
    return wsb_now_us() / 1000;
}

static int64_t wall_us(void)
{
    const struct wsb_clock *c = atomic_load_explicit(&current, memory_order_relaxed);
    if (c)
        return c->wall_us(c->ctx);
    /* Not time(NULL): on Linux it reads the coarse clock, which can still show the previous
     * second when the token issuer's clock (and iat = now) already shows the next. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wsb_wall_s(void)
{
    return wall_us() / 1000000;
}

int64_t wsb_wall_ms(void)
{
    return wall_us() / 1000;
}
