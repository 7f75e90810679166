/* The bit layouts of the 64-bit ids that cross threads, in one place:
 *
 *   source id       | sequence (48 bits)            | loop mask (16 bits, one per loop) |
 *   publish cookie  | loop index (8 bits) | sequence (56 bits)                          |
 *   session id      | loop index (16 bits) | sequence (48 bits)                         |
 *
 * A source id carries the set of loops its events go to, so the connector sink routes a
 * message without a lookup; a publish cookie carries the loop that waits for the answer. */
#ifndef WSB_BRIDGE_IDS_H
#define WSB_BRIDGE_IDS_H

#include <stdint.h>

/** Most event loops (workers) a server runs. */
#define WSB_MAX_LOOPS 16

#define WSB_SOURCE_LOOP_BITS 16
#define WSB_SOURCE_LOOP_MASK ((UINT64_C(1) << WSB_SOURCE_LOOP_BITS) - 1)
#define WSB_COOKIE_LOOP_SHIFT 56
#define WSB_SESSION_LOOP_SHIFT 48

_Static_assert(WSB_MAX_LOOPS <= WSB_SOURCE_LOOP_BITS,
               "a source id's loop mask needs one bit per loop");
_Static_assert(WSB_MAX_LOOPS < 32, "loop masks are built as 1u << loop");
_Static_assert(WSB_MAX_LOOPS <= (UINT64_C(1) << (64 - WSB_COOKIE_LOOP_SHIFT)),
               "a publish cookie's loop field holds every loop index");
_Static_assert(WSB_MAX_LOOPS <= (UINT64_C(1) << (64 - WSB_SESSION_LOOP_SHIFT)),
               "a session id's loop field holds every loop index");

/** A source id from a registry sequence number and the mask of loops it feeds. */
static inline uint64_t wsb_source_id(uint64_t seq, uint64_t loops)
{
    return (seq << WSB_SOURCE_LOOP_BITS) | (loops & WSB_SOURCE_LOOP_MASK);
}

/** The loops (bit i = loop i) that source `id` feeds. */
static inline uint64_t wsb_source_loops(uint64_t id)
{
    return id & WSB_SOURCE_LOOP_MASK;
}

/** A publish cookie for loop `loop` (sequence taken modulo 2^56). */
static inline uint64_t wsb_cookie(unsigned loop, uint64_t seq)
{
    return ((uint64_t)loop << WSB_COOKIE_LOOP_SHIFT) |
           (seq & ((UINT64_C(1) << WSB_COOKIE_LOOP_SHIFT) - 1));
}

/** The loop that waits for the publish with `cookie`. */
static inline unsigned wsb_cookie_loop(uint64_t cookie)
{
    return (unsigned)(cookie >> WSB_COOKIE_LOOP_SHIFT);
}

/** A session id for loop `loop` (sequence taken modulo 2^48). */
static inline uint64_t wsb_session_id(unsigned loop, uint64_t seq)
{
    return ((uint64_t)loop << WSB_SESSION_LOOP_SHIFT) |
           (seq & ((UINT64_C(1) << WSB_SESSION_LOOP_SHIFT) - 1));
}

#endif
