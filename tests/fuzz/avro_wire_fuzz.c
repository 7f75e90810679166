/* libFuzzer target: a registry-framed record (magic byte, schema id, Avro binary) decoded
 * with a fixed schema covering every Avro type (connectors/avro_json); the output must be
 * valid JSON, and re-encoding it must give the same Avro bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "connectors/avro_json.h"
#include "util/json_text.h"

static const char SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"shop\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\"},{\"name\":\"ok\",\"type\":\"boolean\"},"
    "{\"name\":\"qty\",\"type\":\"int\"},{\"name\":\"ratio\",\"type\":\"double\"},"
    "{\"name\":\"f\",\"type\":\"float\"},{\"name\":\"note\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"status\",\"type\":{\"type\":\"enum\",\"name\":\"Status\","
    "\"symbols\":[\"NEW\",\"PAID\",\"SHIPPED\"]}},"
    "{\"name\":\"price\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\","
    "\"precision\":40,\"scale\":2}},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"string\"}},"
    "{\"name\":\"attrs\",\"type\":{\"type\":\"map\",\"values\":\"long\"}},"
    "{\"name\":\"customer\",\"type\":{\"type\":\"record\",\"name\":\"Customer\",\"fields\":["
    "{\"name\":\"name\",\"type\":\"string\"},{\"name\":\"address\",\"type\":[\"null\","
    "{\"type\":\"record\",\"name\":\"Address\",\"fields\":[{\"name\":\"city\",\"type\":"
    "\"string\"}]}]}]}},"
    "{\"name\":\"raw\",\"type\":\"bytes\"},"
    "{\"name\":\"hash\",\"type\":{\"type\":\"fixed\",\"name\":\"H\",\"size\":2}},"
    "{\"name\":\"amount\",\"type\":{\"type\":\"fixed\",\"name\":\"Amt\",\"size\":4,"
    "\"logicalType\":\"decimal\",\"precision\":9,\"scale\":3}},"
    "{\"name\":\"choice\",\"type\":[\"null\",\"long\",\"Status\",\"shop.Address\"]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    uint32_t id;
    if (!wsb_avro_wire_split(data, size, &id))
        return 0;
    /* A schema per input: LeakSanitizer cannot follow every reference inside a long-lived
     * avro-c value and would report its memory as leaked; freed, nothing is. */
    struct wsb_avro_schema *s = wsb_avro_schema_new(SCHEMA, strlen(SCHEMA), err, sizeof(err));
    if (!s)
        abort();
    struct wsb_buf out;
    wsb_buf_init(&out);
    if (wsb_avro_decode(s, data + WSB_AVRO_WIRE_HEADER, size - WSB_AVRO_WIRE_HEADER, &out, err,
                        sizeof(err)) == WSB_OK) {
        if (!wsb_json_valid(out.data, out.len))
            abort();
        /* The JSON form carries the datum: when it encodes again (it may not, e.g. a fixed
         * decimal over its precision), decoding that gives the same text. The bytes are not
         * compared: Avro has several encodings of one value (block sizes, non-minimal
         * varints, a decimal's sign extension). */
        json_t *v = json_loadb((const char *)out.data, out.len, JSON_ALLOW_NUL, NULL);
        if (v) {
            struct wsb_buf again, text;
            wsb_buf_init(&again);
            wsb_buf_init(&text);
            if (wsb_avro_encode(s, v, &again, err, sizeof(err)) == WSB_OK &&
                (wsb_avro_decode(s, again.data, again.len, &text, err, sizeof(err)) != WSB_OK ||
                 text.len != out.len || memcmp(text.data, out.data, out.len) != 0))
                abort();
            wsb_buf_cleanup(&again);
            wsb_buf_cleanup(&text);
            json_decref(v);
        }
    }
    wsb_buf_cleanup(&out);
    wsb_avro_schema_free(s);
    return 0;
}
