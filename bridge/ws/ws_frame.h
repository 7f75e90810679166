/* RFC 6455 §5 frame codec: an incremental, allocation-free decoder for client frames and the
 * header encoder for server frames. Pure: bytes and limits in, events out. */
#ifndef WSB_WS_FRAME_H
#define WSB_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wsb_opcode {
    WSB_OP_CONT = 0x0,
    WSB_OP_TEXT = 0x1,
    WSB_OP_BINARY = 0x2,
    WSB_OP_CLOSE = 0x8,
    WSB_OP_PING = 0x9,
    WSB_OP_PONG = 0xA,
};

enum wsb_frame_ev_type {
    WSB_FEV_NONE,    /* all input consumed, nothing to report */
    WSB_FEV_DATA,    /* a chunk of a data message (unmasked, in place in the input) */
    WSB_FEV_CONTROL, /* a whole control frame: ping, pong or close */
    WSB_FEV_ERROR,   /* protocol violation: close with ev.close_code */
};

struct wsb_frame_ev {
    enum wsb_frame_ev_type type;
    uint8_t opcode;         /* DATA: the message's opcode (TEXT/BINARY); CONTROL: the frame's */
    bool compressed;        /* DATA: the message has RSV1 set (permessage-deflate) */
    bool message_start;     /* DATA: first chunk of a message */
    bool message_end;       /* DATA: last chunk of the message (FIN frame fully read) */
    const uint8_t *payload; /* DATA/CONTROL: unmasked bytes (CONTROL: parser's buffer) */
    size_t len;
    uint16_t close_code; /* ERROR: 1002 or 1009 */
    const char *reason;  /* ERROR: short static text */
};

struct wsb_frame_parser {
    /* limits */
    uint64_t max_message_bytes; /* wire bytes of one data message (all fragments) */
    bool allow_rsv1;            /* permessage-deflate negotiated */
    /* state, private */
    int state;
    uint8_t hdr[14];
    size_t hdr_len, hdr_need;
    uint8_t opcode;
    bool fin, rsv1;
    uint8_t mask[4];
    uint64_t remaining, mask_off;
    bool in_message; /* a fragmented data message is open */
    uint8_t msg_opcode;
    bool msg_compressed;
    bool msg_started;
    uint64_t msg_bytes;
    uint8_t ctrl[125];
    size_t ctrl_len;
};

/** Initialises a parser with the given limits. */
void wsb_frame_parser_init(struct wsb_frame_parser *p, uint64_t max_message_bytes, bool allow_rsv1);

/** True when the parser is between messages: no frame partly read, no fragmented message
 * open (a fresh parser with the same limits would go on the same). */
bool wsb_frame_parser_at_rest(const struct wsb_frame_parser *p);

/** Consumes bytes from `buf` (which it may unmask in place) and reports at most one event.
 * Returns the number of bytes consumed; call again with the rest until it returns 0 with
 * WSB_FEV_NONE. After WSB_FEV_ERROR the parser must not be fed again.
 * Checks: mask bit set; RSV2/RSV3 never, RSV1 only on a first frame when allowed; known
 * opcodes; control frames FIN and <= 125 bytes; no continuation without a start; no new
 * data frame inside a fragmented message; 64-bit lengths with the top bit clear;
 * message size <= max_message_bytes (1009), checked from the length header before any
 * payload arrives. Non-minimal length encodings are accepted. Any split of the input gives
 * the same events. A zero-length data frame still yields one DATA event (len 0), so an empty
 * message is seen with message_start && message_end. DATA payload points into `buf`;
 * CONTROL payload into the parser (valid until the next call). */
size_t wsb_frame_parse(struct wsb_frame_parser *p, uint8_t *buf, size_t len,
                       struct wsb_frame_ev *ev);

/** Writes a server frame header (unmasked) for a payload of `len` bytes into out.
 * Returns the header length (2, 4 or 10). */
size_t wsb_frame_header(uint8_t out[10], uint8_t opcode, bool fin, bool rsv1, uint64_t len);

/** RFC 6455 §5.5.1/§7.4: validates a received close payload. Returns 0 and sets *code
 * (1005 when the payload is empty), or the close code to answer with: 1002 for a 1-byte
 * payload or an invalid code, 1007 for a reason that is not UTF-8. */
uint16_t wsb_close_payload_check(const uint8_t *p, size_t len, uint16_t *code);

#endif
