/* Fan-out hub: frame once per loop and channel, share by reference. */
#include "bridge/hub.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bridge/metrics.h"
#include "bridge/outq.h"
#include "bridge/protocol.h"
#include "bridge/ws/ws_frame.h"
#include "connectors/connector.h"
#include "util/buf.h"
#include "util/map.h"
#include "util/pattern.h"

#define MAX_PARTITIONS 65536
#define FRAME_HEADROOM 10

struct hub_source;

struct hub_channel {
    char *key; /* name + '#' + source id: the map key */
    char *name;
    size_t name_len;
    struct hub_source *src;
    struct hub_channel *next_in_source;
    struct wsb_hub_sub **subs;
    size_t nsubs, cap;
    size_t rr; /* round robin cursor for ack sources */
};

struct hub_source {
    uint64_t id;
    bool active;
    bool has_positions;
    int64_t *next; /* next offset per partition, -1 unknown */
    size_t npart;
    struct hub_channel *channels;
};

struct wsb_hub_sub {
    struct hub_channel *ch;
    void *owner;
    uint32_t slot;
    size_t idx;
    bool active;
};

struct wsb_hub {
    struct wsb_hub_cbs cbs;
    struct wsb_loop_metrics *metrics;
    struct wsb_map sources;  /* id -> hub_source */
    struct wsb_map channels; /* key -> hub_channel */
    struct wsb_buf scratch;
};

struct wsb_hub *wsb_hub_new(const struct wsb_hub_cbs *cbs, struct wsb_loop_metrics *metrics)
{
    struct wsb_hub *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->cbs = *cbs;
    h->metrics = metrics;
    wsb_map_init(&h->sources);
    wsb_map_init(&h->channels);
    wsb_buf_init(&h->scratch);
    return h;
}

static void free_channel(struct hub_channel *c)
{
    free(c->key);
    free(c->name);
    free(c->subs);
    free(c);
}

static void free_source(void *ctx, void *v)
{
    (void)ctx;
    struct hub_source *s = v;
    struct hub_channel *c = s->channels;
    while (c) {
        struct hub_channel *n = c->next_in_source;
        for (size_t i = 0; i < c->nsubs; i++)
            free(c->subs[i]);
        free_channel(c);
        c = n;
    }
    free(s->next);
    free(s);
}

void wsb_hub_free(struct wsb_hub *h)
{
    if (!h)
        return;
    wsb_map_each(&h->sources, free_source, NULL);
    wsb_map_cleanup(&h->sources);
    wsb_map_cleanup(&h->channels);
    wsb_buf_cleanup(&h->scratch);
    free(h);
}

static struct hub_source *get_source(struct wsb_hub *h, uint64_t id, bool create)
{
    struct hub_source *s = wsb_map_get_u64(&h->sources, id);
    if (s || !create)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->id = id;
    if (wsb_map_put_u64(&h->sources, id, s) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void remove_source(struct wsb_hub *h, struct hub_source *s)
{
    wsb_map_del_u64(&h->sources, s->id);
    struct hub_channel *c = s->channels;
    while (c) {
        struct hub_channel *n = c->next_in_source;
        wsb_map_del_str(&h->channels, c->key, strlen(c->key));
        c = n;
    }
    free_source(NULL, s);
}

static int set_position(struct hub_source *s, int32_t partition, int64_t next)
{
    if (partition < 0 || partition >= MAX_PARTITIONS)
        return -1;
    if ((size_t)partition >= s->npart) {
        size_t n = (size_t)partition + 1;
        int64_t *p = realloc(s->next, n * sizeof(*p));
        if (!p)
            return -1;
        for (size_t i = s->npart; i < n; i++)
            p[i] = -1;
        s->next = p;
        s->npart = n;
    }
    s->next[partition] = next;
    s->has_positions = true;
    return 0;
}

static char *positions_json(const struct hub_source *s)
{
    if (!s->has_positions)
        return NULL;
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_puts(&b, "{");
    bool first = true;
    for (size_t i = 0; i < s->npart; i++) {
        if (s->next[i] < 0)
            continue;
        wsb_buf_printf(&b, "%s\"%zu\":%" PRId64, first ? "" : ",", i, s->next[i]);
        first = false;
    }
    wsb_buf_puts(&b, "}");
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}

struct wsb_hub_sub *wsb_hub_attach(struct wsb_hub *h, const char *channel, size_t len,
                                   uint64_t source_id, void *owner, uint32_t slot, bool *active,
                                   char **positions)
{
    *positions = NULL;
    *active = false;
    char key[WSB_CHANNEL_MAX + 32];
    int klen = snprintf(key, sizeof(key), "%.*s#%" PRIu64, (int)len, channel, source_id);
    if (klen < 0 || (size_t)klen >= sizeof(key))
        return NULL;

    struct hub_source *s = get_source(h, source_id, true);
    if (!s)
        return NULL;
    struct hub_channel *c = wsb_map_get_str(&h->channels, key, (size_t)klen);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        c->key = strndup(key, (size_t)klen);
        c->name = strndup(channel, len);
        c->name_len = len;
        c->src = s;
        if (!c->key || !c->name || wsb_map_put_str(&h->channels, key, (size_t)klen, c) < 0) {
            free_channel(c);
            return NULL;
        }
        c->next_in_source = s->channels;
        s->channels = c;
    }
    if (c->nsubs == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        struct wsb_hub_sub **subs = realloc(c->subs, cap * sizeof(*subs));
        if (!subs)
            return NULL;
        c->subs = subs;
        c->cap = cap;
    }
    struct wsb_hub_sub *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return NULL;
    sub->ch = c;
    sub->owner = owner;
    sub->slot = slot;
    sub->idx = c->nsubs;
    sub->active = s->active;
    c->subs[c->nsubs++] = sub;
    if (s->active) {
        *active = true;
        *positions = positions_json(s);
    }
    return sub;
}

static void unlink_channel(struct wsb_hub *h, struct hub_channel *c)
{
    struct hub_source *s = c->src;
    wsb_map_del_str(&h->channels, c->key, strlen(c->key));
    for (struct hub_channel **pp = &s->channels; *pp; pp = &(*pp)->next_in_source) {
        if (*pp == c) {
            *pp = c->next_in_source;
            break;
        }
    }
    free_channel(c);
}

void wsb_hub_detach(struct wsb_hub *h, struct wsb_hub_sub *sub)
{
    if (!sub)
        return;
    struct hub_channel *c = sub->ch;
    size_t i = sub->idx;
    c->subs[i] = c->subs[--c->nsubs];
    c->subs[i]->idx = i;
    free(sub);
    if (c->nsubs == 0)
        unlink_channel(h, c);
}

static struct wsb_frame *encode(struct wsb_hub *h, const struct hub_channel *c,
                                const struct wsb_msg *m)
{
    struct wsb_buf *b = &h->scratch;
    b->len = 0;
    b->oom = false;
    if (wsb_buf_reserve(b, FRAME_HEADROOM + 128 + m->payload_len) < 0)
        return NULL;
    b->len = FRAME_HEADROOM;
    wsb_encode_message(b, c->name, c->name_len, m);
    if (b->oom)
        return NULL;
    /* Copy out so the scratch buffer keeps its capacity for the next message. */
    uint8_t *buf = malloc(b->len);
    if (!buf)
        return NULL;
    memcpy(buf, b->data, b->len);
    struct wsb_frame *f =
        wsb_frame_wrap(WSB_OP_TEXT, false, buf, FRAME_HEADROOM, b->len - FRAME_HEADROOM);
    if (f) {
        f->ts_ms = m->timestamp_ms;
        f->partition = m->partition;
        f->offset = m->offset;
        wsb_metric_add(h->metrics->frames_encoded, 1);
    }
    return f;
}

void wsb_hub_message(struct wsb_hub *h, const struct wsb_msg *m)
{
    struct hub_source *s = get_source(h, m->source_id, false);
    if (!s)
        return; /* a source this loop no longer knows: dropped on purpose */
    if (m->partition >= 0 && m->offset >= 0)
        set_position(s, m->partition, m->offset + 1);
    bool ack = m->ack_token != 0;
    if (m->flags & WSB_MSG_SKIPPED) {
        for (struct hub_channel *c = s->channels; c; c = c->next_in_source)
            for (size_t i = 0; i < c->nsubs && h->cbs.skipped; i++)
                if (c->subs[i]->active)
                    h->cbs.skipped(c->subs[i]->owner, c->subs[i]->slot);
        return;
    }
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source) {
        if (c->nsubs == 0)
            continue;
        struct wsb_frame *f = encode(h, c, m);
        if (!f)
            continue;
        if (ack) {
            /* delivery: ack — one subscriber at a time, round robin. */
            size_t start = c->rr % c->nsubs;
            for (size_t k = 0; k < c->nsubs; k++) {
                struct wsb_hub_sub *sub = c->subs[(start + k) % c->nsubs];
                if (!sub->active)
                    continue;
                c->rr = (start + k + 1) % c->nsubs;
                h->cbs.deliver(sub->owner, sub->slot, f, m->ack_token);
                break;
            }
        } else {
            for (size_t i = 0; i < c->nsubs; i++) {
                struct wsb_hub_sub *sub = c->subs[i];
                if (sub->active)
                    h->cbs.deliver(sub->owner, sub->slot, f, 0);
            }
        }
        wsb_frame_unref(f);
    }
}

static void parse_positions(struct hub_source *s, const char *positions)
{
    if (!positions)
        return;
    json_t *root = json_loads(positions, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        char *end;
        long p = strtol(k, &end, 10);
        if (*end == '\0' && json_is_integer(v))
            set_position(s, (int32_t)p, (int64_t)json_integer_value(v));
    }
    json_decref(root);
}

void wsb_hub_started(struct wsb_hub *h, uint64_t source_id, const char *positions)
{
    struct hub_source *s = get_source(h, source_id, true);
    if (!s || s->active)
        return;
    s->active = true;
    parse_positions(s, positions);
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source) {
        for (size_t i = 0; i < c->nsubs; i++) {
            struct wsb_hub_sub *sub = c->subs[i];
            if (sub->active)
                continue;
            sub->active = true;
            h->cbs.started(sub->owner, sub->slot, positions);
        }
    }
}

void wsb_hub_failed(struct wsb_hub *h, uint64_t source_id, const char *code, const char *msg)
{
    struct hub_source *s = get_source(h, source_id, false);
    if (!s)
        return;
    /* Owners are told before the records go away; their callback must not call the hub. */
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source)
        for (size_t i = 0; i < c->nsubs; i++)
            h->cbs.failed(c->subs[i]->owner, c->subs[i]->slot, code, msg);
    remove_source(h, s);
}

void wsb_hub_stopped(struct wsb_hub *h, uint64_t source_id)
{
    struct hub_source *s = get_source(h, source_id, false);
    if (s && !s->channels)
        remove_source(h, s);
}

size_t wsb_hub_channels(const struct wsb_hub *h)
{
    return h->channels.count;
}
