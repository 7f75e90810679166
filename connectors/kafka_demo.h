/* The --demo broker: librdkafka's in-process mock cluster with a "demo.ticks" topic fed by a
 * built-in ticker. Not a connector: the core starts it before loading the demo config. */
#ifndef WSB_CONNECTORS_KAFKA_DEMO_H
#define WSB_CONNECTORS_KAFKA_DEMO_H

#include <stddef.h>

/** The --demo config's connector (named "demo"; WSBRIDGE_DEMO_BROKERS or localhost:9092) and
 * channel rules, as JSON text. librdkafka's mock broker answers a fetch that found no data at
 * arrival only after fetch.wait.max.ms (default 500), even when data arrives meanwhile (a
 * real broker answers when it arrives): without the lower value every tick would reach the
 * page ~0.5 s late. */
#define WSB_KAFKA_DEMO_CONNECTOR                                                                   \
    "{\"type\": \"kafka\", \"brokers\": \"${WSBRIDGE_DEMO_BROKERS:-localhost:9092}\","             \
    " \"properties\": {\"fetch.wait.max.ms\": \"10\"}}"
#define WSB_KAFKA_DEMO_CHANNELS                                                                    \
    "[{\"match\": \"demo.ticks\", \"connector\": \"demo\", \"topic\": \"demo.ticks\"},"            \
    " {\"match\": \"demo.*\", \"connector\": \"demo\", \"topic\": \"demo-{1}\"}]"

/** Starts a one-broker mock cluster on loopback, creates "demo.ticks" (1 partition) and a
 * thread producing {"seq":N,"ts":MS,"price":P} to it every 500 ms. Writes the bootstrap
 * servers ("127.0.0.1:PORT") into `bootstraps`. Topics the demo publishes to are
 * auto-created. Returns 0, or -1 with a reason in `err`. At most one demo runs at a time.
 * @locality main thread */
int wsb_kafka_demo_start(char *bootstraps, size_t len, char *err, size_t errlen);

/** Stops the ticker and destroys the cluster. Safe to call when not started.
 * @locality main thread */
void wsb_kafka_demo_stop(void);

#endif
