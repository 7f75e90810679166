/* A client session: its identity, subscription table and send queue, and the primitives
 * the layers above it share (replies, timers, the close handshake, token expiry, ACL
 * re-checks). The layers above: conn (socket callbacks, frame reading), upgrade (the HTTP
 * upgrade and its admission steps) and ops (the wsbridge.v1 requests). The session calls
 * none of them. Internal to bridge/; everything here runs on the session's worker loop. */
#ifndef WSB_BRIDGE_SESSION_H
#define WSB_BRIDGE_SESSION_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "bridge/flow.h"
#include "bridge/gate.h"
#include "bridge/hub.h"
#include "bridge/iplimit.h"
#include "bridge/outq.h"
#include "bridge/protocol.h"
#include "bridge/ws/ws_frame.h"
#include "bridge/ws/ws_utf8.h"
#include "util/buf.h"
#include "util/pattern.h"

struct bufferevent;
struct event;
struct evbuffer;
struct wsb_acl;
struct wsb_identity;
struct wsb_inflater;
struct wsb_limits;
struct wsb_runtime;
struct wsb_worker;

/* Bytes kept in the socket buffer; the rest waits in the out-queue (as references to shared
 * frames, and where drop_oldest can still drop whole messages). Small: what is in the socket
 * buffer is a copy per client for small frames (session.c write_frame). */
#define WSB_SESSION_SOCKET_CHUNK (32 * 1024)

enum wsb_session_state { WSB_SS_HANDSHAKE, WSB_SS_OPEN, WSB_SS_CLOSING, WSB_SS_DEAD };

/** How the session talks to its client. */
enum wsb_transport {
    WSB_TRANSPORT_WS,   /* an upgraded WebSocket */
    WSB_TRANSPORT_SSE,  /* a Server-Sent Events stream (sse.c): output only */
    WSB_TRANSPORT_HTTP, /* one HTTP request answered by its first reply (httppub.c) */
};

struct wsb_sse_pos;
struct wsb_filter_spec;

/** The peer's address: IPv4 or IPv6 (a sockaddr_storage is 128 bytes, this 28). */
union wsb_peer_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/** One subscription: a slot of the session's table (the slot index is the hub's tag). */
struct wsb_sub {
    bool used;
    bool active;
    bool ack;
    bool held;  /* counted in the loop's hand-off gate for source_id (the session holds) */
    int policy; /* enum wsb_sb_policy or -1 */
    size_t connector;
    uint64_t source_id;
    struct wsb_hub_sub *hs;
    uint64_t gap;      /* messages dropped and not reported yet */
    uint64_t *unacked; /* ack sources: tokens delivered to this client, not yet acked */
    size_t nunacked, capunacked;
    struct wsb_sse_pos *pos; /* SSE: next offset per partition delivered (owned), or NULL */
    struct wsb_filter_spec *client_filter; /* subscribe.filter (owned), or NULL */
    /* One allocation sized to fit (owned through `channel`; freed with the slot): the
     * channel, then the subscribe request's id, "" once answered. Not in line: a slot is
     * ~100 bytes, not ~460 (docs/benchmarks.md, Footprint). */
    char *channel;
    char *id;
};

/** A publish waiting for the broker's answer; in the worker's `pubs` map by cookie. */
struct wsb_pending_pub {
    uint64_t cookie;
    struct wsb_session *s; /* NULL once the session is gone */
    struct wsb_pending_pub *next_in_session;
    char id[WSB_ID_MAX + 1];
    char channel[WSB_CHANNEL_MAX + 1];
};

struct wsb_session {
    struct wsb_worker *w;
    struct wsb_session *prev, *next, *reap_next, *detach_next;
    uint64_t id;
    char sid[24];
    /* The socket. TLS (and the unit tests' bufferevent pairs): libevent's bufferevent. A
     * plain socket has none (a socket bufferevent, its input evbuffer and their callbacks
     * were ~1 KiB of an idle connection; docs/benchmarks.md, Footprint): the session reads
     * and writes `fd` itself, with one `io` event for read and write readiness (conn.c reads,
     * writer.c writes), and holds an input evbuffer only while input waits unconsumed. */
    struct bufferevent *bev; /* NULL for a plain socket */
    struct evbuffer *out;    /* what the socket has not taken yet: bev's output, or our own
                              * (plain: NULL while idle; wsb_session_output makes it) */
    struct evbuffer *in;     /* plain: unconsumed input (a partial request head), or NULL */
    struct event *io;        /* plain: its read/write event (made by conn.c), or NULL */
    int fd;                  /* plain: the socket (closed with the session); -1 with a bev */
    uint32_t read_max;       /* plain: no reading while `in` holds this much */
    short io_what;           /* plain: what `io` is added for (EV_READ, EV_WRITE) */
    bool read_on;            /* plain: reading is enabled (bufferevent_enable's EV_READ) */
    bool detach_queued;      /* on the worker's detach list (fields ordered to leave no holes) */
    union wsb_peer_addr addr;
    char ip[INET6_ADDRSTRLEN];
    struct wsb_ip_ticket ip_ticket; /* what the per-IP table counted for us */
    bool counted; /* in shared->connections and metrics.connections (from accept) */
    enum wsb_session_state state;
    enum wsb_transport transport;
    struct wsb_runtime *rt;
    /* HTTP transport: the first reply (a JSON object) is handed here instead of being
     * queued; on_free runs when the session is freed. Set by the layer that opened it. */
    void (*on_reply)(struct wsb_session *s, const struct wsb_buf *b);
    void (*on_free)(struct wsb_session *s);
    void *ext; /* that layer's state */

    /* WebSocket */
    /* The frame parser (~220 bytes) exists only while a frame or a fragmented message is
     * partly read: conn.c makes it for a read and frees it when the input ends between
     * messages (docs/benchmarks.md, Footprint). */
    struct wsb_frame_parser *fp;
    struct wsb_inflater *inflater;
    struct wsb_utf8 utf8;
    bool pmd;
    bool deflate_out;   /* compress messages we send */
    bool discard_input; /* input is read and thrown away */
    bool close_only;    /* after 4401: requests are ignored, a close frame ends it */
    struct wsb_buf msg;
    bool msg_binary;
    bool msg_over;    /* overdrew the inbound byte bucket: read to its end, not kept */
    bool msg_pending; /* a message has started and not ended (message_timeout_ms) */
    int64_t msg_started_ms;
    uint64_t msg_total;

    /* application */
    struct wsb_identity *ident;
    struct wsb_acl *acl;
    struct wsb_sub *subs;
    size_t nsubs; /* used slots */
    size_t cap;
    uint32_t inflight;
    uint32_t strikes;
    struct wsb_pending_pub *pubs;
    struct wsb_bucket in_msgs, in_bytes;

    /* output */
    struct wsb_outq q;
    struct wsb_sendbuf sb;
    struct wsb_gate_member gm; /* in the worker's hand-off gate (gate.h) */
    bool close_after_flush;
    bool linger; /* after the flush: FIN, then read until EOF (see wsb_session_written) */
    bool read_paused;
    bool direct;           /* plaintext: written by the loop's flush (writer.h), not libevent */
    bool write_armed;      /* direct: the kernel refused part of the output; EV_WRITE is on */
    bool tls;              /* accepted on a TLS listener */
    uint32_t dirty_slot;   /* direct: 1 + index in the loop's dirty list, 0 when not listed */
    uint64_t dropped;      /* messages dropped for this client (drop_oldest) */
    uint64_t messages_out; /* message frames handed to the socket */
    int64_t opened_us;     /* when the upgrade completed (monotonic) */
    json_t *tls_claims;    /* mtls_subject / mtls_cn of a verified client certificate, or NULL */

    /* One timer event for every deadline (monotonic ms, 0 when unset): it is armed for the
     * earliest (one event, not three: ~290 bytes per idle connection). */
    struct event *timer;
    int64_t oneshot_ms; /* handshake deadline, pong deadline, close wait, stream end */
    int64_t ping_ms;    /* next ping (or SSE keep-alive comment) */
    int64_t expiry_ms;  /* the token's exp + leeway */
    int64_t ping_sent_ms;
    bool expiry_on; /* the session has a token-expiry deadline (not HTTP) */
    bool awaiting_pong;
};

/* ---- life ---------------------------------------------------------------------------- */

/** A new session in the handshake state on `bev` (borrowed until the session is freed,
 * which frees it), linked into the worker's list, with its handshake deadline armed. The
 * caller installs the bufferevent callbacks. With bev NULL (a plain socket) the caller sets
 * fd, out and io (freed with the session) before anything is read or written. NULL on OOM
 * (the caller frees bev). */
struct wsb_session *wsb_session_new(struct wsb_worker *w, struct bufferevent *bev,
                                    const struct sockaddr *addr, int socklen);

/** The session opens (via wsb_grants_start): inbound buckets and, for a stream, pings. */
void wsb_session_start(struct wsb_session *s);

/** Puts the session on the worker's reap list (freed at a safe point, never here). */
void wsb_session_kill(struct wsb_session *s);

/* ---- the socket ------------------------------------------------------------------- */

/** The output evbuffer to add to: a plain session's is made again if the idle tick gave it
 * back (writer.h). NULL only when that fails (out of memory: the session is killed). */
struct evbuffer *wsb_session_output(struct wsb_session *s);

/** Bytes in the output evbuffer (0 when there is none). */
size_t wsb_session_out_len(const struct wsb_session *s);

/** Enables or disables reading from the socket (bufferevent_enable/disable of EV_READ). */
void wsb_session_read(struct wsb_session *s, bool on);

/** A plain socket: adds `io` for what is wanted now (reading enabled and `in` below
 * read_max; write readiness while write_armed and output waits), deletes it when nothing
 * is (a dead session wants nothing). No-op with a bufferevent. */
void wsb_session_io_update(struct wsb_session *s);

/** How much unconsumed input may wait before reading stops (the read high-water mark). */
void wsb_session_set_read_max(struct wsb_session *s, size_t max);

/** The session's socket, or -1. */
int wsb_session_fd(const struct wsb_session *s);

/** Starts the close handshake (RFC 6455 §7.1.2) from an open session. `fail`: TCP closes as
 * soon as our close frame is flushed; otherwise we wait a while for the client's. */
void wsb_session_close(struct wsb_session *s, uint16_t code, const char *reason, bool fail);

/** Answers the client's close frame (its status code echoed, or an empty close) and closes
 * TCP once that is flushed. `code` is the client's code (1005 when none). */
void wsb_session_close_echo(struct wsb_session *s, uint16_t code, const uint8_t *payload,
                            size_t len);

/** Ends an SSE stream or HTTP response once what is queued is written. */
void wsb_session_end_stream(struct wsb_session *s);

/** Closes with 4401 and {"error":CODE}; afterwards only the client's close frame counts.
 * An SSE stream gets an `error` event with that code and ends. */
void wsb_session_close_token_error(struct wsb_session *s, const char *code);

/** A connection that never became a WebSocket: what is queued is flushed, then we send FIN
 * and close once the client has closed too, or after a second (input is discarded). */
void wsb_session_end_after_flush(struct wsb_session *s);

/** The socket buffer drained: more of the out-queue goes out, and a session that waits to
 * close after the flush is killed once everything is written. */
void wsb_session_written(struct wsb_session *s);

/** Arms the session's one-shot deadline (handshake, pong or close deadline) `ms` from now. */
void wsb_session_arm_timer(struct wsb_session *s, uint32_t ms);

/** Clears the one-shot deadline (the handshake completed, the pong arrived). */
void wsb_session_disarm_timer(struct wsb_session *s);

/** The token-expiry deadline: `in_ms` from now (4401 token_expired then), or none when
 * negative. Ignored by sessions without one (HTTP). */
void wsb_session_set_expiry(struct wsb_session *s, int64_t in_ms);

/* ---- output -------------------------------------------------------------------------- */

/** The limits of the session's runtime snapshot. */
const struct wsb_limits *wsb_session_limits(const struct wsb_session *s);

/** Bytes queued for the client (out-queue and socket buffer). */
uint64_t wsb_session_queued(const struct wsb_session *s);

/** Writes a control frame straight to the socket buffer. */
void wsb_session_send_control(struct wsb_session *s, uint8_t opcode, const void *p, size_t len);

/** Queues `b` (a server JSON object) as a text frame, or on SSE as an event of its type
 * (open sessions only), and flushes; on the HTTP transport it goes to on_reply. */
void wsb_session_reply(struct wsb_session *s, struct wsb_buf *b);

/** Queues an `error` reply. */
void wsb_session_reply_error(struct wsb_session *s, const char *id, const char *code,
                             const char *msg);

/** Moves frames from the out-queue into the socket buffer while it has room, and tells the
 * worker's hand-off gate whether the client is behind. */
void wsb_session_flush(struct wsb_session *s);

/** The hand-off gate's wsb_gate_hold_cb (ctx: the worker): a session that starts or stops
 * holding counts or uncounts each of its subscriptions' sources. */
void wsb_session_gate_hold(void *ctx, struct wsb_gate_member *m, bool holding);
/** A subscription's slot is taken (`on`, source_id set) or freed: counted in the gate while
 * the session holds. */
void wsb_session_gate_sub(struct wsb_session *s, struct wsb_sub *sub, bool on);

/** Notes a burst (a client with many frames queued): the worker gives the memory back to the
 * system once every queue drained. */
void wsb_session_note_burst(struct wsb_session *s);

/* ---- subscriptions ------------------------------------------------------------------- */

/** The subscription to `channel`, or NULL. */
struct wsb_sub *wsb_session_find_sub(struct wsb_session *s, const char *channel, size_t len);

/** A free slot (the table grows); NULL on OOM. The slot is not marked used. */
struct wsb_sub *wsb_session_new_sub(struct wsb_session *s);

/** Ends a subscription: hub, unacked deliveries back to the broker, registry, slot. */
void wsb_session_drop_sub(struct wsb_session *s, struct wsb_sub *sub);

/** Frees a slot whose hub subscription is gone: its frames still queued (they do not go out
 * any more), its unacked list, the count. */
void wsb_session_free_slot(struct wsb_session *s, struct wsb_sub *sub);

/** SSE: the positions delivered on `sub` (created empty on first call); NULL on OOM. */
struct wsb_sse_pos *wsb_session_sse_pos(struct wsb_sub *sub);

/** Hands a delivery the client will never ack back to the broker (nothing is lost). */
void wsb_session_requeue(struct wsb_session *s, const struct wsb_sub *sub, uint64_t token);

/* ---- the worker's view --------------------------------------------------------------- */

/** Closes with 1001 (drain). */
void wsb_session_drain(struct wsb_session *s);

/** The next session of the worker's list. */
struct wsb_session *wsb_session_next(struct wsb_session *s);

/** Puts the session on the reap list at once (shutdown after the drain timeout). */
void wsb_session_force_close(struct wsb_session *s);

#endif
