/* A mailbox per event loop: the only way other threads (connector threads, the main thread)
 * hand work to a loop. Many producers, one consumer; producers never block on the loop.
 * The consumer is woken through an eventfd its loop watches (the loop's event base has no
 * lock, so producers never call libevent on it). */
#ifndef WSB_BRIDGE_MAILBOX_H
#define WSB_BRIDGE_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct wsb_msg;

enum wsb_mail_type {
    WSB_MAIL_MESSAGE,      /* msg for source `id` */
    WSB_MAIL_STARTED,      /* source `id` started, text = positions JSON or NULL */
    WSB_MAIL_FAILED,       /* source `id` failed: text = code, text2 = message */
    WSB_MAIL_STOPPED,      /* source `id` released by every subscriber */
    WSB_MAIL_RESYNC,       /* source `id` is fed to this loop again from text = positions */
    WSB_MAIL_PUBLISH_DONE, /* publish `id` (cookie) finished: ok, text = message */
    WSB_MAIL_CONNECTOR,    /* connector state changed (text = connector name) */
    WSB_MAIL_DRAIN,        /* stop accepting, close every session with 1001 */
    WSB_MAIL_RELOAD,       /* a new runtime is current: re-check sessions */
    WSB_MAIL_STOP,         /* leave the event loop */
};

struct wsb_mail_block;

struct wsb_mail {
    struct wsb_mail *next;
    enum wsb_mail_type type;
    bool ok;
    uint64_t id;
    struct wsb_msg *msg;          /* owned reference */
    char *text;                   /* owned */
    char *text2;                  /* owned */
    struct wsb_mail_block *block; /* the block it was taken from, NULL when allocated alone */
};

struct wsb_mailbox;

typedef void (*wsb_mailbox_cb)(void *ctx, struct wsb_mail *mail);

/** Creates a mailbox on `base`; `cb` runs on the loop for each mail and owns it (free with
 * wsb_mail_free). MESSAGE, RESYNC, FAILED and STOPPED mails (the ones the hand-off gate paces) are
 * handed over in their order per source, and the others in theirs; at each wake-up the
 * others come first, and they are never held by the gate. @locality loop (creation) */
struct wsb_mailbox *wsb_mailbox_new(struct event_base *base, wsb_mailbox_cb cb, void *ctx);
/** Frees pending mails too. Call after the loop stopped. */
void wsb_mailbox_free(struct wsb_mailbox *mb);

/** Posts a mail (takes ownership); never blocks on the consumer. Returns 0.
 * @locality any */
int wsb_mailbox_post(struct wsb_mailbox *mb, struct wsb_mail *mail);
/** Appends the `n` mails linked from `head` to `tail` (through next), all of one kind (gated
 * like the first: the sink posts records), in order, with one lock
 * and at most one wake. Returns 0. @locality any */
int wsb_mailbox_post_list(struct wsb_mailbox *mb, struct wsb_mail *head, struct wsb_mail *tail,
                          size_t n);

/** Allocates a mail; text/text2 copied when non-NULL; msg reference taken over. NULL on OOM. */
struct wsb_mail *wsb_mail_new(enum wsb_mail_type type, uint64_t id, struct wsb_msg *msg,
                              const char *text, const char *text2, bool ok);
void wsb_mail_free(struct wsb_mail *mail);

/** Mails in one allocation (a connector burst's records for one loop): up to `n` mails taken
 * with wsb_mail_block_take, then wsb_mail_block_seal; the block is freed with the last of its
 * mails freed (or at the seal when none was taken). Every mail of a block must go to the same
 * consumer in one wsb_mailbox_post_list, after the seal (the count is then the consumer's
 * alone). NULL on OOM. @locality any (one thread until the seal) */
struct wsb_mail_block *wsb_mail_block_new(size_t n);
/** A MESSAGE mail for `id` carrying `msg` (reference taken over), NULL when the block is
 * full. */
struct wsb_mail *wsb_mail_block_take(struct wsb_mail_block *b, uint64_t id, struct wsb_msg *msg);
void wsb_mail_block_seal(struct wsb_mail_block *b);

/** Installs the hand-off gate: `open(ctx, source)` is asked before a MESSAGE, RESYNC, FAILED
 * or STOPPED mail (`id` is its source) is handed to the callback; when it answers false that
 * mail, and every later one of the same source, is put aside in the source's own queue, in
 * order, while the mails of other sources go on being handed over. The queues put aside are
 * asked again at wsb_mailbox_kick and handed over (their source's mails first) once open:
 * per source, the order of the mails is the order they were posted in. Each mail is moved
 * at most twice, so a drain is O(mails). @locality loop */
void wsb_mailbox_set_gate(struct wsb_mailbox *mb, bool (*open)(void *ctx, uint64_t source));
/** Asks the gate again about the sources put aside (no-op when none is). @locality loop */
void wsb_mailbox_kick(struct wsb_mailbox *mb);
/** True while the mails of some source are put aside. @locality loop */
bool wsb_mailbox_held(const struct wsb_mailbox *mb);
/** The number of sources whose mails are put aside (tests). @locality loop */
size_t wsb_mailbox_held_sources(const struct wsb_mailbox *mb);

/** Number of mails waiting (approximate; for metrics). */
uint64_t wsb_mailbox_depth(struct wsb_mailbox *mb);

#endif
