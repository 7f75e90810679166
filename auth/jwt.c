/* JWT verification: key store (PEM, inline secrets, JWKS), the JWS signature check (RFC 7515,
 * RFC 7518 §3 algorithms, done here with OpenSSL) and RFC 7519 claim checks. */
#include "auth/jwt.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "auth/token.h"
#include "util/base64.h"

/* A key's type decides which algorithms may use it: an RSA public key PEM is never an
 * HMAC secret (the "RS256 key used as HS256 secret" confusion). */
enum key_type { KEY_HMAC, KEY_RSA, KEY_EC256, KEY_EC384 };

struct key {
    enum key_type type;
    char *kid;           /* NULL: the key is a candidate for tokens without (or with an unknown)
                            kid */
    unsigned algs;       /* enum wsb_jwt_alg bits this key may verify */
    unsigned char *data; /* HMAC secret bytes (KEY_HMAC) */
    size_t len;
    EVP_PKEY *pkey; /* RSA or EC public key; shared read-only by every thread */
};

struct wsb_auth {
    int refs;
    unsigned algorithms;
    char *issuer;
    char *audience;
    int leeway_s;
    bool require_exp;
    struct key *keys;
    size_t nkeys;
    uint64_t gen;  /* unique per verifier: the verified-token cache is keyed by it */
    EVP_MD *md[3]; /* SHA-256, SHA-384, SHA-512, fetched once (not per verification) */
    EVP_MAC *hmac; /* HMAC, fetched once */
};

static atomic_uint_fast64_t auth_gens; /* verifiers built so far */

#define HS_ALGS (WSB_ALG_HS256 | WSB_ALG_HS384 | WSB_ALG_HS512)
#define RS_ALGS (WSB_ALG_RS256 | WSB_ALG_RS384 | WSB_ALG_RS512)

/* The hashes of RFC 7518 §3, indexes into wsb_auth.md. */
enum { MD_SHA256, MD_SHA384, MD_SHA512, MD_COUNT };
static const char *const md_names[MD_COUNT] = {"SHA256", "SHA384", "SHA512"};

/* RFC 7518 §3.1: the JWS algorithms we verify, with their hash. */
static const struct {
    const char *name;
    unsigned bit;
    int md;
} algs[] = {
    {"HS256", WSB_ALG_HS256, MD_SHA256}, {"HS384", WSB_ALG_HS384, MD_SHA384},
    {"HS512", WSB_ALG_HS512, MD_SHA512}, {"RS256", WSB_ALG_RS256, MD_SHA256},
    {"RS384", WSB_ALG_RS384, MD_SHA384}, {"RS512", WSB_ALG_RS512, MD_SHA512},
    {"ES256", WSB_ALG_ES256, MD_SHA256}, {"ES384", WSB_ALG_ES384, MD_SHA384},
};

static unsigned type_algs(enum key_type t)
{
    switch (t) {
    case KEY_HMAC: return HS_ALGS;
    case KEY_RSA: return RS_ALGS;
    case KEY_EC256: return WSB_ALG_ES256;
    case KEY_EC384: return WSB_ALG_ES384;
    }
    return 0;
}

/* Decodes a base64url segment holding a JSON object into `buf` (`cap` bytes; a larger
 * segment is decoded into a malloc'd buffer). Returns NULL when it is not one. *text is where
 * the decoded JSON text is (`buf` or the malloc'd buffer, which the caller frees when it is not
 * `buf`; NULL on failure), *text_len its length. */
static json_t *b64url_json_text(const char *in, size_t len, unsigned char *buf, size_t cap,
                                unsigned char **text, size_t *text_len)
{
    unsigned char *out = len * 3 / 4 + 1 <= cap ? buf : malloc(len * 3 / 4 + 1);
    json_t *j = NULL;
    long n;

    *text = NULL;
    if (!out)
        return NULL;
    n = wsb_base64_decode(in, len, true, out);
    if (n > 0)
        j = json_loadb((const char *)out, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    if (!j) {
        if (out != buf)
            free(out);
        return NULL;
    }
    *text = out;
    *text_len = (size_t)n;
    return j;
}

/* Decodes a base64url segment holding a JSON object. Returns NULL when it is not one. A
 * segment of the usual size is decoded on the stack. */
static json_t *b64url_json(const char *in, size_t len)
{
    unsigned char stack[1024], *text;
    size_t text_len;
    json_t *j = b64url_json_text(in, len, stack, sizeof(stack), &text, &text_len);
    if (text && text != stack)
        free(text);
    return j;
}

static void key_cleanup(struct key *k)
{
    if (k->type == KEY_HMAC && k->data)
        OPENSSL_cleanse(k->data, k->len);
    free(k->data);
    free(k->kid);
    EVP_PKEY_free(k->pkey);
}

static void auth_free(struct wsb_auth *a)
{
    for (size_t i = 0; i < a->nkeys; i++)
        key_cleanup(&a->keys[i]);
    free(a->keys);
    for (int i = 0; i < MD_COUNT; i++)
        EVP_MD_free(a->md[i]);
    EVP_MAC_free(a->hmac);
    free(a->issuer);
    free(a->audience);
    free(a);
}

static int add_key(struct wsb_auth *a, size_t *cap, struct key *k)
{
    if (a->nkeys == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct key *nk = realloc(a->keys, ncap * sizeof(*nk));
        if (!nk)
            return -1;
        a->keys = nk;
        *cap = ncap;
    }
    a->keys[a->nkeys++] = *k;
    return 0;
}

/* Classifies a public key and keeps a reference to it. Returns 0, or -1 with a reason in
 * err. */
static int pkey_to_key(EVP_PKEY *pkey, struct key *k, char *err, size_t errlen)
{
    int rc = -1;

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < 2048) {
            snprintf(err, errlen, "RSA key shorter than 2048 bits");
            goto out;
        }
        k->type = KEY_RSA;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &glen)) {
            snprintf(err, errlen, "EC key without a named curve");
            goto out;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            k->type = KEY_EC256;
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            k->type = KEY_EC384;
        } else {
            snprintf(err, errlen, "unsupported EC curve %s (P-256 and P-384 only)", group);
            goto out;
        }
    } else {
        snprintf(err, errlen, "unsupported key type (RSA or EC public keys only)");
        goto out;
    }
    if (!EVP_PKEY_up_ref(pkey)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    k->pkey = pkey;
    k->algs = type_algs(k->type);
    rc = 0;
out:
    return rc;
}

/* Reads a PEM public key, certificate or (for convenience) private key whose public half
 * is used. */
static int load_pem_file(const char *path, struct key *k, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *pkey = NULL;
    X509 *cert = NULL;
    int rc = -1;

    if (!f) {
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        return -1;
    }
    pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!pkey) {
        rewind(f);
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        if (cert)
            pkey = X509_get_pubkey(cert);
    }
    if (!pkey) {
        rewind(f);
        pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    if (!pkey) {
        snprintf(err, errlen, "key file %s holds no PEM public key or certificate", path);
        goto out;
    }
    if (pkey_to_key(pkey, k, err, errlen) < 0) {
        size_t used = strlen(err);
        snprintf(err + used, errlen - used, " in %s", path);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(pkey);
    X509_free(cert);
    fclose(f);
    return rc;
}

/* Decodes a base64url JWKS member into a new buffer. Returns its length or -1. */
static long jwk_bytes(const json_t *jwk, const char *name, unsigned char **out)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    size_t len;
    long n;

    *out = NULL;
    if (!s)
        return -1;
    len = strlen(s);
    *out = malloc(len * 3 / 4 + 1);
    if (!*out)
        return -1;
    n = wsb_base64_decode(s, len, true, *out);
    if (n <= 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return n;
}

/* Builds a public key of `type` ("RSA", "EC") from the parameters collected in `bld`. */
static EVP_PKEY *public_key_from(OSSL_PARAM_BLD *bld, const char *type)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *jwk_rsa(const json_t *jwk)
{
    unsigned char *nb = NULL, *eb = NULL;
    long nl = jwk_bytes(jwk, "n", &nb), el = jwk_bytes(jwk, "e", &eb);
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;

    if (nl < 0 || el < 0)
        goto out;
    n = BN_bin2bn(nb, (int)nl, NULL);
    e = BN_bin2bn(eb, (int)el, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto out;
    pkey = public_key_from(bld, "RSA");
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    return pkey;
}

static EVP_PKEY *jwk_ec(const json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    unsigned char *xb = NULL, *yb = NULL, pub[1 + 2 * 48];
    long xl = jwk_bytes(jwk, "x", &xb), yl = jwk_bytes(jwk, "y", &yb);
    const char *group;
    long size;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;

    if (crv && strcmp(crv, "P-256") == 0) {
        group = "prime256v1";
        size = 32;
    } else if (crv && strcmp(crv, "P-384") == 0) {
        group = "secp384r1";
        size = 48;
    } else {
        goto out;
    }
    /* RFC 7518 §6.2.1.2: x and y are exactly the curve's coordinate size. */
    if (xl != size || yl != size)
        goto out;
    pub[0] = 0x04;
    memcpy(pub + 1, xb, (size_t)size);
    memcpy(pub + 1 + size, yb, (size_t)size);
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                          (size_t)(1 + 2 * size)))
        goto out;
    pkey = public_key_from(bld, "EC");
out:
    OSSL_PARAM_BLD_free(bld);
    free(xb);
    free(yb);
    return pkey;
}

static unsigned alg_bit(const char *name)
{
    for (size_t i = 0; i < WSB_ARRAY_LEN(algs); i++)
        if (strcmp(algs[i].name, name) == 0)
            return algs[i].bit;
    return 0;
}

/* RFC 7517 key set. Keys with "use" other than "sig", and key types or curves we do not
 * verify with, are skipped; a key we should use but cannot parse is an error. */
static int load_jwks(struct wsb_auth *a, size_t *cap, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr), *arr, *jwk;
    size_t i;
    int rc = -1;

    if (!root) {
        snprintf(err, errlen, "jwks_file %s: line %d: %s", path, jerr.line, jerr.text);
        return -1;
    }
    arr = json_object_get(root, "keys");
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "jwks_file %s: no \"keys\" array", path);
        goto out;
    }
    json_array_foreach(arr, i, jwk)
    {
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *use = json_string_value(json_object_get(jwk, "use"));
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        const char *alg = json_string_value(json_object_get(jwk, "alg"));
        struct key k = {0};
        EVP_PKEY *pkey = NULL;

        if (!json_is_object(jwk) || !kty || (use && strcmp(use, "sig") != 0))
            continue;
        if (strcmp(kty, "oct") == 0) {
            long n = jwk_bytes(jwk, "k", &k.data);
            if (n <= 0) {
                snprintf(err, errlen, "jwks_file %s: keys[%zu]: bad \"k\"", path, i);
                goto out;
            }
            k.type = KEY_HMAC;
            k.len = (size_t)n;
            k.algs = HS_ALGS;
        } else if (strcmp(kty, "RSA") == 0 || strcmp(kty, "EC") == 0) {
            pkey = strcmp(kty, "RSA") == 0 ? jwk_rsa(jwk) : jwk_ec(jwk);
            if (!pkey) {
                const char *crv = json_string_value(json_object_get(jwk, "crv"));
                if (strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-256") != 0 &&
                    strcmp(crv, "P-384") != 0)
                    continue; /* a curve we never verify with */
                snprintf(err, errlen, "jwks_file %s: keys[%zu]: invalid %s key", path, i, kty);
                goto out;
            }
            int prc = pkey_to_key(pkey, &k, err, errlen);
            EVP_PKEY_free(pkey);
            if (prc < 0) {
                char why[128];
                snprintf(why, sizeof(why), "%s", err);
                snprintf(err, errlen, "jwks_file %s: keys[%zu]: %s", path, i, why);
                goto out;
            }
        } else {
            continue;
        }
        /* RFC 7517 §4.4: a key that names its alg is used with that alg only. */
        if (alg) {
            k.algs &= alg_bit(alg);
            if (!k.algs) {
                key_cleanup(&k);
                continue;
            }
        }
        if (kid && !(k.kid = strdup(kid))) {
            key_cleanup(&k);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        if (add_key(a, cap, &k) < 0) {
            key_cleanup(&k);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

enum wsb_err wsb_auth_new(const struct wsb_auth_conf *conf, struct wsb_auth **out, char *err,
                          size_t errlen)
{
    struct wsb_auth *a = calloc(1, sizeof(*a));
    size_t cap = 0;
    enum wsb_err rc = WSB_ERR_NOMEM;

    *out = NULL;
    if (!a)
        goto fail;
    a->refs = 1;
    a->gen = atomic_fetch_add(&auth_gens, 1) + 1;
    a->algorithms = conf->algorithms;
    a->leeway_s = conf->leeway_s < 0 ? 0 : conf->leeway_s;
    a->require_exp = conf->require_exp;
    if ((conf->issuer && !(a->issuer = strdup(conf->issuer))) ||
        (conf->audience && !(a->audience = strdup(conf->audience))))
        goto fail;
    for (int i = 0; i < MD_COUNT; i++)
        if (!(a->md[i] = EVP_MD_fetch(NULL, md_names[i], NULL)))
            goto fail;
    if (!(a->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)))
        goto fail;
    rc = WSB_ERR_INVALID;
    for (size_t i = 0; i < conf->nkeys; i++) {
        const struct wsb_key_conf *kc = &conf->keys[i];
        struct key k = {0};

        if ((kc->file != NULL) == (kc->secret != NULL)) {
            snprintf(err, errlen, "auth key %zu: exactly one of file and secret is required", i);
            goto fail;
        }
        if (kc->secret) {
            /* Never echo the secret, not even its length. */
            if (!*kc->secret) {
                snprintf(err, errlen, "auth key %zu: empty secret", i);
                goto fail;
            }
            k.type = KEY_HMAC;
            k.algs = HS_ALGS;
            k.len = strlen(kc->secret);
            if (!(k.data = malloc(k.len + 1))) {
                rc = WSB_ERR_NOMEM;
                goto fail;
            }
            memcpy(k.data, kc->secret, k.len + 1);
        } else if (load_pem_file(kc->file, &k, err, errlen) < 0) {
            rc = WSB_ERR_IO;
            goto fail;
        }
        if (kc->kid && !(k.kid = strdup(kc->kid))) {
            key_cleanup(&k);
            rc = WSB_ERR_NOMEM;
            goto fail;
        }
        if (add_key(a, &cap, &k) < 0) {
            key_cleanup(&k);
            rc = WSB_ERR_NOMEM;
            goto fail;
        }
    }
    if (conf->jwks_file && load_jwks(a, &cap, conf->jwks_file, err, errlen) < 0)
        goto fail;
    if (conf->enabled && a->nkeys == 0) {
        snprintf(err, errlen, "auth: no usable verification key (keys or jwks_file)");
        goto fail;
    }
    if (conf->enabled) {
        unsigned usable = 0;
        for (size_t i = 0; i < a->nkeys; i++)
            usable |= a->keys[i].algs;
        if (!(usable & a->algorithms)) {
            snprintf(err, errlen, "auth: no key can verify any of the allowed algorithms");
            goto fail;
        }
    }
    *out = a;
    return WSB_OK;
fail:
    if (rc == WSB_ERR_NOMEM)
        snprintf(err, errlen, "out of memory");
    if (a)
        auth_free(a);
    return rc;
}

struct wsb_auth *wsb_auth_ref(struct wsb_auth *a)
{
    if (a)
        __atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED);
    return a;
}

void wsb_auth_unref(struct wsb_auth *a)
{
    if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
        auth_free(a);
}

int wsb_auth_leeway(const struct wsb_auth *a)
{
    return a->leeway_s;
}

struct wsb_identity *wsb_identity_ref(struct wsb_identity *id)
{
    if (id)
        id->refs++;
    return id;
}

void wsb_identity_unref(struct wsb_identity *id)
{
    if (!id || --id->refs > 0)
        return;
    json_decref(id->claims);
    free(id);
}

json_t *wsb_identity_claims(struct wsb_identity *id)
{
    if (!id->claims)
        id->claims = json_loadb(id->claims_text, id->claims_len, JSON_REJECT_DUPLICATES, NULL);
    return json_incref(id->claims);
}

void wsb_identity_compact(struct wsb_identity *id)
{
    json_decref(id->claims);
    id->claims = NULL;
}

/* Signature checks made by this thread (tests count them per token). */
static _Thread_local unsigned long sig_checks;
static _Thread_local unsigned long cache_hits;

unsigned long wsb_auth_signature_checks(void)
{
    return sig_checks;
}

unsigned long wsb_auth_cache_hits(void)
{
    return cache_hits;
}

/* ---- verified-token cache ----------------------------------------------------------
 * Many browser tabs reuse one token, and an RS256 / ES256 check costs 17-60 us. A loop
 * thread remembers the SHA-256 of each whole token (header.payload.signature, as sent) whose
 * signature it verified with a given verifier, until the token's exp. A hit skips only the
 * signature check: the claims are parsed and checked (exp, nbf, iss, aud) every time. Only
 * successes are stored, so a forged token (any byte different: another digest) always gets
 * the full check; a reload builds a new verifier (new gen), so old entries never match.
 * HMAC tokens are not cached (hashing the token costs what the HMAC does); nor are tokens
 * without exp. Per thread, no lock: 2-way sets, 1,024 entries (48 KiB) per thread that
 * verifies an asymmetric token, allocated on first use. */
#define VCACHE_SETS 512
#define VCACHE_WAYS 2

struct vcache_entry {
    unsigned char digest[32];
    uint64_t gen;
    int64_t until; /* exp (unix seconds); 0 = empty */
};

static pthread_key_t vcache_key;
static pthread_once_t vcache_once = PTHREAD_ONCE_INIT;
static bool vcache_key_ok;

static void vcache_key_init(void)
{
    vcache_key_ok = pthread_key_create(&vcache_key, free) == 0;
}

static struct vcache_entry *vcache_set(const unsigned char *digest, bool create)
{
    pthread_once(&vcache_once, vcache_key_init);
    if (!vcache_key_ok)
        return NULL;
    struct vcache_entry *c = pthread_getspecific(vcache_key);
    if (!c && create) {
        c = calloc(VCACHE_SETS * VCACHE_WAYS, sizeof(*c));
        if (c && pthread_setspecific(vcache_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    if (!c)
        return NULL;
    uint32_t h = (uint32_t)digest[0] | (uint32_t)digest[1] << 8 | (uint32_t)digest[2] << 16;
    return c + (size_t)(h % VCACHE_SETS) * VCACHE_WAYS;
}

static bool vcache_hit(const struct wsb_auth *a, const unsigned char *digest, int64_t now)
{
    struct vcache_entry *set = vcache_set(digest, false);
    for (int i = 0; set && i < VCACHE_WAYS; i++)
        if (set[i].until > now && set[i].gen == a->gen &&
            CRYPTO_memcmp(set[i].digest, digest, 32) == 0)
            return true;
    return false;
}

static void vcache_put(const struct wsb_auth *a, const unsigned char *digest, int64_t exp)
{
    struct vcache_entry *set = vcache_set(digest, true);
    if (!set)
        return;
    /* the empty or soonest-expiring way */
    struct vcache_entry *e = set[0].until <= set[1].until ? &set[0] : &set[1];
    memcpy(e->digest, digest, 32);
    e->gen = a->gen;
    e->until = exp;
}

void wsb_auth_cache_clear(void)
{
    pthread_once(&vcache_once, vcache_key_init);
    struct vcache_entry *c = vcache_key_ok ? pthread_getspecific(vcache_key) : NULL;
    if (c)
        memset(c, 0, VCACHE_SETS * VCACHE_WAYS * sizeof(*c));
}

/* RFC 7518 §3.4: an ECDSA signature is R || S, each exactly the curve's coordinate size;
 * OpenSSL wants the DER form (X9.62: SEQUENCE of two INTEGERs), written here without
 * BIGNUMs: minimal big-endian bytes, a 0x00 first when the top bit is set. `der` holds
 * 2 * (coord + 3) + 2 bytes. Returns the DER length, or -1. */
static int der_int(const unsigned char *p, size_t n, unsigned char *out)
{
    while (n > 1 && p[0] == 0) {
        p++;
        n--;
    }
    size_t pad = (p[0] & 0x80) ? 1 : 0;
    out[0] = 0x02;
    out[1] = (unsigned char)(n + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, p, n);
    return (int)(2 + pad + n);
}

static int ecdsa_der(const unsigned char *sig, size_t siglen, size_t coord, unsigned char *der)
{
    if (siglen != 2 * coord || coord > 48)
        return -1;
    int n = der_int(sig, coord, der + 2);
    n += der_int(sig + coord, coord, der + 2 + n);
    der[0] = 0x30; /* at most 2 * 51 content bytes: the short length form */
    der[1] = (unsigned char)n;
    return n + 2;
}

/* ---- per-thread verification contexts -----------------------------------------------
 * EVP_DigestVerifyInit costs, on every call, provider fetches of the signature algorithm
 * and the digest, a new EVP_PKEY_CTX and its provider context (OpenSSL 3). Instead each
 * thread keeps, for the verifier it last used, one EVP_PKEY_CTX per (key, hash) made ready
 * for verification once (EVP_PKEY_verify may be called again on the same context with the
 * same parameters), and verifies the hash of the signing input made with the verifier's
 * prefetched digest. HMAC() likewise fetched the MAC and the digest by name and set the key
 * up (both pads hashed) on every call: an HMAC key has one EVP_MAC_CTX per hash, keyed once
 * and reset to that keyed state for each token (EVP_MAC_init without a key). Made on first
 * use; a thread that meets another verifier (a reload) drops its contexts and makes new
 * ones; freed when the thread ends. */
struct vctx {
    uint64_t gen;      /* the verifier the contexts belong to */
    size_t n;          /* slots: its nkeys * MD_COUNT */
    EVP_PKEY_CTX **pk; /* [key * MD_COUNT + md] for RSA and EC keys, NULL until used */
    EVP_MAC_CTX **mac; /* [key * MD_COUNT + md] for HMAC keys, NULL until used */
};

static pthread_key_t vctx_key;
static pthread_once_t vctx_once = PTHREAD_ONCE_INIT;
static bool vctx_key_ok;

static void vctx_clear(struct vctx *v)
{
    for (size_t i = 0; i < v->n; i++) {
        EVP_PKEY_CTX_free(v->pk[i]);
        EVP_MAC_CTX_free(v->mac[i]);
    }
    free(v->pk);
    free(v->mac);
    v->pk = NULL;
    v->mac = NULL;
    v->n = 0;
    v->gen = 0;
}

static void vctx_free(void *p)
{
    vctx_clear(p);
    free(p);
}

static void vctx_key_init(void)
{
    vctx_key_ok = pthread_key_create(&vctx_key, vctx_free) == 0;
}

/* The calling thread's contexts for verifier `a`, or NULL (no memory). */
static struct vctx *thread_vctx(const struct wsb_auth *a)
{
    pthread_once(&vctx_once, vctx_key_init);
    if (!vctx_key_ok)
        return NULL;
    struct vctx *v = pthread_getspecific(vctx_key);
    if (!v) {
        if (!(v = calloc(1, sizeof(*v))))
            return NULL;
        if (pthread_setspecific(vctx_key, v) != 0) {
            free(v);
            return NULL;
        }
    }
    if (v->gen != a->gen) {
        vctx_clear(v);
        v->pk = calloc(a->nkeys * MD_COUNT, sizeof(*v->pk));
        v->mac = calloc(a->nkeys * MD_COUNT, sizeof(*v->mac));
        if (!v->pk || !v->mac) {
            vctx_clear(v);
            return NULL;
        }
        v->n = a->nkeys * MD_COUNT;
        v->gen = a->gen;
    }
    return v;
}

/* The calling thread's HMAC context for key `ki` of `a` with hash `md`, keyed, or NULL (no
 * memory). */
static EVP_MAC_CTX *mac_ctx(const struct wsb_auth *a, size_t ki, int md)
{
    struct vctx *v = thread_vctx(a);
    if (!v)
        return NULL;
    EVP_MAC_CTX **slot = &v->mac[ki * MD_COUNT + (size_t)md];
    if (!*slot) {
        const struct key *k = &a->keys[ki];
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)md_names[md], 0),
            OSSL_PARAM_construct_end(),
        };
        EVP_MAC_CTX *c = EVP_MAC_CTX_new(a->hmac);
        if (!c || EVP_MAC_init(c, k->data, k->len, params) != 1) {
            EVP_MAC_CTX_free(c);
            return NULL;
        }
        *slot = c;
    }
    return *slot;
}

/* The calling thread's context for key `ki` of `a` with hash `md`, or NULL (no memory). */
static EVP_PKEY_CTX *verify_ctx(const struct wsb_auth *a, size_t ki, int md)
{
    struct vctx *v = thread_vctx(a);
    if (!v)
        return NULL;
    EVP_PKEY_CTX **slot = &v->pk[ki * MD_COUNT + (size_t)md];
    if (!*slot) {
        const struct key *k = &a->keys[ki];
        EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        if (!c || EVP_PKEY_verify_init(c) != 1 ||
            EVP_PKEY_CTX_set_signature_md(c, a->md[md]) != 1 ||
            (k->type == KEY_RSA && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) != 1)) {
            EVP_PKEY_CTX_free(c);
            return NULL;
        }
        *slot = c;
    }
    return *slot;
}

/* What one verification computes once for every candidate key: the hash of the signing
 * input, for the asymmetric algorithms. */
struct signing {
    const char *input; /* header.payload as sent (RFC 7515 §5.2) */
    size_t len;
    int md;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen; /* 0 until computed */
};

/* RFC 7518 §3.2: HMAC, compared in constant time. The thread's context for the key is reset
 * to its keyed state (EVP_MAC_init without a key) before each token. */
static bool hmac_ok(const struct wsb_auth *a, size_t ki, const struct signing *in,
                    const unsigned char *sig, size_t siglen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC_CTX *c = mac_ctx(a, ki, in->md);

    if (!c || EVP_MAC_init(c, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(c, (const unsigned char *)in->input, in->len) != 1 ||
        EVP_MAC_final(c, mac, &maclen, sizeof(mac)) != 1)
        return false;
    return maclen == siglen && CRYPTO_memcmp(mac, sig, siglen) == 0;
}

/* RFC 7518 §3.3 (RSASSA-PKCS1-v1_5) and §3.4 (ECDSA) with the key's public half. RSA_verify
 * (under EVP_PKEY_verify) requires a signature of exactly the modulus size and the whole
 * DigestInfo of `md`; ECDSA_verify rejects a DER form that does not re-encode identically. */
static bool pkey_ok(const struct wsb_auth *a, size_t ki, struct signing *in,
                    const unsigned char *sig, size_t siglen)
{
    const struct key *k = &a->keys[ki];
    unsigned char der[2 * (48 + 3) + 2];
    EVP_PKEY_CTX *c = verify_ctx(a, ki, in->md);

    if (!c)
        return false;
    if (!in->dlen &&
        EVP_Digest(in->input, in->len, in->digest, &in->dlen, a->md[in->md], NULL) != 1) {
        in->dlen = 0;
        return false;
    }
    if (k->type != KEY_RSA) {
        int n = ecdsa_der(sig, siglen, k->type == KEY_EC256 ? 32 : 48, der);
        if (n < 0)
            return false;
        sig = der;
        siglen = (size_t)n;
    }
    return EVP_PKEY_verify(c, sig, siglen, in->digest, in->dlen) == 1;
}

static bool signature_ok(const struct wsb_auth *a, size_t ki, struct signing *in,
                         const unsigned char *sig, size_t siglen)
{
    sig_checks++;
    if (a->keys[ki].type == KEY_HMAC)
        return hmac_ok(a, ki, in, sig, siglen);
    return pkey_ok(a, ki, in, sig, siglen);
}

/* RFC 7515 §4.1.9 / RFC 9068 §2.1: `typ` is a media type, compared case-insensitively, and
 * may omit its "application/" prefix. We accept a plain JWT (RFC 7519 §5.1) and an OAuth
 * access token (at+jwt); absent is fine too. */
static bool typ_ok(const json_t *typ)
{
    const char *t;
    size_t len;

    if (!typ)
        return true;
    if (!json_is_string(typ))
        return false;
    t = json_string_value(typ);
    len = json_string_length(typ);
    if (strlen(t) != len) /* an embedded NUL */
        return false;
    if (len > 12 && strncasecmp(t, "application/", 12) == 0) {
        t += 12;
        len -= 12;
    }
    return (len == 3 && strncasecmp(t, "jwt", 3) == 0) ||
           (len == 6 && strncasecmp(t, "at+jwt", 6) == 0);
}

#define DATE_MAX ((int64_t)1 << 53)

/* A NumericDate claim (RFC 7519 §2). Returns 0 absent, 1 present (in *v), -1 not a number. */
static int numeric_date(const json_t *claims, const char *name, int64_t *v)
{
    const json_t *j = json_object_get(claims, name);
    double d;

    if (!j)
        return 0;
    /* Clamped to +-2^53 so adding the leeway can never overflow. */
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);
        *v = i > DATE_MAX ? DATE_MAX : i < -DATE_MAX ? -DATE_MAX : (int64_t)i;
        return 1;
    }
    if (!json_is_real(j))
        return -1;
    d = floor(json_real_value(j));
    if (d != d)
        return -1;
    *v = d > (double)DATE_MAX ? DATE_MAX : d < -(double)DATE_MAX ? -DATE_MAX : (int64_t)d;
    return 1;
}

static bool audience_ok(const json_t *aud, const char *want)
{
    size_t i;
    const json_t *v;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    json_array_foreach(aud, i, v) if (json_is_string(v) &&
                                      strcmp(json_string_value(v), want) == 0) return true;
    return false;
}

/* RFC 7519 §4.1 registered claims, after the signature verified. */
static const char *check_claims(const struct wsb_auth *a, const json_t *claims, int64_t now,
                                int64_t *exp)
{
    int64_t v, leeway = a->leeway_s;
    int r;

    *exp = 0;
    r = numeric_date(claims, "exp", &v);
    if (r < 0)
        return "token_invalid";
    if (r == 0 && a->require_exp)
        return "token_exp_required";
    /* §4.1.4: the token must not be accepted on or after exp. */
    if (r > 0) {
        if (now >= v + leeway)
            return "token_expired";
        *exp = v;
    }
    r = numeric_date(claims, "nbf", &v);
    if (r < 0)
        return "token_invalid";
    if (r > 0 && now + leeway < v)
        return "token_not_yet_valid";
    /* A token issued in the future is treated as not yet valid (as PyJWT does). */
    r = numeric_date(claims, "iat", &v);
    if (r < 0)
        return "token_invalid";
    if (r > 0 && now + leeway < v)
        return "token_not_yet_valid";
    if (a->issuer) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, a->issuer) != 0)
            return "token_issuer";
    }
    if (a->audience && !audience_ok(json_object_get(claims, "aud"), a->audience))
        return "token_audience";
    {
        const json_t *sub = json_object_get(claims, "sub");
        if (sub && !json_is_string(sub))
            return "token_invalid";
    }
    return NULL;
}

/* ---- header cache ---------------------------------------------------------------------
 * The protected header of one issuer's tokens is the same text in every token
 * ({"alg":"HS256","typ":"JWT"} and a kid), so each loop thread remembers the last few header
 * segments (the base64url text exactly as sent) that decoded to a usable header: a JSON
 * object whose alg is one of algs[], without crit, with a string kid or none, and an
 * accepted typ. A hit gives the alg and kid that parsing the same bytes gives, without the
 * base64 and the jansson parse; what does not pass those checks is never stored and is
 * parsed every time. The verifier's own checks (alg allow-list, keys, signature, claims)
 * run on every token. No heap: a few hundred bytes of TLS per thread. */
#define HCACHE_WAYS 4
#define HCACHE_TEXT 160 /* header segments up to this many characters are cached */
#define HCACHE_KID 64   /* and kids up to this long */

struct hcache_entry {
    uint16_t len; /* of text; 0 = empty */
    uint8_t alg;  /* index into algs[] */
    bool has_kid;
    char kid[HCACHE_KID + 1];
    char text[HCACHE_TEXT];
};

static _Thread_local struct hcache_entry hcache[HCACHE_WAYS];
static _Thread_local unsigned hcache_next;

static const struct hcache_entry *hcache_find(const char *seg, size_t len)
{
    if (len == 0 || len > HCACHE_TEXT)
        return NULL;
    for (size_t i = 0; i < HCACHE_WAYS; i++)
        if (hcache[i].len == len && memcmp(hcache[i].text, seg, len) == 0)
            return &hcache[i];
    return NULL;
}

static void hcache_put(const char *seg, size_t len, size_t alg, const char *kid)
{
    size_t kl = kid ? strlen(kid) : 0;
    if (len == 0 || len > HCACHE_TEXT || kl > HCACHE_KID || alg >= WSB_ARRAY_LEN(algs))
        return;
    struct hcache_entry *e = &hcache[hcache_next++ % HCACHE_WAYS];
    memcpy(e->text, seg, len);
    e->len = (uint16_t)len;
    e->alg = (uint8_t)alg;
    e->has_kid = kid != NULL;
    memcpy(e->kid, kid ? kid : "", kl + 1);
}

enum wsb_err wsb_auth_verify(const struct wsb_auth *a, const char *token, size_t len, int64_t now,
                             struct wsb_identity **out, const char **code)
{
    const char *dot1, *dot2;
    json_t *header = NULL, *claims = NULL;
    unsigned char sigbuf[768], *sig = NULL; /* RSA-4096's 512 bytes fit on the stack */
    long siglen;
    const char *alg_name, *kid = NULL;
    unsigned alg = 0;
    int md = -1;
    struct signing in = {.input = token};
    bool kid_match = false, any_key = false, type_ok = false, verified = false, cacheable;
    unsigned char digest[32];
    unsigned char textbuf[1024], *text = NULL; /* the claims' JSON text (textbuf or malloc'd) */
    size_t text_len = 0;
    struct wsb_identity *id = NULL;
    int64_t exp;
    enum wsb_err rc = WSB_ERR_AUTH;

    *out = NULL;
    *code = "token_missing";
    if (!token || len == 0)
        return WSB_ERR_AUTH;
    *code = "token_malformed";
    if (len > WSB_TOKEN_MAX || memchr(token, '\0', len))
        return WSB_ERR_AUTH;
    /* RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature) */
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return WSB_ERR_AUTH;
    const struct hcache_entry *hc = hcache_find(token, (size_t)(dot1 - token));
    if (hc) {
        alg = algs[hc->alg].bit;
        md = algs[hc->alg].md;
        kid = hc->has_kid ? hc->kid : NULL;
    } else {
        header = b64url_json(token, (size_t)(dot1 - token));
        if (!header)
            goto out;
        alg_name = json_string_value(json_object_get(header, "alg"));
        if (!alg_name)
            goto out;
        /* RFC 7515 §4.1.11: we understand no critical extension. */
        if (json_object_get(header, "crit"))
            goto out;
        if (json_object_get(header, "kid")) {
            kid = json_string_value(json_object_get(header, "kid"));
            if (!kid)
                goto out;
        }
        if (!typ_ok(json_object_get(header, "typ"))) {
            *code = "token_typ";
            goto out;
        }
        size_t found = WSB_ARRAY_LEN(algs);
        for (size_t i = 0; i < WSB_ARRAY_LEN(algs); i++)
            if (strcmp(algs[i].name, alg_name) == 0) {
                alg = algs[i].bit;
                md = algs[i].md;
                found = i;
            }
        hcache_put(token, (size_t)(dot1 - token), found, kid);
    }
    /* RFC 8725 §3.1: the alg comes from the allow-list and is bound to the key type below;
     * "none" is never in it. */
    *code = "token_alg";
    if (!(alg & a->algorithms) || md < 0)
        goto out;
    in.md = md;
    in.len = (size_t)(dot2 - token);
    *code = "token_malformed";
    claims = b64url_json_text(dot1 + 1, (size_t)(dot2 - dot1 - 1), textbuf, sizeof(textbuf), &text,
                              &text_len);
    siglen = (long)(len - (size_t)(dot2 + 1 - token));
    if (!claims || siglen == 0)
        goto out;
    sig =
        (size_t)siglen * 3 / 4 + 1 <= sizeof(sigbuf) ? sigbuf : malloc((size_t)siglen * 3 / 4 + 1);
    if (!sig) {
        rc = WSB_ERR_NOMEM;
        goto out;
    }
    siglen = wsb_base64_decode(dot2 + 1, (size_t)siglen, true, sig);
    if (siglen <= 0)
        goto out;

    /* Candidates: keys whose kid matches; when none does, or the token has no kid, only the
     * keys configured without a kid (a kid names a key; a token that names none is never
     * tried against keys that have one). */
    for (size_t i = 0; kid && i < a->nkeys; i++)
        if (a->keys[i].kid && strcmp(a->keys[i].kid, kid) == 0)
            kid_match = true;
    cacheable =
        !(alg & HS_ALGS) && EVP_Digest(token, len, digest, NULL, a->md[MD_SHA256], NULL) == 1;
    if (cacheable && vcache_hit(a, digest, now)) {
        cache_hits++;
        verified = true;
    }
    for (size_t i = 0; i < a->nkeys && !verified; i++) {
        const struct key *k = &a->keys[i];

        if (kid_match ? !(k->kid && strcmp(k->kid, kid) == 0) : k->kid != NULL)
            continue;
        any_key = true;
        if (!(k->algs & alg))
            continue;
        type_ok = true;
        verified = signature_ok(a, i, &in, sig, (size_t)siglen);
    }
    if (!verified) {
        /* A failed check leaves OpenSSL errors queued on this thread, where a TLS session
         * of the same loop would read them as its own (SSL_get_error). */
        ERR_clear_error();
        /* No key for this kid: invalid; keys, but none of the alg's type: alg mismatch. */
        *code = (type_ok || !any_key) ? "token_invalid" : "token_alg";
        goto out;
    }
    *code = check_claims(a, claims, now, &exp);
    if (*code)
        goto out;
    if (cacheable && exp > 0)
        vcache_put(a, digest, exp);
    rc = WSB_ERR_NOMEM;
    *code = "token_invalid";
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    size_t sub_len = sub ? strlen(sub) + 1 : 0;
    id = malloc(sizeof(*id) + sub_len + text_len);
    if (!id)
        goto out;
    id->refs = 1;
    id->exp = exp;
    id->sub = sub ? memcpy((char *)(id + 1), sub, sub_len) : NULL;
    id->claims_text = memcpy((char *)(id + 1) + sub_len, text, text_len);
    id->claims_len = text_len;
    id->claims = claims;
    claims = NULL;
    *out = id;
    *code = NULL;
    rc = WSB_OK;
out:
    if (sig != sigbuf)
        free(sig);
    if (text != textbuf)
        free(text);
    json_decref(header);
    json_decref(claims);
    return rc;
}
