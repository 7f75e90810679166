/* wsb-kafka-mock: librdkafka's mock Kafka cluster on loopback, driven over stdin, for tests.
 *
 *   wsb-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]... [--port-file F]
 *
 * Prints the bootstrap servers ("127.0.0.1:PORT,...") as the first line on stdout (and into F
 * when given), then answers each stdin line with "ok" or "error REASON":
 *   down BROKER_ID | up BROKER_ID | create TOPIC PARTITIONS | leader TOPIC PARTITION BROKER_ID
 *   | quit
 * Broker ids are 1..N; -1 means every broker for down/up and "no leader" for leader (the
 * partition's requests then wait for a leader that never comes). Exits when stdin closes, on quit
 * or SIGTERM. Plain C and librdkafka only: it links nothing of wsbridge. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64

static volatile sig_atomic_t quit_signal;

static void on_signal(int sig)
{
    (void)sig;
    quit_signal = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: wsb-kafka-mock [--brokers N] [--topic NAME:PARTITIONS]... "
                    "[--port-file FILE]\n");
}

/* Parses a whole decimal int in [lo, hi]. */
static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int create_topic(rd_kafka_mock_cluster_t *mc, int brokers, const char *name, int partitions,
                        char *err, size_t errlen)
{
    int rf = brokers < 3 ? brokers : 3;
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, partitions, rf);
    if (e) {
        snprintf(err, errlen, "%s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

static int write_port_file(const char *path, const char *bootstraps)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", bootstraps);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -1;
    return 0;
}

/* Handles one command line; writes the answer to stdout. Returns 1 on quit. */
static int handle(rd_kafka_mock_cluster_t *mc, int brokers, char *line)
{
    char *save = NULL;
    char *verb = strtok_r(line, " \t\r\n", &save);
    char *a1 = verb ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    char *a2 = a1 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    char *extra = a2 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
    char err[256];
    int id, parts;

    if (!verb) {
        printf("error empty command\n");
    } else if (strcmp(verb, "quit") == 0) {
        printf("ok\n");
        return 1;
    } else if (strcmp(verb, "down") == 0 || strcmp(verb, "up") == 0) {
        if (!a1 || a2 || parse_int(a1, -1, brokers, &id) != 0 || id == 0) {
            printf("error usage: %s BROKER_ID (1..%d or -1)\n", verb, brokers);
        } else {
            rd_kafka_resp_err_t e = strcmp(verb, "down") == 0
                                        ? rd_kafka_mock_broker_set_down(mc, id)
                                        : rd_kafka_mock_broker_set_up(mc, id);
            if (e)
                printf("error %s\n", rd_kafka_err2str(e));
            else
                printf("ok\n");
        }
    } else if (strcmp(verb, "leader") == 0) {
        char *a3 = extra;
        char *more = a3 ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (!a1 || !a2 || !a3 || more || parse_int(a2, 0, 100000, &parts) != 0 ||
            parse_int(a3, -1, brokers, &id) != 0 || id == 0) {
            printf("error usage: leader TOPIC PARTITION BROKER_ID (1..%d or -1)\n", brokers);
        } else {
            rd_kafka_resp_err_t e = rd_kafka_mock_partition_set_leader(mc, a1, parts, id);
            if (e)
                printf("error %s\n", rd_kafka_err2str(e));
            else
                printf("ok\n");
        }
    } else if (strcmp(verb, "create") == 0) {
        if (!a1 || !a2 || extra || parse_int(a2, 1, 10000, &parts) != 0)
            printf("error usage: create TOPIC PARTITIONS\n");
        else if (create_topic(mc, brokers, a1, parts, err, sizeof(err)) != 0)
            printf("error %s\n", err);
        else
            printf("ok\n");
    } else {
        printf("error unknown command \"%s\"\n", verb);
    }
    return 0;
}

int main(int argc, char **argv)
{
    int brokers = 3;
    const char *port_file = NULL;
    const char *topics[MAX_TOPICS];
    int ntopics = 0;
    char err[512];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            if (parse_int(argv[++i], 1, 32, &brokers) != 0) {
                fprintf(stderr, "wsb-kafka-mock: --brokers must be 1..32\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            if (ntopics == MAX_TOPICS) {
                fprintf(stderr, "wsb-kafka-mock: at most %d --topic\n", MAX_TOPICS);
                return 2;
            }
            topics[ntopics++] = argv[++i];
        } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
            port_file = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        } else {
            usage();
            return 2;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked read returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "wsb-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "wsb-kafka-mock: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    int status = 0;
    for (int i = 0; i < ntopics; i++) {
        char name[256];
        const char *colon = strrchr(topics[i], ':');
        int parts = 1;
        if (colon) {
            snprintf(name, sizeof(name), "%.*s", (int)(colon - topics[i]), topics[i]);
            if (parse_int(colon + 1, 1, 10000, &parts) != 0) {
                fprintf(stderr, "wsb-kafka-mock: bad --topic %s (NAME:PARTITIONS)\n", topics[i]);
                status = 2;
                goto done;
            }
        } else {
            snprintf(name, sizeof(name), "%s", topics[i]);
        }
        if (!*name || create_topic(mc, brokers, name, parts, err, sizeof(err)) != 0) {
            fprintf(stderr, "wsb-kafka-mock: topic %s: %s\n", name, *name ? err : "empty name");
            status = 1;
            goto done;
        }
    }

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (port_file && write_port_file(port_file, bootstraps) != 0) {
        fprintf(stderr, "wsb-kafka-mock: cannot write %s: %s\n", port_file, strerror(errno));
        status = 1;
        goto done;
    }
    printf("%s\n", bootstraps);
    fflush(stdout);

    char line[1024];
    while (!quit_signal && fgets(line, sizeof(line), stdin)) {
        int q = handle(mc, brokers, line);
        fflush(stdout);
        if (q)
            break;
    }

done:
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return status;
}
