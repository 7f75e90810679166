/* wsb-load: a libevent WebSocket client for loopback load tests and benchmarks of wsbridge. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>

#include "bridge/ws/ws_frame.h"
#include "bridge/ws/ws_http.h"
#include "wsb_load_parse.h"

#define MAX_CLIENTS 100000
#define MAX_HEAD 8192
#define MAX_MESSAGE (16u << 20) /* bound on one server message, bytes */
#define MAX_PARTITIONS 256      /* partitions tracked per client for offset order */
#define MAX_CODES 32            /* distinct close codes / statuses / error codes counted */
#define TICK_US 10000           /* connect / publish pacing timer */
#define SLOW_RCVBUF 4096
#define LAT_BUCKETS 100001 /* latency histogram: 0.1 ms buckets up to 10 s, then overflow */
#define PUBLISH_WINDOW 32  /* unconfirmed publishes in flight */
#define MAX_CPU_PIDS 8
#define MAX_THREADS 64
#define READ_CHUNK (256 * 1024) /* bytes asked of the kernel per read */

enum client_state {
    CS_IDLE,      /* not opened yet */
    CS_CONNECT,   /* TCP connecting */
    CS_HANDSHAKE, /* upgrade sent, waiting for the response head */
    CS_OPEN,      /* WebSocket open */
    CS_HTTP,      /* --probe: plain HTTP request sent; --publish-path: HTTP publisher */
    CS_DONE,      /* closed or failed; bufferevent freed */
};

enum client_role { ROLE_FAST, ROLE_SLOW, ROLE_PUBLISHER };

struct client {
    struct load *ld;
    int idx;
    enum client_role role;
    enum client_state state;
    struct bufferevent *bev;
    char key[25]; /* Sec-WebSocket-Key */
    bool subscribed;
    bool closing; /* close frame sent: free once the output drained */
    /* fragmented message being assembled (the server normally sends whole messages) */
    struct evbuffer *frag;
    uint8_t frag_opcode;
    /* counters */
    uint64_t received;
    uint64_t gaps_dropped;
    /* offsets missing between two records of one partition (a hole: the bridge's gap
     * notices, a filter, or records the broker no longer had when the consumer fetched) */
    uint64_t offsets_skipped;
    /* order checks: per-partition next offsets (Kafka) or the data "seq" (memory) */
    int64_t last_offset[MAX_PARTITIONS];
    int64_t last_seq;
    bool sse; /* a Server-Sent Events subscriber (--sse) */
    bool bad; /* a malformed frame in the current batch */
    /* a fast WebSocket client, once open, reads its socket itself (on_raw_read): rev is its
     * read event and carry the start of a frame that the last read ended inside */
    struct event *rev;
    uint8_t *carry;
    size_t carry_len, carry_cap;
};

struct counter {
    char name[16];
    uint64_t n;
};

struct counters {
    size_t len;
    struct counter c[MAX_CODES];
};

struct options {
    const char *url;
    char host[256];
    char port[8];
    char path[1024];
    int clients;
    double connect_rate;
    const char *channel;
    const char *from; /* raw JSON */
    const char *token;
    long long expect; /* -1 when not given */
    double duration;  /* seconds, 0 = none */
    int slow;
    double publish_rate; /* 0 = no publisher */
    size_t payload;
    const char *origin;
    bool raw;               /* a peer server: no wsbridge.v1 protocol, every text frame is data */
    int spread;             /* source addresses 127.0.0.1 .. 127.0.0.N (0: the kernel picks) */
    bool hold;              /* print "ready" on stderr once every client is subscribed */
    bool churn;             /* each client reconnects right after its subscribe (handshakes/s) */
    bool probe;             /* churn with a plain HTTP GET instead of an upgrade (TCP baseline) */
    const char *pub_path;   /* HTTP publisher: POST each message to this path (nchan) */
    const char *cpu_spec;   /* name=pid,... processes whose CPU seconds are reported */
    unsigned window;        /* unconfirmed publishes in flight */
    const char *sse_path;   /* subscribers use the bridge's event stream on this path */
    const char *token_file; /* one token a line, used in turn (each upgrade takes the next) */
    char **keys;            /* --keys: publish i carries "key": keys[i % nkeys] (filters) */
    const char *ref_times;  /* --ref-times: "SEQ MS" lines, another reader's receive times */
    const char *ref_times2; /* a second --ref-times (after_ref2_ms) */
    size_t nkeys;
    int threads; /* --threads: event loops (one per thread), connections spread over them */
};

struct load;

/* What the threads of one run share. Every other piece of state is one thread's own (struct
 * load, a shard: its clients, counters and histogram), merged at the end. */
struct run {
    int nshards;
    struct load *shards;
    int64_t start_us;
    _Atomic int64_t end_us; /* 0 until the run ends (the first finish sets it) */
    atomic_bool stop;
    atomic_int ready_shards; /* shards whose clients are all subscribed (or gone) */
    atomic_int done_shards;  /* shards whose clients are all complete (or gone) */
    atomic_uint_fast64_t subscribed;
    atomic_size_t next_token;
};

struct load {
    struct options opt;
    struct run *run;
    int shard;           /* this thread's index; shard 0 runs in main and owns the publisher */
    int nsubs;           /* its subscribers: global indexes shard, shard + nshards, ... */
    int nlocal;          /* nsubs, plus the publisher in shard 0 */
    struct client *pub;  /* the publisher (shard 0), or NULL */
    bool ready, done;    /* counted in run->ready_shards / done_shards */
    clockid_t cpu_clock; /* this thread's CPU clock */
    double thread_cpu_start, thread_cpu_end;
    pthread_t thread;
    struct event_base *base;
    struct event *tick;
    struct event *sigint;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct client *clients; /* every client of the run: opt.clients, then the publisher */
    int nclients;
    int next_to_open;
    double connect_credit;
    uint64_t rng;
    int64_t start_us;
    int64_t end_us;
    bool stopping;
    /* aggregate results */
    uint64_t order_violations;
    uint64_t handshake_ok;
    uint64_t connect_errors;
    uint64_t protocol_errors;
    uint64_t subscribed;
    uint64_t closed; /* clients in CS_DONE */
    struct counters close_codes;
    struct counters refused;     /* HTTP statuses of refused handshakes */
    struct counters error_codes; /* "error" messages by code */
    /* publisher */
    double publish_credit;
    uint64_t published_sent;
    uint64_t published_ok;
    uint64_t publish_failed; /* error replies to the publisher */
    bool publish_started;
    char *pad;
    double now_ms;           /* wall clock (Unix ms) taken when the current read batch began */
    double first_message_ms; /* wall clock of the first message a fast client got, 0 = none */
    /* latency */
    uint64_t *lat;
    uint64_t lat_n;
    /* --ref-times: every fast delivery's data.seq and receive wall clock */
    struct recv_at {
        int64_t seq;
        double ms;
    } * recv;
    size_t nrecv, caprecv;
    /* measurement window: from the publisher's start (or the run's) to the end */
    int64_t window_us;
    uint64_t window_received;
    uint64_t cycles; /* --churn / --probe: completed connect-to-close cycles */
    unsigned next_src;
    bool ready_said;
    int ncpu;
    char cpu_name[MAX_CPU_PIDS][16];
    int cpu_pid[MAX_CPU_PIDS];
    double cpu_start[MAX_CPU_PIDS];
    double self_cpu_start;
    /* HTTP publisher */
    size_t http_body_left;
    _Atomic uint64_t rx_total; /* messages received by fast clients (read by shard 0) */
    uint64_t frames, batches;  /* WebSocket frames parsed; read callbacks that parsed them */
    uint8_t *rbuf;             /* this thread's read buffer: a carried frame start + a read */
    size_t rbuf_cap;
    char **tokens; /* --token-file (shared, read-only) */
    size_t ntokens;
};

/* The shard's j-th subscriber, or its publisher (j == nsubs in shard 0). */
static struct client *local_client(struct load *ld, int j)
{
    return j < ld->nsubs ? &ld->clients[ld->shard + j * ld->run->nshards] : ld->pub;
}

/* Only this thread writes its rx_total: a relaxed load and store, no locked instruction. */
static void rx_inc(struct load *ld)
{
    atomic_store_explicit(&ld->rx_total,
                          atomic_load_explicit(&ld->rx_total, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static volatile sig_atomic_t got_sigint;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static uint64_t rng_next(struct load *ld)
{
    /* xorshift64*: masks and nonces of a test client need not be unpredictable */
    uint64_t x = ld->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ld->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void count_n(struct counters *cs, const char *name, uint64_t n)
{
    for (size_t i = 0; i < cs->len; i++) {
        if (strcmp(cs->c[i].name, name) == 0) {
            cs->c[i].n += n;
            return;
        }
    }
    const char *slot = cs->len < MAX_CODES ? name : "other";
    size_t i = cs->len < MAX_CODES ? cs->len++ : MAX_CODES - 1;
    snprintf(cs->c[i].name, sizeof cs->c[i].name, "%s", slot);
    cs->c[i].n += n;
}

static void count(struct counters *cs, const char *name)
{
    count_n(cs, name, 1);
}

static void count_code(struct counters *cs, unsigned code)
{
    char name[16];
    snprintf(name, sizeof name, "%u", code);
    count(cs, name);
}

static void base64_encode(const uint8_t *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* ---- output to the server ---- */

static void send_frame(struct client *c, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t hdr[14];
    size_t n = wsb_frame_header(hdr, opcode, true, false, len);
    hdr[1] |= 0x80; /* RFC 6455 §5.3: client frames are masked */
    uint64_t r = rng_next(c->ld);
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    memcpy(hdr + n, mask, 4);
    n += 4;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, hdr, n);
    if (len == 0)
        return;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, len, &v, 1) < 1)
        return;
    const uint8_t *src = payload;
    uint8_t *dst = v.iov_base;
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] ^ mask[i & 3];
    v.iov_len = len;
    evbuffer_commit_space(out, &v, 1);
}

static void send_json(struct client *c, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    if (text) {
        send_frame(c, WSB_OP_TEXT, text, strlen(text));
        free(text);
    }
    json_decref(obj);
}

/* ---- client lifecycle ---- */

static void finish(struct load *ld);
static void shard_done(struct load *ld);

static void client_done(struct client *c)
{
    if (c->state == CS_DONE)
        return;
    if (c->rev) /* before the bufferevent, which closes the socket */
        event_free(c->rev);
    c->rev = NULL;
    free(c->carry);
    c->carry = NULL;
    c->carry_len = c->carry_cap = 0;
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->frag)
        evbuffer_free(c->frag);
    c->frag = NULL;
    c->state = CS_DONE;
    c->ld->closed++;
}

/* Answers a server close (RFC 6455 §5.5.1) and frees the client once the echo is written. */
static void client_close(struct client *c, uint16_t code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    send_frame(c, WSB_OP_CLOSE, p, code ? 2 : 0);
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    if (c->rev)
        event_del(c->rev);
}

static void subscribe(struct client *c)
{
    struct load *ld = c->ld;
    json_t *req =
        json_pack("{s:s, s:i, s:s}", "op", "subscribe", "id", 1, "channel", ld->opt.channel);
    if (ld->opt.from) {
        json_t *from = json_loads(ld->opt.from, JSON_DECODE_ANY, NULL);
        if (from)
            json_object_set_new(req, "from", from);
    }
    send_json(c, req);
}

static void check_order(struct client *c, const struct wsl_msg *m, const struct wsl_data *d)
{
    struct load *ld = c->ld;
    int64_t part, off;
    if (m->offset.p && wsl_span_int(m->offset, &off)) {
        if (!m->partition.p || !wsl_span_int(m->partition, &part))
            part = 0;
        if (part < 0 || part >= MAX_PARTITIONS)
            return;
        if (off <= c->last_offset[part])
            ld->order_violations++;
        else if (c->last_offset[part] >= 0 && off - c->last_offset[part] > 1)
            c->offsets_skipped += (uint64_t)(off - c->last_offset[part] - 1);
        c->last_offset[part] = off;
        return;
    }
    int64_t seq;
    if (d->seq.p && wsl_span_int(d->seq, &seq)) {
        if (seq <= c->last_seq)
            ld->order_violations++;
        c->last_seq = seq;
    }
}

/* Latency from the publisher's "ts" in data, else the broker timestamp (both Unix ms). */
static void record_latency(struct load *ld, const struct wsl_msg *m, const struct wsl_data *d)
{
    double ts = -1;
    if (!(d->ts.p && wsl_span_num(d->ts, &ts)) &&
        !(m->timestamp.p && wsl_span_num(m->timestamp, &ts)))
        return;
    double now = ld->now_ms, ms = now - ts; /* the batch's receive time (on_read) */
    int64_t seq;
    if (ld->opt.ref_times && d->seq.p && wsl_span_int(d->seq, &seq)) {
        if (ld->nrecv == ld->caprecv) {
            size_t cap = ld->caprecv ? 2 * ld->caprecv : 65536;
            struct recv_at *r = realloc(ld->recv, cap * sizeof(*r));
            if (r) {
                ld->recv = r;
                ld->caprecv = cap;
            }
        }
        if (ld->nrecv < ld->caprecv)
            ld->recv[ld->nrecv++] = (struct recv_at){seq, now};
    }
    if (ms < 0)
        ms = 0;
    size_t b = (size_t)(ms * 10.0);
    if (b >= LAT_BUCKETS)
        b = LAT_BUCKETS - 1;
    ld->lat[b]++;
    ld->lat_n++;
}

static bool client_complete(const struct client *c)
{
    return c->role == ROLE_FAST && c->ld->opt.expect >= 0 &&
           c->received >= (uint64_t)c->ld->opt.expect;
}

static void maybe_finish(struct load *ld)
{
    if (ld->opt.expect < 0)
        return;
    for (int j = 0; j < ld->nsubs; j++) {
        struct client *c = local_client(ld, j);
        if (c->role == ROLE_FAST && !client_complete(c) && c->state != CS_DONE)
            return;
    }
    /* every fast client is complete or gone: nothing more can change the verdict */
    shard_done(ld);
}

static void publish_acked(struct load *ld);

static void on_raw_text(struct client *c, const char *text, size_t len)
{
    struct load *ld = c->ld;
    if (c->role == ROLE_PUBLISHER) { /* the peer's acknowledgement of one publish */
        ld->published_ok++;
        publish_acked(ld);
        return;
    }
    c->received++;
    if (c->role == ROLE_FAST) {
        rx_inc(ld);
        struct wsl_msg m = {0};
        struct wsl_data d = {0};
        wsl_scan_data(text, text + len, &d);
        check_order(c, &m, &d);
        record_latency(ld, &m, &d);
        if (ld->opt.expect >= 0 && c->received == (uint64_t)ld->opt.expect)
            maybe_finish(ld);
    }
}

static void client_recycle(struct client *c);
static void raw_read_start(struct client *c);

static void on_text(struct client *c, const char *text, size_t len)
{
    struct load *ld = c->ld;
    if (ld->opt.raw) {
        on_raw_text(c, text, len);
        return;
    }
    struct wsl_msg m = {0};
    struct wsl_data d = {0};
    if (wsl_scan_msg(text, text + len, &m, &d) < 0) {
        ld->protocol_errors++;
        return;
    }
    if (wsl_span_eq(m.type, "\"message\"")) {
        c->received++;
        if (c->role == ROLE_FAST) {
            rx_inc(ld);
            if (ld->first_message_ms == 0)
                ld->first_message_ms = ld->now_ms;
            check_order(c, &m, &d);
            record_latency(ld, &m, &d);
            if (ld->opt.expect >= 0 && c->received == (uint64_t)ld->opt.expect)
                maybe_finish(ld);
        }
    } else if (wsl_span_eq(m.type, "\"welcome\"")) {
        if (c->sse)
            ; /* the stream subscribed its channel itself */
        else if (ld->opt.channel && c->role != ROLE_PUBLISHER)
            subscribe(c);
        else if (ld->opt.churn)
            client_recycle(c);
    } else if (wsl_span_eq(m.type, "\"subscribed\"")) {
        if (ld->opt.churn) {
            client_recycle(c);
            return;
        }
        if (!c->subscribed) {
            c->subscribed = true;
            ld->subscribed++;
            atomic_fetch_add(&ld->run->subscribed, 1);
        }
        if (c->role == ROLE_SLOW)
            bufferevent_disable(c->bev, EV_READ); /* never read again */
    } else if (wsl_span_eq(m.type, "\"published\"")) {
        ld->published_ok++;
        publish_acked(ld);
    } else if (wsl_span_eq(m.type, "\"gap\"")) {
        int64_t n;
        if (m.dropped.p && wsl_span_int(m.dropped, &n) && n > 0)
            c->gaps_dropped += (uint64_t)n;
    } else if (wsl_span_eq(m.type, "\"error\"")) {
        char code[16] = "unknown";
        if (m.code.p && m.code.len >= 2 && m.code.len - 2 < sizeof code) {
            memcpy(code, m.code.p + 1, m.code.len - 2);
            code[m.code.len - 2] = '\0';
        }
        count(&ld->error_codes, code);
        if (c->role == ROLE_PUBLISHER)
            ld->publish_failed++;
    }
}

static void on_control(struct client *c, uint8_t opcode, const uint8_t *p, size_t len)
{
    if (opcode == WSB_OP_PING) {
        send_frame(c, WSB_OP_PONG, p, len);
    } else if (opcode == WSB_OP_CLOSE) {
        uint16_t code = len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
        count_code(&c->ld->close_codes, code);
        client_close(c, len >= 2 ? code : 0);
    }
}

/* One server frame of a batch. Returns nonzero to stop the batch (the client closes, is
 * gone, or the frame was malformed: c->bad). */
static int on_frame(void *arg, const struct wsl_frame *f)
{
    struct client *c = arg;
    c->ld->frames++;
    if (f->opcode >= 0x8) {
        on_control(c, f->opcode, f->payload, f->len);
    } else if (f->opcode == WSB_OP_CONT || !f->fin) {
        if (!c->frag) {
            if (f->opcode == WSB_OP_CONT || !(c->frag = evbuffer_new()))
                return c->bad = true;
            c->frag_opcode = f->opcode;
        } else if (f->opcode != WSB_OP_CONT) {
            return c->bad = true;
        }
        if (evbuffer_get_length(c->frag) + f->len > MAX_MESSAGE)
            return c->bad = true;
        evbuffer_add(c->frag, f->payload, f->len);
        if (f->fin) {
            size_t n = evbuffer_get_length(c->frag);
            const char *whole = (const char *)evbuffer_pullup(c->frag, -1);
            if (c->frag_opcode == WSB_OP_TEXT && whole)
                on_text(c, whole, n);
            if (c->frag) /* not freed by a recycle inside on_text */
                evbuffer_free(c->frag);
            c->frag = NULL;
        }
    } else if (f->opcode == WSB_OP_TEXT) {
        on_text(c, (const char *)f->payload, f->len);
    } else if (f->opcode != WSB_OP_BINARY) {
        return c->bad = true;
    }
    return c->closing || !c->bev || c->state != CS_OPEN;
}

/* Decodes every complete server frame in the input, a batch at a time: the frames of the
 * input's first contiguous chunk (libevent reads up to 256 KiB into one) are parsed in place
 * and dropped with one drain; only a frame that straddles two chunks is made contiguous.
 * Returns -1 on a protocol error. */
static int read_frames(struct client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    c->ld->batches++;
    while (!c->closing && c->bev && c->state == CS_OPEN) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return 0;
        size_t need;
        ssize_t used = wsl_parse_frames(v.iov_base, v.iov_len, MAX_MESSAGE, on_frame, c, &need);
        if (used < 0 || c->bad)
            return -1;
        if (c->state == CS_DONE || !c->bev)
            return 0; /* freed (--churn recycle): its input goes with it */
        if (used > 0) {
            evbuffer_drain(in, (size_t)used);
            continue;
        }
        /* the next frame straddles chunks: join just its bytes, when they are all here */
        if (need <= v.iov_len || evbuffer_get_length(in) < need)
            return 0;
        if (!evbuffer_pullup(in, (ssize_t)need))
            return -1;
    }
    return 0;
}

/* --sse: events from the stream; each event's data lines (joined with "\n") are one server
 * JSON object. */
static int read_events(struct client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->bev && c->state == CS_OPEN) {
        struct evbuffer_ptr end = evbuffer_search(in, "\n\n", 2, NULL);
        if (end.pos < 0)
            return evbuffer_get_length(in) > MAX_MESSAGE ? -1 : 0;
        size_t n = (size_t)end.pos + 2;
        char *block = malloc(n + 1);
        char *data = malloc(n + 1);
        if (!block || !data) {
            free(block);
            free(data);
            return -1;
        }
        evbuffer_remove(in, block, n);
        block[n] = '\0';
        size_t dl = 0;
        for (char *line = block, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next)
                *next++ = '\0';
            if (strncmp(line, "data:", 5) == 0) {
                const char *v = line[5] == ' ' ? line + 6 : line + 5;
                size_t vl = strlen(v);
                if (dl)
                    data[dl++] = '\n';
                memcpy(data + dl, v, vl);
                dl += vl;
            }
        }
        if (dl)
            on_text(c, data, dl);
        free(block);
        free(data);
    }
    return 0;
}

/* Reads the upgrade response head. Returns 1 when open, 0 when more bytes are needed, -1
 * when refused or malformed (the status is counted). */
static int read_handshake(struct client *c)
{
    struct load *ld = c->ld;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > MAX_HEAD) {
            count(&ld->refused, "bad_head");
            return -1;
        }
        return 0;
    }
    size_t n = (size_t)end.pos + 4;
    if (n > MAX_HEAD) {
        count(&ld->refused, "bad_head");
        return -1;
    }
    char head[MAX_HEAD + 1];
    evbuffer_remove(in, head, n);
    head[n] = '\0';
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 599) {
        count(&ld->refused, "bad_head");
        return -1;
    }
    if (c->sse && status == 200) {
        ld->handshake_ok++;
        return 1;
    }
    if (status != 101) {
        count_code(&ld->refused, (unsigned)status);
        return -1;
    }
    char want[29];
    wsb_ws_accept_key(c->key, strlen(c->key), want);
    const char *p = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (p) {
        p += strlen("\r\nSec-WebSocket-Accept:");
        while (*p == ' ' || *p == '\t')
            p++;
    }
    if (!p || strncmp(p, want, 28) != 0) {
        count(&ld->refused, "bad_accept");
        return -1;
    }
    ld->handshake_ok++;
    return 1;
}

/* The HTTP publisher's responses (status, Content-Length body), pipelined. */
static void read_http_responses(struct client *c)
{
    struct load *ld = c->ld;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (ld->http_body_left) {
            size_t n = evbuffer_get_length(in);
            if (n == 0)
                return;
            if (n > ld->http_body_left)
                n = ld->http_body_left;
            evbuffer_drain(in, n);
            ld->http_body_left -= n;
            continue;
        }
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0 || (size_t)end.pos + 4 > MAX_HEAD)
            return;
        char head[MAX_HEAD + 1];
        size_t n = (size_t)end.pos + 4;
        evbuffer_remove(in, head, n);
        head[n] = '\0';
        int status = 0;
        sscanf(head, "HTTP/1.%*d %d", &status);
        if (status >= 200 && status < 300)
            ld->published_ok++;
        else
            ld->publish_failed++;
        const char *cl = strcasestr(head, "\r\nContent-Length:");
        ld->http_body_left = cl ? strtoul(cl + 17, NULL, 10) : 0;
        publish_acked(ld);
    }
}

static bool carry_reserve(uint8_t **p, size_t *cap, size_t want)
{
    if (want <= *cap)
        return true;
    size_t n = *cap ? *cap : 4096;
    while (n < want)
        n *= 2;
    uint8_t *q = realloc(*p, n);
    if (!q)
        return false;
    *p = q;
    *cap = n;
    return true;
}

/* A fast WebSocket client's reads, without the bufferevent: one recv of up to 256 KiB into the
 * thread's buffer (behind the start of a frame the previous read ended inside), every complete
 * frame parsed in place, the rest kept. No FIONREAD ioctl and no buffer allocated per read,
 * as libevent's evbuffer_read does. */
static void on_raw_read(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    struct load *ld = c->ld;
    (void)what;
    if (!carry_reserve(&ld->rbuf, &ld->rbuf_cap, c->carry_len + READ_CHUNK))
        return;
    if (c->carry_len)
        memcpy(ld->rbuf, c->carry, c->carry_len);
    ssize_t n = recv(fd, ld->rbuf + c->carry_len, READ_CHUNK, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    /* one clock read per read() batch: every frame in it had arrived by now */
    ld->now_ms = wall_ms();
    if (n <= 0) {
        if (!c->closing)
            count_code(&ld->close_codes, 1006); /* TCP closed with no close frame */
        client_done(c);
        maybe_finish(ld);
        return;
    }
    ld->batches++;
    size_t total = c->carry_len + (size_t)n, need;
    ssize_t used = wsl_parse_frames(ld->rbuf, total, MAX_MESSAGE, on_frame, c, &need);
    if (c->state == CS_DONE)
        return; /* freed (--churn recycle) */
    if (used < 0 || c->bad) {
        ld->protocol_errors++;
        count(&ld->close_codes, "protocol_error");
        if (!c->closing)
            client_close(c, 1002);
        return;
    }
    size_t left = total - (size_t)used;
    if (left && !carry_reserve(&c->carry, &c->carry_cap, left)) {
        client_close(c, 1011);
        return;
    }
    if (left)
        memcpy(c->carry, ld->rbuf + used, left); /* distinct buffers */
    c->carry_len = left;
}

/* Once open (and past whatever frames came with the upgrade response), a fast client reads
 * its socket with on_raw_read; the bufferevent keeps writing (pongs, the close echo). */
static void raw_read_start(struct client *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t left = evbuffer_get_length(in);
    if (left && !carry_reserve(&c->carry, &c->carry_cap, left))
        return; /* stays on the bufferevent */
    c->rev =
        event_new(c->ld->base, bufferevent_getfd(c->bev), EV_READ | EV_PERSIST, on_raw_read, c);
    if (!c->rev || event_add(c->rev, NULL) < 0) {
        if (c->rev)
            event_free(c->rev);
        c->rev = NULL;
        return;
    }
    if (left)
        evbuffer_remove(in, c->carry, left);
    c->carry_len = left;
    bufferevent_disable(c->bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    (void)bev;
    /* one clock read per read() batch: every frame in it had arrived by now */
    c->ld->now_ms = wall_ms();
    if (c->state == CS_HTTP) {
        if (c->role == ROLE_PUBLISHER) {
            read_http_responses(c);
        } else if (evbuffer_search(bufferevent_get_input(c->bev), "\r\n\r\n", 4, NULL).pos >= 0) {
            client_recycle(c); /* --probe: one request answered */
        }
        return;
    }
    if (c->state == CS_HANDSHAKE) {
        int r = read_handshake(c);
        if (r < 0) {
            client_done(c);
            maybe_finish(c->ld);
            return;
        }
        if (r == 0)
            return;
        c->state = CS_OPEN;
        if (c->ld->opt.raw && c->role != ROLE_PUBLISHER) {
            if (c->ld->opt.churn) {
                client_recycle(c);
                return;
            }
            c->subscribed = true; /* a peer subscribes by its URL */
            c->ld->subscribed++;
            atomic_fetch_add(&c->ld->run->subscribed, 1);
        }
    }
    if (c->state == CS_OPEN && (c->sse ? read_events(c) : read_frames(c)) < 0) {
        c->ld->protocol_errors++;
        count(&c->ld->close_codes, "protocol_error");
        client_close(c, 1002);
        return;
    }
    if (c->state == CS_OPEN && c->role == ROLE_FAST && !c->sse && !c->closing && c->bev)
        raw_read_start(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        client_done(c);
        maybe_finish(c->ld);
    }
}

static void send_upgrade(struct client *c)
{
    struct load *ld = c->ld;
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(ld);
        memcpy(nonce + i, &r, 8);
    }
    base64_encode(nonce, sizeof nonce, c->key);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->sse) {
        evbuffer_add_printf(out,
                            "GET %s?channel=%s%s%s HTTP/1.1\r\nHost: %s:%s\r\n"
                            "Accept: text/event-stream\r\n",
                            ld->opt.sse_path, ld->opt.channel,
                            ld->opt.token ? "&access_token=" : "",
                            ld->opt.token ? ld->opt.token : "", ld->opt.host, ld->opt.port);
        if (ld->opt.origin)
            evbuffer_add_printf(out, "Origin: %s\r\n", ld->opt.origin);
        evbuffer_add(out, "\r\n", 2);
        c->state = CS_HANDSHAKE;
        return;
    }
    const char *sep = strchr(ld->opt.path, '?') ? "&" : "?";
    const char *token = ld->ntokens
                            ? ld->tokens[atomic_fetch_add(&ld->run->next_token, 1) % ld->ntokens]
                            : ld->opt.token;
    evbuffer_add_printf(out, "GET %s%s%s%s HTTP/1.1\r\n", ld->opt.path, token ? sep : "",
                        token ? "access_token=" : "", token ? token : "");
    evbuffer_add_printf(out,
                        "Host: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s",
                        ld->opt.host, ld->opt.port, c->key,
                        ld->opt.raw ? "" : "Sec-WebSocket-Protocol: wsbridge.v1\r\n");
    if (ld->opt.origin)
        evbuffer_add_printf(out, "Origin: %s\r\n", ld->opt.origin);
    evbuffer_add(out, "\r\n", 2);
    c->state = CS_HANDSHAKE;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    struct load *ld = c->ld;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (c->role == ROLE_PUBLISHER && ld->opt.pub_path) {
            c->state = CS_HTTP;
        } else if (ld->opt.probe) {
            evbuffer_add_printf(bufferevent_get_output(c->bev),
                                "GET /wsb-load-probe HTTP/1.1\r\nHost: %s:%s\r\n"
                                "Connection: close\r\n\r\n",
                                ld->opt.host, ld->opt.port);
            c->state = CS_HTTP;
        } else {
            send_upgrade(c);
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->state == CS_HTTP && ld->opt.probe) {
            client_recycle(c); /* answered and closed by the server */
            return;
        }
        if (c->state == CS_CONNECT) {
            ld->connect_errors++;
        } else if (c->state == CS_HANDSHAKE) {
            count(&ld->refused, "closed");
        } else if (c->state == CS_OPEN && !c->closing) {
            count_code(&ld->close_codes, 1006); /* TCP closed with no close frame */
        }
        client_done(c);
        maybe_finish(ld);
    }
}

static void client_open(struct client *c)
{
    struct load *ld = c->ld;
    evutil_socket_t fd = socket(ld->addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        goto fail;
    if (c->role == ROLE_SLOW) {
        /* before connect, so the window the server sees stays small */
        int sz = SLOW_RCVBUF;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    if (ld->opt.spread > 0 && ld->addr.ss_family == AF_INET) {
        /* spread over 127.0.0.x: ~28k ephemeral ports per source address */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + ld->next_src++ % (unsigned)ld->opt.spread);
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            evutil_closesocket(fd);
            goto fail;
        }
    }
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(ld->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        goto fail;
    }
    bufferevent_set_max_single_read(c->bev, 256 * 1024);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CS_CONNECT;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ld->addr, (int)ld->addrlen) < 0)
        goto fail;
    return;
fail:
    ld->connect_errors++;
    client_done(c);
}

static void reopen_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    (void)fd;
    (void)what;
    if (c->ld->stopping)
        return;
    c->state = CS_IDLE;
    c->subscribed = false;
    c->closing = false;
    c->bad = false;
    client_open(c);
}

/* --churn / --probe: one cycle done; close now, reconnect on the next loop pass (never from
 * inside this connection's own callbacks). */
static void client_recycle(struct client *c)
{
    struct load *ld = c->ld;
    ld->cycles++;
    client_done(c);
    ld->closed--;
    struct timeval zero = {0, 0};
    if (event_base_once(ld->base, -1, EV_TIMEOUT, reopen_cb, c, &zero) < 0)
        ld->closed++;
}

/* ---- CPU seconds from /proc (the window of the measurement) ---- */

static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) < 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Shard 0: the measurement window begins (every shard's counters and CPU clock read now). */
static void window_start(struct load *ld)
{
    struct run *run = ld->run;
    ld->window_us = now_us();
    ld->window_received = 0;
    for (int k = 0; k < run->nshards; k++) {
        struct load *sh = &run->shards[k];
        ld->window_received += atomic_load_explicit(&sh->rx_total, memory_order_relaxed);
        sh->thread_cpu_start = clock_s(sh->cpu_clock); /* read by its thread only at the end */
    }
    ld->self_cpu_start = self_cpu_s();
    for (int i = 0; i < ld->ncpu; i++)
        ld->cpu_start[i] = proc_cpu_s(ld->cpu_pid[i]);
}

/* ---- publisher ---- */

static void publish_some(struct load *ld, struct client *p, double dt_s)
{
    ld->publish_credit += ld->opt.publish_rate * dt_s;
    if (ld->publish_credit > ld->opt.publish_rate) /* at most one second of backlog */
        ld->publish_credit = ld->opt.publish_rate;
    while (ld->publish_credit >= 1.0) {
        if (ld->opt.expect >= 0 && ld->published_sent >= (uint64_t)ld->opt.expect)
            return;
        /* stay under the bridge's max_inflight_publishes (SPEC §2, default 64) */
        if (ld->published_sent - ld->published_ok - ld->publish_failed >= ld->opt.window)
            return;
        ld->publish_credit -= 1.0;
        uint64_t seq = ++ld->published_sent;
        char *text = NULL;
        int n;
        if (ld->opt.raw || ld->opt.pub_path) {
            n = asprintf(&text, "{\"seq\":%llu,\"ts\":%.3f,\"pad\":\"%s\"}",
                         (unsigned long long)seq, wall_ms(), ld->pad);
            if (n < 0)
                return;
            if (ld->opt.pub_path)
                evbuffer_add_printf(bufferevent_get_output(p->bev),
                                    "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: "
                                    "application/json\r\nContent-Length: %d\r\n\r\n%s",
                                    ld->opt.pub_path, ld->opt.host, ld->opt.port, n, text);
            else
                send_frame(p, WSB_OP_TEXT, text, (size_t)n);
            free(text);
            continue;
        }
        const char *key = ld->opt.nkeys ? ld->opt.keys[seq % ld->opt.nkeys] : NULL;
        n = asprintf(&text,
                     "{\"op\":\"publish\",\"id\":%llu,\"channel\":\"%s\",%s%s%s\"data\":"
                     "{\"seq\":%llu,\"ts\":%.3f,\"pad\":\"%s\"}}",
                     (unsigned long long)seq, ld->opt.channel, key ? "\"key\":\"" : "",
                     key ? key : "", key ? "\"," : "", (unsigned long long)seq, wall_ms(), ld->pad);
        if (n < 0)
            return;
        send_frame(p, WSB_OP_TEXT, text, (size_t)n);
        free(text);
    }
}

/* An acknowledgement freed a slot of the window: publish at once with the credit left rather
 * than at the next tick (the tick alone caps the rate at window / TICK_US). */
static void publish_acked(struct load *ld)
{
    struct client *p = ld->pub;
    if (p && ld->publish_started && !p->closing &&
        (p->state == CS_OPEN || (ld->opt.pub_path && p->state == CS_HTTP)))
        publish_some(ld, p, 0);
}

static bool all_subscribers_ready(struct load *ld)
{
    for (int j = 0; j < ld->nsubs; j++) {
        const struct client *c = local_client(ld, j);
        if (c->state != CS_DONE && !c->subscribed)
            return false;
    }
    return true;
}

/* ---- the driver ---- */

/* The run ends: every shard's loop stops (the others at their next tick). */
static void finish(struct load *ld)
{
    int64_t none = 0;
    atomic_compare_exchange_strong(&ld->run->end_us, &none, now_us());
    atomic_store(&ld->run->stop, true);
    if (ld->stopping)
        return;
    ld->stopping = true;
    event_base_loopbreak(ld->base);
}

/* This shard's clients are all complete or gone; the last shard to get there ends the run. */
static void shard_done(struct load *ld)
{
    if (ld->done)
        return;
    ld->done = true;
    if (atomic_fetch_add(&ld->run->done_shards, 1) + 1 == ld->run->nshards)
        finish(ld);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct load *ld = arg;
    (void)fd;
    (void)what;
    struct run *run = ld->run;
    int64_t t = now_us();
    if ((ld->shard == 0 && got_sigint) || atomic_load(&run->stop) ||
        (ld->opt.duration > 0 && (double)(t - run->start_us) / 1e6 >= ld->opt.duration)) {
        finish(ld);
        return;
    }
    double dt = TICK_US / 1e6;
    if (ld->next_to_open < ld->nsubs) {
        ld->connect_credit += ld->opt.connect_rate / run->nshards * dt;
        while (ld->connect_credit >= 1.0 && ld->next_to_open < ld->nsubs) {
            ld->connect_credit -= 1.0;
            client_open(local_client(ld, ld->next_to_open++));
        }
    }
    if (!ld->ready && ld->next_to_open >= ld->nsubs && all_subscribers_ready(ld)) {
        ld->ready = true;
        atomic_fetch_add(&run->ready_shards, 1);
    }
    bool all_ready = atomic_load(&run->ready_shards) == run->nshards;
    if (ld->pub) {
        struct client *p = ld->pub;
        if (!ld->publish_started && all_ready) {
            ld->publish_started = true;
            window_start(ld);
        }
        if (ld->publish_started && p->state == CS_IDLE) {
            ld->next_to_open++;
            client_open(p);
        } else if ((p->state == CS_OPEN || (ld->opt.pub_path && p->state == CS_HTTP)) &&
                   !p->closing) {
            publish_some(ld, p, dt);
        }
    }
    if (ld->opt.hold && ld->shard == 0 && !ld->ready_said && all_ready) {
        ld->ready_said = true;
        fprintf(stderr, "ready %llu\n", (unsigned long long)atomic_load(&run->subscribed));
        fflush(stderr);
    }
    /* no further progress possible: every client of this shard is gone */
    if (ld->next_to_open == ld->nlocal && ld->closed == (uint64_t)ld->nlocal)
        shard_done(ld);
}

static void on_sigint(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    got_sigint = 1;
}

static double lat_percentile(const struct load *ld, double q)
{
    uint64_t want = (uint64_t)ceil(q * (double)ld->lat_n);
    if (want == 0)
        want = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i < LAT_BUCKETS; i++) {
        acc += ld->lat[i];
        if (acc >= want)
            return (double)(i + 1) / 10.0; /* upper edge of the bucket */
    }
    return (double)LAT_BUCKETS / 10.0;
}

static json_t *counters_json(const struct counters *cs)
{
    json_t *o = json_object();
    for (size_t i = 0; i < cs->len; i++)
        json_object_set_new(o, cs->c[i].name, json_integer((json_int_t)cs->c[i].n));
    return o;
}

/* Prints the summary and returns the exit status. */
/* --ref-times: per delivery, this client's receive time minus the reference reader's receive
 * time of the same record (by data.seq), e.g. a plain Kafka consumer's: what the bridge adds.
 * Histogram of 0.1 ms buckets from -100 ms. NULL when nothing matched. */
static json_t *ref_delays(struct load *ld, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    double *ref = NULL;
    size_t cap = 0;
    long long seq;
    double ms;
    while (fscanf(f, "%lld %lf", &seq, &ms) == 2) {
        if (seq < 0 || seq > 100000000)
            continue;
        if ((size_t)seq >= cap) {
            size_t ncap = cap ? cap : 4096;
            while (ncap <= (size_t)seq)
                ncap *= 2;
            double *r = realloc(ref, ncap * sizeof(*r));
            if (!r)
                break;
            for (size_t i = cap; i < ncap; i++)
                r[i] = -1;
            ref = r;
            cap = ncap;
        }
        ref[seq] = ms;
    }
    fclose(f);
    uint64_t *h = calloc(LAT_BUCKETS, sizeof(*h)), n = 0, earlier = 0;
    for (size_t i = 0; h && i < ld->nrecv; i++) {
        int64_t s = ld->recv[i].seq;
        if (s < 0 || (size_t)s >= cap || ref[s] < 0)
            continue;
        double d = ld->recv[i].ms - ref[s];
        earlier += d < 0;
        double b = (d + 100.0) * 10.0;
        h[b < 0 ? 0 : b >= LAT_BUCKETS ? LAT_BUCKETS - 1 : (size_t)b]++;
        n++;
    }
    json_t *out = NULL;
    if (n) {
        out = json_object();
        const double qs[] = {0.5, 0.99, 0.999};
        const char *names[] = {"p50", "p99", "p99.9"};
        for (int q = 0; q < 3; q++) {
            uint64_t want = (uint64_t)ceil(qs[q] * (double)n), acc = 0;
            size_t b = 0;
            for (; b < LAT_BUCKETS; b++)
                if ((acc += h[b]) >= (want ? want : 1))
                    break;
            json_object_set_new(out, names[q], json_real((double)(b + 1) / 10.0 - 100.0));
        }
        json_object_set_new(out, "samples", json_integer((json_int_t)n));
        json_object_set_new(out, "earlier", json_integer((json_int_t)earlier));
    }
    free(h);
    free(ref);
    return out;
}

/* After the threads are joined: every shard's results added into shard 0's. */
static void merge_shards(struct run *run)
{
    struct load *ld = &run->shards[0];
    for (int k = 1; k < run->nshards; k++) {
        struct load *sh = &run->shards[k];
        ld->order_violations += sh->order_violations;
        ld->handshake_ok += sh->handshake_ok;
        ld->connect_errors += sh->connect_errors;
        ld->protocol_errors += sh->protocol_errors;
        ld->subscribed += sh->subscribed;
        ld->cycles += sh->cycles;
        ld->frames += sh->frames;
        ld->batches += sh->batches;
        ld->rx_total += sh->rx_total;
        const struct counters *from[] = {&sh->close_codes, &sh->refused, &sh->error_codes};
        struct counters *into[] = {&ld->close_codes, &ld->refused, &ld->error_codes};
        for (int t = 0; t < 3; t++)
            for (size_t i = 0; i < from[t]->len; i++)
                count_n(into[t], from[t]->c[i].name, from[t]->c[i].n);
        for (size_t b = 0; b < LAT_BUCKETS; b++)
            ld->lat[b] += sh->lat[b];
        ld->lat_n += sh->lat_n;
        if (sh->first_message_ms > 0 &&
            (ld->first_message_ms == 0 || sh->first_message_ms < ld->first_message_ms))
            ld->first_message_ms = sh->first_message_ms;
        if (sh->nrecv) {
            struct recv_at *r = realloc(ld->recv, (ld->nrecv + sh->nrecv) * sizeof(*r));
            if (r) {
                memcpy(r + ld->nrecv, sh->recv, sh->nrecv * sizeof(*r));
                ld->recv = r;
                ld->nrecv += sh->nrecv;
                ld->caprecv = ld->nrecv;
            }
        }
    }
    ld->start_us = run->start_us;
    ld->end_us = atomic_load(&run->end_us);
}

static int report(struct load *ld)
{
    struct run *run = ld->run;
    merge_shards(run);
    if (!ld->end_us)
        ld->end_us = now_us();
    double elapsed = (double)(ld->end_us - ld->start_us) / 1e6;
    uint64_t total = 0, gaps = 0, skipped = 0, min = UINT64_MAX, max = 0;
    int fast = 0, slow = 0, complete = 0;
    for (int i = 0; i < ld->opt.clients; i++) {
        const struct client *c = &ld->clients[i];
        if (c->role == ROLE_SLOW) {
            slow++;
            continue;
        }
        fast++;
        total += c->received;
        gaps += c->gaps_dropped;
        skipped += c->offsets_skipped;
        min = c->received < min ? c->received : min;
        max = c->received > max ? c->received : max;
        complete += client_complete(c);
    }
    if (fast == 0)
        min = 0;
    json_t *out = json_object();
    json_object_set_new(out, "clients", json_integer(ld->opt.clients));
    json_object_set_new(out, "threads", json_integer(run->nshards));
    json_object_set_new(out, "fast", json_integer(fast));
    json_object_set_new(out, "slow", json_integer(slow));
    json_object_set_new(out, "handshakes_ok", json_integer((json_int_t)ld->handshake_ok));
    json_object_set_new(out, "subscribed", json_integer((json_int_t)ld->subscribed));
    json_object_set_new(out, "received_total", json_integer((json_int_t)total));
    json_object_set_new(out, "per_client_min", json_integer((json_int_t)min));
    json_object_set_new(out, "per_client_max", json_integer((json_int_t)max));
    json_object_set_new(out, "complete_clients", json_integer(complete));
    json_object_set_new(out, "gaps_total", json_integer((json_int_t)gaps));
    json_object_set_new(out, "offsets_skipped", json_integer((json_int_t)skipped));
    json_object_set_new(out, "order_violations", json_integer((json_int_t)ld->order_violations));
    json_object_set_new(out, "close_codes", counters_json(&ld->close_codes));
    json_object_set_new(out, "refused", counters_json(&ld->refused));
    json_object_set_new(out, "errors", counters_json(&ld->error_codes));
    json_object_set_new(out, "connect_errors", json_integer((json_int_t)ld->connect_errors));
    json_object_set_new(out, "protocol_errors", json_integer((json_int_t)ld->protocol_errors));
    if (ld->opt.publish_rate > 0) {
        json_object_set_new(out, "published_sent", json_integer((json_int_t)ld->published_sent));
        json_object_set_new(out, "published_ok", json_integer((json_int_t)ld->published_ok));
        json_object_set_new(out, "publish_failed", json_integer((json_int_t)ld->publish_failed));
    }
    if (ld->first_message_ms > 0)
        json_object_set_new(out, "first_message_ms",
                            json_integer((json_int_t)ld->first_message_ms));
    json_object_set_new(out, "elapsed_s", json_real(round(elapsed * 1000) / 1000));
    if (ld->batches) /* frames per read callback: how much each read() batch carries */
        json_object_set_new(out, "frames_per_read",
                            json_real(round((double)ld->frames / (double)ld->batches * 10) / 10));
    double win = ld->window_us ? (double)(ld->end_us - ld->window_us) / 1e6 : 0;
    if (win > 0) {
        json_object_set_new(out, "window_s", json_real(round(win * 1000) / 1000));
        json_object_set_new(out, "delivered_per_s",
                            json_real(round((double)(ld->rx_total - ld->window_received) / win)));
        json_t *cpu = json_object();
        json_object_set_new(cpu, "generator",
                            json_real(round((self_cpu_s() - ld->self_cpu_start) * 1000) / 1000));
        for (int i = 0; i < ld->ncpu; i++) {
            double v = proc_cpu_s(ld->cpu_pid[i]);
            if (v >= 0 && ld->cpu_start[i] >= 0)
                json_object_set_new(cpu, ld->cpu_name[i],
                                    json_real(round((v - ld->cpu_start[i]) * 1000) / 1000));
        }
        json_object_set_new(out, "cpu_s", cpu);
        /* per event-loop thread, over the same window: "under 80 % of a core" is judged per
         * thread (each is bound to one core at a time) and in total (cpu_s.generator) */
        json_t *threads = json_array();
        for (int k = 0; k < run->nshards; k++) {
            const struct load *sh = &run->shards[k];
            json_array_append_new(
                threads,
                json_real(round((sh->thread_cpu_end - sh->thread_cpu_start) * 1000) / 1000));
        }
        json_object_set_new(out, "generator_threads_cpu_s", threads);
    }
    if (ld->opt.churn || ld->opt.probe) {
        json_object_set_new(out, "cycles", json_integer((json_int_t)ld->cycles));
        json_object_set_new(out, "cycles_per_s",
                            json_real(win > 0 ? round((double)ld->cycles / win) : 0));
    }
    size_t used_tokens = atomic_load(&run->next_token);
    if (ld->ntokens) /* upgrades that sent a token of --token-file a second time or more */
        json_object_set_new(
            out, "tokens_reused",
            json_integer((json_int_t)(used_tokens > ld->ntokens ? used_tokens - ld->ntokens : 0)));
    json_object_set_new(out, "msgs_per_s",
                        json_real(elapsed > 0 ? round((double)total / elapsed) : 0));
    if (ld->lat_n) {
        json_t *lat = json_object();
        json_object_set_new(lat, "p50", json_real(lat_percentile(ld, 0.50)));
        json_object_set_new(lat, "p99", json_real(lat_percentile(ld, 0.99)));
        json_object_set_new(lat, "p99.9", json_real(lat_percentile(ld, 0.999)));
        json_object_set_new(lat, "samples", json_integer((json_int_t)ld->lat_n));
        json_object_set_new(out, "latency_ms", lat);
    }
    json_t *refd = ld->opt.ref_times ? ref_delays(ld, ld->opt.ref_times) : NULL;
    if (refd)
        json_object_set_new(out, "after_ref_ms", refd);
    refd = ld->opt.ref_times2 ? ref_delays(ld, ld->opt.ref_times2) : NULL;
    if (refd)
        json_object_set_new(out, "after_ref2_ms", refd);
    char *text = json_dumps(out, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(out);
    if (text) {
        printf("%s\n", text);
        free(text);
    }
    fflush(stdout);
    bool ok = ld->order_violations == 0 && (ld->opt.expect < 0 || complete == fast);
    return ok ? 0 : 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: wsb-load --url ws://HOST:PORT/PATH [options]\n"
               "  --clients N        WebSocket connections (default 1)\n"
               "  --connect-rate R   connections opened per second (default 500)\n"
               "  --channel C        subscribe to C after the welcome\n"
               "  --from JSON        the subscribe's \"from\" (e.g. '\"earliest\"')\n"
               "  --token T          JWT sent as ?access_token=T\n"
               "  --origin O         Origin header\n"
               "  --expect N         messages each fast client waits for; exit 1 if any misses\n"
               "  --duration S       hard stop after S seconds\n"
               "  --slow N           N of the clients subscribe, then never read (SO_RCVBUF 4096)\n"
               "  --publish RATE     one extra connection publishing to C at RATE/s\n"
               "                     (--expect messages when --expect is given)\n"
               "  --payload BYTES    approximate size of each published message (default 100)\n"
               "  --raw              a peer server (Node ws, nchan): no wsbridge.v1 protocol;\n"
               "                     every text frame is a message, the publisher's are acks\n"
               "  --publish-path P   publish by HTTP POST to P on the same host (nchan)\n"
               "  --spread N         source addresses 127.0.0.1 .. 127.0.0.N\n"
               "  --hold             print \"ready N\" on stderr once every client is subscribed\n"
               "  --churn            reconnect each client right after its subscribe\n"
               "                     (or its welcome / open); reports cycles_per_s\n"
               "  --probe            churn with a plain HTTP GET (TCP connect baseline)\n"
               "  --cpu NAME=PID,... report these processes' CPU seconds over the window\n"
               "  --window N         unconfirmed publishes in flight (default 32)\n"
               "  --sse PATH         subscribers use the event stream GET PATH?channel=C (the\n"
               "                     publisher stays a WebSocket)\n"
               "  --token-file F     tokens, one a line, each upgrade takes the next in turn\n"
               "  --keys K1,K2,...   the publisher's message i carries \"key\": K(i mod n)\n"
               "  --ref-times F      at the end, per delivery: receive time minus the time in F\n"
               "                     (\"SEQ MS\" lines) of the same data.seq (after_ref_ms);\n"
               "                     given twice, the second file's as after_ref2_ms\n"
               "  --threads N        N event-loop threads, the connections dealt over them in\n"
               "                     turn (default 1); the publisher runs in the first\n"
               "Prints one JSON summary on stdout. Exit 0 when every fast client received\n"
               "--expect messages in order, 1 otherwise, 2 on a usage error.\n");
}

static int parse_url(struct options *o)
{
    const char *u = o->url;
    if (strncmp(u, "ws://", 5) != 0)
        return -1;
    u += 5;
    const char *slash = strchr(u, '/');
    size_t hostport_len = slash ? (size_t)(slash - u) : strlen(u);
    const char *colon = memchr(u, ':', hostport_len);
    size_t host_len = colon ? (size_t)(colon - u) : hostport_len;
    if (host_len == 0 || host_len >= sizeof o->host)
        return -1;
    memcpy(o->host, u, host_len);
    o->host[host_len] = '\0';
    if (colon) {
        size_t plen = hostport_len - host_len - 1;
        if (plen == 0 || plen >= sizeof o->port)
            return -1;
        memcpy(o->port, colon + 1, plen);
        o->port[plen] = '\0';
    } else {
        snprintf(o->port, sizeof o->port, "80");
    }
    snprintf(o->path, sizeof o->path, "%s", slash ? slash : "/");
    return 0;
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (errno || e == s || *e || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"url", required_argument, NULL, 'u'},
        {"clients", required_argument, NULL, 'n'},
        {"connect-rate", required_argument, NULL, 'r'},
        {"channel", required_argument, NULL, 'c'},
        {"from", required_argument, NULL, 'f'},
        {"token", required_argument, NULL, 't'},
        {"expect", required_argument, NULL, 'e'},
        {"duration", required_argument, NULL, 'd'},
        {"slow", required_argument, NULL, 's'},
        {"publish", required_argument, NULL, 'p'},
        {"payload", required_argument, NULL, 'b'},
        {"origin", required_argument, NULL, 'o'},
        {"sse", required_argument, NULL, 'E'},
        {"raw", no_argument, NULL, 'R'},
        {"publish-path", required_argument, NULL, 'P'},
        {"spread", required_argument, NULL, 'S'},
        {"hold", no_argument, NULL, 'H'},
        {"churn", no_argument, NULL, 'C'},
        {"probe", no_argument, NULL, 'X'},
        {"cpu", required_argument, NULL, 'U'},
        {"window", required_argument, NULL, 'W'},
        {"token-file", required_argument, NULL, 'T'},
        {"keys", required_argument, NULL, 'K'},
        {"ref-times", required_argument, NULL, 'F'},
        {"threads", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.clients = 1,
                          .connect_rate = 500,
                          .expect = -1,
                          .payload = 100,
                          .window = PUBLISH_WINDOW,
                          .threads = 1};
    int ch;
    double v;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u': o->url = optarg; break;
        case 'n':
            if (!parse_num(optarg, 1, MAX_CLIENTS, &v))
                return -1;
            o->clients = (int)v;
            break;
        case 'r':
            if (!parse_num(optarg, 0.001, 1e6, &o->connect_rate))
                return -1;
            break;
        case 'c': o->channel = optarg; break;
        case 'f': o->from = optarg; break;
        case 't': o->token = optarg; break;
        case 'o': o->origin = optarg; break;
        case 'E': o->sse_path = optarg; break;
        case 'e':
            if (!parse_num(optarg, 0, 1e15, &v))
                return -1;
            o->expect = (long long)v;
            break;
        case 'd':
            if (!parse_num(optarg, 0.001, 1e6, &o->duration))
                return -1;
            break;
        case 's':
            if (!parse_num(optarg, 0, MAX_CLIENTS, &v))
                return -1;
            o->slow = (int)v;
            break;
        case 'p':
            if (!parse_num(optarg, 0.001, 1e7, &o->publish_rate))
                return -1;
            break;
        case 'b':
            if (!parse_num(optarg, 0, MAX_MESSAGE / 2, &v))
                return -1;
            o->payload = (size_t)v;
            break;
        case 'R': o->raw = true; break;
        case 'P': o->pub_path = optarg; break;
        case 'S':
            if (!parse_num(optarg, 0, 254, &v))
                return -1;
            o->spread = (int)v;
            break;
        case 'H': o->hold = true; break;
        case 'C': o->churn = true; break;
        case 'X': o->probe = o->churn = true; break;
        case 'U': o->cpu_spec = optarg; break;
        case 'T': o->token_file = optarg; break;
        case 'F':
            if (o->ref_times)
                o->ref_times2 = optarg;
            else
                o->ref_times = optarg;
            break;
        case 'j':
            if (!parse_num(optarg, 1, MAX_THREADS, &v))
                return -1;
            o->threads = (int)v;
            break;
        case 'K': {
            /* plain tokens (letters, digits, '-', '_', '.'): written into JSON unescaped */
            char *save = NULL, *dup = strdup(optarg);
            for (char *k = dup ? strtok_r(dup, ",", &save) : NULL; k;
                 k = strtok_r(NULL, ",", &save)) {
                if (strspn(k,
                           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
                    strlen(k))
                    return -1;
                char **ks = realloc(o->keys, (o->nkeys + 1) * sizeof(*ks));
                if (!ks)
                    return -1;
                o->keys = ks;
                o->keys[o->nkeys++] = k;
            }
            if (!o->nkeys)
                return -1;
            break;
        }
        case 'W':
            if (!parse_num(optarg, 1, 1e6, &v))
                return -1;
            o->window = (unsigned)v;
            break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (optind != argc || !o->url || parse_url(o) < 0 || o->slow > o->clients)
        return -1;
    if (o->publish_rate > 0 && !o->channel)
        return -1;
    if (o->sse_path && (!o->channel || o->sse_path[0] != '/' || o->raw || o->churn))
        return -1;
    if (o->from) {
        json_t *j = json_loads(o->from, JSON_DECODE_ANY, NULL);
        if (!j)
            return -1;
        json_decref(j);
    }
    if (o->expect < 0 && o->duration == 0 && (o->channel || o->churn))
        o->duration = 10; /* something must end a run that only listens */
    return 0;
}

static int resolve(struct load *ld)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ld->opt.host, ld->opt.port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "wsb-load: cannot resolve %s:%s: %s\n", ld->opt.host, ld->opt.port,
                gai_strerror(rc));
        return -1;
    }
    memcpy(&ld->addr, res->ai_addr, res->ai_addrlen);
    ld->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void *shard_main(void *arg)
{
    struct load *ld = arg;
    event_base_dispatch(ld->base);
    ld->thread_cpu_end = clock_s(CLOCK_THREAD_CPUTIME_ID);
    return NULL;
}

/* One shard's event loop, its tick and (shard 0) its SIGINT event. Returns -1 on failure. */
static int shard_init(struct run *run, struct load *ld, int k, const struct load *proto)
{
    *ld = *proto;
    ld->run = run;
    ld->shard = k;
    ld->nsubs = (ld->opt.clients - k + run->nshards - 1) / run->nshards;
    ld->pub = k == 0 && ld->opt.publish_rate > 0 ? &ld->clients[ld->opt.clients] : NULL;
    ld->nlocal = ld->nsubs + (ld->pub != NULL);
    ld->rng = ((uint64_t)now_us() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL) +
              (uint64_t)k * 0x632BE59BD9B4E019ULL;
    ld->next_src = (unsigned)k;
    ld->lat = calloc(LAT_BUCKETS, sizeof *ld->lat);
    ld->base = event_base_new();
    if (!ld->lat || !ld->base)
        return -1;
    struct timeval tv = {0, TICK_US};
    ld->tick = event_new(ld->base, -1, EV_PERSIST, on_tick, ld);
    if (!ld->tick || event_add(ld->tick, &tv) < 0)
        return -1;
    if (k == 0) {
        ld->sigint = evsignal_new(ld->base, SIGINT, on_sigint, ld);
        if (!ld->sigint || event_add(ld->sigint, NULL) < 0)
            return -1;
    }
    for (int j = 0; j < ld->nlocal; j++)
        local_client(ld, j)->ld = ld;
    return 0;
}

int main(int argc, char **argv)
{
    struct load ld = {0};
    struct run run = {0};
    int status = 1, started = 1;
    if (parse_options(argc, argv, &ld.opt) < 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (resolve(&ld) < 0)
        return 2;
    run.nshards = ld.opt.threads < ld.opt.clients ? ld.opt.threads : ld.opt.clients;
    run.shards = calloc((size_t)run.nshards, sizeof *run.shards);
    ld.nclients = ld.opt.clients + (ld.opt.publish_rate > 0);
    ld.clients = calloc((size_t)ld.nclients, sizeof *ld.clients);
    size_t padlen = ld.opt.payload > 64 ? ld.opt.payload - 64 : 0;
    ld.pad = malloc(padlen + 1);
    if (!run.shards || !ld.clients || !ld.pad) {
        fprintf(stderr, "wsb-load: out of memory\n");
        goto cleanup;
    }
    memset(ld.pad, 'x', padlen);
    ld.pad[padlen] = '\0';
    for (int i = 0; i < ld.nclients; i++) {
        struct client *c = &ld.clients[i];
        c->idx = i;
        c->role = i >= ld.opt.clients ? ROLE_PUBLISHER : i < ld.opt.slow ? ROLE_SLOW : ROLE_FAST;
        c->sse = ld.opt.sse_path && c->role != ROLE_PUBLISHER;
        c->last_seq = -1;
        for (int p = 0; p < MAX_PARTITIONS; p++)
            c->last_offset[p] = -1;
    }
    for (const char *p = ld.opt.cpu_spec; p && *p && ld.ncpu < MAX_CPU_PIDS;) {
        const char *eq = strchr(p, '=');
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof ld.cpu_name[0])
            break;
        memcpy(ld.cpu_name[ld.ncpu], p, (size_t)(eq - p));
        ld.cpu_name[ld.ncpu][eq - p] = '\0';
        ld.cpu_pid[ld.ncpu++] = atoi(eq + 1);
        p = strchr(eq, ',');
        p = p ? p + 1 : NULL;
    }
    if (ld.opt.token_file) {
        FILE *f = fopen(ld.opt.token_file, "r");
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (f && (n = getline(&line, &cap, f)) > 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
            char **t = n ? realloc(ld.tokens, (ld.ntokens + 1) * sizeof(*t)) : NULL;
            if (t) {
                ld.tokens = t;
                ld.tokens[ld.ntokens++] = strdup(line);
            }
        }
        free(line);
        if (f)
            fclose(f);
        if (!ld.ntokens) {
            fprintf(stderr, "wsb-load: no token in %s\n", ld.opt.token_file);
            goto cleanup;
        }
    }
    for (int k = 0; k < run.nshards; k++) {
        if (shard_init(&run, &run.shards[k], k, &ld) < 0) {
            fprintf(stderr, "wsb-load: cannot set up the event loops\n");
            goto cleanup;
        }
    }
    run.shards[0].thread = pthread_self();
    pthread_getcpuclockid(pthread_self(), &run.shards[0].cpu_clock);
    run.start_us = now_us();
    for (; started < run.nshards; started++) {
        struct load *sh = &run.shards[started];
        if (pthread_create(&sh->thread, NULL, shard_main, sh) != 0) {
            fprintf(stderr, "wsb-load: cannot start thread %d\n", started);
            finish(&run.shards[0]);
            break;
        }
        pthread_getcpuclockid(sh->thread, &sh->cpu_clock);
    }
    if (ld.opt.publish_rate <= 0)
        window_start(&run.shards[0]);
    shard_main(&run.shards[0]);
    finish(&run.shards[0]); /* the others stop at their next tick */
    for (int k = 1; k < started; k++)
        pthread_join(run.shards[k].thread, NULL);
    status = report(&run.shards[0]);
cleanup:
    for (int i = 0; ld.clients && i < ld.nclients; i++)
        if (ld.clients[i].ld) /* dealt to a shard */
            client_done(&ld.clients[i]);
    for (int k = 0; run.shards && k < run.nshards; k++) {
        struct load *sh = &run.shards[k];
        if (sh->tick)
            event_free(sh->tick);
        if (sh->sigint)
            event_free(sh->sigint);
        if (sh->base)
            event_base_free(sh->base);
        free(sh->lat);
        free(sh->recv);
        free(sh->rbuf);
    }
    free(run.shards);
    free(ld.clients);
    free(ld.pad);
    for (size_t i = 0; i < ld.ntokens; i++)
        free(ld.tokens[i]);
    free(ld.tokens);
    return status;
}
