/* wsb-jwt-bench: JWT verifications per CPU-second (per core), per algorithm, through
 * wsb_auth_verify (auth/jwt.c: parse, key choice, signature, claims, identity) next to the
 * bare signature check with every OpenSSL object prepared in advance (the floor that no
 * change to jwt.c can go under). Keys are generated and tokens minted at start-up; the
 * verifier is built from PEM files as the bridge builds it.
 *
 *   wsb-jwt-bench [--tokens N] [--seconds S] [--threads T] [--alg HS256,RS256,ES256]
 *                 [--mode distinct|reused|raw]
 *
 * "distinct": N distinct tokens, each verified once per pass, a fresh verifier every pass,
 * so the verified-token cache never answers (the JSON shows cache_hits: 0). "reused": one
 * token again and again (the cache answers RS/ES). "raw": EVP_PKEY_verify of a precomputed
 * SHA-256 digest with a context made once (RS/ES only). With --threads T, T threads run the
 * same loop at once (lock contention inside OpenSSL shows up as a lower per-core rate).
 * Prints one JSON line per algorithm and mode; rates are per CPU-second of the thread. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "auth/jwt.h"
#include "tests/support/jws_mint.h"

#define SECRET "bench-hmac-secret-0123456789abcdef-0123456"

static char dir[64];
static char rsa_file[128], ec_file[128];
static EVP_PKEY *rsa_key, *ec_key;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "wsb-jwt-bench: %s\n", what);
    exit(1);
}

/* A token like the benchmark suite's: kid, iss, aud, sub, iat, exp. Returns a new string. */
static char *mint(const char *alg, int i)
{
    char hdr[128], body[256], *tok;
    const char *kid = strcmp(alg, "RS256") == 0   ? ",\"kid\":\"r1\""
                      : strcmp(alg, "ES256") == 0 ? ",\"kid\":\"e1\""
                                                  : "";
    long now = (long)time(NULL);

    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"%s}", alg, kid);
    snprintf(body, sizeof(body),
             "{\"iss\":\"https://bench/\",\"aud\":\"wsbridge\",\"sub\":\"bench-%d\","
             "\"iat\":%ld,\"exp\":%ld}",
             i, now, now + 3600);
    tok = wsb_jws_mint_token(hdr, body, strcmp(alg, "HS256") == 0 ? SECRET : NULL,
                             strcmp(alg, "RS256") == 0 ? rsa_key : ec_key);
    if (!tok)
        die("minting failed");
    return tok;
}

/* The "raw" mode's input: a SHA-256 digest and its signature in OpenSSL's form (DER for
 * ECDSA), made with the private key. */
static void raw_input(const char *alg, unsigned char *der, size_t *derlen, unsigned char digest[32])
{
    static const char msg[] = "wsb-jwt-bench raw verification input";
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_PKEY *k = strcmp(alg, "RS256") == 0 ? rsa_key : ec_key;
    *derlen = 512;
    if (!c || EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(c, der, derlen, (const unsigned char *)msg, strlen(msg)) != 1 ||
        EVP_Digest(msg, strlen(msg), digest, NULL, EVP_sha256(), NULL) != 1)
        die("signing failed");
    EVP_MD_CTX_free(c);
}

static struct wsb_auth *new_auth(unsigned algs)
{
    struct wsb_key_conf keys[3] = {
        {.kid = "r1", .file = rsa_file},
        {.kid = "e1", .file = ec_file},
        {.secret = SECRET},
    };
    struct wsb_auth_conf c = {
        .enabled = true,
        .algorithms = algs,
        .keys = keys,
        .nkeys = 3,
        .issuer = "https://bench/",
        .audience = "wsbridge",
        .leeway_s = 30,
    };
    struct wsb_auth *a = NULL;
    char err[256];
    if (wsb_auth_new(&c, &a, err, sizeof(err)) != WSB_OK)
        die(err);
    return a;
}

struct job {
    const char *alg, *mode;
    char **tokens;
    size_t ntokens;
    double seconds;
    unsigned char der[512];
    size_t derlen;
    unsigned char digest[32];
    /* results */
    unsigned long n, hits, fails;
    double cpu;
};

static void *run(void *p)
{
    struct job *j = p;
    unsigned long hits0 = wsb_auth_cache_hits();
    double t0 = cpu_now(), t;
    int64_t now = (int64_t)time(NULL);

    if (strcmp(j->mode, "raw") == 0) {
        EVP_PKEY *k = strcmp(j->alg, "RS256") == 0 ? rsa_key : ec_key;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
        if (!pc || EVP_PKEY_verify_init(pc) != 1 ||
            EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) != 1)
            die("raw setup failed");
        if (strcmp(j->alg, "RS256") == 0 &&
            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1)
            die("raw setup failed");
        do {
            for (int i = 0; i < 64; i++, j->n++)
                if (EVP_PKEY_verify(pc, j->der, j->derlen, j->digest, 32) != 1)
                    j->fails++;
        } while ((t = cpu_now()) - t0 < j->seconds);
        EVP_PKEY_CTX_free(pc);
    } else {
        unsigned algs = strcmp(j->alg, "RS256") == 0   ? WSB_ALG_RS256
                        : strcmp(j->alg, "ES256") == 0 ? WSB_ALG_ES256
                                                       : WSB_ALG_HS256;
        bool distinct = strcmp(j->mode, "distinct") == 0;
        struct wsb_auth *a = new_auth(algs);
        double setup = 0; /* building verifiers between passes is not counted */
        do {
            size_t n = distinct ? j->ntokens : 64;
            for (size_t i = 0; i < n; i++, j->n++) {
                const char *tok = j->tokens[distinct ? i : 0], *code = NULL;
                struct wsb_identity *id = NULL;
                if (wsb_auth_verify(a, tok, strlen(tok), now, &id, &code) != WSB_OK)
                    j->fails++;
                wsb_identity_unref(id);
            }
            if (distinct) {
                double s0 = cpu_now();
                wsb_auth_unref(a);
                a = new_auth(algs);
                setup += cpu_now() - s0;
            }
        } while ((t = cpu_now()) - t0 - setup < j->seconds);
        t -= setup;
        wsb_auth_unref(a);
    }
    j->cpu = t - t0;
    j->hits = wsb_auth_cache_hits() - hits0;
    return NULL;
}

int main(int argc, char **argv)
{
    size_t ntokens = 2000;
    double seconds = 2.0;
    int threads = 1;
    char algs[64] = "HS256,RS256,ES256";
    const char *only = NULL; /* --mode: one of distinct, reused, raw */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--tokens") == 0)
            ntokens = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--alg") == 0)
            snprintf(algs, sizeof(algs), "%s", argv[i + 1]);
        else if (strcmp(argv[i], "--mode") == 0)
            only = argv[i + 1];
        else {
            fprintf(stderr, "usage: wsb-jwt-bench [--tokens N] [--seconds S] [--threads T] "
                            "[--alg HS256,RS256,ES256] [--mode distinct|reused|raw]\n");
            return 2;
        }
    }
    if (ntokens < 1 || threads < 1 || threads > 64)
        die("bad arguments");
    snprintf(dir, sizeof(dir), "/tmp/wsb-jwt-bench-XXXXXX");
    if (!mkdtemp(dir))
        die("mkdtemp failed");
    snprintf(rsa_file, sizeof(rsa_file), "%s/r1.pem", dir);
    snprintf(ec_file, sizeof(ec_file), "%s/e1.pem", dir);
    rsa_key = EVP_RSA_gen(2048);
    ec_key = EVP_EC_gen("P-256");
    if (!rsa_key || !ec_key)
        die("key generation failed");
    if (wsb_jws_mint_write_pubkey(rsa_key, rsa_file) < 0 ||
        wsb_jws_mint_write_pubkey(ec_key, ec_file) < 0)
        die("cannot write a key file");

    for (char *alg = strtok(algs, ","); alg; alg = strtok(NULL, ",")) {
        char **tokens = calloc(ntokens, sizeof(*tokens));
        unsigned char der[512], digest[32];
        size_t derlen = 0;
        if (!tokens)
            die("out of memory");
        for (size_t i = 0; i < ntokens; i++)
            tokens[i] = mint(alg, (int)i);
        if (strcmp(alg, "HS256") != 0)
            raw_input(alg, der, &derlen, digest);
        const char *modes[] = {"distinct", "reused", "raw"};
        for (size_t m = 0; m < 3; m++) {
            if ((m == 2 && strcmp(alg, "HS256") == 0) || (only && strcmp(only, modes[m]) != 0))
                continue;
            struct job *jobs = calloc((size_t)threads, sizeof(*jobs));
            pthread_t *tid = calloc((size_t)threads, sizeof(*tid));
            for (int t = 0; t < threads; t++) {
                jobs[t] = (struct job){.alg = alg,
                                       .mode = modes[m],
                                       .tokens = tokens,
                                       .ntokens = ntokens,
                                       .seconds = seconds,
                                       .derlen = derlen};
                memcpy(jobs[t].der, der, derlen);
                memcpy(jobs[t].digest, digest, 32);
                pthread_create(&tid[t], NULL, run, &jobs[t]);
            }
            unsigned long n = 0, hits = 0, fails = 0;
            double cpu = 0;
            for (int t = 0; t < threads; t++) {
                pthread_join(tid[t], NULL);
                n += jobs[t].n;
                hits += jobs[t].hits;
                fails += jobs[t].fails;
                cpu += jobs[t].cpu;
            }
            printf("{\"alg\":\"%s\",\"mode\":\"%s\",\"threads\":%d,\"verifies\":%lu,"
                   "\"cpu_s\":%.3f,\"per_core_per_s\":%.0f,\"us_each\":%.2f,"
                   "\"cache_hits\":%lu,\"failures\":%lu}\n",
                   alg, modes[m], threads, n, cpu, n / cpu, 1e6 * cpu / (double)n, hits, fails);
            fflush(stdout);
            free(jobs);
            free(tid);
        }
        for (size_t i = 0; i < ntokens; i++)
            free(tokens[i]);
        free(tokens);
    }
    unlink(rsa_file);
    unlink(ec_file);
    rmdir(dir);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ec_key);
    return 0;
}
