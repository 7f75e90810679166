/* Unit tests for config/route.c: first match wins, captures, `**`, broker-name expansion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "connectors/connector.h"

static void print_problem(void *ctx, const char *file, const char *path, const char *msg)
{
    (void)ctx;
    print_error("%s: %s: %s\n", file, path, msg);
}

static struct wsb_config *load(const char *text)
{
    return wsb_config_load_text("route.json", text, strlen(text), false, print_problem, NULL);
}

#define MEM "\"connectors\": {\"m\": {\"type\": \"memory\"}}"

/* A string member of the last route's broker object ("" when absent). */
#define F(key) wsb_connector_field(r.fields, key)

static void test_route(void **state)
{
    (void)state;
    struct wsb_config *c =
        load("{" MEM ", \"channels\": ["
             " {\"match\": \"orders\", \"connector\": \"m\", \"topic\": \"orders.v1\"},"
             " {\"match\": \"prices.eur\", \"connector\": \"m\", \"topic\": \"special\"},"
             " {\"match\": \"prices.*\", \"connector\": \"m\", \"topic\": \"prices-{1}\"},"
             " {\"match\": \"alerts.**\", \"connector\": \"m\", \"topic\": \"alerts.{1}\"},"
             " {\"match\": \"work.*.*\", \"connector\": \"m\", \"topic\": \"work-{2}-{1}\","
             "  \"group\": \"g-{1}\", \"dead_letter_topic\": \"{1}.dlq\"},"
             " {\"match\": \"**\", \"connector\": \"m\", \"topic\": \"catchall\"}]}");
    assert_non_null(c);
    struct wsb_route r = {0};
#define ROUTE(name) (wsb_config_route_cleanup(&r), wsb_config_route(c, name, strlen(name), &r))
    assert_int_equal(ROUTE("orders"), 0);
    assert_ptr_equal(r.rule, &c->channels[0]);
    assert_string_equal(F("topic"), "orders.v1");
    assert_string_equal(F("exchange"), "");
    /* First match wins, in file order. */
    assert_int_equal(ROUTE("prices.eur"), 0);
    assert_string_equal(F("topic"), "special");
    assert_int_equal(ROUTE("prices.usd"), 0);
    assert_ptr_equal(r.rule, &c->channels[2]);
    assert_string_equal(F("topic"), "prices-usd");
    assert_int_equal(ROUTE("alerts.eu.disk.full"), 0);
    assert_string_equal(F("topic"), "alerts.eu.disk.full");
    assert_string_equal(F("exchange"), "");
    assert_string_equal(F("queue"), "");
    assert_int_equal(ROUTE("work.a.b"), 0);
    assert_string_equal(F("topic"), "work-b-a");
    assert_string_equal(F("group"), "g-a");
    assert_string_equal(F("dead_letter_topic"), "a.dlq");
    assert_int_equal(ROUTE("prices.a.b"), 0);
    assert_ptr_equal(r.rule, &c->channels[5]);
    assert_int_equal(ROUTE("orders.x"), 0);
    assert_string_equal(F("topic"), "catchall");
    assert_int_equal(ROUTE("bad..name"), -1);
    assert_int_equal(ROUTE(""), -1);
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);

    c = load("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\": \"m\","
             " \"topic\": \"{1}\"}]}");
    assert_non_null(c);
    assert_int_equal(ROUTE("a"), -1);
    assert_int_equal(ROUTE("b.c"), -1);
    assert_int_equal(ROUTE("a.b.c"), -1);
    assert_int_equal(ROUTE("a.b"), 0);
    assert_string_equal(F("topic"), "b");
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);

    /* An expansion that does not fit in the route is refused. */
    char name[WSB_CHANNEL_MAX + 1];
    memset(name, 'x', sizeof(name));
    name[0] = 'a';
    name[1] = '.';
    name[WSB_CHANNEL_MAX] = '\0';
    c = load("{" MEM ", \"channels\": [{\"match\": \"a.*\", \"connector\": \"m\","
             " \"topic\": \"{1}{1}\"}]}");
    assert_non_null(c);
    assert_int_equal(ROUTE(name), -1);
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);
#undef ROUTE
}

/* Topics beginning with "__" (Kafka's internal topics) are never reachable: a literal one is
 * a config error, one spelled by a capture routes to WSB_ROUTE_FORBIDDEN (forbidden) and does
 * not fall through to a later rule. */
static void test_internal_topics(void **state)
{
    (void)state;
    struct wsb_config *c =
        load("{" MEM ", \"channels\": ["
             " {\"match\": \"raw.**\", \"connector\": \"m\", \"topic\": \"{1}\"},"
             " {\"match\": \"pre.*\", \"connector\": \"m\", \"topic\": \"_{1}\"},"
             " {\"match\": \"dl.*\", \"connector\": \"m\", \"topic\": \"t\","
             "  \"dead_letter_topic\": \"{1}\"},"
             " {\"match\": \"**\", \"connector\": \"m\", \"topic\": \"catchall\"}]}");
    assert_non_null(c);
    struct wsb_route r = {0};
#define ROUTE(name) (wsb_config_route_cleanup(&r), wsb_config_route(c, name, strlen(name), &r))
    assert_int_equal(ROUTE("raw.__consumer_offsets"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("raw.__transaction_state"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("raw.__"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("raw.__a.b"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("raw._x"), 0);
    assert_string_equal(F("topic"), "_x");
    assert_int_equal(ROUTE("raw.a.__b"), 0); /* "a.__b" does not begin with __ */
    assert_int_equal(ROUTE("raw.orders"), 0);
    assert_string_equal(F("topic"), "orders");
    assert_int_equal(ROUTE("pre._offsets"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("pre.offsets"), 0);
    assert_string_equal(F("topic"), "_offsets");
    assert_int_equal(ROUTE("dl.__x"), WSB_ROUTE_FORBIDDEN);
    assert_int_equal(ROUTE("dl.x"), 0);
    assert_int_equal(ROUTE("nothing.__x"), 0); /* the catch-all's topic is literal */
    assert_string_equal(F("topic"), "catchall");
#undef ROUTE
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);
    assert_true(wsb_connector_topic_internal("__consumer_offsets"));
    assert_false(wsb_connector_topic_internal("_a_"));
    assert_false(wsb_connector_topic_internal(""));
    assert_false(wsb_connector_topic_internal(NULL));
}

/* AMQP broker fields; runs once the amqp connector is in the registry. */
static void test_route_amqp(void **state)
{
    (void)state;
    if (!wsb_connector_find("amqp"))
        skip();
    struct wsb_config *c =
        load("{\"connectors\": {\"r\": {\"type\": \"amqp\","
             "   \"url\": \"amqp://guest:guest@localhost:5672/%2f\"}},"
             " \"channels\": ["
             " {\"match\": \"alerts.**\", \"connector\": \"r\", \"exchange\": \"alerts\","
             "  \"binding_key\": \"{1}\"},"
             " {\"match\": \"jobs.*\", \"connector\": \"r\", \"queue\": \"jobs-{1}\","
             "  \"delivery\": \"ack\"}]}");
    assert_non_null(c);
    /* The default routing key is the amqp connector's business, not the config's. */
    assert_null(json_object_get(c->channels[0].fields, "routing_key"));
    struct wsb_route r = {0};
    assert_int_equal(wsb_config_route(c, "alerts.eu.disk", 14, &r), 0);
    assert_int_equal(json_object_size(r.fields), 2);
    assert_string_equal(F("exchange"), "alerts");
    assert_string_equal(F("binding_key"), "eu.disk");
    assert_string_equal(F("topic"), "");
    wsb_config_route_cleanup(&r);
    assert_int_equal(wsb_config_route(c, "jobs.x", 6, &r), 0);
    assert_string_equal(F("queue"), "jobs-x");
    wsb_config_route_cleanup(&r);
    wsb_config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_internal_topics),
        cmocka_unit_test(test_route_amqp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
