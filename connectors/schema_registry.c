/* Schema registry client: evhttp on a private thread, a bounded TTL cache, single-flight. */
#include "connectors/schema_registry.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "connectors/connector.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/map.h"

#define MAX_ENTRIES 4096       /* cached ids and subjects together */
#define MAX_BODY (1024 * 1024) /* a registry answer larger than this is an error */
#define REQUEST_TIMEOUT_S 5
#define NEGATIVE_TTL_MS 10000 /* a 404 is asked again after this long (or the TTL) */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000

enum state { E_PENDING, E_FOUND, E_NOT_FOUND, E_FAILED };

struct entry {
    struct entry *next_queued; /* the fetch queue */
    char *key;                 /* "i:ID" or "s:SUBJECT" */
    bool latest;
    uint32_t id;
    char *subject;
    enum state state;
    bool fetching; /* queued or in flight: at most one fetch per key */
    char *schema;
    int64_t expires_ms; /* FOUND / NOT_FOUND: refetch after; FAILED: retry after */
    uint32_t backoff_ms;
    int64_t used_ms; /* for eviction */
};

struct wsb_sr {
    char base[544]; /* scheme://host:port/prefix without a trailing slash; fits the longest */
    char host[256];
    int port;
    char path_prefix[256];
    char auth[600]; /* the Authorization header value, or "" */
    uint32_t ttl_ms;
    uint32_t max_held;
    void (*wake)(void *ctx);
    void *wake_ctx;

    pthread_mutex_t lock; /* guards everything below */
    struct wsb_map entries;
    size_t nentries;
    struct entry *queue, **queue_tail;
    bool down;
    char reason[900];

    atomic_uint_fast64_t fetches;
    int kick_fd; /* eventfd: a fetch was queued, or stop */
    atomic_bool stopping;
    struct event_base *base_ev;
    struct event *kick_ev;
    struct event *probe_ev; /* while down: failed entries are fetched again as they come due */
    struct fetch *inflight; /* the registry's thread only */
    struct fetch *dead;     /* answered: their connections are freed from the loop */
    struct event *reap_ev;
    pthread_t thread;
    bool started;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Config -------------------------------------------------------------------------- */

int wsb_sr_check_config(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    int problems = 0;
    char path[300];
    const char *key;
    json_t *v;
    if (!json_is_object(conf)) {
        report(ctx, ".schema_registry", "must be an object {\"url\": ...}");
        return 1;
    }
    json_t *url = json_object_get(conf, "url");
    if (!json_is_string(url)) {
        report(ctx, ".schema_registry.url", "required (\"http://host:port\")");
        problems++;
    } else if (strncmp(json_string_value(url), "http://", 7) != 0) {
        report(ctx, ".schema_registry.url", "must be an http:// URL");
        problems++;
    } else {
        struct evhttp_uri *u = evhttp_uri_parse(json_string_value(url));
        if (!u || !evhttp_uri_get_host(u) || !*evhttp_uri_get_host(u)) {
            report(ctx, ".schema_registry.url", "not a valid URL");
            problems++;
        }
        if (u)
            evhttp_uri_free(u);
    }
    json_object_foreach((json_t *)conf, key, v)
    {
        snprintf(path, sizeof(path), ".schema_registry.%s", key);
        if (strcmp(key, "url") == 0)
            continue;
        if (strcmp(key, "username") == 0 || strcmp(key, "password") == 0 ||
            strcmp(key, "bearer") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                report(ctx, path, "must be a non-empty string");
                problems++;
            }
        } else if (strcmp(key, "cache_ttl_s") == 0) {
            problems += wsb_connector_check_int(v, 1, 86400 * 30, path, report, ctx);
        } else if (strcmp(key, "max_held_records") == 0) {
            problems += wsb_connector_check_int(v, 1, 10000000, path, report, ctx);
        } else {
            report(ctx, path, "unknown key");
            problems++;
        }
    }
    bool user = json_object_get(conf, "username"), pass = json_object_get(conf, "password");
    if (user != pass) {
        report(ctx, ".schema_registry", "\"username\" and \"password\" go together");
        problems++;
    }
    if (user && json_object_get(conf, "bearer")) {
        report(ctx, ".schema_registry", "\"bearer\" or \"username\"/\"password\", not both");
        problems++;
    }
    return problems;
}

/* ---- Parsers ------------------------------------------------------------------------- */

static enum wsb_err parse_common(json_t *root, char **schema)
{
    json_t *s = json_object_get(root, "schema");
    json_t *type = json_object_get(root, "schemaType");
    if (!json_is_string(s))
        return WSB_ERR_INVALID;
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "AVRO") != 0))
        return WSB_ERR_UNSUPPORTED; /* PROTOBUF, JSON */
    if (!(*schema = strndup(json_string_value(s), json_string_length(s))))
        return WSB_ERR_NOMEM;
    return WSB_OK;
}

enum wsb_err wsb_sr_parse_schema(const char *body, size_t len, char **schema)
{
    *schema = NULL;
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return WSB_ERR_INVALID;
    }
    enum wsb_err rc = parse_common(root, schema);
    json_decref(root);
    return rc;
}

enum wsb_err wsb_sr_parse_latest(const char *body, size_t len, uint32_t *id, char **schema)
{
    *schema = NULL;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *jid = json_object_get(root, "id");
    if (!json_is_object(root) || !json_is_integer(jid) || json_integer_value(jid) < 0 ||
        json_integer_value(jid) > UINT32_MAX) {
        json_decref(root);
        return WSB_ERR_INVALID;
    }
    *id = (uint32_t)json_integer_value(jid);
    enum wsb_err rc = parse_common(root, schema);
    json_decref(root);
    return rc;
}

/* ---- The cache (under the lock) ------------------------------------------------------ */

static void entry_free(struct entry *e)
{
    free(e->key);
    free(e->subject);
    free(e->schema);
    free(e);
}

static void free_entry_cb(void *ctx, void *v)
{
    WSB_UNUSED(ctx);
    entry_free(v);
}

struct oldest {
    struct entry *e;
};

static void find_oldest(void *ctx, void *v)
{
    struct oldest *o = ctx;
    struct entry *e = v;
    if (!e->fetching && (!o->e || e->used_ms < o->e->used_ms))
        o->e = e;
}

/* Keeps the cache under MAX_ENTRIES by evicting the least recently used settled entry. */
static void evict(struct wsb_sr *sr)
{
    while (sr->nentries >= MAX_ENTRIES) {
        struct oldest o = {NULL};
        wsb_map_each(&sr->entries, find_oldest, &o);
        if (!o.e)
            return;
        wsb_map_del_str(&sr->entries, o.e->key, strlen(o.e->key));
        entry_free(o.e);
        sr->nentries--;
    }
}

static void kick(struct wsb_sr *sr)
{
    uint64_t one = 1;
    ssize_t n = write(sr->kick_fd, &one, sizeof(one));
    WSB_UNUSED(n); /* an eventfd write fails only when the counter would overflow */
}

static void queue_fetch(struct wsb_sr *sr, struct entry *e)
{
    if (e->fetching)
        return;
    e->fetching = true;
    e->next_queued = NULL;
    *sr->queue_tail = e;
    sr->queue_tail = &e->next_queued;
    kick(sr);
}

/* Looks `key` up; creates the entry and queues its fetch when it is missing or stale. */
static enum wsb_sr_status lookup(struct wsb_sr *sr, const char *key, bool latest, uint32_t id,
                                 const char *subject, uint32_t *id_out, char **schema)
{
    int64_t now = mono_ms();
    enum wsb_sr_status st;
    pthread_mutex_lock(&sr->lock);
    struct entry *e = wsb_map_get_str(&sr->entries, key, strlen(key));
    if (!e) {
        evict(sr);
        e = calloc(1, sizeof(*e));
        if (!e || !(e->key = strdup(key)) || (subject && !(e->subject = strdup(subject))) ||
            wsb_map_put_str(&sr->entries, e->key, strlen(e->key), e) < 0) {
            if (e)
                entry_free(e);
            pthread_mutex_unlock(&sr->lock);
            return WSB_SR_DOWN;
        }
        sr->nentries++;
        e->latest = latest;
        e->id = id;
        e->backoff_ms = BACKOFF_MIN_MS;
        e->state = E_PENDING;
        queue_fetch(sr, e);
    }
    e->used_ms = now;
    switch (e->state) {
    case E_PENDING: st = WSB_SR_PENDING; break;
    case E_FOUND:
        if (!(*schema = strdup(e->schema))) {
            st = WSB_SR_DOWN;
            break;
        }
        if (id_out)
            *id_out = e->id;
        st = WSB_SR_FOUND;
        /* Stale: answer with what we have and refresh in the background (an id's schema
         * never changes; a subject's latest version may). */
        if (now >= e->expires_ms)
            queue_fetch(sr, e);
        break;
    case E_NOT_FOUND:
        st = WSB_SR_NOT_FOUND;
        if (now >= e->expires_ms) {
            e->state = E_PENDING;
            queue_fetch(sr, e);
            st = WSB_SR_PENDING;
        }
        break;
    case E_FAILED:
    default:
        st = WSB_SR_DOWN;
        if (now >= e->expires_ms) {
            e->state = E_PENDING;
            queue_fetch(sr, e);
            st = WSB_SR_PENDING;
        }
        break;
    }
    pthread_mutex_unlock(&sr->lock);
    return st;
}

enum wsb_sr_status wsb_sr_schema(struct wsb_sr *sr, uint32_t id, char **schema)
{
    char key[32];
    snprintf(key, sizeof(key), "i:%" PRIu32, id);
    return lookup(sr, key, false, id, NULL, NULL, schema);
}

enum wsb_sr_status wsb_sr_latest(struct wsb_sr *sr, const char *subject, uint32_t *id,
                                 char **schema)
{
    char key[400];
    snprintf(key, sizeof(key), "s:%s", subject);
    return lookup(sr, key, true, 0, subject, id, schema);
}

bool wsb_sr_ready(struct wsb_sr *sr, char *reason, size_t reasonlen)
{
    pthread_mutex_lock(&sr->lock);
    bool down = sr->down;
    if (down)
        snprintf(reason, reasonlen, "%s", sr->reason);
    pthread_mutex_unlock(&sr->lock);
    return !down;
}

uint64_t wsb_sr_fetches(const struct wsb_sr *sr)
{
    return atomic_load(&((struct wsb_sr *)sr)->fetches);
}

const char *wsb_sr_url(const struct wsb_sr *sr)
{
    return sr->base;
}

uint32_t wsb_sr_max_held(const struct wsb_sr *sr)
{
    return sr->max_held;
}

/* ---- Fetching (the registry's thread) ------------------------------------------------ */

struct fetch {
    struct fetch *next, **prev; /* in flight: freed at shutdown if unfinished */
    struct wsb_sr *sr;
    struct entry *e; /* stays in the map while PENDING: never evicted */
    struct evhttp_connection *conn;
};

/* Records the result of a fetch under the lock. */
static void settle(struct wsb_sr *sr, struct entry *e, int status, const char *body, size_t len,
                   const char *why)
{
    int64_t now = mono_ms();
    char *schema = NULL;
    uint32_t id = e->id;
    enum wsb_err rc = WSB_ERR_INVALID;
    if (status == 200)
        rc = e->latest ? wsb_sr_parse_latest(body, len, &id, &schema)
                       : wsb_sr_parse_schema(body, len, &schema);
    pthread_mutex_lock(&sr->lock);
    e->fetching = false;
    if (status == 200 && rc == WSB_OK) {
        free(e->schema);
        e->schema = schema;
        e->id = id;
        e->state = E_FOUND;
        e->expires_ms = now + sr->ttl_ms;
        e->backoff_ms = BACKOFF_MIN_MS;
        sr->down = false;
    } else if (status == 404 || (status == 200 && rc == WSB_ERR_UNSUPPORTED)) {
        /* 40401 subject not found, 40402 version not found, 40403 schema not found; a
         * schema of another type is as good as none for this connector */
        free(schema);
        e->state = E_NOT_FOUND;
        e->expires_ms = now + (sr->ttl_ms < NEGATIVE_TTL_MS ? sr->ttl_ms : NEGATIVE_TTL_MS);
        sr->down = false;
    } else {
        free(schema);
        char r[256];
        if (status == 200)
            snprintf(r, sizeof(r), "malformed answer");
        else if (status > 0)
            snprintf(r, sizeof(r), "HTTP %d", status);
        else
            snprintf(r, sizeof(r), "%s", why ? why : "unreachable");
        if (e->schema) {
            /* a refresh failed: keep serving what we have, try again later */
            e->state = E_FOUND;
            e->expires_ms = now + e->backoff_ms;
        } else {
            e->state = E_FAILED;
            e->expires_ms = now + e->backoff_ms;
        }
        e->backoff_ms = e->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : e->backoff_ms * 2;
        if (!sr->down)
            wsb_log(WSB_LOG_WARN, "schema registry unreachable", WSB_LSTR("url", sr->base),
                    WSB_LSTR("reason", r));
        sr->down = true;
        snprintf(sr->reason, sizeof(sr->reason), "schema registry %s: %s", sr->base, r);
    }
    pthread_mutex_unlock(&sr->lock);
}

static void fetch_unlink(struct fetch *f)
{
    *f->prev = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    struct wsb_sr *sr = f->sr;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    struct evbuffer *in = req ? evhttp_request_get_input_buffer(req) : NULL;
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (status == 200 && len > MAX_BODY) {
        settle(sr, f->e, 0, NULL, 0, "answer too large");
    } else {
        const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
        settle(sr, f->e, status, body, len, status == 0 ? "connection failed" : NULL);
    }
    /* A connection is never freed inside its own callback (libevent uses it after), and
     * libevent 2.1 does not free it on a failed connect even when asked to: freed from the
     * loop right after. */
    fetch_unlink(f);
    f->next = sr->dead;
    f->prev = &sr->dead;
    if (f->next)
        f->next->prev = &f->next;
    sr->dead = f;
    event_active(sr->reap_ev, EV_TIMEOUT, 0);
    if (sr->wake)
        sr->wake(sr->wake_ctx);
}

static void start_fetch(struct wsb_sr *sr, struct entry *e)
{
    char path[1024];
    if (e->latest) {
        /* the subject is a path segment: escape it */
        char *esc = evhttp_uriencode(e->subject, -1, 0);
        snprintf(path, sizeof(path), "%s/subjects/%s/versions/latest", sr->path_prefix,
                 esc ? esc : "");
        free(esc);
    } else {
        snprintf(path, sizeof(path), "%s/schemas/ids/%" PRIu32, sr->path_prefix, e->id);
    }
    struct fetch *f = calloc(1, sizeof(*f));
    struct evhttp_request *req = NULL;
    if (!f || !(f->conn = evhttp_connection_base_new(sr->base_ev, NULL, sr->host,
                                                     (unsigned short)sr->port)))
        goto fail;
    f->sr = sr;
    f->e = e;
    evhttp_connection_set_timeout(f->conn, REQUEST_TIMEOUT_S);
    if (!(req = evhttp_request_new(on_response, f)))
        goto fail;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", sr->host);
    evhttp_add_header(h, "Accept", "application/vnd.schemaregistry.v1+json, application/json");
    evhttp_add_header(h, "Connection", "close");
    if (sr->auth[0])
        evhttp_add_header(h, "Authorization", sr->auth);
    atomic_fetch_add(&sr->fetches, 1);
    if (evhttp_make_request(f->conn, req, EVHTTP_REQ_GET, path) != 0) {
        req = NULL; /* freed by libevent on failure */
        goto fail;
    }
    f->next = sr->inflight;
    f->prev = &sr->inflight;
    if (f->next)
        f->next->prev = &f->next;
    sr->inflight = f;
    return;

fail:
    if (req)
        evhttp_request_free(req);
    if (f && f->conn)
        evhttp_connection_free(f->conn);
    free(f);
    settle(sr, e, 0, NULL, 0, "cannot start a request");
    if (sr->wake)
        sr->wake(sr->wake_ctx);
}

static void free_fetches(struct fetch **list)
{
    while (*list) {
        struct fetch *f = *list;
        fetch_unlink(f);
        evhttp_connection_free(f->conn);
        free(f);
    }
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct wsb_sr *sr = arg;
    WSB_UNUSED(fd);
    WSB_UNUSED(what);
    free_fetches(&sr->dead);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct wsb_sr *sr = arg;
    uint64_t n;
    WSB_UNUSED(what);
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    if (atomic_load(&sr->stopping)) {
        event_base_loopbreak(sr->base_ev);
        return;
    }
    pthread_mutex_lock(&sr->lock);
    struct entry *list = sr->queue;
    sr->queue = NULL;
    sr->queue_tail = &sr->queue;
    pthread_mutex_unlock(&sr->lock);
    while (list) {
        struct entry *e = list;
        list = e->next_queued;
        start_fetch(sr, e);
    }
}

static void requeue_due(void *ctx, void *v)
{
    struct wsb_sr *sr = ctx;
    struct entry *e = v;
    if (e->state == E_FAILED && !e->fetching && mono_ms() >= e->expires_ms) {
        e->state = E_PENDING;
        queue_fetch(sr, e);
    }
}

/* Without this, a registry that came back would be noticed only by the next lookup of a
 * failed entry; sources that failed meanwhile make none, and /readyz would keep naming it. */
static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    struct wsb_sr *sr = arg;
    WSB_UNUSED(fd);
    WSB_UNUSED(what);
    pthread_mutex_lock(&sr->lock);
    if (sr->down)
        wsb_map_each(&sr->entries, requeue_due, sr);
    pthread_mutex_unlock(&sr->lock);
}

static void *run(void *arg)
{
    struct wsb_sr *sr = arg;
    event_base_dispatch(sr->base_ev);
    return NULL;
}

/* ---- Lifetime ------------------------------------------------------------------------ */

/* "Basic base64(user:pass)" */
static void basic_auth(char *out, size_t outlen, const char *user, const char *pass)
{
    struct wsb_buf cred, b;
    wsb_buf_init(&cred);
    wsb_buf_init(&b);
    wsb_buf_printf(&cred, "%s:%s", user, pass);
    wsb_buf_puts(&b, "Basic ");
    wsb_buf_base64(&b, cred.data, cred.len);
    wsb_buf_append(&b, "", 1);
    snprintf(out, outlen, "%s", b.oom ? "" : (const char *)b.data);
    wsb_buf_cleanup(&cred);
    wsb_buf_cleanup(&b);
}

struct wsb_sr *wsb_sr_new(const json_t *conf, void (*wake)(void *ctx), void *wake_ctx, char *err,
                          size_t errlen)
{
    const char *url = json_string_value(json_object_get(conf, "url"));
    struct evhttp_uri *u = url ? evhttp_uri_parse(url) : NULL;
    if (!u || !evhttp_uri_get_host(u)) {
        snprintf(err, errlen, "schema_registry.url: not a valid URL");
        if (u)
            evhttp_uri_free(u);
        return NULL;
    }
    struct wsb_sr *sr = calloc(1, sizeof(*sr));
    if (!sr) {
        evhttp_uri_free(u);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(sr->host, sizeof(sr->host), "%s", evhttp_uri_get_host(u));
    sr->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    const char *path = evhttp_uri_get_path(u);
    snprintf(sr->path_prefix, sizeof(sr->path_prefix), "%s", path ? path : "");
    size_t pl = strlen(sr->path_prefix);
    while (pl > 0 && sr->path_prefix[pl - 1] == '/')
        sr->path_prefix[--pl] = '\0';
    snprintf(sr->base, sizeof(sr->base), "http://%s:%d%s", sr->host, sr->port, sr->path_prefix);
    evhttp_uri_free(u);

    const char *user = json_string_value(json_object_get(conf, "username"));
    const char *pass = json_string_value(json_object_get(conf, "password"));
    const char *bearer = json_string_value(json_object_get(conf, "bearer"));
    if (user && pass)
        basic_auth(sr->auth, sizeof(sr->auth), user, pass);
    else if (bearer)
        snprintf(sr->auth, sizeof(sr->auth), "Bearer %s", bearer);
    json_t *ttl = json_object_get(conf, "cache_ttl_s");
    sr->ttl_ms = json_is_integer(ttl) ? (uint32_t)json_integer_value(ttl) * 1000u : 300000u;
    json_t *held = json_object_get(conf, "max_held_records");
    sr->max_held = json_is_integer(held) ? (uint32_t)json_integer_value(held) : 10000u;
    sr->wake = wake;
    sr->wake_ctx = wake_ctx;
    pthread_mutex_init(&sr->lock, NULL);
    wsb_map_init(&sr->entries);
    sr->queue_tail = &sr->queue;
    atomic_init(&sr->fetches, 0);
    atomic_init(&sr->stopping, false);
    sr->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sr->kick_fd < 0 || !(sr->base_ev = event_base_new()) ||
        !(sr->kick_ev = event_new(sr->base_ev, sr->kick_fd, EV_READ | EV_PERSIST, on_kick, sr)) ||
        event_add(sr->kick_ev, NULL) != 0 ||
        !(sr->probe_ev = event_new(sr->base_ev, -1, EV_PERSIST, on_probe, sr)) ||
        !(sr->reap_ev = event_new(sr->base_ev, -1, 0, on_reap, sr)) ||
        event_add(sr->probe_ev, &(struct timeval){.tv_sec = 0, .tv_usec = 500000}) != 0) {
        snprintf(err, errlen, "schema registry: cannot create its event base");
        wsb_sr_free(sr);
        return NULL;
    }
    return sr;
}

enum wsb_err wsb_sr_start(struct wsb_sr *sr)
{
    if (sr->started)
        return WSB_ERR_INVALID;
    if (pthread_create(&sr->thread, NULL, run, sr) != 0)
        return WSB_ERR_IO;
    sr->started = true;
    return WSB_OK;
}

void wsb_sr_free(struct wsb_sr *sr)
{
    if (!sr)
        return;
    if (sr->started) {
        atomic_store(&sr->stopping, true);
        kick(sr);
        pthread_join(sr->thread, NULL);
    }
    free_fetches(&sr->inflight); /* abandoned: their requests go with the connections */
    free_fetches(&sr->dead);
    if (sr->reap_ev)
        event_free(sr->reap_ev);
    if (sr->kick_ev)
        event_free(sr->kick_ev);
    if (sr->probe_ev)
        event_free(sr->probe_ev);
    if (sr->base_ev)
        event_base_free(sr->base_ev); /* frees pending connections and their requests */
    if (sr->kick_fd >= 0)
        close(sr->kick_fd);
    wsb_map_each(&sr->entries, free_entry_cb, NULL);
    wsb_map_cleanup(&sr->entries);
    pthread_mutex_destroy(&sr->lock);
    free(sr);
}
