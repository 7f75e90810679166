/* Per-IP admission at the handshake: a handshake-rate token bucket and a concurrent
 * connection cap per client address, shared by every loop thread (one mutex; handshake
 * path only, never per message). Entries expire when idle. */
#ifndef WSB_BRIDGE_IPLIMIT_H
#define WSB_BRIDGE_IPLIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct wsb_iplimit;

enum wsb_ip_verdict { WSB_IP_OK, WSB_IP_RATE, WSB_IP_CAP };

/** rate/burst: handshakes per second per IP (rate <= 0: unlimited; a burst below 1 counts as
 * 1); cap: concurrent connections per IP (0: unlimited). NULL when out of memory. */
struct wsb_iplimit *wsb_iplimit_new(double rate, double burst, uint32_t cap);
void wsb_iplimit_free(struct wsb_iplimit *l);
/** Reload. @locality any */
void wsb_iplimit_reconfigure(struct wsb_iplimit *l, double rate, double burst, uint32_t cap);

/** Counts a handshake attempt from `addr` (AF_INET/AF_INET6; IPv4-mapped IPv6 counts as
 * IPv4). OK: the connection is admitted and counted (pair with wsb_iplimit_release).
 * RATE/CAP: refused; *retry_after_s says when to retry. @locality any */
enum wsb_ip_verdict wsb_iplimit_acquire(struct wsb_iplimit *l, const struct sockaddr *addr,
                                        int64_t now_us, uint32_t *retry_after_s);
void wsb_iplimit_release(struct wsb_iplimit *l, const struct sockaddr *addr);

/** Bounds the number of tracked addresses (default 1M). Idle entries (no connection, full
 * bucket) are pruned as the table grows; when it is full of live entries a new address is
 * admitted untracked rather than refused (availability over precision). @locality any */
void wsb_iplimit_set_max_entries(struct wsb_iplimit *l, size_t max);
/** Number of tracked addresses (tests, debugging). @locality any */
size_t wsb_iplimit_size(struct wsb_iplimit *l);

#endif
