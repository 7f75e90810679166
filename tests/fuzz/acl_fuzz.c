/* libFuzzer target: random claims, rules and channel through the ACL; checks that a
 * template never matches more than the pattern with its values substituted literally. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/acl.h"
#include "util/pattern.h"

#define MAXLINES 8

/* Independent of acl.c: a value is substituted only when it is one plain segment. */
static bool plain_segment(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return false;
    return true;
}

static bool value_of(const json_t *claims, const char *name, size_t nlen, char *out, size_t outlen)
{
    const json_t *v = NULL;
    char key[256];

    if (!claims)
        return false;
    if (nlen == 3 && memcmp(name, "sub", 3) == 0) {
        v = json_object_get(claims, "sub");
        if (!json_is_string(v))
            return false;
    } else if (nlen > 6 && memcmp(name, "claim.", 6) == 0 && nlen - 6 < sizeof(key)) {
        memcpy(key, name + 6, nlen - 6);
        key[nlen - 6] = '\0';
        v = json_object_get(claims, key);
    }
    if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v))
        snprintf(out, outlen, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, outlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        return false;
    return plain_segment(out);
}

/* Writes `pattern` with every {name} replaced by its value. False when a value is missing or
 * unsafe: then no grant may come from this pattern. */
static bool literal(const char *pattern, const json_t *claims, char *out, size_t outlen)
{
    size_t n = 0;

    for (const char *p = pattern; *p;) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            char val[300];
            if (!close || !value_of(claims, p + 1, (size_t)(close - p - 1), val, sizeof(val)))
                return false;
            size_t vl = strlen(val);
            if (n + vl + 1 > outlen)
                return false;
            memcpy(out + n, val, vl);
            n += vl;
            p = close + 1;
        } else {
            if (n + 2 > outlen)
                return false;
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return true;
}

/* Input: lines. 0: claims JSON; 1: channel; 2: when "op claim value"; rest: patterns. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), *lines[MAXLINES] = {0}, *save = NULL;
    size_t nlines = 0;
    json_t *claims = NULL;

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    for (char *l = strtok_r(buf, "\n", &save); l && nlines < MAXLINES;
         l = strtok_r(NULL, "\n", &save))
        lines[nlines++] = l;
    if (nlines < 2)
        goto out;
    claims = json_loads(lines[0], JSON_DECODE_ANY, NULL);
    const char *chan = lines[1];
    size_t clen = strlen(chan);

    /* A random conditional rule over every pattern, plus the permissions claim. */
    struct wsb_acl_rule rule = {0};
    if (nlines > 2) {
        char *sp1 = strchr(lines[2], ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        if (sp1 && sp2) {
            *sp1 = *sp2 = '\0';
            rule.when_op = lines[2][0] == 'h' ? WSB_WHEN_HAS : WSB_WHEN_EQUALS;
            rule.when_claim = sp1 + 1;
            rule.when_value = sp2 + 1;
        }
    }
    if (nlines > 3) {
        rule.subscribe = rule.publish = &lines[3];
        rule.nsubscribe = rule.npublish = nlines - 3;
    }
    struct wsb_acl *acl = wsb_acl_compile(&rule, 1, claims, "wsb");
    if (acl) {
        (void)wsb_acl_check(acl, WSB_ACL_SUBSCRIBE, chan, clen);
        (void)wsb_acl_check(acl, WSB_ACL_PUBLISH, chan, clen);
        wsb_acl_free(acl);
    }

    /* The oracle: each pattern alone, unconditionally, no permissions claim. */
    for (size_t i = 3; i < nlines; i++) {
        struct wsb_acl_rule one = {.subscribe = &lines[i], .nsubscribe = 1};
        struct wsb_acl *a = wsb_acl_compile(&one, 1, claims, NULL);
        if (!a)
            continue;
        if (wsb_acl_check(a, WSB_ACL_SUBSCRIBE, chan, clen)) {
            char lit[1024];
            bool dropped = false;
            struct wsb_pattern *p;
            if (!wsb_channel_valid(chan, clen) || !literal(lines[i], claims, lit, sizeof(lit)))
                abort();
            p = wsb_pattern_compile(lit, NULL, NULL, &dropped);
            if (!p || !wsb_pattern_match(p, chan, clen, NULL))
                abort();
            wsb_pattern_free(p);
        }
        if (wsb_acl_check(a, WSB_ACL_PUBLISH, chan, clen))
            abort();
        wsb_acl_free(a);
    }
out:
    json_decref(claims);
    free(buf);
    return 0;
}
