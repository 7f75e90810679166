/* Channel routing: the first channel rule whose pattern matches, with its broker-name
 * templates expanded from the captures. */
#include <stdbool.h>
#include <string.h>

#include "config/config.h"
#include "util/err.h"

bool wsb_config_topic_internal(const char *topic)
{
    return topic != NULL && topic[0] == '_' && topic[1] == '_';
}

int wsb_config_route(const struct wsb_config *c, const char *channel, size_t len,
                     struct wsb_route *out)
{
    struct wsb_captures caps;
    for (size_t i = 0; i < c->nchannels; i++) {
        const struct wsb_channel_rule *r = &c->channels[i];
        if (!wsb_pattern_match(r->pattern, channel, len, &caps))
            continue;
        memset(out, 0, sizeof(*out));
        out->rule = r;
        const struct {
            const char *tmpl;
            char *dst;
        } fields[] = {
            {r->topic, out->topic},
            {r->exchange, out->exchange},
            {r->binding_key, out->binding_key},
            {r->routing_key, out->routing_key},
            {r->queue, out->queue},
            {r->group, out->group},
            {r->dead_letter_topic, out->dead_letter_topic},
        };
        for (size_t k = 0; k < WSB_ARRAY_LEN(fields); k++)
            if (fields[k].tmpl &&
                wsb_pattern_expand(fields[k].tmpl, &caps, fields[k].dst, sizeof(out->topic)) < 0)
                return WSB_ROUTE_NONE;
        /* A `**` capture can spell any topic: internal ones stay out of reach. */
        if (wsb_config_topic_internal(out->topic) ||
            wsb_config_topic_internal(out->dead_letter_topic))
            return WSB_ROUTE_INTERNAL;
        return 0;
    }
    return WSB_ROUTE_NONE;
}
