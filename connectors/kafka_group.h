/* Kafka `delivery: ack` sources: consumer groups with client acks and committed offsets. Part
 * of the kafka connector (kafka.c routes ack subscriptions, their unsubscribes and acks here).
 *
 * One group consumer per `group` in this process, shared by every ack subscription of that
 * group on the connector: each subscription (a source id) is a member; the consumer joins the
 * Kafka group (cooperative-sticky) so replicas share the partitions, and hands each record to
 * one member with room (at most max_unacked unacked each), with a fresh ack_token. The
 * committed offset of a partition only moves past a contiguous run of acked records. When
 * every member is full, the partitions with waiting records are paused, not buffered. Each
 * group consumer has a thread of its own, so a rebalance (and the bounded wait for
 * outstanding acks of revoked partitions) never holds up the connector's thread. */
#ifndef WSB_CONNECTORS_KAFKA_GROUP_H
#define WSB_CONNECTORS_KAFKA_GROUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "connectors/cmdq.h"
#include "connectors/connector.h"

struct wsb_kgroups;

/** Figures aggregated over every group of the connector (no per-client figures), owned by
 * the connector (they outlive the groups); updated by the group threads. @locality any */
struct wsb_kgroups_stats {
    atomic_uint_fast64_t unacked;       /* records handed to a client, not acked yet (gauge) */
    atomic_uint_fast64_t commits;       /* offset commits the broker accepted */
    atomic_uint_fast64_t redeliveries;  /* records handed out again (nack requeue, client gone) */
    atomic_uint_fast64_t dead_lettered; /* records produced to a dead_letter_topic */
    atomic_uint_fast64_t dropped;       /* nack without requeue and no dead_letter_topic */
    atomic_int_fast64_t lag;            /* over assigned partitions: high watermark - committed */
    atomic_uint_fast64_t groups;        /* group consumers running */
    atomic_uint_fast64_t lost;          /* records lost at the broker: an offset reset past them */
};

/** librdkafka's log callback (the connector's), and the user's log_level: the group consumers
 * read offset resets in their log and pass each line on to `log` up to that level. */
typedef void (*wsb_kgroups_log_cb)(const rd_kafka_t *rk, int level, const char *fac,
                                   const char *buf);

/** `consumer_conf` and `producer_conf` are templates (borrowed, duplicated for each client).
 * `messages_in` is the connector's counter, bumped per record read. */
struct wsb_kgroups *wsb_kgroups_new(const char *connector, const rd_kafka_conf_t *consumer_conf,
                                    const rd_kafka_conf_t *producer_conf,
                                    const struct wsb_sink *sink, atomic_uint_fast64_t *messages_in,
                                    struct wsb_kgroups_stats *stats, wsb_kgroups_log_cb log,
                                    int log_level);

/* The connector thread's side (non-blocking: each forwards to the group's own thread). */

/** Adds ack subscription `c` (c->src.ack) to its group's consumer, starting it if needed.
 * Answers the core through the sink. @locality connector thread */
void wsb_kgroups_subscribe(struct wsb_kgroups *gs, const struct wsb_cmd *c);
/** True when `id` was an ack subscription (then it is removed: its unacked records go to
 * the group's other members). @locality connector thread */
bool wsb_kgroups_unsubscribe(struct wsb_kgroups *gs, uint64_t id);
/** @locality connector thread */
void wsb_kgroups_ack(struct wsb_kgroups *gs, uint64_t id, uint64_t token, enum wsb_ack_kind kind);

/** Stops every group (commits what is contiguous, leaves the group) and frees them.
 * @locality connector thread */
void wsb_kgroups_free(struct wsb_kgroups *gs, uint32_t timeout_ms);

#endif
