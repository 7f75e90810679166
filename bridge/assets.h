/* Files the bridge serves itself, embedded at build time (cmake/embed_assets.cmake): the
 * browser library at /wsbridge.js and /wsbridge.d.ts, and the demo page's template. */
#ifndef WSB_BRIDGE_ASSETS_H
#define WSB_BRIDGE_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

struct wsb_asset {
    const char *name;          /* URL path ("/wsbridge.js"), or a bare name for internal use */
    const char *type;          /* Content-Type */
    const char *etag;          /* strong ETag, quotes included */
    const unsigned char *data; /* NUL-terminated; the NUL is not counted in len */
    size_t len;
};

/* The generated table. */
extern const struct wsb_asset wsb_assets[];
extern const size_t wsb_nassets;

/** The asset named exactly `name` (`len` bytes), or NULL. URL paths start with '/', so a
 * request can never reach an internal asset. @locality any (the table is immutable) */
const struct wsb_asset *wsb_asset_find(const char *name, size_t len);

/** True when an If-None-Match header value (`value`, `len` bytes; untrusted) names `etag`:
 * a comma-separated list of entity tags, weak ("W/") or strong, or "*" (RFC 9110 §13.1.2,
 * weak comparison). A malformed list matches nothing. Pure. */
bool wsb_asset_etag_match(const char *value, size_t len, const char *etag);

/** Writes the whole response for `a` into `out`: 304 without a body when `inm` (the
 * If-None-Match value, NULL when absent) matches, else 200 with the body unless `head`.
 * Headers: Content-Type, Content-Length, ETag, Cache-Control: no-cache (revalidate: the
 * library always matches the bridge serving it), Access-Control-Allow-Origin: * (module
 * scripts load in CORS mode from other origins), X-Content-Type-Options, Connection: close.
 * Returns the status written. @locality loop */
int wsb_asset_respond(const struct wsb_asset *a, bool head, const char *inm, size_t inm_len,
                      struct evbuffer *out);

#endif
