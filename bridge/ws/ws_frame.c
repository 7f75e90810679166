/* RFC 6455 §5 frame codec: incremental client-frame decoder and server-frame header encoder. */
#include "bridge/ws/ws_frame.h"

#include "bridge/ws/ws_utf8.h"

#include <string.h>

enum { ST_HEADER, ST_DATA, ST_CONTROL, ST_FAILED };

void wsb_frame_parser_init(struct wsb_frame_parser *p, uint64_t max_message_bytes, bool allow_rsv1)
{
    memset(p, 0, sizeof(*p));
    p->max_message_bytes = max_message_bytes;
    p->allow_rsv1 = allow_rsv1;
    p->state = ST_HEADER;
    p->hdr_need = 2;
}

bool wsb_frame_parser_at_rest(const struct wsb_frame_parser *p)
{
    return p->state == ST_HEADER && p->hdr_len == 0 && !p->in_message;
}

static bool is_control(uint8_t op)
{
    return op & 0x8;
}

static size_t fail(struct wsb_frame_parser *p, struct wsb_frame_ev *ev, uint16_t code,
                   const char *reason, size_t consumed)
{
    p->state = ST_FAILED;
    ev->type = WSB_FEV_ERROR;
    ev->close_code = code;
    ev->reason = reason;
    return consumed;
}

/* Checks the first header byte alone, so violations fail before the rest arrives. */
static const char *check_byte0(const struct wsb_frame_parser *p, uint8_t b)
{
    uint8_t op = b & 0x0f;
    bool fin = b & 0x80, rsv1 = b & 0x40;

    if (b & 0x30)
        return "reserved bit set"; /* RFC 6455 §5.2: RSV2/RSV3 without an extension */
    if (op != WSB_OP_CONT && op != WSB_OP_TEXT && op != WSB_OP_BINARY && op != WSB_OP_CLOSE &&
        op != WSB_OP_PING && op != WSB_OP_PONG)
        return "unknown opcode";
    if (is_control(op)) {
        if (!fin)
            return "fragmented control frame"; /* RFC 6455 §5.5 */
        if (rsv1)
            return "reserved bit set on control frame"; /* RFC 7692 §6.1 */
        return NULL;
    }
    if (op == WSB_OP_CONT) {
        if (!p->in_message)
            return "continuation without a message";
        if (rsv1)
            return "reserved bit set on continuation"; /* RFC 7692 §6.1 */
        return NULL;
    }
    if (p->in_message)
        return "new message inside a fragmented message"; /* RFC 6455 §5.4 */
    if (rsv1 && !p->allow_rsv1)
        return "reserved bit set";
    return NULL;
}

static const char *check_byte1(const struct wsb_frame_parser *p, uint8_t b)
{
    if (!(b & 0x80))
        return "unmasked client frame"; /* RFC 6455 §5.1 */
    if (is_control(p->hdr[0] & 0x0f) && (b & 0x7f) > 125)
        return "control frame too long"; /* RFC 6455 §5.5 */
    return NULL;
}

static void unmask(struct wsb_frame_parser *p, uint8_t *buf, size_t n)
{
    size_t off = (size_t)(p->mask_off & 3), i = 0;
    uint8_t m8[8];
    uint64_t m;

    /* eight bytes at a time: the 4-byte mask repeats twice in a word */
    for (int k = 0; k < 8; k++)
        m8[k] = p->mask[(off + (size_t)k) & 3];
    memcpy(&m, m8, 8);
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        w ^= m;
        memcpy(buf + i, &w, 8);
    }
    for (; i < n; i++)
        buf[i] ^= p->mask[(off + i) & 3];
    p->mask_off += n;
}

/* The header is complete: decode the length, check the message limit, enter the payload
 * state. Returns NULL or the reason of a protocol error (*code set). */
static const char *start_frame(struct wsb_frame_parser *p, uint16_t *code)
{
    uint8_t len7 = p->hdr[1] & 0x7f;
    size_t pos = 2;
    uint64_t len = len7;

    if (len7 == 126) {
        len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
        pos = 4;
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p->hdr[2 + i];
        pos = 10;
        if (len >> 63) {
            *code = 1002;
            return "64-bit length with the top bit set"; /* RFC 6455 §5.2 */
        }
    }
    /* Non-minimal length encodings are accepted (RFC 6455 §5.2 says MUST, Autobahn does
     * not test it and rejecting them protects nothing). */
    memcpy(p->mask, p->hdr + pos, 4);
    p->mask_off = 0;
    p->remaining = len;
    p->opcode = p->hdr[0] & 0x0f;
    p->fin = p->hdr[0] & 0x80;
    p->rsv1 = p->hdr[0] & 0x40;

    if (is_control(p->opcode)) {
        p->ctrl_len = 0;
        p->state = ST_CONTROL;
        return NULL;
    }
    if (p->opcode != WSB_OP_CONT) {
        p->msg_opcode = p->opcode;
        p->msg_compressed = p->rsv1;
        p->msg_started = false;
        p->msg_bytes = 0;
    }
    /* The limit is checked against the declared length, before any payload arrives. */
    if (len > p->max_message_bytes - p->msg_bytes) {
        *code = 1009;
        return "message too big";
    }
    p->msg_bytes += len;
    p->in_message = !p->fin;
    p->state = ST_DATA;
    return NULL;
}

static void data_event(struct wsb_frame_parser *p, struct wsb_frame_ev *ev, uint8_t *buf, size_t n)
{
    unmask(p, buf, n);
    p->remaining -= n;
    ev->type = WSB_FEV_DATA;
    ev->opcode = p->msg_opcode;
    ev->compressed = p->msg_compressed;
    ev->message_start = !p->msg_started;
    ev->message_end = p->fin && p->remaining == 0;
    ev->payload = buf;
    ev->len = n;
    p->msg_started = true;
    if (p->remaining == 0) {
        p->state = ST_HEADER;
        p->hdr_len = 0;
        p->hdr_need = 2;
    }
}

size_t wsb_frame_parse(struct wsb_frame_parser *p, uint8_t *buf, size_t len,
                       struct wsb_frame_ev *ev)
{
    size_t i = 0;

    memset(ev, 0, sizeof(*ev));
    ev->type = WSB_FEV_NONE;
    if (p->state == ST_FAILED)
        return fail(p, ev, 1002, "parser failed", 0);

    while (i < len || (p->state == ST_DATA && p->remaining == 0) ||
           (p->state == ST_CONTROL && p->ctrl_len == p->remaining)) {
        if (p->state == ST_HEADER) {
            uint8_t b = buf[i++];
            const char *why = NULL;

            p->hdr[p->hdr_len++] = b;
            if (p->hdr_len == 1) {
                why = check_byte0(p, b);
            } else if (p->hdr_len == 2) {
                why = check_byte1(p, b);
                uint8_t len7 = b & 0x7f;
                p->hdr_need = 2 + 4 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
            }
            if (why)
                return fail(p, ev, 1002, why, i);
            if (p->hdr_len == p->hdr_need) {
                uint16_t code = 1002;
                why = start_frame(p, &code);
                if (why)
                    return fail(p, ev, code, why, i);
            }
        } else if (p->state == ST_DATA) {
            size_t n = len - i;
            if (n > p->remaining)
                n = (size_t)p->remaining;
            data_event(p, ev, buf + i, n);
            return i + n;
        } else { /* ST_CONTROL */
            size_t n = len - i;
            if (n > p->remaining - p->ctrl_len)
                n = (size_t)(p->remaining - p->ctrl_len);
            unmask(p, buf + i, n);
            memcpy(p->ctrl + p->ctrl_len, buf + i, n);
            p->ctrl_len += n;
            i += n;
            if (p->ctrl_len == p->remaining) {
                ev->type = WSB_FEV_CONTROL;
                ev->opcode = p->opcode;
                ev->payload = p->ctrl;
                ev->len = p->ctrl_len;
                p->state = ST_HEADER;
                p->hdr_len = 0;
                p->hdr_need = 2;
                return i;
            }
        }
    }
    return i;
}

size_t wsb_frame_header(uint8_t out[10], uint8_t opcode, bool fin, bool rsv1, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/* RFC 6455 §7.4.1 and the IANA registry: codes an endpoint may send in a close frame. */
static bool close_code_valid(uint16_t c)
{
    if (c >= 1000 && c <= 1003)
        return true;
    if (c >= 1007 && c <= 1014)
        return true;
    return c >= 3000 && c <= 4999;
}

uint16_t wsb_close_payload_check(const uint8_t *p, size_t len, uint16_t *code)
{
    if (len == 0) {
        *code = 1005; /* RFC 6455 §7.1.5: no status code present */
        return 0;
    }
    if (len == 1)
        return 1002;
    uint16_t c = (uint16_t)(p[0] << 8 | p[1]);
    if (!close_code_valid(c))
        return 1002;
    if (!wsb_utf8_valid(p + 2, len - 2))
        return 1007;
    *code = c;
    return 0;
}
