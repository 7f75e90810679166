/* libFuzzer target for config loading: random bytes through wsb_config_load_text, with and
 * without the demo overlay; a loaded config is routed and released (no leaks, no crashes). */
#include <stdint.h>
#include <string.h>

#include "config/config.h"

static void ignore(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    (void)file;
    (void)path;
    (void)msg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *names[] = {"orders", "a.b.c", "demo.ticks", "x", "a..b", ""};
    bool demo = size > 0 && data[0] == ' '; /* leading space: overlay the demo */
    struct wsb_config *c =
        wsb_config_load_text("fuzz.json", (const char *)data, size, demo, ignore, NULL);
    if (!c)
        return 0;
    struct wsb_route r;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (wsb_config_route(c, names[i], strlen(names[i]), &r) == 0)
            wsb_config_route_cleanup(&r);
    wsb_config_unref(wsb_config_ref(c));
    wsb_config_unref(c);
    return 0;
}
