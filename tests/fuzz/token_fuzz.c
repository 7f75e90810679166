/* libFuzzer target: random handshake header values through the token finders. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/token.h"

/* Input: one byte of source bits, then authorization, query, protocols and cookies
 * separated by NUL bytes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *part[4] = {NULL, NULL, NULL, NULL};
    size_t plen[4] = {0, 0, 0, 0};
    const char *p, *end, *src = NULL;
    char out[WSB_TOKEN_MAX + 1];
    size_t i = 0;

    if (size < 1)
        return 0;
    struct wsb_auth_conf conf = {.token_sources = data[0] & 0x0f,
                                 .cookie_name = (data[0] & 0x10) ? "t" : NULL};
    p = (const char *)data + 1;
    end = (const char *)data + size;
    while (i < 4 && p <= end) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        const char *e = z ? z : end;
        part[i] = p;
        plen[i] = (size_t)(e - p);
        i++;
        if (!z)
            break;
        p = z + 1;
    }
    struct wsb_token_inputs in = {part[0], plen[0], part[1], plen[1],
                                  part[2], plen[2], part[3], plen[3]};
    /* A small output buffer on odd first bytes exercises the size check. */
    size_t outlen = (data[0] & 0x20) ? 16 : sizeof(out);
    long n = wsb_token_find(&conf, &in, out, outlen, &src);
    if (n > 0) {
        if ((size_t)n >= outlen || strlen(out) != (size_t)n || !src)
            abort();
        for (long j = 0; j < n; j++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
                        out[j]))
                abort();
    } else if (n == 0 && src) {
        abort();
    }
    const char *sel = wsb_token_select_protocol(part[2], plen[2]);
    if (sel && strcmp(sel, "wsbridge.v1") != 0)
        abort();
    return 0;
}
