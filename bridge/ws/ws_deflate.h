/* permessage-deflate (RFC 7692): offer negotiation, a bounded incremental inflater for
 * client messages and a one-shot deflater for server messages. Pure (zlib only). */
#ifndef WSB_WS_DEFLATE_H
#define WSB_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wsb_pmd_params {
    bool server_no_context_takeover; /* always true in what we answer: frames are shared */
    bool client_no_context_takeover;
    int server_max_window_bits; /* 9..15 */
    int client_max_window_bits; /* 9..15: the window the client compresses with */
};

/** Parses a Sec-WebSocket-Extensions value (all header lines joined with ", ") and accepts
 * the first acceptable permessage-deflate offer. Writes the response extension value into
 * `resp` (NUL-terminated). Returns 1 when accepted, 0 when no acceptable offer, -1 when the
 * header is malformed (ignored by the caller: the extension is simply not used).
 * We always answer server_no_context_takeover (RFC 7692 §7.1.1.1 allows it), so one
 * compressed frame can be shared by every client. Offers asking server_max_window_bits=8 are
 * declined (zlib cannot produce an 8-bit window). */
int wsb_pmd_negotiate(const char *offer, size_t len, struct wsb_pmd_params *out, char *resp,
                      size_t resplen);

struct wsb_inflater;

/** window_bits 9..15 (the client's window; out of range means 15), reset =
 * client_no_context_takeover. Returns NULL on allocation failure. About 56 KiB each. */
struct wsb_inflater *wsb_inflater_new(int window_bits, bool reset_each_message);
void wsb_inflater_free(struct wsb_inflater *z);

/** Output chunk callback: return 0 to continue, non-zero to stop (propagated). */
typedef int (*wsb_inflate_out_cb)(void *ctx, const uint8_t *p, size_t len);

/** Inflates a chunk of a compressed message. `last` marks the message's final chunk (the
 * 0x00 0x00 0xff 0xff tail is appended internally, RFC 7692 §7.2.2). `*total` counts inflated
 * bytes of the message so far (the caller zeroes it per message) and must not pass `limit`:
 * the inflater stops as soon as it would (never allocating more than its fixed 16 KiB buffer;
 * the callback sees at most `limit` bytes, in chunks of at most 16 KiB, borrowed for the
 * call). A message ending with a BFINAL block is accepted; the next message then starts a
 * fresh stream. Returns 0, 1009 when the limit was hit, 1007 when the data is not valid
 * deflate, 1011 when zlib ran out of memory, or the callback's non-zero value. After any
 * non-zero return the inflater is unusable (every later call returns 1007). */
int wsb_inflater_feed(struct wsb_inflater *z, const uint8_t *in, size_t len, bool last,
                      uint64_t limit, uint64_t *total, wsb_inflate_out_cb cb, void *ctx);

struct wsb_deflater;

/** window_bits 9..15 (out of range means 15): the negotiated server_max_window_bits. A message
 * compressed with window N may only be sent to clients whose server_max_window_bits >= N, so
 * a frame shared by many clients needs the smallest window among them (or one deflater per
 * window size). Returns NULL on allocation failure. */
struct wsb_deflater *wsb_deflater_new(int window_bits);
void wsb_deflater_free(struct wsb_deflater *z);

/** Compresses a whole message with a fresh context (no context takeover) and strips the
 * 0x00 0x00 0xff 0xff tail. Writes into a malloc'd buffer with `headroom` bytes free at the
 * front (for the frame header). Returns 0 and sets *out (caller frees) and *out_len (bytes
 * after the headroom), or -1. */
int wsb_deflate_message(struct wsb_deflater *z, const uint8_t *in, size_t len, size_t headroom,
                        uint8_t **out, size_t *out_len);

#endif
