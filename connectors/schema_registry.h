/* A schema registry client (Confluent's REST API) for the Kafka connector: schemas by id
 * (GET /schemas/ids/{id}) and a subject's latest version (GET /subjects/{s}/versions/latest),
 * fetched with libevent's HTTP client on a thread and event base of its own (never on the
 * worker loops, never on the connector's thread), cached with a bound and a TTL, one fetch
 * in flight per key (single-flight). Lookups never block: they answer from the cache or
 * start a fetch and say "pending"; the `wake` callback tells the caller when an answer came.
 *
 * Config (a Kafka connector's "schema_registry"): {"url": "http://host:8081[/prefix]",
 * "username"/"password" (basic auth) or "bearer", "cache_ttl_s" (default 300),
 * "max_held_records" (default 10000; read by the connector's format stage)}. */
#ifndef WSB_CONNECTORS_SCHEMA_REGISTRY_H
#define WSB_CONNECTORS_SCHEMA_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/err.h"

enum wsb_sr_status {
    WSB_SR_FOUND,     /* answered from the cache */
    WSB_SR_PENDING,   /* a fetch is under way; `wake` is called when it ends */
    WSB_SR_NOT_FOUND, /* the registry answered 404 (kept for a while, then asked again) */
    WSB_SR_DOWN,      /* the last fetch failed (transport, 5xx, 401...); retried with backoff */
};

/** Validates the "schema_registry" object strictly; `report(ctx, ".schema_registry.KEY",
 * msg)`. Returns the number of problems. @locality any */
int wsb_sr_check_config(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx);

struct wsb_sr;

/** Creates a client (no thread yet). `wake(wake_ctx)` is called on the registry's thread
 * whenever a fetch ends. NULL with a reason in err. @locality any */
struct wsb_sr *wsb_sr_new(const json_t *conf, void (*wake)(void *ctx), void *wake_ctx, char *err,
                          size_t errlen);
/** Starts the registry's thread. */
enum wsb_err wsb_sr_start(struct wsb_sr *sr);
/** Stops and joins the thread (an unfinished fetch is abandoned), frees everything. After it
 * returns `wake` is never called again. NULL is fine. @locality any but the registry's */
void wsb_sr_free(struct wsb_sr *sr);

/** The schema with id `id`. FOUND: *schema is a malloc'd copy of its text (caller frees).
 * @locality any */
enum wsb_sr_status wsb_sr_schema(struct wsb_sr *sr, uint32_t id, char **schema);
/** The latest version of `subject`. FOUND: *id and a malloc'd *schema. @locality any */
enum wsb_sr_status wsb_sr_latest(struct wsb_sr *sr, const char *subject, uint32_t *id,
                                 char **schema);

/** False while the last fetch failed (no success since), with the reason. @locality any */
bool wsb_sr_ready(struct wsb_sr *sr, char *reason, size_t reasonlen);
/** HTTP requests made so far. @locality any */
uint64_t wsb_sr_fetches(const struct wsb_sr *sr);
/** The registry's base URL ("http://host:port/prefix"), for messages. @locality any */
const char *wsb_sr_url(const struct wsb_sr *sr);
/** The config's max_held_records. */
uint32_t wsb_sr_max_held(const struct wsb_sr *sr);

/* ---- The response parsers (pure; fuzzed) ---------------------------------------------- */

/** Parses a GET /schemas/ids/{id} body: {"schema": "...", "schemaType"?: "AVRO", ...}.
 * *schema is malloc'd. WSB_ERR_UNSUPPORTED for a schemaType other than AVRO, WSB_ERR_INVALID
 * for anything malformed. @locality any */
enum wsb_err wsb_sr_parse_schema(const char *body, size_t len, char **schema);
/** Parses a GET /subjects/{s}/versions/latest body: {"subject", "version", "id", "schema"}.
 * @locality any */
enum wsb_err wsb_sr_parse_latest(const char *body, size_t len, uint32_t *id, char **schema);

#endif
