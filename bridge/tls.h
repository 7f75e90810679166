/* TLS for the WebSocket listener (wss://): the server SSL_CTX built from the `tls` section of the
 * configuration, and what a verified client certificate tells the ACL. One context per runtime
 * snapshot: a reload (SIGHUP) builds a new one from the files on disk and swaps it in with the
 * snapshot; connections keep the context they were accepted with (SSL objects hold a reference),
 * so nothing live is dropped. */
#ifndef WSB_BRIDGE_TLS_H
#define WSB_BRIDGE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "util/err.h"

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */
struct ssl_st;     /* OpenSSL's SSL */

/** Claim names under which a verified client certificate's subject reaches ACL `when`
 * conditions and `{claim.NAME}` templates. Only the TLS layer sets them: a token's claims of
 * the same names are removed. */
#define WSB_TLS_CLAIM_SUBJECT "mtls_subject" /* RFC 2253 subject, e.g. "CN=alice,O=Example" */
#define WSB_TLS_CLAIM_CN "mtls_cn"           /* the subject's (last) commonName */

/** Builds a server context: TLS 1.2 and 1.3 only, ECDHE with AEAD ciphers for TLS 1.2, no
 * renegotiation or compression, ALPN http/1.1. `cert` is a PEM chain, `key` its PEM private key
 * (checked to match). With `client_ca` (PEM bundle) a client must present a certificate that
 * chains to it. Returns WSB_OK and a new context in *out, or an error with a one-line reason
 * naming the setting and file ("tls.key /p: ...") in err. @locality any */
enum wsb_err wsb_tls_ctx_new(const char *cert, const char *key, const char *client_ca,
                             struct ssl_ctx_st **out, char *err, size_t errlen);
/** Drops the caller's reference (connections still using it keep theirs). NULL is a no-op. */
void wsb_tls_ctx_free(struct ssl_ctx_st *ctx);
/** One line for the log: the leaf certificate's subject and expiry. */
void wsb_tls_ctx_describe(struct ssl_ctx_st *ctx, char *buf, size_t len);

/** What identifies the contents of the certificate, key and CA files without reading them:
 * device, inode, size and modification time of each (a Kubernetes Secret volume swaps a
 * symlink, which changes the inode; an editor or `mv` changes the inode or the time). */
struct wsb_tls_stamp {
    struct {
        unsigned long long dev, ino, size;
        long long mtime_s, mtime_ns;
        int err; /* errno of stat(), 0 when it worked */
    } f[3];
};

/** Stamps the files (NULL paths count as absent). @locality any */
void wsb_tls_stamp(const char *cert, const char *key, const char *client_ca,
                   struct wsb_tls_stamp *out);
bool wsb_tls_stamp_equal(const struct wsb_tls_stamp *a, const struct wsb_tls_stamp *b);

/** After a completed handshake: when the client presented a certificate that verified, sets
 * WSB_TLS_CLAIM_SUBJECT and WSB_TLS_CLAIM_CN in `claims` and returns true; otherwise removes
 * both names from `claims` and returns false. @locality loop */
bool wsb_tls_peer_claims(struct ssl_st *ssl, json_t *claims);

#endif
