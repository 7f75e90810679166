/* --demo glue: a generated HS256 secret, a demo token, and the demo page served at `/`. */
#ifndef WSB_BRIDGE_DEMO_H
#define WSB_BRIDGE_DEMO_H

#include <stddef.h>

/** Fills `out` with a random hex secret of 64 characters (NUL-terminated). Returns 0/-1. */
int wsb_demo_secret(char out[65]);

/** Mints an HS256 token for sub "demo" valid `ttl_s` seconds. Caller frees. NULL on error. */
char *wsb_demo_token(const char *secret, long ttl_s);

/** The demo page with `token` and `path` filled in. Caller frees. */
char *wsb_demo_page(const char *token, const char *path);

#endif
