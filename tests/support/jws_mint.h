/* Minting compact JWS tokens and writing key files, for the JWT unit tests and the JWT
 * verification benchmark (tests/unit/auth/jwt_test.c, bench/jwt_verify.c): the same token
 * form and key set-up in both. Test and bench support only: not part of the bridge. */
#ifndef WSB_TESTS_SUPPORT_JWS_MINT_H
#define WSB_TESTS_SUPPORT_JWS_MINT_H

#include <stddef.h>

#include <openssl/evp.h>

/** base64url without padding (RFC 7515 §2) of n bytes into out (4 * ceil(n / 3) + 1 bytes
 * suffice); NUL-terminated. Returns the text's length. */
size_t wsb_jws_mint_b64url(const unsigned char *p, size_t n, char *out);

/** The public half of k as a PEM SubjectPublicKeyInfo (caller frees), or NULL. */
char *wsb_jws_mint_pubkey_pem(EVP_PKEY *k);

/** Writes text to path (created or truncated). Returns 0, or -1. */
int wsb_jws_mint_write_file(const char *path, const char *text);

/** Writes the public half of k to path as PEM. Returns 0, or -1. */
int wsb_jws_mint_write_pubkey(EVP_PKEY *k, const char *path);

/** A compact JWS of the header and claims given verbatim (JSON text), signed with SHA-256:
 * HMAC with `secret` when it is not NULL (HS256), else with `pkey`'s private half: RSA
 * PKCS#1 v1.5 (RS256) or ECDSA as R || S of the curve's coordinate size (ES256; RFC 7518
 * §3.4). Returns a new string (caller frees), or NULL on failure. */
char *wsb_jws_mint_token(const char *header, const char *claims, const char *secret,
                         EVP_PKEY *pkey);

#endif
