/* The "kafka" connector (librdkafka): broadcast sources read by partition assignment,
 * publishes through one idempotent producer. See docs/kafka.md. */
#ifndef WSB_CONNECTORS_KAFKA_H
#define WSB_CONNECTORS_KAFKA_H

#include "connectors/connector.h"

/** The vtable (type "kafka"). */
extern const struct wsb_connector_ops wsb_kafka_ops;

#endif
