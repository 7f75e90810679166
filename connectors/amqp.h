/* The "amqp" connector (rabbitmq-c, AMQP 0-9-1): exchange and queue channels, work queues
 * with client acks, publishes with publisher confirms. See docs/amqp.md. */
#ifndef WSB_CONNECTORS_AMQP_H
#define WSB_CONNECTORS_AMQP_H

#include "connectors/connector.h"

/** The vtable (type "amqp"). Config:
 * {"type":"amqp","url":"amqp[s]://user:pass@host:port/vhost","heartbeat_s":10,
 *  "connect_timeout_ms":5000,"reconnect_max_ms":5000,"tls":{"ca_file":F,"verify":true}}.
 *
 * Two connections (consumers; publishes, so that a broker blocking publishers during a
 * resource alarm never stops acks), driven by one thread that polls the command queue's wake
 * fd and both sockets (rabbitmq-c's blocking calls run only there). Channel 1 of the publishing
 * connection is in confirm mode; every source has a channel of its own on the other:
 * - exchange sources (`exchange` + `binding_key`): an exclusive auto-delete server-named
 *   queue bound once, consumed without acks; the core fans it out;
 * - queue sources: basic.consume on the queue; with `ack`, manual acks and basic.qos
 *   prefetch = max_unacked, so a slow subscriber holds at most that many messages.
 * After a lost connection it reconnects with backoff and re-opens every source. */
extern const struct wsb_connector_ops wsb_amqp_ops;

#endif
