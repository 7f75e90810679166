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

#define DRAIN_BATCH 256 /* mails handled per wake-up before the loop polls its sockets */

struct wsb_mailbox {
    pthread_mutex_t lock;
    struct wsb_mail *head, *tail;   /* mails the gate paces (gated()) */
    struct wsb_mail *uhead, *utail; /* the others: never held */
    bool armed;                     /* the wake event is active or about to be */
    bool held; /* the gate said wait: gated posts do not wake the loop, a kick does */
    bool (*gate)(void *ctx);
    atomic_uint_fast64_t depth;
    int efd;            /* producers on other threads wake the loop through it */
    struct event *wake; /* reads efd; made active directly by the loop's own thread */
    wsb_mailbox_cb cb;
    void *ctx;
};

/* The hand-off gate paces broker records, so it holds the mails that must stay in order
 * with them: the records, a source's resync (where the records that follow it start), and
 * a source's failure or stop (after its last records). The
 * rest never waits for a client that is behind: a publish answer, a source's start (its
 * records are posted after it), connector state, drain, reload and stop. */
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
 * mails posted since, in O(1): a held burst of many thousand records is not walked again
 * for every batch. Called with the lock held. */
static void put_back(struct wsb_mailbox *mb, struct wsb_mail *list, struct wsb_mail *tail)
{
    tail->next = mb->head;
    if (!mb->head)
        mb->tail = tail;
    mb->head = list;
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
    struct wsb_mail *urgent = mb->uhead, *list = NULL, *list_tail = NULL;
    mb->uhead = mb->utail = NULL;
    if (!mb->held) { /* while held only a kick resumes the gated mails */
        list = mb->head;
        list_tail = mb->tail; /* mails leave from the front only: stays the tail */
        mb->head = mb->tail = NULL;
    }
    mb->armed = false;
    pthread_mutex_unlock(&mb->lock);

    while (urgent) {
        struct wsb_mail *next = urgent->next;
        urgent->next = NULL;
        atomic_fetch_sub_explicit(&mb->depth, 1, memory_order_relaxed);
        mb->cb(mb->ctx, urgent);
        urgent = next;
    }

    size_t n = 0;
    while (list) {
        if (mb->gate && !mb->gate(mb->ctx)) {
            /* Hold the rest, in order, until the gate opens (wsb_mailbox_kick). */
            pthread_mutex_lock(&mb->lock);
            put_back(mb, list, list_tail);
            mb->held = true;
            pthread_mutex_unlock(&mb->lock);
            return;
        }
        struct wsb_mail *next = list->next;
        list->next = NULL;
        atomic_fetch_sub_explicit(&mb->depth, 1, memory_order_relaxed);
        mb->cb(mb->ctx, list);
        list = next;
        if (++n == DRAIN_BATCH && list) {
            /* Put the rest back in front and come back after other events ran. */
            pthread_mutex_lock(&mb->lock);
            put_back(mb, list, list_tail);
            bool wake = !mb->armed;
            mb->armed = true;
            pthread_mutex_unlock(&mb->lock);
            /* Through the eventfd, not event_active: libevent runs an event made active
             * during its pass in that same pass, so the loop would never get back to
             * epoll (sockets that became writable) while a burst lasts. */
            if (wake)
                wake_loop(mb);
            return;
        }
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
    bool wake = !mb->armed && (!mb->held || !paced);
    mb->armed = mb->armed || wake;
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

void wsb_mailbox_set_gate(struct wsb_mailbox *mb, bool (*open)(void *ctx))
{
    mb->gate = open;
}

void wsb_mailbox_kick(struct wsb_mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    if (mb->held) {
        mb->held = false;
        if (mb->head && !mb->armed) {
            mb->armed = true;
            event_active(mb->wake, EV_READ, 0);
        }
    }
    pthread_mutex_unlock(&mb->lock);
}

bool wsb_mailbox_held(const struct wsb_mailbox *mb)
{
    return mb->held;
}

uint64_t wsb_mailbox_depth(struct wsb_mailbox *mb)
{
    return atomic_load_explicit(&mb->depth, memory_order_relaxed);
}
