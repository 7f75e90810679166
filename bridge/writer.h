/* The plaintext write path: a session's output is written to its socket at the end of the
 * loop's current batch, without asking epoll for write readiness first.
 *
 * libevent's socket bufferevent, with EV_WRITE enabled, adds the write event when output is
 * added and deletes it once the output is written: one writev and two epoll_ctl per frame
 * batch and client, and the batch waits one epoll round trip before it is written. A plain
 * session has no bufferevent (session.h: its own output evbuffer and one io event, ~1 KiB
 * less per idle connection) and asks for no write readiness. Output added to it (frames, replies,
 * pings, close frames, HTTP answers: any evbuffer_add to its output, seen by an evbuffer callback)
 * puts it on the loop's dirty list once; the loop's flush event, made active when the list
 * gets its first entry, writes every listed session straight to its socket
 * (evbuffer_write_atmost). Only when the kernel takes less than everything (EAGAIN, a
 * partial write), or a backlog waits in the out-queue behind what was written, is write
 * readiness asked for (write_armed: the io event gets EV_WRITE while output waits):
 * wsb_writer_ready then writes the rest when the socket is writable, one chunk per loop
 * pass, refilling from the out-queue as libevent's write callback did, and the write that
 * sees both empty drops it again.
 *
 * One flush point per loop pass, an event made active rather than calls at the end of each
 * producer: every producer (a mailbox drain batch and its hub deliveries, read callbacks
 * that queued replies, timers' pings and closes, reload re-checks, /clients) is covered
 * without each one remembering to flush; event_active is a list insert (the loop's base has
 * no lock), no syscall; the event runs after the callbacks already active in this dispatch
 * pass, so the sockets that became readable in one epoll return, or one drain batch, end in
 * one flush; and it runs before the loop polls again, so output goes out in the pass that
 * queued it. The flush costs O(sessions touched).
 *
 * A client with a backlog (more in its out-queue than one write took) is paced by write
 * readiness as before: refilling and writing it from the flush, even one write per loop
 * pass, made test_70 (200 fast and 10 stalled clients, drop_oldest, Kafka at 1,000 records/s
 * of 1 KiB) drop frames for fast clients on the loaded machine where libevent's path did
 * not; the direct path is for the common case, a client that keeps up, whose output is
 * written whole by one writev. Output added during a flush (a gap notice after a refill)
 * waits for the next pass (a zero timeout).
 *
 * Everything else keeps its meaning: output is the session's output evbuffer `out`
 * (queued-byte accounting, the gate, the flow-control verdicts, drop_oldest, /clients read
 * its length), and after a write that leaves at most the write low watermark the session's
 * write callback runs as libevent's would (wsb_session_written: the out-queue refill,
 * close_after_flush, the gate's "caught up").
 *
 * TLS sessions (an OpenSSL bufferevent writes records, not the output evbuffer, to the
 * socket) and bufferevent pairs (unit tests) keep libevent's path. Everything here runs on
 * the session's worker loop. */
#ifndef WSB_BRIDGE_WRITER_H
#define WSB_BRIDGE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event;
struct evbuffer;
struct wsb_session;
struct wsb_worker;

/** A loop's dirty list and its flush event (embedded in struct wsb_worker; zeroed = empty). */
struct wsb_writer {
    struct event *ev;       /* the flush event, made on the first attach */
    struct wsb_session **v; /* dirty sessions; NULL where one was freed while listed */
    size_t n, cap;
    bool pending;    /* ev is active, or due in the next pass */
    bool flushing;   /* wsb_writer_flush is running */
    uint64_t writes; /* direct writes made (tests, diagnostics) */
    uint64_t waits;  /* times the kernel refused part of one: EV_WRITE enabled */
};

/** Puts a plain session (no bufferevent: fd, out and io set) on the direct path. False
 * when the flush event or the output callback cannot be made (out of memory). @locality
 * loop */
bool wsb_writer_attach(struct wsb_session *s);

/** A plain session's output evbuffer, made (with the callback that lists the session when
 * output is added) if the idle tick gave it back; NULL when out of memory. @locality loop */
struct evbuffer *wsb_writer_output(struct wsb_session *s);

/** Gives back a plain session's output evbuffer when it is empty and not listed or waiting
 * for write readiness (the idle tick: an idle connection holds none; ~200 B with its
 * callback entry). @locality loop */
void wsb_writer_release(struct wsb_session *s);

/** Takes a session that is being freed off the dirty list (before its output is freed).
 * @locality loop */
void wsb_writer_detach(struct wsb_session *s);

/** The output was written in part (a write callback): once the output and the out-queue
 * are empty, write readiness is no longer asked for. Call before wsb_session_written.
 * @locality loop */
void wsb_writer_drained(struct wsb_session *s);

/** The socket of a session waiting for write readiness became writable (conn.c's io
 * event): writes one socket chunk, then as a write callback (wsb_writer_drained,
 * wsb_session_written) once at most the low watermark is left; a failed write kills the
 * session. @locality loop */
void wsb_writer_ready(struct wsb_session *s);

/** Writes every dirty session of the loop (the flush event's work). Sessions made dirty
 * while it runs are written in the next loop pass. @locality loop */
void wsb_writer_flush(struct wsb_worker *w);

/** Frees the loop's flush event and list. @locality loop */
void wsb_writer_cleanup(struct wsb_worker *w);

#endif
