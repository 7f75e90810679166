/* `${VAR}` / `${VAR:-default}` expansion of configuration strings from the environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "util/buf.h"

static bool var_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

/* Rules (documented in docs/configuration.md):
 *   ${VAR}          the value of VAR; an error when VAR is unset
 *   ${VAR:-default} the value of VAR, or `default` when VAR is unset or empty
 *   $$              a literal '$' (so "$${X}" yields "${X}")
 *   a '$' followed by anything else stays a literal '$'. */
char *wsb_config_expand(const char *in, char *err, size_t errlen)
{
    struct wsb_buf b;
    char name[256];
    wsb_buf_init(&b);
    if (err && errlen)
        err[0] = '\0';
    for (size_t i = 0; in[i];) {
        if (in[i] != '$') {
            wsb_buf_append(&b, in + i, 1);
            i++;
            continue;
        }
        if (in[i + 1] == '$') {
            wsb_buf_append(&b, "$", 1);
            i += 2;
            continue;
        }
        if (in[i + 1] != '{') {
            wsb_buf_append(&b, "$", 1);
            i++;
            continue;
        }
        size_t j = i + 2, n = 0;
        while (var_char(in[j], n == 0)) {
            j++;
            n++;
        }
        if (n == 0 || n >= sizeof(name)) {
            snprintf(err, errlen, "bad variable name in \"${...}\"");
            goto error;
        }
        memcpy(name, in + i + 2, n);
        name[n] = '\0';
        const char *val = getenv(name);
        if (in[j] == '}') {
            if (!val) {
                snprintf(err, errlen, "environment variable %s is not set", name);
                goto error;
            }
            wsb_buf_puts(&b, val);
            i = j + 1;
            continue;
        }
        if (in[j] == ':' && in[j + 1] == '-') {
            const char *def = in + j + 2;
            const char *close = strchr(def, '}');
            if (!close) {
                snprintf(err, errlen, "unterminated \"${%s:-\"", name);
                goto error;
            }
            if (val && val[0])
                wsb_buf_puts(&b, val);
            else
                wsb_buf_append(&b, def, (size_t)(close - def));
            i = (size_t)(close - in) + 1;
            continue;
        }
        snprintf(err, errlen, "malformed \"${%s\" (expected \"}\" or \":-default}\")", name);
        goto error;
    }
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        snprintf(err, errlen, "out of memory");
        goto error;
    }
    return (char *)wsb_buf_steal(&b, NULL);

error:
    wsb_buf_cleanup(&b);
    return NULL;
}
