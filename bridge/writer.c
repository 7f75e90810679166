/* The plaintext write path (writer.h): the loop's dirty list, the flush event, and the
 * direct write with its fall-back to write readiness when the kernel refuses part of it. */
#include "bridge/writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bridge/session.h"
#include "bridge/worker.h"

/* libevent's write callback runs when the output is at most the write low watermark (conn.c
 * sets it); a direct write calls the session's the same way. */
#define WRITE_LOWAT (WSB_SESSION_SOCKET_CHUNK / 2)

/* libevent writes the rest when the socket is writable (conn.c on_write, then
 * wsb_writer_drained). */
static void arm(struct wsb_session *s)
{
    s->write_armed = true;
    s->w->wr.waits++;
    wsb_session_io_update(s);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wsb_writer_flush(arg);
}

static void mark(struct wsb_session *s)
{
    struct wsb_writer *wr = &s->w->wr;
    if (wr->n == wr->cap) {
        size_t cap = wr->cap ? wr->cap * 2 : 64;
        struct wsb_session **v = realloc(wr->v, cap * sizeof(*v));
        if (!v) {
            arm(s); /* libevent's path for this output */
            return;
        }
        wr->v = v;
        wr->cap = cap;
    }
    wr->v[wr->n++] = s;
    s->dirty_slot = (uint32_t)wr->n;
    if (!wr->pending && !wr->flushing) {
        wr->pending = true;
        event_active(wr->ev, EV_WRITE, 0);
    }
}

/* Output was added: the session joins the dirty list, unless it is on it already or waits
 * for write readiness (then the io event is added for EV_WRITE if it was not: it is deleted
 * while the output is empty, as a socket bufferevent's write event). */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct wsb_session *s = arg;
    if (info->n_added == 0 || s->dirty_slot || s->state == WSB_SS_DEAD)
        return;
    if (s->write_armed) {
        if (!(s->io_what & EV_WRITE))
            wsb_session_io_update(s);
        return;
    }
    mark(s);
}

bool wsb_writer_attach(struct wsb_session *s)
{
    struct wsb_writer *wr = &s->w->wr;
    if (!wr->ev && !(wr->ev = event_new(s->w->base, -1, 0, on_flush, s->w)))
        return false;
    if (!evbuffer_add_cb(s->out, on_output, s))
        return false;
    s->direct = true;
    return true;
}

struct evbuffer *wsb_writer_output(struct wsb_session *s)
{
    if (s->out)
        return s->out;
    if (!(s->out = evbuffer_new()))
        return NULL;
    if (!evbuffer_add_cb(s->out, on_output, s)) {
        evbuffer_free(s->out);
        s->out = NULL;
    }
    return s->out;
}

void wsb_writer_release(struct wsb_session *s)
{
    if (!s->direct || !s->out || s->dirty_slot || s->write_armed ||
        evbuffer_get_length(s->out) != 0)
        return;
    evbuffer_free(s->out); /* and its callback entry */
    s->out = NULL;
}

void wsb_writer_detach(struct wsb_session *s)
{
    if (!s->direct)
        return;
    if (s->out)
        evbuffer_remove_cb(s->out, on_output, s);
    if (s->dirty_slot)
        s->w->wr.v[s->dirty_slot - 1] = NULL;
    s->dirty_slot = 0;
    s->direct = false;
}

void wsb_writer_drained(struct wsb_session *s)
{
    if (!s->direct || !s->write_armed || s->q.count || wsb_session_out_len(s))
        return;
    /* Caught up: write readiness is no longer asked for, and the next output is written by
     * the flush. */
    s->write_armed = false;
    wsb_session_io_update(s);
}

void wsb_writer_ready(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD)
        return;
    /* As a socket bufferevent's write callback: at most one socket chunk (its
     * max_single_write, conn.c), an error or a write of nothing ends the connection, and the
     * session's write callback runs once at most the low watermark is left. */
    if (wsb_session_out_len(s)) {
        int n = evbuffer_write_atmost(s->out, s->fd, WSB_SESSION_SOCKET_CHUNK);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;
            wsb_session_kill(s);
            return;
        }
    }
    if (wsb_session_out_len(s) <= WRITE_LOWAT) {
        wsb_writer_drained(s);
        wsb_session_written(s);
    }
}

/* Writes what the kernel takes of one session's output. */
static void write_out(struct wsb_session *s)
{
    if (s->state == WSB_SS_DEAD || s->write_armed)
        return;
    struct evbuffer *out = s->out;
    if (!out || evbuffer_get_length(out) == 0)
        return;
    s->w->wr.writes++;
    /* At most one socket chunk per write, as libevent's max_single_write (conn.c): a large
     * output does not hold up the rest of the flush. */
    int n = evbuffer_write_atmost(out, s->fd, WSB_SESSION_SOCKET_CHUNK);
    int err = errno;
    if (n < 0 && err != EAGAIN && err != EWOULDBLOCK && err != EINTR) {
        wsb_session_kill(s); /* the peer is gone (EPIPE, ECONNRESET), as libevent's error event */
        return;
    }
    /* The kernel refused part of it, or a backlog waits in the out-queue: libevent writes
     * the rest, one max_single_write per writable socket and loop pass, with the refills
     * from its write callback, as before this path existed (the hand-off gate and the
     * send-buffer limits were tuned to that pace; see writer.h). */
    size_t left = evbuffer_get_length(out);
    if (left || s->q.count)
        arm(s);
    if (left <= WRITE_LOWAT)
        wsb_session_written(s);
}

void wsb_writer_flush(struct wsb_worker *w)
{
    struct wsb_writer *wr = &w->wr;
    wr->pending = false;
    wr->flushing = true;
    size_t n = wr->n;
    for (size_t i = 0; i < n; i++) {
        struct wsb_session *s = wr->v[i]; /* re-read: a mark during the pass may move v */
        if (!s)
            continue;
        wr->v[i] = NULL;
        s->dirty_slot = 0;
        write_out(s);
    }
    wr->flushing = false;
    /* Sessions marked during the pass (output added by a write's callback: a gap notice)
     * are written in the next loop pass, after the loop polled. */
    size_t rest = wr->n - n;
    memmove(wr->v, wr->v + n, rest * sizeof(*wr->v));
    wr->n = rest;
    for (size_t i = 0; i < rest; i++)
        if (wr->v[i])
            wr->v[i]->dirty_slot = (uint32_t)(i + 1);
    if (rest) {
        static const struct timeval next_pass = {0, 0};
        wr->pending = true;
        event_add(wr->ev, &next_pass);
    }
}

void wsb_writer_cleanup(struct wsb_worker *w)
{
    if (w->wr.ev)
        event_free(w->wr.ev);
    free(w->wr.v);
    w->wr = (struct wsb_writer){0};
}
