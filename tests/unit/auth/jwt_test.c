/* Tests for auth/jwt.c: tokens minted at test time with fresh RSA/EC keys and libjwt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth/jwt.h"
#include "auth/token.h"
#include "tests/support/jws_mint.h"

#define NOW 1700000000
#define SECRET "test-hmac-secret-0123456789abcdef"

static char dir[64];
static EVP_PKEY *rsa1, *rsa2, *ec256, *ec384;
static char *rsa1_priv, *rsa2_priv, *ec256_priv, *ec384_priv, *rsa1_pub_pem;
static char rsa1_file[128], ec256_file[128], ec384_file[128], jwks_file[128], cert_file[128];

static char *bio_string(BIO *b)
{
    char *mem;
    long n = BIO_get_mem_data(b, &mem);
    char *s = malloc((size_t)n + 1);
    memcpy(s, mem, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

static char *priv_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
    return bio_string(b);
}

static char *pub_pem(EVP_PKEY *k)
{
    char *pem = wsb_jws_mint_pubkey_pem(k);
    assert_non_null(pem);
    return pem;
}

static void write_file(const char *path, const char *text)
{
    assert_int_equal(wsb_jws_mint_write_file(path, text), 0);
}

static void bn_b64url(EVP_PKEY *k, const char *param, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    assert_true(EVP_PKEY_get_bn_param(k, param, &bn));
    int n = BN_bn2bin(bn, buf);
    wsb_jws_mint_b64url(buf, (size_t)n, out);
    BN_free(bn);
}

static void ec_xy(EVP_PKEY *k, char *x, char *y)
{
    unsigned char pub[133];
    size_t len = 0;
    assert_true(
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub), &len));
    assert_int_equal(len, 65);
    wsb_jws_mint_b64url(pub + 1, 32, x);
    wsb_jws_mint_b64url(pub + 33, 32, y);
}

static int setup(void **state)
{
    char n1[600], e1[16], n2[600], e2[16], x[64], y[64], k[64], jwks[4096];
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/wsb_jwt_test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    rsa1 = EVP_RSA_gen(2048);
    rsa2 = EVP_RSA_gen(2048);
    ec256 = EVP_EC_gen("P-256");
    ec384 = EVP_EC_gen("P-384");
    assert_true(rsa1 && rsa2 && ec256 && ec384);
    rsa1_priv = priv_pem(rsa1);
    rsa2_priv = priv_pem(rsa2);
    ec256_priv = priv_pem(ec256);
    ec384_priv = priv_pem(ec384);
    rsa1_pub_pem = pub_pem(rsa1);
    snprintf(rsa1_file, sizeof(rsa1_file), "%s/rsa1.pem", dir);
    snprintf(ec256_file, sizeof(ec256_file), "%s/ec256.pem", dir);
    snprintf(ec384_file, sizeof(ec384_file), "%s/ec384.pem", dir);
    snprintf(jwks_file, sizeof(jwks_file), "%s/jwks.json", dir);
    snprintf(cert_file, sizeof(cert_file), "%s/cert.pem", dir);
    write_file(rsa1_file, rsa1_pub_pem);
    char *p = pub_pem(ec256);
    write_file(ec256_file, p);
    free(p);
    p = pub_pem(ec384);
    write_file(ec384_file, p);
    free(p);

    /* A self-signed certificate around rsa2, to load a key from a certificate. */
    X509 *cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, rsa2);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                               (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    assert_true(X509_sign(cert, rsa2, EVP_sha256()) > 0);
    FILE *f = fopen(cert_file, "w");
    PEM_write_X509(f, cert);
    fclose(f);
    X509_free(cert);

    bn_b64url(rsa1, OSSL_PKEY_PARAM_RSA_N, n1);
    bn_b64url(rsa1, OSSL_PKEY_PARAM_RSA_E, e1);
    bn_b64url(rsa2, OSSL_PKEY_PARAM_RSA_N, n2);
    bn_b64url(rsa2, OSSL_PKEY_PARAM_RSA_E, e2);
    ec_xy(ec256, x, y);
    wsb_jws_mint_b64url((const unsigned char *)"jwks-oct-secret", 15, k);
    snprintf(jwks, sizeof(jwks),
             "{\"keys\":["
             "{\"kty\":\"RSA\",\"kid\":\"k1\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"k2\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"enc\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
             "{\"kty\":\"oct\",\"kid\":\"o1\",\"k\":\"%s\"},"
             "{\"kty\":\"OKP\",\"kid\":\"ed\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}"
             "]}",
             n1, e1, n2, e2, n1, e1, x, y, k);
    write_file(jwks_file, jwks);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    EVP_PKEY_free(rsa1);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec256);
    EVP_PKEY_free(ec384);
    free(rsa1_priv);
    free(rsa2_priv);
    free(ec256_priv);
    free(ec384_priv);
    free(rsa1_pub_pem);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* Signs `claims` (JSON) with alg and key; kid may be NULL. Caller frees. */
static char *mint(jwt_alg_t alg, const char *key, const char *kid, const char *claims)
{
    jwt_t *jwt = NULL;
    char *tok;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    if (kid)
        assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    return tok;
}

static char *unsigned_token(const char *header, const char *claims, const char *sig)
{
    char h[512], c[1024];
    char *tok = malloc(2048);
    wsb_jws_mint_b64url((const unsigned char *)header, strlen(header), h);
    wsb_jws_mint_b64url((const unsigned char *)claims, strlen(claims), c);
    snprintf(tok, 2048, "%s.%s.%s", h, c, sig);
    return tok;
}

struct conf_keys {
    struct wsb_key_conf keys[4];
    size_t n;
};

static struct wsb_auth_conf base_conf(struct conf_keys *k)
{
    struct wsb_auth_conf c = {0};
    c.enabled = true;
    c.algorithms = 0xff;
    c.keys = k->keys;
    c.nkeys = k->n;
    c.leeway_s = 30;
    return c;
}

static struct wsb_auth *new_auth(const struct wsb_auth_conf *c)
{
    struct wsb_auth *a = NULL;
    char err[256] = "";
    enum wsb_err rc = wsb_auth_new(c, &a, err, sizeof(err));
    if (rc != WSB_OK)
        fprintf(stderr, "wsb_auth_new: %s\n", err);
    assert_int_equal(rc, WSB_OK);
    return a;
}

/* Verifies and returns the code (NULL when accepted). */
static const char *verify(struct wsb_auth *a, const char *tok)
{
    struct wsb_identity *id = NULL;
    const char *code = "unset";
    enum wsb_err rc = wsb_auth_verify(a, tok, tok ? strlen(tok) : 0, NOW, &id, &code);
    if (rc == WSB_OK) {
        assert_non_null(id);
        assert_null(code);
        wsb_identity_unref(id);
        return NULL;
    }
    assert_int_equal(rc, WSB_ERR_AUTH);
    assert_null(id);
    assert_non_null(code);
    return code;
}

#define GOOD "{\"sub\":\"u1\",\"exp\":1700000600,\"iat\":1700000000}"

static void test_accept_hs(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    jwt_alg_t hs[] = {JWT_ALG_HS256, JWT_ALG_HS384, JWT_ALG_HS512};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        char *t = mint(hs[i], SECRET, NULL, GOOD);
        assert_null(verify(a, t));
        free(t);
    }
    /* wrong secret */
    char *t = mint(JWT_ALG_HS256, "another-secret", NULL, GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    wsb_auth_unref(a);
}

static void test_identity(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    struct wsb_identity *id = NULL;
    const char *code = NULL;
    (void)state;
    char *t = mint(JWT_ALG_HS256, SECRET, NULL,
                   "{\"sub\":\"alice\",\"exp\":1700000600,\"roles\":[\"admin\"]}");
    assert_int_equal(wsb_auth_verify(a, t, strlen(t), NOW, &id, &code), WSB_OK);
    assert_string_equal(id->sub, "alice");
    assert_int_equal(id->exp, 1700000600);
    assert_true(json_is_array(json_object_get(id->claims, "roles")));
    assert_int_equal(wsb_auth_leeway(a), 30);
    wsb_identity_unref(id);
    free(t);
    /* non-string sub */
    t = mint(JWT_ALG_HS256, SECRET, NULL, "{\"sub\":42,\"exp\":1700000600}");
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* no sub at all is fine: id->sub NULL */
    t = mint(JWT_ALG_HS256, SECRET, NULL, "{\"exp\":1700000600}");
    assert_int_equal(wsb_auth_verify(a, t, strlen(t), NOW, &id, &code), WSB_OK);
    assert_null(id->sub);
    wsb_identity_unref(id);
    free(t);
    wsb_auth_unref(a);
}

static void test_accept_rs_es(void **state)
{
    struct conf_keys k = {.keys = {{.file = rsa1_file}, {.file = ec256_file}}, .n = 2};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    char *t = mint(JWT_ALG_RS256, rsa1_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_RS512, rsa1_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_ES256, ec256_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    /* signed by a key we do not know */
    t = mint(JWT_ALG_RS256, rsa2_priv, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* bad signature: flip a character in the signature */
    t = mint(JWT_ALG_RS256, rsa1_priv, NULL, GOOD);
    char *last = t + strlen(t) - 5;
    *last = *last == 'A' ? 'B' : 'A';
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* payload swapped under a valid signature */
    char *t1 = mint(JWT_ALG_RS256, rsa1_priv, NULL, GOOD);
    char *t2 = mint(JWT_ALG_RS256, rsa1_priv, NULL, "{\"sub\":\"admin\",\"exp\":1700000600}");
    char forged[4096];
    const char *d1 = strchr(t1, '.'), *d2 = strchr(t2, '.'), *s1 = strrchr(t1, '.');
    snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(d1 - t1), t1, (int)(strrchr(t2, '.') - d2),
             d2, s1);
    assert_string_equal(verify(a, forged), "token_invalid");
    free(t1);
    free(t2);
    wsb_auth_unref(a);
}

static void test_certificate_key(void **state)
{
    struct conf_keys k = {.keys = {{.file = cert_file}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    char *t = mint(JWT_ALG_RS256, rsa2_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    wsb_auth_unref(a);
}

static void test_reject_malformed(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    const char *bad[] = {"abc",      "a.b",         "a.b.c.d",     "....",
                         "!!.!!.!!", "eyJ.eyJ.sig", "e30.e30.c2ln" /* {} header: no alg */};
    (void)state;
    assert_string_equal(verify(a, NULL), "token_missing");
    assert_string_equal(verify(a, ""), "token_missing");
    for (size_t i = 0; i < WSB_ARRAY_LEN(bad); i++)
        assert_string_equal(verify(a, bad[i]), "token_malformed");
    /* header is not JSON / payload is not an object */
    char *t = unsigned_token("{\"alg\":\"HS256\"", GOOD, "c2ln");
    assert_string_equal(verify(a, t), "token_malformed");
    free(t);
    t = unsigned_token("{\"alg\":\"HS256\"}", "[1]", "c2ln");
    assert_string_equal(verify(a, t), "token_malformed");
    free(t);
    /* duplicate alg member */
    t = unsigned_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", GOOD, "c2ln");
    assert_string_equal(verify(a, t), "token_malformed");
    free(t);
    /* RFC 7515 §4.1.11 crit */
    t = unsigned_token("{\"alg\":\"HS256\",\"crit\":[\"x\"],\"x\":1}", GOOD, "c2ln");
    assert_string_equal(verify(a, t), "token_malformed");
    free(t);
    /* too long */
    char *huge = malloc(WSB_TOKEN_MAX + 2);
    memset(huge, 'a', WSB_TOKEN_MAX + 1);
    huge[WSB_TOKEN_MAX + 1] = '\0';
    assert_string_equal(verify(a, huge), "token_malformed");
    free(huge);
    wsb_auth_unref(a);
}

static void test_reject_alg(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}, {.file = rsa1_file}}, .n = 2};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a;
    (void)state;
    c.algorithms = WSB_ALG_HS256 | WSB_ALG_RS256;
    a = new_auth(&c);
    /* alg none, with and without a signature part */
    char *t = unsigned_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", GOOD, "");
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    t = unsigned_token("{\"alg\":\"none\"}", GOOD, "c2ln");
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    t = unsigned_token("{\"alg\":\"None\"}", GOOD, "c2ln");
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    /* not in the allow-list */
    t = mint(JWT_ALG_HS512, SECRET, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    /* The classic confusion: HS256 with the RSA public key PEM as secret. */
    t = mint(JWT_ALG_HS256, rsa1_pub_pem, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    wsb_auth_unref(a);

    /* Only the RSA key configured: the same forgery finds no key of the HMAC type. */
    struct conf_keys k2 = {.keys = {{.file = rsa1_file}}, .n = 1};
    c = base_conf(&k2);
    c.algorithms = WSB_ALG_HS256 | WSB_ALG_RS256;
    a = new_auth(&c);
    t = mint(JWT_ALG_HS256, rsa1_pub_pem, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    wsb_auth_unref(a);
}

static void test_es_curves(void **state)
{
    struct conf_keys k = {.keys = {{.file = ec256_file}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    /* ES384 token against a P-256 key only */
    char *t = mint(JWT_ALG_ES384, ec384_priv, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    wsb_auth_unref(a);
    /* and a P-384 key verifies it */
    struct conf_keys k2 = {.keys = {{.file = ec384_file}, {.file = ec256_file}}, .n = 2};
    c = base_conf(&k2);
    a = new_auth(&c);
    t = mint(JWT_ALG_ES384, ec384_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_ES256, ec256_priv, NULL, GOOD);
    assert_null(verify(a, t));
    free(t);
    wsb_auth_unref(a);
}

static void test_claims(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a;
    static const struct {
        const char *claims;
        const char *code;
    } cases[] = {
        {"{\"sub\":\"u\",\"exp\":1699999000}", "token_expired"},
        {"{\"sub\":\"u\",\"exp\":1699999970}", "token_expired"}, /* exactly at exp + leeway */
        {"{\"sub\":\"u\",\"exp\":1699999971}", NULL},            /* within leeway */
        {"{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000100}", "token_not_yet_valid"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":1700000030}", NULL},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iat\":1700000100}", "token_not_yet_valid"},
        {"{\"sub\":\"u\",\"exp\":\"soon\"}", "token_invalid"},
        {"{\"sub\":\"u\",\"exp\":1700000600.5}", NULL},
        {"{\"sub\":\"u\",\"exp\":9223372036854775807}", NULL},
        {"{\"sub\":\"u\",\"exp\":-9223372036854775807}", "token_expired"},
        {"{\"sub\":\"u\",\"exp\":1e300}", NULL},
        {"{\"sub\":\"u\"}", "token_exp_required"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://evil/\",\"aud\":\"wsb\"}",
         "token_issuer"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"aud\":\"wsb\"}", "token_issuer"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://auth/\",\"aud\":\"other\"}",
         "token_audience"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://auth/\",\"aud\":[\"a\",\"b\"]}",
         "token_audience"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://auth/\"}", "token_audience"},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://auth/\",\"aud\":\"wsb\"}", NULL},
        {"{\"sub\":\"u\",\"exp\":1700000600,\"iss\":\"https://auth/\",\"aud\":[\"x\",\"wsb\"]}",
         NULL},
    };
    (void)state;
    c.require_exp = true;
    c.issuer = "https://auth/";
    c.audience = "wsb";
    a = new_auth(&c);
    for (size_t i = 0; i < WSB_ARRAY_LEN(cases); i++) {
        char *t = mint(JWT_ALG_HS256, SECRET, NULL, cases[i].claims);
        const char *got = verify(a, t);
        /* Cases without iss/aud are only meaningful for the time checks; give them the
         * expected iss/aud unless the case is about iss/aud. */
        if (!strstr(cases[i].claims, "iss") && !strstr(cases[i].claims, "aud") && got &&
            strcmp(got, "token_issuer") == 0) {
            free(t);
            json_t *j = json_loads(cases[i].claims, 0, NULL);
            json_object_set_new(j, "iss", json_string("https://auth/"));
            json_object_set_new(j, "aud", json_string("wsb"));
            char *s = json_dumps(j, JSON_COMPACT);
            t = mint(JWT_ALG_HS256, SECRET, NULL, s);
            free(s);
            json_decref(j);
            got = verify(a, t);
        }
        if (cases[i].code == NULL && got)
            fail_msg("case %zu: %s rejected with %s", i, cases[i].claims, got);
        if (cases[i].code && (!got || strcmp(got, cases[i].code) != 0))
            fail_msg("case %zu: %s gave %s, want %s", i, cases[i].claims, got ? got : "ok",
                     cases[i].code);
        free(t);
    }
    wsb_auth_unref(a);
    /* without require_exp, a token without exp is fine */
    c.require_exp = false;
    c.issuer = NULL;
    c.audience = NULL;
    a = new_auth(&c);
    char *t = mint(JWT_ALG_HS256, SECRET, NULL, "{\"sub\":\"u\"}");
    assert_null(verify(a, t));
    free(t);
    wsb_auth_unref(a);
}

static void test_jwks_rotation(void **state)
{
    struct conf_keys k = {.n = 0};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a;
    (void)state;
    c.jwks_file = jwks_file;
    a = new_auth(&c);
    char *t = mint(JWT_ALG_RS256, rsa1_priv, "k1", GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_RS256, rsa2_priv, "k2", GOOD);
    assert_null(verify(a, t));
    free(t);
    /* k2 is restricted to RS256 by its "alg" */
    t = mint(JWT_ALG_RS384, rsa2_priv, "k2", GOOD);
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    /* signed by k2, claiming k1 */
    t = mint(JWT_ALG_RS256, rsa2_priv, "k1", GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* unknown kid, no kid-less keys */
    t = mint(JWT_ALG_RS256, rsa1_priv, "k9", GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* use=enc key is skipped */
    t = mint(JWT_ALG_RS256, rsa1_priv, "enc", GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* EC and oct members */
    t = mint(JWT_ALG_ES256, ec256_priv, "e1", GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_HS256, "jwks-oct-secret", "o1", GOOD);
    assert_null(verify(a, t));
    free(t);
    /* HS256 against the EC key's kid */
    t = mint(JWT_ALG_HS256, "jwks-oct-secret", "e1", GOOD);
    assert_string_equal(verify(a, t), "token_alg");
    free(t);
    /* no kid: only keys without a kid are tried, and every JWKS key here has one */
    t = mint(JWT_ALG_RS256, rsa2_priv, NULL, GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    wsb_auth_unref(a);

    /* kid-less inline secret next to the JWKS: used for tokens whose kid is unknown */
    struct conf_keys k2 = {.keys = {{.secret = SECRET}}, .n = 1};
    c = base_conf(&k2);
    c.jwks_file = jwks_file;
    a = new_auth(&c);
    t = mint(JWT_ALG_HS256, SECRET, "whatever", GOOD);
    assert_null(verify(a, t));
    free(t);
    t = mint(JWT_ALG_HS256, SECRET, "o1", GOOD);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    wsb_auth_unref(a);
}

static void test_new_errors(void **state)
{
    struct wsb_auth *a = NULL;
    char err[256];
    char missing[160], garbage[160];
    (void)state;
    snprintf(missing, sizeof(missing), "%s/nope.pem", dir);
    snprintf(garbage, sizeof(garbage), "%s/garbage.pem", dir);
    write_file(garbage, "not a key\n");

    struct conf_keys k = {.keys = {{.file = missing}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    assert_null(a);
    assert_non_null(strstr(err, "nope.pem"));

    k.keys[0].file = garbage;
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);

    /* both file and secret: error text never holds the secret */
    k.keys[0].secret = "super-secret-value";
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    assert_null(strstr(err, "super-secret-value"));
    k.keys[0].file = NULL;
    k.keys[0].secret = "";
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);

    /* only an RSA key, only HMAC algorithms allowed */
    k.keys[0].secret = NULL;
    k.keys[0].file = rsa1_file;
    c.algorithms = WSB_ALG_HS256;
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    assert_non_null(strstr(err, "algorithms"));

    /* no keys at all */
    struct conf_keys none = {.n = 0};
    c = base_conf(&none);
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);

    /* broken JWKS */
    c.jwks_file = garbage;
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    write_file(garbage, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"!!\",\"e\":\"AQAB\"}]}");
    assert_int_not_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    assert_null(a);

    /* auth disabled: an empty verifier is fine */
    c = base_conf(&none);
    c.enabled = false;
    assert_int_equal(wsb_auth_new(&c, &a, err, sizeof(err)), WSB_OK);
    wsb_auth_unref(a);
}

/* A compact JWS with the header given verbatim, signed here (not by libjwt, which always
 * writes typ "JWT"): HS* with `secret`, RS256/ES256 with `pkey`. Caller frees. */
static char *mint_hdr(const char *header, const char *claims, const char *secret, EVP_PKEY *pkey)
{
    char *tok = wsb_jws_mint_token(header, claims, secret, pkey);
    assert_non_null(tok);
    return tok;
}

/* RFC 9068 access tokens: typ JWT, at+jwt, application/at+jwt (any case) or absent. */
static void test_typ(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}, {.file = rsa1_file}, {.file = ec256_file}},
                          .n = 3};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    static const char *ok[] = {
        "{\"alg\":\"HS256\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256\",\"typ\":\"jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"AT+JWT\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"Application/At+Jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/jwt\"}",
    };
    static const char *bad[] = {
        "{\"alg\":\"HS256\",\"typ\":\"JOSE\"}",
        "{\"alg\":\"HS256\",\"typ\":\"dpop+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/application/at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt \"}",
        "{\"alg\":\"HS256\",\"typ\":\"\"}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"typ\":null}",
        "{\"alg\":\"HS256\",\"typ\":[\"JWT\"]}",
    };
    (void)state;
    for (size_t i = 0; i < WSB_ARRAY_LEN(ok); i++) {
        char *t = mint_hdr(ok[i], GOOD, SECRET, NULL);
        const char *got = verify(a, t);
        if (got)
            fail_msg("%s refused: %s", ok[i], got);
        free(t);
    }
    for (size_t i = 0; i < WSB_ARRAY_LEN(bad); i++) {
        char *t = mint_hdr(bad[i], GOOD, SECRET, NULL);
        const char *got = verify(a, t);
        if (!got || strcmp(got, "token_typ") != 0)
            fail_msg("%s: got %s, want token_typ", bad[i], got ? got : "accepted");
        free(t);
    }
    /* an escaped NUL in the header never parses (no "at+jwt\0anything") */
    char *t = mint_hdr("{\"alg\":\"HS256\",\"typ\":\"at+jwt\\u0000x\"}", GOOD, SECRET, NULL);
    assert_string_equal(verify(a, t), "token_malformed");
    free(t);
    /* the signature is still checked for an accepted typ */
    t = mint_hdr("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", GOOD, "other-secret", NULL);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    /* RSA and EC at+jwt tokens, signed by OpenSSL directly */
    t = mint_hdr("{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", GOOD, NULL, rsa1);
    assert_null(verify(a, t));
    free(t);
    t = mint_hdr("{\"alg\":\"ES256\",\"typ\":\"application/at+jwt\"}", GOOD, NULL, ec256);
    assert_null(verify(a, t));
    free(t);
    t = mint_hdr("{\"alg\":\"RS256\",\"typ\":\"at+jwt\"}", GOOD, NULL, rsa2);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    EVP_PKEY *ec_other = EVP_EC_gen("P-256");
    t = mint_hdr("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", GOOD, NULL, ec_other);
    EVP_PKEY_free(ec_other);
    assert_string_equal(verify(a, t), "token_invalid");
    free(t);
    wsb_auth_unref(a);
}

/* An ECDSA signature must be exactly R || S of the curve's size (RFC 7518 §3.4): a DER
 * signature, a truncated one or one with a zero R never verifies. */
static void test_es_signature_form(void **state)
{
    struct conf_keys k = {.keys = {{.file = ec256_file}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    char *t = mint(JWT_ALG_ES256, ec256_priv, NULL, GOOD);
    assert_null(verify(a, t));
    char *dot = strrchr(t, '.');
    char forged[4096];
    /* truncated signature */
    snprintf(forged, sizeof(forged), "%.*s", (int)(strlen(t) - 4), t);
    assert_string_equal(verify(a, forged), "token_invalid");
    /* all-zero R || S */
    unsigned char zero[64] = {0};
    char zb[128];
    wsb_jws_mint_b64url(zero, sizeof(zero), zb);
    snprintf(forged, sizeof(forged), "%.*s.%s", (int)(dot - t), t, zb);
    assert_string_equal(verify(a, forged), "token_invalid");
    free(t);
    wsb_auth_unref(a);
}

/* base64url text -> bytes (test helper; no padding, valid input only). */
static size_t b64url_dec(const char *in, unsigned char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (; *in; in++) {
        acc = (acc << 6) | (uint32_t)(strchr(tab, *in) - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

/* The verifier keeps one prepared OpenSSL context per thread, key and hash, and writes the
 * ECDSA DER form itself: R and S with a leading zero byte or the top bit set, a failed check
 * followed by a good one on the same context, every hash on one RSA key, and two verifiers
 * that give the same kid to different keys, used in turn on one thread. */
static void test_prepared_contexts(void **state)
{
    (void)state;
    /* ECDSA: sign until R or S starts with 0x00 (1 in 128 signatures) and until one starts
     * with the top bit set; each verifies, and fails with its last byte changed. */
    struct conf_keys k = {.keys = {{.file = ec256_file}}, .n = 1};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    bool zero = false, high = false;
    for (int i = 0; i < 4000 && !(zero && high); i++) {
        char claims[128];
        snprintf(claims, sizeof(claims), "{\"sub\":\"u%d\",\"exp\":1700000600}", i);
        char *t = mint_hdr("{\"alg\":\"ES256\"}", claims, NULL, ec256);
        unsigned char rs[96];
        assert_int_equal(b64url_dec(strrchr(t, '.') + 1, rs), 64);
        bool z = rs[0] == 0 || rs[32] == 0, h = (rs[0] & 0x80) || (rs[32] & 0x80);
        if ((z && !zero) || (h && !high) || i < 4) {
            assert_null(verify(a, t));
            char *last = t + strlen(t) - 2, was = *last; /* inside S */
            *last = was == 'A' ? 'B' : 'A';
            assert_string_equal(verify(a, t), "token_invalid");
            assert_int_equal(ERR_peek_error(), 0); /* nothing left for a TLS session */
            *last = was;
            assert_null(verify(a, t)); /* the same context after a failure */
            zero |= z;
            high |= h;
        }
        free(t);
    }
    assert_true(zero && high);
    wsb_auth_unref(a);

    /* RS256, RS384, RS512 in turn on one key: a context per hash. */
    struct conf_keys kr = {.keys = {{.file = rsa1_file}}, .n = 1};
    c = base_conf(&kr);
    a = new_auth(&c);
    const jwt_alg_t rs[] = {JWT_ALG_RS256, JWT_ALG_RS384, JWT_ALG_RS512, JWT_ALG_RS256};
    for (size_t i = 0; i < sizeof(rs) / sizeof(rs[0]); i++) {
        char *t = mint(rs[i], rsa1_priv, NULL, GOOD);
        assert_null(verify(a, t));
        char *last = t + strlen(t) - 3, was = *last;
        *last = was == 'A' ? 'B' : 'A';
        assert_string_equal(verify(a, t), "token_invalid");
        assert_int_equal(ERR_peek_error(), 0);
        *last = was;
        free(t);
    }
    wsb_auth_unref(a);

    /* Verifiers A (kid k = rsa1) and B (kid k = rsa2) in turn, as during a reload. */
    char rsa2_file[160];
    snprintf(rsa2_file, sizeof(rsa2_file), "%s/rsa2-prepared.pem", dir);
    char *pem = pub_pem(rsa2);
    write_file(rsa2_file, pem);
    free(pem);
    struct conf_keys ka = {.keys = {{.kid = "k", .file = rsa1_file}}, .n = 1};
    struct conf_keys kb = {.keys = {{.kid = "k", .file = rsa2_file}}, .n = 1};
    struct wsb_auth_conf ca = base_conf(&ka), cb = base_conf(&kb);
    struct wsb_auth *va = new_auth(&ca), *vb = new_auth(&cb);
    char *t1 = mint(JWT_ALG_RS256, rsa1_priv, "k", GOOD);
    char *t2 = mint(JWT_ALG_RS256, rsa2_priv, "k", GOOD);
    for (int i = 0; i < 3; i++) {
        assert_null(verify(va, t1));
        assert_string_equal(verify(vb, t1), "token_invalid");
        assert_null(verify(vb, t2));
        assert_string_equal(verify(va, t2), "token_invalid");
    }
    free(t1);
    free(t2);
    wsb_auth_unref(va);
    wsb_auth_unref(vb);
    unlink(rsa2_file);

    /* HMAC: one keyed context per thread, key and hash, reset for each token: every hash on
     * one secret, a forged MAC between two good ones, two secrets under one verifier (no kid:
     * both are candidates, the second one verifies), and two verifiers whose kid "h" names
     * different secrets, used in turn. */
    struct conf_keys kh = {
        .keys = {{.secret = "other-secret-0123456789abcdef-0123"}, {.secret = SECRET}}, .n = 2};
    c = base_conf(&kh);
    a = new_auth(&c);
    const jwt_alg_t hs[] = {JWT_ALG_HS256, JWT_ALG_HS384, JWT_ALG_HS512, JWT_ALG_HS256};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        char *t = mint(hs[i], SECRET, NULL, GOOD);
        assert_null(verify(a, t));
        char *last = t + strlen(t) - 3, was = *last;
        *last = was == 'A' ? 'B' : 'A';
        assert_string_equal(verify(a, t), "token_invalid");
        *last = was;
        assert_null(verify(a, t));
        free(t);
    }
    wsb_auth_unref(a);
    struct conf_keys kha = {.keys = {{.kid = "h", .secret = SECRET}}, .n = 1};
    struct conf_keys khb = {.keys = {{.kid = "h", .secret = "other-secret-0123456789abcdef-0123"}},
                            .n = 1};
    ca = base_conf(&kha);
    cb = base_conf(&khb);
    va = new_auth(&ca);
    vb = new_auth(&cb);
    t1 = mint(JWT_ALG_HS256, SECRET, "h", GOOD);
    t2 = mint(JWT_ALG_HS256, "other-secret-0123456789abcdef-0123", "h", GOOD);
    for (int i = 0; i < 3; i++) {
        assert_null(verify(va, t1));
        assert_string_equal(verify(vb, t1), "token_invalid");
        assert_null(verify(vb, t2));
        assert_string_equal(verify(va, t2), "token_invalid");
    }
    free(t1);
    free(t2);
    wsb_auth_unref(va);
    wsb_auth_unref(vb);
}

/* The verified-token cache's set of a token (auth/jwt.c: SHA-256 of the token, its first
 * three bytes modulo the 512 sets). */
static unsigned vcache_set_of(const char *tok)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(tok, strlen(tok), d, &n, EVP_sha256(), NULL), 1);
    return ((unsigned)d[0] | (unsigned)d[1] << 8 | (unsigned)d[2] << 16) % 512;
}

static void checks_at(struct wsb_auth *a, const char *tok, const char *want_code,
                      unsigned long want_checks, int line)
{
    unsigned long before = wsb_auth_signature_checks();
    const char *got = verify(a, tok);
    if (want_code == NULL ? got != NULL : (!got || strcmp(got, want_code) != 0))
        fail_msg("line %d: got %s, want %s", line, got ? got : "ok", want_code ? want_code : "ok");
    if (wsb_auth_signature_checks() - before != want_checks)
        fail_msg("line %d: %lu signature checks, want %lu", line,
                 wsb_auth_signature_checks() - before, want_checks);
}
#define CHECKS(a, t, code, n) checks_at(a, t, code, n, __LINE__)

/* A token without kid is tried only against keys without kid (docs/auth.md §3), each at most
 * once: the signature checks per token are counted. */
static void test_kid_candidates_counted(void **state)
{
    struct conf_keys k = {.keys = {{.secret = "kidless-one-0123456789abcdef"},
                                   {.kid = "h1", .secret = "kid-h1-secret-0123456789abcdef"},
                                   {.secret = "kidless-two-0123456789abcdef"},
                                   {.kid = "r1", .file = rsa1_file}},
                          .n = 4};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    /* no kid, second kid-less secret: the kid-less keys in order, never h1 */
    char *t = mint(JWT_ALG_HS256, "kidless-two-0123456789abcdef", NULL, GOOD);
    CHECKS(a, t, NULL, 2);
    free(t);
    t = mint(JWT_ALG_HS256, "kidless-one-0123456789abcdef", NULL, GOOD);
    CHECKS(a, t, NULL, 1);
    free(t);
    /* no kid, signed with h1's secret: h1 is never a candidate */
    t = mint(JWT_ALG_HS256, "kid-h1-secret-0123456789abcdef", NULL, GOOD);
    CHECKS(a, t, "token_invalid", 2);
    free(t);
    /* kid h1: only h1 */
    t = mint(JWT_ALG_HS256, "kid-h1-secret-0123456789abcdef", "h1", GOOD);
    CHECKS(a, t, NULL, 1);
    free(t);
    t = mint(JWT_ALG_HS256, "kidless-one-0123456789abcdef", "h1", GOOD);
    CHECKS(a, t, "token_invalid", 1);
    free(t);
    /* an unknown kid falls back to the kid-less keys */
    t = mint(JWT_ALG_HS256, "kidless-two-0123456789abcdef", "zz", GOOD);
    CHECKS(a, t, NULL, 2);
    free(t);
    /* RS256 without kid: the only RSA key has a kid, so no candidate of the alg's type and
     * no signature check at all */
    t = mint(JWT_ALG_RS256, rsa1_priv, NULL, GOOD);
    CHECKS(a, t, "token_alg", 0);
    free(t);
    t = mint(JWT_ALG_RS256, rsa1_priv, "r1", GOOD);
    CHECKS(a, t, NULL, 1);
    free(t);
    /* refusals before the signature (alg, typ, malformed) cost no check */
    t = mint_hdr("{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", GOOD, "kidless-one-0123456789abcdef",
                 NULL);
    CHECKS(a, t, "token_typ", 0);
    free(t);
    wsb_auth_unref(a);
}

struct thread_arg {
    struct wsb_auth *a;
    char *tokens[3];
    int failures;
};

static void *verify_loop(void *p)
{
    struct thread_arg *t = p;
    for (int i = 0; i < 50; i++)
        for (int j = 0; j < 3; j++) {
            struct wsb_identity *id = NULL;
            const char *code;
            if (wsb_auth_verify(t->a, t->tokens[j], strlen(t->tokens[j]), NOW, &id, &code) !=
                WSB_OK)
                t->failures++;
            wsb_identity_unref(id);
        }
    return NULL;
}

/* Two loop threads verify at once with shared, immutable key material. */
/* The verified-token cache: a repeated RS/ES token costs no signature check, until its exp;
 * the claims are still checked every time; any other token (a changed signature or payload)
 * gets the full check; HMAC tokens and tokens without exp are never cached; a new verifier
 * (a reload) never sees the old one's entries. */
static void test_verified_cache(void **state)
{
    struct conf_keys k = {.keys = {{.kid = "r1", .file = rsa1_file},
                                   {.kid = "e1", .file = ec256_file},
                                   {.secret = SECRET}},
                          .n = 3};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    struct wsb_identity *id = NULL;
    const char *code = NULL;
    (void)state;

    /* The cache is 2-way sets chosen by the token's digest, and the keys (so the tokens) are
     * new each run: start from an empty cache, and draw the other cached tokens until none
     * shares rs's set (with rs's entries for two verifiers, a third would evict one). */
    wsb_auth_cache_clear();
    char *rs = mint(JWT_ALG_RS256, rsa1_priv, "r1", GOOD);
    unsigned long hits = wsb_auth_cache_hits();
    CHECKS(a, rs, NULL, 1);
    CHECKS(a, rs, NULL, 0);
    CHECKS(a, rs, NULL, 0);
    assert_int_equal(wsb_auth_cache_hits() - hits, 2);
    /* the claims are checked on a hit: at exp (+ leeway 30) the cached token is expired */
    assert_int_equal(wsb_auth_verify(a, rs, strlen(rs), 1700000630, &id, &code), WSB_ERR_AUTH);
    assert_string_equal(code, "token_expired");
    assert_null(id);
    /* a hit gives the same identity as a full check */
    assert_int_equal(wsb_auth_verify(a, rs, strlen(rs), NOW, &id, &code), WSB_OK);
    assert_string_equal(id->sub, "u1");
    assert_int_equal(id->exp, 1700000600);
    wsb_identity_unref(id);

    /* one signature character changed: not the cached token, the full check refuses it */
    char *forged = strdup(rs);
    char *sig = strrchr(forged, '.') + 5;
    *sig = *sig == 'A' ? 'B' : 'A';
    CHECKS(a, forged, "token_invalid", 1);
    CHECKS(a, forged, "token_invalid", 1); /* failures are never cached */
    free(forged);
    /* the cached token's signature on another payload */
    char *other = NULL;
    for (int iat = 1700000000; !other || vcache_set_of(other) == vcache_set_of(rs); iat++) {
        char claims[128];
        snprintf(claims, sizeof(claims), "{\"sub\":\"admin\",\"exp\":1700000600,\"iat\":%d}", iat);
        free(other);
        other = mint(JWT_ALG_RS256, rsa1_priv, "r1", claims);
    }
    const char *dot1 = strchr(other, '.'), *dot2 = strrchr(other, '.');
    char spliced[8192];
    snprintf(spliced, sizeof(spliced), "%.*s%s", (int)(dot2 - other), other, strrchr(rs, '.'));
    (void)dot1;
    CHECKS(a, spliced, "token_invalid", 1);
    CHECKS(a, other, NULL, 1);
    free(other);

    /* ES256 is cached too */
    char *es = NULL;
    while (!es || vcache_set_of(es) == vcache_set_of(rs)) { /* ES256 signatures are random */
        free(es);
        es = mint(JWT_ALG_ES256, ec256_priv, "e1", GOOD);
    }
    CHECKS(a, es, NULL, 1);
    CHECKS(a, es, NULL, 0);
    free(es);
    /* HMAC: never cached (hashing the token costs what the HMAC does) */
    char *hs = mint(JWT_ALG_HS256, SECRET, NULL, GOOD);
    CHECKS(a, hs, NULL, 1);
    CHECKS(a, hs, NULL, 1);
    free(hs);
    /* no exp: never cached */
    char *noexp = mint(JWT_ALG_RS256, rsa1_priv, "r1", "{\"sub\":\"u1\"}");
    CHECKS(a, noexp, NULL, 1);
    CHECKS(a, noexp, NULL, 1);
    free(noexp);

    /* a reload: a new verifier (even with the same key) never answers from the old one's
     * entries; with an ES key as r1 it refuses the cached RS256 token */
    struct conf_keys k2 = {.keys = {{.kid = "r1", .file = rsa1_file}}, .n = 1};
    struct wsb_auth_conf c2 = base_conf(&k2);
    struct wsb_auth *a2 = new_auth(&c2);
    CHECKS(a2, rs, NULL, 1);
    CHECKS(a2, rs, NULL, 0);
    wsb_auth_unref(a2);
    struct conf_keys k3 = {.keys = {{.kid = "r1", .file = ec256_file}}, .n = 1};
    struct wsb_auth_conf c3 = base_conf(&k3);
    a2 = new_auth(&c3);
    CHECKS(a2, rs, "token_alg", 0);
    CHECKS(a, rs, NULL, 0);
    wsb_auth_unref(a2);
    free(rs);
    wsb_auth_unref(a);
}

/* The header cache (one thread's last headers, by their text): a cached header gives the
 * same answers as parsing it, and every other check still runs on each token. */
static void test_header_cache(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}, {.kid = "r1", .file = rsa1_file}}, .n = 2};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    (void)state;
    /* The same header text many times over: accepted each time; a forged MAC, a wrong
     * secret or a bad claim under that cached header are still refused. */
    char *good = mint(JWT_ALG_HS256, SECRET, NULL, GOOD);
    for (int i = 0; i < 3; i++)
        assert_null(verify(a, good));
    char *forged = strdup(good);
    forged[strlen(forged) - 2] ^= 1;
    assert_string_equal(verify(a, forged), "token_invalid");
    char *other = mint(JWT_ALG_HS256, "another-secret", NULL, GOOD);
    assert_string_equal(verify(a, other), "token_invalid");
    char *expired = mint(JWT_ALG_HS256, SECRET, NULL, "{\"sub\":\"u1\",\"exp\":1600000000}");
    assert_string_equal(verify(a, expired), "token_expired");
    /* The allow-list is the verifier's: a header cached under one that allows HS256 is
     * token_alg under one that does not. */
    struct wsb_auth_conf c2 = base_conf(&k);
    c2.algorithms = WSB_ALG_RS256;
    struct wsb_auth *a2 = new_auth(&c2);
    assert_string_equal(verify(a2, good), "token_alg");
    assert_null(verify(a, good));
    /* A kid is kept with its header: r1 names the RSA key, which has no HMAC type. */
    char *kid = mint(JWT_ALG_HS256, SECRET, "r1", GOOD);
    for (int i = 0; i < 2; i++)
        assert_string_equal(verify(a, kid), "token_alg");
    char *rs = mint(JWT_ALG_RS256, rsa1_priv, "r1", GOOD);
    for (int i = 0; i < 2; i++)
        assert_null(verify(a, rs));
    /* Refused headers are never cached: the same text is refused every time, and the
     * headers it would have evicted are still right. */
    for (int i = 0; i < 2 * 4 + 1; i++) {
        char *t = unsigned_token("{\"alg\":\"none\"}", GOOD, "c2ln");
        assert_string_equal(verify(a, t), "token_alg");
        free(t);
        t = unsigned_token("{\"alg\":\"HS256\",\"typ\":\"xml\"}", GOOD, "c2ln");
        assert_string_equal(verify(a, t), "token_typ");
        free(t);
        t = unsigned_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", GOOD, "c2ln");
        assert_string_equal(verify(a, t), "token_malformed");
        free(t);
        t = unsigned_token("{\"alg\":\"HS256\",\"kid\":7}", GOOD, "c2ln");
        assert_string_equal(verify(a, t), "token_malformed");
        free(t);
    }
    /* More headers than ways: each is right whether it was evicted or not. */
    char kids[6][8];
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 6; i++) {
            snprintf(kids[i], sizeof(kids[i]), "x%d", i);
            char *t = mint(JWT_ALG_HS256, SECRET, kids[i], GOOD); /* no key has kid x<i> */
            assert_null(verify(a, t));
            free(t);
        }
    assert_null(verify(a, good));
    free(good);
    free(forged);
    free(other);
    free(expired);
    free(kid);
    free(rs);
    wsb_auth_unref(a2);
    wsb_auth_unref(a);
}

static void test_threads(void **state)
{
    struct conf_keys k = {.keys = {{.secret = SECRET}, {.file = rsa1_file}, {.file = ec256_file}},
                          .n = 3};
    struct wsb_auth_conf c = base_conf(&k);
    struct wsb_auth *a = new_auth(&c);
    struct thread_arg args[4];
    pthread_t th[4];
    char *tokens[3] = {mint(JWT_ALG_HS256, SECRET, NULL, GOOD),
                       mint(JWT_ALG_RS256, rsa1_priv, NULL, GOOD),
                       mint(JWT_ALG_ES256, ec256_priv, NULL, GOOD)};
    (void)state;
    for (int i = 0; i < 4; i++) {
        args[i] =
            (struct thread_arg){.a = wsb_auth_ref(a), .tokens = {tokens[0], tokens[1], tokens[2]}};
        assert_int_equal(pthread_create(&th[i], NULL, verify_loop, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
        wsb_auth_unref(args[i].a);
    }
    for (int i = 0; i < 3; i++)
        free(tokens[i]);
    wsb_auth_unref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_hs),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_accept_rs_es),
        cmocka_unit_test(test_certificate_key),
        cmocka_unit_test(test_reject_malformed),
        cmocka_unit_test(test_reject_alg),
        cmocka_unit_test(test_es_curves),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_jwks_rotation),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_typ),
        cmocka_unit_test(test_es_signature_form),
        cmocka_unit_test(test_prepared_contexts),
        cmocka_unit_test(test_kid_candidates_counted),
        cmocka_unit_test(test_verified_cache),
        cmocka_unit_test(test_header_cache),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
