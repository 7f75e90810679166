/* The --demo broker: librdkafka's in-process mock cluster with a "demo.ticks" topic fed by a
 * built-in ticker. Not a connector: the core starts it before loading the demo config. */
#ifndef WSB_CONNECTORS_KAFKA_DEMO_H
#define WSB_CONNECTORS_KAFKA_DEMO_H

#include <stddef.h>

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
