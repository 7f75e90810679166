/* Unit tests for config/config.c: defaults, strictness, error paths, auth, ACL, connectors,
 * channels, env expansion, demo mode, --check-config and the reload diff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "connectors/connector.h"

/* Problems reported by the last load, one "PATH: msg" per line. */
static char errs[16384];
static int nerrs;

static void collect(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    (void)file;
    size_t n = strlen(errs);
    snprintf(errs + n, sizeof(errs) - n, "%s: %s\n", path, msg);
    nerrs++;
}

static struct wsb_config *load(const char *text)
{
    errs[0] = '\0';
    nerrs = 0;
    struct wsb_config *c =
        wsb_config_load_text("test.json", text, strlen(text), false, collect, NULL);
    if (!c && nerrs == 0)
        fail_msg("load failed without reporting a problem");
    if (c && nerrs)
        fail_msg("load succeeded but reported: %s", errs);
    return c;
}

/* Expects the load to fail with a line containing `needle`. */
static void expect_err(const char *text, const char *needle)
{
    struct wsb_config *c = load(text);
    if (c) {
        wsb_config_unref(c);
        fail_msg("expected an error containing \"%s\" for %s", needle, text);
    }
    if (!strstr(errs, needle))
        fail_msg("expected \"%s\" in:\n%s", needle, errs);
}

static void expect_ok(const char *text)
{
    struct wsb_config *c = load(text);
    if (!c)
        fail_msg("unexpected problems for %s:\n%s", text, errs);
    wsb_config_unref(c);
}

/* A connector block for tests: the memory connector accepts an empty object. */
#define MEM "\"connectors\": {\"m\": {\"type\": \"memory\"}}"

static void test_defaults(void **state)
{
    (void)state;
    struct wsb_config *c = load("{}");
    assert_non_null(c);
    assert_int_equal(c->refs, 1);
    assert_string_equal(c->file, "test.json");
    assert_string_equal(c->listen, "0.0.0.0:8080");
    assert_string_equal(c->path, "/ws");
    assert_string_equal(c->admin_listen, "0.0.0.0:9090");
    assert_null(c->tls_cert);
    assert_null(c->tls_key);
    assert_true(c->permessage_deflate);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_int_equal(c->workers, 0);
    assert_int_equal(c->nallowed_origins, 0);
    assert_false(c->auth.enabled);
    assert_int_equal(c->auth.token_sources,
                     WSB_TOKEN_HEADER | WSB_TOKEN_QUERY | WSB_TOKEN_SUBPROTOCOL);
    assert_int_equal(c->auth.algorithms, WSB_ALG_RS256 | WSB_ALG_ES256 | WSB_ALG_HS256);
    assert_int_equal(c->auth.refusal, WSB_REFUSAL_HTTP);
    assert_int_equal(c->auth.leeway_s, 30);
    assert_true(c->auth.require_exp);
    assert_int_equal(c->nacl, 0);
    assert_int_equal(c->nconnectors, 0);
    assert_int_equal(c->nchannels, 0);
    assert_int_equal(c->limits.max_connections, 100000);
    assert_int_equal(c->limits.max_connections_per_ip, 1000);
    assert_true(c->limits.handshake_rate_per_s == 20 && c->limits.handshake_rate_burst == 40);
    assert_int_equal(c->limits.handshake_timeout_ms, 5000);
    assert_int_equal(c->limits.ping_interval_ms, 25000);
    assert_int_equal(c->limits.pong_timeout_ms, 10000);
    assert_int_equal(c->limits.max_message_bytes, 1048576);
    assert_int_equal(c->limits.max_subscriptions, 100);
    assert_int_equal(c->limits.max_inflight_publishes, 64);
    assert_true(c->limits.inbound_rate_per_s == 50 && c->limits.inbound_rate_burst == 100);
    assert_true(c->limits.inbound_bytes_per_s == 0 && c->limits.inbound_bytes_burst == 0);
    assert_int_equal(c->limits.send_soft_bytes, 1048576);
    assert_int_equal(c->limits.send_soft_seconds, 10);
    assert_int_equal(c->limits.send_hard_bytes, 8388608);
    assert_int_equal(c->limits.send_policy, WSB_POLICY_DISCONNECT);
    assert_string_equal(c->log_level, "info");
    assert_true(c->log_json);
    assert_false(c->demo);
    assert_ptr_equal(wsb_config_ref(c), c);
    assert_int_equal(c->refs, 2);
    wsb_config_unref(c);
    wsb_config_unref(c);

    /* No file at all: the same defaults. */
    c = wsb_config_load(NULL, false, NULL, NULL);
    assert_non_null(c);
    assert_string_equal(c->listen, "0.0.0.0:8080");
    wsb_config_unref(c);
}

static const char full[] =
    "{\"listen\": \"127.0.0.1:8081\", \"path\": \"/socket\", \"workers\": 4,"
    " \"admin\": {\"listen\": \"[::1]:9091\"},"
    " \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\", \"client_ca\": null},"
    " \"permessage_deflate\": false, \"drain_timeout_ms\": 500,"
    " \"allowed_origins\": [\"https://a.example\", \"https://b.example\"],"
    " \"auth\": {\"token_sources\": [\"header\", \"cookie:wsb_token\"], \"refusal\": \"close\","
    "   \"jwt\": {\"algorithms\": [\"HS256\", \"ES384\"],"
    "     \"keys\": [{\"kid\": \"k1\", \"file\": \"k1.pem\"}, {\"secret\": \"s3cret\"}],"
    "     \"jwks_file\": \"jwks.json\", \"issuer\": \"https://auth/\", \"audience\": \"wsb\","
    "     \"leeway_s\": 5, \"require_exp\": false, \"permissions_claim\": \"wsb\"}},"
    " \"acl\": [{\"when\": {\"claim\": \"roles\", \"has\": \"admin\"}, \"subscribe\": [\"**\"],"
    "   \"publish\": [\"**\"]},"
    "   {\"subscribe\": [\"public.*\", \"user.{sub}.**\"], \"publish\": [\"chat.{sub}\"]},"
    "   {\"when\": {\"claim\": \"tier\", \"equals\": \"gold\"}, \"subscribe\": [\"gold.*\"]}],"
    " " MEM ","
    " \"channels\": [{\"match\": \"orders\", \"connector\": \"m\", \"topic\": \"orders.v1\"},"
    "   {\"match\": \"alerts.**\", \"connector\": \"m\", \"topic\": \"alerts-{1}\","
    "    \"policy\": \"drop_oldest\", \"publish\": false},"
    "   {\"match\": \"work.*\", \"connector\": \"m\", \"topic\": \"work-{1}\", \"delivery\": "
    "\"ack\","
    "    \"group\": \"g-{1}\", \"max_unacked\": 10, \"dead_letter_topic\": \"work-{1}.dlq\"}],"
    " \"limits\": {\"max_connections\": 10, \"max_message_bytes\": 125,"
    "   \"handshake_rate_per_ip\": {\"per_second\": 0.5, \"burst\": 2},"
    "   \"inbound_bytes\": {\"per_second\": 1000000, \"burst\": 2000000},"
    "   \"send_buffer\": {\"soft_bytes\": 100, \"hard_bytes\": 100, \"policy\": \"drop_oldest\"}},"
    " \"log\": {\"level\": \"debug\", \"format\": \"text\"}}";

static void test_full(void **state)
{
    (void)state;
    struct wsb_config *c = load(full);
    assert_non_null(c);
    assert_string_equal(c->listen, "127.0.0.1:8081");
    assert_string_equal(c->path, "/socket");
    assert_int_equal(c->workers, 4);
    assert_string_equal(c->admin_listen, "[::1]:9091");
    assert_string_equal(c->tls_cert, "c.pem");
    assert_string_equal(c->tls_key, "k.pem");
    assert_null(c->tls_client_ca);
    assert_false(c->permessage_deflate);
    assert_int_equal(c->drain_timeout_ms, 500);
    assert_int_equal(c->nallowed_origins, 2);
    assert_string_equal(c->allowed_origins[1], "https://b.example");

    assert_true(c->auth.enabled);
    assert_int_equal(c->auth.token_sources, WSB_TOKEN_HEADER | WSB_TOKEN_COOKIE);
    assert_string_equal(c->auth.cookie_name, "wsb_token");
    assert_int_equal(c->auth.refusal, WSB_REFUSAL_CLOSE);
    assert_int_equal(c->auth.algorithms, WSB_ALG_HS256 | WSB_ALG_ES384);
    assert_int_equal(c->auth.nkeys, 2);
    assert_string_equal(c->auth.keys[0].kid, "k1");
    assert_string_equal(c->auth.keys[0].file, "k1.pem");
    assert_null(c->auth.keys[0].secret);
    assert_null(c->auth.keys[1].kid);
    assert_string_equal(c->auth.keys[1].secret, "s3cret");
    assert_string_equal(c->auth.jwks_file, "jwks.json");
    assert_string_equal(c->auth.issuer, "https://auth/");
    assert_string_equal(c->auth.audience, "wsb");
    assert_int_equal(c->auth.leeway_s, 5);
    assert_false(c->auth.require_exp);
    assert_string_equal(c->auth.permissions_claim, "wsb");

    assert_int_equal(c->nacl, 3);
    assert_int_equal(c->acl[0].when_op, WSB_WHEN_HAS);
    assert_string_equal(c->acl[0].when_claim, "roles");
    assert_string_equal(c->acl[0].when_value, "admin");
    assert_int_equal(c->acl[1].when_op, WSB_WHEN_NONE);
    assert_int_equal(c->acl[1].nsubscribe, 2);
    assert_string_equal(c->acl[1].subscribe[1], "user.{sub}.**");
    assert_string_equal(c->acl[1].publish[0], "chat.{sub}");
    assert_int_equal(c->acl[2].when_op, WSB_WHEN_EQUALS);
    assert_int_equal(c->acl[2].npublish, 0);

    assert_int_equal(c->nconnectors, 1);
    assert_string_equal(c->connectors[0].name, "m");
    assert_string_equal(c->connectors[0].type, "memory");
    assert_true(json_is_object(c->connectors[0].conf));

    assert_int_equal(c->nchannels, 3);
    assert_string_equal(c->channels[0].match, "orders");
    assert_non_null(c->channels[0].pattern);
    assert_int_equal(c->channels[0].connector, 0);
    assert_int_equal(c->channels[0].delivery, WSB_DELIVERY_BROADCAST);
    assert_int_equal(c->channels[0].max_unacked, 100);
    assert_int_equal(c->channels[0].policy, -1);
    assert_true(c->channels[0].allow_publish);
    /* The broker members are the rule's object, as written. */
    assert_int_equal(json_object_size(c->channels[0].fields), 1);
    assert_string_equal(wsb_connector_field(c->channels[0].fields, "topic"), "orders.v1");
    assert_null(json_object_get(c->channels[0].fields, "exchange"));
    assert_int_equal(c->channels[1].policy, WSB_POLICY_DROP_OLDEST);
    assert_false(c->channels[1].allow_publish);
    assert_null(json_object_get(c->channels[1].fields, "routing_key"));
    assert_int_equal(c->channels[2].delivery, WSB_DELIVERY_ACK);
    assert_int_equal(c->channels[2].max_unacked, 10);

    assert_int_equal(c->limits.max_connections, 10);
    assert_int_equal(c->limits.max_message_bytes, 125);
    assert_true(c->limits.handshake_rate_per_s == 0.5);
    assert_true(c->limits.handshake_rate_burst == 2);
    assert_true(c->limits.inbound_bytes_per_s == 1000000);
    assert_true(c->limits.inbound_rate_per_s == 50); /* untouched sibling keeps its default */
    assert_int_equal(c->limits.send_policy, WSB_POLICY_DROP_OLDEST);
    assert_string_equal(c->log_level, "debug");
    assert_false(c->log_json);
    wsb_config_unref(c);
}

/* A channel rule's broker members are its connector's: the keys the connector type lists are
 * kept (as written) in the rule's object, any other key is unknown, with a suggestion from the
 * connector's keys or the core's; a member the connector already explains is reported once. */
static void test_broker_members(void **state)
{
    (void)state;
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"topic\": \"t\", \"topik\": \"t\"}]}",
               "channels[0].topik: unknown key (did you mean \"topic\"?)");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"topic\": \"t\", \"delivry\": \"ack\"}]}",
               "channels[0].delivry: unknown key (did you mean \"delivery\"?)");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"topic\": \"t\", \"partition\": 1}]}",
               "channels[0].partition: unknown key");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"topic\": \"t\", \"exchange\": \"x\"}]}",
               "channels[0].exchange: not used by a memory channel");
    assert_int_equal(nerrs, 1);
    /* A rule without a connector: only keys no connector type knows are unknown. */
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"topic\": \"t\"}]}",
               "channels[0].connector: missing required key");
    assert_int_equal(nerrs, 1);
    /* Templates in every string member; non-string members are the connector's to refuse. */
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\": \"m\","
               " \"topic\": \"t\", \"group\": \"g{2}\"}]}",
               "channels[0].group: {2} refers to a capture");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\": \"m\","
               " \"topic\": 5}]}",
               "channels[0].topic: must be a non-empty string");
    struct wsb_config *c = load("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\":"
                                " \"m\", \"group\": \"g-{1}\", \"topic\": \"t-{1}\"}]}");
    assert_non_null(c);
    assert_int_equal(json_object_size(c->channels[0].fields), 2);
    assert_string_equal(wsb_connector_field(c->channels[0].fields, "group"), "g-{1}");
    assert_ptr_equal(c->channels[0].ops, wsb_connector_find("memory"));
    wsb_config_unref(c);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_err("{\"listn\": \"x:1\"}", "listn: unknown key (did you mean \"listen\"?)");
    expect_err("{\"limits\": {\"send_bufer\": {}}}",
               "limits.send_bufer: unknown key (did you mean \"send_buffer\"?)");
    expect_err("{\"limits\": {\"send_buffer\": {\"polcy\": \"disconnect\"}}}",
               "limits.send_buffer.polcy: unknown key");
    expect_err("{\"auth\": {\"jwt\": {\"keys\": [{\"fiel\": \"k.pem\"}]}}}",
               "auth.jwt.keys[0].fiel: unknown key");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\"},"
               " {\"match\": \"b\", \"conector\": \"m\"}]}",
               "channels[1].conector: unknown key");
    expect_err("{\"acl\": [{\"subscrib\": [\"a\"]}]}", "acl[0].subscrib: unknown key");
    expect_err("{\"acl\": [{\"when\": {\"clam\": \"x\", \"has\": \"y\"}}]}",
               "acl[0].when.clam: unknown key");
    expect_err("{\"admin\": {\"listen\": \"a:1\", \"port\": 1}}", "admin.port: unknown key");
    expect_err("{\"log\": {\"lvl\": \"info\"}}", "log.lvl: unknown key");
    expect_err("{\"tls\": {\"cert\": \"a\", \"key\": \"b\", \"ca\": \"c\"}}",
               "tls.ca: unknown key");
    /* A dotted key is not a path. */
    expect_err("{\"limits.max_connections\": 5}", "limits.max_connections: unknown key");
    /* Strict JSON: duplicate keys and trailing garbage are errors. */
    expect_err("{\"listen\": \"a:1\", \"listen\": \"b:2\"}", "duplicate");
    expect_err("{} x", "line 1");
    expect_err("", "line");
    expect_err("[]", "expected an object at the top level");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_err("{\"listen\": 8080}", "listen: expected a string, got an integer");
    expect_err("{\"workers\": \"4\"}", "workers: expected an integer, got a string");
    expect_err("{\"workers\": 1.5}", "workers: expected an integer, got a number");
    expect_err("{\"permessage_deflate\": 1}", "permessage_deflate: expected a boolean");
    expect_err("{\"limits\": []}", "limits: expected an object, got an array");
    expect_err("{\"limits\": {\"inbound_rate\": {\"per_second\": \"50\"}}}",
               "limits.inbound_rate.per_second: expected a number, got a string");
    expect_err("{\"allowed_origins\": \"*\"}", "allowed_origins: expected an array of strings");
    expect_err("{\"allowed_origins\": [\"a\", 2]}", "allowed_origins[1]: expected a string");
    expect_err("{\"channels\": {}}", "channels: expected an array of objects");
    expect_err("{\"channels\": [1]}", "channels[0]: expected an object, got an integer");
    expect_err("{\"acl\": [{\"subscribe\": \"a\"}]}", "acl[0].subscribe: expected an array");
    expect_err("{\"connectors\": []}", "connectors: expected an object, got an array");
    expect_err("{\"connectors\": {\"m\": \"memory\"}}", "connectors.m: expected an object");
    expect_err("{\"connectors\": {\"m\": {\"type\": 1}}}", "connectors.m.type: expected a string");
    expect_err("{\"listen\": null}", "listen: expected a string, got null");
    expect_err("{\"log\": {\"format\": true}}", "log.format: expected a string");
    expect_err("{\"auth\": {\"refusal\": 401, \"jwt\": {\"jwks_file\": \"j\"}}}",
               "auth.refusal: expected a string");
}

static void test_ranges_and_enums(void **state)
{
    (void)state;
    expect_err("{\"workers\": -1}", "workers: must be between 0 and 1024");
    expect_err("{\"limits\": {\"max_message_bytes\": 124}}",
               "limits.max_message_bytes: must be between 125 and 67108864");
    expect_err("{\"limits\": {\"max_message_bytes\": 67108865}}", "limits.max_message_bytes");
    expect_ok("{\"limits\": {\"max_message_bytes\": 67108864}}");
    expect_err("{\"limits\": {\"max_connections\": 0}}", "limits.max_connections: must be");
    expect_err("{\"limits\": {\"max_connections\": 4294967296}}", "limits.max_connections");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"leeway_s\": 3601}}}",
               "auth.jwt.leeway_s: must be between 0 and 3600");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"leeway_s\": -1}}}",
               "auth.jwt.leeway_s");
    expect_err("{\"limits\": {\"send_buffer\": {\"soft_bytes\": 10, \"hard_bytes\": 5}}}",
               "limits.send_buffer.soft_bytes: must not exceed hard_bytes");
    expect_err("{\"limits\": {\"send_buffer\": {\"policy\": \"drop\"}}}",
               "limits.send_buffer.policy: unknown value \"drop\"");
    expect_err("{\"log\": {\"level\": \"loud\"}}", "log.level: unknown value \"loud\"");
    expect_err("{\"log\": {\"format\": \"xml\"}}", "log.format: unknown value \"xml\"");
    expect_err("{\"auth\": {\"refusal\": \"403\", \"jwt\": {\"jwks_file\": \"j\"}}}",
               "auth.refusal: unknown value");
}

static void test_internal_topic_literal(void **state)
{
    (void)state;
    expect_err("{\"connectors\": {\"m\": {\"type\": \"memory\"}}, \"channels\": [{\"match\": "
               "\"o\", \"connector\": \"m\", \"topic\": \"__consumer_offsets\"}]}",
               "channels[0].topic: topics beginning with \"__\" are internal");
    expect_err("{\"connectors\": {\"m\": {\"type\": \"memory\"}}, \"channels\": [{\"match\": "
               "\"o.*\", \"connector\": \"m\", \"topic\": \"t\", \"dead_letter_topic\": "
               "\"__{1}\"}]}",
               "channels[0].dead_letter_topic: topics beginning with \"__\" are internal");
    expect_ok("{\"connectors\": {\"m\": {\"type\": \"memory\"}}, \"channels\": [{\"match\": "
              "\"o.*\", \"connector\": \"m\", \"topic\": \"_{1}\"}]}");
}

/* Values each in range that together would refuse every message or handshake. */
static void test_limits_that_refuse_everything(void **state)
{
    (void)state;
    expect_err("{\"limits\": {\"inbound_rate\": {\"per_second\": 10, \"burst\": 0.5}}}",
               "limits.inbound_rate.burst: must be at least 1");
    expect_err("{\"limits\": {\"inbound_rate\": {\"per_second\": 10, \"burst\": 0}}}",
               "limits.inbound_rate.burst: must be at least 1");
    expect_ok("{\"limits\": {\"inbound_rate\": {\"per_second\": 10, \"burst\": 1}}}");
    expect_ok("{\"limits\": {\"inbound_rate\": {\"per_second\": 0, \"burst\": 0}}}");
    expect_err("{\"limits\": {\"handshake_rate_per_ip\": {\"per_second\": 1, \"burst\": 0}}}",
               "limits.handshake_rate_per_ip.burst: must be at least 1");
    expect_ok("{\"limits\": {\"handshake_rate_per_ip\": {\"per_second\": 0, \"burst\": 0}}}");
    /* the default max_message_bytes is 1 MiB */
    expect_err("{\"limits\": {\"inbound_bytes\": {\"per_second\": 1000, \"burst\": 1048575}}}",
               "limits.inbound_bytes.burst: must be at least max_message_bytes (1048576)");
    expect_err("{\"limits\": {\"inbound_bytes\": {\"per_second\": 1000}}}",
               "limits.inbound_bytes.burst: must be at least max_message_bytes");
    expect_ok("{\"limits\": {\"inbound_bytes\": {\"per_second\": 1000, \"burst\": 1048576}}}");
    expect_ok("{\"limits\": {\"max_message_bytes\": 4096,"
              " \"inbound_bytes\": {\"per_second\": 1000, \"burst\": 4096}}}");
    expect_ok("{\"limits\": {\"inbound_bytes\": {\"per_second\": 0, \"burst\": 5}}}");
    /* an upgrade path no request can have: every upgrade would be 404 */
    const char *bad_paths[] = {"ws", "", "/ws?x=1", "/w s", "/ws#a", "/ws\\t"};
    char text[128];
    for (size_t i = 0; i < WSB_ARRAY_LEN(bad_paths); i++) {
        snprintf(text, sizeof(text), "{\"path\": \"%s\"}", bad_paths[i]);
        expect_err(text, "path: must begin with \"/\"");
    }
    expect_ok("{\"path\": \"/\"}");
    expect_ok("{\"path\": \"/api/v1/socket\"}");
}

static void test_listen(void **state)
{
    (void)state;
    expect_ok("{\"listen\": \"0.0.0.0:0\"}");
    expect_ok("{\"listen\": \"localhost:65535\"}");
    expect_ok("{\"listen\": \"[::]:8080\"}");
    expect_ok("{\"admin\": {\"listen\": \"[fe80::1]:1\"}}");
    const char *bad[] = {"8080",   ":8080",   "host:", "host:65536",  "host:80a",
                         "::1:80", "[::1]80", "[]:80", "host:123456", "[::1]:"};
    char text[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "{\"listen\": \"%s\"}", bad[i]);
        expect_err(text, "listen: ");
        snprintf(text, sizeof(text), "{\"admin\": {\"listen\": \"%s\"}}", bad[i]);
        expect_err(text, "admin.listen: ");
    }
}

static void test_admin_tls(void **state)
{
    (void)state;
    struct wsb_config *c = load("{\"admin\": null}");
    assert_non_null(c);
    assert_null(c->admin_listen);
    wsb_config_unref(c);
    c = load("{\"tls\": null}");
    assert_non_null(c);
    assert_null(c->tls_cert);
    wsb_config_unref(c);
    expect_err("{\"tls\": {\"cert\": \"a\"}}", "tls: \"cert\" and \"key\" are required together");
    expect_err("{\"tls\": {\"key\": \"a\"}}", "tls: \"cert\" and \"key\"");
    expect_err("{\"tls\": {\"client_ca\": \"a\"}}", "tls.client_ca");
    expect_err("{\"path\": null}", "path: expected a string");
}

static void test_auth(void **state)
{
    (void)state;
    expect_err("{\"auth\": {}}", "auth.jwt: missing required key");
    expect_err("{\"auth\": {\"jwt\": {}}}",
               "auth.jwt: at least one of \"keys\" or \"jwks_file\" is required");
    expect_err("{\"auth\": {\"jwt\": {\"keys\": [{\"file\": \"a\", \"secret\": \"b\"}]}}}",
               "auth.jwt.keys[0]: exactly one of \"file\" or \"secret\" is required");
    expect_err("{\"auth\": {\"jwt\": {\"keys\": [{\"kid\": \"a\"}]}}}",
               "auth.jwt.keys[0]: exactly one of");
    expect_err("{\"auth\": {\"jwt\": {\"keys\": [{\"secret\": \"\"}]}}}",
               "auth.jwt.keys[0]: \"secret\" must not be empty");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"algorithms\": [\"none\"]}}}",
               "auth.jwt.algorithms[0]: \"none\" is never accepted");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"algorithms\": [\"NONE\"]}}}",
               "\"none\" is never accepted");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"algorithms\": [\"HS256\", "
               "\"PS256\"]}}}",
               "auth.jwt.algorithms[1]: unknown algorithm \"PS256\"");
    expect_err("{\"auth\": {\"jwt\": {\"jwks_file\": \"j\", \"algorithms\": []}}}",
               "auth.jwt.algorithms: expected a non-empty array");
    expect_err("{\"auth\": {\"token_sources\": [\"header\", \"body\"], \"jwt\": "
               "{\"jwks_file\": \"j\"}}}",
               "auth.token_sources[1]: unknown token source \"body\"");
    expect_err("{\"auth\": {\"token_sources\": [\"cookie:\"], \"jwt\": {\"jwks_file\": \"j\"}}}",
               "auth.token_sources[0]");
    expect_err("{\"auth\": {\"token_sources\": [\"cookie:a;b\"], \"jwt\": "
               "{\"jwks_file\": \"j\"}}}",
               "auth.token_sources[0]");
    expect_err("{\"auth\": {\"token_sources\": [], \"jwt\": {\"jwks_file\": \"j\"}}}",
               "auth.token_sources: expected a non-empty array");
    /* cross-site WebSocket hijacking: a cookie source needs listed origins, or ["*"] */
    expect_err("{\"auth\": {\"token_sources\": [\"header\", \"cookie:t\"], \"jwt\": "
               "{\"jwks_file\": \"j\"}}}",
               "allowed_origins: required with the cookie token source (auth.token_sources[1])");
    expect_err("{\"allowed_origins\": [], \"auth\": {\"token_sources\": [\"cookie:t\"], "
               "\"jwt\": {\"jwks_file\": \"j\"}}}",
               "allowed_origins: required with the cookie token source (auth.token_sources[0])");
    expect_ok("{\"allowed_origins\": [\"*\"], \"auth\": {\"token_sources\": [\"cookie:t\"], "
              "\"jwt\": {\"jwks_file\": \"j\"}}}");
    expect_ok("{\"allowed_origins\": [\"https://a.example\"], \"auth\": {\"token_sources\": "
              "[\"cookie:t\"], \"jwt\": {\"jwks_file\": \"j\"}}}");
    expect_ok("{\"auth\": {\"token_sources\": [\"header\", \"subprotocol\"], \"jwt\": "
              "{\"jwks_file\": \"j\"}}}");

    struct wsb_config *c = load("{\"auth\": {\"jwt\": {\"jwks_file\": \"j.json\"}}}");
    assert_non_null(c);
    assert_true(c->auth.enabled);
    assert_int_equal(c->auth.nkeys, 0);
    assert_null(c->auth.cookie_name);
    wsb_config_unref(c);
}

static void test_acl(void **state)
{
    (void)state;
    expect_err("{\"acl\": [{\"subscribe\": [\"a.**.b\"]}]}",
               "acl[0].subscribe[0]: bad pattern \"a.**.b\"");
    expect_err("{\"acl\": [{\"publish\": [\"ok\", \"a*\"]}]}", "acl[0].publish[1]: bad pattern");
    expect_err("{\"acl\": [{\"subscribe\": [\"x.{evil}\"]}]}", "acl[0].subscribe[0]: bad pattern");
    expect_err("{\"acl\": [{\"subscribe\": [\"x.{claim.}\"]}]}", "acl[0].subscribe[0]");
    expect_err("{\"acl\": [{\"subscribe\": [\"\"]}]}", "acl[0].subscribe[0]");
    expect_err("{\"acl\": [{\"when\": {\"claim\": \"r\"}}]}",
               "acl[0].when: exactly one of \"has\" or \"equals\" is required");
    expect_err("{\"acl\": [{\"when\": {\"claim\": \"r\", \"has\": \"a\", \"equals\": \"b\"}}]}",
               "acl[0].when: exactly one of");
    expect_err("{\"acl\": [{\"when\": {\"has\": \"a\"}}]}", "acl[0].when.claim: missing required");
    expect_err("{\"acl\": [{\"when\": {\"claim\": \"r\", \"has\": 1}}]}",
               "acl[0].when.has: expected a string");
    expect_err("{\"acl\": [{\"when\": []}]}", "acl[0].when: expected an object");
    expect_ok("{\"acl\": [{\"subscribe\": [\"u-{sub}.{claim.team}.*\", \"**\"]}]}");
}

static void test_connectors_and_channels(void **state)
{
    (void)state;
    expect_err("{\"connectors\": {\"k\": {\"type\": \"kafak\"}}}",
               "connectors.k.type: unknown connector type \"kafak\"");
    expect_err("{\"connectors\": {\"k\": {}}}", "connectors.k.type: missing required key");
    /* A declared but invalid connector is reported once, not again by each channel. */
    expect_err("{\"connectors\": {\"k\": {\"type\": \"kafak\"}},"
               " \"channels\": [{\"match\": \"a\", \"connector\": \"k\", \"topic\": \"t\"}]}",
               "connectors.k.type: unknown connector type");
    assert_int_equal(nerrs, 1);
    expect_err("{\"connectors\": {\"a.b\": {\"type\": \"memory\"}}}", "connectors.a.b: connector");
    expect_err("{\"connectors\": {\"\": {\"type\": \"memory\"}}}", "connector names");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\"},"
               " {\"match\": \"b\", \"connector\": \"m\"},"
               " {\"match\": \"c\", \"connector\": \"kafak\"}]}",
               "channels[2].connector: unknown connector \"kafak\"");
    expect_err("{" MEM ", \"channels\": [{\"connector\": \"m\"}]}",
               "channels[0].match: missing required key");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\"}]}",
               "channels[0].connector: missing required key");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a.{sub}\", \"connector\": \"m\"}]}",
               "channels[0].match: bad pattern");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a.**.b\", \"connector\": \"m\"}]}",
               "channels[0].match: bad pattern");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\": \"m\","
               " \"topic\": \"t-{2}\"}]}",
               "channels[0].topic: {2} refers to a capture");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"group\": \"g-{1}\"}]}",
               "channels[0].group: {1}");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"delivery\": \"fanout\"}]}",
               "channels[0].delivery: unknown value \"fanout\"");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"max_unacked\": 0}]}",
               "channels[0].max_unacked: must be between 1");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"policy\": \"keep\"}]}",
               "channels[0].policy: unknown value");
    expect_err("{" MEM ", \"channels\": [{\"match\": \"a\", \"connector\": \"m\","
               " \"publish\": \"yes\"}]}",
               "channels[0].publish: expected a boolean");
    expect_ok("{" MEM ", \"channels\": [{\"match\": \"a.*.**\", \"connector\": \"m\","
              " \"topic\": \"{1}-{2}\", \"dead_letter_topic\": \"d{2}\"}]}");
}

static void test_env(void **state)
{
    (void)state;
    setenv("WSB_TEST_LISTEN", "127.0.0.1:7000", 1);
    setenv("WSB_TEST_SECRET", "from-env", 1);
    unsetenv("WSB_TEST_UNSET");
    struct wsb_config *c =
        load("{\"listen\": \"${WSB_TEST_LISTEN}\", \"path\": \"/${WSB_TEST_UNSET:-ws2}\","
             " \"auth\": {\"jwt\": {\"keys\": [{\"secret\": \"${WSB_TEST_SECRET}\"}]}},"
             " \"log\": {\"level\": \"${WSB_TEST_UNSET:-warn}\"},"
             " \"allowed_origins\": [\"$${literal}\", \"5$\"]}");
    assert_non_null(c);
    assert_string_equal(c->listen, "127.0.0.1:7000");
    assert_string_equal(c->path, "/ws2");
    assert_string_equal(c->auth.keys[0].secret, "from-env");
    assert_string_equal(c->log_level, "warn");
    assert_string_equal(c->allowed_origins[0], "${literal}");
    assert_string_equal(c->allowed_origins[1], "5$");
    wsb_config_unref(c);

    expect_err("{\"auth\": {\"jwt\": {\"keys\": [{\"secret\": \"${WSB_TEST_UNSET}\"}]}}}",
               "auth.jwt.keys[0].secret: environment variable WSB_TEST_UNSET is not set");
    expect_err("{\"connectors\": {\"m\": {\"type\": \"${WSB_TEST_UNSET}\"}}}",
               "connectors.m.type: environment variable WSB_TEST_UNSET");
    expect_err("{\"acl\": [{\"subscribe\": [\"${WSB_TEST_UNSET\"]}]}", "acl[0].subscribe[0]: ");
    /* The expanded value is validated like a literal one. */
    setenv("WSB_TEST_PORT", "x", 1);
    expect_err("{\"listen\": \"0.0.0.0:${WSB_TEST_PORT}\"}", "listen: \"0.0.0.0:x\"");
}

static void test_many_errors(void **state)
{
    (void)state;
    expect_err("{\"listn\": 1, \"workers\": \"x\", \"limits\": {\"max_connections\": -5},"
               " \"acl\": [{\"subscribe\": [\"a**\"]}], \"log\": {\"level\": \"x\"}}",
               "listn");
    assert_int_equal(nerrs, 5);
    assert_non_null(strstr(errs, "workers: "));
    assert_non_null(strstr(errs, "limits.max_connections: "));
    assert_non_null(strstr(errs, "acl[0].subscribe[0]: "));
    assert_non_null(strstr(errs, "log.level: "));
}

static void test_demo(void **state)
{
    (void)state;
    setenv("WSBRIDGE_DEMO_SECRET", "demo-secret-0123456789", 1);
    setenv("WSBRIDGE_DEMO_BROKERS", "127.0.0.1:19092", 1);
    struct wsb_config *c = wsb_config_load(NULL, true, collect, NULL);
    assert_non_null(c);
    assert_true(c->demo);
    assert_string_equal(c->file, "<demo>");
    /* The demo page hands out a valid token: loopback only unless an overlay says otherwise. */
    assert_string_equal(c->listen, "127.0.0.1:8080");
    assert_string_equal(c->admin_listen, "127.0.0.1:9090");
    assert_true(c->auth.enabled);
    assert_int_equal(c->auth.algorithms, WSB_ALG_HS256);
    assert_int_equal(c->auth.nkeys, 1);
    assert_string_equal(c->auth.keys[0].secret, "demo-secret-0123456789");
    assert_int_equal(c->nacl, 1);
    assert_int_equal(c->nconnectors, 1);
    assert_string_equal(c->connectors[0].name, "demo");
    assert_string_equal(c->connectors[0].type, "kafka");
    assert_string_equal(json_string_value(json_object_get(c->connectors[0].conf, "brokers")),
                        "127.0.0.1:19092");
    assert_int_equal(c->nchannels, 2);

    struct wsb_route r;
    assert_int_equal(wsb_config_route(c, "demo.ticks", 10, &r), 0);
    assert_string_equal(wsb_connector_field(r.fields, "topic"), "demo.ticks");
    wsb_config_route_cleanup(&r);
    assert_int_equal(wsb_config_route(c, "demo.chat", 9, &r), 0);
    assert_string_equal(wsb_connector_field(r.fields, "topic"), "demo-chat");
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);

    unsetenv("WSBRIDGE_DEMO_SECRET");
    c = wsb_config_load(NULL, true, collect, NULL);
    assert_non_null(c);
    assert_string_equal(c->auth.keys[0].secret, WSB_CONFIG_DEMO_PLACEHOLDER_SECRET);
    wsb_config_unref(c);

    /* A file overlays the demo: its top-level keys win. */
    const char *overlay = "{\"listen\": \"127.0.0.1:9999\", \"log\": {\"level\": \"debug\"}}";
    errs[0] = '\0';
    c = wsb_config_load_text("test.json", overlay, strlen(overlay), true, collect, NULL);
    assert_non_null(c);
    assert_string_equal(c->listen, "127.0.0.1:9999");
    assert_string_equal(c->log_level, "debug");
    assert_true(c->auth.enabled);
    assert_int_equal(c->nchannels, 2);
    wsb_config_unref(c);
}

static void test_check_file(void **state)
{
    (void)state;
    char path[] = "/tmp/wsb_config_test_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"listen\": \"0.0.0.0:1\"}", f);
    fclose(f);

    char *out = NULL;
    size_t outlen = 0;
    FILE *mem = open_memstream(&out, &outlen);
    assert_int_equal(wsb_config_check_file(path, mem), 0);
    fclose(mem);
    assert_string_equal(out, "ok\n");
    free(out);

    f = fopen(path, "w");
    fputs("{\"listen\": 1, \"limits\": {\"x\": 1}}", f);
    fclose(f);
    mem = open_memstream(&out, &outlen);
    assert_int_equal(wsb_config_check_file(path, mem), 1);
    fclose(mem);
    char want[256];
    snprintf(want, sizeof(want), "%s: listen: expected a string, got an integer\n", path);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want), "%s: limits.x: unknown key\n", path);
    assert_non_null(strstr(out, want));
    free(out);
    unlink(path);

    mem = open_memstream(&out, &outlen);
    assert_int_equal(wsb_config_check_file("/nonexistent/wsb.json", mem), 1);
    fclose(mem);
    assert_non_null(strstr(out, "/nonexistent/wsb.json: "));
    free(out);
}

static void test_restart_needed(void **state)
{
    (void)state;
    struct wsb_config *a = load("{" MEM ", \"limits\": {\"max_connections\": 5}}");
    struct wsb_config *b = load("{" MEM ", \"limits\": {\"max_connections\": 6},"
                                " \"log\": {\"level\": \"debug\"}}");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(wsb_config_restart_needed(a, b, NULL, NULL), 0);
    wsb_config_unref(b);

    b = load("{\"connectors\": {\"m\": {\"type\": \"memory\"}, \"n\": {\"type\": \"memory\"}},"
             " \"listen\": \"0.0.0.0:1\", \"admin\": null, \"workers\": 2}");
    assert_non_null(b);
    errs[0] = '\0';
    nerrs = 0;
    assert_int_equal(wsb_config_restart_needed(a, b, collect, NULL), 4);
    assert_non_null(strstr(errs, "listen: changed"));
    assert_non_null(strstr(errs, "admin.listen: changed"));
    assert_non_null(strstr(errs, "workers: changed"));
    assert_non_null(strstr(errs, "connectors: changed"));
    wsb_config_unref(a);
    wsb_config_unref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_broker_members),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_ranges_and_enums),
        cmocka_unit_test(test_limits_that_refuse_everything),
        cmocka_unit_test(test_internal_topic_literal),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_admin_tls),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_acl),
        cmocka_unit_test(test_connectors_and_channels),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_many_errors),
        cmocka_unit_test(test_demo),
        cmocka_unit_test(test_check_file),
        cmocka_unit_test(test_restart_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
