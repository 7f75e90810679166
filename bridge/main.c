/* wsbridge: command line, configuration, demo set-up, and the server's run. */
#include <getopt.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "bridge/demo.h"
#include "bridge/server.h"
#include "config/config.h"
#include "connectors/kafka_demo.h"
#include "util/log.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: wsbridge [-c FILE | --config FILE] [--check-config] [--demo] [--version] "
            "[--help]\n"
            "\n"
            "  -c, --config FILE  configuration file (default: $WSBRIDGE_CONFIG, else --demo)\n"
            "      --check-config validate the configuration, print ok or every problem, exit\n"
            "      --demo         run the self-contained demo: in-process Kafka mock cluster,\n"
            "                     a demo.ticks channel, a generated token, a page at /\n"
            "      --version      print the version\n"
            "  -h, --help         this help\n"
            "\n"
            "Signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the configuration.\n");
}

static void print_config_error(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "%s: %s: %s\n", file ? file : "<config>", path && *path ? path : "$", msg);
}

/* One malloc arena for every thread, unless the environment chooses (MALLOC_ARENA_MAX or
 * GLIBC_TUNABLES). Frames and chains are allocated by the worker threads and broker messages
 * by the connector threads; with an arena per thread the memory of a burst stayed spread
 * over their arenas after it was freed (10 MB of 16 MB after a catch-up of 500 clients, see
 * docs/flow-control.md), with one it is given back. Per-thread caches (tcache) keep the
 * small allocations off the arena lock. */
static void malloc_setup(void)
{
    if (!getenv("MALLOC_ARENA_MAX") && !getenv("GLIBC_TUNABLES"))
        mallopt(M_ARENA_MAX, 1);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'k'},
        {"demo", no_argument, NULL, 'd'},         {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    malloc_setup();
    const char *file = NULL;
    bool check = false, demo = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': file = optarg; break;
        case 'k': check = true; break;
        case 'd': demo = true; break;
        case 'v': printf("wsbridge %s\n", WSB_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsbridge: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (!file) {
        const char *env = getenv("WSBRIDGE_CONFIG");
        if (env && *env)
            file = env;
    }
    if (!file && !check)
        demo = true;

    if (check) {
        if (!file && !demo) {
            fprintf(stderr, "wsbridge: --check-config needs -c FILE or $WSBRIDGE_CONFIG\n");
            return 1;
        }
        if (demo && !getenv("WSBRIDGE_DEMO_BROKERS"))
            setenv("WSBRIDGE_DEMO_BROKERS", "127.0.0.1:9092", 1);
        if (demo && !getenv("WSBRIDGE_DEMO_SECRET"))
            setenv("WSBRIDGE_DEMO_SECRET", "check-config-placeholder", 1);
        if (!file)
            file = NULL;
        struct wsb_config *cfg = wsb_config_load(file, demo, print_config_error, NULL);
        if (!cfg)
            return 1;
        wsb_config_unref(cfg);
        printf("ok\n");
        return 0;
    }

    wsb_server_block_signals();
    evthread_use_pthreads();

    char secret[65] = "";
    char *token = NULL, *page = NULL;
    if (demo) {
        char boot[512], err[256];
        if (wsb_kafka_demo_start(boot, sizeof(boot), err, sizeof(err)) != 0) {
            fprintf(stderr, "wsbridge: demo: cannot start the mock Kafka cluster: %s\n", err);
            return 1;
        }
        setenv("WSBRIDGE_DEMO_BROKERS", boot, 1);
        if (wsb_demo_secret(secret) != 0) {
            fprintf(stderr, "wsbridge: demo: no randomness for the secret\n");
            return 1;
        }
        setenv("WSBRIDGE_DEMO_SECRET", secret, 1);
    }

    struct wsb_config *cfg = wsb_config_load(file, demo, print_config_error, NULL);
    if (!cfg) {
        fprintf(stderr, "wsbridge: invalid configuration%s%s\n", file ? " in " : "",
                file ? file : "");
        return 1;
    }
    int level = wsb_log_level_parse(cfg->log_level ? cfg->log_level : "info");
    wsb_log_init(level < 0 ? WSB_LOG_INFO : (enum wsb_log_level)level, cfg->log_json);

    if (demo) {
        token = wsb_demo_token(secret, 24 * 3600);
        page = token ? wsb_demo_page(token, cfg->path) : NULL;
        if (!page) {
            fprintf(stderr, "wsbridge: demo: cannot mint the demo token\n");
            wsb_config_unref(cfg);
            return 1;
        }
        if (strncmp(cfg->listen, "127.", 4) != 0 && strncmp(cfg->listen, "localhost:", 10) != 0 &&
            strncmp(cfg->listen, "[::1]:", 6) != 0)
            fprintf(stderr,
                    "wsbridge: demo: listening on %s: the page at / hands a valid "
                    "token to anyone who can reach it\n",
                    cfg->listen);
        const char *port = strrchr(cfg->listen, ':');
        port = port ? port + 1 : "8080";
        printf("wsbridge demo\n"
               "  page:   http://127.0.0.1:%s/\n"
               "  socket: ws://127.0.0.1:%s%s?access_token=%s\n"
               "  token:  %s\n"
               "  try:    {\"op\":\"subscribe\",\"id\":1,\"channel\":\"demo.ticks\"}\n",
               port, port, cfg->path, token, token);
        fflush(stdout);
    }

    struct wsb_server_opts so = {.config_file = file, .demo = demo, .demo_page = page};
    struct wsb_server *srv = NULL;
    char err[512] = "";
    if (wsb_server_new(cfg, &so, &srv, err, sizeof(err)) != WSB_OK) {
        fprintf(stderr, "wsbridge: %s\n", err);
        free(token);
        free(page);
        if (demo)
            wsb_kafka_demo_stop();
        return 1;
    }
    int rc = wsb_server_run(srv);
    wsb_server_free(srv);
    if (demo)
        wsb_kafka_demo_stop();
    free(token);
    free(page);
    return rc;
}
