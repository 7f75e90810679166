/* A hand-built worker for unit tests of the session layer: one event base, hub, deflater,
 * reap event, per-IP table and runtime from a config text, and a test clock that the test
 * moves (mono_us / wall_us). Sessions run over bufferevent pairs (wsb_conn_open). Included by
 * one test file each (static functions). */
#ifndef WSB_TESTS_UNIT_BRIDGE_WORKER_FIXTURE_H
#define WSB_TESTS_UNIT_BRIDGE_WORKER_FIXTURE_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "bridge/clock.h"
#include "bridge/delivery.h"
#include "bridge/grants.h"
#include "bridge/hub.h"
#include "bridge/iplimit.h"
#include "bridge/runtime.h"
#include "bridge/session.h"
#include "bridge/sweep.h"
#include "bridge/worker.h"
#include "bridge/ws/ws_deflate.h"
#include "config/config.h"
#include "util/log.h"

/* 2017-07-14: any token minted for this time is long expired by the machine's clock. */
#define T0 1500000000LL

static int64_t mono_us, wall_us;

static int64_t test_mono(void *ctx)
{
    (void)ctx;
    return mono_us;
}

static int64_t test_wall(void *ctx)
{
    (void)ctx;
    return wall_us;
}

static const struct wsb_clock test_clock = {.mono_us = test_mono, .wall_us = test_wall};

struct fixture {
    struct wsb_shared sh;
    struct wsb_worker w;
};

static void fixture_on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wsb_sweep_reap(arg);
}

/* A worker running the configuration `config` (JSON text), with the test clock installed. */
static struct fixture *fixture_new(const char *config)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    struct wsb_config *cfg =
        wsb_config_load_text("test.json", config, strlen(config), false, NULL, NULL);
    assert_non_null(cfg);
    char err[256];
    f->sh.rt = wsb_runtime_new(cfg, err, sizeof(err));
    assert_non_null(f->sh.rt);
    pthread_mutex_init(&f->sh.rt_lock, NULL);
    f->sh.iplimit =
        wsb_iplimit_new(cfg->limits.handshake_rate_per_s, cfg->limits.handshake_rate_burst,
                        cfg->limits.max_connections_per_ip);
    assert_non_null(f->sh.iplimit);
    f->sh.workers = calloc(1, sizeof(*f->sh.workers));
    f->sh.workers[0] = &f->w;
    f->sh.nworkers = 1; /* one hand-built loop the test drives; 2 workers: integration tests */

    struct wsb_worker *w = &f->w;
    w->shared = &f->sh;
    w->rt = wsb_runtime_ref(f->sh.rt);
    w->base = event_base_new();
    w->hub = wsb_hub_new(&wsb_delivery_hub_cbs, &w->metrics);
    w->deflater = wsb_deflater_new(15);
    w->reap_ev = event_new(w->base, -1, 0, fixture_on_reap, w);
    assert_true(w->base && w->hub && w->deflater && w->reap_ev);
    wsb_map_init(&w->pubs);
    mono_us = 1000000;
    wall_us = T0 * 1000000;
    wsb_clock_set(&test_clock);
    wsb_log_init(WSB_LOG_ERROR, true);
    return f;
}

static void fixture_free(struct fixture *f)
{
    struct wsb_worker *w = &f->w;
    while (w->sessions) {
        wsb_session_force_close(w->sessions);
        wsb_sweep_reap(w);
    }
    wsb_grants_forget_shared(w);
    wsb_hub_free(w->hub);
    wsb_deflater_free(w->deflater);
    event_free(w->reap_ev);
    wsb_writer_cleanup(w);
    event_base_free(w->base);
    wsb_map_cleanup(&w->pubs);
    wsb_runtime_unref(w->rt);
    wsb_runtime_unref(f->sh.rt);
    wsb_iplimit_free(f->sh.iplimit);
    pthread_mutex_destroy(&f->sh.rt_lock);
    free(f->sh.workers);
    free(f);
    wsb_clock_set(NULL);
}

#endif
