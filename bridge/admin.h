/* The admin listener: /healthz, /readyz, /metrics, /clients on its own thread and event base
 * (libevent evhttp), so a scrape never competes with the WebSocket loops. */
#ifndef WSB_BRIDGE_ADMIN_H
#define WSB_BRIDGE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/clients.h"
#include "util/err.h"

struct wsb_admin_hooks {
    void *ctx;
    /** True while every event loop answers. @locality admin thread */
    bool (*healthy)(void *ctx);
    /** True when every connector is ready and the bridge is not draining; otherwise writes a
     * JSON object into reason ({"draining":true} or {"connectors":{"events":"..."}}). */
    bool (*ready)(void *ctx, char *reason, size_t reasonlen);
    /** The metrics text, malloc'd (the admin frees it). */
    char *(*metrics)(void *ctx, size_t *len);
    /** GET /clients?top=N&sort=...: the JSON answer, malloc'd; NULL on failure (500). May block
     * the admin thread briefly while the event loops answer. */
    char *(*clients)(void *ctx, size_t top, enum wsb_clients_sort sort, size_t *len);
};

/** /clients?top= default and maximum. */
#define WSB_CLIENTS_TOP_DEFAULT 20
#define WSB_CLIENTS_TOP_MAX 1000

struct wsb_admin;

/** Binds `listen` ("host:port", "[v6]:port"; port 0 picks one) and starts the admin thread.
 * The process must have called evthread_use_pthreads() first. Hooks are copied; any hook may be
 * NULL (healthy/ready then count as true, metrics as empty). Bind errors: WSB_ERR_IO and
 * "admin listen HOST:PORT: <strerror>" in err. */
enum wsb_err wsb_admin_start(const char *listen, const struct wsb_admin_hooks *hooks,
                             struct wsb_admin **out, char *err, size_t errlen);
/** Stops the thread and frees everything. NULL is a no-op. @locality main thread */
void wsb_admin_stop(struct wsb_admin *a);
/** The bound TCP port (useful with "host:0"). */
int wsb_admin_port(const struct wsb_admin *a);
/** Times the admin listener paused accepting because accept() failed (out of descriptors),
 * since the process started; counted in wsbridge_accept_paused_total. @locality any */
uint64_t wsb_admin_accept_paused(void);

#endif
