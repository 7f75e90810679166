/* The command queue between the core and a connector's thread, shared by every connector:
 * the core's non-blocking vtable calls (subscribe, unsubscribe, publish, ack) become
 * commands with deep copies of their arguments; the connector's thread (started and joined
 * through the queue) waits on one pollable wake fd (an eventfd) and takes them in order. One
 * stop path for all: wsb_cmdq_stop sets the stop flag (new commands are refused from then on)
 * and queues a STOP command, the thread shuts down when it takes it, and wsb_cmdq_join joins
 * it. */
#ifndef WSB_CONNECTORS_CMDQ_H
#define WSB_CONNECTORS_CMDQ_H

#include <stdbool.h>
#include <stdint.h>

#include "connectors/connector.h"

enum wsb_cmd_kind {
    WSB_CMD_SUBSCRIBE,
    WSB_CMD_UNSUBSCRIBE,
    WSB_CMD_PUBLISH,
    WSB_CMD_ACK,
    WSB_CMD_SYNC, /* no-op for the connector: wsb_cmd_free completes a wsb_cmdq_sync */
    WSB_CMD_STOP, /* the last command: shut down (flush for up to timeout_ms) and return */
};

/** One command, owned by whoever holds it; released with wsb_cmd_free. */
struct wsb_cmd {
    struct wsb_cmd *next; /* the list wsb_cmdq_take returns */
    enum wsb_cmd_kind kind;
    uint64_t id; /* subscribe, unsubscribe, ack: the source id; publish: the cookie */
    /* Subscribe: a deep copy of the caller's source; `fields` and from_offsets live as long
     * as the command. */
    struct wsb_source src;
    /* Publish: a deep copy; key, payload and headers point into `msg`. */
    struct wsb_publish pub;
    /* Publish: key, payload and headers as a message (source_id 0, partition -1, offset -1,
     * timestamp -1). A connector may take it (set the member to NULL) to keep it. */
    struct wsb_msg *msg;
    uint64_t ack_token; /* ack */
    enum wsb_ack_kind ack_kind;
    uint32_t timeout_ms; /* stop */
    /* Subscribe, publish: a deep copy of the caller's broker object (NULL when none); the
     * copy's `fields` point to it. */
    json_t *fields;
    /* Private to cmdq. */
    struct wsb_cmdq *q;
    struct wsb_partition_offset *offsets; /* subscribe: the copy of from_offsets */
};

struct wsb_cmdq;

/** Creates an empty queue with its eventfd. NULL on failure. @locality any */
struct wsb_cmdq *wsb_cmdq_new(void);
/** Frees the queue and every command still in it. The connector's thread must be gone
 * (joined, or never started). NULL is fine. */
void wsb_cmdq_free(struct wsb_cmdq *q);

/** Starts the thread that serves the queue: run(arg). WSB_ERR_INVALID when one was started
 * already, WSB_ERR_IO when it cannot start. @locality any but the connector's thread */
enum wsb_err wsb_cmdq_start(struct wsb_cmdq *q, void *(*run)(void *), void *arg);
/** Joins the thread wsb_cmdq_start started (once; none: returns). Call it after
 * wsb_cmdq_stop. @locality any but the connector's thread */
void wsb_cmdq_join(struct wsb_cmdq *q);

/** The wake fd to poll for POLLIN: it is readable whenever a command may be waiting. It is an
 * eventfd, so other wakers (librdkafka's rd_kafka_queue_io_event_enable) must write an 8-byte
 * counter; WSB_CMDQ_WAKE_PAYLOAD is one. @locality any */
int wsb_cmdq_fd(const struct wsb_cmdq *q);
extern const uint64_t WSB_CMDQ_WAKE_PAYLOAD;

/** Makes the wake fd readable without a command (for wakers of the connector's own). */
void wsb_cmdq_wake(struct wsb_cmdq *q);

/* ---- The core's side: non-blocking. Each returns WSB_ERR_UNAVAILABLE once the queue is
 * stopping, WSB_ERR_NOMEM when a copy fails. @locality any ------------------------------ */

enum wsb_err wsb_cmdq_subscribe(struct wsb_cmdq *q, uint64_t source_id,
                                const struct wsb_source *src);
enum wsb_err wsb_cmdq_unsubscribe(struct wsb_cmdq *q, uint64_t source_id);
enum wsb_err wsb_cmdq_publish(struct wsb_cmdq *q, const struct wsb_publish *p, uint64_t cookie);
enum wsb_err wsb_cmdq_ack(struct wsb_cmdq *q, uint64_t source_id, uint64_t ack_token,
                          enum wsb_ack_kind kind);

/** Waits until the connector's thread has freed every command queued before this call (and so
 * made every sink call they cause). Returns at once when the queue is stopping. For tests.
 * @locality any thread but the connector's */
void wsb_cmdq_sync(struct wsb_cmdq *q);

/** Sets the stop flag and queues a STOP command (the first call only). Never blocks; the
 * connector joins its thread after it. @locality any but the connector's thread */
void wsb_cmdq_stop(struct wsb_cmdq *q, uint32_t timeout_ms);
/** True once wsb_cmdq_stop was called. @locality any */
bool wsb_cmdq_stopping(const struct wsb_cmdq *q);

/* ---- The connector thread's side ------------------------------------------------------ */

/** Resets the wake fd and takes every queued command, oldest first, as a list linked by
 * `next` (NULL when none). Reset-then-take loses no wake-up. @locality connector thread */
struct wsb_cmd *wsb_cmdq_take(struct wsb_cmdq *q);

/** Waits up to timeout_ms (-1: forever) for the wake fd. True when it is readable.
 * @locality connector thread */
bool wsb_cmdq_wait(struct wsb_cmdq *q, int timeout_ms);

/** Frees a command (and a list's single element only: `next` is not followed). Completes a
 * SYNC. NULL is fine. @locality connector thread */
void wsb_cmd_free(struct wsb_cmd *c);

#endif
