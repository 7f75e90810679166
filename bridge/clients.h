/* Client introspection for the admin listener's GET /clients: which connections have the largest
 * send buffers, the largest lag or the longest life. Metrics never carry per-client labels, so
 * this is where an operator finds the one client that misbehaves.
 *
 * The admin thread creates a request, hands each worker a reference and makes the worker's
 * clients event active; each worker, on its own loop, picks its top N sessions, fills their
 * snapshots and hands them over (one mutex, taken once per worker and request — nothing on the
 * per-message path); the admin thread waits a bounded time and renders the merged top N as JSON. */
#ifndef WSB_BRIDGE_CLIENTS_H
#define WSB_BRIDGE_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wsb_clients_sort {
    WSB_CLIENTS_SEND_BUFFER, /* buffered bytes, largest first */
    WSB_CLIENTS_LAG,         /* lag, largest first */
    WSB_CLIENTS_AGE,         /* connection age, oldest first */
};

/** Parses "send_buffer" | "lag" | "age". Returns false for anything else. */
bool wsb_clients_sort_parse(const char *s, enum wsb_clients_sort *out);

/** One connection's snapshot. Strings are owned by the snapshot. */
struct wsb_client_info {
    char session[24]; /* the welcome's session id */
    char *sub;        /* token subject, NULL when anonymous */
    char peer[64];    /* "ip:port" / "[v6]:port" */
    unsigned worker;  /* event loop index */
    char **channels;  /* subscribed channels */
    size_t nchannels;
    uint64_t buffered_bytes; /* queued in user space + socket buffer, not yet taken by the kernel */
    uint64_t dropped;        /* messages dropped for this client by the backpressure policy */
    uint64_t messages_out;   /* message frames sent */
    int64_t lag_ms;          /* broker timestamp of the oldest queued message to now; 0 if none */
    int64_t age_ms;          /* since the upgrade */
    int64_t age_us;          /* the same in microseconds (ordering; not in the JSON) */
    int64_t over_soft_ms;    /* how long the send buffer has been over the soft limit; 0 if not */
    bool tls;                /* connected over TLS */
    const char *transport;   /* "websocket", "sse" or "http" (static) */
};

void wsb_client_info_cleanup(struct wsb_client_info *ci);

/** The sort key of a snapshot (larger = earlier in the answer). */
int64_t wsb_clients_key(enum wsb_clients_sort sort, uint64_t buffered_bytes, int64_t lag_ms,
                        int64_t age_us);

struct wsb_clients_req;

/** A request awaiting `nworkers` answers, keeping the `top` largest by `sort`. Refcount 1 (the
 * caller's). NULL on OOM. @locality admin thread */
struct wsb_clients_req *wsb_clients_req_new(unsigned nworkers, size_t top,
                                            enum wsb_clients_sort sort);
struct wsb_clients_req *wsb_clients_req_ref(struct wsb_clients_req *r);
/** Drops a reference; the last one frees. @locality any */
void wsb_clients_req_unref(struct wsb_clients_req *r);
/** The request's sort and top (what a worker needs to pick its sessions). */
enum wsb_clients_sort wsb_clients_req_sort(const struct wsb_clients_req *r);
size_t wsb_clients_req_top(const struct wsb_clients_req *r);

/** A worker's answer: takes ownership of the `n` snapshots in `infos` (the array itself stays
 * the caller's) and counts the worker as done. Call exactly once per worker, with n = 0 when it
 * has nothing. @locality worker loop */
void wsb_clients_req_answer(struct wsb_clients_req *r, struct wsb_client_info *infos, size_t n,
                            size_t total);

struct wsb_worker;

/** A worker's part: picks its `top` sessions by the request's sort, snapshots them and
 * answers. @locality worker loop */
void wsb_clients_collect(struct wsb_worker *w, struct wsb_clients_req *r);

/** Waits until every worker answered or `timeout_ms` passed. Returns true when complete.
 * @locality admin thread */
bool wsb_clients_req_wait(struct wsb_clients_req *r, int timeout_ms);

/** Renders {"sort":..., "top":N, "total":T, "complete":bool, "clients":[...]} (the top N of
 * what arrived, sorted), malloc'd. NULL on OOM. @locality admin thread */
char *wsb_clients_req_render(struct wsb_clients_req *r, size_t *len);

#endif
