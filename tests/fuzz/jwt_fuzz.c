/* libFuzzer target: random token strings against a fixed HS256 secret and an RSA key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth/jwt.h"

static struct wsb_auth *auth;

static void setup(void)
{
    char path[] = "/tmp/wsb_jwt_fuzz.XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    char err[256];

    if (!f || !rsa || !PEM_write_PUBKEY(f, rsa))
        abort();
    fclose(f);
    EVP_PKEY_free(rsa);
    struct wsb_key_conf keys[] = {{.secret = "fuzz-secret"}, {.kid = "r1", .file = path}};
    struct wsb_auth_conf conf = {.enabled = true,
                                 .algorithms = 0xff,
                                 .keys = keys,
                                 .nkeys = 2,
                                 .issuer = "iss",
                                 .audience = "aud",
                                 .leeway_s = 5,
                                 .require_exp = true};
    if (wsb_auth_new(&conf, &auth, err, sizeof(err)) != WSB_OK)
        abort();
    unlink(path);
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
