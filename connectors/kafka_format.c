/* The Kafka connector's format stage: Avro decoding of consumed records (in partition order
 * while schemas are fetched) and Avro encoding of publishes. */
#include "connectors/kafka_format.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/avro_json.h"
#include "connectors/schema_registry.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/map.h"

#define MAX_SCHEMAS 1024 /* parsed schemas kept by id; past this the cache starts over */

/* A parsed schema, or a schema text avro-c refused (`s` NULL): records of it are
 * undecodable. */
struct schema {
    struct wsb_avro_schema *s;
};

struct held {
    struct held *next;
    struct wsb_msg *m;
};

struct fsrc {
    uint64_t id;
    enum wsb_format value, key;
    char *topic;
    struct held *head, **tail;
    uint32_t nheld;
    bool failed; /* told to the sink; dropped at the next poll */
};

struct held_pub {
    struct held_pub *next;
    char *topic;
    struct wsb_msg *m;
    uint64_t cookie;
    enum wsb_format value, key;
};

struct wsb_kfmt {
    char name[64];
    struct wsb_sink sink;
    struct wsb_kfmt_hooks hooks;
    struct wsb_sr *sr; /* NULL without a registry */
    uint32_t max_held;
    atomic_bool dirty; /* a lookup finished since the last poll */
    bool closed;

    struct wsb_map schemas; /* id -> struct schema */
    size_t nschemas;
    struct wsb_map sources; /* id -> struct fsrc (only sources that held something) */
    struct held_pub *pubs, **pubs_tail;
    struct wsb_buf scratch;

    atomic_uint_fast64_t decoded, skipped, passed_unknown;
};

enum verdict { V_PASS, V_DONE, V_SKIP, V_WAIT };

/* ---- Lifetime ------------------------------------------------------------------------ */

int wsb_kfmt_check_config(const json_t *registry,
                          void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    return wsb_sr_check_config(registry, report, ctx);
}

static void on_registry(void *ctx)
{
    struct wsb_kfmt *f = ctx;
    atomic_store(&f->dirty, true);
    if (f->hooks.wake)
        f->hooks.wake(f->hooks.ctx);
}

struct wsb_kfmt *wsb_kfmt_new(const char *connector, const json_t *registry,
                              const struct wsb_sink *sink, const struct wsb_kfmt_hooks *hooks,
                              char *err, size_t errlen)
{
    struct wsb_kfmt *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(f->name, sizeof(f->name), "%s", connector);
    f->sink = *sink;
    f->hooks = *hooks;
    wsb_map_init(&f->schemas);
    wsb_map_init(&f->sources);
    wsb_buf_init(&f->scratch);
    f->pubs_tail = &f->pubs;
    atomic_init(&f->dirty, false);
    atomic_init(&f->decoded, 0);
    atomic_init(&f->skipped, 0);
    atomic_init(&f->passed_unknown, 0);
    if (registry) {
        if (!(f->sr = wsb_sr_new(registry, on_registry, f, err, errlen))) {
            wsb_kfmt_free(f);
            return NULL;
        }
        f->max_held = wsb_sr_max_held(f->sr);
    }
    return f;
}

enum wsb_err wsb_kfmt_start(struct wsb_kfmt *f)
{
    return f->sr ? wsb_sr_start(f->sr) : WSB_OK;
}

static void free_held(struct fsrc *s)
{
    while (s->head) {
        struct held *h = s->head;
        s->head = h->next;
        wsb_msg_unref(h->m);
        free(h);
    }
    s->tail = &s->head;
    s->nheld = 0;
}

static void free_source(void *ctx, void *v)
{
    WSB_UNUSED(ctx);
    struct fsrc *s = v;
    free_held(s);
    free(s->topic);
    free(s);
}

static void free_schema(void *ctx, void *v)
{
    WSB_UNUSED(ctx);
    struct schema *sc = v;
    wsb_avro_schema_free(sc->s);
    free(sc);
}

void wsb_kfmt_shutdown(struct wsb_kfmt *f)
{
    if (f->closed)
        return;
    while (f->pubs) {
        struct held_pub *p = f->pubs;
        f->pubs = p->next;
        f->sink.publish_done(f->sink.ctx, p->cookie, false,
                             "connector stopping while the schema was fetched");
        wsb_msg_unref(p->m);
        free(p->topic);
        free(p);
    }
    f->pubs_tail = &f->pubs;
    wsb_map_each(&f->sources, free_source, NULL);
    wsb_map_cleanup(&f->sources);
    wsb_map_init(&f->sources);
    f->closed = true;
}

void wsb_kfmt_free(struct wsb_kfmt *f)
{
    if (!f)
        return;
    wsb_sr_free(f->sr); /* first: its thread calls back into f */
    f->sr = NULL;
    wsb_kfmt_shutdown(f);
    wsb_map_each(&f->schemas, free_schema, NULL);
    wsb_map_cleanup(&f->schemas);
    wsb_map_cleanup(&f->sources);
    wsb_buf_cleanup(&f->scratch);
    free(f);
}

bool wsb_kfmt_needed(const struct wsb_kfmt *f, enum wsb_format value, enum wsb_format key)
{
    if (value == WSB_FORMAT_RAW || value == WSB_FORMAT_AVRO || key == WSB_FORMAT_AVRO)
        return true;
    return f->sr && (value == WSB_FORMAT_AUTO || key == WSB_FORMAT_AUTO);
}

bool wsb_kfmt_ready(struct wsb_kfmt *f, char *reason, size_t reasonlen)
{
    return !f->sr || wsb_sr_ready(f->sr, reason, reasonlen);
}

bool wsb_kfmt_stats(const struct wsb_kfmt *f, struct wsb_format_stats *out)
{
    struct wsb_kfmt *m = (struct wsb_kfmt *)f;
    out->decoded = atomic_load(&m->decoded);
    out->undecodable = atomic_load(&m->skipped);
    out->passed_unknown = atomic_load(&m->passed_unknown);
    out->registry_fetches = f->sr ? wsb_sr_fetches(f->sr) : 0;
    return f->sr != NULL;
}

/* ---- Schemas ------------------------------------------------------------------------- */

/* Parses `text` (taken) as schema `id` and keeps it; NULL on allocation failure. A text
 * avro-c refuses is kept too (as unusable) so that it is not fetched again. */
static struct schema *schema_keep(struct wsb_kfmt *f, uint32_t id, char *text)
{
    char err[256] = "";
    if (f->nschemas >= MAX_SCHEMAS) { /* rare: many ids; start over */
        wsb_map_each(&f->schemas, free_schema, NULL);
        wsb_map_cleanup(&f->schemas);
        wsb_map_init(&f->schemas);
        f->nschemas = 0;
    }
    struct schema *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        free(text);
        return NULL;
    }
    sc->s = wsb_avro_schema_new(text, strlen(text), err, sizeof(err));
    free(text);
    if (!sc->s)
        wsb_log(WSB_LOG_WARN, "schema registry: unusable schema", WSB_LSTR("connector", f->name),
                WSB_LUINT("id", id), WSB_LSTR("reason", err));
    if (wsb_map_put_u64(&f->schemas, id, sc) < 0) {
        free_schema(NULL, sc);
        return NULL;
    }
    f->nschemas++;
    return sc;
}

/* The parsed schema `id`: FOUND with *out (whose s may be NULL: a schema avro-c refused),
 * or the registry's answer. */
static enum wsb_sr_status schema_by_id(struct wsb_kfmt *f, uint32_t id, struct schema **out)
{
    struct schema *sc = wsb_map_get_u64(&f->schemas, id);
    if (sc) {
        *out = sc;
        return WSB_SR_FOUND;
    }
    char *text = NULL;
    enum wsb_sr_status st = wsb_sr_schema(f->sr, id, &text);
    if (st != WSB_SR_FOUND)
        return st;
    if (!(*out = schema_keep(f, id, text)))
        return WSB_SR_DOWN;
    return WSB_SR_FOUND;
}

/* ---- Consumed records ---------------------------------------------------------------- */

/* Renders one part (value or key) of a record into f->scratch from `mark`. */
static enum verdict render_part(struct wsb_kfmt *f, enum wsb_format fmt, const uint8_t *p, size_t n,
                                bool *unknown)
{
    uint32_t id;
    bool avro = fmt == WSB_FORMAT_AVRO;
    if (fmt == WSB_FORMAT_JSON || fmt == WSB_FORMAT_RAW || !f->sr)
        return avro ? V_SKIP : V_PASS;
    if (!wsb_avro_wire_split(p, n, &id))
        return avro ? V_SKIP : V_PASS;
    struct schema *sc = NULL;
    switch (schema_by_id(f, id, &sc)) {
    case WSB_SR_FOUND: break;
    case WSB_SR_NOT_FOUND: *unknown = true; return avro ? V_SKIP : V_PASS;
    case WSB_SR_PENDING:
    case WSB_SR_DOWN:
    default: return V_WAIT;
    }
    char err[200];
    if (!sc->s || wsb_avro_decode(sc->s, p + WSB_AVRO_WIRE_HEADER, n - WSB_AVRO_WIRE_HEADER,
                                  &f->scratch, err, sizeof(err)) != WSB_OK)
        return avro ? V_SKIP : V_PASS;
    return V_DONE;
}

/* Decides what becomes of `m` under its source's formats; on V_DONE *out is the rendered
 * message (a new one, or `m` itself with flags set). */
static enum verdict render(struct wsb_kfmt *f, const struct fsrc *s, struct wsb_msg *m,
                           struct wsb_msg **out)
{
    bool unknown = false;
    f->scratch.len = 0;
    f->scratch.oom = false;
    enum verdict v = render_part(f, s->value, m->payload, m->payload_len, &unknown);
    size_t vlen = f->scratch.len;
    enum verdict k = V_PASS;
    if (m->key)
        k = render_part(f, s->key, m->key, m->key_len, &unknown);
    if (v == V_WAIT || k == V_WAIT)
        return V_WAIT;
    if (v == V_SKIP || k == V_SKIP)
        atomic_fetch_add(&f->skipped, 1);
    else if (unknown)
        atomic_fetch_add(&f->passed_unknown, 1);
    if (v == V_SKIP || k == V_SKIP || f->scratch.oom)
        return V_SKIP;
    if (v != V_DONE && k != V_DONE) {
        if (s->value == WSB_FORMAT_RAW)
            m->flags |= WSB_MSG_DATA_RAW;
        *out = m;
        return V_DONE;
    }
    const uint8_t *val = v == V_DONE ? f->scratch.data : m->payload;
    size_t val_len = v == V_DONE ? vlen : m->payload_len;
    const uint8_t *key = k == V_DONE ? f->scratch.data + vlen : m->key;
    size_t key_len = k == V_DONE ? f->scratch.len - vlen : m->key_len;
    struct wsb_msg *n = wsb_msg_new(m->source_id, m->partition, m->offset, m->timestamp_ms, key,
                                    key_len, val, val_len, m->headers, m->nheaders);
    if (!n)
        return V_SKIP;
    n->ack_token = m->ack_token;
    if (k == V_DONE)
        n->flags |= WSB_MSG_KEY_JSON;
    if (v != V_DONE && s->value == WSB_FORMAT_RAW)
        n->flags |= WSB_MSG_DATA_RAW;
    atomic_fetch_add(&f->decoded, 1);
    *out = n;
    return V_DONE;
}

/* Hands `m` (taken) on as decided; false when it must wait. */
static bool emit(struct wsb_kfmt *f, const struct fsrc *s, struct wsb_msg *m)
{
    struct wsb_msg *out = NULL;
    if (m->flags & WSB_MSG_LOST) { /* records lost at the broker: no record to render */
        f->sink.message(f->sink.ctx, m);
        return true;
    }
    switch (render(f, s, m, &out)) {
    case V_WAIT: return false;
    case V_DONE:
        if (out != m)
            wsb_msg_unref(m);
        f->sink.message(f->sink.ctx, out);
        return true;
    case V_SKIP:
    case V_PASS:
    default: {
        /* A marker in the record's place: clients get a gap, positions move past it. */
        struct wsb_msg *g = wsb_msg_new(m->source_id, m->partition, m->offset, m->timestamp_ms,
                                        NULL, 0, NULL, 0, NULL, 0);
        wsb_msg_unref(m);
        if (g) {
            g->flags |= WSB_MSG_SKIPPED;
            f->sink.message(f->sink.ctx, g);
        }
        return true;
    }
    }
}

static bool partition_held(const struct fsrc *s, int32_t partition)
{
    for (const struct held *h = s->head; h; h = h->next)
        if (h->m->partition == partition)
            return true;
    return false;
}

static void fail_source(struct wsb_kfmt *f, struct fsrc *s)
{
    char reason[900];
    /* down: the registry's own reason; else its answers are too slow for the bound */
    snprintf(reason, sizeof(reason), "schema registry %s: more than %u records waiting",
             f->sr ? wsb_sr_url(f->sr) : "", f->max_held);
    if (f->sr)
        wsb_sr_ready(f->sr, reason, sizeof(reason));
    wsb_log(WSB_LOG_WARN, "records waiting for a schema over the bound: source fails",
            WSB_LSTR("connector", f->name), WSB_LSTR("topic", s->topic),
            WSB_LUINT("held", s->nheld), WSB_LSTR("reason", reason));
    free_held(s);
    s->failed = true;
    f->sink.source_failed(f->sink.ctx, s->id, "unavailable", reason);
}

void wsb_kfmt_message(struct wsb_kfmt *f, uint64_t source_id, enum wsb_format value,
                      enum wsb_format key, const char *topic, struct wsb_msg *m)
{
    struct fsrc *s = wsb_map_get_u64(&f->sources, source_id);
    if (s && s->failed) {
        wsb_msg_unref(m);
        return;
    }
    if (!s || !s->head || !partition_held(s, m->partition)) {
        struct fsrc tmp = {.id = source_id, .value = value, .key = key};
        if (emit(f, s ? s : &tmp, m))
            return;
    }
    /* Wait, in order behind the partition's earlier records. */
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))) || !(s->topic = strdup(topic ? topic : "")) ||
            wsb_map_put_u64(&f->sources, source_id, s) < 0) {
            if (s)
                free(s->topic);
            free(s);
            wsb_msg_unref(m);
            return;
        }
        s->id = source_id;
        s->value = value;
        s->key = key;
        s->tail = &s->head;
    }
    struct held *h = malloc(sizeof(*h));
    if (!h) {
        wsb_msg_unref(m);
        return;
    }
    h->m = m;
    h->next = NULL;
    *s->tail = h;
    s->tail = &h->next;
    if (++s->nheld > f->max_held)
        fail_source(f, s);
}

void wsb_kfmt_forget(struct wsb_kfmt *f, uint64_t source_id)
{
    struct fsrc *s = wsb_map_del_u64(&f->sources, source_id);
    if (s)
        free_source(NULL, s);
}

/* One pass over a source's held records, oldest first: a partition whose head still waits
 * keeps the rest of its records; the others go on. */
static void retry_source(struct wsb_kfmt *f, struct fsrc *s)
{
    int32_t blocked[64];
    size_t nblocked = 0;
    bool overflow = false;
    struct held **pp = &s->head;
    while (*pp) {
        struct held *h = *pp;
        bool is_blocked = overflow;
        for (size_t i = 0; i < nblocked && !is_blocked; i++)
            is_blocked = blocked[i] == h->m->partition;
        if (!is_blocked && emit(f, s, h->m)) {
            *pp = h->next;
            s->nheld--;
            free(h);
            continue;
        }
        if (!is_blocked) {
            if (nblocked < WSB_ARRAY_LEN(blocked))
                blocked[nblocked++] = h->m->partition;
            else
                overflow = true; /* keep everything after this: order stays right */
        }
        pp = &h->next;
    }
    s->tail = pp;
}

struct retry_ctx {
    struct wsb_kfmt *f;
    uint64_t drop[32];
    size_t ndrop;
};

static void retry_one(void *ctx, void *v)
{
    struct retry_ctx *r = ctx;
    struct fsrc *s = v;
    if (s->failed) {
        if (r->ndrop < WSB_ARRAY_LEN(r->drop))
            r->drop[r->ndrop++] = s->id;
        return;
    }
    if (s->head)
        retry_source(r->f, s);
}

static void retry_publishes(struct wsb_kfmt *f);

void wsb_kfmt_poll(struct wsb_kfmt *f)
{
    if (f->closed || !f->sr)
        return;
    atomic_store(&f->dirty, false);
    struct retry_ctx r = {.f = f};
    wsb_map_each(&f->sources, retry_one, &r);
    for (size_t i = 0; i < r.ndrop; i++) {
        wsb_kfmt_forget(f, r.drop[i]);
        f->hooks.drop(f->hooks.ctx, r.drop[i]);
    }
    retry_publishes(f);
}

/* ---- Publishes ----------------------------------------------------------------------- */

enum pub_verdict { P_DONE, P_WAIT };

/* Encodes one part with the subject's latest schema into `out` (header + Avro).
 * P_WAIT while the schema is fetched; on a refusal *why is set. */
static enum pub_verdict encode_part(struct wsb_kfmt *f, const char *topic, const char *suffix,
                                    const uint8_t *json, size_t len, bool bare_string,
                                    struct wsb_buf *out, char *why, size_t whylen)
{
    char subject[300];
    uint32_t id = 0;
    char *text = NULL;
    if (snprintf(subject, sizeof(subject), "%s-%s", topic, suffix) >= (int)sizeof(subject))
        subject[sizeof(subject) - 1] = 0; /* topics are at most 249 characters */
    enum wsb_sr_status st = f->sr ? wsb_sr_latest(f->sr, subject, &id, &text) : WSB_SR_NOT_FOUND;
    if (st == WSB_SR_PENDING)
        return P_WAIT;
    if (st == WSB_SR_NOT_FOUND) {
        snprintf(why, whylen, WSB_PUBLISH_INVALID_PREFIX "no schema registered for subject %s",
                 subject);
        return P_DONE;
    }
    if (st == WSB_SR_DOWN) {
        char r[256] = "schema registry unreachable";
        wsb_sr_ready(f->sr, r, sizeof(r));
        snprintf(why, whylen, "%s", r);
        return P_DONE;
    }
    /* The latest version's text comes with its id: parsed once, kept by id. */
    struct schema *sc = wsb_map_get_u64(&f->schemas, id);
    if (sc)
        free(text);
    else
        sc = schema_keep(f, id, text);
    if (!sc || !sc->s) {
        snprintf(why, whylen, "the latest schema of %s (id %" PRIu32 ") is not usable", subject,
                 id);
        return P_DONE;
    }
    json_error_t je;
    json_t *v = json_loadb((const char *)json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!v && bare_string) /* a key given as plain text */
        v = json_stringn((const char *)json, len);
    if (!v) {
        snprintf(why, whylen, WSB_PUBLISH_INVALID_PREFIX "not JSON");
        return P_DONE;
    }
    uint8_t hdr[WSB_AVRO_WIRE_HEADER];
    wsb_avro_wire_header(hdr, id);
    wsb_buf_append(out, hdr, sizeof(hdr));
    char err[240];
    if (wsb_avro_encode(sc->s, v, out, err, sizeof(err)) != WSB_OK)
        snprintf(why, whylen,
                 WSB_PUBLISH_INVALID_PREFIX "does not fit schema %" PRIu32 " of %s: %s", id,
                 subject, err);
    json_decref(v);
    return P_DONE;
}

/* Tries a publish: true when it is done (produced or refused), false when it waits. */
static bool try_publish(struct wsb_kfmt *f, const char *topic, const struct wsb_msg *m,
                        uint64_t cookie, enum wsb_format value, enum wsb_format key)
{
    struct wsb_buf val, k;
    char why[800] = "";
    bool done = true;
    wsb_buf_init(&val);
    wsb_buf_init(&k);
    if (value == WSB_FORMAT_AVRO && encode_part(f, topic, "value", m->payload, m->payload_len,
                                                false, &val, why, sizeof(why)) == P_WAIT)
        done = false;
    if (done && !why[0] && key == WSB_FORMAT_AVRO && m->key &&
        encode_part(f, topic, "key", m->key, m->key_len, true, &k, why, sizeof(why)) == P_WAIT)
        done = false;
    if (done) {
        if (why[0]) {
            f->sink.publish_done(f->sink.ctx, cookie, false, why);
        } else if (val.oom || k.oom) {
            f->sink.publish_done(f->sink.ctx, cookie, false, "out of memory");
        } else {
            bool kenc = key == WSB_FORMAT_AVRO && m->key;
            struct wsb_msg *n = wsb_msg_new(
                0, -1, -1, -1, kenc ? k.data : m->key, kenc ? k.len : m->key_len,
                value == WSB_FORMAT_AVRO ? val.data : m->payload,
                value == WSB_FORMAT_AVRO ? val.len : m->payload_len, m->headers, m->nheaders);
            if (!n) {
                f->sink.publish_done(f->sink.ctx, cookie, false, "out of memory");
            } else {
                f->hooks.produce(f->hooks.ctx, topic, n, cookie);
                wsb_msg_unref(n);
            }
        }
    }
    wsb_buf_cleanup(&val);
    wsb_buf_cleanup(&k);
    return done;
}

bool wsb_kfmt_publish(struct wsb_kfmt *f, const struct wsb_publish *p, struct wsb_msg *m,
                      uint64_t cookie)
{
    if (p->value_format != WSB_FORMAT_AVRO && p->key_format != WSB_FORMAT_AVRO)
        return false;
    const char *topic = wsb_connector_field(p->fields, "topic");
    if (try_publish(f, topic, m, cookie, p->value_format, p->key_format))
        return true;
    struct held_pub *h = calloc(1, sizeof(*h));
    if (!h || !(h->topic = strdup(topic))) {
        free(h);
        f->sink.publish_done(f->sink.ctx, cookie, false, "out of memory");
        return true;
    }
    h->m = wsb_msg_ref(m);
    h->cookie = cookie;
    h->value = p->value_format;
    h->key = p->key_format;
    *f->pubs_tail = h;
    f->pubs_tail = &h->next;
    return true;
}

static void retry_publishes(struct wsb_kfmt *f)
{
    struct held_pub **pp = &f->pubs;
    while (*pp) {
        struct held_pub *h = *pp;
        if (try_publish(f, h->topic, h->m, h->cookie, h->value, h->key)) {
            *pp = h->next;
            wsb_msg_unref(h->m);
            free(h->topic);
            free(h);
        } else {
            pp = &h->next;
        }
    }
    f->pubs_tail = pp;
}
