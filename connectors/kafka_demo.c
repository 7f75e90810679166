/* The --demo broker: a mock Kafka cluster and a ticker feeding "demo.ticks". */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "connectors/kafka_demo.h"
#include "util/log.h"

#define DEMO_TOPIC "demo.ticks"
#define TICK_MS 500

static struct {
    rd_kafka_t *owner; /* the handle the mock cluster lives in */
    rd_kafka_mock_cluster_t *cluster;
    rd_kafka_t *producer;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running, stop;
} demo = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level > 4)
        return;
    wsb_log(WSB_LOG_WARN, "demo kafka", WSB_LSTR("client", rd_kafka_name(rk)),
            WSB_LSTR("facility", fac), WSB_LSTR("detail", buf));
}

static rd_kafka_t *new_producer(const char *bootstraps, char *err, size_t errlen)
{
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(c, on_log);
    if (rd_kafka_conf_set(c, "client.id", "wsbridge-demo", err, errlen) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(c, "linger.ms", "0", err, errlen) != RD_KAFKA_CONF_OK ||
        (bootstraps &&
         rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, err, errlen) != RD_KAFKA_CONF_OK)) {
        rd_kafka_conf_destroy(c);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, errlen);
    if (!rk)
        rd_kafka_conf_destroy(c);
    return rk;
}

static void *ticker(void *arg)
{
    (void)arg;
    uint64_t seq = 0;
    double price = 100.0;
    unsigned rnd = (unsigned)time(NULL);
    struct timespec next;
    clock_gettime(CLOCK_REALTIME, &next);

    pthread_mutex_lock(&demo.lock);
    while (!demo.stop) {
        pthread_mutex_unlock(&demo.lock);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        price += ((double)(rand_r(&rnd) % 201) - 100.0) / 100.0;
        if (price < 1.0)
            price = 1.0;
        char json[128];
        int n = snprintf(json, sizeof(json), "{\"seq\":%llu,\"ts\":%lld,\"price\":%.2f}",
                         (unsigned long long)++seq, (long long)ms, price);
        rd_kafka_producev(demo.producer, RD_KAFKA_V_TOPIC(DEMO_TOPIC),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_VALUE(json, (size_t)n), RD_KAFKA_V_END);
        rd_kafka_poll(demo.producer, 0);

        next.tv_nsec += TICK_MS * 1000000L;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&demo.lock);
        while (!demo.stop && pthread_cond_timedwait(&demo.cond, &demo.lock, &next) == 0)
            ;
    }
    pthread_mutex_unlock(&demo.lock);
    return NULL;
}

static void teardown(void)
{
    if (demo.producer) {
        rd_kafka_flush(demo.producer, 1000);
        rd_kafka_destroy(demo.producer);
    }
    if (demo.cluster)
        rd_kafka_mock_cluster_destroy(demo.cluster);
    if (demo.owner)
        rd_kafka_destroy(demo.owner);
    demo.producer = NULL;
    demo.cluster = NULL;
    demo.owner = NULL;
}

int wsb_kafka_demo_start(char *bootstraps, size_t len, char *err, size_t errlen)
{
    if (demo.running) {
        snprintf(err, errlen, "the demo cluster is already running");
        return -1;
    }
    if (!(demo.owner = new_producer(NULL, err, errlen)))
        goto fail;
    if (!(demo.cluster = rd_kafka_mock_cluster_new(demo.owner, 1))) {
        snprintf(err, errlen, "cannot create the mock cluster");
        goto fail;
    }
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(demo.cluster, DEMO_TOPIC, 1, 1);
    if (e) {
        snprintf(err, errlen, "create %s: %s", DEMO_TOPIC, rd_kafka_err2str(e));
        goto fail;
    }
    const char *bs = rd_kafka_mock_cluster_bootstraps(demo.cluster);
    if (strlen(bs) >= len) {
        snprintf(err, errlen, "bootstrap buffer too small");
        goto fail;
    }
    if (!(demo.producer = new_producer(bs, err, errlen)))
        goto fail;
    demo.stop = false;
    if (pthread_create(&demo.thread, NULL, ticker, NULL) != 0) {
        snprintf(err, errlen, "cannot start the ticker thread");
        goto fail;
    }
    demo.running = true;
    snprintf(bootstraps, len, "%s", bs);
    wsb_log(WSB_LOG_INFO, "demo kafka cluster started", WSB_LSTR("bootstrap", bs),
            WSB_LSTR("topic", DEMO_TOPIC));
    return 0;

fail:
    teardown();
    return -1;
}

void wsb_kafka_demo_stop(void)
{
    if (!demo.running)
        return;
    pthread_mutex_lock(&demo.lock);
    demo.stop = true;
    pthread_cond_broadcast(&demo.cond);
    pthread_mutex_unlock(&demo.lock);
    pthread_join(demo.thread, NULL);
    teardown();
    demo.running = false;
}
