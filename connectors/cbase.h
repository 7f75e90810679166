/* The head of a connector served by one thread over a command queue (memory, kafka, amqp):
 * the queue and its thread, the messages-in counter and the readiness, with the vtable
 * entries that only forward to the queue. A connector embeds `struct wsb_cbase` as the FIRST
 * member of its state, so the wsb_cbase_* entries below take its impl pointer as they are
 * (Redis's `connection` heads its TLS variant the same way); it keeps only what differs. */
#ifndef WSB_CONNECTORS_CBASE_H
#define WSB_CONNECTORS_CBASE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "connectors/cmdq.h"
#include "connectors/connector.h"

struct wsb_cbase {
    struct wsb_cmdq *q;               /* its fd also wakes the thread for the broker's own */
    atomic_uint_fast64_t messages_in; /* received from the broker */
    atomic_bool up;
    pthread_mutex_t lock; /* guards `reason` */
    char reason[256];     /* why not up */
};

/** Creates the queue; not up ("connecting"). On failure writes `err` and returns
 * WSB_ERR_IO. @locality any */
enum wsb_err wsb_cbase_init(struct wsb_cbase *b, char *err, size_t errlen);
/** Stops and joins the thread (if it is still running) and frees the queue. Call it last:
 * nothing may wake the queue afterwards. */
void wsb_cbase_cleanup(struct wsb_cbase *b);

/** Sets the readiness (`reason` is ignored when up). Returns what it was before.
 * @locality any */
bool wsb_cbase_set_up(struct wsb_cbase *b, bool up, const char *reason);

/* ---- Vtable entries; `impl` begins with a struct wsb_cbase ----------------------------- */

/** wsb_cmdq_stop (the thread flushes for up to timeout_ms), then joins the thread. */
void wsb_cbase_stop(void *impl, uint32_t timeout_ms);
/** Subscribe and publish of the topic connectors: a "topic" is required
 * (WSB_ERR_INVALID), then the command is queued. */
enum wsb_err wsb_cbase_subscribe_topic(void *impl, uint64_t source_id,
                                       const struct wsb_source *src);
enum wsb_err wsb_cbase_publish_topic(void *impl, const struct wsb_publish *p, uint64_t cookie);
/** Publish queued as it is (the connector's thread judges it). */
enum wsb_err wsb_cbase_publish(void *impl, const struct wsb_publish *p, uint64_t cookie);
/** Queued; on failure the source keeps its state (an unsubscribe cannot fail). */
void wsb_cbase_unsubscribe(void *impl, uint64_t source_id);
void wsb_cbase_ack(void *impl, uint64_t source_id, uint64_t ack_token, enum wsb_ack_kind kind);
/** True when up; otherwise writes the reason. @locality any */
bool wsb_cbase_ready(void *impl, char *reason, size_t reasonlen);
/** @locality any */
uint64_t wsb_cbase_messages_in(void *impl);

#endif
