/* The Kafka connector's record formats (`value_format`, `key_format`): between the consumer
 * and the sink, each record is rendered once per source — registry-framed Avro decoded to
 * JSON, or passed through, or skipped (a `gap` for the clients) — and between a publish and
 * the producer, a client's JSON is encoded to Avro with its subject's latest schema
 * (TopicNameStrategy: `<topic>-value`, `<topic>-key`).
 *
 * Schemas come from the schema registry client (connectors/schema_registry.h) without ever
 * blocking: a record whose schema is being fetched waits, and so does every later record of
 * its partition (order is kept), up to the registry's max_held_records per source; past that
 * the source fails with `unavailable` (told to the sink) and the connector drops it.
 *
 * Everything here runs on the connector's thread except wsb_kfmt_ready, which any thread may
 * call, and the hooks' `wake`, which the registry's thread calls. */
#ifndef WSB_CONNECTORS_KAFKA_FORMAT_H
#define WSB_CONNECTORS_KAFKA_FORMAT_H

#include <stdbool.h>
#include <stdint.h>

#include "connectors/connector.h"

struct wsb_kfmt_hooks {
    void *ctx;
    /** Produces a publish whose key and payload are now encoded. `m` is borrowed.
     * @locality connector thread */
    void (*produce)(void *ctx, const char *topic, const struct wsb_msg *m, uint64_t cookie);
    /** Source `source_id` failed (the sink was told): stop reading it.
     * @locality connector thread */
    void (*drop)(void *ctx, uint64_t source_id);
    /** A schema lookup finished: make the connector's thread call wsb_kfmt_poll.
     * @locality registry thread */
    void (*wake)(void *ctx);
};

struct wsb_kfmt;

/** Validates a Kafka connector's "schema_registry" object. Returns the number of problems. */
int wsb_kfmt_check_config(const json_t *registry,
                          void (*report)(void *ctx, const char *path, const char *msg), void *ctx);

/** Creates the stage. `registry` is the connector's "schema_registry" object or NULL (then
 * `auto` never decodes). `sink` is copied. NULL with a reason in err. @locality any */
struct wsb_kfmt *wsb_kfmt_new(const char *connector, const json_t *registry,
                              const struct wsb_sink *sink, const struct wsb_kfmt_hooks *hooks,
                              char *err, size_t errlen);
/** Starts the registry client's thread (nothing when there is no registry). */
enum wsb_err wsb_kfmt_start(struct wsb_kfmt *f);
/** Fails held publishes (through the sink) and discards held records; the sink is not called
 * after it. Call before the connector closes its sink. */
void wsb_kfmt_shutdown(struct wsb_kfmt *f);
/** Stops the registry's thread and frees everything. NULL is fine. */
void wsb_kfmt_free(struct wsb_kfmt *f);

/** Whether records of this source and publishes of this format need the stage at all: false
 * for json/json, and for auto/auto without a registry. @locality any */
bool wsb_kfmt_needed(const struct wsb_kfmt *f, enum wsb_format value, enum wsb_format key);

/** A consumed record `m` (the caller's reference is taken) of source `source_id`: handed to
 * the sink now (rendered), or held in order behind its partition's waiting records. */
void wsb_kfmt_message(struct wsb_kfmt *f, uint64_t source_id, enum wsb_format value,
                      enum wsb_format key, const char *topic, struct wsb_msg *m);

/** A publish on a channel with an Avro format. Returns false when the stage has nothing to do
 * (produce `m` as is); true when it took over: the publish is produced through the hook
 * (now or once the schema is known) or refused through the sink's publish_done. `m` is
 * borrowed (the stage refs it when it holds it). */
bool wsb_kfmt_publish(struct wsb_kfmt *f, const struct wsb_publish *p, struct wsb_msg *m,
                      uint64_t cookie);

/** Retries what waits for a schema; call on every wake-up of the connector's thread. */
void wsb_kfmt_poll(struct wsb_kfmt *f);

/** Source `source_id` was unsubscribed: discards its held records. */
void wsb_kfmt_forget(struct wsb_kfmt *f, uint64_t source_id);

/** False while the registry is unreachable, with a reason naming it. @locality any */
bool wsb_kfmt_ready(struct wsb_kfmt *f, char *reason, size_t reasonlen);

/** Counters (any thread): records decoded, records skipped as undecodable (bad bytes, unknown
 * schema id under `avro`), records with an unknown schema id passed through under `auto`,
 * registry requests. False (and zeros) without a registry. */
bool wsb_kfmt_stats(const struct wsb_kfmt *f, struct wsb_format_stats *out);

#endif
