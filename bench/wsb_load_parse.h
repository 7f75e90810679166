/* wsb_load_parse: the load generator's per-frame hot path, without sockets (bench/wsb_load.c):
 * server WebSocket frames parsed in batches out of one contiguous buffer, and an
 * allocation-free scanner for the few JSON fields a delivery carries (type, data.seq,
 * data.ts, Kafka partition/offset/timestamp).
 * @locality: pure functions over caller-owned memory; any thread. */
#ifndef WSB_LOAD_PARSE_H
#define WSB_LOAD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One complete frame; payload points into the caller's buffer (servers never mask). */
struct wsl_frame {
    uint8_t opcode;
    bool fin;
    const uint8_t *payload;
    size_t len;
};

/* Called per complete frame; a nonzero return stops the batch after this frame. */
typedef int (*wsl_frame_fn)(void *arg, const struct wsl_frame *f);

/* Parses every complete frame at the start of [p, p + len), calling fn for each, in order.
 * Returns the bytes of the frames handed to fn (the caller drops them), or -1 on a protocol
 * error (reserved bits, a masked frame, a length over max, a fragmented or oversized control
 * frame). When it stops at an incomplete frame, *need is the number of bytes that frame
 * needs from its first byte on (its header alone while the header is incomplete), else 0. */
ssize_t wsl_parse_frames(const uint8_t *p, size_t len, uint64_t max, wsl_frame_fn fn, void *arg,
                         size_t *need);

struct wsl_span {
    const char *p;
    size_t len;
};

/* The top-level fields of a server JSON message that the generator reads (p NULL: absent). */
struct wsl_msg {
    struct wsl_span type, channel, data, timestamp, partition, offset, dropped, code;
};

/* "seq" and "ts" of an object (the publisher's data). */
struct wsl_data {
    struct wsl_span seq, ts;
};

/* Scans the object in [p, end) into m; members other than the above are skipped. When d is
 * given and "data" is an object, its "seq" and "ts" go into d in the same pass. Returns 0, or
 * -1 when it is not a well-formed object at the top level (values are only delimited). Only
 * the first object is read: bytes after its '}' are ignored. */
int wsl_scan_msg(const char *p, const char *end, struct wsl_msg *m, struct wsl_data *d);
int wsl_scan_data(const char *p, const char *end, struct wsl_data *d);

bool wsl_span_eq(struct wsl_span s, const char *lit);
/* An integer JSON number, or false. */
bool wsl_span_int(struct wsl_span s, int64_t *out);
/* A JSON number (integer or real), or false. Plain decimals without an exponent (the
 * publisher's "ts": 1733460000000.123) are converted without strtod. */
bool wsl_span_num(struct wsl_span s, double *out);

#endif
