/* Records lost at the broker: librdkafka's offset-reset warnings, matched to the next record. */
#include "connectors/kafka_reset.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NOTES 256
#define LOG_WARNING_LEVEL 4 /* syslog's LOG_WARNING, as librdkafka logs */

/* Reads a decimal integer of at most 18 digits at *p; advances *p. */
static bool read_int(const char **p, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    for (; *s >= '0' && *s <= '9'; s++, n++) {
        if (n == 18)
            return false;
        v = v * 10 + (*s - '0');
    }
    if (n == 0)
        return false;
    *p = s;
    *out = v;
    return true;
}

bool wsb_kreset_parse(int level, const char *fac, const char *buf, struct wsb_kreset_note *out)
{
    static const char reset[] = "]: offset reset (at offset ";
    static const char thread_tag[] = "[thrd:";
    if (level > LOG_WARNING_LEVEL || !fac || strcmp(fac, "OFFSET") != 0 || !buf)
        return false;
    /* librdkafka prefixes lines logged on its own threads with "[thrd:NAME]: " */
    if (strncmp(buf, thread_tag, sizeof(thread_tag) - 1) == 0) {
        const char *end = strstr(buf, "]: ");
        if (!end)
            return false;
        buf = end + 3;
    }
    const char *br = strstr(buf, " [");
    if (!br || br == buf || (size_t)(br - buf) > WSB_KRESET_TOPIC_MAX)
        return false;
    const char *p = br + 2;
    int64_t partition, at;
    if (!read_int(&p, &partition) || partition > INT32_MAX || strncmp(p, reset, sizeof(reset) - 1))
        return false;
    p += sizeof(reset) - 1;
    /* A logical position ("BEGINNING", "INVALID") is no record position: nothing to judge. */
    if (!read_int(&p, &at) || (*p != ',' && *p != ' '))
        return false;
    memcpy(out->topic, buf, (size_t)(br - buf));
    out->topic[br - buf] = '\0';
    out->partition = (int32_t)partition;
    out->at = at;
    return true;
}

struct note {
    const void *client;
    int32_t partition;
    int64_t at;
    char topic[WSB_KRESET_TOPIC_MAX + 1];
};

struct wsb_kresets {
    pthread_mutex_t lock; /* guards notes and n */
    atomic_uint count;    /* n, readable without the lock */
    struct note *notes;   /* n of them, oldest first */
    unsigned n;
};

struct wsb_kresets *wsb_kresets_new(void)
{
    struct wsb_kresets *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->count, 0);
    return t;
}

void wsb_kresets_free(struct wsb_kresets *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    free(t->notes);
    free(t);
}

static struct note *find(struct wsb_kresets *t, const void *client, const char *topic,
                         int32_t partition)
{
    for (unsigned i = 0; i < t->n; i++)
        if (t->notes[i].client == client && t->notes[i].partition == partition &&
            strcmp(t->notes[i].topic, topic) == 0)
            return &t->notes[i];
    return NULL;
}

static void remove_at(struct wsb_kresets *t, unsigned i)
{
    memmove(&t->notes[i], &t->notes[i + 1], (t->n - i - 1) * sizeof(*t->notes));
    t->n--;
    atomic_store_explicit(&t->count, t->n, memory_order_release);
}

void wsb_kresets_note(struct wsb_kresets *t, const void *client, const struct wsb_kreset_note *n)
{
    pthread_mutex_lock(&t->lock);
    struct note *e = find(t, client, n->topic, n->partition);
    if (e)
        goto done; /* reset again before a record was read: the first position is the one
                      the consumer expected */
    if (!t->notes && !(t->notes = malloc(MAX_NOTES * sizeof(*t->notes))))
        goto done; /* the loss goes unreported: it is still in librdkafka's warning */
    if (t->n == MAX_NOTES)
        remove_at(t, 0);
    e = &t->notes[t->n++];
    e->client = client;
    e->partition = n->partition;
    e->at = n->at;
    memcpy(e->topic, n->topic, sizeof(e->topic));
    atomic_store_explicit(&t->count, t->n, memory_order_release);
done:
    pthread_mutex_unlock(&t->lock);
}

uint64_t wsb_kresets_check(struct wsb_kresets *t, const void *client, const char *topic,
                           int32_t partition, int64_t offset)
{
    if (atomic_load_explicit(&t->count, memory_order_acquire) == 0)
        return 0;
    uint64_t lost = 0;
    pthread_mutex_lock(&t->lock);
    struct note *e = find(t, client, topic, partition);
    if (e && offset >= e->at) {
        lost = (uint64_t)(offset - e->at);
        remove_at(t, (unsigned)(e - t->notes));
    }
    pthread_mutex_unlock(&t->lock);
    return lost;
}

void wsb_kresets_forget(struct wsb_kresets *t, const void *client, const char *topic)
{
    pthread_mutex_lock(&t->lock);
    for (unsigned i = t->n; i-- > 0;)
        if (t->notes[i].client == client && (!topic || strcmp(t->notes[i].topic, topic) == 0))
            remove_at(t, i);
    pthread_mutex_unlock(&t->lock);
}

unsigned wsb_kresets_pending(struct wsb_kresets *t)
{
    return atomic_load_explicit(&t->count, memory_order_acquire);
}
