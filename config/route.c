/* Channel routing: the first channel rule whose pattern matches, with the captures expanded
 * into its broker members. Which members a rule has, and which expansions may never be
 * reached, is the connector's business. */
#include <stdbool.h>
#include <string.h>

#include "config/config.h"
#include "connectors/connector.h"
#include "util/err.h"

/* A copy of `tmpl` (an object) with every string member expanded; NULL when one does not fit
 * (or on allocation failure). */
static json_t *expand(const json_t *tmpl, const struct wsb_captures *caps)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    char buf[WSB_ROUTE_FIELD_MAX + 1];
    if (!out)
        return NULL;
    json_object_foreach((json_t *)tmpl, key, v)
    {
        json_t *e;
        if (json_is_string(v)) {
            if (wsb_pattern_expand(json_string_value(v), caps, buf, sizeof(buf)) < 0)
                goto fail;
            e = json_string(buf);
        } else {
            e = json_deep_copy(v);
        }
        if (json_object_set_new(out, key, e) < 0)
            goto fail;
    }
    return out;

fail:
    json_decref(out);
    return NULL;
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
        out->fields = r->fields;
        if (wsb_pattern_ncaptures(r->pattern) > 0) {
            if (!(out->owned = expand(r->fields, &caps)))
                return WSB_ROUTE_NONE;
            out->fields = out->owned;
        }
        const char *why = r->ops && r->ops->check_route ? r->ops->check_route(out->fields) : NULL;
        if (why) {
            wsb_config_route_cleanup(out);
            out->forbidden = why;
            return WSB_ROUTE_FORBIDDEN;
        }
        return 0;
    }
    return WSB_ROUTE_NONE;
}

void wsb_config_route_cleanup(struct wsb_route *r)
{
    json_decref(r->owned);
    r->owned = NULL;
    r->fields = NULL;
}
