/* Avro binary <-> Avro JSON with avro-c values, plus the registry's wire-format header. */
#include "connectors/avro_json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#define MAX_DEPTH 64         /* nesting of schemas and of JSON values being encoded */
#define MAX_DECIMAL_BYTES 64 /* an unscaled decimal of up to 154 digits */
#define MAX_NAME 512

enum kind {
    K_NULL,
    K_BOOLEAN,
    K_INT,
    K_LONG,
    K_FLOAT,
    K_DOUBLE,
    K_BYTES,
    K_STRING,
    K_RECORD,
    K_ENUM,
    K_ARRAY,
    K_MAP,
    K_UNION,
    K_FIXED,
};

static const char *const primitive_names[] = {"null",  "boolean", "int",   "long",
                                              "float", "double",  "bytes", "string"};

/* A schema node: what the JSON form needs beyond avro-c's schema (full names for union
 * labels, decimal scale, field defaults). Built from the schema's JSON text; named types are
 * shared, so the graph may be cyclic (recursive types); every node is on `all`. */
struct node {
    struct node *all;
    enum kind kind;
    char *name; /* union label: a primitive's type name or a named type's full name */
    bool decimal;
    int precision, scale;
    int64_t fixed_size;
    size_t n;            /* fields, symbols, branches; 1 for array items / map values */
    struct node **kids;  /* fields' types, branches, items or values */
    char **names;        /* field names or enum symbols */
    const json_t **defs; /* record fields' defaults (borrowed from the schema JSON) or NULL */
};

struct named {
    struct named *next;
    char *fullname;
    struct node *node;
};

struct wsb_avro_schema {
    json_t *json;
    struct node *root;
    struct node *all;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value; /* reused for every decode and encode */
    avro_reader_t reader;
    avro_writer_t writer;
    char dummy[1];
};

bool wsb_avro_wire_split(const uint8_t *p, size_t n, uint32_t *id)
{
    if (n < WSB_AVRO_WIRE_HEADER || p[0] != 0)
        return false;
    *id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    return true;
}

void wsb_avro_wire_header(uint8_t out[WSB_AVRO_WIRE_HEADER], uint32_t id)
{
    out[0] = 0;
    out[1] = (uint8_t)(id >> 24);
    out[2] = (uint8_t)(id >> 16);
    out[3] = (uint8_t)(id >> 8);
    out[4] = (uint8_t)id;
}

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- Building the node graph from the schema JSON ------------------------------------ */

struct build {
    struct wsb_avro_schema *s;
    struct named *named;
    char *err;
    size_t errlen;
    bool failed;
};

static struct node *node_new(struct build *b, enum kind kind)
{
    struct node *n = calloc(1, sizeof(*n));
    if (!n) {
        b->failed = true;
        seterr(b->err, b->errlen, "out of memory");
        return NULL;
    }
    n->kind = kind;
    n->all = b->s->all;
    b->s->all = n;
    return n;
}

static void node_free(struct node *n)
{
    for (size_t i = 0; n->names && i < n->n; i++)
        free(n->names[i]);
    free(n->names);
    free(n->kids);
    free(n->defs);
    free(n->name);
    free(n);
}

static int primitive_kind(const char *t)
{
    for (size_t i = 0; i < WSB_ARRAY_LEN(primitive_names); i++)
        if (strcmp(t, primitive_names[i]) == 0)
            return (int)i;
    return -1;
}

static struct node *lookup(struct build *b, const char *name, const char *ns)
{
    char full[MAX_NAME];
    if (!strchr(name, '.') && ns && *ns) {
        snprintf(full, sizeof(full), "%s.%s", ns, name);
        for (struct named *e = b->named; e; e = e->next)
            if (strcmp(e->fullname, full) == 0)
                return e->node;
    }
    for (struct named *e = b->named; e; e = e->next)
        if (strcmp(e->fullname, name) == 0)
            return e->node;
    return NULL;
}

static struct node *build_node(struct build *b, const json_t *j, const char *ns, int depth);

/* A named type (record, enum, fixed): registers its full name before its children so that
 * they may refer to it. */
static struct node *build_named(struct build *b, const json_t *j, enum kind kind, const char *ns,
                                int depth)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *space = json_string_value(json_object_get(j, "namespace"));
    if (!name) {
        seterr(b->err, b->errlen, "a named type without a name");
        b->failed = true;
        return NULL;
    }
    char full[MAX_NAME], child_ns[MAX_NAME];
    const char *dot = strrchr(name, '.');
    if (dot) {
        snprintf(full, sizeof(full), "%s", name);
        snprintf(child_ns, sizeof(child_ns), "%.*s", (int)(dot - name), name);
    } else {
        const char *use = space ? space : ns;
        if (use && *use)
            snprintf(full, sizeof(full), "%s.%s", use, name);
        else
            snprintf(full, sizeof(full), "%s", name);
        snprintf(child_ns, sizeof(child_ns), "%s", use ? use : "");
    }
    for (struct named *d = b->named; d; d = d->next)
        if (strcmp(d->fullname, full) == 0) {
            seterr(b->err, b->errlen, "type %s defined twice", full);
            b->failed = true;
            return NULL;
        }
    struct node *n = node_new(b, kind);
    struct named *e = calloc(1, sizeof(*e));
    if (!n || !e || !(n->name = strdup(full)) || !(e->fullname = strdup(full))) {
        free(e);
        b->failed = true;
        return NULL;
    }
    e->node = n;
    e->next = b->named;
    b->named = e;

    if (kind == K_RECORD) {
        const json_t *fields = json_object_get(j, "fields");
        n->n = json_array_size(fields);
        n->kids = calloc(n->n ? n->n : 1, sizeof(*n->kids));
        n->names = calloc(n->n ? n->n : 1, sizeof(*n->names));
        n->defs = calloc(n->n ? n->n : 1, sizeof(*n->defs));
        if (!n->kids || !n->names || !n->defs) {
            b->failed = true;
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++) {
            const json_t *f = json_array_get(fields, i);
            const char *fname = json_string_value(json_object_get(f, "name"));
            if (!fname || !(n->names[i] = strdup(fname))) {
                seterr(b->err, b->errlen, "a field of %s without a name", full);
                b->failed = true;
                return NULL;
            }
            n->defs[i] = json_object_get(f, "default");
            if (!(n->kids[i] = build_node(b, json_object_get(f, "type"), child_ns, depth + 1)))
                return NULL;
        }
    } else if (kind == K_ENUM) {
        const json_t *syms = json_object_get(j, "symbols");
        n->n = json_array_size(syms);
        n->names = calloc(n->n ? n->n : 1, sizeof(*n->names));
        if (!n->names) {
            b->failed = true;
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++) {
            const char *sym = json_string_value(json_array_get(syms, i));
            if (!sym || !(n->names[i] = strdup(sym))) {
                b->failed = true;
                return NULL;
            }
        }
    } else {
        json_t *size = json_object_get(j, "size");
        n->fixed_size = json_is_integer(size) ? json_integer_value(size) : -1;
        if (n->fixed_size < 0) {
            seterr(b->err, b->errlen, "fixed %s without a size", full);
            b->failed = true;
            return NULL;
        }
    }
    return n;
}

/* Avro spec: an invalid decimal (precision < 1, scale outside 0..precision, or a fixed too
 * small for the precision) is read as its underlying type. */
static void mark_decimal(struct node *n, const json_t *j)
{
    const char *lt = json_string_value(json_object_get(j, "logicalType"));
    if (!lt || strcmp(lt, "decimal") != 0)
        return;
    json_t *p = json_object_get(j, "precision"), *sc = json_object_get(j, "scale");
    if (!json_is_integer(p) || (sc && !json_is_integer(sc)))
        return;
    json_int_t prec = json_integer_value(p), scale = sc ? json_integer_value(sc) : 0;
    if (prec < 1 || scale < 0 || scale > prec || prec > 150)
        return;
    n->decimal = true;
    n->precision = (int)prec;
    n->scale = (int)scale;
}

static struct node *build_node(struct build *b, const json_t *j, const char *ns, int depth)
{
    if (b->failed)
        return NULL;
    if (depth > MAX_DEPTH) {
        seterr(b->err, b->errlen, "schema nested deeper than %d", MAX_DEPTH);
        b->failed = true;
        return NULL;
    }
    if (json_is_string(j)) {
        const char *t = json_string_value(j);
        int pk = primitive_kind(t);
        if (pk >= 0) {
            struct node *n = node_new(b, (enum kind)pk);
            if (n && !(n->name = strdup(t)))
                b->failed = true;
            return b->failed ? NULL : n;
        }
        struct node *ref = lookup(b, t, ns);
        if (!ref) {
            seterr(b->err, b->errlen, "unknown type %s", t);
            b->failed = true;
        }
        return ref;
    }
    if (json_is_array(j)) {
        struct node *n = node_new(b, K_UNION);
        if (!n)
            return NULL;
        n->n = json_array_size(j);
        if (!(n->kids = calloc(n->n ? n->n : 1, sizeof(*n->kids)))) {
            b->failed = true;
            return NULL;
        }
        for (size_t i = 0; i < n->n; i++)
            if (!(n->kids[i] = build_node(b, json_array_get(j, i), ns, depth + 1)))
                return NULL;
        return n;
    }
    if (!json_is_object(j)) {
        seterr(b->err, b->errlen, "a type must be a string, an array or an object");
        b->failed = true;
        return NULL;
    }
    const json_t *type = json_object_get(j, "type");
    if (!json_is_string(type)) /* {"type": {...}} or {"type": [...]} */
        return build_node(b, type, ns, depth + 1);
    const char *t = json_string_value(type);
    struct node *n = NULL;
    if (strcmp(t, "record") == 0 || strcmp(t, "error") == 0) {
        n = build_named(b, j, K_RECORD, ns, depth);
    } else if (strcmp(t, "enum") == 0) {
        n = build_named(b, j, K_ENUM, ns, depth);
    } else if (strcmp(t, "fixed") == 0) {
        if ((n = build_named(b, j, K_FIXED, ns, depth)))
            mark_decimal(n, j);
    } else if (strcmp(t, "array") == 0 || strcmp(t, "map") == 0) {
        bool arr = t[0] == 'a';
        if (!(n = node_new(b, arr ? K_ARRAY : K_MAP)))
            return NULL;
        n->n = 1;
        if (!(n->kids = calloc(1, sizeof(*n->kids))) || !(n->name = strdup(t))) {
            b->failed = true;
            return NULL;
        }
        n->kids[0] = build_node(b, json_object_get(j, arr ? "items" : "values"), ns, depth + 1);
        if (!n->kids[0])
            return NULL;
    } else {
        /* {"type": "bytes", "logicalType": ...} and named references in object form */
        if (!(n = build_node(b, type, ns, depth + 1)))
            return NULL;
        if (n->kind == K_BYTES)
            mark_decimal(n, j);
    }
    return n;
}

void wsb_avro_schema_free(struct wsb_avro_schema *s)
{
    if (!s)
        return;
    while (s->all) {
        struct node *n = s->all;
        s->all = n->all;
        node_free(n);
    }
    if (s->iface) {
        avro_value_decref(&s->value);
        avro_value_iface_decref(s->iface);
    }
    if (s->schema)
        avro_schema_decref(s->schema);
    if (s->reader)
        avro_reader_free(s->reader);
    if (s->writer)
        avro_writer_free(s->writer);
    json_decref(s->json);
    free(s);
}

struct wsb_avro_schema *wsb_avro_schema_new(const char *json, size_t len, char *err, size_t errlen)
{
    struct wsb_avro_schema *s = calloc(1, sizeof(*s));
    struct build b = {.s = s, .err = err, .errlen = errlen};
    json_error_t je;
    if (!s) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    if (!(s->json = json_loadb(json, len, JSON_DECODE_ANY, &je))) {
        seterr(err, errlen, "schema is not JSON: %s", je.text);
        goto fail;
    }
    /* Our own walk first: it refuses some schemas avro-c would leak memory on (a type
     * defined twice) before avro-c sees them. */
    if (!(s->root = build_node(&b, s->json, "", 0)))
        goto fail;
    /* avro-c parses NUL-terminated text only. */
    char *text = strndup(json, len);
    if (!text) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    int rc = avro_schema_from_json_length(text, len, &s->schema);
    free(text);
    if (rc) {
        s->schema = NULL;
        seterr(err, errlen, "invalid schema: %s", avro_strerror());
        goto fail;
    }
    if (!(s->iface = avro_generic_class_from_schema(s->schema))) {
        seterr(err, errlen, "unsupported schema: %s", avro_strerror());
        goto fail;
    }
    if (avro_generic_value_new(s->iface, &s->value)) {
        avro_value_iface_decref(s->iface);
        s->iface = NULL;
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    if (!(s->reader = avro_reader_memory(s->dummy, 0)) ||
        !(s->writer = avro_writer_memory(s->dummy, 0))) {
        seterr(err, errlen, "out of memory");
        goto fail;
    }
    while (b.named) {
        struct named *e = b.named;
        b.named = e->next;
        free(e->fullname);
        free(e);
    }
    return s;

fail:
    while (b.named) {
        struct named *e = b.named;
        b.named = e->next;
        free(e->fullname);
        free(e);
    }
    wsb_avro_schema_free(s);
    return NULL;
}

/* ---- Decoding ------------------------------------------------------------------------ */

static bool utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += len;
    }
    return true;
}

/* Avro JSON encoding of bytes: one code point U+0000..U+00FF per byte. */
static void put_latin1(struct wsb_buf *out, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    wsb_buf_reserve(out, n * 2 + 2);
    wsb_buf_append(out, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            wsb_buf_append(out, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            wsb_buf_append(out, e, 6);
        } else if (c < 0x80) {
            wsb_buf_append(out, &c, 1);
        } else {
            uint8_t e[2] = {(uint8_t)(0xC0 | c >> 6), (uint8_t)(0x80 | (c & 0x3F))};
            wsb_buf_append(out, e, 2);
        }
    }
    wsb_buf_append(out, "\"", 1);
}

/* The unscaled two's-complement big-endian integer `p` as decimal digits at `scale`. */
static bool put_decimal(struct wsb_buf *out, const uint8_t *p, size_t n, int scale)
{
    uint8_t mag[MAX_DECIMAL_BYTES];
    char digits[MAX_DECIMAL_BYTES * 3 + 2];
    if (n > MAX_DECIMAL_BYTES)
        return false;
    bool neg = n > 0 && (p[0] & 0x80);
    memcpy(mag, p, n);
    if (neg) { /* magnitude = -value: invert and add one */
        int carry = 1;
        for (size_t i = n; i-- > 0;) {
            int v = (uint8_t)~mag[i] + carry;
            mag[i] = (uint8_t)v;
            carry = v >> 8;
        }
    }
    size_t nd = 0, start = 0;
    for (;;) {
        while (start < n && mag[start] == 0)
            start++;
        if (start == n)
            break;
        unsigned rem = 0;
        for (size_t i = start; i < n; i++) {
            unsigned cur = rem << 8 | mag[i];
            mag[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
        }
        digits[nd++] = (char)('0' + rem);
    }
    while (nd <= (size_t)scale) /* at least one digit before the point */
        digits[nd++] = '0';
    wsb_buf_append(out, neg ? "\"-" : "\"", neg ? 2 : 1);
    for (size_t i = nd; i-- > 0;) {
        wsb_buf_append(out, &digits[i], 1);
        if (scale > 0 && i == (size_t)scale)
            wsb_buf_append(out, ".", 1);
    }
    wsb_buf_append(out, "\"", 1);
    return true;
}

static void put_double(struct wsb_buf *out, double d, bool single)
{
    if (isnan(d))
        wsb_buf_puts(out, "\"NaN\"");
    else if (isinf(d))
        wsb_buf_puts(out, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    else if (d == 0 && signbit(d))
        wsb_buf_puts(out, "-0.0"); /* "%g" gives "-0", which JSON readers take as the integer 0 */
    else
        wsb_buf_printf(out, single ? "%.9g" : "%.17g", d);
}

static bool decode_value(avro_value_t *v, const struct node *n, struct wsb_buf *out, char *err,
                         size_t errlen)
{
    switch (n->kind) {
    case K_NULL: wsb_buf_puts(out, "null"); return true;
    case K_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        wsb_buf_puts(out, b ? "true" : "false");
        return true;
    }
    case K_INT: {
        int32_t i = 0;
        avro_value_get_int(v, &i);
        wsb_buf_printf(out, "%d", i);
        return true;
    }
    case K_LONG: {
        int64_t l = 0;
        avro_value_get_long(v, &l);
        wsb_buf_printf(out, "%lld", (long long)l);
        return true;
    }
    case K_FLOAT: {
        float f = 0;
        avro_value_get_float(v, &f);
        put_double(out, f, true);
        return true;
    }
    case K_DOUBLE: {
        double d = 0;
        avro_value_get_double(v, &d);
        put_double(out, d, false);
        return true;
    }
    case K_STRING: {
        const char *p = NULL;
        size_t size = 0;
        avro_value_get_string(v, &p, &size);
        size_t len = size ? size - 1 : 0; /* avro-c counts the NUL */
        if (!utf8_valid((const uint8_t *)p, len)) {
            seterr(err, errlen, "a string is not valid UTF-8");
            return false;
        }
        wsb_buf_json_str(out, p, len);
        return true;
    }
    case K_BYTES:
    case K_FIXED: {
        const void *p = NULL;
        size_t size = 0;
        if (n->kind == K_BYTES)
            avro_value_get_bytes(v, &p, &size);
        else
            avro_value_get_fixed(v, &p, &size);
        if (n->decimal) {
            if (!put_decimal(out, p, size, n->scale)) {
                seterr(err, errlen, "a decimal longer than %d bytes", MAX_DECIMAL_BYTES);
                return false;
            }
        } else {
            put_latin1(out, p, size);
        }
        return true;
    }
    case K_ENUM: {
        int e = -1;
        avro_value_get_enum(v, &e);
        if (e < 0 || (size_t)e >= n->n) {
            seterr(err, errlen, "enum index %d out of range", e);
            return false;
        }
        wsb_buf_json_str(out, n->names[e], strlen(n->names[e]));
        return true;
    }
    case K_RECORD: {
        wsb_buf_append(out, "{", 1);
        for (size_t i = 0; i < n->n; i++) {
            avro_value_t child;
            if (avro_value_get_by_index(v, i, &child, NULL)) {
                seterr(err, errlen, "record field %zu: %s", i, avro_strerror());
                return false;
            }
            if (i)
                wsb_buf_append(out, ",", 1);
            wsb_buf_json_str(out, n->names[i], strlen(n->names[i]));
            wsb_buf_append(out, ":", 1);
            if (!decode_value(&child, n->kids[i], out, err, errlen))
                return false;
        }
        wsb_buf_append(out, "}", 1);
        return true;
    }
    case K_ARRAY:
    case K_MAP: {
        size_t count = 0;
        avro_value_get_size(v, &count);
        bool map = n->kind == K_MAP;
        wsb_buf_append(out, map ? "{" : "[", 1);
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            const char *key = NULL;
            if (avro_value_get_by_index(v, i, &child, &key)) {
                seterr(err, errlen, "item %zu: %s", i, avro_strerror());
                return false;
            }
            if (i)
                wsb_buf_append(out, ",", 1);
            if (map) {
                if (!key || !utf8_valid((const uint8_t *)key, strlen(key))) {
                    seterr(err, errlen, "a map key is not valid UTF-8");
                    return false;
                }
                wsb_buf_json_str(out, key, strlen(key));
                wsb_buf_append(out, ":", 1);
            }
            if (!decode_value(&child, n->kids[0], out, err, errlen))
                return false;
        }
        wsb_buf_append(out, map ? "}" : "]", 1);
        return true;
    }
    case K_UNION: {
        int d = -1;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &d) || d < 0 || (size_t)d >= n->n ||
            avro_value_get_current_branch(v, &branch)) {
            seterr(err, errlen, "union branch %d out of range", d);
            return false;
        }
        const struct node *k = n->kids[d];
        if (k->kind == K_NULL) {
            wsb_buf_puts(out, "null");
            return true;
        }
        wsb_buf_append(out, "{", 1);
        wsb_buf_json_str(out, k->name, strlen(k->name));
        wsb_buf_append(out, ":", 1);
        if (!decode_value(&branch, k, out, err, errlen))
            return false;
        wsb_buf_append(out, "}", 1);
        return true;
    }
    }
    return false;
}

/* ---- Checking the binary before avro-c reads it ---------------------------------------
 * avro-c 1.11 leaks the buffer of a string, bytes or map key whose length runs past the input
 * (its read macros return without freeing), and would loop for ever on a huge block of
 * zero-size items. Every datum is walked here first, without allocating: lengths within the
 * input, indexes within the schema, block counts bounded, nothing after the datum. */

#define MAX_ITEMS (1u << 24) /* array items and map entries per datum */

struct scan {
    const uint8_t *p, *end;
    uint64_t items;
};

static bool scan_varint(struct scan *c, int64_t *out, int max_bytes)
{
    uint64_t v = 0;
    for (int shift = 0, i = 0; i < max_bytes; i++, shift += 7) {
        if (c->p >= c->end)
            return false;
        uint8_t b = *c->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1); /* zigzag */
            return true;
        }
    }
    return false;
}

static bool scan_skip(struct scan *c, int64_t n)
{
    if (n < 0 || n > c->end - c->p)
        return false;
    c->p += n;
    return true;
}

static bool scan_node(struct scan *c, const struct node *n, int depth)
{
    int64_t v;
    if (depth > MAX_DEPTH)
        return false;
    switch (n->kind) {
    case K_NULL: return true;
    case K_BOOLEAN: return c->p < c->end && *c->p++ <= 1;
    case K_INT: return scan_varint(c, &v, 5) && v >= INT32_MIN && v <= INT32_MAX;
    case K_LONG: return scan_varint(c, &v, 10);
    case K_FLOAT: return scan_skip(c, 4);
    case K_DOUBLE: return scan_skip(c, 8);
    case K_BYTES:
    case K_STRING: return scan_varint(c, &v, 10) && scan_skip(c, v);
    case K_FIXED: return scan_skip(c, n->fixed_size);
    case K_ENUM: return scan_varint(c, &v, 5) && v >= 0 && (uint64_t)v < n->n;
    case K_UNION:
        return scan_varint(c, &v, 5) && v >= 0 && (uint64_t)v < n->n &&
               scan_node(c, n->kids[v], depth + 1);
    case K_RECORD:
        for (size_t i = 0; i < n->n; i++)
            if (!scan_node(c, n->kids[i], depth + 1))
                return false;
        return true;
    case K_ARRAY:
    case K_MAP:
        for (;;) {
            int64_t count, size;
            if (!scan_varint(c, &count, 10))
                return false;
            if (count == 0)
                return true;
            if (count < 0) { /* a negative count is followed by the block's size in bytes */
                if (count == INT64_MIN || !scan_varint(c, &size, 10) || size < 0)
                    return false;
                count = -count;
            }
            if ((uint64_t)count > MAX_ITEMS - c->items)
                return false;
            c->items += (uint64_t)count;
            for (int64_t i = 0; i < count; i++) {
                if (n->kind == K_MAP && (!scan_varint(c, &v, 10) || !scan_skip(c, v)))
                    return false;
                if (!scan_node(c, n->kids[0], depth + 1))
                    return false;
            }
        }
    }
    return false;
}

enum wsb_err wsb_avro_decode(struct wsb_avro_schema *s, const uint8_t *p, size_t n,
                             struct wsb_buf *out, char *err, size_t errlen)
{
    size_t mark = out->len;
    struct scan c = {.p = p, .end = p + n};
    if (!scan_node(&c, s->root, 0)) {
        seterr(err, errlen,
               "not a datum of the schema (truncated, or an index or length out "
               "of range)");
        return WSB_ERR_INVALID;
    }
    if (c.p != c.end) {
        seterr(err, errlen, "trailing bytes after the datum");
        return WSB_ERR_INVALID;
    }
    avro_value_reset(&s->value);
    avro_reader_memory_set_source(s->reader, n ? (const char *)p : s->dummy, (int64_t)n);
    if (avro_value_read(s->reader, &s->value)) {
        seterr(err, errlen, "not a datum of the schema: %s", avro_strerror());
        return WSB_ERR_INVALID;
    }
    if (!decode_value(&s->value, s->root, out, err, errlen)) {
        out->len = mark;
        return WSB_ERR_INVALID;
    }
    if (out->oom) {
        out->len = mark;
        seterr(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    return WSB_OK;
}

/* ---- Encoding ------------------------------------------------------------------------ */

struct enc {
    char *err;
    size_t errlen;
    char path[256];
};

static bool enc_fail(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool enc_fail(struct enc *e, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    seterr(e->err, e->errlen, "%s: %s", e->path[0] ? e->path : "data", msg);
    return false;
}

/* Appends ".name" or "[i]" to the path; returns the old length to restore. */
static size_t path_push(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(struct enc *e, const char *fmt, ...)
{
    size_t old = strlen(e->path);
    if (!e->path[0])
        snprintf(e->path, sizeof(e->path), "data");
    size_t at = strlen(e->path);
    va_list ap;
    va_start(ap, fmt);
    if (at < sizeof(e->path))
        vsnprintf(e->path + at, sizeof(e->path) - at, fmt, ap);
    va_end(ap);
    return old;
}

/* "-12.5" or a JSON number at `scale` -> the unscaled integer, two's complement big-endian
 * and minimal in out[0..*len). False when it does not fit the precision or the scale. */
static bool decimal_bytes(struct enc *e, const json_t *v, const struct node *n, uint8_t *out,
                          size_t *len)
{
    char text[400];
    if (json_is_string(v))
        snprintf(text, sizeof(text), "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(text, sizeof(text), "%.*f", n->scale, json_real_value(v));
    else
        return enc_fail(e, "a decimal must be a string of digits or a number");
    const char *p = text;
    bool neg = *p == '-';
    if (neg || *p == '+')
        p++;
    uint8_t mag[MAX_DECIMAL_BYTES] = {0};
    int ndigits = 0, frac = -1;
    bool any = false, significant = false;
    for (; *p; p++) {
        if (*p == '.' && frac < 0) {
            frac = 0;
            continue;
        }
        if (*p < '0' || *p > '9')
            return enc_fail(e, "\"%s\" is not a decimal number", text);
        any = true;
        if (frac >= 0 && ++frac > n->scale)
            return enc_fail(e, "more than %d digits after the point", n->scale);
        if (*p != '0')
            significant = true;
        if (significant)
            ndigits++;
        unsigned carry = (unsigned)(*p - '0');
        for (size_t i = MAX_DECIMAL_BYTES; i-- > 0;) {
            unsigned cur = mag[i] * 10u + carry;
            mag[i] = (uint8_t)cur;
            carry = cur >> 8;
        }
        if (carry)
            return enc_fail(e, "decimal too large");
    }
    if (!any)
        return enc_fail(e, "\"%s\" is not a decimal number", text);
    for (int k = frac < 0 ? 0 : frac; k < n->scale; k++) { /* pad to the scale */
        unsigned carry = 0;
        for (size_t i = MAX_DECIMAL_BYTES; i-- > 0;) {
            unsigned cur = mag[i] * 10u + carry;
            mag[i] = (uint8_t)cur;
            carry = cur >> 8;
        }
        if (carry)
            return enc_fail(e, "decimal too large");
        if (significant)
            ndigits++;
    }
    if (ndigits > n->precision)
        return enc_fail(e, "more than %d significant digits (precision)", n->precision);
    if (neg) {
        int carry = 1;
        for (size_t i = MAX_DECIMAL_BYTES; i-- > 0;) {
            int c = (uint8_t)~mag[i] + carry;
            mag[i] = (uint8_t)c;
            carry = c >> 8;
        }
    }
    size_t start = 0; /* minimal two's complement */
    uint8_t pad = neg ? 0xFF : 0x00;
    while (start + 1 < MAX_DECIMAL_BYTES && mag[start] == pad &&
           ((mag[start + 1] & 0x80) != 0) == neg)
        start++;
    size_t mlen = MAX_DECIMAL_BYTES - start;
    if (n->kind == K_FIXED) {
        if (mlen > (size_t)n->fixed_size)
            return enc_fail(e, "decimal does not fit fixed(%lld)", (long long)n->fixed_size);
        mlen = (size_t)n->fixed_size;
        start = MAX_DECIMAL_BYTES - mlen;
        if (mlen > MAX_DECIMAL_BYTES)
            return enc_fail(e, "fixed decimal too large");
    }
    memcpy(out, mag + start, mlen);
    *len = mlen;
    return true;
}

/* JSON string of code points U+0000..U+00FF -> bytes (the Avro JSON encoding of bytes). */
static bool latin1_bytes(struct enc *e, const json_t *v, uint8_t **out, size_t *len)
{
    if (!json_is_string(v))
        return enc_fail(e, "expected a string (bytes)");
    const uint8_t *p = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v), k = 0;
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return enc_fail(e, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            b[k++] = p[i];
        } else if ((p[i] == 0xC2 || p[i] == 0xC3) && i + 1 < n) {
            b[k++] = (uint8_t)((p[i] & 0x03) << 6 | (p[i + 1] & 0x3F));
            i++;
        } else {
            free(b);
            return enc_fail(e, "bytes must be code points U+0000..U+00FF");
        }
    }
    *out = b;
    *len = k;
    return true;
}

static bool encode_value(struct enc *e, avro_value_t *v, const struct node *n, const json_t *j,
                         int depth);

static bool encode_union(struct enc *e, avro_value_t *v, const struct node *n, const json_t *j,
                         int depth)
{
    avro_value_t branch;
    int pick = -1;
    const json_t *inner = j;
    if (json_is_null(j)) {
        for (size_t i = 0; i < n->n && pick < 0; i++)
            if (n->kids[i]->kind == K_NULL)
                pick = (int)i;
        if (pick < 0)
            return enc_fail(e, "null is not a branch of the union");
    } else if (json_is_object(j) && json_object_size(j) == 1) {
        const char *label = json_object_iter_key(json_object_iter((json_t *)j));
        for (size_t i = 0; i < n->n && pick < 0; i++)
            if (n->kids[i]->name && strcmp(n->kids[i]->name, label) == 0)
                pick = (int)i;
        if (pick >= 0)
            inner = json_object_iter_value(json_object_iter((json_t *)j));
    }
    if (pick < 0) { /* a bare value: the union's only non-null branch */
        int other = -1, count = 0;
        for (size_t i = 0; i < n->n; i++)
            if (n->kids[i]->kind != K_NULL) {
                other = (int)i;
                count++;
            }
        if (count != 1)
            return enc_fail(e, "a union value must be null or {\"TYPE\": value}");
        pick = other;
    }
    if (avro_value_set_branch(v, pick, &branch))
        return enc_fail(e, "%s", avro_strerror());
    return encode_value(e, &branch, n->kids[pick], inner, depth + 1);
}

static bool encode_value(struct enc *e, avro_value_t *v, const struct node *n, const json_t *j,
                         int depth)
{
    if (depth > MAX_DEPTH)
        return enc_fail(e, "nested deeper than %d", MAX_DEPTH);
    switch (n->kind) {
    case K_NULL:
        if (!json_is_null(j))
            return enc_fail(e, "expected null");
        avro_value_set_null(v);
        return true;
    case K_BOOLEAN:
        if (!json_is_boolean(j))
            return enc_fail(e, "expected a boolean");
        avro_value_set_boolean(v, json_is_true(j));
        return true;
    case K_INT:
        if (!json_is_integer(j) || json_integer_value(j) < INT32_MIN ||
            json_integer_value(j) > INT32_MAX)
            return enc_fail(e, "expected an int (32-bit integer)");
        avro_value_set_int(v, (int32_t)json_integer_value(j));
        return true;
    case K_LONG:
        if (!json_is_integer(j))
            return enc_fail(e, "expected a long (integer)");
        avro_value_set_long(v, json_integer_value(j));
        return true;
    case K_FLOAT:
    case K_DOUBLE: {
        double d;
        const char *s = json_string_value(j);
        if (json_is_number(j))
            d = json_number_value(j);
        else if (s && strcmp(s, "NaN") == 0)
            d = NAN;
        else if (s && strcmp(s, "Infinity") == 0)
            d = INFINITY;
        else if (s && strcmp(s, "-Infinity") == 0)
            d = -INFINITY;
        else
            return enc_fail(e, "expected a number");
        if (n->kind == K_FLOAT)
            avro_value_set_float(v, (float)d);
        else
            avro_value_set_double(v, d);
        return true;
    }
    case K_STRING: {
        if (!json_is_string(j))
            return enc_fail(e, "expected a string");
        /* avro-c's size counts the terminating NUL */
        avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        return true;
    }
    case K_BYTES:
    case K_FIXED: {
        if (n->decimal) {
            uint8_t buf[MAX_DECIMAL_BYTES];
            size_t len;
            if (!decimal_bytes(e, j, n, buf, &len))
                return false;
            int rc = n->kind == K_BYTES ? avro_value_set_bytes(v, buf, len)
                                        : avro_value_set_fixed(v, buf, len);
            return rc ? enc_fail(e, "%s", avro_strerror()) : true;
        }
        uint8_t *buf;
        size_t len;
        if (!latin1_bytes(e, j, &buf, &len))
            return false;
        if (n->kind == K_FIXED && len != (size_t)n->fixed_size) {
            free(buf);
            return enc_fail(e, "expected %lld bytes (fixed)", (long long)n->fixed_size);
        }
        int rc = n->kind == K_BYTES ? avro_value_set_bytes(v, buf, len)
                                    : avro_value_set_fixed(v, buf, len);
        free(buf);
        return rc ? enc_fail(e, "%s", avro_strerror()) : true;
    }
    case K_ENUM: {
        const char *sym = json_string_value(j);
        for (size_t i = 0; sym && i < n->n; i++)
            if (strcmp(n->names[i], sym) == 0) {
                avro_value_set_enum(v, (int)i);
                return true;
            }
        return enc_fail(e, "not a symbol of enum %s", n->name);
    }
    case K_RECORD: {
        if (!json_is_object(j))
            return enc_fail(e, "expected an object (record %s)", n->name);
        size_t seen = 0;
        for (size_t i = 0; i < n->n; i++) {
            const json_t *fv = json_object_get(j, n->names[i]);
            avro_value_t child;
            if (fv)
                seen++;
            else if (n->defs[i])
                fv = n->defs[i];
            else
                return enc_fail(e, "missing field \"%s\"", n->names[i]);
            if (avro_value_get_by_index(v, i, &child, NULL))
                return enc_fail(e, "%s", avro_strerror());
            size_t old = path_push(e, ".%s", n->names[i]);
            /* A default of a union field is a value of its first branch (Avro spec). */
            avro_value_t branch;
            bool ok = (!json_object_get(j, n->names[i]) && n->kids[i]->kind == K_UNION)
                          ? (n->kids[i]->n > 0 && avro_value_set_branch(&child, 0, &branch) == 0 &&
                             encode_value(e, &branch, n->kids[i]->kids[0], fv, depth + 1))
                          : encode_value(e, &child, n->kids[i], fv, depth + 1);
            if (!ok)
                return false;
            e->path[old] = '\0';
        }
        if (seen != json_object_size(j)) {
            const char *key;
            json_t *val;
            json_object_foreach((json_t *)j, key, val)
            {
                bool known = false;
                for (size_t i = 0; i < n->n && !known; i++)
                    known = strcmp(n->names[i], key) == 0;
                if (!known)
                    return enc_fail(e, "unknown field \"%s\" (record %s)", key, n->name);
            }
        }
        return true;
    }
    case K_ARRAY: {
        if (!json_is_array(j))
            return enc_fail(e, "expected an array");
        for (size_t i = 0; i < json_array_size(j); i++) {
            avro_value_t child;
            if (avro_value_append(v, &child, NULL))
                return enc_fail(e, "%s", avro_strerror());
            size_t old = path_push(e, "[%zu]", i);
            if (!encode_value(e, &child, n->kids[0], json_array_get(j, i), depth + 1))
                return false;
            e->path[old] = '\0';
        }
        return true;
    }
    case K_MAP: {
        if (!json_is_object(j))
            return enc_fail(e, "expected an object (map)");
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val)
        {
            avro_value_t child;
            if (avro_value_add(v, key, &child, NULL, NULL))
                return enc_fail(e, "%s", avro_strerror());
            size_t old = path_push(e, ".%s", key);
            if (!encode_value(e, &child, n->kids[0], val, depth + 1))
                return false;
            e->path[old] = '\0';
        }
        return true;
    }
    case K_UNION: return encode_union(e, v, n, j, depth);
    }
    return enc_fail(e, "unsupported type");
}

enum wsb_err wsb_avro_encode(struct wsb_avro_schema *s, const json_t *v, struct wsb_buf *out,
                             char *err, size_t errlen)
{
    struct enc e = {.err = err, .errlen = errlen};
    avro_value_reset(&s->value);
    if (!encode_value(&e, &s->value, s->root, v, 0))
        return WSB_ERR_INVALID;
    size_t size = 0;
    if (avro_value_sizeof(&s->value, &size) || wsb_buf_reserve(out, size ? size : 1) < 0) {
        seterr(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    avro_writer_memory_set_dest(s->writer, (const char *)out->data + out->len, (int64_t)size);
    if (avro_value_write(s->writer, &s->value)) {
        seterr(err, errlen, "encoding failed: %s", avro_strerror());
        return WSB_ERR_INTERNAL;
    }
    out->len += size;
    return WSB_OK;
}
