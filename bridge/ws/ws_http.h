/* Pure HTTP/1.1 request-head parser and RFC 6455 §4.2.1 upgrade checks. Bytes in, slices out:
 * no I/O, no allocation. Used for the WebSocket upgrade and the main listener's plain GETs. */
#ifndef WSB_WS_HTTP_H
#define WSB_WS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define WSB_HTTP_MAX_HEAD 8192 /* request line + headers, bytes */
#define WSB_HTTP_MAX_HEADERS 64

struct wsb_slice {
    const char *ptr; /* into the caller's buffer; NULL when absent */
    size_t len;
};

struct wsb_http_header {
    struct wsb_slice name;  /* as sent; compare case-insensitively */
    struct wsb_slice value; /* leading/trailing whitespace trimmed */
};

struct wsb_http_req {
    struct wsb_slice method;
    struct wsb_slice target; /* raw request-target */
    struct wsb_slice path;   /* target up to '?' */
    struct wsb_slice query;  /* after '?', without it; len 0 when none */
    int version_minor;       /* HTTP/1.x */
    size_t nheaders;
    struct wsb_http_header headers[WSB_HTTP_MAX_HEADERS];
};

/** Finds the end of a request head. Returns the head's length including the final CRLFCRLF,
 * 0 when more bytes are needed, or -1 when `len` already exceeds WSB_HTTP_MAX_HEAD without
 * one. */
long wsb_http_head_end(const char *buf, size_t len);

/** Parses a complete head (as delimited by wsb_http_head_end). Returns 0, or -1 when it is
 * not a well-formed HTTP/1.x request (status 400). Slices point into `buf`. */
int wsb_http_parse(const char *buf, size_t len, struct wsb_http_req *req);

/** First header named `name` (case-insensitive), or a NULL slice. */
struct wsb_slice wsb_http_header(const struct wsb_http_req *req, const char *name);

/** True when any comma-separated token of any `name` header equals `token`
 * (case-insensitive), e.g. Connection: keep-alive, Upgrade. */
bool wsb_http_header_has_token(const struct wsb_http_req *req, const char *name, const char *token);

/** Joins every `name` header value with ", " into out (NUL-terminated). Returns the
 * length, or -1 when it does not fit. */
long wsb_http_header_join(const struct wsb_http_req *req, const char *name, char *out,
                          size_t outlen);

/** Result of the upgrade checks. */
struct wsb_upgrade_check {
    int status;           /* 0 when acceptable, else 400 or 426 (version); a non-GET is 400 */
    const char *error;    /* short machine code: "bad_request", "unsupported_version", ... */
    const char *message;  /* human sentence */
    struct wsb_slice key; /* Sec-WebSocket-Key */
};

/** RFC 6455 §4.2.1: GET, HTTP/1.1+, exactly one non-empty Host, Upgrade: websocket,
 * Connection: Upgrade, exactly one Sec-WebSocket-Key that is a base64 16-byte nonce (24
 * characters ending "=="), exactly one Sec-WebSocket-Version: 13 (426 otherwise, also when
 * absent: the caller adds `Sec-WebSocket-Version: 13`). error is "bad_request" for 400 and
 * "unsupported_version" for 426. Does not look at the path, Origin or extensions. */
void wsb_ws_check_upgrade(const struct wsb_http_req *req, struct wsb_upgrade_check *out);

/** RFC 6455 §4.2.2: base64(SHA-1(key + GUID)) into out (29 bytes incl. NUL). */
void wsb_ws_accept_key(const char *key, size_t key_len, char out[29]);

/** Finds query parameter `name` and percent-decodes its value into out (NUL-terminated);
 * '+' decodes to a space, names compare after decoding, the first match wins, a name without
 * '=' has an empty value. Returns the decoded length, -1 when absent, -2 when malformed (bad
 * '%' escape), when it decodes to a NUL byte, or when it does not fit in outlen - 1. */
long wsb_http_query_param(struct wsb_slice query, const char *name, char *out, size_t outlen);

/** Finds cookie `name` (case-sensitive, RFC 6265 §5.4) in a Cookie header value
 * ("a=b; c=d"); surrounding double quotes are removed from the value. Returns its value slice
 * into the header (NULL when absent, empty when "name="). */
struct wsb_slice wsb_http_cookie(struct wsb_slice cookie_header, const char *name);

#endif
