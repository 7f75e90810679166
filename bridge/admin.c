/* Admin listener: /healthz, /readyz, /metrics, /clients served by evhttp on a private thread and
 * base. */
#include "bridge/admin.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"

#define READY_REASON_MAX 2048

struct wsb_admin {
    struct wsb_admin_hooks hooks;
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    bool thread_started;
    int port;
};

/* Back-offs of the admin listener after accept() failed; process-wide, because the error
 * callback's argument is evhttp's (there is one admin listener per process). */
static atomic_uint_fast64_t accept_paused;

uint64_t wsb_admin_accept_paused(void)
{
    return atomic_load_explicit(&accept_paused, memory_order_relaxed);
}

/* Splits "host:port" or "[v6]:port" into host (possibly empty) and port. */
static bool split_listen(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    const char *h = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':')
            return false;
        h = addr + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return false; /* bare IPv6 needs brackets */
        hl = (size_t)(colon - addr);
    }
    const char *p = colon + 1;
    size_t pl = strlen(p);
    if (hl >= hostlen || pl == 0 || pl >= portlen || strspn(p, "0123456789") != pl ||
        strtol(p, NULL, 10) > 65535)
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return true;
}

/* Opens a listening, non-blocking socket; returns the fd or -1 with err filled. */
static int open_listener(const char *addr, char *err, size_t errlen, enum wsb_err *code)
{
    char host[256], port[8];
    struct addrinfo hints, *res = NULL;
    int fd = -1;
    int rc;
    if (!split_listen(addr, host, sizeof(host), port, sizeof(port))) {
        snprintf(err, errlen, "admin listen %s: expected host:port or [ipv6]:port", addr);
        *code = WSB_ERR_INVALID;
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "admin listen %s: %s", addr, gai_strerror(rc));
        *code = WSB_ERR_INVALID;
        return -1;
    }
    *code = WSB_ERR_IO;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0)
        goto fail;
    freeaddrinfo(res);
    return fd;

fail:
    snprintf(err, errlen, "admin listen %s: %s", addr, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return -1;
}

static void reply(struct evhttp_request *req, int status, const char *reason,
                  const char *content_type, const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    /* evhttp would send a HEAD response's body; HEAD gets headers only. */
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD && evbuffer_add(out, body, len) < 0) {
        evbuffer_free(out);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evhttp_send_reply(req, status, reason, out);
    evbuffer_free(out);
}

static void reply_json(struct evhttp_request *req, int status, const char *reason, const char *body)
{
    reply(req, status, reason, "application/json", body, strlen(body));
}

static void serve_readyz(struct wsb_admin *a, struct evhttp_request *req)
{
    char reason[READY_REASON_MAX] = "{}";
    if (a->hooks.ready == NULL || a->hooks.ready(a->hooks.ctx, reason, sizeof(reason))) {
        reply_json(req, 200, "OK", "{\"status\":\"ready\"}");
        return;
    }
    reason[sizeof(reason) - 1] = '\0';
    /* The reason is embedded verbatim, so it must be one JSON value; anything else becomes {}. */
    json_t *j = json_loads(reason, JSON_DECODE_ANY, NULL);
    const char *r = j != NULL ? reason : "{}";
    char body[READY_REASON_MAX + 64];
    snprintf(body, sizeof(body), "{\"status\":\"not_ready\",\"reason\":%s}", r);
    json_decref(j);
    reply_json(req, 503, "Service Unavailable", body);
}

static void serve_metrics(struct wsb_admin *a, struct evhttp_request *req)
{
    size_t len = 0;
    char *text = a->hooks.metrics != NULL ? a->hooks.metrics(a->hooks.ctx, &len) : NULL;
    if (a->hooks.metrics != NULL && text == NULL) {
        reply_json(req, 500, "Internal Server Error", "{\"error\":\"internal\"}");
        return;
    }
    reply(req, 200, "OK", "text/plain; version=0.0.4", text ? text : "", len);
    free(text);
}

/* GET /clients?top=N&sort=send_buffer|lag|age */
static void serve_clients(struct wsb_admin *a, struct evhttp_request *req,
                          const struct evhttp_uri *uri)
{
    size_t top = WSB_CLIENTS_TOP_DEFAULT;
    enum wsb_clients_sort sort = WSB_CLIENTS_SEND_BUFFER;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq params;
    params.tqh_first = NULL; /* what evhttp_parse_query_str would set for an empty query */
    params.tqh_last = &params.tqh_first;
    if (query != NULL && evhttp_parse_query_str(query, &params) != 0) {
        reply_json(req, 400, "Bad Request",
                   "{\"error\":\"bad_request\",\"message\":\"malformed query\"}");
        return;
    }
    const char *bad = NULL;
    for (struct evkeyval *kv = params.tqh_first; kv != NULL && bad == NULL;
         kv = kv->next.tqe_next) {
        if (strcmp(kv->key, "top") == 0) {
            char *end = NULL;
            errno = 0;
            long v = strtol(kv->value, &end, 10);
            if (errno || end == kv->value || *end || v < 1 || v > WSB_CLIENTS_TOP_MAX)
                bad = "{\"error\":\"bad_request\",\"message\":\"top must be 1..1000\"}";
            else
                top = (size_t)v;
        } else if (strcmp(kv->key, "sort") == 0) {
            if (!wsb_clients_sort_parse(kv->value, &sort))
                bad = "{\"error\":\"bad_request\",\"message\":\"sort must be send_buffer, lag "
                      "or age\"}";
        } else {
            bad = "{\"error\":\"bad_request\",\"message\":\"unknown parameter; use top and "
                  "sort\"}";
        }
    }
    evhttp_clear_headers(&params);
    if (bad != NULL) {
        reply_json(req, 400, "Bad Request", bad);
        return;
    }
    size_t len = 0;
    char *body = a->hooks.clients != NULL ? a->hooks.clients(a->hooks.ctx, top, sort, &len) : NULL;
    if (body == NULL) {
        reply_json(req, 500, "Internal Server Error", "{\"error\":\"internal\"}");
        return;
    }
    reply(req, 200, "OK", "application/json", body, len);
    free(body);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct wsb_admin *a = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    if (path == NULL)
        path = "";

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_json(req, 405, "Method Not Allowed", "{\"error\":\"method_not_allowed\"}");
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        if (a->hooks.healthy == NULL || a->hooks.healthy(a->hooks.ctx))
            reply_json(req, 200, "OK", "{\"status\":\"ok\"}");
        else
            reply_json(req, 503, "Service Unavailable", "{\"status\":\"unhealthy\"}");
    } else if (strcmp(path, "/readyz") == 0) {
        serve_readyz(a, req);
    } else if (strcmp(path, "/metrics") == 0) {
        serve_metrics(a, req);
    } else if (strcmp(path, "/clients") == 0) {
        serve_clients(a, req, uri);
    } else {
        reply_json(req, 404, "Not Found", "{\"error\":\"not_found\"}");
    }
}

static void *run(void *arg)
{
    struct wsb_admin *a = arg;
    event_base_loop(a->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static void destroy(struct wsb_admin *a)
{
    if (a->http != NULL)
        evhttp_free(a->http);
    if (a->base != NULL)
        event_base_free(a->base);
    free(a);
}

#define ACCEPT_PAUSE_MS 250

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

/* accept() failed with an error libevent does not retry (EMFILE/ENFILE: out of
 * descriptors): pause instead of spinning on a socket that stays readable. The listener
 * lives as long as the event base, so a once-timer may hold it. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    atomic_fetch_add_explicit(&accept_paused, 1, memory_order_relaxed);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evconnlistener_disable(l);
    if (event_base_once(evconnlistener_get_base(l), -1, EV_TIMEOUT, on_accept_resume, l, &tv) < 0)
        evconnlistener_enable(l);
    wsb_log(WSB_LOG_WARN, "admin accept failed; accepting paused",
            WSB_LSTR("error", evutil_socket_error_to_string(e)),
            WSB_LUINT("pause_ms", ACCEPT_PAUSE_MS));
}

enum wsb_err wsb_admin_start(const char *addr, const struct wsb_admin_hooks *hooks,
                             struct wsb_admin **out, char *err, size_t errlen)
{
    enum wsb_err rc = WSB_ERR_NOMEM;
    int fd = -1;
    struct wsb_admin *a = calloc(1, sizeof(*a));
    *out = NULL;
    if (a == NULL) {
        snprintf(err, errlen, "admin: out of memory");
        return WSB_ERR_NOMEM;
    }
    if (hooks != NULL)
        a->hooks = *hooks;

    fd = open_listener(addr != NULL ? addr : "", err, errlen, &rc);
    if (fd < 0)
        goto cleanup;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);

    rc = WSB_ERR_NOMEM;
    a->base = event_base_new();
    if (a->base == NULL || (a->http = evhttp_new(a->base)) == NULL) {
        snprintf(err, errlen, "admin: cannot create event base");
        goto cleanup;
    }
    /* Accept every method so that we, not evhttp (501), answer 405. */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_max_headers_size(a->http, 8192);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_gencb(a->http, handle, a);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(a->http, fd);
    if (bound == NULL) {
        rc = WSB_ERR_IO;
        snprintf(err, errlen, "admin listen %s: cannot accept", addr);
        goto cleanup;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), on_accept_error);
    fd = -1; /* owned by evhttp now */

    if (pthread_create(&a->thread, NULL, run, a) != 0) {
        rc = WSB_ERR_INTERNAL;
        snprintf(err, errlen, "admin: cannot start thread");
        goto cleanup;
    }
    a->thread_started = true;
    *out = a;
    return WSB_OK;

cleanup:
    if (fd >= 0)
        close(fd);
    destroy(a);
    return rc;
}

void wsb_admin_stop(struct wsb_admin *a)
{
    if (a == NULL)
        return;
    if (a->thread_started) {
        /* Thread-safe because the process enabled libevent's pthread locking. */
        event_base_loopexit(a->base, NULL);
        pthread_join(a->thread, NULL);
    }
    destroy(a);
}

int wsb_admin_port(const struct wsb_admin *a)
{
    return a->port;
}
