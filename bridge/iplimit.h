/* Per-IP admission at the handshake: a handshake-rate token bucket and a concurrent
 * connection cap per client address (IPv6: per prefix), shared by every loop thread (one
 * mutex; handshake path only, never per message). Entries expire when idle. */
#ifndef WSB_BRIDGE_IPLIMIT_H
#define WSB_BRIDGE_IPLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct wsb_iplimit;

/** RATE: handshake rate exceeded; CAP: connection cap reached; FULL: the table is full of
 * live entries (or out of memory), so a new address is refused rather than let in uncounted. */
enum wsb_ip_verdict { WSB_IP_OK, WSB_IP_RATE, WSB_IP_CAP, WSB_IP_FULL };

/** What an admitted connection holds, so that its release undoes exactly its own count even
 * when the limits or the IPv6 prefix were reloaded in between. Zero-initialised: nothing. */
struct wsb_ip_ticket {
    uint8_t key[16];
    bool counted;
};

/** rate/burst: handshakes per second per IP (rate <= 0: unlimited; a burst below 1 counts as
 * 1); cap: concurrent connections per IP (0: unlimited). NULL when out of memory. */
struct wsb_iplimit *wsb_iplimit_new(double rate, double burst, uint32_t cap);
void wsb_iplimit_free(struct wsb_iplimit *l);
/** Reload. @locality any */
void wsb_iplimit_reconfigure(struct wsb_iplimit *l, double rate, double burst, uint32_t cap);
/** IPv6 addresses are keyed on their first `prefix` bits (1..128, default 64: one /64 is one
 * client, as ISPs hand out /64s). Entries made under an older prefix stay until idle.
 * @locality any */
void wsb_iplimit_set_ipv6_prefix(struct wsb_iplimit *l, unsigned prefix);

/** Counts a handshake attempt from `addr` (AF_INET/AF_INET6; IPv4-mapped IPv6 counts as
 * IPv4). OK: admitted; `*ticket` says whether it was counted (it is not when no limit is
 * set, or for other address families) — pass it to wsb_iplimit_release when the connection
 * ends. RATE/CAP/FULL: refused, nothing counted; *retry_after_s says when to retry.
 * @locality any */
enum wsb_ip_verdict wsb_iplimit_acquire(struct wsb_iplimit *l, const struct sockaddr *addr,
                                        int64_t now_us, uint32_t *retry_after_s,
                                        struct wsb_ip_ticket *ticket);
/** Undoes the count of an admitted connection, once: the ticket is cleared, and a ticket that
 * counted nothing changes nothing. @locality any */
void wsb_iplimit_release(struct wsb_iplimit *l, struct wsb_ip_ticket *ticket);

/** Bounds the number of tracked addresses (default 1M). Idle entries (no connection, full
 * bucket) are pruned as the table grows; when it is full of live entries a new address is
 * refused (FULL) until entries go idle: fail closed. @locality any */
void wsb_iplimit_set_max_entries(struct wsb_iplimit *l, size_t max);
/** Number of tracked addresses (tests, debugging). @locality any */
size_t wsb_iplimit_size(struct wsb_iplimit *l);

#endif
