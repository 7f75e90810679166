/* Records lost at the broker: a consumer whose position fell out of its partition's retained
 * range ("offset out of range") is reset by librdkafka (auto.offset.reset) past records it
 * never read, and librdkafka says so only in a warning of facility OFFSET. This module reads
 * those warnings and judges each against the next record read from its partition: the offset
 * of that record minus the position that was out of range is the number of records skipped.
 *
 * Ordinary offset holes (compacted topics, transaction markers, aborted transactions) come
 * with no reset and are never counted: only a noted reset makes a jump count. */
#ifndef WSB_CONNECTORS_KAFKA_RESET_H
#define WSB_CONNECTORS_KAFKA_RESET_H

#include <stdbool.h>
#include <stdint.h>

#define WSB_KRESET_TOPIC_MAX 255 /* Kafka topic names have at most 249 characters */

/** One offset reset, as librdkafka logged it. */
struct wsb_kreset_note {
    char topic[WSB_KRESET_TOPIC_MAX + 1];
    int32_t partition;
    int64_t at; /* the position that was out of range: the next offset the consumer expected */
};

/** Reads librdkafka's log line `buf` of facility `fac` at syslog `level`: true when it is a
 * reset after an error, "[thrd:NAME]: TOPIC [P]: offset reset (at offset N, broker B) to ...:
 * REASON: ERR" (librdkafka 2.0, the thread prefix optional; later versions write "(at offset
 * N (leader epoch E), broker B)"), with a
 * numeric N; *out then holds it. Resets without an error (a first position looked up, a
 * logical start offset) are logged at debug level and are not losses: false.
 * Pure. @locality any */
bool wsb_kreset_parse(int level, const char *fac, const char *buf, struct wsb_kreset_note *out);

/** The resets noted and not judged yet, of one connector's consumers. */
struct wsb_kresets;

/** NULL on allocation failure. */
struct wsb_kresets *wsb_kresets_new(void);
void wsb_kresets_free(struct wsb_kresets *t);

/** Notes a reset of (topic, partition) of consumer `client` (any pointer naming it). A second
 * reset of the same partition before a record was read keeps the first position. At most 256
 * notes are kept (the oldest go first). @locality any (librdkafka's threads) */
void wsb_kresets_note(struct wsb_kresets *t, const void *client, const struct wsb_kreset_note *n);

/** Judges the record at `offset` of (topic, partition) read by `client`. With a noted reset
 * of that partition and `offset` at or past its position, the note is spent and the result is
 * the number of records skipped, `offset` - position (0 when none were). A record before the
 * position was fetched before the reset: the note stays. Without a note the result is 0, an
 * atomic load when there is none at all. @locality the thread reading `client`'s records */
uint64_t wsb_kresets_check(struct wsb_kresets *t, const void *client, const char *topic,
                           int32_t partition, int64_t offset);

/** Forgets the notes of `client` for `topic` (every topic when NULL): it stopped reading
 * them. @locality any */
void wsb_kresets_forget(struct wsb_kresets *t, const void *client, const char *topic);

/** Notes waiting (tests). @locality any */
unsigned wsb_kresets_pending(struct wsb_kresets *t);

#endif
