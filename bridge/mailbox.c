/* Mailboxes: mutex-guarded FIFO plus an event made active when it goes non-empty. */
#include "bridge/mailbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "connectors/connector.h"

#define DRAIN_BATCH 256 /* mails handled per wake-up before yielding to I/O */

struct wsb_mailbox {
    pthread_mutex_t lock;
    struct wsb_mail *head, *tail;
    bool armed; /* the wake event is active or about to be */
    bool held;  /* the gate said wait: posts do not wake the loop, a kick does */
    bool (*gate)(void *ctx);
    atomic_uint_fast64_t depth;
    struct event *wake;
    wsb_mailbox_cb cb;
    void *ctx;
};

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct wsb_mailbox *mb = arg;
    (void)fd;
    (void)what;

    pthread_mutex_lock(&mb->lock);
    struct wsb_mail *list = mb->head;
    mb->head = mb->tail = NULL;
    mb->armed = false;
    pthread_mutex_unlock(&mb->lock);

    size_t n = 0;
    while (list) {
        if (mb->gate && !mb->gate(mb->ctx)) {
            /* Hold the rest, in order, until the gate opens (wsb_mailbox_kick). */
            pthread_mutex_lock(&mb->lock);
            struct wsb_mail *tail = list;
            while (tail->next)
                tail = tail->next;
            tail->next = mb->head;
            if (!mb->head)
                mb->tail = tail;
            mb->head = list;
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
            struct wsb_mail *tail = list;
            while (tail->next)
                tail = tail->next;
            tail->next = mb->head;
            if (!mb->head)
                mb->tail = tail;
            mb->head = list;
            if (!mb->armed) {
                mb->armed = true;
                event_active(mb->wake, EV_READ, 0);
            }
            pthread_mutex_unlock(&mb->lock);
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
    mb->wake = event_new(base, -1, 0, on_wake, mb);
    if (!mb->wake) {
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
    struct wsb_mail *m = mb->head;
    while (m) {
        struct wsb_mail *next = m->next;
        wsb_mail_free(m);
        m = next;
    }
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

int wsb_mailbox_post(struct wsb_mailbox *mb, struct wsb_mail *mail)
{
    mail->next = NULL;
    atomic_fetch_add_explicit(&mb->depth, 1, memory_order_relaxed);
    pthread_mutex_lock(&mb->lock);
    if (mb->tail)
        mb->tail->next = mail;
    else
        mb->head = mail;
    mb->tail = mail;
    bool wake = !mb->armed && !mb->held;
    mb->armed = mb->armed || wake;
    if (wake)
        event_active(mb->wake, EV_READ, 0);
    pthread_mutex_unlock(&mb->lock);
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

void wsb_mail_free(struct wsb_mail *mail)
{
    if (!mail)
        return;
    if (mail->msg)
        wsb_msg_unref(mail->msg);
    free(mail->text);
    free(mail->text2);
    free(mail);
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
