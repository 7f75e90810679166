/* The memory connector (placeholder until the implementation lands). */
#include <stdio.h>

#include "connectors/connector.h"

static int check(const json_t *j, void (*report)(void *ctx, const char *path, const char *msg),
                 void *ctx)
{
    WSB_UNUSED(j);
    WSB_UNUSED(report);
    WSB_UNUSED(ctx);
    return 0;
}

static enum wsb_err create(const char *name, const json_t *conf, const struct wsb_sink *sink,
                           void **impl, char *err, size_t errlen)
{
    WSB_UNUSED(name);
    WSB_UNUSED(conf);
    WSB_UNUSED(sink);
    *impl = NULL;
    snprintf(err, errlen, "the memory connector is not implemented yet");
    return WSB_ERR_UNSUPPORTED;
}

const struct wsb_connector_ops wsb_memory_ops = {
    .type = "memory",
    .check_config = check,
    .check_channel = check,
    .create = create,
};
