/* The shared head of the cmdq connectors: their queue, counters, readiness and forwarding
 * vtable entries. */
#include "connectors/cbase.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum wsb_err wsb_cbase_init(struct wsb_cbase *b, char *err, size_t errlen)
{
    if (!(b->q = wsb_cmdq_new())) {
        snprintf(err, errlen, "command queue: %s", strerror(errno));
        return WSB_ERR_IO;
    }
    atomic_init(&b->messages_in, 0);
    atomic_init(&b->up, false);
    snprintf(b->reason, sizeof(b->reason), "connecting");
    pthread_mutex_init(&b->lock, NULL);
    return WSB_OK;
}

void wsb_cbase_cleanup(struct wsb_cbase *b)
{
    if (!b->q)
        return;
    wsb_cbase_stop(b, 0);
    wsb_cmdq_free(b->q);
    b->q = NULL;
    pthread_mutex_destroy(&b->lock);
}

bool wsb_cbase_set_up(struct wsb_cbase *b, bool up, const char *reason)
{
    bool was = atomic_load(&b->up);
    pthread_mutex_lock(&b->lock);
    snprintf(b->reason, sizeof(b->reason), "%s", up || !reason ? "" : reason);
    pthread_mutex_unlock(&b->lock);
    atomic_store(&b->up, up);
    return was;
}

void wsb_cbase_stop(void *impl, uint32_t timeout_ms)
{
    struct wsb_cbase *b = impl;
    wsb_cmdq_stop(b->q, timeout_ms);
    wsb_cmdq_join(b->q);
}

enum wsb_err wsb_cbase_subscribe_topic(void *impl, uint64_t source_id, const struct wsb_source *src)
{
    struct wsb_cbase *b = impl;
    if (!*wsb_connector_field(src->fields, "topic"))
        return WSB_ERR_INVALID;
    return wsb_cmdq_subscribe(b->q, source_id, src);
}

enum wsb_err wsb_cbase_publish_topic(void *impl, const struct wsb_publish *p, uint64_t cookie)
{
    if (!*wsb_connector_field(p->fields, "topic"))
        return WSB_ERR_INVALID;
    return wsb_cbase_publish(impl, p, cookie);
}

enum wsb_err wsb_cbase_publish(void *impl, const struct wsb_publish *p, uint64_t cookie)
{
    struct wsb_cbase *b = impl;
    return wsb_cmdq_publish(b->q, p, cookie);
}

void wsb_cbase_unsubscribe(void *impl, uint64_t source_id)
{
    struct wsb_cbase *b = impl;
    wsb_cmdq_unsubscribe(b->q, source_id);
}

void wsb_cbase_ack(void *impl, uint64_t source_id, uint64_t ack_token, enum wsb_ack_kind kind)
{
    struct wsb_cbase *b = impl;
    wsb_cmdq_ack(b->q, source_id, ack_token, kind);
}

bool wsb_cbase_ready(void *impl, char *reason, size_t reasonlen)
{
    struct wsb_cbase *b = impl;
    if (atomic_load(&b->up))
        return true;
    pthread_mutex_lock(&b->lock);
    snprintf(reason, reasonlen, "%s", b->reason);
    pthread_mutex_unlock(&b->lock);
    return false;
}

uint64_t wsb_cbase_messages_in(void *impl)
{
    struct wsb_cbase *b = impl;
    return atomic_load(&b->messages_in);
}
