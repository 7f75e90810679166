/* A worker's event loop (see worker.h for its state): created and freed by the server, run on
 * its own thread. */
#ifndef WSB_BRIDGE_LOOP_H
#define WSB_BRIDGE_LOOP_H

#include <stddef.h>
#include <sys/socket.h>

#include "util/err.h"

struct wsb_shared;
struct wsb_worker;

/** Builds worker `idx` of `sh` with its event base, mailbox, hub, timers and a listener bound
 * to `sa` (SO_REUSEPORT). On failure *out still holds what was built (free it with
 * wsb_loop_free) and err says why. @locality main thread */
enum wsb_err wsb_loop_new(struct wsb_shared *sh, unsigned idx, const struct sockaddr *sa, int salen,
                          struct wsb_worker **out, char *err, size_t errlen);

/** Frees a worker whose loop has stopped, with the sessions still on it. NULL is ignored. */
void wsb_loop_free(struct wsb_worker *w);

/** The thread body: runs the worker's loop until a STOP mail. */
void *wsb_loop_main(void *worker);
/** Makes the loop pick up the /clients request left in worker->clients_req.
 * @locality any */
void wsb_loop_clients_kick(struct wsb_worker *worker);

#endif
