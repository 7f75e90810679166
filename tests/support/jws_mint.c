/* Compact JWS minting and key files for the JWT tests and benchmark (jws_mint.h). */
#include "tests/support/jws_mint.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

size_t wsb_jws_mint_b64url(const unsigned char *p, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits)
        out[o++] = tab[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

char *wsb_jws_mint_pubkey_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *mem, *s = NULL;
    long n;
    if (b && PEM_write_bio_PUBKEY(b, k) && (n = BIO_get_mem_data(b, &mem)) >= 0 &&
        (s = malloc((size_t)n + 1))) {
        memcpy(s, mem, (size_t)n);
        s[n] = '\0';
    }
    BIO_free(b);
    return s;
}

int wsb_jws_mint_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc;
}

int wsb_jws_mint_write_pubkey(EVP_PKEY *k, const char *path)
{
    char *pem = wsb_jws_mint_pubkey_pem(k);
    int rc = pem ? wsb_jws_mint_write_file(path, pem) : -1;
    free(pem);
    return rc;
}

/* An ECDSA signature from OpenSSL (DER) as JWS wants it: R || S, each `coord` bytes. */
static int der_to_rs(const unsigned char *der, size_t len, size_t coord, unsigned char *rs)
{
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    int ok = es && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, (int)coord) == (int)coord &&
             BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + coord, (int)coord) == (int)coord;
    ECDSA_SIG_free(es);
    return ok ? 0 : -1;
}

char *wsb_jws_mint_token(const char *header, const char *claims, const char *secret, EVP_PKEY *pkey)
{
    size_t hlen = strlen(header), clen = strlen(claims);
    char *input = malloc(2 * (hlen + clen) + 8), *tok = NULL;
    unsigned char sig[1024], der[1024];
    size_t siglen = sizeof(sig), dlen = sizeof(der);
    char sigb[sizeof(sig) * 4 / 3 + 4];

    if (!input)
        return NULL;
    size_t n = wsb_jws_mint_b64url((const unsigned char *)header, hlen, input);
    input[n++] = '.';
    n += wsb_jws_mint_b64url((const unsigned char *)claims, clen, input + n);
    if (secret) {
        unsigned int mlen = 0;
        if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)input, n, sig,
                  &mlen))
            goto out;
        siglen = mlen;
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ec = EVP_PKEY_is_a(pkey, "EC");
        int ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
                 EVP_DigestSign(ctx, ec ? der : sig, ec ? &dlen : &siglen,
                                (const unsigned char *)input, n) == 1;
        EVP_MD_CTX_free(ctx);
        if (!ok)
            goto out;
        if (ec) {
            size_t coord = ((size_t)EVP_PKEY_get_bits(pkey) + 7) / 8;
            if (der_to_rs(der, dlen, coord, sig) < 0)
                goto out;
            siglen = 2 * coord;
        }
    }
    wsb_jws_mint_b64url(sig, siglen, sigb);
    if ((tok = malloc(n + strlen(sigb) + 2)))
        sprintf(tok, "%s.%s", input, sigb);
out:
    free(input);
    return tok;
}
