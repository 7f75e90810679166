/* Server: builds the workers (loop.c runs them), connectors, admin hooks; reload and drain on
 * signals. */
#include "bridge/server.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <event2/util.h>

#include "auth/jwt.h"
#include "bridge/admin.h"
#include "bridge/clients.h"
#include "bridge/clock.h"
#include "bridge/ids.h"
#include "bridge/iplimit.h"
#include "bridge/loop.h"
#include "bridge/mailbox.h"
#include "bridge/metrics.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/sweep.h"
#include "bridge/sources.h"
#include "bridge/tls.h"
#include "bridge/worker.h"
#include "config/config.h"
#include "connectors/connector.h"
#include "util/log.h"

#define HEALTHY_WITHIN_MS 5000
static void log_tls(const struct wsb_runtime *rt);

#define CLIENTS_WAIT_MS 500 /* how long GET /clients waits for the event loops */

struct wsb_server {
    struct wsb_shared sh;
    struct wsb_server_opts opts;
    char *config_file;
    struct wsb_tls_stamp tls_stamp; /* the TLS files as last seen by the watch */
    int64_t tls_checked_ms;
    struct wsb_admin *admin;
    struct wsb_sink sink;
    struct wsb_loop_metrics **loop_metrics;
};

/* ---- admin hooks ------------------------------------------------------------------ */

static bool hook_healthy(void *ctx)
{
    struct wsb_server *s = ctx;
    int64_t now = wsb_now_ms();
    for (unsigned i = 0; i < s->sh.nworkers; i++)
        if (now - atomic_load(&s->sh.workers[i]->last_tick_ms) > HEALTHY_WITHIN_MS)
            return false;
    return true;
}

static bool hook_ready(void *ctx, char *reason, size_t len)
{
    struct wsb_server *s = ctx;
    if (atomic_load(&s->sh.draining)) {
        snprintf(reason, len, "{\"draining\":true}");
        return false;
    }
    bool ok = true;
    size_t off = (size_t)snprintf(reason, len, "{\"connectors\":{");
    bool first = true;
    for (size_t i = 0; i < s->sh.nconnectors; i++) {
        char why[160];
        struct wsb_connector *c = s->sh.connectors[i];
        if (wsb_connector_ready(c, why, sizeof(why)))
            continue;
        ok = false;
        for (char *p = why; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
                *p = ' ';
        if (off < len)
            off += (size_t)snprintf(reason + off, len - off, "%s\"%s\":\"%s\"", first ? "" : ",",
                                    c->name, why);
        first = false;
    }
    if (off < len)
        off += (size_t)snprintf(reason + off, len - off, "}");
    /* An event loop that has not ticked for a while cannot serve its clients either. */
    int64_t now = wsb_now_ms();
    first = true;
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        int64_t quiet = now - atomic_load(&s->sh.workers[i]->last_tick_ms);
        if (quiet <= HEALTHY_WITHIN_MS)
            continue;
        ok = false;
        if (off < len)
            off += (size_t)snprintf(reason + off, len - off,
                                    "%s\"%u\":\"event loop not answering for %lld ms\"",
                                    first ? ",\"workers\":{" : ",", i, (long long)quiet);
        first = false;
    }
    if (!first && off < len)
        off += (size_t)snprintf(reason + off, len - off, "}");
    if (off < len)
        snprintf(reason + off, len - off, "}");
    return ok;
}

static void metrics_connector(void *ctx, size_t i, const char **name, uint64_t *in, int *up)
{
    struct wsb_server *s = ctx;
    struct wsb_connector *c = s->sh.connectors[i];
    char why[8];
    *name = c->name;
    *in = wsb_connector_messages_in(c);
    *up = wsb_connector_ready(c, why, sizeof(why)) ? 1 : 0;
}

static bool metrics_formats(void *ctx, size_t i, const char **name, struct wsb_format_stats *out)
{
    struct wsb_server *s = ctx;
    *name = s->sh.connectors[i]->name;
    return wsb_connector_format_stats(s->sh.connectors[i], out);
}

static size_t metrics_connector_stats(void *ctx, size_t i, struct wsb_connector_stat *out,
                                      size_t max)
{
    struct wsb_server *s = ctx;
    return wsb_connector_stats(s->sh.connectors[i], out, max);
}

static void metrics_sources(void *ctx, uint64_t *started, uint64_t *stopped, size_t *reading,
                            size_t *lingering)
{
    struct wsb_server *s = ctx;
    wsb_sources_stats(s->sh.sources, started, stopped, reading, lingering);
}

/* A lingering source was stopped by the registry's thread: its loops forget it. */
static void source_lingered(void *ctx, uint64_t id)
{
    wsb_worker_broadcast_source(ctx, WSB_MAIL_STOPPED, id);
}

/* A loop takes a shared source it was not fed (sources.h): it learns where its records
 * resume, in order with them. Under the registry's lock: only posts. */
static void source_resync(void *ctx, unsigned loop, uint64_t id, const char *positions)
{
    wsb_worker_post(ctx, 1u << loop, WSB_MAIL_RESYNC, id, NULL, positions, NULL, true);
}

static char *hook_metrics(void *ctx, size_t *len)
{
    struct wsb_server *s = ctx;
    struct wsb_metrics_source src = {
        .loops = s->loop_metrics,
        .nloops = s->sh.nworkers,
        .admin_accept_paused = wsb_admin_accept_paused(),
        .nconnectors = s->sh.nconnectors,
        .connector = metrics_connector,
        .formats = metrics_formats,
        .connector_stats = metrics_connector_stats,
        .sources = metrics_sources,
        .ctx = s,
    };
    return wsb_metrics_render(&src, len);
}

static char *hook_clients(void *ctx, size_t top, enum wsb_clients_sort sort, size_t *len)
{
    struct wsb_server *s = ctx;
    struct wsb_clients_req *r = wsb_clients_req_new(s->sh.nworkers, top, sort);
    if (r == NULL)
        return NULL;
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        struct wsb_worker *w = s->sh.workers[i];
        /* A request still there was never picked up; whoever asked has stopped waiting. */
        wsb_clients_req_unref(atomic_exchange(&w->clients_req, wsb_clients_req_ref(r)));
        wsb_loop_clients_kick(w);
    }
    wsb_clients_req_wait(r, CLIENTS_WAIT_MS);
    char *out = wsb_clients_req_render(r, len);
    wsb_clients_req_unref(r);
    return out;
}

/* ---- construction ----------------------------------------------------------------- */

void wsb_server_block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static unsigned worker_count(const struct wsb_config *cfg)
{
    unsigned n = cfg->workers;
    if (n == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (unsigned)cpus : 1;
    }
    if (n > WSB_MAX_LOOPS)
        n = WSB_MAX_LOOPS;
    return n;
}

/* Each connection holds one descriptor; the rest of the process (listeners, event loops,
 * mailboxes, connector clients and their broker sockets, the admin server, files) needs
 * some more. A conservative estimate: only used to warn. */
#define FD_RESERVE_BASE 64
#define FD_RESERVE_PER_WORKER 8

/* Raises the soft RLIMIT_NOFILE to the hard limit: the default soft 1024 would cap a bridge
 * far below max_connections. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rlim_t before = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    /* An infinite hard limit is refused for NOFILE (fs.nr_open caps it): try 1M. */
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && rl.rlim_max == RLIM_INFINITY) {
        rl.rlim_cur = 1u << 20;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != before)
        wsb_log(WSB_LOG_DEBUG, "descriptor limit raised", WSB_LUINT("from", (uint64_t)before),
                WSB_LUINT("to", (uint64_t)rl.rlim_cur));
}

/* Says so when max_connections cannot be reached with the descriptors we have: the bridge
 * would hit EMFILE (and pause accepting) first. */
static void check_fd_budget(const struct wsb_config *cfg, unsigned nworkers)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    uint64_t reserve = FD_RESERVE_BASE + (uint64_t)FD_RESERVE_PER_WORKER * nworkers;
    uint64_t usable = rl.rlim_cur > reserve ? (uint64_t)rl.rlim_cur - reserve : 0;
    if (cfg->limits.max_connections > usable)
        wsb_log(WSB_LOG_WARN,
                "limits.max_connections exceeds what the descriptor limit allows; raise the "
                "hard RLIMIT_NOFILE (ulimit -Hn, LimitNOFILE=)",
                WSB_LUINT("max_connections", cfg->limits.max_connections),
                WSB_LUINT("nofile", (uint64_t)rl.rlim_cur), WSB_LUINT("usable", usable));
}

/* Says so when the largest message a client may publish cannot fit a subscriber's send
 * buffer: relayed to a subscriber of this bridge it is over hard_bytes at once (the subscriber
 * is closed with 4408, or the message dropped). A warning, not an error: max_message_bytes
 * bounds what clients send, and clients publishing large records that only backends read
 * is a sound setup. */
static void check_send_buffer(const struct wsb_config *cfg)
{
    const struct wsb_limits *l = &cfg->limits;
    if (l->send_hard_bytes < l->max_message_bytes)
        wsb_log(WSB_LOG_WARN,
                "limits.send_buffer.hard_bytes is below limits.max_message_bytes: a message "
                "that large published by a client never reaches a subscriber (closed with "
                "4408 or the message dropped)",
                WSB_LSTR("path", "limits.send_buffer.hard_bytes"),
                WSB_LUINT("hard_bytes", l->send_hard_bytes),
                WSB_LUINT("max_message_bytes", l->max_message_bytes));
}

enum wsb_err wsb_server_new(struct wsb_config *cfg, const struct wsb_server_opts *opts,
                            struct wsb_server **out, char *err, size_t errlen)
{
    enum wsb_err rc = WSB_ERR_NOMEM;
    struct wsb_server *s = calloc(1, sizeof(*s));
    if (!s) {
        wsb_config_unref(cfg);
        snprintf(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    s->opts = *opts;
    s->sh.demo_page = opts->demo_page;
    pthread_mutex_init(&s->sh.rt_lock, NULL);
    atomic_init(&s->sh.connections, 0);
    atomic_init(&s->sh.draining, false);
    if (opts->config_file && !(s->config_file = strdup(opts->config_file)))
        goto fail;

    s->sh.rt = wsb_runtime_new(cfg, err, errlen);
    if (!s->sh.rt) {
        wsb_config_unref(cfg);
        rc = WSB_ERR_INVALID;
        goto fail;
    }
    s->sh.tls = s->sh.rt->tls != NULL;
    log_tls(s->sh.rt);

    wsb_worker_sink_init(&s->sink, &s->sh);
    s->sh.nconnectors = cfg->nconnectors;
    s->sh.connectors = calloc(cfg->nconnectors ? cfg->nconnectors : 1, sizeof(*s->sh.connectors));
    if (!s->sh.connectors)
        goto fail;
    for (size_t i = 0; i < cfg->nconnectors; i++) {
        const struct wsb_connector_conf *cc = &cfg->connectors[i];
        char cerr[256] = "";
        rc = wsb_connector_new(cc->type, cc->name, cc->conf, &s->sink, &s->sh.connectors[i], cerr,
                               sizeof(cerr));
        if (rc != WSB_OK) {
            snprintf(err, errlen, "connector %s: %s", cc->name, cerr);
            goto fail;
        }
    }

    const struct wsb_limits *l = &cfg->limits;
    s->sh.iplimit = wsb_iplimit_new(l->handshake_rate_per_s, l->handshake_rate_burst,
                                    l->max_connections_per_ip);
    if (s->sh.iplimit)
        wsb_iplimit_set_ipv6_prefix(s->sh.iplimit, l->ipv6_prefix);
    unsigned n = worker_count(cfg);
    raise_nofile();
    check_fd_budget(cfg, n);
    check_send_buffer(cfg);
    s->sh.sources = wsb_sources_new(s->sh.connectors, s->sh.nconnectors, n);
    if (s->sh.sources) {
        wsb_sources_set_stopped_cb(s->sh.sources, source_lingered, &s->sh);
        wsb_sources_set_resync_cb(s->sh.sources, source_resync, &s->sh);
        wsb_sources_set_linger(s->sh.sources, l->source_linger_ms);
    }
    s->sh.workers = calloc(n, sizeof(*s->sh.workers));
    s->loop_metrics = calloc(n, sizeof(*s->loop_metrics));
    if (!s->sh.iplimit || !s->sh.sources || !s->sh.workers || !s->loop_metrics) {
        rc = WSB_ERR_NOMEM;
        goto fail;
    }

    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(cfg->listen, (struct sockaddr *)&ss, &sslen) < 0) {
        snprintf(err, errlen, "listen: cannot parse address \"%s\"", cfg->listen);
        rc = WSB_ERR_INVALID;
        goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        rc = wsb_loop_new(&s->sh, i, (struct sockaddr *)&ss, sslen, &s->sh.workers[i], err, errlen);
        s->sh.nworkers = i + 1;
        if (rc != WSB_OK)
            goto fail;
        s->loop_metrics[i] = &s->sh.workers[i]->metrics;
    }
    *out = s;
    return WSB_OK;
fail:
    wsb_server_free(s);
    return rc == WSB_OK ? WSB_ERR_INTERNAL : rc;
}

void wsb_server_free(struct wsb_server *s)
{
    if (!s)
        return;
    if (s->admin)
        wsb_admin_stop(s->admin);
    wsb_sources_shutdown(s->sh.sources); /* its thread talks to loops and connectors */
    for (unsigned i = 0; i < s->sh.nworkers; i++)
        wsb_loop_free(s->sh.workers[i]);
    for (size_t i = 0; i < s->sh.nconnectors; i++)
        if (s->sh.connectors[i])
            wsb_connector_free(s->sh.connectors[i]);
    wsb_sources_free(s->sh.sources);
    if (s->sh.iplimit)
        wsb_iplimit_free(s->sh.iplimit);
    free(s->sh.workers);
    free(s->sh.connectors);
    free(s->loop_metrics);
    wsb_runtime_unref(s->sh.rt);
    pthread_mutex_destroy(&s->sh.rt_lock);
    free(s->config_file);
    free(s);
}

/* ---- running ---------------------------------------------------------------------- */

static void log_config_error(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    wsb_log(WSB_LOG_ERROR, "invalid configuration", WSB_LSTR("file", file), WSB_LSTR("path", path),
            WSB_LSTR("error", msg));
}

/* Which certificate the listener now serves (start and every reload). */
static void log_tls(const struct wsb_runtime *rt)
{
    if (!rt->tls)
        return;
    char what[512];
    wsb_tls_ctx_describe(rt->tls, what, sizeof(what));
    wsb_log(WSB_LOG_INFO, "tls certificate loaded", WSB_LSTR("certificate", what),
            WSB_LSTR("client_ca", rt->cfg->tls_client_ca));
}

static void log_restart_needed(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    wsb_log(WSB_LOG_WARN, "reload: setting needs a restart", WSB_LSTR("file", file),
            WSB_LSTR("path", path), WSB_LSTR("detail", msg));
}

static bool same_connectors(const struct wsb_config *a, const struct wsb_config *b)
{
    if (a->nconnectors != b->nconnectors)
        return false;
    for (size_t i = 0; i < a->nconnectors; i++) {
        if (strcmp(a->connectors[i].name, b->connectors[i].name) != 0 ||
            strcmp(a->connectors[i].type, b->connectors[i].type) != 0 ||
            !json_equal(a->connectors[i].conf, b->connectors[i].conf))
            return false;
    }
    return true;
}

static void reload(struct wsb_server *s)
{
    if (!s->config_file) {
        wsb_log0(WSB_LOG_WARN, "SIGHUP ignored: no configuration file to reload");
        return;
    }
    struct wsb_config *cfg = wsb_config_load(s->config_file, s->opts.demo, log_config_error, NULL);
    if (!cfg) {
        wsb_log(WSB_LOG_ERROR, "reload failed; keeping the running configuration",
                WSB_LSTR("file", s->config_file));
        return;
    }
    struct wsb_runtime *old = wsb_shared_runtime(&s->sh);
    /* Channels name connectors by index: a different connector set cannot be swapped in
     * under live subscriptions. Other restart-only settings are logged and keep their old
     * effect (listeners, workers, admin). */
    bool same = same_connectors(old->cfg, cfg);
    if (same)
        wsb_config_restart_needed(old->cfg, cfg, log_restart_needed, NULL);
    /* The listener's protocol is fixed at start: certificates may change, wss:// vs ws:// not. */
    bool same_tls = (old->cfg->tls_cert != NULL) == (cfg->tls_cert != NULL);
    wsb_runtime_unref(old);
    if (!same || !same_tls) {
        wsb_config_unref(cfg);
        wsb_log0(WSB_LOG_ERROR, !same ? "reload failed: connectors changed; a restart is needed "
                                        "for that; keeping the running configuration"
                                      : "reload failed: tls was turned on or off; a restart is "
                                        "needed for that; keeping the running configuration");
        return;
    }
    char err[256] = "";
    struct wsb_runtime *rt = wsb_runtime_new(cfg, err, sizeof(err));
    if (!rt) {
        wsb_config_unref(cfg);
        wsb_log(WSB_LOG_ERROR, "reload failed; keeping the running configuration",
                WSB_LSTR("error", err));
        return;
    }
    pthread_mutex_lock(&s->sh.rt_lock);
    struct wsb_runtime *prev = s->sh.rt;
    s->sh.rt = rt;
    pthread_mutex_unlock(&s->sh.rt_lock);
    wsb_runtime_unref(prev);
    log_tls(rt);
    const struct wsb_limits *l = &cfg->limits;
    wsb_iplimit_reconfigure(s->sh.iplimit, l->handshake_rate_per_s, l->handshake_rate_burst,
                            l->max_connections_per_ip);
    wsb_iplimit_set_ipv6_prefix(s->sh.iplimit, l->ipv6_prefix);
    wsb_sources_set_linger(s->sh.sources, l->source_linger_ms);
    check_fd_budget(cfg, s->sh.nworkers);
    check_send_buffer(cfg);
    if (cfg->log_level)
        wsb_log_init((enum wsb_log_level)wsb_log_level_parse(cfg->log_level), cfg->log_json);
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        struct wsb_mail *m = wsb_mail_new(WSB_MAIL_RELOAD, 0, NULL, NULL, NULL, true);
        if (m)
            wsb_mailbox_post(s->sh.workers[i]->mailbox, m);
    }
    wsb_log(WSB_LOG_INFO, "configuration reloaded", WSB_LSTR("file", s->config_file));
}

/* tls.watch_interval_ms: certificate, key or CA files that changed on disk reload the
 * configuration as SIGHUP would (cert-manager renewing a mounted Secret, certbot replacing a
 * file). A change that fails to load is logged once; the next change tries again. `baseline`
 * only records what the files look like now (at start and after a reload). */
static void tls_watch(struct wsb_server *s, bool baseline)
{
    struct wsb_runtime *rt = wsb_shared_runtime(&s->sh);
    const struct wsb_config *cfg = rt->cfg;
    int64_t now = wsb_now_ms();
    bool due = baseline || (cfg->tls_watch_ms && now - s->tls_checked_ms >= cfg->tls_watch_ms);
    if (!rt->tls || !s->config_file || !due) {
        wsb_runtime_unref(rt);
        return;
    }
    s->tls_checked_ms = now;
    struct wsb_tls_stamp st;
    wsb_tls_stamp(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, &st);
    wsb_runtime_unref(rt);
    bool changed = !wsb_tls_stamp_equal(&st, &s->tls_stamp);
    s->tls_stamp = st;
    if (baseline || !changed)
        return;
    wsb_log(WSB_LOG_INFO, "tls files changed; reloading", WSB_LSTR("file", s->config_file));
    reload(s);
    tls_watch(s, true); /* the reloaded configuration may name other files */
}

static void post_all(struct wsb_server *s, enum wsb_mail_type type)
{
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        struct wsb_mail *m = wsb_mail_new(type, 0, NULL, NULL, NULL, true);
        if (m)
            wsb_mailbox_post(s->sh.workers[i]->mailbox, m);
    }
}

static bool all_drained(struct wsb_server *s)
{
    for (unsigned i = 0; i < s->sh.nworkers; i++)
        if (!atomic_load(&s->sh.workers[i]->drained))
            return false;
    return true;
}

/* A start that fails after connectors began: their threads stop before the caller frees
 * the loops, whose mailboxes they post to. */
static int start_failed(struct wsb_server *s, size_t started)
{
    for (size_t i = 0; i < started; i++)
        wsb_connector_stop(s->sh.connectors[i], 1000);
    return 1;
}

int wsb_server_run(struct wsb_server *s)
{
    const struct wsb_config *cfg = s->sh.rt->cfg;
    char err[256] = "";
    for (size_t i = 0; i < s->sh.nconnectors; i++) {
        if (wsb_connector_start(s->sh.connectors[i]) != WSB_OK) {
            fprintf(stderr, "wsbridge: connector %s failed to start\n", s->sh.connectors[i]->name);
            return start_failed(s, i);
        }
    }
    if (cfg->admin_listen) {
        struct wsb_admin_hooks hooks = {
            .ctx = s,
            .healthy = hook_healthy,
            .ready = hook_ready,
            .metrics = hook_metrics,
            .clients = hook_clients,
        };
        if (wsb_admin_start(cfg->admin_listen, &hooks, &s->admin, err, sizeof(err)) != WSB_OK) {
            fprintf(stderr, "wsbridge: %s\n", err);
            return start_failed(s, s->sh.nconnectors);
        }
    }
    unsigned started = 0;
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        if (pthread_create(&s->sh.workers[i]->thread, NULL, wsb_loop_main, s->sh.workers[i]) != 0)
            break;
        started++;
    }
    if (started < s->sh.nworkers) {
        fprintf(stderr, "wsbridge: cannot start worker threads\n");
        post_all(s, WSB_MAIL_STOP);
        for (unsigned i = 0; i < started; i++)
            pthread_join(s->sh.workers[i]->thread, NULL);
        return start_failed(s, s->sh.nconnectors);
    }
    wsb_log(WSB_LOG_INFO, "listening", WSB_LSTR("listen", cfg->listen), WSB_LSTR("path", cfg->path),
            WSB_LSTR("admin", cfg->admin_listen), WSB_LUINT("workers", s->sh.nworkers));

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    tls_watch(s, true);
    for (;;) {
        /* Wake at least once a second to look at the TLS files. */
        struct timespec second = {1, 0};
        int sig = sigtimedwait(&set, NULL, &second);
        if (sig < 0) {
            tls_watch(s, false);
            continue;
        }
        if (sig == SIGHUP) {
            reload(s);
            tls_watch(s, true);
            continue;
        }
        break;
    }

    /* Drain: stop accepting, /readyz 503, close 1001 to everyone, wait. */
    struct wsb_runtime *rt = wsb_shared_runtime(&s->sh);
    uint32_t drain_ms = rt->cfg->drain_timeout_ms;
    wsb_runtime_unref(rt);
    wsb_log(WSB_LOG_INFO, "draining", WSB_LINT("timeout_ms", drain_ms));
    atomic_store(&s->sh.draining, true);
    post_all(s, WSB_MAIL_DRAIN);
    int64_t deadline = wsb_now_ms() + drain_ms;
    struct timespec pause = {0, 20 * 1000 * 1000};
    while (!all_drained(s) && wsb_now_ms() < deadline) {
        struct timespec zero = {0, 0};
        sigset_t again;
        sigemptyset(&again);
        sigaddset(&again, SIGTERM);
        sigaddset(&again, SIGINT);
        if (sigtimedwait(&again, NULL, &zero) > 0)
            break; /* a second signal: stop now */
        nanosleep(&pause, NULL);
    }
    post_all(s, WSB_MAIL_STOP);
    for (unsigned i = 0; i < s->sh.nworkers; i++)
        pthread_join(s->sh.workers[i]->thread, NULL);
    /* Sessions left behind are freed now (releasing their sources), then connectors flush. */
    for (unsigned i = 0; i < s->sh.nworkers; i++) {
        struct wsb_worker *w = s->sh.workers[i];
        while (w->sessions) {
            wsb_session_force_close(w->sessions);
            wsb_sweep_reap(w);
        }
    }
    int64_t left = deadline - wsb_now_ms();
    for (size_t i = 0; i < s->sh.nconnectors; i++)
        wsb_connector_stop(s->sh.connectors[i], left > 1000 ? (uint32_t)left : 1000);
    wsb_log0(WSB_LOG_INFO, "stopped");
    return 0;
}
