/* wsb-hub-bench: the cost of one broker message in one worker's hub with per-record filters
 * (bridge/hub.c, auth/filter.c), without sockets: C subscribers of one channel in G filter
 * groups (`{"key": "uN"}`, one per tenant; G = 0: unfiltered), messages keyed round robin over
 * the G keys, a no-op deliver callback. Measures the hub's own work per message: filter checks,
 * the one frame it encodes, the hand-over to each subscriber taking it.
 *
 *   wsb-hub-bench [--clients C] [--groups G] [--messages N]
 * Prints one JSON line: clients, groups, messages, seconds, us_per_message, ns_per_delivery,
 * frames_encoded, deliveries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/filter.h"
#include "bridge/hub.h"
#include "bridge/metrics.h"
#include "connectors/connector.h"

static size_t delivered;

static void deliver(void *owner, uint32_t slot, struct wsb_frame *f, uint64_t ack)
{
    (void)owner;
    (void)slot;
    (void)f;
    (void)ack;
    delivered++;
}

static void started(void *owner, uint32_t slot, const char *positions)
{
    (void)owner;
    (void)slot;
    (void)positions;
}

static void failed(void *owner, uint32_t slot, const char *code, const char *message)
{
    (void)owner;
    (void)slot;
    (void)code;
    (void)message;
}

static struct wsb_filter *key_filter(const char *key)
{
    char text[64], path[64], err[128];
    snprintf(text, sizeof(text), "{\"key\":\"%s\"}", key);
    json_t *v = json_loads(text, 0, NULL);
    struct wsb_filter_spec *s =
        wsb_filter_spec_parse(v, WSB_FILTER_LITERAL, 0, path, sizeof(path), err, sizeof(err));
    json_decref(v);
    struct wsb_filter *f = s ? wsb_filter_resolve(s, NULL, NULL, NULL) : NULL;
    wsb_filter_spec_free(s);
    return f;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long clients = 1000, groups = 10, messages = 200000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--clients") == 0)
            clients = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--groups") == 0)
            groups = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--messages") == 0)
            messages = atol(argv[i + 1]);
    }
    if (clients < 1 || groups < 0 || messages < 1) {
        fprintf(stderr, "usage: wsb-hub-bench [--clients C] [--groups G] [--messages N]\n");
        return 2;
    }
    static const struct wsb_hub_cbs cbs = {
        .deliver = deliver, .started = started, .failed = failed};
    struct wsb_loop_metrics m;
    memset(&m, 0, sizeof(m));
    struct wsb_hub *h = wsb_hub_new(&cbs, &m);
    long nkeys = groups ? groups : 1;
    char key[32];
    for (long i = 0; i < clients; i++) {
        bool active;
        char *pos;
        snprintf(key, sizeof(key), "u%ld", i % nkeys);
        if (!wsb_hub_attach(h, "orders", 6, 1, groups ? key_filter(key) : NULL, NULL, (uint32_t)i,
                            &active, &pos)) {
            fprintf(stderr, "attach failed\n");
            return 1;
        }
    }
    wsb_hub_started(h, 1, NULL);
    struct wsb_msg **msgs = calloc((size_t)nkeys, sizeof(*msgs));
    char payload[100];
    memset(payload, 'x', sizeof(payload));
    payload[0] = payload[sizeof(payload) - 1] = '"';
    for (long k = 0; k < nkeys; k++) {
        snprintf(key, sizeof(key), "u%ld", k);
        msgs[k] = wsb_msg_new(1, 0, 0, -1, key, strlen(key), payload, sizeof(payload), NULL, 0);
    }
    double t0 = now_s();
    for (long i = 0; i < messages; i++) {
        struct wsb_msg *msg = msgs[i % nkeys];
        msg->offset = i;
        wsb_hub_message(h, msg);
    }
    double dt = now_s() - t0;
    printf("{\"clients\":%ld,\"groups\":%ld,\"messages\":%ld,\"seconds\":%.3f,"
           "\"us_per_message\":%.3f,\"ns_per_delivery\":%.1f,\"frames_encoded\":%llu,"
           "\"deliveries\":%zu}\n",
           clients, groups, messages, dt, dt / (double)messages * 1e6,
           delivered ? dt / (double)delivered * 1e9 : 0.0, (unsigned long long)m.frames_encoded,
           delivered);
    return 0;
}
