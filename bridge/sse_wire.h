/* The Server-Sent Events wire format of the bridge (SPEC §11): events built from the same
 * JSON objects a WebSocket client gets, the shared event of a message frame (built once per
 * frame, like its deflated variant), and the resume token carried in `id:` (the next offset
 * of every partition of every channel of a stream). Pure: no I/O, no session state; the
 * token decoder reads untrusted input and has a fuzz target (tests/fuzz/sse_token_fuzz.c).
 * @locality any (frames: the loop that owns them) */
#ifndef WSB_BRIDGE_SSE_WIRE_H
#define WSB_BRIDGE_SSE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "connectors/connector.h"
#include "util/buf.h"
#include "util/pattern.h"

struct wsb_frame;

/* Largest resume token (characters of base64url); a stream whose positions do not fit sends
 * its messages without `id:` (docs/sse.md). */
#define WSB_SSE_ID_MAX 4096
/* Channels and partitions a token may name. */
#define WSB_SSE_TOKEN_CHANNELS 256
#define WSB_SSE_TOKEN_PARTITIONS 1024

/** Appends `event: TYPE` and the JSON text as `data:` lines (a line break in the text starts
 * a new `data:` line, which the client joins back with "\n"), then the blank line. */
void wsb_sse_event(struct wsb_buf *out, const char *type, const uint8_t *json, size_t len);

/** The `type` of a server JSON object (`{"type":"X",...}` as the protocol encoders write
 * it) copied into out (NUL-terminated); "message" when it cannot be read. */
void wsb_sse_type_of(const uint8_t *json, size_t len, char *out, size_t outlen);

/** The shared `event: message` variant of a WebSocket message frame, built on first call
 * and kept on the frame (borrowed result). NULL on OOM. */
struct wsb_frame *wsb_sse_message_frame(struct wsb_frame *f);

/** The positions of one channel of a stream: next offset per partition. */
struct wsb_sse_pos {
    uint32_t hash; /* wsb_sse_channel_hash of the channel name */
    size_t n, cap;
    struct wsb_partition_offset *po;
};

/** FNV-1a of a channel name: how a token names a channel (names stay out of the token). */
uint32_t wsb_sse_channel_hash(const char *channel, size_t len);

/** Sets the next offset of `partition`. Returns 0, or -1 on OOM or when the channel already
 * has WSB_SSE_TOKEN_PARTITIONS partitions. */
int wsb_sse_pos_set(struct wsb_sse_pos *p, int32_t partition, int64_t next);

/** Loads a `subscribed` positions object ({"0":12,"1":40}) into p; NULL is nothing. */
void wsb_sse_pos_load(struct wsb_sse_pos *p, const char *positions);

void wsb_sse_pos_cleanup(struct wsb_sse_pos *p);

/** Encodes the positions of `n` channels (those with none are left out) as a token into
 * out (NUL-terminated). Returns its length, or 0 when it would exceed WSB_SSE_ID_MAX or
 * outlen - 1. */
size_t wsb_sse_token_encode(const struct wsb_sse_pos *const *chans, size_t n, char *out,
                            size_t outlen);

/** A decoded token: one wsb_sse_pos per channel (owned). */
struct wsb_sse_resume {
    struct wsb_sse_pos *chans;
    size_t n;
};

/** Decodes a token. Returns 0, or -1 when it is malformed, over the limits above, or on
 * OOM (r is then empty). Always call wsb_sse_resume_cleanup. */
int wsb_sse_token_decode(const char *tok, size_t len, struct wsb_sse_resume *r);

/** The positions the token holds for `channel`, or NULL. */
const struct wsb_sse_pos *wsb_sse_resume_find(const struct wsb_sse_resume *r, const char *channel,
                                              size_t len);

void wsb_sse_resume_cleanup(struct wsb_sse_resume *r);

struct wsb_http_req;

struct wsb_filter_spec;

/** A stream request: `GET <sse.path>?channel=C&channel=C2&from=F&last_event_id=T&filter=F`,
 * where the optional `filter` is a JSON object naming some of the channels, each with the
 * filter a WebSocket `subscribe` would carry (`{"C": {"key": "k"}}`: docs/sse.md). */
struct wsb_sse_request {
    char (*channels)[WSB_CHANNEL_MAX + 1]; /* malloc'd, owned; distinct valid names */
    /* per channel, NULL for none; NULL when no `filter`; owned (a taker sets its entry to
     * NULL) */
    struct wsb_filter_spec **filters;
    size_t nchannels;
    enum wsb_from_kind from; /* latest, earliest or timestamp (`from=<ms>`) */
    int64_t from_timestamp_ms;
    struct wsb_sse_resume resume; /* from Last-Event-ID (header, first) or last_event_id */
};

/** Parses the query and headers of a stream request (at most `max_channels` channels).
 * Returns 0, or -1 with *msg set (a 400 answer, valid until the thread's next call; r is then
 * empty). Always call
 * wsb_sse_request_cleanup. */
int wsb_sse_request_parse(const struct wsb_http_req *req, size_t max_channels,
                          struct wsb_sse_request *r, const char **msg);

void wsb_sse_request_cleanup(struct wsb_sse_request *r);

#endif
