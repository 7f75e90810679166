/* libFuzzer target: the schema registry's JSON answers (GET /schemas/ids/{id} and
 * /subjects/{s}/versions/latest) parsed by connectors/schema_registry, and any schema they
 * carry prepared by connectors/avro_json (avro-c's parser and the JSON-form node graph). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/avro_json.h"
#include "connectors/schema_registry.h"

/* avro-c 1.11 leaks on some of its own error paths while parsing invalid schemas (found by
 * this target; the ones we could, avro_json refuses before avro-c sees them). In the bridge a
 * schema is parsed once per id, so such a leak is bounded; here they are not our findings. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libavro.so\n";
}

static void try_schema(const char *text)
{
    char err[256];
    struct wsb_avro_schema *s = wsb_avro_schema_new(text, strlen(text), err, sizeof(err));
    wsb_avro_schema_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *schema = NULL;
    uint32_t id;
    if (wsb_sr_parse_schema((const char *)data, size, &schema) == WSB_OK) {
        if (!schema)
            abort();
        try_schema(schema);
    }
    free(schema);
    schema = NULL;
    if (wsb_sr_parse_latest((const char *)data, size, &id, &schema) == WSB_OK) {
        if (!schema)
            abort();
        try_schema(schema);
    }
    free(schema);
    return 0;
}
