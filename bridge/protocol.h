/* The wsbridge.v1 application protocol (SPEC §5): parsing client requests (pure, fuzzed)
 * and encoding server messages into JSON text. No I/O, no session state. */
#ifndef WSB_BRIDGE_PROTOCOL_H
#define WSB_BRIDGE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "connectors/connector.h"
#include "util/buf.h"
#include "util/json_text.h" /* wsb_json_valid */

enum wsb_op {
    WSB_REQ_SUBSCRIBE,
    WSB_REQ_UNSUBSCRIBE,
    WSB_REQ_PUBLISH,
    WSB_REQ_ACK,
    WSB_REQ_NACK,
    WSB_REQ_AUTH,
};

#define WSB_ID_MAX 128 /* bytes of an encoded request id */
#define WSB_MAX_FROM_OFFSETS 1024

struct wsb_filter_spec;

/** A parsed request. Pointers borrow from `root` (owned) and stay valid until cleanup. */
struct wsb_request {
    enum wsb_op op;
    json_t *root;
    char id[WSB_ID_MAX + 1]; /* the id as JSON ("7", "\"a\""), "" when absent */
    const char *channel;     /* validated channel name (subscribe/unsubscribe/publish/ack) */
    size_t channel_len;
    /* subscribe */
    enum wsb_from_kind from;
    int64_t from_timestamp_ms;
    struct wsb_partition_offset *from_offsets; /* malloc'd, owned */
    size_t nfrom_offsets;
    struct wsb_filter_spec *filter; /* `filter` (literal values), owned; NULL when absent */
    /* publish */
    char *data; /* `data` re-encoded as compact JSON text, malloc'd, owned */
    size_t data_len;
    const char *key; /* NULL when absent */
    size_t key_len;
    struct wsb_header *headers; /* malloc'd array (names/values borrow from root), owned */
    size_t nheaders;
    /* ack / nack */
    uint64_t ack_id;
    bool requeue; /* nack: default true */
    /* auth */
    const char *token;
    size_t token_len;
};

/** Parses one text message. Returns 0, or -1 with *code set to a wire error code
 * ("invalid_request") and a human reason in msg. On failure req->id is still filled when
 * the request had a usable id, so the error can echo it. Always call wsb_request_cleanup.
 * Limits: id <= WSB_ID_MAX bytes encoded, headers <= 64 string values, from.offsets <=
 * WSB_MAX_FROM_OFFSETS. */
int wsb_request_parse(const uint8_t *text, size_t len, struct wsb_request *req, const char **code,
                      char *msg, size_t msglen);
void wsb_request_cleanup(struct wsb_request *req);

/* ---- Server messages (each appends one complete JSON object to `out`) ---------------- */

/** {"type":"welcome","session":S,"sub":SUB|null,"expires_at":N|null,"protocol":"wsbridge.v1"} */
void wsb_encode_welcome(struct wsb_buf *out, const char *session, const char *sub,
                        int64_t expires_at);
/** {"type":"error","id":ID?,"code":CODE,"message":TEXT} (id omitted when ""). */
void wsb_encode_error(struct wsb_buf *out, const char *id, const char *code, const char *message);
/** {"type":"subscribed","id":ID?,"channel":C[,"offsets":POSITIONS]} — positions is a JSON
 * object text or NULL. */
void wsb_encode_subscribed(struct wsb_buf *out, const char *id, const char *channel,
                           const char *positions);
/** {"type":"unsubscribed","id":ID?,"channel":C[,"reason":R]} */
void wsb_encode_unsubscribed(struct wsb_buf *out, const char *id, const char *channel,
                             const char *reason);
/** {"type":"published","id":ID?,"channel":C} */
void wsb_encode_published(struct wsb_buf *out, const char *id, const char *channel);
/** {"type":"authenticated","id":ID?,"expires_at":N|null} */
void wsb_encode_authenticated(struct wsb_buf *out, const char *id, int64_t expires_at);
/** {"type":"gap","channel":C,"dropped":N} */
void wsb_encode_gap(struct wsb_buf *out, const char *channel, uint64_t dropped);

/** {"type":"message","channel":C,"data":PAYLOAD[,"encoding":"base64"][,"key":K]
 *  [,"headers":{...}][,"timestamp":MS][,"partition":P,"offset":O][,"ack_id":A]}
 * PAYLOAD is the payload verbatim when it is valid JSON (RFC 8259, any value), else a JSON
 * string when valid UTF-8, else base64 with "encoding":"base64". Keys and header values
 * follow the same string-or-base64 rule ("key_encoding":"base64" when needed). */
void wsb_encode_message(struct wsb_buf *out, const char *channel, size_t channel_len,
                        const struct wsb_msg *m);

#endif
