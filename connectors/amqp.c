/* The "amqp" connector: rabbitmq-c on a thread of its own. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "connectors/amqp.h"
#include "connectors/cbase.h"
#include "util/log.h"

#define PUB_CHANNEL 1
#define FRAME_MAX 131072
#define DEFAULT_HEARTBEAT_S 10
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_RECONNECT_MAX_MS 5000
#define RECONNECT_MIN_MS 100
#define WHY_MAX 256 /* a connect failure reason: host:port, what the broker or TLS said */
#define PUMP_BATCH 512
#define MAX_HEADERS 64
#define EPOCH_SHIFT 40 /* ack token = connection epoch << 40 | delivery tag */
#define NCHANNELS 65536
#define MAX_LINKS 32 /* consumer connections: 32 x (channel_max - 1) sources */

/* A source: thread-owned. `ch` is its channel on the current connection, 0 while closed. */
struct source {
    struct source *next;
    uint64_t id;
    char *exchange, *binding_key, *queue;
    bool ack;
    uint32_t prefetch;
    struct link *link; /* the consumer connection of its channel; NULL while closed */
    amqp_channel_t ch;
    bool started; /* source_started was sent */
};

/* A consumer connection. Channels 2..channel_max carry one source each (1 stays unused). */
struct link {
    amqp_connection_state_t conn;
    int64_t last_rx_ms;
    int channel_max;
    uint64_t chan_used[NCHANNELS / 64];
};

/* A publish waiting for its confirm (channel 1), in publish order. */
struct pending {
    struct pending *next;
    uint64_t seq, cookie;
    char *exchange, *routing_key;
    bool returned;
};

struct amqp {
    struct wsb_cbase base; /* first: the shared vtable entries take a struct amqp as it */
    char name[64];
    struct wsb_sink sink;
    /* Config. */
    char *url_copy; /* amqp_parse_url parses in place: host/user/vhost point into it */
    struct amqp_connection_info ci;
    int heartbeat_s;
    uint32_t connect_timeout_ms, reconnect_max_ms;
    char *ca_file, *cert_file, *key_file; /* tls.*: amqps only */
    bool verify;                          /* the broker's certificate chain and name */
    int channel_max;                      /* asked for at login; 0: the broker's (RabbitMQ: 2047) */
    /* Thread-owned from here on. */
    /* Connections, up and down together: publishes on `pconn`, consumers on `links` (a new one
     * opens when every channel of the others is taken), so a broker that blocks a publishing
     * connection (resource alarm) never holds up deliveries and acks. pconn is NULL and
     * nlinks 0 while down. */
    amqp_connection_state_t pconn;
    struct link *links[MAX_LINKS];
    size_t nlinks;
    uint64_t epoch; /* connection generation */
    int64_t next_attempt_ms, backoff_ms, plast_rx_ms;
    struct source *sources;
    struct pending *phead, *ptail;
    uint64_t pub_seq;       /* last publish sequence number on channel 1 */
    bool blocked;           /* connection.blocked: the broker is not taking publishes */
    char tls_err[96];       /* the first certificate check that failed in this TLS handshake */
    char last_why[WHY_MAX]; /* the last connect failure logged (a retry logs only a new one) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static amqp_bytes_t bytes_of(const char *s)
{
    return s ? amqp_cstring_bytes(s) : amqp_empty_bytes;
}

/* ---- State and errors ------------------------------------------------------------------- */

static void set_state(struct amqp *a, bool up, const char *reason)
{
    bool was = wsb_cbase_set_up(&a->base, up, reason);
    if (was != up) {
        wsb_log(up ? WSB_LOG_INFO : WSB_LOG_WARN, up ? "amqp up" : "amqp down",
                WSB_LSTR("connector", a->name), WSB_LSTR("reason", up ? NULL : reason));
        a->sink.state(a->sink.ctx, a->name, up, up ? NULL : reason);
    }
}

/* Describes a failed rabbitmq-c call. Returns true when the connection is still usable
 * (a channel-level refusal), false when it is gone. `code` gets the AMQP reply code. */
static bool describe(const amqp_rpc_reply_t *r, char *buf, size_t len, int *code)
{
    *code = 0;
    switch (r->reply_type) {
    case AMQP_RESPONSE_NORMAL: snprintf(buf, len, "ok"); return true;
    case AMQP_RESPONSE_NONE: snprintf(buf, len, "no reply"); return false;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s", amqp_error_string2(r->library_error));
        return false;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r->reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r->reply.decoded;
            *code = m->reply_code;
            snprintf(buf, len, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            return true;
        }
        if (r->reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r->reply.decoded;
            *code = m->reply_code;
            snprintf(buf, len, "%.*s", (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            return false;
        }
        snprintf(buf, len, "unexpected method 0x%08x", r->reply.id);
        return false;
    }
    return false;
}

/* ---- Channels ----------------------------------------------------------------------------- */

static amqp_connection_state_t open_connection(struct amqp *a, const char *role, char *why,
                                               size_t whylen);

/* Opens consumer connection number a->nlinks. False with a reason on failure. */
static bool link_open(struct amqp *a, char *why, size_t whylen)
{
    if (a->nlinks == MAX_LINKS) {
        snprintf(why, whylen, "no free AMQP channel (%d connections in use)", MAX_LINKS);
        return false;
    }
    struct link *l = calloc(1, sizeof(*l));
    if (!l) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    char role[32];
    snprintf(role, sizeof(role), "consume %zu", a->nlinks + 1);
    if (!(l->conn = open_connection(a, role, why, whylen))) {
        free(l);
        return false;
    }
    l->channel_max = amqp_get_channel_max(l->conn);
    if (l->channel_max <= 0 || l->channel_max >= NCHANNELS)
        l->channel_max = NCHANNELS - 1;
    l->last_rx_ms = mono_ms();
    a->links[a->nlinks++] = l;
    return true;
}

/* A free channel on some consumer connection, opening another connection when every channel
 * is taken. 0 with a reason when there is none. */
static amqp_channel_t chan_alloc(struct amqp *a, struct link **out, char *why, size_t whylen)
{
    for (size_t i = 0;; i++) {
        if (i == a->nlinks && !link_open(a, why, whylen))
            return 0;
        struct link *l = a->links[i];
        for (int ch = PUB_CHANNEL + 1; ch <= l->channel_max; ch++) {
            if (!(l->chan_used[ch / 64] & (1ull << (ch % 64)))) {
                l->chan_used[ch / 64] |= 1ull << (ch % 64);
                *out = l;
                return (amqp_channel_t)ch;
            }
        }
    }
}

static void chan_release(struct link *l, amqp_channel_t ch)
{
    if (l && ch)
        l->chan_used[ch / 64] &= ~(1ull << (ch % 64));
}

static struct link *link_of(struct amqp *a, amqp_connection_state_t conn)
{
    for (size_t i = 0; i < a->nlinks; i++)
        if (a->links[i]->conn == conn)
            return a->links[i];
    return NULL;
}

static struct source *source_by_channel(struct amqp *a, const struct link *l, amqp_channel_t ch)
{
    for (struct source *s = a->sources; s; s = s->next)
        if (s->link == l && s->ch == ch)
            return s;
    return NULL;
}

static struct source *source_by_id(struct amqp *a, uint64_t id, struct source ***prev)
{
    for (struct source **pp = &a->sources; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            if (prev)
                *prev = pp;
            return *pp;
        }
    return NULL;
}

static void source_free(struct source *s)
{
    free(s->exchange);
    free(s->binding_key);
    free(s->queue);
    free(s);
}

/* ---- Publishes waiting for confirms ---------------------------------------------------- */

static void pending_free(struct pending *p)
{
    free(p->exchange);
    free(p->routing_key);
    free(p);
}

/* Finishes every pending publish with seq <= upto (or only == upto). */
static void confirm(struct amqp *a, uint64_t upto, bool multiple, bool ok)
{
    struct pending **pp = &a->phead;
    while (*pp) {
        struct pending *p = *pp;
        if (p->seq > upto)
            break;
        if (!multiple && p->seq != upto) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        if (a->ptail == p) {
            a->ptail = NULL;
            for (struct pending *q = a->phead; q; q = q->next)
                a->ptail = q;
        }
        if (p->returned)
            a->sink.publish_done(a->sink.ctx, p->cookie, false,
                                 "unroutable: no queue is bound for this routing key");
        else
            a->sink.publish_done(a->sink.ctx, p->cookie, ok,
                                 ok ? NULL : "the broker refused the message (nack)");
        pending_free(p);
    }
}

static void fail_pending(struct amqp *a, const char *why)
{
    while (a->phead) {
        struct pending *p = a->phead;
        a->phead = p->next;
        a->sink.publish_done(a->sink.ctx, p->cookie, false, why);
        pending_free(p);
    }
    a->ptail = NULL;
}

/* ---- Connection ---------------------------------------------------------------------------- */

static void lost(struct amqp *a, const char *why);

/* Opens channel 1 in confirm mode. False when the connection failed. */
static bool open_pub_channel(struct amqp *a, char *err, size_t errlen)
{
    int code;
    if (!amqp_channel_open(a->pconn, PUB_CHANNEL)) {
        amqp_rpc_reply_t r = amqp_get_rpc_reply(a->pconn);
        describe(&r, err, errlen, &code);
        return false;
    }
    amqp_confirm_select(a->pconn, PUB_CHANNEL);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(a->pconn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        describe(&r, err, errlen, &code);
        return false;
    }
    a->pub_seq = 0;
    return true;
}

/* Answers a broker's channel.close so the channel number can be used again. */
static void close_ok(amqp_connection_state_t conn, amqp_channel_t ch)
{
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
}

static const char *code_for(int reply_code)
{
    return reply_code == AMQP_ACCESS_REFUSED ? "forbidden" : "unavailable";
}

/* Opens the source's channel and starts consuming. Returns 0, 1 when the broker refused the
 * source (it has failed and is removed), -1 when the connection failed. */
static int open_source(struct amqp *a, struct source *s)
{
    char why[WHY_MAX];
    int code = 0;
    amqp_rpc_reply_t r;
    struct link *l = NULL;
    amqp_channel_t ch = chan_alloc(a, &l, why, sizeof(why));
    if (!ch)
        goto refused_noclose;
    amqp_connection_state_t conn = l->conn;
    if (!amqp_channel_open(conn, ch)) {
        r = amqp_get_rpc_reply(conn);
        goto fail;
    }
    s->link = l;
    s->ch = ch;
    amqp_bytes_t queue = bytes_of(s->queue);
    bool no_ack = !s->ack;
    if (s->exchange) {
        amqp_queue_declare_ok_t *d =
            amqp_queue_declare(conn, ch, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
        if (!d) {
            r = amqp_get_rpc_reply(conn);
            goto fail;
        }
        queue = d->queue; /* valid until buffers are released */
        amqp_queue_bind(conn, ch, queue, amqp_cstring_bytes(s->exchange),
                        bytes_of(s->binding_key ? s->binding_key : "#"), amqp_empty_table);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            goto fail;
        no_ack = true;
    } else if (s->ack) {
        amqp_basic_qos(conn, ch, 0, (uint16_t)(s->prefetch > 65535 ? 65535 : s->prefetch), 0);
        r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            goto fail;
    }
    amqp_basic_consume(conn, ch, queue, amqp_empty_bytes, 0, no_ack, s->exchange != NULL,
                       amqp_empty_table);
    r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        goto fail;
    amqp_maybe_release_buffers(conn);
    if (!s->started) {
        s->started = true;
        a->sink.source_started(a->sink.ctx, s->id, NULL);
    }
    return 0;

fail:
    s->link = NULL;
    s->ch = 0;
    if (!describe(&r, why, sizeof(why), &code)) {
        lost(a, why);
        return -1;
    }
    close_ok(conn, ch);
    chan_release(l, ch);
refused_noclose:
    wsb_log(WSB_LOG_WARN, "amqp source refused", WSB_LSTR("connector", a->name),
            WSB_LSTR("exchange", s->exchange), WSB_LSTR("queue", s->queue),
            WSB_LSTR("reason", why));
    a->sink.source_failed(a->sink.ctx, s->id, code_for(code), why);
    struct source **pp;
    if (source_by_id(a, s->id, &pp)) {
        *pp = s->next;
        source_free(s);
    }
    return 1;
}

static void teardown(struct amqp *a)
{
    for (size_t i = 0; i < a->nlinks; i++) {
        amqp_destroy_connection(a->links[i]->conn); /* closes the socket */
        free(a->links[i]);
        a->links[i] = NULL;
    }
    a->nlinks = 0;
    if (a->pconn)
        amqp_destroy_connection(a->pconn);
    a->pconn = NULL;
    for (struct source *s = a->sources; s; s = s->next) {
        s->link = NULL;
        s->ch = 0;
    }
}

/* The connection is gone: unconfirmed publishes fail (the broker may or may not have them),
 * unacked deliveries are the broker's again, sources wait for the next connection. */
static void lost(struct amqp *a, const char *why)
{
    if (!a->pconn && !a->nlinks)
        return;
    teardown(a);
    fail_pending(a, "connection to the broker lost before the confirm");
    char reason[WHY_MAX + 64];
    snprintf(reason, sizeof(reason), "connection to %s:%d lost: %s", a->ci.host, a->ci.port, why);
    set_state(a, false, reason);
    a->backoff_ms = RECONNECT_MIN_MS;
    a->next_attempt_ms = mono_ms() + a->backoff_ms;
}

/* ---- TLS (amqps) ---------------------------------------------------------------------------
 * rabbitmq-c 0.11 checks the peer only after the handshake, matches host names against DNS
 * names only (an IP address in the URL never matched) and never loads the system trust store.
 * So OpenSSL does it, in the handshake: SSL_VERIFY_PEER with the URL's host (a DNS name or an
 * IP address) as the expected identity, the system store when there is no tls.ca_file. */

/* Records the first certificate check that failed (for the reason /readyz and the log show). */
static int tls_verify_cb(int ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct amqp *a = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (!ok && a && !a->tls_err[0])
        snprintf(a->tls_err, sizeof(a->tls_err), "%s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)));
    return ok;
}

/* Never prompt for a key's pass phrase (OpenSSL's default reads the terminal). */
static int tls_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* " (what OpenSSL says)" for the failure of the last TLS call on this thread, or "". */
static void tls_detail(struct amqp *a, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (a->tls_err[0])
        snprintf(buf, len, " (%s)", a->tls_err);
    else if (r)
        snprintf(buf, len, " (%s)", r);
    else
        buf[0] = '\0';
    ERR_clear_error();
}

/* Loads the trust anchors and the client certificate into the context of a TLS socket and
 * sets the identity to check. False with a reason. */
static bool tls_ctx_setup(struct amqp *a, SSL_CTX *ctx, const char *host, char *why, size_t whylen)
{
    SSL_CTX_set_default_passwd_cb(ctx, tls_no_password);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (a->ca_file ? SSL_CTX_load_verify_locations(ctx, a->ca_file, NULL) != 1
                   : a->verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(why, whylen, a->ca_file ? "cannot load tls.ca_file" : "no system trust store");
        return false;
    }
    if (a->cert_file && (SSL_CTX_use_certificate_chain_file(ctx, a->cert_file) != 1 ||
                         SSL_CTX_use_PrivateKey_file(ctx, a->key_file, SSL_FILETYPE_PEM) != 1 ||
                         SSL_CTX_check_private_key(ctx) != 1)) {
        snprintf(why, whylen,
                 "cannot load tls.cert_file and tls.key_file (PEM, a key without a pass "
                 "phrase, matching the certificate)");
        return false;
    }
    if (!a->verify)
        return true;
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (host && X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1 &&
        X509_VERIFY_PARAM_set1_host(param, host, 0) != 1) {
        snprintf(why, whylen, "cannot check the broker's name");
        return false;
    }
    SSL_CTX_set_app_data(ctx, a);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_cb);
    return true;
}

static bool tls_setup(struct amqp *a, amqp_socket_t *sock, char *why, size_t whylen)
{
    /* rabbitmq-c's own checks stay on when verifying: a second opinion after OpenSSL's, except
     * its name check, which knows no IP addresses (OpenSSL's is in the chain check). */
    amqp_ssl_socket_set_verify_peer(sock, a->verify);
    amqp_ssl_socket_set_verify_hostname(sock, false);
    SSL_CTX *ctx = amqp_ssl_socket_get_context(sock);
    ERR_clear_error();
    bool ok = tls_ctx_setup(a, ctx, a->ci.host, why, whylen);
    ERR_clear_error();
    return ok;
}

/* Opens one connection and logs in. Returns NULL and a reason in `why` on failure. */
static amqp_connection_state_t open_connection(struct amqp *a, const char *role, char *why,
                                               size_t whylen)
{
    int code;
    struct timeval tv = {.tv_sec = a->connect_timeout_ms / 1000,
                         .tv_usec = (a->connect_timeout_ms % 1000) * 1000};
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    amqp_socket_t *sock;
    if (a->ci.ssl) {
        sock = amqp_ssl_socket_new(conn);
        char what[120];
        if (sock && !tls_setup(a, sock, what, sizeof(what))) {
            snprintf(why, whylen, "cannot connect to %s:%d: %s", a->ci.host, a->ci.port, what);
            goto fail;
        }
    } else {
        sock = amqp_tcp_socket_new(conn);
    }
    if (!sock) {
        snprintf(why, whylen, "cannot create a socket");
        goto fail;
    }
    a->tls_err[0] = '\0';
    ERR_clear_error();
    int st = amqp_socket_open_noblock(sock, a->ci.host, a->ci.port, &tv);
    if (st != AMQP_STATUS_OK) {
        char detail[160];
        tls_detail(a, detail, sizeof(detail));
        snprintf(why, whylen, "cannot connect to %s:%d: %s%.80s", a->ci.host, a->ci.port,
                 a->tls_err[0] ? "TLS: the broker's certificate is not accepted"
                               : amqp_error_string2(st),
                 detail);
        goto fail;
    }
    amqp_set_handshake_timeout(conn, &tv);
    struct timeval rpc = {.tv_sec = 30};
    amqp_set_rpc_timeout(conn, &rpc);
    /* Capabilities: connection.blocked tells the publishing connection about a broker resource
     * alarm (publishes then fail fast); consumer_cancel_notify makes the broker tell us when a
     * consumed queue is deleted. */
    amqp_table_entry_t caps[] = {
        {.key = amqp_cstring_bytes("connection.blocked"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {.key = amqp_cstring_bytes("consumer_cancel_notify"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {.key = amqp_cstring_bytes("publisher_confirms"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {.key = amqp_cstring_bytes("basic.nack"),
         .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
    };
    char name[96];
    snprintf(name, sizeof(name), "wsbridge %s (%s)", a->name, role);
    amqp_table_entry_t props[] = {
        {.key = amqp_cstring_bytes("product"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("wsbridge")}},
        {.key = amqp_cstring_bytes("connection_name"),
         .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(name)}},
        {.key = amqp_cstring_bytes("capabilities"),
         .value = {.kind = AMQP_FIELD_KIND_TABLE,
                   .value.table = {.num_entries = (int)WSB_ARRAY_LEN(caps), .entries = caps}}},
    };
    amqp_table_t client_props = {.num_entries = (int)WSB_ARRAY_LEN(props), .entries = props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        conn, a->ci.vhost, a->channel_max, FRAME_MAX, a->heartbeat_s, &client_props,
        AMQP_SASL_METHOD_PLAIN, a->ci.user, a->ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        char what[120], detail[160];
        describe(&r, what, sizeof(what), &code);
        /* A broker that refuses our client certificate says so after the handshake (TLS
         * 1.3): the alert is in OpenSSL's error queue when it was read; when the broker's
         * reset came first (its close overtook our first frame), nothing says why. */
        detail[0] = '\0';
        if (a->ci.ssl && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
            tls_detail(a, detail, sizeof(detail));
            if (!detail[0])
                snprintf(detail, sizeof(detail),
                         " (TLS connection closed by the broker after the handshake: "
                         "was the client certificate refused?)");
        }
        /* The broker's host and port, never the URL (it holds the credentials). */
        snprintf(why, whylen, "cannot log in to %s:%d: %.110s%.98s", a->ci.host, a->ci.port, what,
                 detail);
        goto fail;
    }
    return conn;

fail:
    amqp_destroy_connection(conn);
    return NULL;
}

static bool try_connect(struct amqp *a)
{
    char why[WHY_MAX];
    if (!(a->pconn = open_connection(a, "publish", why, sizeof(why))) ||
        !link_open(a, why, sizeof(why)) || !open_pub_channel(a, why, sizeof(why)))
        goto fail;
    a->epoch++;
    a->blocked = false;
    a->plast_rx_ms = mono_ms();
    /* Re-open every source (a new connection after an outage). */
    struct source *s = a->sources;
    while (s) {
        struct source *next = s->next; /* open_source may free s */
        if (open_source(a, s) < 0)
            return false; /* lost() already ran */
        s = next;
    }
    a->backoff_ms = 0;
    a->last_why[0] = '\0';
    set_state(a, true, NULL);
    return true;

fail:
    teardown(a);
    a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (a->backoff_ms > (int64_t)a->reconnect_max_ms)
        a->backoff_ms = a->reconnect_max_ms;
    a->next_attempt_ms = mono_ms() + a->backoff_ms;
    /* A connector that never came up (a TLS or login problem from the start) changes no state:
     * log each new reason once, not every retry. */
    if (strcmp(why, a->last_why) != 0) {
        wsb_log(WSB_LOG_WARN, "amqp connect failed", WSB_LSTR("connector", a->name),
                WSB_LSTR("reason", why));
        snprintf(a->last_why, sizeof(a->last_why), "%s", why);
    }
    set_state(a, false, why);
    return false;
}

/* ---- Commands ------------------------------------------------------------------------------ */

static void do_subscribe(struct amqp *a, const struct wsb_cmd *c)
{
    if (c->src.from != WSB_FROM_LATEST) {
        a->sink.source_failed(a->sink.ctx, c->id, "unsupported",
                              "AMQP channels only start from \"latest\"");
        return;
    }
    if (source_by_id(a, c->id, NULL)) {
        a->sink.source_failed(a->sink.ctx, c->id, "unavailable", "source already subscribed");
        return;
    }
    struct source *s = calloc(1, sizeof(*s));
    if (!s) {
        a->sink.source_failed(a->sink.ctx, c->id, "unavailable", "out of memory");
        return;
    }
    s->id = c->id;
    const char *exchange = wsb_connector_field(c->src.fields, "exchange"),
               *binding_key = wsb_connector_field(c->src.fields, "binding_key"),
               *queue = wsb_connector_field(c->src.fields, "queue");
    s->exchange = dup_or_null(exchange);
    s->binding_key = dup_or_null(binding_key);
    s->queue = dup_or_null(queue);
    s->ack = c->src.ack;
    s->prefetch = c->src.max_unacked;
    if ((*exchange && !s->exchange) || (*queue && !s->queue) || (*binding_key && !s->binding_key) ||
        (!s->exchange == !s->queue)) {
        source_free(s);
        a->sink.source_failed(a->sink.ctx, c->id, "unavailable", "out of memory");
        return;
    }
    s->next = a->sources;
    a->sources = s;
    if (a->pconn)
        open_source(a, s); /* answers through the sink, or waits for the next connection */
}

static void do_unsubscribe(struct amqp *a, uint64_t id)
{
    struct source **pp;
    struct source *s = source_by_id(a, id, &pp);
    if (!s)
        return;
    *pp = s->next;
    amqp_channel_t ch = s->ch;
    struct link *l = s->link;
    source_free(s);
    if (l && ch) {
        /* Closing the channel gives its unacked deliveries back to the broker. */
        amqp_rpc_reply_t r = amqp_channel_close(l->conn, ch, AMQP_REPLY_SUCCESS);
        char why[200];
        int code;
        if (!describe(&r, why, sizeof(why), &code)) {
            lost(a, why);
            return;
        }
        chan_release(l, ch);
    }
}

static void do_publish(struct amqp *a, const struct wsb_cmd *c)
{
    if (!a->pconn) {
        a->sink.publish_done(a->sink.ctx, c->id, false, "not connected to the broker");
        return;
    }
    if (a->blocked) {
        a->sink.publish_done(a->sink.ctx, c->id, false,
                             "the broker is blocking publishes (resource alarm)");
        return;
    }
    const struct wsb_msg *m = c->msg;
    if (m->key) {
        a->sink.publish_done(a->sink.ctx, c->id, false,
                             "\"key\" is not supported on AMQP channels (the routing key comes "
                             "from the channel)");
        return;
    }
    /* Header names and content-type are AMQP short strings: refuse what cannot be encoded
     * here, rather than have rabbitmq-c fail half way through a frame. */
    for (size_t i = 0; i < m->nheaders; i++) {
        const struct wsb_header *h = &m->headers[i];
        if (strlen(h->name) > 255 ||
            (strcasecmp(h->name, "content-type") == 0 && h->value_len > 255)) {
            a->sink.publish_done(a->sink.ctx, c->id, false,
                                 "a header name or content-type is longer than 255 bytes");
            return;
        }
    }
    struct pending *p = calloc(1, sizeof(*p));
    amqp_table_entry_t entries[MAX_HEADERS];
    if (!p) {
        a->sink.publish_done(a->sink.ctx, c->id, false, "out of memory");
        return;
    }
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.delivery_mode = 2; /* persistent: what a work queue expects */
    props.timestamp = (uint64_t)time(NULL);
    size_t n = 0;
    for (size_t i = 0; i < m->nheaders && n < MAX_HEADERS; i++) {
        const struct wsb_header *h = &m->headers[i];
        amqp_bytes_t v = {.len = h->value_len, .bytes = (void *)h->value};
        if (strcasecmp(h->name, "content-type") == 0) {
            props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
            props.content_type = v;
            continue;
        }
        entries[n].key = amqp_cstring_bytes(h->name);
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n].value.value.bytes = v;
        n++;
    }
    if (n) {
        props._flags |= AMQP_BASIC_HEADERS_FLAG;
        props.headers.num_entries = (int)n;
        props.headers.entries = entries;
    }
    amqp_bytes_t body = {.len = m->payload_len, .bytes = (void *)m->payload};
    const json_t *f = c->pub.fields;
    const char *exchange = wsb_connector_field(f, "exchange");
    /* No "routing_key": an exchange channel publishes with its binding key, a queue channel
     * to its queue (the default exchange routes by queue name). */
    const char *rk = wsb_connector_field(f, json_object_get(f, "routing_key")   ? "routing_key"
                                            : json_object_get(f, "binding_key") ? "binding_key"
                                                                                : "queue");
    p->cookie = c->id;
    p->seq = ++a->pub_seq;
    p->exchange = strdup(exchange);
    p->routing_key = strdup(rk);
    if (!p->exchange || !p->routing_key) {
        a->pub_seq--;
        pending_free(p);
        a->sink.publish_done(a->sink.ctx, c->id, false, "out of memory");
        return;
    }
    if (a->ptail)
        a->ptail->next = p;
    else
        a->phead = p;
    a->ptail = p;
    int st = amqp_basic_publish(a->pconn, PUB_CHANNEL, amqp_cstring_bytes(exchange),
                                amqp_cstring_bytes(rk), 1 /* mandatory */, 0, &props, body);
    if (st != AMQP_STATUS_OK)
        lost(a, amqp_error_string2(st)); /* fails p with every other pending publish */
}

static void do_ack(struct amqp *a, const struct wsb_cmd *c)
{
    struct source *s = source_by_id(a, c->id, NULL);
    /* A token of an earlier connection: the broker took that delivery back when the
     * connection went away and delivers it again, so there is nothing to ack. */
    if (!s || !s->ack || !s->link || !s->ch || (c->ack_token >> EPOCH_SHIFT) != a->epoch)
        return;
    uint64_t tag = c->ack_token & ((1ull << EPOCH_SHIFT) - 1);
    int st = c->ack_kind == WSB_ACK
                 ? amqp_basic_ack(s->link->conn, s->ch, tag, 0)
                 : amqp_basic_nack(s->link->conn, s->ch, tag, 0, c->ack_kind == WSB_NACK_REQUEUE);
    if (st != AMQP_STATUS_OK)
        lost(a, amqp_error_string2(st));
}

/* Runs the queued commands. Returns false after the STOP command (then *stop_timeout_ms is its
 * flush time). */
static bool run_commands(struct amqp *a, uint32_t *stop_timeout_ms)
{
    bool go_on = true;
    for (struct wsb_cmd *list = wsb_cmdq_take(a->base.q), *c; list; wsb_cmd_free(c)) {
        c = list;
        list = c->next;
        switch (c->kind) {
        case WSB_CMD_SUBSCRIBE: do_subscribe(a, c); break;
        case WSB_CMD_UNSUBSCRIBE: do_unsubscribe(a, c->id); break;
        case WSB_CMD_PUBLISH: do_publish(a, c); break;
        case WSB_CMD_ACK: do_ack(a, c); break;
        case WSB_CMD_SYNC: break;
        case WSB_CMD_STOP:
            go_on = false;
            *stop_timeout_ms = c->timeout_ms;
            break;
        }
    }
    return go_on;
}

/* ---- Incoming frames ----------------------------------------------------------------------- */

/* Formats a header value as bytes; false for kinds with no text form (tables, arrays). */
static bool field_text(const amqp_field_value_t *v, char *buf, size_t len, amqp_bytes_t *out)
{
    int n = -1;
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: *out = v->value.bytes; return true;
    case AMQP_FIELD_KIND_BOOLEAN:
        n = snprintf(buf, len, "%s", v->value.boolean ? "true" : "false");
        break;
    case AMQP_FIELD_KIND_I8: n = snprintf(buf, len, "%d", v->value.i8); break;
    case AMQP_FIELD_KIND_U8: n = snprintf(buf, len, "%u", v->value.u8); break;
    case AMQP_FIELD_KIND_I16: n = snprintf(buf, len, "%d", v->value.i16); break;
    case AMQP_FIELD_KIND_U16: n = snprintf(buf, len, "%u", v->value.u16); break;
    case AMQP_FIELD_KIND_I32: n = snprintf(buf, len, "%" PRId32, v->value.i32); break;
    case AMQP_FIELD_KIND_U32: n = snprintf(buf, len, "%" PRIu32, v->value.u32); break;
    case AMQP_FIELD_KIND_I64: n = snprintf(buf, len, "%" PRId64, v->value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: n = snprintf(buf, len, "%" PRIu64, v->value.u64); break;
    case AMQP_FIELD_KIND_F32: n = snprintf(buf, len, "%.9g", (double)v->value.f32); break;
    case AMQP_FIELD_KIND_F64: n = snprintf(buf, len, "%.17g", v->value.f64); break;
    default: return false;
    }
    if (n < 0 || (size_t)n >= len)
        return false;
    out->bytes = buf;
    out->len = (size_t)n;
    return true;
}

static void deliver(struct amqp *a, struct link *l, amqp_envelope_t *env)
{
    struct source *s = source_by_channel(a, l, env->channel);
    if (!s)
        return; /* a channel being closed: an ack source's delivery goes back to the broker */
    const amqp_basic_properties_t *p = &env->message.properties;
    struct wsb_header hdrs[MAX_HEADERS + 1];
    char names[MAX_HEADERS + 1][256];
    char text[MAX_HEADERS + 1][32];
    size_t n = 0;
    if ((p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len) {
        hdrs[n++] = (struct wsb_header){.name = "content-type",
                                        .value = p->content_type.bytes,
                                        .value_len = p->content_type.len};
    }
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
        for (int i = 0; i < p->headers.num_entries && n <= MAX_HEADERS; i++) {
            const amqp_table_entry_t *e = &p->headers.entries[i];
            amqp_bytes_t v;
            if (e->key.len >= sizeof(names[0]) ||
                !field_text(&e->value, text[n], sizeof(text[n]), &v))
                continue; /* tables, arrays and absurd names have no header form */
            memcpy(names[n], e->key.bytes, e->key.len);
            names[n][e->key.len] = '\0';
            hdrs[n] = (struct wsb_header){.name = names[n], .value = v.bytes, .value_len = v.len};
            n++;
        }
    }
    /* The AMQP timestamp has second resolution; the rabbitmq_message_timestamp plugin's
     * `timestamp_in_ms` header, when present, is better. */
    int64_t ts = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp * 1000 : -1;
    for (int i = 0; (p->_flags & AMQP_BASIC_HEADERS_FLAG) && i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == 15 && memcmp(e->key.bytes, "timestamp_in_ms", 15) == 0) {
            if (e->value.kind == AMQP_FIELD_KIND_I64 || e->value.kind == AMQP_FIELD_KIND_U64 ||
                e->value.kind == AMQP_FIELD_KIND_TIMESTAMP)
                ts = e->value.value.i64;
            else if (e->value.kind == AMQP_FIELD_KIND_I32)
                ts = e->value.value.i32;
        }
    }
    struct wsb_msg *m = wsb_msg_new(s->id, -1, -1, ts, env->routing_key.bytes, env->routing_key.len,
                                    env->message.body.bytes, env->message.body.len, hdrs, n);
    if (!m) {
        if (s->ack) /* give it back rather than lose it */
            amqp_basic_nack(l->conn, s->ch, env->delivery_tag, 0, 1);
        return;
    }
    if (s->ack)
        m->ack_token =
            (a->epoch << EPOCH_SHIFT) | (env->delivery_tag & ((1ull << EPOCH_SHIFT) - 1));
    atomic_fetch_add(&a->base.messages_in, 1);
    a->sink.message(a->sink.ctx, m);
}

/* basic.return: the earliest unconfirmed publish to the same exchange and routing key is the
 * one returned (the broker handles a channel's publishes in order and sends the return just
 * before that message's confirm). */
static void returned(struct amqp *a, const amqp_basic_return_t *r)
{
    for (struct pending *p = a->phead; p; p = p->next) {
        if (p->returned || strlen(p->exchange) != r->exchange.len ||
            strlen(p->routing_key) != r->routing_key.len ||
            memcmp(p->exchange, r->exchange.bytes, r->exchange.len) != 0 ||
            memcmp(p->routing_key, r->routing_key.bytes, r->routing_key.len) != 0)
            continue;
        p->returned = true;
        return;
    }
}

/* A method frame that is not a delivery. Returns false when the connection is gone. */
static bool handle_method(struct amqp *a, amqp_connection_state_t conn, const amqp_frame_t *f)
{
    bool pub = conn == a->pconn; /* channel 1 of the publishing connection */
    struct link *l = pub ? NULL : link_of(a, conn);
    char why[200];
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f->payload.method.decoded;
        if (pub && f->channel == PUB_CHANNEL)
            confirm(a, m->delivery_tag, m->multiple, true);
        return true;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f->payload.method.decoded;
        if (pub && f->channel == PUB_CHANNEL)
            confirm(a, m->delivery_tag, m->multiple, false);
        return true;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *m = f->payload.method.decoded;
        if (pub && f->channel == PUB_CHANNEL)
            returned(a, m);
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(conn, f->channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            int code;
            describe(&r, why, sizeof(why), &code);
            lost(a, why);
            return false;
        }
        amqp_destroy_message(&msg);
        return true;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(why, sizeof(why), "%.*s", (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        int code = m->reply_code;
        close_ok(conn, f->channel);
        if (pub) {
            /* e.g. a publish to an exchange that does not exist: everything unconfirmed on
             * the channel is lost with it. */
            fail_pending(a, why);
            char err[200];
            if (!open_pub_channel(a, err, sizeof(err))) {
                lost(a, err);
                return false;
            }
            return true;
        }
        struct source *s = source_by_channel(a, l, f->channel);
        chan_release(l, f->channel);
        if (s && s->ch) {
            s->ch = 0;
            a->sink.source_failed(a->sink.ctx, s->id, code_for(code), why);
            struct source **pp;
            if (source_by_id(a, s->id, &pp)) {
                *pp = s->next;
                source_free(s);
            }
        }
        return true;
    }
    case AMQP_BASIC_CANCEL_METHOD: {
        /* The broker cancelled a consumer (its queue was deleted). */
        struct source *s = l ? source_by_channel(a, l, f->channel) : NULL;
        if (s) {
            amqp_channel_t ch = s->ch;
            s->ch = 0;
            a->sink.source_failed(a->sink.ctx, s->id, "unavailable",
                                  "the broker cancelled the consumer");
            struct source **pp;
            if (source_by_id(a, s->id, &pp)) {
                *pp = s->next;
                source_free(s);
            }
            amqp_rpc_reply_t r = amqp_channel_close(conn, ch, AMQP_REPLY_SUCCESS);
            int code;
            if (!describe(&r, why, sizeof(why), &code)) {
                lost(a, why);
                return false;
            }
            chan_release(l, ch);
        }
        return true;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
    case AMQP_CONNECTION_UNBLOCKED_METHOD: {
        a->blocked = f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD;
        const amqp_connection_blocked_t *m = a->blocked ? f->payload.method.decoded : NULL;
        if (m)
            snprintf(why, sizeof(why), "%.*s", (int)m->reason.len, (const char *)m->reason.bytes);
        wsb_log(a->blocked ? WSB_LOG_WARN : WSB_LOG_INFO,
                a->blocked ? "amqp publishing blocked" : "amqp publishing unblocked",
                WSB_LSTR("connector", a->name), WSB_LSTR("reason", m ? why : NULL));
        return true;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(why, sizeof(why), "%.*s", (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        lost(a, why);
        return false;
    }
    default: return true;
    }
}

/* Reads what the socket has (and what rabbitmq-c queued during RPCs) without blocking, up to
 * a batch, so commands keep their turn. */
static void pump(struct amqp *a, amqp_connection_state_t conn, int64_t *last_rx)
{
    struct timeval zero = {0, 0};
    char why[200];
    int code;
    for (int i = 0; i < PUMP_BATCH && (conn == a->pconn || link_of(a, conn)); i++) {
        amqp_maybe_release_buffers(conn);
        amqp_envelope_t env;
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &zero, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            *last_rx = mono_ms();
            struct link *l = link_of(a, conn);
            if (l)
                deliver(a, l, &env);
            amqp_destroy_envelope(&env);
            continue;
        }
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t f;
            int st = amqp_simple_wait_frame_noblock(conn, &f, &zero);
            if (st == AMQP_STATUS_TIMEOUT)
                return;
            if (st != AMQP_STATUS_OK) {
                lost(a, amqp_error_string2(st));
                return;
            }
            *last_rx = mono_ms();
            if (f.frame_type == AMQP_FRAME_METHOD && !handle_method(a, conn, &f))
                return;
            continue;
        }
        describe(&r, why, sizeof(why), &code);
        lost(a, why);
        return;
    }
}

/* ---- The thread ----------------------------------------------------------------------------- */

static void shutdown_conn(struct amqp *a, uint32_t timeout_ms)
{
    /* Flush: wait for outstanding confirms up to the drain timeout. */
    int64_t deadline = mono_ms() + timeout_ms;
    while (a->pconn && a->phead && mono_ms() < deadline) {
        struct pollfd pfd = {.fd = amqp_get_sockfd(a->pconn), .events = POLLIN};
        if (!amqp_data_in_buffer(a->pconn) && !amqp_frames_enqueued(a->pconn))
            poll(&pfd, 1, 50);
        pump(a, a->pconn, &a->plast_rx_ms);
    }
    fail_pending(a, "the bridge is shutting down");
    /* A clean close (unacked deliveries go back at once), but never a long wait for it. */
    struct timeval brief = {.tv_sec = 1};
    for (size_t i = 0; i < a->nlinks; i++) {
        amqp_set_rpc_timeout(a->links[i]->conn, &brief);
        amqp_connection_close(a->links[i]->conn, AMQP_REPLY_SUCCESS);
    }
    if (a->pconn) {
        amqp_set_rpc_timeout(a->pconn, &brief);
        amqp_connection_close(a->pconn, AMQP_REPLY_SUCCESS);
    }
    teardown(a);
}

static bool buffered(amqp_connection_state_t conn)
{
    return amqp_data_in_buffer(conn) || amqp_frames_enqueued(conn);
}

/* True when nothing came from the broker on `conn` since `late`. The receive time is taken
 * when poll() reports input, so a thread that was busy elsewhere (opening a link, a slow
 * command) for longer than that has not looked: input waiting now is a sign of life, not a
 * missed heartbeat. */
static bool silent(amqp_connection_state_t conn, int64_t *last_rx_ms, int64_t late)
{
    if (*last_rx_ms >= late)
        return false;
    struct pollfd p = {.fd = amqp_get_sockfd(conn), .events = POLLIN};
    if (buffered(conn) || (poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))) {
        *last_rx_ms = mono_ms();
        return false;
    }
    return true;
}

static void *run(void *arg)
{
    struct amqp *a = arg;
    uint32_t stop_timeout_ms = 0;
    struct pollfd pfd[2 + MAX_LINKS];
    a->next_attempt_ms = 0;
    for (;;) {
        int64_t now = mono_ms();
        if (!a->pconn && now >= a->next_attempt_ms) {
            try_connect(a);
            now = mono_ms();
        }
        pfd[0] = (struct pollfd){.fd = wsb_cmdq_fd(a->base.q), .events = POLLIN};
        nfds_t nfds = 1;
        int timeout = 1000;
        if (a->pconn) {
            pfd[nfds++] = (struct pollfd){.fd = amqp_get_sockfd(a->pconn), .events = POLLIN};
            bool ready = buffered(a->pconn);
            for (size_t i = 0; i < a->nlinks; i++) {
                pfd[nfds++] =
                    (struct pollfd){.fd = amqp_get_sockfd(a->links[i]->conn), .events = POLLIN};
                ready = ready || buffered(a->links[i]->conn);
            }
            if (a->heartbeat_s > 0 && timeout > a->heartbeat_s * 500)
                timeout = a->heartbeat_s * 500;
            if (ready)
                timeout = 0;
        } else if (a->next_attempt_ms - now < timeout) {
            timeout = a->next_attempt_ms > now ? (int)(a->next_attempt_ms - now) : 0;
        }
        int n = poll(pfd, nfds, timeout);
        if (n < 0 && errno != EINTR)
            break;
        if (a->pconn && n > 0) {
            now = mono_ms();
            if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))
                a->plast_rx_ms = now;
            for (size_t i = 0; i < a->nlinks && 2 + i < nfds; i++)
                if (pfd[2 + i].revents & (POLLIN | POLLHUP | POLLERR))
                    a->links[i]->last_rx_ms = now;
        }
        if ((pfd[0].revents & POLLIN) && !run_commands(a, &stop_timeout_ms))
            break;
        /* Reading also sends heartbeats when due. A lost connection empties the links. */
        for (size_t i = 0; i < a->nlinks; i++)
            pump(a, a->links[i]->conn, &a->links[i]->last_rx_ms);
        if (a->pconn)
            pump(a, a->pconn, &a->plast_rx_ms);
        /* Missed heartbeats: the broker sends one every heartbeat/2 s while idle. */
        if (a->pconn && a->heartbeat_s > 0) {
            int64_t late = mono_ms() - (int64_t)a->heartbeat_s * 2000;
            bool missed = silent(a->pconn, &a->plast_rx_ms, late);
            for (size_t i = 0; i < a->nlinks; i++)
                missed = silent(a->links[i]->conn, &a->links[i]->last_rx_ms, late) || missed;
            if (missed)
                lost(a, "missed heartbeats");
        }
    }
    shutdown_conn(a, stop_timeout_ms); /* nothing is queued after the stop */
    return NULL;
}

/* ---- The vtable ------------------------------------------------------------------------------ */

static int check_config(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    int problems = 0;
    if (!json_is_object(conf)) {
        report(ctx, "", "must be an object");
        return 1;
    }
    if (!json_object_get(conf, "url")) {
        report(ctx, ".url", "required (amqp://user:pass@host:port/vhost)");
        problems++;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)conf, key, v)
    {
        char path[160];
        snprintf(path, sizeof(path), ".%s", key);
        if (strcmp(key, "type") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "amqp") != 0) {
                report(ctx, path, "must be \"amqp\"");
                problems++;
            }
        } else if (strcmp(key, "url") == 0) {
            struct amqp_connection_info ci;
            char *copy = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
            if (!copy || amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
                report(ctx, path, "must be an amqp:// or amqps:// URL");
                problems++;
            } else if (!ci.ssl && json_object_get(conf, "tls")) {
                /* TLS settings on a plain URL would be ignored: plain text where TLS was meant */
                report(ctx, ".tls", "only for an amqps:// URL (this one is plain amqp://)");
                problems++;
            }
            free(copy);
        } else if (strcmp(key, "channel_max") == 0) {
            problems += wsb_connector_check_int(v, 2, 65535, path, report, ctx);
        } else if (strcmp(key, "heartbeat_s") == 0) {
            problems += wsb_connector_check_int(v, 0, 600, path, report, ctx);
        } else if (strcmp(key, "connect_timeout_ms") == 0 || strcmp(key, "reconnect_max_ms") == 0) {
            problems += wsb_connector_check_int(v, 100, 600000, path, report, ctx);
        } else if (strcmp(key, "tls") == 0) {
            if (!json_is_object(v)) {
                report(ctx, path, "must be an object");
                problems++;
                continue;
            }
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
            {
                char p2[200];
                snprintf(p2, sizeof(p2), ".tls.%s", k2);
                bool file = strcmp(k2, "ca_file") == 0 || strcmp(k2, "cert_file") == 0 ||
                            strcmp(k2, "key_file") == 0;
                if (file && json_is_string(v2) && json_string_length(v2) > 0)
                    continue;
                if (strcmp(k2, "verify") == 0 && json_is_boolean(v2))
                    continue;
                report(ctx, p2,
                       file                        ? "must be a non-empty string (a PEM file)"
                       : strcmp(k2, "verify") == 0 ? "must be true or false"
                                                   : "unknown key");
                problems++;
            }
            bool has_cert = json_object_get(v, "cert_file"),
                 has_key = json_object_get(v, "key_file");
            if (has_cert != has_key) {
                report(ctx, has_cert ? ".tls.key_file" : ".tls.cert_file",
                       has_cert ? "required with tls.cert_file (the client certificate's key)"
                                : "required with tls.key_file (the client certificate)");
                problems++;
            }
        } else {
            report(ctx, path, "unknown key");
            problems++;
        }
    }
    return problems;
}

static int check_channel(const json_t *channel,
                         void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    static const char *const kafka_only[] = {"topic", "group", "dead_letter_topic"};
    static const char *const strings[] = {"exchange", "queue", "binding_key", "routing_key"};
    char path[64];
    int problems = 0;
    for (size_t i = 0; i < WSB_ARRAY_LEN(kafka_only); i++) {
        if (json_object_get(channel, kafka_only[i])) {
            snprintf(path, sizeof(path), ".%s", kafka_only[i]);
            report(ctx, path, "not used by an amqp channel (use \"exchange\" or \"queue\")");
            problems++;
        }
    }
    for (size_t i = 0; i < WSB_ARRAY_LEN(strings); i++) {
        json_t *v = json_object_get(channel, strings[i]);
        if (v && (!json_is_string(v) || (json_string_length(v) == 0 && i < 2))) {
            snprintf(path, sizeof(path), ".%s", strings[i]);
            report(ctx, path, i < 2 ? "must be a non-empty string" : "must be a string");
            problems++;
        }
    }
    bool ex = json_object_get(channel, "exchange") != NULL;
    bool q = json_object_get(channel, "queue") != NULL;
    if (ex == q) {
        report(ctx, ex ? ".queue" : ".exchange",
               ex ? "an amqp channel names an exchange or a queue, not both"
                  : "required for an amqp channel (or \"queue\")");
        problems++;
    }
    if (q && json_object_get(channel, "binding_key")) {
        report(ctx, ".binding_key", "only for exchange channels");
        problems++;
    }
    if (q && json_object_get(channel, "routing_key")) {
        report(ctx, ".routing_key",
               "only for exchange channels (a queue channel publishes to "
               "its queue)");
        problems++;
    }
    json_t *d = json_object_get(channel, "delivery");
    if (ex && json_is_string(d) && strcmp(json_string_value(d), "ack") == 0) {
        report(ctx, ".delivery", "\"ack\" needs a queue channel (competing consumers)");
        problems++;
    }
    return problems;
}

static const char *str_member(const json_t *conf, const char *key)
{
    json_t *v = conf ? json_object_get(conf, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static enum wsb_err create(const char *name, const json_t *conf, const struct wsb_sink *sink,
                           void **impl, char *err, size_t errlen)
{
    *impl = NULL;
    struct amqp *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->sink = *sink;
    const char *url = str_member(conf, "url");
    a->url_copy = strdup(url ? url : "");
    if (!a->url_copy) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    amqp_default_connection_info(&a->ci);
    if (amqp_parse_url(a->url_copy, &a->ci) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "url: not an amqp:// or amqps:// URL");
        goto fail;
    }
    a->heartbeat_s = DEFAULT_HEARTBEAT_S;
    a->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    a->reconnect_max_ms = DEFAULT_RECONNECT_MAX_MS;
    json_t *v;
    if ((v = json_object_get(conf, "channel_max")) && json_is_integer(v))
        a->channel_max = (int)json_integer_value(v);
    if ((v = json_object_get(conf, "heartbeat_s")) && json_is_integer(v))
        a->heartbeat_s = (int)json_integer_value(v);
    if ((v = json_object_get(conf, "connect_timeout_ms")) && json_is_integer(v))
        a->connect_timeout_ms = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(conf, "reconnect_max_ms")) && json_is_integer(v))
        a->reconnect_max_ms = (uint32_t)json_integer_value(v);
    a->verify = true;
    json_t *tls = json_object_get(conf, "tls");
    if (json_is_object(tls)) {
        a->ca_file = dup_or_null(str_member(tls, "ca_file"));
        a->cert_file = dup_or_null(str_member(tls, "cert_file"));
        a->key_file = dup_or_null(str_member(tls, "key_file"));
        if ((v = json_object_get(tls, "verify")) && json_is_boolean(v))
            a->verify = json_is_true(v);
    }
    if (a->ci.ssl) { /* the files load now, so a wrong path stops the start */
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        bool ok = ctx && tls_ctx_setup(a, ctx, a->ci.host, err, errlen);
        if (!ctx)
            snprintf(err, errlen, "out of memory");
        SSL_CTX_free(ctx);
        ERR_clear_error();
        if (!ok)
            goto fail;
        if (!a->verify)
            wsb_log(WSB_LOG_WARN, "amqp tls.verify is false: the broker is not authenticated",
                    WSB_LSTR("connector", a->name));
    }
    if (wsb_cbase_init(&a->base, err, errlen) != WSB_OK)
        goto fail;
    *impl = a;
    return WSB_OK;

fail:
    free(a->url_copy);
    free(a->ca_file);
    free(a->cert_file);
    free(a->key_file);
    free(a);
    return WSB_ERR_INVALID;
}

static enum wsb_err start(void *impl)
{
    struct amqp *a = impl;
    return wsb_cmdq_start(a->base.q, run, a);
}

static void destroy(void *impl)
{
    struct amqp *a = impl;
    if (!a)
        return;
    wsb_cbase_stop(a, 0);
    teardown(a);
    while (a->sources) {
        struct source *s = a->sources;
        a->sources = s->next;
        source_free(s);
    }
    while (a->phead) {
        struct pending *p = a->phead;
        a->phead = p->next;
        pending_free(p);
    }
    wsb_cbase_cleanup(&a->base);
    free(a->url_copy);
    free(a->ca_file);
    free(a->cert_file);
    free(a->key_file);
    free(a);
}

static enum wsb_err subscribe(void *impl, uint64_t source_id, const struct wsb_source *src)
{
    struct amqp *a = impl;
    bool ex = *wsb_connector_field(src->fields, "exchange"),
         q = *wsb_connector_field(src->fields, "queue");
    if (ex == q)
        return WSB_ERR_INVALID;
    return wsb_cmdq_subscribe(a->base.q, source_id, src);
}

static const char *const channel_keys[] = {"exchange", "binding_key", "routing_key", "queue", NULL};
static const char *const source_keys[] = {"exchange", "binding_key", "queue", NULL};

const struct wsb_connector_ops wsb_amqp_ops = {
    .type = "amqp",
    .caps = WSB_CAP_ACK | WSB_CAP_PUBLISH, /* from: latest only */
    .channel_keys = channel_keys,
    .source_keys = source_keys,
    .check_config = check_config,
    .check_channel = check_channel,
    .create = create,
    .start = start,
    .stop = wsb_cbase_stop,
    .destroy = destroy,
    .subscribe = subscribe,
    .unsubscribe = wsb_cbase_unsubscribe, /* on failure the channel stays open */
    .publish = wsb_cbase_publish,
    .ack = wsb_cbase_ack,
    .ready = wsb_cbase_ready,
    .messages_in = wsb_cbase_messages_in,
};
