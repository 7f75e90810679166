/* libFuzzer target: If-None-Match values (untrusted header bytes) against the served ETags;
 * checks the matcher reads only the given bytes and agrees with itself on a copy. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/assets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    for (size_t i = 0; i < wsb_nassets; i++) {
        bool a = wsb_asset_etag_match(copy, size, wsb_assets[i].etag);
        bool b = wsb_asset_etag_match((const char *)data, size, wsb_assets[i].etag);
        if (a != b)
            abort();
        /* A value that is exactly the tag always matches. */
        size_t elen = strlen(wsb_assets[i].etag);
        if (!wsb_asset_etag_match(wsb_assets[i].etag, elen, wsb_assets[i].etag))
            abort();
    }
    free(copy);
    return 0;
}
