/* An event-loop thread ("worker") and the process-wide state its sessions share. Internal to
 * bridge/: server.c creates workers, the session layer (conn, upgrade, ops, session) runs on
 * them. Each worker owns its sessions, its hub, its mailbox and its metrics; a session never
 * moves between workers. worker.c holds what the session layer asks of the shared state:
 * the current runtime snapshot and mail to other loops. */
#ifndef WSB_BRIDGE_WORKER_H
#define WSB_BRIDGE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/gate.h"
#include "bridge/metrics.h"
#include "bridge/writer.h"
#include "util/map.h"

struct event;
struct event_base;
struct evconnlistener;
struct wsb_acl;
struct wsb_auth;
struct wsb_config;
struct wsb_clients_req;
struct wsb_connector;
struct wsb_deflater;
struct wsb_hub;
struct wsb_iplimit;
struct wsb_mailbox;
struct wsb_msg;
struct wsb_runtime;
struct wsb_session;
struct wsb_sink;
struct wsb_sources;
struct wsb_worker;

/** What every worker shares. Owned by the server. */
struct wsb_shared {
    struct wsb_sources *sources;
    struct wsb_connector **connectors; /* same order as cfg->connectors */
    size_t nconnectors;
    struct wsb_iplimit *iplimit;
    atomic_int_fast64_t connections; /* open WebSocket sessions, all workers */
    atomic_bool draining;
    struct wsb_worker **workers;
    unsigned nworkers;
    pthread_mutex_t rt_lock;
    struct wsb_runtime *rt; /* current snapshot (under rt_lock) */
    const char *demo_page;  /* served at / in --demo, else NULL */
    const char *demo_token; /* printed hint, NULL unless --demo */
    bool tls;               /* the WebSocket listener speaks TLS (fixed at start) */
};

/** Takes a reference to the current runtime. @locality any */
struct wsb_runtime *wsb_shared_runtime(struct wsb_shared *sh);

struct wsb_worker {
    unsigned idx;
    struct wsb_shared *shared;
    struct event_base *base;
    pthread_t thread;
    struct evconnlistener *listener;
    struct wsb_mailbox *mailbox;
    struct wsb_hub *hub;
    struct wsb_deflater *deflater;
    struct wsb_loop_metrics metrics;
    struct wsb_runtime *rt;       /* the loop's current snapshot */
    struct wsb_session *sessions; /* intrusive list */
    size_t nsessions;
    struct wsb_session *reap;   /* sessions to free at a safe point */
    struct wsb_session *detach; /* closing sessions whose subscriptions end at a safe point */
    struct event *reap_ev;
    struct event *tick_ev;
    struct event *accept_ev;  /* re-arms the listener after an accept() failure back-off */
    struct event *clients_ev; /* reads clients_efd: the admin thread's GET /clients */
    int clients_efd;          /* eventfd the admin thread writes (the base has no lock) */
    _Atomic(struct wsb_clients_req *) clients_req; /* the request it answers (a reference) */
    uint32_t accept_backoff_ms;                    /* next back-off; 0 after a successful accept */
    struct wsb_writer wr;  /* plaintext sessions' dirty list and flush event (writer.h) */
    struct wsb_gate gate;  /* hand-off gate: broker messages wait while clients catch up */
    struct event *gate_ev; /* re-checks a closed gate */
    int64_t gate_held_us;  /* since when some source's mails are held; 0 while none is */
    uint64_t queued_peak;  /* largest send-buffer total since the last trim */
    bool trim_due;         /* a burst was queued since the last trim (see loop.c on_tick) */
    uint64_t trim_written; /* metrics.bytes_out at this loop's last trim */
    atomic_int_fast64_t last_tick_ms;
    atomic_bool drained; /* draining and no session left */
    bool draining;
    struct wsb_map pubs; /* publish cookie -> struct wsb_pending_pub (session.h) */
    /* The ACL shared by the sessions whose grants need no claim (grants.c), compiled from
     * acl_rt's config (a reference, so no later snapshot can reuse its address). */
    struct wsb_acl *acl;
    struct wsb_runtime *acl_rt;
    uint64_t next_cookie;
    uint64_t next_session;
    int64_t refusal_logged_us;     /* when the last 429/503 was logged in full (upgrade.c) */
    uint64_t refusals_unlogged[2]; /* 429s and 503s counted since, not logged one by one */
};

/** Posts one mail of `type` to every worker whose bit is set in `mask`; each gets its own
 * reference to `msg` (borrowed) and copies of the texts. Mails that cannot be allocated are
 * dropped. @locality any */
void wsb_worker_post(struct wsb_shared *sh, uint64_t mask, int type, uint64_t id,
                     struct wsb_msg *msg, const char *text, const char *text2, bool ok);

/** Fills `sink` so that connector events become mail: a message or a source's start or
 * failure to the loops in the source id's mask, a publish answer to the loop in its cookie.
 * The sink's callbacks run on connector threads. */
void wsb_worker_sink_init(struct wsb_sink *sink, struct wsb_shared *sh);

/** Posts a mail of `type` for source `id` to every worker in the id's loop mask.
 * @locality any */
void wsb_worker_broadcast_source(struct wsb_shared *sh, int type, uint64_t id);

/** The hand-off gate put a source's mails aside at `now_us`: the holding time starts
 * (idempotent). @locality loop */
void wsb_worker_handoff_held(struct wsb_worker *w, int64_t now_us);
/** No source's mails are put aside any more at `now_us`: the time since the first was is
 * counted in wsbridge_handoff_held_seconds_total; the mailbox is asked again. @locality loop */
void wsb_worker_handoff_resume(struct wsb_worker *w, int64_t now_us);

#endif
