/* Avro <-> JSON for the Kafka connector: the schema registry's wire format (magic byte 0, a
 * 4-byte big-endian schema id, Avro binary), and one schema's datums decoded with avro-c into
 * the Avro JSON encoding, or a JSON value encoded into Avro binary for a publish.
 *
 * The JSON form (docs/schema-registry.md): records are objects, enums their symbol, arrays
 * and maps as such, a union a {"BRANCH": value} object (BRANCH is the type name: "int",
 * "string", or a named type's full name) or null, bytes and fixed strings of code points
 * U+0000..U+00FF (one per byte, the Avro JSON encoding), and a decimal (bytes or fixed with
 * logicalType decimal) a JSON string of its exact decimal digits ("-12.50" at scale 2).
 * Non-finite floats are the strings "NaN", "Infinity" and "-Infinity".
 *
 * Pure: bytes in, text out, no I/O. A schema object is not thread-safe (it keeps one
 * reusable avro-c value); use it from one thread at a time. */
#ifndef WSB_CONNECTORS_AVRO_JSON_H
#define WSB_CONNECTORS_AVRO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/err.h"

/* Magic byte + schema id. */
#define WSB_AVRO_WIRE_HEADER 5

/** True when `p` starts with the wire format header (magic byte 0 and a schema id); the id
 * goes to *id and the Avro body starts at p + WSB_AVRO_WIRE_HEADER. @locality any */
bool wsb_avro_wire_split(const uint8_t *p, size_t n, uint32_t *id);

/** Writes the wire format header for schema `id`. @locality any */
void wsb_avro_wire_header(uint8_t out[WSB_AVRO_WIRE_HEADER], uint32_t id);

struct wsb_avro_schema;

/** Parses an Avro schema (its JSON text) with avro-c and prepares decoding and encoding.
 * NULL with a reason in err when the schema is invalid or unsupported. @locality any */
struct wsb_avro_schema *wsb_avro_schema_new(const char *json, size_t len, char *err, size_t errlen);
/** NULL is fine. */
void wsb_avro_schema_free(struct wsb_avro_schema *s);

/** Decodes one Avro binary datum of schema `s` and appends its JSON form to `out`. On error
 * `out` is left as it was and err says why (truncated input, bad UTF-8, trailing bytes...).
 * @locality the thread using `s` */
enum wsb_err wsb_avro_decode(struct wsb_avro_schema *s, const uint8_t *p, size_t n,
                             struct wsb_buf *out, char *err, size_t errlen);

/** Encodes the JSON value `v` as an Avro binary datum of schema `s`, appended to `out`.
 * Accepts the JSON form above, and also: a bare value for a union of null and one other
 * branch, a JSON number for a decimal, a JSON integer for float/double. WSB_ERR_INVALID with
 * a reason naming the JSON path when `v` does not fit the schema.
 * @locality the thread using `s` */
enum wsb_err wsb_avro_encode(struct wsb_avro_schema *s, const json_t *v, struct wsb_buf *out,
                             char *err, size_t errlen);

#endif
