/* The bridge's clock: monotonic time for deadlines and buckets, wall-clock time for token
 * expiry and latency. Swappable, so unit tests drive time instead of sleeping. */
#ifndef WSB_BRIDGE_CLOCK_H
#define WSB_BRIDGE_CLOCK_H

#include <stdint.h>

/** A time source. Both functions are called from any thread while installed. */
struct wsb_clock {
    int64_t (*mono_us)(void *ctx); /* monotonic microseconds */
    int64_t (*wall_us)(void *ctx); /* microseconds since the Unix epoch */
    void *ctx;
};

/** Installs `c` (borrowed; must outlive its use), or the system clock when NULL. Meant for
 * tests and start-up: a reader on another thread may still see the previous clock once.
 * @locality any */
void wsb_clock_set(const struct wsb_clock *c);

/** Monotonic microseconds / milliseconds. @locality any */
int64_t wsb_now_us(void);
int64_t wsb_now_ms(void);

/** Wall-clock seconds / milliseconds since the Unix epoch. @locality any */
int64_t wsb_wall_s(void);
int64_t wsb_wall_ms(void);

#endif
