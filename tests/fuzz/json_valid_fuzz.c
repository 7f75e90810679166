/* libFuzzer target: wsb_json_valid against jansson as a reference parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util/json_text.h"

/* An upper bound of the nesting depth: brackets counted without regard to strings. */
static size_t naive_depth(const uint8_t *p, size_t n)
{
    size_t depth = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '[' || p[i] == '{') {
            if (++depth > max)
                max = depth;
        } else if ((p[i] == ']' || p[i] == '}') && depth > 0) {
            depth--;
        }
    }
    return max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool ours = wsb_json_valid(data, size);

    /* A raw NUL byte is never valid JSON (outside strings it is no token, inside one it is
     * an unescaped control character); the comparison below is for NUL-free inputs. */
    if (memchr(data, '\0', size)) {
        if (ours)
            abort();
        return 0;
    }
    /* Beyond 64 levels we reject by design while jansson accepts up to 2048. */
    if (naive_depth(data, size) > 64)
        return 0;

    json_error_t err;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool theirs = j != NULL;
    json_decref(j);

    if (!theirs) {
        switch (json_error_code(&err)) {
        /* Known, deliberate differences, skipped:
         * - numbers outside int64 / double range (1e999, 2^64): valid grammar (RFC 8259 §6
         *   leaves range to implementations), jansson refuses to represent them;
         * - "\u0000" in an object key: valid JSON, jansson refuses NUL in keys even with
         *   JSON_ALLOW_NUL;
         * - allocation failure inside jansson says nothing about validity. */
        case json_error_numeric_overflow:
        case json_error_null_byte_in_key:
        case json_error_out_of_memory: return 0;
        default: break;
        }
    }
    if (ours != theirs)
        abort();
    return 0;
}
