/* Mailboxes: mutex-guarded FIFO plus an eventfd written when it goes non-empty. */
#include "bridge/mailbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "connectors/connector.h"
#include "util/map.h"

#define DRAIN_BATCH 256 /* mails handled per wake-up before the loop polls its sockets */
#define MOVE_BATCH 4096 /* mails put aside per wake-up (a pointer move each) */

/* The held mails of one source, in arrival order: put aside while the gate holds the source,
 * handed over first once it opens. Loop thread only. */
struct side {
    uint64_t source;
    struct wsb_mail *head, *tail;
    struct side *next; /* in the mailbox's list of sides */
};

struct wsb_mailbox {
    pthread_mutex_t lock;
    struct wsb_mail *head, *tail;   /* mails the gate paces (gated()) */
    struct wsb_mail *uhead, *utail; /* the others: never held */
    bool armed;                     /* the wake event is active or about to be */
    bool (*gate)(void *ctx, uint64_t source);
    atomic_uint_fast64_t depth;
    int efd;            /* producers on other threads wake the loop through it */
    struct event *wake; /* reads efd; made active directly by the loop's own thread */
    wsb_mailbox_cb cb;
    void *ctx;
    /* the loop's own, no lock: */
    struct wsb_map sides;               /* source id -> side */
    struct side *side_list, *side_tail; /* oldest first */
    size_t nsides;
    bool recheck;      /* a kick came: ask the gate about the sides again */
    struct side *last; /* the side found last (a held burst is mostly one source's) */
};

/* The hand-off gate paces broker records, so it holds the mails that must stay in order
 * with them: the records, a source's resync (where the records that follow it start), and
 * a source's failure or stop (after its last records). All of them carry their source in
 * `id`. The rest never waits for a client that is behind: a publish answer, a source's
 * start (its records are posted after it), connector state, drain, reload and stop. */
static bool gated(const struct wsb_mail *m)
{
    return m->type == WSB_MAIL_MESSAGE || m->type == WSB_MAIL_RESYNC ||
           m->type == WSB_MAIL_FAILED || m->type == WSB_MAIL_STOPPED;
}

static void wake_loop(struct wsb_mailbox *mb)
{
    uint64_t one = 1;
    while (write(mb->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Puts the unhandled rest `list`..`tail` of a drained list back in front of the gated
 * mails posted since, in O(1): a long burst is not walked again for every batch. Called
 * with the lock held. */
static void put_back(struct wsb_mailbox *mb, struct wsb_mail *list, struct wsb_mail *tail)
{
    tail->next = mb->head;
    if (!mb->head)
        mb->tail = tail;
    mb->head = list;
}

static struct side *find_side(struct wsb_mailbox *mb, uint64_t source)
{
    if (!mb->nsides)
        return NULL;
    if (mb->last && mb->last->source == source)
        return mb->last;
    struct side *sd = wsb_map_get_u64(&mb->sides, source);
    if (sd)
        mb->last = sd;
    return sd;
}

/* A side for `source`, NULL when out of memory (the caller then hands the mail over). */
static struct side *new_side(struct wsb_mailbox *mb, uint64_t source)
{
    struct side *sd = calloc(1, sizeof(*sd));
    if (!sd)
        return NULL;
    sd->source = source;
    if (wsb_map_put_u64(&mb->sides, source, sd) < 0) {
        free(sd);
        return NULL;
    }
    /* appended: the sides are resumed in the order they were held */
    if (mb->side_tail)
        mb->side_tail->next = sd;
    else
        mb->side_list = sd;
    mb->side_tail = sd;
    mb->nsides++;
    mb->last = sd;
    return sd;
}

static void side_append(struct side *sd, struct wsb_mail *m)
{
    m->next = NULL;
    if (sd->tail)
        sd->tail->next = m;
    else
        sd->head = m;
    sd->tail = m;
}

static void deliver(struct wsb_mailbox *mb, struct wsb_mail *m)
{
    m->next = NULL;
    atomic_fetch_sub_explicit(&mb->depth, 1, memory_order_relaxed);
    mb->cb(mb->ctx, m);
}

/* Hands over what the gate lets through of the sides, oldest side first, at most `budget`
 * mails; frees the sides that empty. Returns the mails handed over. */
static size_t drain_sides(struct wsb_mailbox *mb, size_t budget)
{
    size_t n = 0;
    struct side **pp = &mb->side_list, *prev = NULL;
    while (*pp && n < budget) {
        struct side *sd = *pp;
        while (sd->head && n < budget && mb->gate(mb->ctx, sd->source)) {
            struct wsb_mail *m = sd->head;
            sd->head = m->next;
            if (!sd->head)
                sd->tail = NULL;
            deliver(mb, m);
            n++;
        }
        if (sd->head) {
            prev = sd;
            pp = &sd->next;
            continue;
        }
        *pp = sd->next;
        if (mb->side_tail == sd)
            mb->side_tail = prev;
        wsb_map_del_u64(&mb->sides, sd->source);
        if (mb->last == sd)
            mb->last = NULL;
        mb->nsides--;
        free(sd);
    }
    return n;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct wsb_mailbox *mb = arg;
    (void)what;
    uint64_t v;
    /* Clear the eventfd before taking the list: a post after this wakes us again. */
    if (fd >= 0)
        while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
            ;

    pthread_mutex_lock(&mb->lock);
    struct wsb_mail *urgent = mb->uhead, *list = mb->head;
    struct wsb_mail *list_tail = mb->tail; /* mails leave from the front only: stays the tail */
    mb->uhead = mb->utail = NULL;
    mb->head = mb->tail = NULL;
    mb->armed = false;
    pthread_mutex_unlock(&mb->lock);

    while (urgent) {
        struct wsb_mail *next = urgent->next;
        deliver(mb, urgent);
        urgent = next;
    }

    /* The sides first (their mails came before any mail of their source still in `list`),
     * when a kick says the gate may have opened for one: not at every post, so a wake costs
     * O(its mails), not O(held sources). */
    size_t n = 0;
    if (mb->recheck) {
        mb->recheck = false; /* a kick while the sides are handed over sets it again */
        n = drain_sides(mb, DRAIN_BATCH);
        if (n == DRAIN_BATCH && mb->nsides)
            mb->recheck = true; /* more to go: again at the next wake */
    }
    size_t moved = 0;
    while (list && n < DRAIN_BATCH && moved < MOVE_BATCH) {
        struct wsb_mail *next = list->next;
        struct side *sd = find_side(mb, list->id);
        if (!sd && mb->gate && !mb->gate(mb->ctx, list->id))
            sd = new_side(mb, list->id); /* NULL on OOM: handed over, order kept */
        if (sd) {
            /* Held, or behind held ones of its source: put aside, in order. */
            side_append(sd, list);
            moved++;
        } else {
            deliver(mb, list);
            n++;
        }
        list = next;
    }
    if (list || mb->recheck) {
        /* Put the rest back in front and come back after other events ran. */
        pthread_mutex_lock(&mb->lock);
        if (list)
            put_back(mb, list, list_tail);
        bool wake = !mb->armed;
        mb->armed = true;
        pthread_mutex_unlock(&mb->lock);
        /* Through the eventfd, not event_active: libevent runs an event made active
         * during its pass in that same pass, so the loop would never get back to
         * epoll (sockets that became writable) while a burst lasts. */
        if (wake)
            wake_loop(mb);
    }
}

struct wsb_mailbox *wsb_mailbox_new(struct event_base *base, wsb_mailbox_cb cb, void *ctx)
{
    struct wsb_mailbox *mb = calloc(1, sizeof(*mb));
    if (!mb)
        return NULL;
    pthread_mutex_init(&mb->lock, NULL);
    mb->cb = cb;
    mb->ctx = ctx;
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    mb->wake = mb->efd >= 0 ? event_new(base, mb->efd, EV_READ | EV_PERSIST, on_wake, mb) : NULL;
    if (!mb->wake || event_add(mb->wake, NULL) < 0) {
        if (mb->wake)
            event_free(mb->wake);
        if (mb->efd >= 0)
            close(mb->efd);
        pthread_mutex_destroy(&mb->lock);
        free(mb);
        return NULL;
    }
    return mb;
}

void wsb_mailbox_free(struct wsb_mailbox *mb)
{
    if (!mb)
        return;
    event_free(mb->wake);
    close(mb->efd);
    while (mb->side_list) {
        struct side *sd = mb->side_list;
        mb->side_list = sd->next;
        for (struct wsb_mail *m = sd->head, *next; m; m = next) {
            next = m->next;
            wsb_mail_free(m);
        }
        free(sd);
    }
    wsb_map_cleanup(&mb->sides);
    for (int l = 0; l < 2; l++) {
        struct wsb_mail *m = l == 0 ? mb->head : mb->uhead;
        while (m) {
            struct wsb_mail *next = m->next;
            wsb_mail_free(m);
            m = next;
        }
    }
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

int wsb_mailbox_post(struct wsb_mailbox *mb, struct wsb_mail *mail)
{
    mail->next = NULL;
    return wsb_mailbox_post_list(mb, mail, mail, 1);
}

int wsb_mailbox_post_list(struct wsb_mailbox *mb, struct wsb_mail *head, struct wsb_mail *tail,
                          size_t n)
{
    tail->next = NULL;
    atomic_fetch_add_explicit(&mb->depth, n, memory_order_relaxed);
    bool paced = gated(head); /* a list is of one kind: the sink's are records */
    pthread_mutex_lock(&mb->lock);
    struct wsb_mail **h = paced ? &mb->head : &mb->uhead, **t = paced ? &mb->tail : &mb->utail;
    if (*t)
        (*t)->next = head;
    else
        *h = head;
    *t = tail;
    bool wake = !mb->armed;
    mb->armed = true;
    pthread_mutex_unlock(&mb->lock);
    /* Through the eventfd, not event_active: the loop's event base has no lock (loop.c), so
     * no other thread may touch it. */
    if (wake)
        wake_loop(mb);
    return 0;
}

struct wsb_mail *wsb_mail_new(enum wsb_mail_type type, uint64_t id, struct wsb_msg *msg,
                              const char *text, const char *text2, bool ok)
{
    struct wsb_mail *m = calloc(1, sizeof(*m));
    if (!m)
        goto error;
    m->type = type;
    m->id = id;
    m->ok = ok;
    if (text && !(m->text = strdup(text)))
        goto error;
    if (text2 && !(m->text2 = strdup(text2)))
        goto error;
    m->msg = msg;
    return m;
error:
    if (m) {
        free(m->text);
        free(m);
    }
    if (msg)
        wsb_msg_unref(msg);
    return NULL;
}

struct wsb_mail_block {
    size_t cap, used;
    size_t live; /* mails not freed yet: set at the seal, then the consumer's */
    struct wsb_mail mails[];
};

void wsb_mail_free(struct wsb_mail *mail)
{
    if (!mail)
        return;
    if (mail->msg)
        wsb_msg_unref(mail->msg);
    free(mail->text);
    free(mail->text2);
    struct wsb_mail_block *b = mail->block;
    if (!b)
        free(mail);
    else if (--b->live == 0)
        free(b);
}

struct wsb_mail_block *wsb_mail_block_new(size_t n)
{
    struct wsb_mail_block *b = malloc(sizeof(*b) + n * sizeof(struct wsb_mail));
    if (b)
        *b = (struct wsb_mail_block){.cap = n};
    return b;
}

struct wsb_mail *wsb_mail_block_take(struct wsb_mail_block *b, uint64_t id, struct wsb_msg *msg)
{
    if (b->used == b->cap)
        return NULL;
    struct wsb_mail *m = &b->mails[b->used++];
    *m = (struct wsb_mail){.type = WSB_MAIL_MESSAGE, .id = id, .msg = msg, .ok = true, .block = b};
    return m;
}

void wsb_mail_block_seal(struct wsb_mail_block *b)
{
    b->live = b->used;
    if (!b->live)
        free(b);
}

void wsb_mailbox_set_gate(struct wsb_mailbox *mb, bool (*open)(void *ctx, uint64_t source))
{
    mb->gate = open;
}

void wsb_mailbox_kick(struct wsb_mailbox *mb)
{
    if (!mb->nsides)
        return;
    mb->recheck = true;
    pthread_mutex_lock(&mb->lock);
    bool wake = !mb->armed;
    mb->armed = true;
    pthread_mutex_unlock(&mb->lock);
    if (wake)
        event_active(mb->wake, EV_READ, 0);
}

bool wsb_mailbox_held(const struct wsb_mailbox *mb)
{
    return mb->nsides > 0;
}

size_t wsb_mailbox_held_sources(const struct wsb_mailbox *mb)
{
    return mb->nsides;
}

uint64_t wsb_mailbox_depth(struct wsb_mailbox *mb)
{
    return atomic_load_explicit(&mb->depth, memory_order_relaxed);
}
