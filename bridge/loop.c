/* A worker's event loop: its thread, its mail (broker events, drain, reload, stop), the tick,
 * the reap event, /clients requests, and its listener with the accept back-off. It hands
 * accepted sockets to conn and mail to the hub, ops and sessions. */
#include "bridge/loop.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "bridge/clients.h"
#include "bridge/clock.h"
#include "bridge/conn.h"
#include "bridge/delivery.h"
#include "bridge/grants.h"
#include "bridge/hub.h"
#include "bridge/mailbox.h"
#include "bridge/metrics.h"
#include "bridge/ops.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/sweep.h"
#include "bridge/sources.h"
#include "bridge/upgrade.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "util/log.h"

#define TICK_MS 500

/* A draining loop with no session left is done (the server thread waits for every loop). */
static void note_drained(struct wsb_worker *w)
{
    if (w->draining && w->nsessions == 0)
        atomic_store(&w->drained, true);
}

static void on_mail(void *ctx, struct wsb_mail *m)
{
    struct wsb_worker *w = ctx;
    switch (m->type) {
    case WSB_MAIL_MESSAGE: wsb_hub_message(w->hub, m->msg); break;
    case WSB_MAIL_STARTED: wsb_hub_started(w->hub, m->id, m->text); break;
    case WSB_MAIL_RESYNC: wsb_hub_resync(w->hub, m->id, m->text); break;
    case WSB_MAIL_FAILED:
        wsb_sources_forget(w->shared->sources, m->id);
        wsb_hub_failed(w->hub, m->id, m->text, m->text2);
        break;
    case WSB_MAIL_STOPPED: wsb_hub_stopped(w->hub, m->id); break;
    case WSB_MAIL_PUBLISH_DONE: wsb_ops_publish_done(w, m->id, m->ok, m->text); break;
    case WSB_MAIL_CONNECTOR: break;
    case WSB_MAIL_DRAIN:
        w->draining = true;
        /* Close the listening socket: new connections are refused at once instead of
         * waiting in the backlog. */
        if (w->listener) {
            evconnlistener_free(w->listener);
            w->listener = NULL;
        }
        /* Closing never unlinks a session synchronously (freeing happens on the reap
         * event), so walking the list while closing is safe. */
        for (struct wsb_session *s = w->sessions; s; s = wsb_session_next(s))
            wsb_session_drain(s);
        note_drained(w); /* an idle loop is done at once, not at its next tick */
        break;
    case WSB_MAIL_RELOAD: {
        struct wsb_runtime *rt = wsb_shared_runtime(w->shared);
        wsb_runtime_unref(w->rt);
        w->rt = rt;
        for (struct wsb_session *s = w->sessions; s; s = wsb_session_next(s))
            wsb_grants_recheck(s);
        if (w->acl_rt != w->rt)
            wsb_grants_forget_shared(w); /* the old snapshot is not pinned by the cache */
        break;
    }
    case WSB_MAIL_STOP: event_base_loopexit(w->base, NULL); break;
    }
    wsb_mail_free(m);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wsb_sweep_reap(arg);
    note_drained(arg); /* the last session of a draining loop: the exit need not wait a tick */
}

#define GATE_RECHECK_US 5000
#define TRIM_AFTER_BYTES (4u << 20)   /* a drained burst this large is trimmed after */
#define TRIM_AFTER_WRITTEN (1u << 20) /* bytes written since the last trim: churn to give back */
#define TRIM_EVERY_MS 1000            /* the process trims at most this often */

/* The mailbox asks before each mail of a source: hand it over unless a client subscribed to
 * that source is still writing the last ones (gate.h); the mails of a held source are put
 * aside while the others go on. The sources put aside are asked again every few ms, and at
 * once when the last client holding one catches up (session.c). */
static bool gate_open(void *ctx, uint64_t source)
{
    struct wsb_worker *w = ctx;
    if (w->gate.holders == 0)
        return true;
    int64_t now = wsb_now_us();
    if (wsb_gate_source_open(&w->gate, source, now))
        return true;
    w->trim_due = true;
    wsb_worker_handoff_held(w, now);
    if (!evtimer_pending(w->gate_ev, NULL)) {
        struct timeval tv = {0, GATE_RECHECK_US};
        evtimer_add(w->gate_ev, &tv);
    }
    return false;
}

/* Every few ms while some source's mails are put aside: ask again (an allowance may have run
 * out); once none is, the time held is counted. */
static void on_gate(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_worker *w = arg;
    if (!wsb_mailbox_held(w->mailbox)) {
        wsb_worker_handoff_resume(w, wsb_now_us());
        return;
    }
    wsb_mailbox_kick(w->mailbox);
    struct timeval tv = {0, GATE_RECHECK_US};
    evtimer_add(w->gate_ev, &tv);
}

/* One loop at a time: glibc sets its heap up lazily, on its first call, and that set-up is
 * not thread-safe. Under an allocator that replaces malloc (ASan's, TSan's, a preloaded
 * jemalloc) glibc's heap is never used, so that first call is a malloc_trim, and two loops
 * trimming after the same burst ran it at once (an ASan run of test_70 crashed in mtrim at
 * the drain). The heap is the process's (one arena, main.c), so one trim serves every
 * loop: at most one per TRIM_EVERY_MS. Returns whether this call trimmed. */
static bool trim_heap(int64_t now_ms)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static int64_t last_ms = INT64_MIN / 2;
    bool trimmed = false;
    pthread_mutex_lock(&lock);
    if (now_ms - last_ms >= TRIM_EVERY_MS) {
        last_ms = now_ms;
        malloc_trim(0);
        trimmed = true;
    }
    pthread_mutex_unlock(&lock);
    return trimmed;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_worker *w = arg;
    int64_t now = wsb_now_ms();
    atomic_store(&w->last_tick_ms, now);
    int64_t queued = 0;
    for (struct wsb_session *s = w->sessions; s; s = wsb_session_next(s)) {
        wsb_sweep_tick(s, now);
        queued += (int64_t)wsb_session_queued(s);
    }
    atomic_store_explicit(&w->metrics.send_buffer_bytes, queued, memory_order_relaxed);
    wsb_upgrade_tick(w, wsb_now_us());
    atomic_store_explicit(&w->metrics.mailbox_mails, (int64_t)wsb_mailbox_depth(w->mailbox),
                          memory_order_relaxed);
    /* After a burst has drained, hand its freed pages back to the system: glibc keeps free
     * chunks inside its heap until told (malloc_trim madvises them), and the long-lived
     * allocations made meanwhile (a ring, a chain) pin the heap's top, so it rarely shrinks
     * by itself. A burst is seen by what it leaves behind: a closed gate or a long queue
     * (trim_due), a large send-buffer total at a tick, or 1 MiB written since the last trim
     * (a catch-up can drain between two ticks, unseen by the first two). Only on an idle
     * loop, and a trim in the middle of a burst does not end the watch: what is written
     * after it is churn again. */
    if ((uint64_t)queued > w->queued_peak)
        w->queued_peak = (uint64_t)queued;
    uint64_t written = atomic_load_explicit(&w->metrics.bytes_out, memory_order_relaxed);
    bool churned = w->trim_due || w->queued_peak >= TRIM_AFTER_BYTES ||
                   written - w->trim_written >= TRIM_AFTER_WRITTEN;
    if (queued == 0 && churned && !wsb_mailbox_depth(w->mailbox) && trim_heap(now)) {
        w->queued_peak = 0;
        w->trim_due = false;
        w->trim_written = written;
    }
    note_drained(w);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int socklen, void *arg)
{
    (void)l;
    struct wsb_worker *w = arg;
    w->accept_backoff_ms = 0;
    if (w->draining) {
        evutil_closesocket(fd);
        return;
    }
    wsb_conn_accept(w, fd, addr, socklen);
}

#define ACCEPT_BACKOFF_MIN_MS 50
#define ACCEPT_BACKOFF_MAX_MS 1000

/* libevent calls this only for errors it does not retry itself: EMFILE/ENFILE (out of
 * descriptors), ENOBUFS/ENOMEM. The listening socket stays readable, so leaving it armed
 * would spin the loop (and the log). Pause accepting instead, doubling the pause while the
 * failures last; pending clients wait in the kernel's backlog meanwhile. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    struct wsb_worker *w = arg;
    int e = EVUTIL_SOCKET_ERROR();
    uint32_t ms = w->accept_backoff_ms ? w->accept_backoff_ms : ACCEPT_BACKOFF_MIN_MS;
    w->accept_backoff_ms = ms * 2 > ACCEPT_BACKOFF_MAX_MS ? ACCEPT_BACKOFF_MAX_MS : ms * 2;
    evconnlistener_disable(l);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(w->accept_ev, &tv);
    wsb_metric_add(w->metrics.accept_paused, 1);
    wsb_log(WSB_LOG_WARN, "accept failed; accepting paused",
            WSB_LSTR("error", evutil_socket_error_to_string(e)), WSB_LUINT("pause_ms", ms),
            WSB_LUINT("worker", w->idx));
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wsb_worker *w = arg;
    if (w->listener && !w->draining) /* the drain frees the listener */
        evconnlistener_enable(w->listener);
}

void wsb_loop_clients_kick(struct wsb_worker *w)
{
    uint64_t one = 1;
    while (write(w->clients_efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void *wsb_loop_main(void *arg)
{
    struct wsb_worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

/* An admin /clients request reached this loop (outside the mailbox, so a mailbox held back
 * by flow control does not hold the answer back too). */
static void on_clients(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct wsb_worker *w = arg;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
        ;
    struct wsb_clients_req *r = atomic_exchange(&w->clients_req, NULL);
    if (r) {
        wsb_clients_collect(w, r);
        wsb_clients_req_unref(r);
    }
}

enum wsb_err wsb_loop_new(struct wsb_shared *sh, unsigned idx, const struct sockaddr *sa, int salen,
                          struct wsb_worker **out, char *err, size_t errlen)
{
    struct wsb_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return WSB_ERR_NOMEM;
    w->idx = idx;
    w->clients_efd = -1;
    w->shared = sh;
    w->rt = wsb_shared_runtime(sh);
    wsb_map_init(&w->pubs);
    /* No lock on the base: only this loop's thread calls libevent on it (other threads reach
     * it through eventfds: the mailbox, /clients). With locks every event_add/del/pending
     * took a mutex: one per frame added to a socket buffer, ~13 % of a fan-out's CPU. */
    struct event_config *ec = event_config_new();
    if (ec && event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK) == 0)
        w->base = event_base_new_with_config(ec);
    if (ec)
        event_config_free(ec);
    w->clients_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->base || w->clients_efd < 0)
        goto nomem;
    w->mailbox = wsb_mailbox_new(w->base, on_mail, w);
    w->hub = wsb_hub_new(&wsb_delivery_hub_cbs, &w->metrics);
    w->deflater = wsb_deflater_new(15);
    w->reap_ev = event_new(w->base, -1, 0, on_reap, w);
    w->tick_ev = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    w->accept_ev = event_new(w->base, -1, 0, on_accept_resume, w);
    w->clients_ev = event_new(w->base, w->clients_efd, EV_READ | EV_PERSIST, on_clients, w);
    w->gate_ev = evtimer_new(w->base, on_gate, w);
    wsb_gate_init(&w->gate);
    wsb_gate_set_hold_cb(&w->gate, wsb_session_gate_hold, w);
    if (!w->mailbox || !w->hub || !w->deflater || !w->reap_ev || !w->tick_ev || !w->accept_ev ||
        !w->clients_ev || !w->gate_ev)
        goto nomem;
    wsb_mailbox_set_gate(w->mailbox, gate_open);
    event_add(w->clients_ev, NULL);
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(w->tick_ev, &tv);
    atomic_store(&w->last_tick_ms, wsb_now_ms());
    w->listener = evconnlistener_new_bind(w->base, on_accept, w,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                              LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                          1024, sa, salen);
    if (!w->listener) {
        snprintf(err, errlen, "listen %s: %s", sh->rt->cfg->listen, strerror(errno));
        *out = w;
        return WSB_ERR_IO;
    }
    evconnlistener_set_error_cb(w->listener, on_accept_error);
    wsb_conn_listener_init(evconnlistener_get_fd(w->listener));
    *out = w;
    return WSB_OK;
nomem:
    snprintf(err, errlen, "out of memory");
    *out = w;
    return WSB_ERR_NOMEM;
}

void wsb_loop_free(struct wsb_worker *w)
{
    if (!w)
        return;
    /* Sessions left after the drain timeout: the loop is stopped, free them here. */
    while (w->sessions) {
        struct wsb_session *s = w->sessions;
        wsb_session_force_close(s);
        wsb_sweep_reap(w);
    }
    wsb_sweep_reap(w);
    wsb_grants_forget_shared(w);
    if (w->listener)
        evconnlistener_free(w->listener);
    wsb_mailbox_free(w->mailbox);
    wsb_hub_free(w->hub);
    if (w->deflater)
        wsb_deflater_free(w->deflater);
    if (w->reap_ev)
        event_free(w->reap_ev);
    if (w->tick_ev)
        event_free(w->tick_ev);
    if (w->accept_ev)
        event_free(w->accept_ev);
    if (w->clients_ev)
        event_free(w->clients_ev);
    if (w->clients_efd >= 0)
        close(w->clients_efd);
    if (w->gate_ev)
        event_free(w->gate_ev);
    wsb_gate_cleanup(&w->gate);
    wsb_writer_cleanup(w);
    wsb_clients_req_unref(atomic_exchange(&w->clients_req, NULL));
    wsb_map_cleanup(&w->pubs);
    if (w->base)
        event_base_free(w->base);
    wsb_runtime_unref(w->rt);
    free(w);
}
