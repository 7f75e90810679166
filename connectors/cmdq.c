/* The connectors' shared command queue: a mutex-guarded list and an eventfd. */
#include "connectors/cmdq.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

const uint64_t WSB_CMDQ_WAKE_PAYLOAD = 1;

struct wsb_cmdq {
    pthread_mutex_t lock; /* guards the list, the stop flag's transition and sync_done */
    pthread_cond_t synced;
    struct wsb_cmd *head, *tail;
    atomic_bool stopping;
    uint64_t sync_seq, sync_done; /* tickets of SYNC commands queued / freed */
    int fd;
    pthread_t thread; /* serves the queue, once started */
    bool started, joined;
};

struct wsb_cmdq *wsb_cmdq_new(void)
{
    struct wsb_cmdq *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->fd < 0) {
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->synced, NULL);
    atomic_init(&q->stopping, false);
    return q;
}

void wsb_cmdq_free(struct wsb_cmdq *q)
{
    if (!q)
        return;
    while (q->head) {
        struct wsb_cmd *c = q->head;
        q->head = c->next;
        wsb_cmd_free(c);
    }
    close(q->fd);
    pthread_cond_destroy(&q->synced);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

enum wsb_err wsb_cmdq_start(struct wsb_cmdq *q, void *(*run)(void *), void *arg)
{
    if (q->started)
        return WSB_ERR_INVALID;
    if (pthread_create(&q->thread, NULL, run, arg) != 0)
        return WSB_ERR_IO;
    q->started = true;
    return WSB_OK;
}

void wsb_cmdq_join(struct wsb_cmdq *q)
{
    if (!q->started || q->joined)
        return;
    pthread_join(q->thread, NULL);
    q->joined = true;
}

int wsb_cmdq_fd(const struct wsb_cmdq *q)
{
    return q->fd;
}

void wsb_cmdq_wake(struct wsb_cmdq *q)
{
    ssize_t r = write(q->fd, &WSB_CMDQ_WAKE_PAYLOAD, sizeof(WSB_CMDQ_WAKE_PAYLOAD));
    WSB_UNUSED(r); /* only fails when the counter is about to overflow: already readable */
}

bool wsb_cmdq_stopping(const struct wsb_cmdq *q)
{
    return atomic_load(&q->stopping);
}

static struct wsb_cmd *cmd_new(struct wsb_cmdq *q, enum wsb_cmd_kind kind, uint64_t id)
{
    struct wsb_cmd *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = kind;
    c->id = id;
    c->q = q;
    return c;
}

/* Appends `c` unless the queue is stopping (then frees it). STOP is always taken. */
static enum wsb_err push(struct wsb_cmdq *q, struct wsb_cmd *c)
{
    pthread_mutex_lock(&q->lock);
    if (atomic_load(&q->stopping)) {
        pthread_mutex_unlock(&q->lock);
        wsb_cmd_free(c);
        return WSB_ERR_UNAVAILABLE;
    }
    if (c->kind == WSB_CMD_STOP)
        atomic_store(&q->stopping, true);
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    pthread_mutex_unlock(&q->lock);
    wsb_cmdq_wake(q);
    return WSB_OK;
}

enum wsb_err wsb_cmdq_subscribe(struct wsb_cmdq *q, uint64_t source_id,
                                const struct wsb_source *src)
{
    if (wsb_cmdq_stopping(q))
        return WSB_ERR_UNAVAILABLE;
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_SUBSCRIBE, source_id);
    if (!c)
        return WSB_ERR_NOMEM;
    size_t noff = src->from_offsets ? src->nfrom_offsets : 0;
    size_t offbytes = noff * sizeof(struct wsb_partition_offset);
    if ((noff && !(c->offsets = malloc(offbytes))) ||
        (src->fields && !(c->fields = json_deep_copy(src->fields)))) {
        wsb_cmd_free(c);
        return WSB_ERR_NOMEM;
    }
    c->src = *src;
    c->src.fields = c->fields;
    if (noff)
        memcpy(c->offsets, src->from_offsets, offbytes);
    c->src.from_offsets = c->offsets;
    c->src.nfrom_offsets = noff;
    return push(q, c);
}

enum wsb_err wsb_cmdq_unsubscribe(struct wsb_cmdq *q, uint64_t source_id)
{
    if (wsb_cmdq_stopping(q))
        return WSB_ERR_UNAVAILABLE;
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_UNSUBSCRIBE, source_id);
    return c ? push(q, c) : WSB_ERR_NOMEM;
}

enum wsb_err wsb_cmdq_publish(struct wsb_cmdq *q, const struct wsb_publish *p, uint64_t cookie)
{
    if (wsb_cmdq_stopping(q))
        return WSB_ERR_UNAVAILABLE;
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_PUBLISH, cookie);
    if (!c)
        return WSB_ERR_NOMEM;
    c->msg = wsb_msg_new(0, -1, -1, -1, p->key, p->key_len, p->payload, p->payload_len, p->headers,
                         p->nheaders);
    if (p->fields)
        c->fields = json_deep_copy(p->fields);
    if (!c->msg || (p->fields && !c->fields)) {
        wsb_cmd_free(c);
        return WSB_ERR_NOMEM;
    }
    c->pub.fields = c->fields;
    c->pub.key = c->msg->key;
    c->pub.key_len = c->msg->key_len;
    c->pub.payload = c->msg->payload;
    c->pub.payload_len = c->msg->payload_len;
    c->pub.headers = c->msg->headers;
    c->pub.nheaders = c->msg->nheaders;
    c->pub.value_format = p->value_format;
    c->pub.key_format = p->key_format;
    return push(q, c);
}

enum wsb_err wsb_cmdq_ack(struct wsb_cmdq *q, uint64_t source_id, uint64_t ack_token,
                          enum wsb_ack_kind kind)
{
    if (wsb_cmdq_stopping(q))
        return WSB_ERR_UNAVAILABLE;
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_ACK, source_id);
    if (!c)
        return WSB_ERR_NOMEM;
    c->ack_token = ack_token;
    c->ack_kind = kind;
    return push(q, c);
}

void wsb_cmdq_sync(struct wsb_cmdq *q)
{
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_SYNC, 0);
    if (!c)
        return;
    pthread_mutex_lock(&q->lock);
    if (atomic_load(&q->stopping)) {
        pthread_mutex_unlock(&q->lock);
        free(c);
        return;
    }
    uint64_t ticket = c->id = ++q->sync_seq;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    wsb_cmdq_wake(q);
    while (q->sync_done < ticket)
        pthread_cond_wait(&q->synced, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

void wsb_cmdq_stop(struct wsb_cmdq *q, uint32_t timeout_ms)
{
    if (wsb_cmdq_stopping(q))
        return;
    struct wsb_cmd *c = cmd_new(q, WSB_CMD_STOP, 0);
    if (!c) {
        /* Cannot reach the thread without it; the connector's join would hang. */
        abort();
    }
    c->timeout_ms = timeout_ms;
    push(q, c);
}

struct wsb_cmd *wsb_cmdq_take(struct wsb_cmdq *q)
{
    uint64_t n;
    ssize_t r = read(q->fd, &n, sizeof(n));
    WSB_UNUSED(r); /* EAGAIN: nothing to reset */
    pthread_mutex_lock(&q->lock);
    struct wsb_cmd *list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    return list;
}

bool wsb_cmdq_wait(struct wsb_cmdq *q, int timeout_ms)
{
    struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
    int r;
    do
        r = poll(&pfd, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

void wsb_cmd_free(struct wsb_cmd *c)
{
    if (!c)
        return;
    if (c->kind == WSB_CMD_SYNC) {
        struct wsb_cmdq *q = c->q;
        pthread_mutex_lock(&q->lock);
        if (c->id > q->sync_done)
            q->sync_done = c->id;
        pthread_cond_broadcast(&q->synced);
        pthread_mutex_unlock(&q->lock);
    }
    wsb_msg_unref(c->msg);
    json_decref(c->fields);
    free(c->offsets);
    free(c);
}
