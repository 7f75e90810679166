/* Error code names. */
#include "util/err.h"

const char *wsb_strerror(enum wsb_err err)
{
    switch (err) {
    case WSB_OK: return "ok";
    case WSB_ERR_NOMEM: return "out of memory";
    case WSB_ERR_INVALID: return "invalid input";
    case WSB_ERR_IO: return "i/o error";
    case WSB_ERR_AGAIN: return "try again";
    case WSB_ERR_LIMIT: return "limit exceeded";
    case WSB_ERR_NOT_FOUND: return "not found";
    case WSB_ERR_EXISTS: return "already exists";
    case WSB_ERR_UNSUPPORTED: return "unsupported";
    case WSB_ERR_UNAVAILABLE: return "unavailable";
    case WSB_ERR_AUTH: return "authentication failed";
    case WSB_ERR_FORBIDDEN: return "forbidden";
    case WSB_ERR_INTERNAL: return "internal error";
    }
    return "unknown error";
}
