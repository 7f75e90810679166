/* The "kafka" connector: librdkafka consumers by assignment, one producer, one thread. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "connectors/cbase.h"
#include "connectors/kafka.h"
#include "connectors/kafka_format.h"
#include "connectors/kafka_group.h"
#include "connectors/kafka_reset.h"
#include "util/log.h"

/* Handle 0 is shared by every source whose topic it does not read yet; a source whose topic
 * is already read there (a resume from offsets next to the live reader) gets an extra handle.
 * Each extra handle is a full consumer instance (threads, one connection per broker), so
 * their number is capped.
 *
 * The connector thread never waits on the broker for one source while others wait for it:
 * the lookups a subscribe needs (metadata, watermarks, offsets for times, reading a last
 * record) run on a small pool of lookup threads with a client of their own (`lookup`, which
 * never fetches, so its requests never queue behind a consumer's long-polling fetch on the
 * same broker connection) and post their result back; extra handles are destroyed on that
 * pool too; the readiness probe has its own thread. What is left on the connector thread
 * (assign and unassign, which librdkafka answers from memory, producing, consuming) does not
 * wait on the network. */
#define MAX_HANDLES 9
#define LOOKUP_THREADS 8          /* lookups in flight at once (a leaderless partition holds one) */
#define CONSUME_BATCH 1000        /* messages per handle per loop turn */
#define HEALTH_INTERVAL_MS 1500   /* metadata probe period */
#define HEALTH_TIMEOUT_MS 1000    /* metadata probe timeout */
#define REFRESH_INTERVAL_MS 30000 /* look for partitions added to read topics */
#define SUBSCRIBE_TIMEOUT_MS 5000 /* metadata and offset lookups of a subscribe */
#define VERIFY_TIMEOUT_MS 2000    /* reading the last records to check a lookup by time */
#define LOOKUP_SLICE_MS 500       /* lookups wait in slices, so a stop never waits one out */
#define MAX_STACK_HEADERS 32

struct source {
    struct source *next;
    uint64_t id;
    char *topic;
    enum wsb_format value_format, key_format;
    int handle;                             /* -1 while its lookup runs */
    rd_kafka_topic_partition_list_t *parts; /* what it has assigned; NULL while pending */
    bool refreshing;                        /* a partition refresh job is out */
    /* from {timestamp} when the broker's lookup by time was found wrong: these partitions
     * start at their low watermark and drop records older than filter_ts until the first
     * one at or after it (see check_end_answers). */
    int64_t filter_ts;
    int32_t *filtering;
    int nfiltering;
};

struct handle {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue; /* the consumer queue, with the IO event on the cmdq's fd */
    int nsources;
};

/* Work for the lookup pool. A resolve or refresh job comes back to the connector thread
 * through kc.done with its result. */
enum job_kind { JOB_RESOLVE, JOB_REFRESH, JOB_CLOSE };

struct job {
    struct job *next;
    enum job_kind kind;
    uint64_t id;         /* the source */
    struct wsb_cmd *cmd; /* resolve: the subscribe command */
    char *topic;         /* refresh */
    int known;           /* refresh: partitions the source has */
    rd_kafka_t *rk;      /* close: the consumer to destroy */
    /* Results. */
    bool ok;
    const char *code; /* wire error code on failure */
    char err[512];
    rd_kafka_topic_partition_list_t *parts; /* resolve: start offsets; refresh: added ones */
    int32_t *filtering;
    int nfiltering;
};

struct kc {
    struct wsb_cbase base; /* first: the shared vtable entries take a struct kc as it; its
                              queue's fd also wakes the thread for librdkafka's queues */
    char name[64];
    struct wsb_sink sink;
    rd_kafka_conf_t *consumer_conf; /* templates, duplicated for each handle */
    rd_kafka_conf_t *producer_conf;
    struct wsb_kgroups *groups; /* delivery: ack sources (kafka_group.c) */
    struct wsb_kgroups_stats groups_stats;

    atomic_bool halting; /* stopping: lookups give up at their next slice */

    struct wsb_kfmt *fmt; /* value_format / key_format: Avro through the schema registry */
    bool started;

    /* Records lost at the broker (kafka_reset.h): the handles' offset resets, noted by their
     * log callback, judged by deliver(). */
    struct wsb_kresets *resets;
    atomic_uint_fast64_t records_lost;
    int log_level; /* the user's librdkafka log_level: what on_handle_log passes on */

    rd_kafka_t *lookup; /* a client that never fetches: metadata, offsets, the probe */

    /* The lookup pool. */
    pthread_mutex_t pool_lock; /* guards todo, done, pool_stop */
    pthread_cond_t pool_cond;
    struct job *todo, *todo_tail, *done;
    bool pool_stop;
    pthread_t workers[LOOKUP_THREADS];
    int nworkers;

    /* The readiness probe's thread. */
    pthread_mutex_t probe_lock; /* guards probe_stop; serializes state changes */
    pthread_cond_t probe_cond;
    bool probe_stop;
    pthread_t prober;
    bool probe_started;
    bool state_known;
    int probe_timeouts; /* consecutive probes that timed out; probe thread only */
    bool sink_closed;   /* stop finished: the sink is never called again */

    /* Thread-owned. */
    rd_kafka_t *producer;
    rd_kafka_queue_t *producer_queue;
    struct handle handles[MAX_HANDLES];
    struct source *sources;
    int64_t next_refresh_ms;
    const rd_kafka_topic_t *cache_rkt; /* last (topic, partition) → source lookup */
    int32_t cache_partition;
    int cache_handle;
    struct source *cache_source;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Readiness and librdkafka callbacks ---------------------------------------------- */

/* Called by the probe's thread and (on_error) the connector thread; probe_lock orders the
 * transitions and the sink calls. */
static void set_state(struct kc *k, bool up, const char *reason)
{
    pthread_mutex_lock(&k->probe_lock);
    bool was = wsb_cbase_set_up(&k->base, up, reason);
    if (!k->state_known || was != up) {
        k->state_known = true;
        /* The core logs the transition it receives; this line is for debugging the probe. */
        wsb_log(WSB_LOG_DEBUG, up ? "kafka up" : "kafka down", WSB_LSTR("connector", k->name),
                WSB_LSTR("reason", up ? NULL : reason));
        if (!k->sink_closed)
            k->sink.state(k->sink.ctx, k->name, up, up ? NULL : reason);
    }
    pthread_mutex_unlock(&k->probe_lock);
}

/* Served by rd_kafka_poll / consumer_poll, so on the connector thread. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kc *k = opaque;
    WSB_UNUSED(rk);
    /* Connection trouble is already in librdkafka's own log lines and in the readiness
     * state; only other errors are worth a warning of their own. */
    bool transient = err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE ||
                     err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN;
    wsb_log(transient ? WSB_LOG_DEBUG : WSB_LOG_WARN, "kafka error", WSB_LSTR("connector", k->name),
            WSB_LSTR("error", rd_kafka_err2name(err)), WSB_LSTR("reason", reason));
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__FATAL) {
        char r[256];
        snprintf(r, sizeof(r), "kafka: %s", reason);
        set_state(k, false, r);
    }
}

/* May run on librdkafka's internal threads; wsb_log is thread-safe. librdkafka logs broker
 * connection failures at LOG_ERR; they are warnings here (readiness reports the outage). */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    enum wsb_log_level l = level <= 2   ? WSB_LOG_ERROR
                           : level <= 4 ? WSB_LOG_WARN
                           : level <= 6 ? WSB_LOG_INFO
                                        : WSB_LOG_DEBUG;
    if (!wsb_log_enabled(l))
        return;
    wsb_log(l, "librdkafka", WSB_LSTR("client", rd_kafka_name(rk)), WSB_LSTR("facility", fac),
            WSB_LSTR("detail", buf));
}

/* The consumer handles' log callback. An offset reset after an error ("offset out of range")
 * is noted for deliver(): librdkafka logs it on its own thread before it even asks for the new
 * position, so the note is in before any record read after the reset reaches deliver(). */
static void on_handle_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct kc *k = rd_kafka_opaque(rk);
    struct wsb_kreset_note n;
    if (wsb_kreset_parse(level, fac, buf, &n))
        wsb_kresets_note(k->resets, rk, &n);
    if (level <= k->log_level)
        on_log(rk, level, fac, buf);
}

/* Delivery reports: served by rd_kafka_poll/flush on the connector thread. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kc *k = opaque;
    WSB_UNUSED(rk);
    uint64_t cookie = (uint64_t)(uintptr_t)m->_private;
    if (k->sink_closed)
        return;
    if (m->err)
        k->sink.publish_done(k->sink.ctx, cookie, false, rd_kafka_err2str(m->err));
    else
        k->sink.publish_done(k->sink.ctx, cookie, true, NULL);
}

/* A probe that only timed out does not take an up connector down: a stall of this process
 * or of the machine (a GC-like pause, a loaded CI host) longer than HEALTH_TIMEOUT_MS makes
 * one probe late while the brokers are fine. Two in a row do (an unresponsive cluster is
 * then down about HEALTH_INTERVAL_MS + 2 x HEALTH_TIMEOUT_MS after it stopped answering);
 * any other failure, and librdkafka's all-brokers-down (on_error), count at once. */
#define HEALTH_TIMEOUTS_DOWN 2

static void health_check(struct kc *k)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(k->lookup, 0, NULL, &md, HEALTH_TIMEOUT_MS);
    bool ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
    k->probe_timeouts = err == RD_KAFKA_RESP_ERR__TIMED_OUT ? k->probe_timeouts + 1 : 0;
    if (ok) {
        set_state(k, true, NULL);
    } else if (err == RD_KAFKA_RESP_ERR__TIMED_OUT && k->probe_timeouts < HEALTH_TIMEOUTS_DOWN &&
               atomic_load(&k->base.up)) {
        wsb_log(WSB_LOG_DEBUG, "kafka probe timed out", WSB_LSTR("connector", k->name));
    } else {
        char r[256];
        snprintf(r, sizeof(r), "kafka: brokers unreachable (%s)", rd_kafka_err2str(err));
        set_state(k, false, r);
    }
    if (md)
        rd_kafka_metadata_destroy(md);
}

/* The probe's thread: a metadata request every HEALTH_INTERVAL_MS, off the connector thread
 * (a probe against an unreachable cluster waits its whole timeout). */
static void *probe_run(void *arg)
{
    struct kc *k = arg;
    pthread_mutex_lock(&k->probe_lock);
    while (!k->probe_stop) {
        pthread_mutex_unlock(&k->probe_lock);
        health_check(k);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HEALTH_INTERVAL_MS / 1000;
        until.tv_nsec += (long)(HEALTH_INTERVAL_MS % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&k->probe_lock);
        while (!k->probe_stop &&
               pthread_cond_timedwait(&k->probe_cond, &k->probe_lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&k->probe_lock);
    return NULL;
}

/* ---- Configuration ------------------------------------------------------------------- */

/* Sets one property; on failure writes "KEY: why" to err. */
static bool conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err,
                     size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, key, val, why, sizeof(why)) == RD_KAFKA_CONF_OK)
        return true;
    if (snprintf(err, errlen, "%s: %s", key, why) >= (int)errlen)
        err[errlen - 1] = '\0'; /* a cut reason is fine */
    return false;
}

/* Consumer properties a user is likely to set; librdkafka warns when a producer gets them. */
static bool consumer_only(const char *key)
{
    static const char *const names[] = {"group.id",
                                        "auto.offset.reset",
                                        "isolation.level",
                                        "queued.min.messages",
                                        "queued.max.messages.kbytes",
                                        "max.partition.fetch.bytes",
                                        "check.crcs",
                                        "session.timeout.ms",
                                        "heartbeat.interval.ms",
                                        "max.poll.interval.ms",
                                        "partition.assignment.strategy",
                                        NULL};
    if (strncmp(key, "fetch.", 6) == 0)
        return true;
    for (size_t i = 0; names[i]; i++)
        if (strcmp(key, names[i]) == 0)
            return true;
    return false;
}

/* Builds a client configuration from the connector config. `consumer` adds the assign-only
 * consumer defaults. User properties go first so that the settings the connector's
 * semantics depend on win. */
static rd_kafka_conf_t *build_conf(struct kc *k, const json_t *conf, bool consumer, char *err,
                                   size_t errlen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    char client_id[128];
    const char *key;
    json_t *v;
    json_t *props = json_object_get(conf, "properties");
    json_t *cid = json_object_get(conf, "client_id");

    snprintf(client_id, sizeof(client_id), "%s",
             json_is_string(cid) ? json_string_value(cid) : "wsbridge");
    rd_kafka_conf_set_log_cb(c, on_log);
    if (!conf_set(c, "client.id", client_id, err, errlen) ||
        !conf_set(c, "bootstrap.servers", json_string_value(json_object_get(conf, "brokers")), err,
                  errlen))
        goto fail;
    if (consumer) {
        if (!conf_set(c, "auto.offset.reset", "earliest", err, errlen))
            goto fail;
    } else {
        if (!conf_set(c, "acks", "all", err, errlen) ||
            !conf_set(c, "enable.idempotence", "true", err, errlen))
            goto fail;
    }
    json_object_foreach(props, key, v)
    {
        if (!consumer && consumer_only(key))
            continue; /* the producer would warn */
        if (!conf_set(c, key, json_string_value(v), err, errlen))
            goto fail;
    }
    if (consumer) {
        /* librdkafka needs a group.id for assign(); assign-only consumers never join it
         * and never commit. */
        char gid[160];
        snprintf(gid, sizeof(gid), "wsbridge.assign.%s", k->name);
        if (!json_object_get(props, "group.id") && !conf_set(c, "group.id", gid, err, errlen))
            goto fail;
        if (!conf_set(c, "enable.auto.commit", "false", err, errlen) ||
            !conf_set(c, "enable.auto.offset.store", "false", err, errlen) ||
            !conf_set(c, "enable.partition.eof", "false", err, errlen))
            goto fail;
    }
    rd_kafka_conf_set_opaque(c, k);
    rd_kafka_conf_set_error_cb(c, on_error);
    if (!consumer)
        rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    return c;

fail:
    rd_kafka_conf_destroy(c);
    return NULL;
}

static int check_config(const json_t *conf,
                        void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    int problems = 0;
    char path[300], msg[300];
    const char *key;
    json_t *v;
    if (!json_is_object(conf)) {
        report(ctx, "", "must be an object");
        return 1;
    }
    json_t *brokers = json_object_get(conf, "brokers");
    if (!brokers) {
        report(ctx, ".brokers", "required (\"host:port,...\")");
        problems++;
    }
    json_object_foreach((json_t *)conf, key, v)
    {
        snprintf(path, sizeof(path), ".%s", key);
        if (strcmp(key, "type") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "kafka") != 0) {
                report(ctx, path, "must be \"kafka\"");
                problems++;
            }
        } else if (strcmp(key, "brokers") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                report(ctx, path, "must be a non-empty string (\"host:port,...\")");
                problems++;
            }
        } else if (strcmp(key, "schema_registry") == 0) {
            problems += wsb_kfmt_check_config(v, report, ctx);
        } else if (strcmp(key, "client_id") == 0) {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                report(ctx, path, "must be a non-empty string");
                problems++;
            }
        } else if (strcmp(key, "properties") == 0) {
            if (!json_is_object(v)) {
                report(ctx, path, "must be an object of librdkafka properties");
                problems++;
                continue;
            }
            /* Each property is tried on a scratch configuration so that unknown names and
             * bad values are caught at load time. */
            rd_kafka_conf_t *scratch = rd_kafka_conf_new();
            const char *pkey;
            json_t *pv;
            json_object_foreach(v, pkey, pv)
            {
                snprintf(path, sizeof(path), ".properties.%s", pkey);
                if (!json_is_string(pv)) {
                    report(ctx, path, "must be a string");
                    problems++;
                    continue;
                }
                if (strcmp(pkey, "bootstrap.servers") == 0 || strcmp(pkey, "client.id") == 0) {
                    report(ctx, path, "set \"brokers\" / \"client_id\" instead");
                    problems++;
                    continue;
                }
                char why[256];
                if (rd_kafka_conf_set(scratch, pkey, json_string_value(pv), why, sizeof(why)) !=
                    RD_KAFKA_CONF_OK) {
                    snprintf(msg, sizeof(msg), "rejected by librdkafka: %s", why);
                    report(ctx, path, msg);
                    problems++;
                }
            }
            rd_kafka_conf_destroy(scratch);
        } else {
            report(ctx, path, "unknown key");
            problems++;
        }
    }
    return problems;
}

static int check_channel(const json_t *channel,
                         void (*report)(void *ctx, const char *path, const char *msg), void *ctx)
{
    static const char *const optional[] = {"group", "dead_letter_topic", NULL};
    return wsb_connector_check_topic_channel(channel, "kafka", optional, report, ctx);
}

/* ---- Sources ------------------------------------------------------------------------- */

static struct source *source_find(struct kc *k, uint64_t id, struct source ***prev)
{
    for (struct source **pp = &k->sources; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            if (prev)
                *prev = pp;
            return *pp;
        }
    return NULL;
}

static bool handle_reads(const struct kc *k, int h, const char *topic)
{
    for (const struct source *s = k->sources; s; s = s->next)
        if (s->handle == h && strcmp(s->topic, topic) == 0) /* pending ones have -1 */
            return true;
    return false;
}

/* Opens consumer handle `h` if needed. Returns false with a reason in err. */
static bool handle_open(struct kc *k, int h, char *err, size_t errlen)
{
    struct handle *hd = &k->handles[h];
    if (hd->rk)
        return true;
    rd_kafka_conf_t *c = rd_kafka_conf_dup(k->consumer_conf);
    char why[256];
    /* Offset resets are seen in the log (on_handle_log): its warnings must be logged, and at
     * once (a log queue would hold them until served). */
    rd_kafka_conf_set_log_cb(c, on_handle_log);
    if (!conf_set(c, "log.queue", "false", why, sizeof(why)) ||
        (k->log_level < 4 && !conf_set(c, "log_level", "4", why, sizeof(why)))) {
        rd_kafka_conf_destroy(c);
        snprintf(err, errlen, "kafka consumer: %s", why);
        return false;
    }
    hd->rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why));
    if (!hd->rk) {
        rd_kafka_conf_destroy(c);
        snprintf(err, errlen, "kafka consumer: %s", why);
        return false;
    }
    rd_kafka_poll_set_consumer(hd->rk); /* errors and logs come through the consumer queue */
    hd->queue = rd_kafka_queue_get_consumer(hd->rk);
    rd_kafka_queue_io_event_enable(hd->queue, wsb_cmdq_fd(k->base.q), &WSB_CMDQ_WAKE_PAYLOAD,
                                   sizeof(WSB_CMDQ_WAKE_PAYLOAD));
    return true;
}

static void pool_post(struct kc *k, struct job *j);

/* Detaches consumer handle h; its client is destroyed on the lookup pool (destroying a
 * consumer waits for its in-flight fetches), or here when the pool is gone. It is
 * assign-only: no group to leave, nothing to commit, so no consumer close. */
static void handle_close(struct kc *k, int h)
{
    struct handle *hd = &k->handles[h];
    if (!hd->rk)
        return;
    rd_kafka_queue_io_event_enable(hd->queue, -1, NULL, 0);
    rd_kafka_queue_destroy(hd->queue);
    wsb_kresets_forget(k->resets, hd->rk, NULL);
    struct job *j = k->nworkers && !k->pool_stop ? calloc(1, sizeof(*j)) : NULL;
    if (j) {
        j->kind = JOB_CLOSE;
        j->rk = hd->rk;
        pool_post(k, j);
    } else {
        rd_kafka_destroy_flags(hd->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    hd->rk = NULL;
    hd->queue = NULL;
    if (k->cache_handle == h)
        k->cache_rkt = NULL;
}

/* The next wait of a lookup that must end by `deadline`: at most LOOKUP_SLICE_MS; 0 when the
 * time is up or the connector stops (a stop must not wait a lookup out: SPEC §8's exit within
 * drain_timeout_ms). */
static int lookup_slice(struct kc *k, int64_t deadline)
{
    int64_t left = deadline - mono_ms();
    if (left <= 0 || atomic_load(&k->halting))
        return 0;
    return left < LOOKUP_SLICE_MS ? (int)left : LOOKUP_SLICE_MS;
}

/* Low (-2), high (-1) or by-time (T >= 0) offsets of every partition in `parts` (one
 * ListOffsets request per leader), on the lookup client, within SUBSCRIBE_TIMEOUT_MS.
 * Results land in parts->elems[i].offset. */
static rd_kafka_resp_err_t list_offsets(struct kc *k, rd_kafka_topic_partition_list_t *parts,
                                        int64_t which)
{
    int64_t deadline = mono_ms() + SUBSCRIBE_TIMEOUT_MS;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
    for (int slice; err == RD_KAFKA_RESP_ERR__TIMED_OUT && (slice = lookup_slice(k, deadline));) {
        for (int i = 0; i < parts->cnt; i++) {
            parts->elems[i].offset = which;
            parts->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        err = rd_kafka_offsets_for_times(k->lookup, parts, slice);
    }
    if (err)
        return err;
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].err)
            return parts->elems[i].err;
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* The timestamp of the record at offset `check->elems[i].offset` (or, should that one be
 * gone, the next one) of every partition in `check`, into stamps[i]; -1 for those not read
 * within VERIFY_TIMEOUT_MS, INT64_MIN for a record without one. A short-lived assign-only consumer
 * reads them, so the handles' queues and assignments are left alone; it gets no error callback (its
 * trouble must not flip the connector's readiness) and is destroyed without a consumer close (it
 * never joined a group). Runs on the connector thread, bounded by the timeout. */
static void read_timestamps(struct kc *k, const rd_kafka_topic_partition_list_t *check,
                            int64_t *stamps)
{
    char why[256];
    int missing = check->cnt;
    rd_kafka_t *rk = NULL;
    for (int i = 0; i < check->cnt; i++)
        stamps[i] = -1;
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(k->consumer_conf);
    rd_kafka_conf_set_error_cb(conf, NULL);
    if (!conf_set(conf, "auto.offset.reset", "latest", why, sizeof(why)) ||
        !conf_set(conf, "fetch.wait.max.ms", "100", why, sizeof(why))) {
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why)))) {
        rd_kafka_conf_destroy(conf);
        goto done;
    }
    rd_kafka_resp_err_t ae = rd_kafka_assign(rk, check);
    if (ae) {
        snprintf(why, sizeof(why), "assign: %s", rd_kafka_err2str(ae));
        goto done;
    }
    int64_t deadline = mono_ms() + VERIFY_TIMEOUT_MS;
    for (int slice; missing > 0 && (slice = lookup_slice(k, deadline));) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, slice);
        if (!rkm)
            continue;
        for (int i = 0; i < check->cnt && !rkm->err; i++) {
            if (check->elems[i].partition != rkm->partition || stamps[i] != -1 ||
                rkm->offset < check->elems[i].offset)
                continue;
            int64_t ts = rd_kafka_message_timestamp(rkm, NULL);
            stamps[i] = ts < 0 ? INT64_MIN : ts; /* no timestamp: older than any T */
            missing--;
        }
        rd_kafka_message_destroy(rkm);
    }
    snprintf(why, sizeof(why), "timed out");

done:
    if (missing > 0)
        wsb_log(WSB_LOG_WARN, "kafka lookup by time left unchecked", WSB_LSTR("connector", k->name),
                WSB_LSTR("topic", check->elems[0].topic), WSB_LINT("unread", missing),
                WSB_LSTR("reason", why));
    if (rk)
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* librdkafka 2.0.2's mock cluster (and possibly other Kafka-compatible brokers) answers -1,
 * "no record at or after T", to every lookup by time. For each partition in `parts` so
 * answered that is not empty, its last record tells whether the answer can be right: when
 * that record is at or after T it cannot, and the partition starts at its low watermark in
 * filter mode instead, its number added to filtering[*nfiltering]. A last record that cannot
 * be read in time leaves the broker's answer (the end) in place. Real Kafka answers -1 only
 * when T is after every record; the check then confirms it, at the cost of one read. */
static void check_end_answers(struct kc *k, const struct wsb_cmd *c, int64_t t,
                              rd_kafka_topic_partition_list_t *parts,
                              const rd_kafka_topic_partition_list_t *lo,
                              const rd_kafka_topic_partition_list_t *hi,
                              const rd_kafka_topic_partition_list_t *ts, int32_t *filtering,
                              int *nfiltering)
{
    rd_kafka_topic_partition_list_t *check = rd_kafka_topic_partition_list_new(parts->cnt);
    int64_t *stamps = malloc((size_t)parts->cnt * sizeof(*stamps));
    if (!stamps)
        goto done;
    for (int i = 0; i < parts->cnt; i++)
        if (ts->elems[i].offset == RD_KAFKA_OFFSET_END && hi->elems[i].offset > lo->elems[i].offset)
            rd_kafka_topic_partition_list_add(check, wsb_connector_field(c->src.fields, "topic"),
                                              parts->elems[i].partition)
                ->offset = hi->elems[i].offset - 1;
    if (!check->cnt)
        goto done;
    read_timestamps(k, check, stamps);
    for (int j = 0; j < check->cnt; j++) {
        if (stamps[j] < t)
            continue; /* unread, or the broker was right */
        for (int i = 0; i < parts->cnt; i++) {
            if (parts->elems[i].partition != check->elems[j].partition)
                continue;
            parts->elems[i].offset = lo->elems[i].offset;
            filtering[(*nfiltering)++] = parts->elems[i].partition;
        }
    }
    if (*nfiltering)
        wsb_log(WSB_LOG_INFO, "kafka lookup by time answered the end before later records",
                WSB_LSTR("connector", k->name),
                WSB_LSTR("topic", wsb_connector_field(c->src.fields, "topic")),
                WSB_LINT("filtered", *nfiltering));

done:
    free(stamps);
    rd_kafka_topic_partition_list_destroy(check);
}

/* Resolves the start offset of every partition of the source's topic into `parts`. For
 * {timestamp}, *filtering (NULL when none) gets the partitions whose records older than T
 * must be dropped, see check_end_answers. */
static bool resolve_start(struct kc *k, const struct wsb_cmd *c,
                          rd_kafka_topic_partition_list_t *parts, int32_t **filtering,
                          int *nfiltering, char *err, size_t errlen)
{
    int n = parts->cnt;
    const char *topic = wsb_connector_field(c->src.fields, "topic");
    int64_t t = c->src.from_timestamp_ms < 0 ? 0 : c->src.from_timestamp_ms;
    rd_kafka_topic_partition_list_t *lo = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_topic_partition_list_t *hi = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_topic_partition_list_t *ts = NULL;
    rd_kafka_resp_err_t e;
    bool ok = false;

    *filtering = NULL;
    *nfiltering = 0;
    /* latest needs only the high watermarks, earliest only the low ones: one round trip. */
    bool need_lo = c->src.from != WSB_FROM_LATEST, need_hi = c->src.from != WSB_FROM_EARLIEST;
    if ((need_lo && (e = list_offsets(k, lo, RD_KAFKA_OFFSET_BEGINNING))) ||
        (need_hi && (e = list_offsets(k, hi, RD_KAFKA_OFFSET_END)))) {
        snprintf(err, errlen, "offsets of %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!need_lo)
            lo->elems[i].offset = hi->elems[i].offset;
        if (!need_hi)
            hi->elems[i].offset = lo->elems[i].offset;
    }
    if (c->src.from == WSB_FROM_TIMESTAMP) {
        ts = rd_kafka_topic_partition_list_copy(parts);
        if ((e = list_offsets(k, ts, t))) {
            snprintf(err, errlen, "offsets for time on %s: %s", topic, rd_kafka_err2str(e));
            goto done;
        }
    }
    for (int i = 0; i < n; i++) {
        int64_t l = lo->elems[i].offset, h = hi->elems[i].offset, o = h;
        switch (c->src.from) {
        case WSB_FROM_LATEST: o = h; break;
        case WSB_FROM_EARLIEST: o = l; break;
        case WSB_FROM_TIMESTAMP: o = ts->elems[i].offset < 0 ? h : ts->elems[i].offset; break;
        case WSB_FROM_OFFSETS:
            /* A partition the client did not name starts at latest. */
            for (size_t j = 0; j < c->src.nfrom_offsets; j++)
                if (c->src.from_offsets[j].partition == parts->elems[i].partition)
                    o = c->src.from_offsets[j].offset;
            break;
        }
        if (o < l)
            o = l;
        if (o > h)
            o = h;
        parts->elems[i].offset = o;
    }
    if (c->src.from == WSB_FROM_TIMESTAMP) {
        if (!(*filtering = malloc((size_t)n * sizeof(**filtering)))) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        check_end_answers(k, c, t, parts, lo, hi, ts, *filtering, nfiltering);
        if (!*nfiltering) {
            free(*filtering);
            *filtering = NULL;
        }
    }
    ok = true;

done:
    rd_kafka_topic_partition_list_destroy(lo);
    rd_kafka_topic_partition_list_destroy(hi);
    if (ts)
        rd_kafka_topic_partition_list_destroy(ts);
    return ok;
}

/* The partitions of `topic` per broker metadata, or NULL with a reason (and a wire code). */
static rd_kafka_topic_partition_list_t *
topic_partitions(struct kc *k, const char *topic, const char **code, char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->lookup, topic, NULL);
    *code = "unavailable";
    if (!rkt) {
        snprintf(err, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return NULL;
    }
    int64_t deadline = mono_ms() + SUBSCRIBE_TIMEOUT_MS;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    for (int slice; e == RD_KAFKA_RESP_ERR__TIMED_OUT && (slice = lookup_slice(k, deadline));)
        e = rd_kafka_metadata(k->lookup, 0, rkt, &md, slice);
    if (e) {
        snprintf(err, errlen, "metadata of %s: %s", topic, rd_kafka_err2str(e));
        goto done;
    }
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            *code = "unknown_channel";
        snprintf(err, errlen, "topic %s: %s", topic, e ? rd_kafka_err2str(e) : "no partitions");
        goto done;
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id);

done:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return parts;
}

/* {"0":12,"1":40} */
static char *positions_json(const rd_kafka_topic_partition_list_t *parts)
{
    size_t cap = 4 + (size_t)parts->cnt * 36;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t len = 0;
    s[len++] = '{';
    for (int i = 0; i < parts->cnt; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"%" PRId32 "\":%" PRId64, i ? "," : "",
                                parts->elems[i].partition, parts->elems[i].offset);
    snprintf(s + len, cap - len, "}");
    return s;
}

static void source_free(struct source *s);

/* Queues the lookups of a subscribe on the pool; the source waits as pending (handle -1)
 * until finish_subscribe. Takes `c` (returns true) unless it answered at once. */
static bool do_subscribe(struct kc *k, struct wsb_cmd *c)
{
    if (c->src.ack) {
        /* A member of the group consumer of `group` (kafka_group.c). */
        wsb_kgroups_subscribe(k->groups, c);
        return false;
    }
    if (source_find(k, c->id, NULL)) {
        k->sink.source_failed(k->sink.ctx, c->id, "unavailable", "source already subscribed");
        return false;
    }
    struct source *s = calloc(1, sizeof(*s));
    struct job *j = calloc(1, sizeof(*j));
    if (s)
        s->topic = strdup(wsb_connector_field(c->src.fields, "topic"));
    if (!s || !j || !s->topic) {
        if (s)
            free(s->topic);
        free(s);
        free(j);
        k->sink.source_failed(k->sink.ctx, c->id, "unavailable", "out of memory");
        return false;
    }
    s->id = c->id;
    s->value_format = c->src.value_format;
    s->key_format = c->src.key_format;
    s->handle = -1;
    s->next = k->sources;
    k->sources = s;
    j->kind = JOB_RESOLVE;
    j->id = c->id;
    j->cmd = c;
    pool_post(k, j);
    return true;
}

/* On the pool: the partitions of the topic and their start offsets. */
static void resolve(struct kc *k, struct job *j)
{
    const struct wsb_cmd *c = j->cmd;
    j->code = "unavailable";
    if (!(j->parts = topic_partitions(k, wsb_connector_field(c->src.fields, "topic"), &j->code,
                                      j->err, sizeof(j->err))))
        return;
    j->code = "unavailable";
    if (!resolve_start(k, c, j->parts, &j->filtering, &j->nfiltering, j->err, sizeof(j->err)))
        return;
    j->ok = true;
}

/* Back on the connector thread: assigns the resolved partitions on a handle that does not
 * read the topic yet and answers the core. */
static void finish_subscribe(struct kc *k, struct job *j)
{
    char err[512];
    const char *code = "unavailable";
    char *positions = NULL;
    struct source **pp;
    struct source *s = source_find(k, j->id, &pp);
    int h = 0;
    if (!s)
        return; /* unsubscribed meanwhile */
    if (!j->ok) {
        snprintf(err, sizeof(err), "%s", j->err);
        code = j->code ? j->code : "unavailable";
        goto fail;
    }
    for (h = 0; h < MAX_HANDLES; h++)
        if (!handle_reads(k, h, s->topic))
            break;
    if (h == MAX_HANDLES) {
        snprintf(err, sizeof(err), "too many concurrent readers of topic %s", s->topic);
        goto fail;
    }
    if (!handle_open(k, h, err, sizeof(err)))
        goto fail;
    rd_kafka_error_t *ae = rd_kafka_incremental_assign(k->handles[h].rk, j->parts);
    if (ae) {
        snprintf(err, sizeof(err), "assign %s: %s", s->topic, rd_kafka_error_string(ae));
        rd_kafka_error_destroy(ae);
        goto fail;
    }
    if (!(positions = positions_json(j->parts))) {
        /* Undo the assignment: nothing may be read for a source the core does not know. */
        rd_kafka_error_t *ue = rd_kafka_incremental_unassign(k->handles[h].rk, j->parts);
        if (ue)
            rd_kafka_error_destroy(ue);
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    s->handle = h;
    s->parts = j->parts;
    j->parts = NULL;
    s->filter_ts = j->cmd->src.from_timestamp_ms < 0 ? 0 : j->cmd->src.from_timestamp_ms;
    s->filtering = j->filtering;
    s->nfiltering = j->nfiltering;
    j->filtering = NULL;
    k->handles[h].nsources++;
    k->cache_rkt = NULL;
    wsb_log(WSB_LOG_DEBUG, "kafka source started", WSB_LSTR("connector", k->name),
            WSB_LUINT("source", s->id), WSB_LSTR("topic", s->topic), WSB_LINT("handle", h),
            WSB_LSTR("positions", positions));
    k->sink.source_started(k->sink.ctx, s->id, positions);
    free(positions);
    return;

fail:
    *pp = s->next;
    source_free(s);
    if (h > 0 && h < MAX_HANDLES && k->handles[h].nsources == 0)
        handle_close(k, h);
    wsb_log(WSB_LOG_WARN, "kafka subscribe failed", WSB_LSTR("connector", k->name),
            WSB_LUINT("source", j->id), WSB_LSTR("reason", err));
    k->sink.source_failed(k->sink.ctx, j->id, code, err);
}

static void source_free(struct source *s)
{
    if (s->parts)
        rd_kafka_topic_partition_list_destroy(s->parts);
    free(s->filtering);
    free(s->topic);
    free(s);
}

static void do_unsubscribe(struct kc *k, uint64_t id)
{
    if (wsb_kgroups_unsubscribe(k->groups, id))
        return;
    struct source **pp;
    struct source *s = source_find(k, id, &pp);
    if (!s)
        return;
    *pp = s->next;
    if (s->handle < 0) { /* still looking up: its job's result finds no source */
        source_free(s);
        return;
    }
    struct handle *hd = &k->handles[s->handle];
    /* Messages already fetched for these partitions are discarded by librdkafka; any that
     * still reach us find no source and are dropped. */
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(hd->rk, s->parts);
    if (e) {
        wsb_log(WSB_LOG_WARN, "kafka unassign failed", WSB_LSTR("connector", k->name),
                WSB_LSTR("reason", rd_kafka_error_string(e)));
        rd_kafka_error_destroy(e);
    }
    k->cache_rkt = NULL;
    wsb_kresets_forget(k->resets, hd->rk, s->topic);
    wsb_kfmt_forget(k->fmt, id);
    hd->nsources--;
    if (s->handle > 0 && hd->nsources == 0)
        handle_close(k, s->handle);
    source_free(s);
}

static void produce(void *ctx, const char *topic, const struct wsb_msg *m, uint64_t cookie)
{
    struct kc *k = ctx;
    rd_kafka_headers_t *hdrs = NULL;
    if (m->nheaders) {
        hdrs = rd_kafka_headers_new(m->nheaders);
        for (size_t i = 0; i < m->nheaders; i++)
            rd_kafka_header_add(hdrs, m->headers[i].name, -1, m->headers[i].value,
                                (ssize_t)m->headers[i].value_len);
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
        RD_KAFKA_V_VALUE((void *)m->payload, m->payload_len), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)cookie), RD_KAFKA_V_END);
    if (e) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs); /* not taken on failure */
        k->sink.publish_done(k->sink.ctx, cookie, false, rd_kafka_err2str(e));
    }
}

static void do_publish(struct kc *k, struct wsb_cmd *c)
{
    if (!wsb_kfmt_publish(k->fmt, &c->pub, c->msg, c->id)) /* Avro: encoded there */
        produce(k, wsb_connector_field(c->pub.fields, "topic"), c->msg, c->id);
}

/* The format stage dropped a source (records waited for a schema past the bound). */
static void drop_source(void *ctx, uint64_t source_id)
{
    do_unsubscribe(ctx, source_id);
}

static void wake_thread(void *ctx)
{
    struct kc *k = ctx;
    wsb_cmdq_wake(k->base.q);
}

/* ---- Consuming ----------------------------------------------------------------------- */

static struct source *owner_of(struct kc *k, int h, const rd_kafka_message_t *rkm)
{
    if (k->cache_rkt == rkm->rkt && k->cache_partition == rkm->partition && k->cache_handle == h)
        return k->cache_source;
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    for (struct source *s = k->sources; s; s = s->next) {
        if (s->handle != h || strcmp(s->topic, topic) != 0) /* pending ones have -1 */
            continue;
        for (int i = 0; i < s->parts->cnt; i++) {
            if (s->parts->elems[i].partition == rkm->partition) {
                k->cache_rkt = rkm->rkt;
                k->cache_partition = rkm->partition;
                k->cache_handle = h;
                k->cache_source = s;
                return s;
            }
        }
    }
    return NULL;
}

/* Filter mode (see check_end_answers): true when `rkm` is to be dropped. The first record of
 * the partition at or after filter_ts ends the filtering of that partition. */
static bool filtered(struct source *s, const rd_kafka_message_t *rkm, int64_t ts)
{
    for (int i = 0; i < s->nfiltering; i++) {
        if (s->filtering[i] != rkm->partition)
            continue;
        if (ts < s->filter_ts)
            return true;
        s->filtering[i] = s->filtering[--s->nfiltering];
        return false;
    }
    return false;
}

/* Hands `m` to the format stage or the sink, as deliver() does with a record. */
static void hand_over(struct kc *k, const struct source *s, bool formatted, struct wsb_msg *m)
{
    if (formatted)
        wsb_kfmt_message(k->fmt, s->id, s->value_format, s->key_format, s->topic, m);
    else if (k->sink.message_held)
        k->sink.message_held(k->sink.ctx, m); /* handed over by consume()'s flush */
    else
        k->sink.message(k->sink.ctx, m);
}

/* `lost` records before `rkm` were skipped by an offset reset (the broker no longer had
 * them): counted, logged, and a WSB_MSG_LOST marker in their place, so that every subscriber
 * gets a `gap` for them before `rkm`. */
static void hand_lost(struct kc *k, const struct source *s, bool formatted,
                      const rd_kafka_message_t *rkm, uint64_t lost)
{
    atomic_fetch_add(&k->records_lost, lost);
    wsb_log(WSB_LOG_WARN, "kafka records lost", WSB_LSTR("connector", k->name),
            WSB_LSTR("topic", s->topic), WSB_LINT("partition", rkm->partition),
            WSB_LINT("expected", rkm->offset - (int64_t)lost), WSB_LINT("offset", rkm->offset),
            WSB_LUINT("lost", lost),
            WSB_LSTR("reason", "consumer offset reset: records no longer on the broker"));
    if (!formatted && k->sink.skip && k->sink.skip(k->sink.ctx, s->id, rkm->partition, rkm->offset))
        return; /* nobody reads the source now */
    while (lost > 0) {
        struct wsb_msg *m = wsb_msg_lost(s->id, rkm->partition, rkm->offset, &lost);
        if (!m)
            return;
        hand_over(k, s, formatted, m);
    }
}

static void deliver(struct kc *k, int h, const rd_kafka_message_t *rkm)
{
    struct source *s = owner_of(k, h, rkm);
    if (!s)
        return; /* unsubscribed meanwhile */
    bool formatted = wsb_kfmt_needed(k->fmt, s->value_format, s->key_format);
    uint64_t lost =
        wsb_kresets_check(k->resets, k->handles[h].rk, s->topic, rkm->partition, rkm->offset);
    if (lost)
        hand_lost(k, s, formatted, rkm, lost);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);
    if (s->nfiltering && filtered(s, rkm, ts))
        return;
    if (!formatted && k->sink.skip &&
        k->sink.skip(k->sink.ctx, s->id, rkm->partition, rkm->offset + 1)) {
        atomic_fetch_add(&k->base.messages_in, 1);
        return; /* nobody reads the source now: nothing to build */
    }
    struct wsb_header stack[MAX_STACK_HEADERS], *hv = stack;
    size_t nh = 0;
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
        nh = rd_kafka_header_cnt(hdrs);
        if (nh > MAX_STACK_HEADERS && !(hv = malloc(nh * sizeof(*hv))))
            return;
        for (size_t i = 0; i < nh; i++) {
            const char *name;
            const void *val;
            size_t size;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &size)) {
                nh = i;
                break;
            }
            hv[i] = (struct wsb_header){.name = name, .value = val, .value_len = size};
        }
    }
    struct wsb_msg *m = wsb_msg_new(s->id, rkm->partition, rkm->offset, ts, rkm->key, rkm->key_len,
                                    rkm->payload, rkm->len, hv, nh);
    if (hv != stack)
        free(hv);
    if (!m)
        return;
    atomic_fetch_add(&k->base.messages_in, 1);
    hand_over(k, s, formatted, m);
}

static bool consume_burst(struct kc *k, int h);

/* Drains up to CONSUME_BATCH events of handle h; true when it may have more. The messages
 * are handed to the core at the end, in one burst. */
static bool consume(struct kc *k, int h)
{
    bool more = consume_burst(k, h);
    if (k->sink.flush)
        k->sink.flush(k->sink.ctx);
    return more;
}

static bool consume_burst(struct kc *k, int h)
{
    struct handle *hd = &k->handles[h];
    /* What the queue holds now, up to CONSUME_BATCH, in one call and one queue lock (a poll
     * per record took the lock, and woke nothing, per record); never waits for more. */
    rd_kafka_message_t *batch[CONSUME_BATCH];
    ssize_t n = rd_kafka_consume_batch_queue(hd->queue, 0, batch, CONSUME_BATCH);
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *rkm = batch[i];
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                wsb_log(WSB_LOG_WARN, "kafka consumer error", WSB_LSTR("connector", k->name),
                        WSB_LSTR("topic", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : NULL),
                        WSB_LINT("partition", rkm->partition),
                        WSB_LSTR("error", rd_kafka_message_errstr(rkm)));
        } else {
            deliver(k, h, rkm);
        }
        rd_kafka_message_destroy(rkm);
    }
    return n == CONSUME_BATCH;
}

/* Partitions added to a topic after a source started are assigned from their beginning (they
 * are new, so nothing is replayed twice) and reported by their messages' partition numbers.
 * Every REFRESH_INTERVAL_MS each started source gets a refresh job (one at a time): on the
 * pool, a metadata request for its topic and the low watermarks of the new partitions; back
 * here, the assignment. */
static void refresh_partitions(struct kc *k)
{
    k->next_refresh_ms = mono_ms() + REFRESH_INTERVAL_MS;
    if (!atomic_load(&k->base.up))
        return;
    for (struct source *s = k->sources; s; s = s->next) {
        if (s->handle < 0 || s->refreshing)
            continue;
        struct job *j = calloc(1, sizeof(*j));
        if (!j || !(j->topic = strdup(s->topic))) {
            free(j);
            return;
        }
        j->kind = JOB_REFRESH;
        j->id = s->id;
        j->known = s->parts->cnt;
        s->refreshing = true;
        pool_post(k, j);
    }
}

/* On the pool. */
static void refresh(struct kc *k, struct job *j)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->lookup, j->topic, NULL);
    if (!rkt || rd_kafka_metadata(k->lookup, 0, rkt, &md, HEALTH_TIMEOUT_MS) ||
        md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= j->known)
        goto done;
    const struct rd_kafka_metadata_topic *mt = &md->topics[0];
    j->parts = rd_kafka_topic_partition_list_new(mt->partition_cnt - j->known);
    for (int i = 0; i < mt->partition_cnt; i++)
        if (mt->partitions[i].id >= j->known) /* ids are 0..n-1, and only ever grow */
            rd_kafka_topic_partition_list_add(j->parts, j->topic, mt->partitions[i].id);
    j->ok = j->parts->cnt > 0 && list_offsets(k, j->parts, RD_KAFKA_OFFSET_BEGINNING) == 0;
done:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
}

static void finish_refresh(struct kc *k, struct job *j)
{
    struct source *s = source_find(k, j->id, NULL);
    if (!s)
        return;
    s->refreshing = false;
    if (!j->ok)
        return;
    struct handle *hd = &k->handles[s->handle];
    for (int i = 0; i < j->parts->cnt; i++)
        if (rd_kafka_topic_partition_list_find(s->parts, j->topic, j->parts->elems[i].partition))
            return; /* raced with nothing we know of; leave it to the next round */
    rd_kafka_error_t *e = rd_kafka_incremental_assign(hd->rk, j->parts);
    if (e) {
        rd_kafka_error_destroy(e);
        return;
    }
    for (int i = 0; i < j->parts->cnt; i++)
        rd_kafka_topic_partition_list_add(s->parts, j->topic, j->parts->elems[i].partition)
            ->offset = j->parts->elems[i].offset;
    k->cache_rkt = NULL;
    wsb_log(WSB_LOG_INFO, "kafka partitions added", WSB_LSTR("connector", k->name),
            WSB_LSTR("topic", s->topic), WSB_LINT("partitions", s->parts->cnt));
}

/* ---- The lookup pool ----------------------------------------------------------------- */

static void job_free(struct job *j)
{
    if (!j)
        return;
    wsb_cmd_free(j->cmd);
    free(j->topic);
    if (j->parts)
        rd_kafka_topic_partition_list_destroy(j->parts);
    free(j->filtering);
    if (j->rk)
        rd_kafka_destroy_flags(j->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(j);
}

/* @locality connector thread */
static void pool_post(struct kc *k, struct job *j)
{
    pthread_mutex_lock(&k->pool_lock);
    j->next = NULL;
    if (k->todo_tail)
        k->todo_tail->next = j;
    else
        k->todo = j;
    k->todo_tail = j;
    pthread_cond_signal(&k->pool_cond);
    pthread_mutex_unlock(&k->pool_lock);
}

static void *worker_run(void *arg)
{
    struct kc *k = arg;
    pthread_mutex_lock(&k->pool_lock);
    for (;;) {
        while (!k->todo && !k->pool_stop)
            pthread_cond_wait(&k->pool_cond, &k->pool_lock);
        struct job *j = k->todo;
        if (!j)
            break; /* stopping and nothing left */
        if (!(k->todo = j->next))
            k->todo_tail = NULL;
        bool stopping = k->pool_stop;
        pthread_mutex_unlock(&k->pool_lock);
        switch (j->kind) {
        case JOB_RESOLVE:
            if (!stopping)
                resolve(k, j);
            break;
        case JOB_REFRESH:
            if (!stopping)
                refresh(k, j);
            break;
        case JOB_CLOSE:
            rd_kafka_destroy_flags(j->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
            j->rk = NULL;
            break;
        }
        pthread_mutex_lock(&k->pool_lock);
        if (j->kind == JOB_CLOSE || stopping) {
            job_free(j);
            continue;
        }
        j->next = k->done;
        k->done = j;
        pthread_mutex_unlock(&k->pool_lock);
        wsb_cmdq_wake(k->base.q);
        pthread_mutex_lock(&k->pool_lock);
    }
    pthread_mutex_unlock(&k->pool_lock);
    return NULL;
}

/* Results of finished jobs, in the order they finished. @locality connector thread */
static void serve_done(struct kc *k)
{
    pthread_mutex_lock(&k->pool_lock);
    struct job *list = k->done, *rev = NULL;
    k->done = NULL;
    pthread_mutex_unlock(&k->pool_lock);
    while (list) {
        struct job *j = list;
        list = j->next;
        j->next = rev;
        rev = j;
    }
    while (rev) {
        struct job *j = rev;
        rev = j->next;
        if (j->kind == JOB_RESOLVE)
            finish_subscribe(k, j);
        else if (j->kind == JOB_REFRESH)
            finish_refresh(k, j);
        job_free(j);
    }
}

/* Lets running lookups finish (each is bounded by its timeouts), skips queued ones, destroys
 * the handles queued for it, and joins the workers. */
static void pool_stop(struct kc *k)
{
    pthread_mutex_lock(&k->pool_lock);
    k->pool_stop = true;
    pthread_cond_broadcast(&k->pool_cond);
    pthread_mutex_unlock(&k->pool_lock);
    for (int i = 0; i < k->nworkers; i++)
        pthread_join(k->workers[i], NULL);
    k->nworkers = 0;
    while (k->done) {
        struct job *j = k->done;
        k->done = j->next;
        job_free(j);
    }
}

/* ---- The thread ---------------------------------------------------------------------- */

static void probe_stop(struct kc *k)
{
    if (!k->probe_started)
        return;
    pthread_mutex_lock(&k->probe_lock);
    k->probe_stop = true;
    pthread_cond_broadcast(&k->probe_cond);
    pthread_mutex_unlock(&k->probe_lock);
    pthread_join(k->prober, NULL);
    k->probe_started = false;
}

static void shutdown_clients(struct kc *k, uint32_t timeout_ms)
{
    atomic_store(&k->halting, true);
    probe_stop(k);
    if (k->producer) {
        rd_kafka_resp_err_t e = rd_kafka_flush(k->producer, (int)timeout_ms);
        if (e) {
            /* What could not be delivered in time fails now, with its delivery report. */
            rd_kafka_purge(k->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_poll(k->producer, 0);
        }
    }
    wsb_kgroups_free(k->groups, timeout_ms); /* commits and leaves each group */
    k->groups = NULL;
    wsb_kfmt_shutdown(k->fmt);
    k->sink_closed = true;
    while (k->sources) {
        struct source *s = k->sources;
        k->sources = s->next;
        source_free(s);
    }
    for (int h = 0; h < MAX_HANDLES; h++)
        handle_close(k, h);
    pool_stop(k);
    if (k->producer) {
        rd_kafka_queue_io_event_enable(k->producer_queue, -1, NULL, 0);
        rd_kafka_queue_destroy(k->producer_queue);
        rd_kafka_destroy(k->producer);
        k->producer = NULL;
    }
}

static void *run(void *arg)
{
    struct kc *k = arg;
    bool more = false;
    k->next_refresh_ms = mono_ms() + REFRESH_INTERVAL_MS;
    for (;;) {
        int64_t wait = k->next_refresh_ms - mono_ms();
        if (more || wait < 0)
            wait = 0;
        wsb_cmdq_wait(k->base.q, (int)wait);
        for (struct wsb_cmd *list = wsb_cmdq_take(k->base.q), *c; list; wsb_cmd_free(c)) {
            c = list;
            list = c->next;
            switch (c->kind) {
            case WSB_CMD_SUBSCRIBE:
                if (do_subscribe(k, c))
                    c = NULL; /* the lookup job has it */
                break;
            case WSB_CMD_UNSUBSCRIBE: do_unsubscribe(k, c->id); break;
            case WSB_CMD_PUBLISH: do_publish(k, c); break;
            case WSB_CMD_ACK: wsb_kgroups_ack(k->groups, c->id, c->ack_token, c->ack_kind); break;
            case WSB_CMD_SYNC: break;
            case WSB_CMD_STOP:
                shutdown_clients(k, c->timeout_ms);
                wsb_cmd_free(c);
                while (list) { /* nothing can follow a stop; drop defensively */
                    c = list;
                    list = c->next;
                    wsb_cmd_free(c);
                }
                return NULL;
            }
        }
        serve_done(k);

        wsb_kfmt_poll(k->fmt);
        rd_kafka_poll(k->producer, 0);
        more = false;
        for (int h = 0; h < MAX_HANDLES; h++)
            if (k->handles[h].rk && consume(k, h))
                more = true;
        if (mono_ms() >= k->next_refresh_ms)
            refresh_partitions(k);
    }
}

/* ---- The vtable ---------------------------------------------------------------------- */

static void destroy_locks(struct kc *k)
{
    pthread_cond_destroy(&k->probe_cond);
    pthread_mutex_destroy(&k->probe_lock);
    pthread_cond_destroy(&k->pool_cond);
    pthread_mutex_destroy(&k->pool_lock);
}

static enum wsb_err create(const char *name, const json_t *conf, const struct wsb_sink *sink,
                           void **impl, char *err, size_t errlen)
{
    enum wsb_err rc = WSB_ERR_INVALID;
    *impl = NULL;
    if (!json_is_string(json_object_get(conf, "brokers"))) {
        snprintf(err, errlen, "kafka connector %s: \"brokers\" is required", name);
        return WSB_ERR_INVALID;
    }
    struct kc *k = calloc(1, sizeof(*k));
    if (!k) {
        snprintf(err, errlen, "out of memory");
        return WSB_ERR_NOMEM;
    }
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->sink = *sink;
    atomic_init(&k->halting, false);
    pthread_mutex_init(&k->pool_lock, NULL);
    pthread_cond_init(&k->pool_cond, NULL);
    pthread_mutex_init(&k->probe_lock, NULL);
    pthread_cond_init(&k->probe_cond, NULL);
    k->cache_handle = -1;
    atomic_init(&k->records_lost, 0);
    k->log_level = 6; /* librdkafka's default */
    const char *lvl =
        json_string_value(json_object_get(json_object_get(conf, "properties"), "log_level"));
    if (lvl)
        k->log_level = atoi(lvl);

    char why[256];
    if (!(k->consumer_conf = build_conf(k, conf, true, why, sizeof(why))) ||
        !(k->producer_conf = build_conf(k, conf, false, why, sizeof(why)))) {
        snprintf(err, errlen, "kafka connector %s: %s", name, why);
        goto fail;
    }
    if (!(k->resets = wsb_kresets_new())) {
        snprintf(err, errlen, "out of memory");
        rc = WSB_ERR_NOMEM;
        goto fail;
    }
    if ((rc = wsb_cbase_init(&k->base, err, errlen)) != WSB_OK)
        goto fail;
    rc = WSB_ERR_INVALID;
    const struct wsb_kfmt_hooks hooks = {
        .ctx = k, .produce = produce, .drop = drop_source, .wake = wake_thread};
    if (!(k->fmt = wsb_kfmt_new(name, json_object_get(conf, "schema_registry"), sink, &hooks, why,
                                sizeof(why)))) {
        snprintf(err, errlen, "kafka connector %s: %s", name, why);
        wsb_cbase_cleanup(&k->base);
        goto fail;
    }
    if (!(k->groups =
              wsb_kgroups_new(k->name, k->consumer_conf, k->producer_conf, &k->sink,
                              &k->base.messages_in, &k->groups_stats, on_log, k->log_level))) {
        snprintf(err, errlen, "out of memory");
        wsb_kfmt_free(k->fmt);
        wsb_cbase_cleanup(&k->base);
        rc = WSB_ERR_NOMEM;
        goto fail;
    }
    *impl = k;
    return WSB_OK;

fail:
    wsb_kresets_free(k->resets);
    if (k->consumer_conf)
        rd_kafka_conf_destroy(k->consumer_conf);
    if (k->producer_conf)
        rd_kafka_conf_destroy(k->producer_conf);
    destroy_locks(k);
    free(k);
    return rc;
}

/* The lookup client: a producer that never produces (no idempotence, no delivery reports,
 * no error callback: its errors are logged, never queued) and never fetches. */
static rd_kafka_t *lookup_new(struct kc *k, char *why, size_t whylen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_dup(k->producer_conf);
    rd_kafka_conf_set_dr_msg_cb(c, NULL);
    rd_kafka_conf_set_error_cb(c, NULL);
    if (!conf_set(c, "enable.idempotence", "false", why, whylen)) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, whylen);
    if (!rk)
        rd_kafka_conf_destroy(c);
    return rk;
}

static void start_undo(struct kc *k)
{
    probe_stop(k);
    pool_stop(k);
    if (k->producer) {
        rd_kafka_queue_io_event_enable(k->producer_queue, -1, NULL, 0);
        rd_kafka_queue_destroy(k->producer_queue);
        rd_kafka_destroy(k->producer);
        k->producer = NULL;
    }
}

static enum wsb_err start(void *impl)
{
    struct kc *k = impl;
    char why[256];
    if (k->started)
        return WSB_ERR_INVALID;
    rd_kafka_conf_t *pc = rd_kafka_conf_dup(k->producer_conf);
    k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, why, sizeof(why));
    if (!k->producer) {
        rd_kafka_conf_destroy(pc);
        wsb_log(WSB_LOG_ERROR, "kafka producer", WSB_LSTR("connector", k->name),
                WSB_LSTR("reason", why));
        return WSB_ERR_INVALID;
    }
    if (wsb_kfmt_start(k->fmt) != WSB_OK) {
        rd_kafka_destroy(k->producer);
        k->producer = NULL;
        return WSB_ERR_IO;
    }
    k->producer_queue = rd_kafka_queue_get_main(k->producer);
    rd_kafka_queue_io_event_enable(k->producer_queue, wsb_cmdq_fd(k->base.q),
                                   &WSB_CMDQ_WAKE_PAYLOAD, sizeof(WSB_CMDQ_WAKE_PAYLOAD));
    if (!k->lookup && !(k->lookup = lookup_new(k, why, sizeof(why)))) {
        wsb_log(WSB_LOG_ERROR, "kafka lookup client", WSB_LSTR("connector", k->name),
                WSB_LSTR("reason", why));
        start_undo(k);
        return WSB_ERR_INVALID;
    }
    while (k->nworkers < LOOKUP_THREADS &&
           pthread_create(&k->workers[k->nworkers], NULL, worker_run, k) == 0)
        k->nworkers++;
    if (k->nworkers < LOOKUP_THREADS || pthread_create(&k->prober, NULL, probe_run, k) != 0) {
        start_undo(k);
        return WSB_ERR_IO;
    }
    k->probe_started = true;
    if (wsb_cmdq_start(k->base.q, run, k) != WSB_OK) {
        start_undo(k);
        return WSB_ERR_IO;
    }
    k->started = true;
    return WSB_OK;
}

static void destroy(void *impl)
{
    struct kc *k = impl;
    if (!k)
        return;
    wsb_cbase_stop(k, 0);
    wsb_kgroups_free(k->groups, 0); /* never started: no group consumer runs */
    if (k->lookup)
        rd_kafka_destroy(k->lookup);
    wsb_kfmt_free(k->fmt);
    wsb_cbase_cleanup(&k->base); /* after kfmt: its thread may wake the queue until then */
    rd_kafka_conf_destroy(k->consumer_conf);
    rd_kafka_conf_destroy(k->producer_conf);
    wsb_kresets_free(k->resets);
    destroy_locks(k);
    free(k);
}

static bool ready(void *impl, char *reason, size_t reasonlen)
{
    struct kc *k = impl;
    return wsb_cbase_ready(k, reason, reasonlen) && wsb_kfmt_ready(k->fmt, reason, reasonlen);
}

static bool format_stats(void *impl, struct wsb_format_stats *out)
{
    struct kc *k = impl;
    return wsb_kfmt_stats(k->fmt, out);
}

static const char *const channel_keys[] = {"topic", "group", "dead_letter_topic", NULL};
static const char *const source_keys[] = {"topic", "group", NULL};

/* The consumer groups' figures (delivery: ack), aggregated over the connector's groups. */
static size_t stats(void *impl, struct wsb_connector_stat *out, size_t max)
{
    struct kc *k = impl;
    struct wsb_kgroups_stats *g = &k->groups_stats;
    const struct wsb_connector_stat all[] = {
        {"wsbridge_kafka_groups", "gauge", "Consumer groups joined (delivery: ack channels).",
         (double)atomic_load(&g->groups)},
        {"wsbridge_kafka_group_unacked", "gauge",
         "Group records handed to a client and not acked yet.", (double)atomic_load(&g->unacked)},
        {"wsbridge_kafka_group_commits_total", "counter",
         "Group offset commits accepted by the broker.", (double)atomic_load(&g->commits)},
        {"wsbridge_kafka_group_redeliveries_total", "counter",
         "Group records handed out again (nack with requeue, client gone).",
         (double)atomic_load(&g->redeliveries)},
        {"wsbridge_kafka_group_dead_lettered_total", "counter",
         "Group records nacked without requeue and produced to the dead_letter_topic.",
         (double)atomic_load(&g->dead_lettered)},
        {"wsbridge_kafka_group_dropped_total", "counter",
         "Group records nacked without requeue and no dead_letter_topic (skipped).",
         (double)atomic_load(&g->dropped)},
        {"wsbridge_kafka_group_lag", "gauge",
         "Records of the groups' assigned partitions past the committed offset.",
         (double)atomic_load(&g->lag)},
        {"wsbridge_records_lost_total", "counter",
         "Records skipped unread because the broker no longer had them (a consumer offset "
         "reset past them); their subscribers got a gap.",
         (double)(atomic_load(&k->records_lost) + atomic_load(&g->lost))},
    };
    size_t n = sizeof(all) / sizeof(all[0]) < max ? sizeof(all) / sizeof(all[0]) : max;
    memcpy(out, all, n * sizeof(*out));
    return n;
}

const struct wsb_connector_ops wsb_kafka_ops = {
    .type = "kafka",
    /* ack: consumer groups (kafka_group.c) */
    .caps = WSB_CAP_FROM_POSITION | WSB_CAP_ACK | WSB_CAP_PUBLISH,
    .channel_keys = channel_keys,
    .source_keys = source_keys,
    .check_route = wsb_connector_check_topic_route,
    .check_config = check_config,
    .check_channel = check_channel,
    .create = create,
    .start = start,
    .stop = wsb_cbase_stop,
    .destroy = destroy,
    .subscribe = wsb_cbase_subscribe_topic,
    .unsubscribe = wsb_cbase_unsubscribe,
    .publish = wsb_cbase_publish_topic,
    .ack = wsb_cbase_ack,
    .ready = ready,
    .messages_in = wsb_cbase_messages_in,
    .format_stats = format_stats,
    .stats = stats,
};
