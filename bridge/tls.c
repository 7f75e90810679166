/* TLS contexts for wss:// and the client-certificate claims (OpenSSL 3). */
#include "bridge/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TLS 1.2: ECDHE key exchange with AEAD ciphers only (TLS 1.3 suites are all modern). */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* "what: reason" from errno when the file cannot be read, else from OpenSSL's error queue. */
static void fail(char *err, size_t errlen, const char *what, const char *path, const char *doing)
{
    unsigned long e = ERR_peek_last_error();
    char reason[256] = "";
    if (path != NULL && access(path, R_OK) != 0)
        snprintf(reason, sizeof(reason), "%s", strerror(errno));
    else if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "unknown error");
    ERR_clear_error();
    if (path != NULL)
        snprintf(err, errlen, "%s %s: %s: %s", what, path, doing, reason);
    else
        snprintf(err, errlen, "%s: %s: %s", what, doing, reason);
}

/* ALPN (RFC 7301): a WebSocket upgrade is HTTP/1.1; never agree to h2. */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, http11, sizeof(http11), in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN answer: the client falls back to HTTP/1.1 */
}

enum wsb_err wsb_tls_ctx_new(const char *cert, const char *key, const char *client_ca,
                             SSL_CTX **out, char *err, size_t errlen)
{
    enum wsb_err rc = WSB_ERR_INVALID;
    *out = NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        fail(err, errlen, "tls", NULL, "cannot create a context");
        return WSB_ERR_NOMEM;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        fail(err, errlen, "tls", NULL, "cannot set TLS 1.2+ with modern ciphers");
        goto cleanup;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle connections give their read/write buffers back: many clients, little traffic each. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);

    if (cert == NULL || key == NULL) {
        snprintf(err, errlen, "tls: \"cert\" and \"key\" are required together");
        goto cleanup;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        fail(err, errlen, "tls.cert", cert, "cannot load the PEM certificate chain");
        rc = WSB_ERR_IO;
        goto cleanup;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        int why = ERR_GET_REASON(ERR_peek_last_error());
        bool mismatch = why == X509_R_KEY_VALUES_MISMATCH || why == X509_R_KEY_TYPE_MISMATCH;
        fail(err, errlen, "tls.key", key,
             mismatch ? "does not match the certificate in tls.cert"
                      : "cannot load the PEM private key");
        rc = WSB_ERR_IO;
        goto cleanup;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        fail(err, errlen, "tls.key", key, "does not match the certificate in tls.cert");
        goto cleanup;
    }
    if (client_ca != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, client_ca, NULL) != 1) {
            if (names != NULL)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            fail(err, errlen, "tls.client_ca", client_ca, "cannot load the PEM CA bundle");
            rc = WSB_ERR_IO;
            goto cleanup;
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_verify_depth(ctx, 8);
        /* Resumed sessions must carry the verification: required with SSL_VERIFY_PEER. */
        static const unsigned char sid[] = "wsbridge";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    }
    *out = ctx;
    return WSB_OK;

cleanup:
    SSL_CTX_free(ctx);
    return rc;
}

void wsb_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

static void asn1_time(const ASN1_TIME *t, char *buf, size_t len)
{
    buf[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return;
    if (ASN1_TIME_print(b, t) == 1) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

static void name_rfc2253(X509_NAME *name, char *buf, size_t len)
{
    buf[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return;
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

void wsb_tls_ctx_describe(SSL_CTX *ctx, char *buf, size_t len)
{
    X509 *leaf = ctx != NULL ? SSL_CTX_get0_certificate(ctx) : NULL;
    if (leaf == NULL) {
        snprintf(buf, len, "no certificate");
        return;
    }
    char subject[256], until[64];
    name_rfc2253(X509_get_subject_name(leaf), subject, sizeof(subject));
    asn1_time(X509_get0_notAfter(leaf), until, sizeof(until));
    snprintf(buf, len, "%s, valid until %s", subject, until);
}

void wsb_tls_stamp(const char *cert, const char *key, const char *client_ca,
                   struct wsb_tls_stamp *out)
{
    const char *paths[3] = {cert, key, client_ca};
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < 3; i++) {
        struct stat st;
        if (paths[i] == NULL)
            continue;
        if (stat(paths[i], &st) != 0) {
            out->f[i].err = errno;
            continue;
        }
        out->f[i].dev = (unsigned long long)st.st_dev;
        out->f[i].ino = (unsigned long long)st.st_ino;
        out->f[i].size = (unsigned long long)st.st_size;
        out->f[i].mtime_s = (long long)st.st_mtim.tv_sec;
        out->f[i].mtime_ns = (long long)st.st_mtim.tv_nsec;
    }
}

bool wsb_tls_stamp_equal(const struct wsb_tls_stamp *a, const struct wsb_tls_stamp *b)
{
    return memcmp(a, b, sizeof(*a)) == 0; /* zeroed first, so padding compares equal */
}

bool wsb_tls_peer_claims(SSL *ssl, json_t *claims)
{
    X509 *peer = ssl != NULL ? SSL_get0_peer_certificate(ssl) : NULL;
    if (peer == NULL || SSL_get_verify_result(ssl) != X509_V_OK) {
        json_object_del(claims, WSB_TLS_CLAIM_SUBJECT);
        json_object_del(claims, WSB_TLS_CLAIM_CN);
        return false;
    }
    char subject[512];
    name_rfc2253(X509_get_subject_name(peer), subject, sizeof(subject));
    json_object_set_new(claims, WSB_TLS_CLAIM_SUBJECT, json_string(subject));

    /* The most specific commonName is the last one in the sequence. */
    X509_NAME *name = X509_get_subject_name(peer);
    int idx = -1, last = -1;
    while ((idx = X509_NAME_get_index_by_NID(name, NID_commonName, idx)) >= 0)
        last = idx;
    json_object_del(claims, WSB_TLS_CLAIM_CN);
    if (last >= 0) {
        const ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, last));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, d);
        if (n >= 0 && memchr(utf8, '\0', (size_t)n) == NULL)
            json_object_set_new(claims, WSB_TLS_CLAIM_CN,
                                json_stringn((const char *)utf8, (size_t)n));
        OPENSSL_free(utf8);
    }
    return true;
}
