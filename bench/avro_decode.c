/* wsb-avro-bench: decode throughput of registry-framed Avro records into their JSON form
 * (connectors/avro_json: the binary check, avro-c's read, the JSON text), on one thread, so
 * the figure is records/s per core. Records of the integration test's order schema (nested
 * records, unions, arrays, enums, decimals) are encoded first, then decoded in a loop.
 *
 *   wsb-avro-bench [--records N] [--seconds S]
 * Prints one JSON line: records decoded, seconds, records_per_s, bytes_in_per_record,
 * json_bytes_per_record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "connectors/avro_json.h"

static const char SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"shop\",\"fields\":["
    "{\"name\":\"i\",\"type\":\"long\"},"
    "{\"name\":\"status\",\"type\":{\"type\":\"enum\",\"name\":\"Status\","
    "\"symbols\":[\"NEW\",\"PAID\",\"SHIPPED\"]}},"
    "{\"name\":\"price\",\"type\":{\"type\":\"bytes\",\"logicalType\":\"decimal\","
    "\"precision\":12,\"scale\":2}},"
    "{\"name\":\"customer\",\"type\":{\"type\":\"record\",\"name\":\"Customer\",\"fields\":["
    "{\"name\":\"name\",\"type\":\"string\"},{\"name\":\"address\",\"type\":{\"type\":"
    "\"record\",\"name\":\"Address\",\"fields\":[{\"name\":\"city\",\"type\":\"string\"},"
    "{\"name\":\"zip\",\"type\":[\"null\",\"string\"]}]}}]}},"
    "{\"name\":\"items\",\"type\":{\"type\":\"array\",\"items\":{\"type\":\"record\","
    "\"name\":\"Item\",\"fields\":[{\"name\":\"sku\",\"type\":\"string\"},"
    "{\"name\":\"qty\",\"type\":\"int\"}]}}},"
    "{\"name\":\"note\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"discount\",\"type\":[\"null\",{\"type\":\"bytes\",\"logicalType\":"
    "\"decimal\",\"precision\":5,\"scale\":2}]}]}";

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

int main(int argc, char **argv)
{
    size_t nrec = 1000;
    double seconds = 3.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--records") == 0)
            nrec = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
    }
    char err[256];
    struct wsb_avro_schema *s = wsb_avro_schema_new(SCHEMA, strlen(SCHEMA), err, sizeof(err));
    if (!s) {
        fprintf(stderr, "schema: %s\n", err);
        return 1;
    }
    /* Records like test_58's: every type present, a few items, some nulls. */
    struct wsb_buf *recs = calloc(nrec, sizeof(*recs));
    size_t in_bytes = 0;
    static const char *const status[] = {"NEW", "PAID", "SHIPPED"};
    for (size_t i = 0; i < nrec; i++) {
        char text[1024];
        int k = (int)(i % 4);
        char items[256] = "";
        for (int j = 0; j < k; j++)
            snprintf(items + strlen(items), sizeof(items) - strlen(items),
                     "%s{\"sku\":\"s%d\",\"qty\":%d}", j ? "," : "", j, j);
        snprintf(text, sizeof(text),
                 "{\"i\":%zu,\"status\":\"%s\",\"price\":\"%ld.%02ld\",\"customer\":{\"name\":"
                 "\"c%zu\",\"address\":{\"city\":\"Oslo\",\"zip\":%s}},\"items\":[%s],"
                 "\"note\":%s,\"discount\":%s}",
                 i, status[i % 3], (long)(i * 7 / 100), (long)(i * 7 % 100), i,
                 i % 2 ? "null" : "{\"string\":\"0150\"}", items,
                 i % 5 ? "{\"string\":\"n\\u00e9\"}" : "null",
                 i % 3 ? "null" : "{\"bytes\":\"0.50\"}");
        json_t *v = json_loads(text, 0, NULL);
        uint8_t hdr[WSB_AVRO_WIRE_HEADER];
        wsb_avro_wire_header(hdr, 1);
        wsb_buf_init(&recs[i]);
        wsb_buf_append(&recs[i], hdr, sizeof(hdr));
        if (!v || wsb_avro_encode(s, v, &recs[i], err, sizeof(err)) != WSB_OK) {
            fprintf(stderr, "encode %zu: %s\n", i, v ? err : "bad JSON");
            return 1;
        }
        json_decref(v);
        in_bytes += recs[i].len;
    }
    struct wsb_buf out;
    wsb_buf_init(&out);
    size_t done = 0, json_bytes = 0;
    double t0 = now_s(), t = t0, cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    while (t - t0 < seconds) {
        for (size_t i = 0; i < nrec; i++) {
            uint32_t id;
            const struct wsb_buf *r = &recs[i];
            out.len = 0;
            if (!wsb_avro_wire_split(r->data, r->len, &id) ||
                wsb_avro_decode(s, r->data + WSB_AVRO_WIRE_HEADER, r->len - WSB_AVRO_WIRE_HEADER,
                                &out, err, sizeof(err)) != WSB_OK) {
                fprintf(stderr, "decode %zu: %s\n", i, err);
                return 1;
            }
            json_bytes += out.len;
        }
        done += nrec;
        t = now_s();
    }
    double el = t - t0, cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    /* records per CPU-second of this thread: records/s per core, whatever else runs */
    printf("{\"records\":%zu,\"seconds\":%.2f,\"cpu_seconds\":%.2f,\"records_per_s\":%.0f,"
           "\"records_per_cpu_s\":%.0f,\"bytes_in_per_record\":%.1f,"
           "\"json_bytes_per_record\":%.1f}\n",
           done, el, cpu, (double)done / el, (double)done / cpu, (double)in_bytes / (double)nrec,
           (double)json_bytes / (double)done);
    for (size_t i = 0; i < nrec; i++)
        wsb_buf_cleanup(&recs[i]);
    free(recs);
    wsb_buf_cleanup(&out);
    wsb_avro_schema_free(s);
    return 0;
}
