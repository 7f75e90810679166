/* Fan-out hub: frame once per loop and channel, share by reference; subscribers grouped by
 * their resolved per-record filter, each filter run once per message. */
#include "bridge/hub.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth/filter.h"
#include "bridge/metrics.h"
#include "bridge/outq.h"
#include "bridge/protocol.h"
#include "bridge/sources.h"
#include "bridge/ws/ws_frame.h"
#include "connectors/connector.h"
#include "util/buf.h"
#include "util/map.h"
#include "util/pattern.h"

#define MAX_PARTITIONS 65536
#define FRAME_HEADROOM 10

struct hub_source;

/* The subscribers of a channel that share one resolved filter (NULL: unfiltered). A group
 * whose filter is one alternative with a key condition (`{"key": "{sub}"}`, one tenant) is
 * found through the channel's key index; the others are scanned. */
struct hub_group {
    struct hub_channel *ch;
    struct wsb_filter *filter; /* owned; NULL for the unfiltered group */
    struct wsb_hub_sub **subs;
    size_t nsubs, cap;
    size_t idx;                   /* in ch->groups */
    bool keyed;                   /* in ch->keyed, chained through next_keyed */
    bool scanned;                 /* in ch->scan at sidx */
    size_t sidx;                  /* in ch->scan */
    struct hub_group *next_keyed; /* the next group indexed under the same key */
    size_t rr;                    /* round robin cursor for ack sources */
};

struct hub_channel {
    char *key; /* name + '#' + source id: the map key */
    char *name;
    size_t name_len;
    struct hub_source *src;
    struct hub_channel *next_in_source;
    struct hub_group **groups; /* every group */
    size_t ngroups, capgroups;
    struct wsb_map keyed;    /* key bytes -> first keyed group with that key */
    size_t nkeyed;           /* keyed groups */
    struct hub_group **scan; /* the groups that are not keyed */
    size_t nscan, capscan;
    atomic_uint_fast64_t *counter; /* the rule's wsbridge_filtered_records_total, or NULL */
    size_t nsubs;                  /* over every group */
};

struct hub_source {
    uint64_t id;
    bool active;
    unsigned awaiting; /* RESYNCs still to come (wsb_hub_await): attaches stay pending */
    bool has_positions;
    int64_t *next; /* next offset per partition, -1 unknown */
    size_t npart;
    struct hub_channel *channels;
};

struct wsb_hub_sub {
    struct hub_group *g;
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
    return h;
}

static void free_group(struct hub_group *g)
{
    wsb_filter_free(g->filter);
    free(g->subs);
    free(g);
}

static void free_channel(struct hub_channel *c)
{
    free(c->key);
    free(c->name);
    free(c->groups);
    free(c->scan);
    wsb_map_cleanup(&c->keyed);
    free(c);
}

static void free_source(void *ctx, void *v)
{
    struct wsb_hub *h = ctx;
    struct hub_source *s = v;
    struct hub_channel *c = s->channels;
    while (c) {
        struct hub_channel *n = c->next_in_source;
        for (size_t k = 0; k < c->ngroups; k++) {
            struct hub_group *g = c->groups[k];
            for (size_t i = 0; i < g->nsubs; i++)
                free(g->subs[i]);
            if (g->filter && h)
                wsb_metric_add(h->metrics->filter_groups, -1);
            free_group(g);
        }
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
    wsb_map_each(&h->sources, free_source, h);
    wsb_map_cleanup(&h->sources);
    wsb_map_cleanup(&h->channels);
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
    free_source(h, s);
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
    return s->has_positions ? wsb_positions_json(s->next, s->npart) : NULL;
}

/* The group of `c` whose filter has the canonical text of `f` (NULL: the unfiltered one). */
static struct hub_group *find_group(struct hub_channel *c, const struct wsb_filter *f)
{
    size_t klen = 0;
    const char *key = f ? wsb_filter_key(f, &klen) : NULL;
    for (size_t i = 0; i < c->ngroups; i++) {
        struct hub_group *g = c->groups[i];
        if (!g->filter != !f)
            continue;
        if (!f)
            return g;
        size_t glen;
        const char *gkey = wsb_filter_key(g->filter, &glen);
        if (glen == klen && memcmp(gkey, key, klen) == 0)
            return g;
    }
    return NULL;
}

/* Takes group `g` out of its channel (the array, the key index or the scan list) and frees
 * it with its filter. Its subscribers must be gone. */
static void unlink_group(struct wsb_hub *h, struct hub_channel *c, struct hub_group *g)
{
    c->groups[g->idx] = c->groups[--c->ngroups];
    c->groups[g->idx]->idx = g->idx;
    if (g->keyed) {
        const uint8_t *k;
        size_t kl;
        wsb_filter_single_key(g->filter, &k, &kl);
        struct hub_group *head = wsb_map_get_str(&c->keyed, (const char *)k, kl);
        if (head == g) {
            if (g->next_keyed) /* replaces the value of a present key: no allocation */
                wsb_map_put_str(&c->keyed, (const char *)k, kl, g->next_keyed);
            else
                wsb_map_del_str(&c->keyed, (const char *)k, kl);
        } else {
            while (head && head->next_keyed != g)
                head = head->next_keyed;
            if (head)
                head->next_keyed = g->next_keyed;
        }
        c->nkeyed--;
    }
    if (g->scanned) {
        c->scan[g->sidx] = c->scan[--c->nscan];
        c->scan[g->sidx]->sidx = g->sidx;
    }
    if (g->filter)
        wsb_metric_add(h->metrics->filter_groups, -1);
    free_group(g);
}

/* A new group for filter `f` (taken, also on failure), indexed by key or scanned. */
static struct hub_group *new_group(struct wsb_hub *h, struct hub_channel *c, struct wsb_filter *f)
{
    if (c->ngroups == c->capgroups) {
        size_t cap = c->capgroups ? c->capgroups * 2 : 2;
        struct hub_group **gs = realloc(c->groups, cap * sizeof(*gs));
        if (!gs) {
            wsb_filter_free(f);
            return NULL;
        }
        c->groups = gs;
        c->capgroups = cap;
    }
    struct hub_group *g = calloc(1, sizeof(*g));
    if (!g) {
        wsb_filter_free(f);
        return NULL;
    }
    g->ch = c;
    g->filter = f;
    g->idx = c->ngroups;
    c->groups[c->ngroups++] = g;
    if (f)
        wsb_metric_add(h->metrics->filter_groups, 1);
    const uint8_t *k;
    size_t kl;
    if (f && wsb_filter_single_key(f, &k, &kl)) {
        g->next_keyed = wsb_map_get_str(&c->keyed, (const char *)k, kl);
        if (wsb_map_put_str(&c->keyed, (const char *)k, kl, g) < 0)
            goto fail;
        g->keyed = true;
        c->nkeyed++;
    } else {
        if (c->nscan == c->capscan) {
            size_t cap = c->capscan ? c->capscan * 2 : 2;
            struct hub_group **sc = realloc(c->scan, cap * sizeof(*sc));
            if (!sc)
                goto fail;
            c->scan = sc;
            c->capscan = cap;
        }
        g->scanned = true;
        g->sidx = c->nscan;
        c->scan[c->nscan++] = g;
    }
    if (f && wsb_filter_counter(f))
        c->counter = wsb_filter_counter(f);
    return g;
fail:
    unlink_group(h, c, g);
    return NULL;
}

/* Adds `sub` to the group of filter `f` (taken: kept by a new group, else freed). */
static int join_group(struct wsb_hub *h, struct hub_channel *c, struct wsb_hub_sub *sub,
                      struct wsb_filter *f)
{
    struct hub_group *g = find_group(c, f);
    if (g)
        wsb_filter_free(f);
    else if (!(g = new_group(h, c, f)))
        return -1;
    if (g->nsubs == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 8;
        struct wsb_hub_sub **subs = realloc(g->subs, cap * sizeof(*subs));
        if (!subs)
            return -1; /* an empty group is dropped by the caller (drop_empty_groups) */
        g->subs = subs;
        g->cap = cap;
    }
    sub->g = g;
    sub->idx = g->nsubs;
    g->subs[g->nsubs++] = sub;
    c->nsubs++;
    return 0;
}

/* Takes `sub` out of its group; an emptied group goes away. */
static void leave_group(struct wsb_hub *h, struct wsb_hub_sub *sub)
{
    struct hub_group *g = sub->g;
    struct hub_channel *c = g->ch;
    size_t i = sub->idx;
    g->subs[i] = g->subs[--g->nsubs];
    g->subs[i]->idx = i;
    c->nsubs--;
    sub->g = NULL;
    if (g->nsubs == 0)
        unlink_group(h, c, g);
}

/* Frees the empty groups join_group created but could not fill. */
static void drop_empty_groups(struct wsb_hub *h, struct hub_channel *c)
{
    for (size_t i = 0; i < c->ngroups;) {
        if (c->groups[i]->nsubs)
            i++;
        else
            unlink_group(h, c, c->groups[i]);
    }
}

static void unlink_channel(struct wsb_hub *h, struct hub_channel *c);

/* A channel's map key, "CHANNEL#SOURCE_ID" (what "%.*s#%" PRIu64 prints, without printf).
 * Returns its length, or -1 when it does not fit `cap` with a NUL. */
static int channel_key(char *key, size_t cap, const char *channel, size_t len, uint64_t source_id)
{
    if (len + 1 + 20 + 1 > cap)
        return -1;
    memcpy(key, channel, len);
    key[len] = '#';
    size_t n = len + 1 + wsb_fmt_u64(key + len + 1, source_id);
    key[n] = '\0';
    return (int)n;
}

struct wsb_hub_sub *wsb_hub_attach(struct wsb_hub *h, const char *channel, size_t len,
                                   uint64_t source_id, struct wsb_filter *filter, void *owner,
                                   uint32_t slot, bool *active, char **positions)
{
    *positions = NULL;
    *active = false;
    char key[WSB_CHANNEL_MAX + 32];
    int klen = channel_key(key, sizeof(key), channel, len, source_id);
    if (klen < 0) {
        wsb_filter_free(filter);
        return NULL;
    }

    struct hub_source *s = get_source(h, source_id, true);
    if (!s) {
        wsb_filter_free(filter);
        return NULL;
    }
    struct hub_channel *c = wsb_map_get_str(&h->channels, key, (size_t)klen);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c) {
            wsb_filter_free(filter);
            return NULL;
        }
        wsb_map_init(&c->keyed);
        c->key = strndup(key, (size_t)klen);
        c->name = strndup(channel, len);
        c->name_len = len;
        c->src = s;
        if (!c->key || !c->name || wsb_map_put_str(&h->channels, key, (size_t)klen, c) < 0) {
            free_channel(c);
            wsb_filter_free(filter);
            return NULL;
        }
        c->next_in_source = s->channels;
        s->channels = c;
    }
    struct wsb_hub_sub *sub = calloc(1, sizeof(*sub));
    if (!sub || join_group(h, c, sub, filter) < 0) {
        free(sub);
        drop_empty_groups(h, c);
        if (c->nsubs == 0)
            unlink_channel(h, c);
        return NULL;
    }
    sub->owner = owner;
    sub->slot = slot;
    sub->active = s->active && !s->awaiting;
    if (sub->active) {
        *active = true;
        *positions = positions_json(s);
    }
    return sub;
}

int wsb_hub_refilter(struct wsb_hub *h, struct wsb_hub_sub *sub, struct wsb_filter *filter)
{
    struct hub_group *g = sub->g;
    if (!g->filter == !filter) {
        size_t a = 0, b = 0;
        const char *ka = filter ? wsb_filter_key(filter, &a) : "";
        const char *kb = g->filter ? wsb_filter_key(g->filter, &b) : "";
        if (a == b && memcmp(ka, kb, a) == 0) {
            wsb_filter_free(filter);
            return 0;
        }
    }
    struct hub_channel *c = g->ch;
    /* Between two messages: leave, then join the new group. */
    leave_group(h, sub);
    if (join_group(h, c, sub, filter) < 0) {
        /* Out of memory: the subscriber is in no group (it gets nothing, never more than it
         * may see); the caller ends the subscription. */
        drop_empty_groups(h, c);
        if (c->nsubs == 0)
            unlink_channel(h, c);
        return -1;
    }
    return 1;
}

static void unlink_channel(struct wsb_hub *h, struct hub_channel *c)
{
    drop_empty_groups(h, c);
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
    if (!sub->g) { /* a failed refilter left it outside every group */
        free(sub);
        return;
    }
    struct hub_channel *c = sub->g->ch;
    leave_group(h, sub);
    free(sub);
    if (c->nsubs == 0)
        unlink_channel(h, c);
}

static struct wsb_frame *encode(struct wsb_hub *h, const struct hub_channel *c,
                                const struct wsb_msg *m)
{
    /* Encoded straight into the frame's own buffer (never copied afterwards), allocated once
     * at the size wsb_encode_message reserves for the common case: a JSON payload, a short
     * key, no headers. A payload that is escaped or base64'd grows it. */
    size_t cap = FRAME_HEADROOM + 160 + c->name_len + m->payload_len + m->key_len;
    struct wsb_buf b = {.data = malloc(cap), .cap = cap, .len = FRAME_HEADROOM};
    if (!b.data)
        return NULL;
    wsb_encode_message(&b, c->name, c->name_len, m);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    size_t len;
    cap = b.cap;
    uint8_t *buf = wsb_buf_steal(&b, &len);
    if (cap - len >= 256) {
        /* grown (an escaped or base64'd payload): the frame may wait in slow clients' queues,
         * so the unused tail goes back (a shrinking realloc does not move the bytes). The
         * common case's slack (under 160 bytes) is kept: a realloc per frame costs more. */
        uint8_t *t = realloc(buf, len);
        if (t)
            buf = t;
    }
    struct wsb_frame *f =
        wsb_frame_wrap(WSB_OP_TEXT, false, buf, FRAME_HEADROOM, len - FRAME_HEADROOM);
    if (f) {
        f->ts_ms = m->timestamp_ms;
        f->partition = m->partition;
        f->offset = m->offset;
        wsb_metric_add(h->metrics->frames_encoded, 1);
    }
    return f;
}

static void deliver_all(struct wsb_hub *h, const struct hub_group *g, struct wsb_frame *f)
{
    for (size_t i = 0; i < g->nsubs; i++) {
        struct wsb_hub_sub *sub = g->subs[i];
        if (sub->active)
            h->cbs.deliver(sub->owner, sub->slot, f, 0);
    }
}

void wsb_hub_message(struct wsb_hub *h, const struct wsb_msg *m)
{
    wsb_metric_add(h->metrics->records_handed, 1);
    struct hub_source *s = get_source(h, m->source_id, false);
    if (!s)
        return; /* a source this loop no longer knows: dropped on purpose */
    if (m->partition >= 0 && m->offset >= 0)
        set_position(s, m->partition, m->offset + 1);
    bool ack = m->ack_token != 0;
    if (m->flags & (WSB_MSG_SKIPPED | WSB_MSG_LOST)) {
        /* A record the connector could not decode, or records the broker lost, cannot be
         * judged by a filter either: every subscriber is owed a gap. */
        bool lost = m->flags & WSB_MSG_LOST;
        uint64_t count = lost ? m->lost : 1;
        for (struct hub_channel *c = s->channels; c; c = c->next_in_source)
            for (size_t k = 0; k < c->ngroups; k++)
                for (size_t i = 0; i < c->groups[k]->nsubs && h->cbs.skipped && count; i++)
                    if (c->groups[k]->subs[i]->active)
                        h->cbs.skipped(c->groups[k]->subs[i]->owner, c->groups[k]->subs[i]->slot,
                                       count, lost);
        return;
    }
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source) {
        /* Each group's filter runs once (a keyed group's only when the record's key is its
         * key); the frame is built when the first group takes the record and shared by all
         * that do. A record no group takes allocates nothing. */
        struct wsb_frame *f = NULL;
        if (c->nkeyed) {
            size_t taken = 0;
            struct hub_group *g =
                m->key ? wsb_map_get_str(&c->keyed, (const char *)m->key, m->key_len) : NULL;
            for (; g; g = g->next_keyed) {
                if (!wsb_filter_match(g->filter, m)) /* its header conditions */
                    continue;
                taken++;
                if (!f && !(f = encode(h, c, m)))
                    break;
                deliver_all(h, g, f);
            }
            if (c->counter && c->nkeyed > taken)
                atomic_fetch_add_explicit(c->counter, c->nkeyed - taken, memory_order_relaxed);
        }
        for (size_t k = 0; k < c->nscan; k++) {
            struct hub_group *g = c->scan[k];
            if (g->filter && !wsb_filter_match(g->filter, m)) {
                atomic_uint_fast64_t *n = wsb_filter_counter(g->filter);
                if (n)
                    atomic_fetch_add_explicit(n, 1, memory_order_relaxed);
                continue;
            }
            if (!f && !(f = encode(h, c, m)))
                break;
            if (ack) {
                /* delivery: ack — one subscriber at a time, round robin (ack channels have
                 * no filter: one group). */
                size_t start = g->rr % g->nsubs;
                for (size_t j = 0; j < g->nsubs; j++) {
                    struct wsb_hub_sub *sub = g->subs[(start + j) % g->nsubs];
                    if (!sub->active)
                        continue;
                    g->rr = (start + j + 1) % g->nsubs;
                    h->cbs.deliver(sub->owner, sub->slot, f, m->ack_token);
                    break;
                }
                break;
            }
            deliver_all(h, g, f);
        }
        if (f)
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

/* Tells the subscribers still pending that delivery starts at `positions`. */
static void activate(struct wsb_hub *h, struct hub_source *s, const char *positions)
{
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source) {
        for (size_t k = 0; k < c->ngroups; k++) {
            struct hub_group *g = c->groups[k];
            for (size_t i = 0; i < g->nsubs; i++) {
                struct wsb_hub_sub *sub = g->subs[i];
                if (sub->active)
                    continue;
                sub->active = true;
                h->cbs.started(sub->owner, sub->slot, positions);
            }
        }
    }
}

void wsb_hub_started(struct wsb_hub *h, uint64_t source_id, const char *positions)
{
    struct hub_source *s = get_source(h, source_id, true);
    if (!s || s->active)
        return;
    s->active = true;
    parse_positions(s, positions);
    if (!s->awaiting) /* else the last resync tells them, with newer positions */
        activate(h, s, positions);
}

void wsb_hub_await(struct wsb_hub *h, uint64_t source_id)
{
    struct hub_source *s = get_source(h, source_id, true);
    if (s)
        s->awaiting++;
}

void wsb_hub_resync(struct wsb_hub *h, uint64_t source_id, const char *positions)
{
    struct hub_source *s = get_source(h, source_id, false);
    if (!s || !s->awaiting)
        return; /* failed meanwhile (a later source with this id cannot exist) */
    /* The records this loop was posted before are in; the ones after start here. */
    for (size_t i = 0; i < s->npart; i++)
        s->next[i] = -1;
    s->has_positions = false;
    parse_positions(s, positions);
    s->active = true; /* the registry had its start: the STARTED, if still to come, is older */
    if (--s->awaiting == 0) {
        char *pos = positions_json(s);
        activate(h, s, pos);
        free(pos);
    }
}

void wsb_hub_failed(struct wsb_hub *h, uint64_t source_id, const char *code, const char *msg)
{
    struct hub_source *s = get_source(h, source_id, false);
    if (!s)
        return;
    /* Owners are told before the records go away; their callback must not call the hub. */
    for (struct hub_channel *c = s->channels; c; c = c->next_in_source)
        for (size_t k = 0; k < c->ngroups; k++)
            for (size_t i = 0; i < c->groups[k]->nsubs; i++)
                h->cbs.failed(c->groups[k]->subs[i]->owner, c->groups[k]->subs[i]->slot, code, msg);
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

size_t wsb_hub_groups(const struct wsb_hub *h, const char *channel, size_t len, uint64_t source_id)
{
    char key[WSB_CHANNEL_MAX + 32];
    int klen = channel_key(key, sizeof(key), channel, len, source_id);
    if (klen < 0)
        return 0;
    const struct hub_channel *c = wsb_map_get_str(&h->channels, key, (size_t)klen);
    return c ? c->ngroups : 0;
}
