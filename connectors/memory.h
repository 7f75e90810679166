/* The in-process "memory" connector: a tiny broker with in-memory topics, for unit tests and
 * for integration tests that need no Kafka. One partition ("0") per topic. */
#ifndef WSB_CONNECTORS_MEMORY_H
#define WSB_CONNECTORS_MEMORY_H

#include "connectors/connector.h"

/** The vtable (type "memory"). Config: {"type":"memory","retain":N?}: each topic keeps its
 * last N messages (default 10000) for `from` replays and as the bound of its work queue.
 *
 * Broadcast sources get every message of their topic from the start position on.
 * Ack sources (`delivery: ack`) share the topic's work queue: each message goes to one ack
 * source at a time (round-robin, at most max_unacked unacked each, 0 = no limit); ack
 * removes it, nack with requeue or an unsubscribe puts it back at the head of the queue,
 * nack without requeue drops it (into dead_letter_topic when set). The work queue exists
 * from the first ack subscribe of the topic on. */
extern const struct wsb_connector_ops wsb_memory_ops;

/** Waits until the connector's thread has handled every command enqueued before this call
 * (and so made every sink call they cause). For tests. Needs a started connector.
 * @locality any thread but the connector's */
void wsb_memory_sync(void *impl);

#endif
