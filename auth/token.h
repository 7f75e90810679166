/* Where a token comes from at the handshake (SPEC §3): Authorization: Bearer, the
 * access_token query parameter, a Sec-WebSocket-Protocol entry "bearer.T", a named cookie.
 * Pure. */
#ifndef WSB_AUTH_TOKEN_H
#define WSB_AUTH_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

#define WSB_TOKEN_MAX 8192

/** The handshake's raw inputs; each may be NULL/0 when absent. Borrowed. */
struct wsb_token_inputs {
    const char *authorization;
    size_t authorization_len;
    const char *query; /* without '?' */
    size_t query_len;
    const char *protocols; /* all Sec-WebSocket-Protocol values joined with ", " */
    size_t protocols_len;
    const char *cookies; /* all Cookie header values joined with "; " */
    size_t cookies_len;
};

/** Looks for a token in the sources enabled by `conf->token_sources`, in the order header,
 * query, subprotocol, cookie. Copies it into `out` (NUL-terminated). Returns its length,
 * 0 when none was found, or -1 when one was present but malformed or too long.
 * `*source` names where it came from ("header", "query", "subprotocol", "cookie"). */
long wsb_token_find(const struct wsb_auth_conf *conf, const struct wsb_token_inputs *in, char *out,
                    size_t outlen, const char **source);

/** Picks the subprotocol to answer: "wsbridge.v1" when offered, else NULL. Never selects a
 * "bearer.*" entry. */
const char *wsb_token_select_protocol(const char *protocols, size_t len);

#endif
