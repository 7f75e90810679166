/* libFuzzer target: a stream request head (query: channel=, filter=, from=, last_event_id=; the
 * Last-Event-ID header) through the SSE request parser and the resume-token decoder; a
 * decoded token is encoded again and must decode to the same positions. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/sse_wire.h"
#include "bridge/ws/ws_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The raw token decoder on the whole input. */
    struct wsb_sse_resume r;
    if (wsb_sse_token_decode((const char *)data, size, &r) == 0) {
        const struct wsb_sse_pos **chans = malloc((r.n ? r.n : 1) * sizeof(*chans));
        if (chans) {
            for (size_t i = 0; i < r.n; i++)
                chans[i] = &r.chans[i];
            char *tok = malloc(WSB_SSE_ID_MAX + 1);
            size_t n = tok ? wsb_sse_token_encode(chans, r.n, tok, WSB_SSE_ID_MAX + 1) : 0;
            struct wsb_sse_resume again;
            if (n && wsb_sse_token_decode(tok, n, &again) == 0) {
                if (again.n != r.n)
                    abort();
                for (size_t i = 0; i < r.n; i++) {
                    if (again.chans[i].hash != r.chans[i].hash || again.chans[i].n != r.chans[i].n)
                        abort();
                    /* field by field: struct wsb_partition_offset has padding bytes */
                    for (size_t k = 0; k < r.chans[i].n; k++)
                        if (again.chans[i].po[k].partition != r.chans[i].po[k].partition ||
                            again.chans[i].po[k].offset != r.chans[i].po[k].offset)
                            abort();
                }
                wsb_sse_resume_cleanup(&again);
            }
            free(tok);
            free(chans);
        }
    }
    wsb_sse_resume_cleanup(&r);

    /* The input as a request head. */
    long end = wsb_http_head_end((const char *)data, size);
    struct wsb_http_req *req = malloc(sizeof(*req));
    if (end > 0 && req && wsb_http_parse((const char *)data, (size_t)end, req) == 0) {
        struct wsb_sse_request sr;
        const char *msg = NULL;
        if (wsb_sse_request_parse(req, 8, &sr, &msg) == 0 && sr.nchannels == 0)
            abort();
        wsb_sse_request_cleanup(&sr);
    }
    free(req);

    /* The input as a JSON text turned into an event. */
    struct wsb_buf b;
    wsb_buf_init(&b);
    char type[32];
    wsb_sse_type_of(data, size, type, sizeof(type));
    wsb_sse_event(&b, type, data, size);
    wsb_buf_cleanup(&b);
    return 0;
}
