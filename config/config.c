/* Configuration loading: strict JSON walked against the schema table, cross-field checks,
 * the demo config, reference counting and channel routing. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/filter.h"
#include "config/config.h"
#include "config/schema.h"
#include "connectors/connector.h"
#include "connectors/kafka_demo.h"

#define PATH_MAX_LEN 512
#define FILE_MAX_BYTES (16u << 20)

struct load {
    const char *file;
    wsb_config_err_cb err;
    void *ctx;
    int nerr;
    struct wsb_config *c;
};

static void report(struct load *L, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct load *L, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    L->nerr++;
    if (L->err)
        L->err(L->ctx, L->file, path, msg);
}

/* Paths only label errors: an overlong one is cut, never overflowed. */
static void path_key(char *out, const char *parent, const char *key)
{
    int n = snprintf(out, PATH_MAX_LEN, "%s%s%s", parent, parent[0] ? "." : "", key);
    if (n < 0 || n >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

static void path_idx(char *out, const char *parent, size_t i)
{
    int n = snprintf(out, PATH_MAX_LEN, "%s[%zu]", parent, i);
    if (n < 0 || n >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

/* True when row `path` sits directly under `parent` ("limits.send_buffer.policy" under
 * "limits.send_buffer"; "" is the root). */
static bool is_child(const char *path, const char *parent)
{
    size_t n = strlen(parent);
    if (n == 0)
        return strchr(path, '.') == NULL;
    return strncmp(path, parent, n) == 0 && path[n] == '.' && !strchr(path + n + 1, '.');
}

static const struct cfg_field *find_field(const char *path)
{
    for (size_t i = 0; i < wsb_cfg_nfields; i++)
        if (strcmp(wsb_cfg_fields[i].path, path) == 0)
            return &wsb_cfg_fields[i];
    return NULL;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static void type_error(struct load *L, const char *path, const char *want, const json_t *v)
{
    report(L, path, "expected %s, got %s", want, json_kind(v));
}

#define AT(base, off, T) ((T *)((const char *)(base) + (off)))

/* ---- ${VAR} expansion over the whole document --------------------------------------- */

static json_t *expand_tree(struct load *L, json_t *v, const char *path)
{
    char sub[PATH_MAX_LEN], err[256];
    if (json_is_string(v)) {
        char *s = wsb_config_expand(json_string_value(v), err, sizeof(err));
        if (!s) {
            report(L, path, "%s", err);
            return json_incref(v);
        }
        json_t *r = json_string(s);
        free(s);
        return r ? r : json_incref(v);
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            path_idx(sub, path, i);
            json_array_append_new(a, expand_tree(L, e, sub));
        }
        return a;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e)
        {
            path_key(sub, path, k);
            json_object_set_new(o, k, expand_tree(L, e, sub));
        }
        return o;
    }
    return json_incref(v);
}

/* ---- Scalar checks -------------------------------------------------------------------- */

/* "host:port" or "[v6]:port", port 0..65535 (0 = any free port, for tests). */
static bool listen_valid(const char *s)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close == s + 1 || close[1] != ':')
            return false;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s || memchr(s, ':', (size_t)(colon - s)))
            return false;
    }
    const char *p = colon + 1;
    long port = 0;
    size_t n = 0;
    for (; p[n]; n++) {
        if (p[n] < '0' || p[n] > '9' || n >= 5)
            return false;
        port = port * 10 + (p[n] - '0');
    }
    return n > 0 && port <= 65535;
}

static int enum_lookup(const struct cfg_enum *e, const char *s)
{
    for (; e->name; e++)
        if (strcmp(e->name, s) == 0)
            return e->value;
    return -1;
}

static void enum_error(struct load *L, const char *path, const struct cfg_enum *e, const char *s)
{
    char list[256] = "";
    size_t n = 0;
    for (const struct cfg_enum *x = e; x->name && n < sizeof(list); x++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s\"%s\"", x == e ? "" : ", ", x->name);
    report(L, path, "unknown value \"%.64s\" (expected one of %s)", s, list);
}

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = v ? strdup(v) : NULL;
}

/* ---- The generic walker --------------------------------------------------------------- */

static void load_object(struct load *L, json_t *obj, const char *spath, void *base,
                        const char *epath);
static void load_custom(struct load *L, const struct cfg_field *f, json_t *v, void *base,
                        const char *epath);

static void apply_defaults(struct load *L, const char *spath, void *base);

static bool load_number(struct load *L, const struct cfg_field *f, json_t *v, const char *epath,
                        double *out)
{
    bool integer = f->type != CT_DBL;
    if (integer ? !json_is_integer(v) : !json_is_number(v)) {
        type_error(L, epath, integer ? "an integer" : "a number", v);
        return false;
    }
    double d = json_number_value(v);
    double max = f->max > 0 ? f->max : (f->type == CT_U64 ? 18446744073709551615.0 : 4294967295.0);
    if (d < f->min || d > max) {
        report(L, epath, "must be between %.0f and %.0f", f->min, max);
        return false;
    }
    *out = d;
    return true;
}

static void free_strarr(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

static void free_fields(const char *spath, void *base);

static void load_value(struct load *L, const struct cfg_field *f, json_t *v, void *base,
                       const char *epath)
{
    double d;
    char sub[PATH_MAX_LEN], err[128];
    if (json_is_null(v) && (f->flags & CF_NULLABLE)) {
        if ((f->type == CT_OBJ || f->type == CT_STR) && f->off)
            set_str(AT(base, f->off, char *), NULL);
        if (f->type == CT_OBJ)
            free_fields(f->path, base); /* e.g. "tls": null clears the section */
        return;
    }
    switch (f->type) {
    case CT_OBJ:
        if (!json_is_object(v)) {
            type_error(L, epath, "an object", v);
            return;
        }
        load_object(L, v, f->path, base, epath);
        return;
    case CT_STR: {
        if (!json_is_string(v)) {
            type_error(L, epath, "a string", v);
            return;
        }
        const char *s = json_string_value(v);
        if (f->enums && enum_lookup(f->enums, s) < 0) {
            enum_error(L, epath, f->enums, s);
            return;
        }
        if ((f->flags & CF_LISTEN) && !listen_valid(s)) {
            report(L, epath, "\"%.64s\" is not host:port", s);
            return;
        }
        set_str(AT(base, f->off, char *), s);
        return;
    }
    case CT_BOOL:
        if (!json_is_boolean(v)) {
            type_error(L, epath, "a boolean", v);
            return;
        }
        *AT(base, f->off, bool) = json_is_true(v);
        return;
    case CT_U32:
        if (load_number(L, f, v, epath, &d))
            *AT(base, f->off, uint32_t) = (uint32_t)d;
        return;
    case CT_U64:
        if (load_number(L, f, v, epath, &d))
            *AT(base, f->off, uint64_t) = (uint64_t)json_integer_value(v);
        return;
    case CT_INT:
        if (load_number(L, f, v, epath, &d))
            *AT(base, f->off, int) = (int)d;
        return;
    case CT_DBL:
        if (load_number(L, f, v, epath, &d))
            *AT(base, f->off, double) = d;
        return;
    case CT_ENUM: {
        if (!json_is_string(v)) {
            type_error(L, epath, "a string", v);
            return;
        }
        int e = enum_lookup(f->enums, json_string_value(v));
        if (e < 0) {
            enum_error(L, epath, f->enums, json_string_value(v));
            return;
        }
        *AT(base, f->off, int) = e;
        return;
    }
    case CT_STRARR: {
        if (!json_is_array(v)) {
            type_error(L, epath, "an array of strings", v);
            return;
        }
        char ***arr = AT(base, f->off, char **);
        size_t *n = AT(base, f->off2, size_t);
        free_strarr(*arr, *n);
        *n = 0;
        *arr = calloc(json_array_size(v) + 1, sizeof(char *));
        if (!*arr) {
            report(L, epath, "out of memory");
            return;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            path_idx(sub, epath, i);
            if (!json_is_string(e)) {
                type_error(L, sub, "a string", e);
                continue;
            }
            if ((f->flags & CF_PATTERN) &&
                wsb_pattern_check(json_string_value(e), true, err, sizeof(err)) < 0) {
                report(L, sub, "bad pattern \"%.64s\": %s", json_string_value(e), err);
                continue;
            }
            (*arr)[(*n)++] = strdup(json_string_value(e));
        }
        return;
    }
    case CT_OBJARR: {
        if (!json_is_array(v)) {
            type_error(L, epath, "an array of objects", v);
            return;
        }
        void **arr = AT(base, f->off, void *);
        size_t *n = AT(base, f->off2, size_t);
        char ipath[PATH_MAX_LEN];
        snprintf(ipath, sizeof(ipath), "%s[]", f->path);
        for (size_t i = 0; i < *n; i++)
            free_fields(ipath, (char *)*arr + i * f->elem);
        free(*arr);
        *n = 0;
        *arr = calloc(json_array_size(v) + 1, f->elem);
        if (!*arr) {
            report(L, epath, "out of memory");
            return;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            void *item = (char *)*arr + i * f->elem;
            *n = i + 1;
            apply_defaults(L, ipath, item);
            path_idx(sub, epath, i);
            if (!json_is_object(e)) {
                type_error(L, sub, "an object", e);
                continue;
            }
            load_object(L, e, ipath, item, sub);
        }
        return;
    }
    case CT_CUSTOM: load_custom(L, f, v, base, epath); return;
    }
}

/* Edit distance of two short keys, capped at 3 (enough for "did you mean"). */
static size_t key_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 63 || lb >= 63)
        return 3;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] < 3 ? row[lb] : 3;
}

static void unknown_key(struct load *L, const char *spath, const char *key, const char *epath)
{
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        const char *last = strrchr(f->path, '.') ? strrchr(f->path, '.') + 1 : f->path;
        if (is_child(f->path, spath) && key_distance(key, last) <= 2) {
            report(L, epath, "unknown key (did you mean \"%s\"?)", last);
            return;
        }
    }
    report(L, epath, "unknown key");
}

static void load_object(struct load *L, json_t *obj, const char *spath, void *base,
                        const char *epath)
{
    char sp[PATH_MAX_LEN], ep[PATH_MAX_LEN];
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        path_key(ep, epath, k);
        path_key(sp, spath, k);
        const struct cfg_field *f = strchr(k, '.') || strchr(k, '[') ? NULL : find_field(sp);
        if (!f && strcmp(spath, "channels[]") == 0) {
            /* A broker member, or a typo: check_channels asks the rule's connector. */
            struct wsb_channel_rule *r = base;
            if (!r->fields && !(r->fields = json_object()))
                report(L, ep, "out of memory");
            else if (json_object_set(r->fields, k, v) < 0)
                report(L, ep, "out of memory");
            continue;
        }
        if (!f) {
            unknown_key(L, spath, k, ep);
            continue;
        }
        load_value(L, f, v, base, ep);
    }
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        if ((f->flags & CF_REQUIRED) && is_child(f->path, spath) &&
            !json_object_get(obj, strrchr(f->path, '.') ? strrchr(f->path, '.') + 1 : f->path)) {
            path_key(ep, epath, strrchr(f->path, '.') ? strrchr(f->path, '.') + 1 : f->path);
            report(L, ep, "missing required key");
        }
    }
}

static void apply_defaults(struct load *L, const char *spath, void *base)
{
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        if (!is_child(f->path, spath))
            continue;
        if (f->type == CT_OBJ) {
            apply_defaults(L, f->path, base);
            continue;
        }
        if (f->type == CT_ENUM && !f->def)
            *AT(base, f->off, int) = -1; /* e.g. channels[].policy: use the global one */
        if (!f->def)
            continue;
        json_t *v = json_loads(f->def, JSON_DECODE_ANY, NULL);
        if (!v) {
            report(L, f->path, "out of memory");
            continue;
        }
        load_value(L, f, v, base, f->path);
        json_decref(v);
    }
}

/* ---- Custom fields -------------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} algs[] = {
    {"HS256", WSB_ALG_HS256}, {"HS384", WSB_ALG_HS384}, {"HS512", WSB_ALG_HS512},
    {"RS256", WSB_ALG_RS256}, {"RS384", WSB_ALG_RS384}, {"RS512", WSB_ALG_RS512},
    {"ES256", WSB_ALG_ES256}, {"ES384", WSB_ALG_ES384},
};

static bool cookie_name_valid(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s >= 127 || strchr("()<>@,;:\\\"/[]?={}", *s))
            return false;
    return true;
}

static void load_token_sources(struct load *L, json_t *v, const char *epath)
{
    struct wsb_auth_conf *a = &L->c->auth;
    char sub[PATH_MAX_LEN];
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        report(L, epath, "expected a non-empty array of strings");
        return;
    }
    a->token_sources = 0;
    set_str(&a->cookie_name, NULL);
    json_array_foreach(v, i, e)
    {
        path_idx(sub, epath, i);
        const char *s = json_is_string(e) ? json_string_value(e) : NULL;
        if (!s)
            type_error(L, sub, "a string", e);
        else if (strcmp(s, "header") == 0)
            a->token_sources |= WSB_TOKEN_HEADER;
        else if (strcmp(s, "query") == 0)
            a->token_sources |= WSB_TOKEN_QUERY;
        else if (strcmp(s, "subprotocol") == 0)
            a->token_sources |= WSB_TOKEN_SUBPROTOCOL;
        else if (strncmp(s, "cookie:", 7) == 0 && cookie_name_valid(s + 7) && !a->cookie_name) {
            a->token_sources |= WSB_TOKEN_COOKIE;
            set_str(&a->cookie_name, s + 7);
        } else
            report(L, sub,
                   "unknown token source \"%.64s\" (expected \"header\", \"query\", "
                   "\"subprotocol\" or one \"cookie:NAME\")",
                   s);
    }
}

static void load_algorithms(struct load *L, json_t *v, const char *epath)
{
    char sub[PATH_MAX_LEN];
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        report(L, epath, "expected a non-empty array of strings");
        return;
    }
    L->c->auth.algorithms = 0;
    json_array_foreach(v, i, e)
    {
        path_idx(sub, epath, i);
        if (!json_is_string(e)) {
            type_error(L, sub, "a string", e);
            continue;
        }
        const char *s = json_string_value(e);
        if (strcasecmp(s, "none") == 0) {
            report(L, sub, "\"none\" is never accepted");
            continue;
        }
        size_t k;
        for (k = 0; k < WSB_ARRAY_LEN(algs); k++)
            if (strcmp(algs[k].name, s) == 0)
                break;
        if (k == WSB_ARRAY_LEN(algs))
            report(L, sub, "unknown algorithm \"%.32s\"", s);
        else
            L->c->auth.algorithms |= algs[k].bit;
    }
}

static void load_acl_when(struct load *L, json_t *v, struct wsb_acl_rule *r, const char *epath)
{
    char sub[PATH_MAX_LEN];
    const char *k;
    json_t *e;
    if (!json_is_object(v)) {
        type_error(L, epath, "an object", v);
        return;
    }
    json_object_foreach(v, k, e)
    {
        path_key(sub, epath, k);
        bool known = strcmp(k, "claim") == 0 || strcmp(k, "has") == 0 || strcmp(k, "equals") == 0;
        if (!known) {
            report(L, sub, "unknown key");
            continue;
        }
        if (!json_is_string(e)) {
            type_error(L, sub, "a string", e);
            continue;
        }
        if (strcmp(k, "claim") == 0) {
            set_str(&r->when_claim, json_string_value(e));
            continue;
        }
        if (r->when_value) {
            report(L, epath, "exactly one of \"has\" or \"equals\" is required");
            continue;
        }
        r->when_op = strcmp(k, "has") == 0 ? WSB_WHEN_HAS : WSB_WHEN_EQUALS;
        set_str(&r->when_value, json_string_value(e));
    }
    if (!json_object_get(v, "claim")) {
        path_key(sub, epath, "claim");
        report(L, sub, "missing required key");
    }
    if (!r->when_value && !json_object_get(v, "has") && !json_object_get(v, "equals"))
        report(L, epath, "exactly one of \"has\" or \"equals\" is required");
}

struct conn_report {
    struct load *L;
    const char *prefix;
    size_t nseen;
    char seen[8][48]; /* the first path suffixes reported (".name") */
};

static void conn_report_cb(void *ctx, const char *path, const char *msg)
{
    struct conn_report *cr = ctx;
    if (path && cr->nseen < WSB_ARRAY_LEN(cr->seen))
        snprintf(cr->seen[cr->nseen++], sizeof(cr->seen[0]), "%s", path);
    char full[PATH_MAX_LEN];
    if (!path)
        path = "";
    bool sep = path[0] && path[0] != '.' && path[0] != '[';
    snprintf(full, sizeof(full), "%s%s%s", cr->prefix, sep ? "." : "", path);
    report(cr->L, full, "%s", msg);
}

static bool connector_name_valid(const char *s)
{
    size_t n = strlen(s);
    return n < sizeof(((struct wsb_connector *)0)->name) && wsb_segment_valid(s, n);
}

static void load_connectors(struct load *L, json_t *v, const char *epath)
{
    struct wsb_config *c = L->c;
    char sub[PATH_MAX_LEN], tpath[PATH_MAX_LEN];
    const char *k;
    json_t *e;
    if (!json_is_object(v)) {
        type_error(L, epath, "an object", v);
        return;
    }
    c->connectors = calloc(json_object_size(v) + 1, sizeof(*c->connectors));
    if (!c->connectors) {
        report(L, epath, "out of memory");
        return;
    }
    json_object_foreach(v, k, e)
    {
        path_key(sub, epath, k);
        if (!connector_name_valid(k)) {
            report(L, sub, "connector names are 1..63 characters of [A-Za-z0-9_-]");
            continue;
        }
        if (!json_is_object(e)) {
            type_error(L, sub, "an object", e);
            continue;
        }
        json_t *type = json_object_get(e, "type");
        path_key(tpath, sub, "type");
        if (!type) {
            report(L, tpath, "missing required key");
            continue;
        }
        if (!json_is_string(type)) {
            type_error(L, tpath, "a string", type);
            continue;
        }
        const struct wsb_connector_ops *ops = wsb_connector_find(json_string_value(type));
        if (!ops) {
            report(L, tpath, "unknown connector type \"%.64s\"", json_string_value(type));
            continue;
        }
        struct conn_report cr = {.L = L, .prefix = sub};
        if (ops->check_config)
            ops->check_config(e, conn_report_cb, &cr);
        struct wsb_connector_conf *cc = &c->connectors[c->nconnectors++];
        cc->name = strdup(k);
        cc->type = strdup(ops->type);
        cc->conf = json_incref(e);
    }
}

static void load_custom(struct load *L, const struct cfg_field *f, json_t *v, void *base,
                        const char *epath)
{
    switch (f->custom) {
    case CC_TOKEN_SOURCES: load_token_sources(L, v, epath); break;
    case CC_ALGORITHMS: load_algorithms(L, v, epath); break;
    case CC_ACL_WHEN: load_acl_when(L, v, base, epath); break;
    case CC_CONNECTORS: load_connectors(L, v, epath); break;
    case CC_LOG_FORMAT:
        if (!json_is_string(v)) {
            type_error(L, epath, "a string", v);
            return;
        }
        if (strcmp(json_string_value(v), "json") == 0)
            L->c->log_json = true;
        else if (strcmp(json_string_value(v), "text") == 0)
            L->c->log_json = false;
        else
            report(L, epath, "unknown value \"%.64s\" (expected \"json\" or \"text\")",
                   json_string_value(v));
        break;
    case CC_CHANNEL_FILTER: break; /* compiled in check_channels, once the pattern is */
    case CC_CHANNEL_CONNECTOR:
        /* Resolved in check_channels once every connector is known. */
        if (!json_is_string(v))
            type_error(L, epath, "a string", v);
        break;
    case CC_NONE: break;
    }
}

/* ---- Cross-field checks --------------------------------------------------------------- */

static void check_auth(struct load *L, json_t *auth)
{
    struct wsb_auth_conf *a = &L->c->auth;
    char sub[PATH_MAX_LEN];
    a->enabled = true;
    for (size_t i = 0; i < a->nkeys; i++) {
        struct wsb_key_conf *k = &a->keys[i];
        path_idx(sub, "auth.jwt.keys", i);
        if (!k->file == !k->secret)
            report(L, sub, "exactly one of \"file\" or \"secret\" is required");
        else if (k->secret && !k->secret[0])
            report(L, sub, "\"secret\" must not be empty");
    }
    json_t *jwt = json_object_get(auth, "jwt");
    if (json_is_object(jwt) && !json_object_get(jwt, "keys") && !json_object_get(jwt, "jwks_file"))
        report(L, "auth.jwt", "at least one of \"keys\" or \"jwks_file\" is required");
}

static bool listed(const char *const *keys, const char *k)
{
    for (; keys && *keys; keys++)
        if (strcmp(*keys, k) == 0)
            return true;
    return false;
}

/* The broker members of rule `r` (at `sub`): each key must be one the connector lists and each
 * string member's {N} must refer to a capture of the pattern. In a rule that names no
 * connector, a key no connector type lists is unknown; a rule whose connector is declared but
 * invalid (`ops` NULL) is not checked further. */
static void check_broker_members(struct load *L, const struct wsb_channel_rule *r,
                                 const struct wsb_connector_ops *ops, bool named, const char *sub,
                                 const struct conn_report *said)
{
    char fpath[PATH_MAX_LEN], err[128];
    const char *k;
    json_t *v;
    size_t ncaps = wsb_pattern_ncaptures(r->pattern);
    json_object_foreach(r->fields, k, v)
    {
        path_key(fpath, sub, k);
        bool explained = false;
        for (size_t i = 0; i < said->nseen && !explained; i++)
            explained = said->seen[i][0] == '.' && strcmp(said->seen[i] + 1, k) == 0;
        if (explained)
            continue;
        if (!named) {
            if (!wsb_connector_any_channel_key(k))
                unknown_key(L, "channels[]", k, fpath);
            continue;
        }
        if (ops && ops->channel_keys && !listed(ops->channel_keys, k)) {
            const char *near = NULL;
            for (const char *const *c = ops->channel_keys; *c && !near; c++)
                if (key_distance(k, *c) <= 2)
                    near = *c;
            if (near)
                report(L, fpath, "unknown key (did you mean \"%s\"?)", near);
            else
                unknown_key(L, "channels[]", k, fpath);
            continue;
        }
        if (r->pattern && json_is_string(v) &&
            wsb_pattern_expand_check(json_string_value(v), ncaps, err, sizeof(err)) < 0)
            report(L, fpath, "%s", err);
    }
}

/* `declared`: the "connectors" object as written, to tell a connector that is missing from
 * one that is declared but invalid (already reported under connectors.NAME). */
static void check_channels(struct load *L, json_t *arr, json_t *declared)
{
    struct wsb_config *c = L->c;
    char sub[PATH_MAX_LEN], fpath[PATH_MAX_LEN], err[128];
    for (size_t i = 0; i < c->nchannels; i++) {
        struct wsb_channel_rule *r = &c->channels[i];
        json_t *cj = json_array_get(arr, i);
        path_idx(sub, "channels", i);
        if (!json_is_object(cj))
            continue;
        bool ok = true;
        if (r->match) {
            path_key(fpath, sub, "match");
            if (wsb_pattern_check(r->match, false, err, sizeof(err)) < 0) {
                report(L, fpath, "bad pattern \"%.64s\": %s", r->match, err);
                ok = false;
            } else if (!(r->pattern = wsb_pattern_compile(r->match, NULL, NULL, NULL))) {
                report(L, fpath, "out of memory");
                ok = false;
            }
        }
        if (!r->fields && !(r->fields = json_object())) {
            report(L, sub, "out of memory");
            continue;
        }
        json_t *fj = json_object_get(cj, "filter");
        if (fj && ok) {
            path_key(fpath, sub, "filter");
            char ferr[160], fp[200], full[PATH_MAX_LEN + 256];
            if (r->delivery == WSB_DELIVERY_ACK)
                report(L, fpath,
                       "not supported with \"delivery\": \"ack\" (a work queue "
                       "hands each record to one client)");
            else if (!(r->filter = wsb_filter_spec_parse(fj, WSB_FILTER_TEMPLATES,
                                                         wsb_pattern_ncaptures(r->pattern), fp,
                                                         sizeof(fp), ferr, sizeof(ferr)))) {
                snprintf(full, sizeof(full), "%.500s%s%.200s", fpath,
                         fp[0] && fp[0] != '[' ? "." : "", fp);
                report(L, full, "%s", ferr);
            } else if (r->match && !(r->filter_counter = wsb_filter_rule_counter(r->match)))
                report(L, fpath, "out of memory");
        }
        json_t *name = json_object_get(cj, "connector");
        const struct wsb_connector_conf *cc = NULL;
        for (size_t k = 0; json_is_string(name) && k < c->nconnectors; k++)
            if (strcmp(c->connectors[k].name, json_string_value(name)) == 0)
                cc = &c->connectors[k];
        r->ops = cc ? wsb_connector_find(cc->type) : NULL;
        /* The connector's own checks first: a member it already explains (e.g. "not used by
         * a kafka channel") is not reported again as an unknown key. */
        struct conn_report cr = {.L = L, .prefix = sub};
        if (ok && r->ops && r->ops->check_channel)
            r->ops->check_channel(cj, conn_report_cb, &cr);
        check_broker_members(L, r, r->ops, json_is_string(name), sub, &cr);
        if (!json_is_string(name))
            continue;
        size_t k;
        for (k = 0; k < c->nconnectors; k++)
            if (strcmp(c->connectors[k].name, json_string_value(name)) == 0)
                break;
        path_key(fpath, sub, "connector");
        if (k == c->nconnectors) {
            if (!json_object_get(declared, json_string_value(name)))
                report(L, fpath, "unknown connector \"%.64s\"", json_string_value(name));
            continue;
        }
        r->connector = k;
        /* Avro needs a registry to read schemas from. */
        for (int f = 0; f < 2; f++) {
            int fmt = f == 0 ? r->value_format : r->key_format;
            if (fmt == WSB_FORMAT_AVRO &&
                !json_object_get(c->connectors[k].conf, "schema_registry")) {
                path_key(fpath, sub, f == 0 ? "value_format" : "key_format");
                report(L, fpath, "\"avro\" needs connectors.%.64s.schema_registry",
                       c->connectors[k].name);
            }
        }
    }
}

/* Limits that are each in range but together would refuse every message or every
 * handshake: a bucket smaller than one unit never has a token to give. */
static void check_limits(struct load *L, const struct wsb_limits *l)
{
    if (l->send_soft_bytes > l->send_hard_bytes)
        report(L, "limits.send_buffer.soft_bytes", "must not exceed hard_bytes (%llu)",
               (unsigned long long)l->send_hard_bytes);
    if (l->handshake_rate_per_s > 0 && l->handshake_rate_burst < 1)
        report(L, "limits.handshake_rate_per_ip.burst",
               "must be at least 1 when per_second is set (every handshake would be refused)");
    if (l->inbound_rate_per_s > 0 && l->inbound_rate_burst < 1)
        report(L, "limits.inbound_rate.burst",
               "must be at least 1 when per_second is set (every message would be refused)");
    if (l->inbound_bytes_per_s > 0 && l->inbound_bytes_burst < (double)l->max_message_bytes)
        report(L, "limits.inbound_bytes.burst",
               "must be at least max_message_bytes (%llu) when per_second is set (a message "
               "that size would always be refused)",
               (unsigned long long)l->max_message_bytes);
}

/* Cross-site WebSocket hijacking: with a cookie token source, any page the user visits
 * could open a socket that carries the user's cookie. The origins must be listed, or "any"
 * said out loud with ["*"]. */
static void check_cookie_origins(struct load *L, json_t *auth)
{
    json_t *srcs = json_object_get(auth, "token_sources"), *v;
    size_t i;
    if (!L->c->auth.cookie_name || L->c->nallowed_origins > 0 || !json_is_array(srcs))
        return;
    json_array_foreach(srcs, i, v)
    {
        const char *s = json_string_value(v);
        if (s && strncmp(s, "cookie:", 7) == 0) {
            report(L, "allowed_origins",
                   "required with the cookie token source (auth.token_sources[%zu]): list the "
                   "origins whose pages may open sockets with the user's cookie, or [\"*\"] "
                   "for any",
                   i);
            return;
        }
    }
}

/* The upgrade path is compared with the request's path (query already split off): one that
 * cannot be a request path would answer 404 to every upgrade. */
static void check_path(struct load *L, const char *key, const char *path)
{
    if (!path)
        return;
    bool ok = path[0] == '/';
    for (const char *p = path; ok && *p; p++)
        ok = (unsigned char)*p > 0x20 && *p != 0x7f && *p != '?' && *p != '#';
    if (!ok)
        report(L, key,
               "must begin with \"/\" and hold no '?', '#', spaces or control characters "
               "(every upgrade would get 404)");
}

static void check_all(struct load *L, json_t *root)
{
    struct wsb_config *c = L->c;
    check_path(L, "path", c->path);
    check_path(L, "sse.path", c->sse_path);
    if (c->sse_enabled && c->path && c->sse_path && strcmp(c->path, c->sse_path) == 0)
        report(L, "sse.path", "must differ from \"path\" (the WebSocket upgrade path)");
    json_t *auth = json_object_get(root, "auth");
    if (json_is_object(auth)) {
        check_auth(L, auth);
        check_cookie_origins(L, auth);
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL))
        report(L, "tls", "\"cert\" and \"key\" are required together");
    if (c->tls_client_ca && !c->tls_cert)
        report(L, "tls.client_ca", "needs \"cert\" and \"key\"");
    check_limits(L, &c->limits);
    json_t *ch = json_object_get(root, "channels");
    if (json_is_array(ch))
        check_channels(L, ch, json_object_get(root, "connectors"));
}

/* ---- Freeing -------------------------------------------------------------------------- */

static void free_fields(const char *spath, void *base)
{
    char ipath[PATH_MAX_LEN];
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        if (!is_child(f->path, spath))
            continue;
        switch (f->type) {
        case CT_OBJ: free_fields(f->path, base); break;
        case CT_STR: set_str(AT(base, f->off, char *), NULL); break;
        case CT_STRARR:
            free_strarr(*AT(base, f->off, char **), *AT(base, f->off2, size_t));
            *AT(base, f->off, char **) = NULL;
            *AT(base, f->off2, size_t) = 0;
            break;
        case CT_OBJARR: {
            void **arr = AT(base, f->off, void *);
            size_t *n = AT(base, f->off2, size_t);
            snprintf(ipath, sizeof(ipath), "%s[]", f->path);
            for (size_t k = 0; *arr && k < *n; k++)
                free_fields(ipath, (char *)*arr + k * f->elem);
            free(*arr);
            *arr = NULL;
            *n = 0;
            break;
        }
        default: break;
        }
    }
    /* Fields outside the table's generic types. */
    if (strcmp(spath, "acl[]") == 0) {
        struct wsb_acl_rule *r = base;
        set_str(&r->when_claim, NULL);
        set_str(&r->when_value, NULL);
    } else if (strcmp(spath, "channels[]") == 0) {
        struct wsb_channel_rule *r = base;
        wsb_pattern_free(r->pattern);
        r->pattern = NULL;
        wsb_filter_spec_free(r->filter);
        r->filter = NULL;
        json_decref(r->fields);
        r->fields = NULL;
    }
}

static void config_free(struct wsb_config *c)
{
    free_fields("", c);
    free(c->auth.cookie_name);
    for (size_t i = 0; i < c->nconnectors; i++) {
        free(c->connectors[i].name);
        free(c->connectors[i].type);
        json_decref(c->connectors[i].conf);
    }
    free(c->connectors);
    free(c->file);
    free(c);
}

struct wsb_config *wsb_config_ref(struct wsb_config *c)
{
    if (c)
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    return c;
}

void wsb_config_unref(struct wsb_config *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        config_free(c);
}

/* ---- Entry points --------------------------------------------------------------------- */

static const char demo_json[] =
    "{\"listen\": \"127.0.0.1:8080\", \"admin\": {\"listen\": \"127.0.0.1:9090\"},"
    " \"auth\": {\"jwt\": {\"algorithms\": [\"HS256\"],"
    "   \"keys\": [{\"secret\": \"${WSBRIDGE_DEMO_SECRET:-" WSB_CONFIG_DEMO_PLACEHOLDER_SECRET
    "}\"}]}},"
    " \"acl\": [{\"subscribe\": [\"demo.**\", \"public.**\"], \"publish\": [\"demo.**\"]}],"
    " \"connectors\": {\"demo\": " WSB_KAFKA_DEMO_CONNECTOR "},"
    " \"channels\": " WSB_KAFKA_DEMO_CHANNELS "}";

struct wsb_config *wsb_config_load_text(const char *name, const char *text, size_t len, bool demo,
                                        wsb_config_err_cb err, void *ctx)
{
    struct wsb_config *c = NULL;
    json_t *root = NULL, *expanded = NULL;
    json_error_t jerr;
    struct load L = {
        .file = name ? name : (demo ? "<demo>" : "<defaults>"), .err = err, .ctx = ctx};

    c = calloc(1, sizeof(*c));
    if (!c) {
        report(&L, "", "out of memory");
        goto done;
    }
    c->refs = 1;
    c->demo = demo;
    c->file = strdup(L.file);
    L.c = c;
    apply_defaults(&L, "", c);

    if (demo) {
        root = json_loads(demo_json, 0, &jerr);
        if (!root) {
            report(&L, "", "demo config: %s", jerr.text);
            goto done;
        }
    }
    if (text) {
        json_t *user = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!user) {
            report(&L, "", "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
            goto done;
        }
        if (!json_is_object(user)) {
            type_error(&L, "", "an object at the top level", user);
            json_decref(user);
            goto done;
        }
        if (root) {
            /* --demo with a file: top-level keys present in the file replace the demo's. */
            json_object_update(root, user);
            json_decref(user);
        } else {
            root = user;
        }
    }
    if (!root)
        root = json_object();
    expanded = expand_tree(&L, root, "");
    if (!expanded) {
        report(&L, "", "out of memory");
        goto done;
    }
    load_object(&L, expanded, "", c, "");
    check_all(&L, expanded);

done:
    json_decref(root);
    json_decref(expanded);
    if (L.nerr > 0 && c) {
        config_free(c);
        c = NULL;
    }
    return c;
}

struct wsb_config *wsb_config_load(const char *file, bool demo, wsb_config_err_cb err, void *ctx)
{
    struct wsb_config *c = NULL;
    char *text = NULL;
    FILE *f = NULL;
    if (!file)
        return wsb_config_load_text(NULL, NULL, 0, demo, err, ctx);
    f = fopen(file, "rb");
    if (!f) {
        if (err)
            err(ctx, file, "", strerror(errno));
        goto done;
    }
    text = malloc(FILE_MAX_BYTES);
    if (!text) {
        if (err)
            err(ctx, file, "", "out of memory");
        goto done;
    }
    size_t n = fread(text, 1, FILE_MAX_BYTES, f);
    if (ferror(f) || n == FILE_MAX_BYTES) {
        if (err)
            err(ctx, file, "", ferror(f) ? "read error" : "file too large (16 MiB max)");
        goto done;
    }
    c = wsb_config_load_text(file, text, n, demo, err, ctx);
done:
    free(text);
    if (f)
        fclose(f);
    return c;
}

static void print_problem(void *ctx, const char *file, const char *path, const char *msg)
{
    if (path && path[0])
        fprintf(ctx, "%s: %s: %s\n", file, path, msg);
    else
        fprintf(ctx, "%s: %s\n", file, msg);
}

int wsb_config_check_file(const char *file, FILE *out)
{
    struct wsb_config *c = wsb_config_load(file, false, print_problem, out);
    if (!c)
        return 1;
    fputs("ok\n", out);
    wsb_config_unref(c);
    return 0;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int wsb_config_restart_needed(const struct wsb_config *old, const struct wsb_config *next,
                              wsb_config_err_cb err, void *ctx)
{
    static const char msg[] = "changed; takes effect after a restart";
    int n = 0;
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        if ((f->flags & CF_RELOAD) || strchr(f->path, '['))
            continue;
        const void *a = old, *b = next;
        bool same;
        switch (f->type) {
        case CT_STR:
            same = same_str(*AT(a, f->off, const char *const), *AT(b, f->off, const char *const));
            break;
        case CT_BOOL: same = *AT(a, f->off, const bool) == *AT(b, f->off, const bool); break;
        case CT_U32: same = *AT(a, f->off, const uint32_t) == *AT(b, f->off, const uint32_t); break;
        case CT_U64: same = *AT(a, f->off, const uint64_t) == *AT(b, f->off, const uint64_t); break;
        case CT_INT:
        case CT_ENUM: same = *AT(a, f->off, const int) == *AT(b, f->off, const int); break;
        case CT_DBL: same = *AT(a, f->off, const double) == *AT(b, f->off, const double); break;
        default: continue;
        }
        if (!same) {
            n++;
            if (err)
                err(ctx, next->file, f->path, msg);
        }
    }
    bool same = old->nconnectors == next->nconnectors;
    for (size_t i = 0; same && i < old->nconnectors; i++)
        same = strcmp(old->connectors[i].name, next->connectors[i].name) == 0 &&
               strcmp(old->connectors[i].type, next->connectors[i].type) == 0 &&
               json_equal(old->connectors[i].conf, next->connectors[i].conf);
    if (!same) {
        n++;
        if (err)
            err(ctx, next->file, "connectors", msg);
    }
    return n;
}
