/* libFuzzer target: random token strings against a fixed HS256 secret, an RSA key and two EC
 * keys. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth/jwt.h"

static struct wsb_auth *auth;

static void write_key(char *path, EVP_PKEY *k)
{
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || !k || !PEM_write_PUBKEY(f, k))
        abort();
    fclose(f);
    EVP_PKEY_free(k);
}

/* An HS256 secret and a P-256 and a P-384 key without kid (so kid-less ES tokens reach the
 * ECDSA path: R || S to DER, the prepared verify context), an RSA key with kid r1. */
static void setup(void)
{
    char path[] = "/tmp/wsb_jwt_fuzz.XXXXXX", ec256[] = "/tmp/wsb_jwt_fuzz.XXXXXX",
         ec384[] = "/tmp/wsb_jwt_fuzz.XXXXXX";
    char err[256];

    write_key(path, EVP_RSA_gen(2048));
    write_key(ec256, EVP_EC_gen("P-256"));
    write_key(ec384, EVP_EC_gen("P-384"));
    struct wsb_key_conf keys[] = {
        {.secret = "fuzz-secret"}, {.kid = "r1", .file = path}, {.file = ec256}, {.file = ec384}};
    struct wsb_auth_conf conf = {.enabled = true,
                                 .algorithms = 0xff,
                                 .keys = keys,
                                 .nkeys = 4,
                                 .issuer = "iss",
                                 .audience = "aud",
                                 .leeway_s = 5,
                                 .require_exp = true};
    if (wsb_auth_new(&conf, &auth, err, sizeof(err)) != WSB_OK)
        abort();
    unlink(path);
    unlink(ec256);
    unlink(ec384);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wsb_identity *id = NULL;
    const char *code = NULL;

    if (!auth)
        setup();
    enum wsb_err rc = wsb_auth_verify(auth, (const char *)data, size, 1700000000, &id, &code);
    if (rc == WSB_OK) {
        if (!id || code || !id->claims)
            abort();
        wsb_identity_unref(id);
    } else if (id || !code) {
        abort();
    }
    return 0;
}
