/* The server: event-loop workers, connectors, the source registry, the admin listener,
 * signals (drain on SIGTERM/SIGINT, reload on SIGHUP). */
#ifndef WSB_BRIDGE_SERVER_H
#define WSB_BRIDGE_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

struct wsb_config;
struct wsb_server;

struct wsb_server_opts {
    const char *config_file; /* for SIGHUP reloads; NULL in plain --demo */
    bool demo;
    const char *demo_page; /* HTML served at / (demo only); borrowed for the server's life */
};

/** Builds everything from `cfg` (takes over the caller's reference): keys, connectors,
 * listeners. Nothing runs yet. Call from the main thread with SIGTERM/SIGINT/SIGHUP blocked
 * (wsb_server_block_signals). Returns WSB_OK or an error with a one-line reason. */
enum wsb_err wsb_server_new(struct wsb_config *cfg, const struct wsb_server_opts *opts,
                            struct wsb_server **out, char *err, size_t errlen);

/** Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and threads it creates later) and
 * ignores SIGPIPE. Call first thing in main. */
void wsb_server_block_signals(void);

/** Starts the workers and connectors, waits for signals, drains and stops. Returns the exit
 * status (0 after a clean drain). @locality main thread */
int wsb_server_run(struct wsb_server *s);

void wsb_server_free(struct wsb_server *s);

#endif
