/* Tests for auth/acl.c: table-driven grants, template injection, claim conditions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/acl.h"

#define S WSB_ACL_SUBSCRIBE
#define P WSB_ACL_PUBLISH

struct check {
    enum wsb_acl_action action;
    const char *channel;
    bool allowed;
};

struct acl_case {
    const char *name;
    const char *claims; /* JSON, or NULL for anonymous */
    struct check checks[12];
};

static char *sub_user[] = {"public.*", "user.{sub}.**"};
static char *pub_user[] = {"chat.{sub}"};
static char *all[] = {"**"};
static char *team_sub[] = {"team.{claim.team}.*"};
static char *tenant_sub[] = {"tenant.{claim.tenant}"};
static char *vip_sub[] = {"vip"};
static char *level_sub[] = {"level.five"};
static char *beta_sub[] = {"beta"};

static const struct wsb_acl_rule rules[] = {
    {.when_op = WSB_WHEN_HAS,
     .when_claim = "roles",
     .when_value = "admin",
     .subscribe = all,
     .nsubscribe = 1,
     .publish = all,
     .npublish = 1},
    {.subscribe = sub_user, .nsubscribe = 2, .publish = pub_user, .npublish = 1},
    {.subscribe = team_sub, .nsubscribe = 1},
    {.subscribe = tenant_sub, .nsubscribe = 1},
    {.when_op = WSB_WHEN_EQUALS,
     .when_claim = "plan",
     .when_value = "gold",
     .subscribe = vip_sub,
     .nsubscribe = 1},
    {.when_op = WSB_WHEN_EQUALS,
     .when_claim = "level",
     .when_value = "5",
     .subscribe = level_sub,
     .nsubscribe = 1},
    {.when_op = WSB_WHEN_EQUALS,
     .when_claim = "beta",
     .when_value = "true",
     .subscribe = beta_sub,
     .nsubscribe = 1},
};

static const struct acl_case cases[] = {
    {"plain user",
     "{\"sub\":\"u1\"}",
     {{S, "public.news", true},
      {S, "public.news.x", false},
      {S, "user.u1.inbox", true},
      {S, "user.u1.a.b", true},
      {S, "user.u1", false},
      {S, "user.u2.inbox", false},
      {P, "chat.u1", true},
      {P, "public.news", false},
      {S, "chat.u1", false},
      {P, "chat.u2", false}}},
    {"admin by role array",
     "{\"sub\":\"root\",\"roles\":[\"x\",\"admin\"]}",
     {{S, "anything.at.all", true}, {P, "orders", true}}},
    {"admin by role string", "{\"sub\":\"root\",\"roles\":\"admin\"}", {{P, "orders", true}}},
    {"not admin",
     "{\"sub\":\"u\",\"roles\":[\"administrator\",[\"admin\"],{\"a\":\"admin\"}]}",
     {{P, "orders", false}, {S, "orders", false}}},
    {"sub with wildcard",
     "{\"sub\":\"a.*\"}",
     {{S, "user.a.x", false},
      {S, "user.a.b.c", false},
      {P, "chat.a.b", false},
      {P, "chat.a", false},
      {S, "public.x", true}}},
    {"sub double star",
     "{\"sub\":\"**\"}",
     {{S, "user.x.y", false}, {P, "chat.x", false}, {P, "chat.x.y", false}}},
    {"sub with dot",
     "{\"sub\":\"x.y\"}",
     {{S, "user.x.y.z", false}, {P, "chat.x.y", false}, {P, "chat.x", false}}},
    {"sub empty",
     "{\"sub\":\"\"}",
     {{P, "chat", false}, {S, "user.x", false}, {S, "public.x", true}}},
    {"sub braces", "{\"sub\":\"{sub}\"}", {{P, "chat.sub", false}}},
    {"sub not a string", "{\"sub\":7}", {{P, "chat.7", false}}},
    {"team claim",
     "{\"sub\":\"u\",\"team\":\"red\"}",
     {{S, "team.red.board", true}, {S, "team.blue.board", false}, {S, "team.red", false}}},
    {"team claim injected", "{\"sub\":\"u\",\"team\":\"*\"}", {{S, "team.blue.board", false}}},
    {"team claim array", "{\"sub\":\"u\",\"team\":[\"red\"]}", {{S, "team.red.board", false}}},
    {"integer claim",
     "{\"sub\":\"u\",\"tenant\":42}",
     {{S, "tenant.42", true}, {S, "tenant.43", false}}},
    {"negative integer", "{\"sub\":\"u\",\"tenant\":-4}", {{S, "tenant.-4", true}}},
    {"real claim", "{\"sub\":\"u\",\"tenant\":4.5}", {{S, "tenant.4", false}}},
    {"equals string", "{\"sub\":\"u\",\"plan\":\"gold\"}", {{S, "vip", true}}},
    {"equals other", "{\"sub\":\"u\",\"plan\":\"golden\"}", {{S, "vip", false}}},
    {"equals in array is not equals", "{\"sub\":\"u\",\"plan\":[\"gold\"]}", {{S, "vip", false}}},
    {"equals number", "{\"sub\":\"u\",\"level\":5}", {{S, "level.five", true}}},
    {"equals number text", "{\"sub\":\"u\",\"level\":\"5\"}", {{S, "level.five", true}}},
    {"equals bool", "{\"sub\":\"u\",\"beta\":true}", {{S, "beta", true}}},
    {"equals bool false", "{\"sub\":\"u\",\"beta\":false}", {{S, "beta", false}}},
    {"anonymous",
     NULL,
     {{S, "public.news", true}, {S, "user.x.y", false}, {P, "chat.x", false}, {S, "vip", false}}},
    {"invalid channel",
     "{\"sub\":\"u1\",\"roles\":[\"admin\"]}",
     {{S, "a..b", false}, {S, "", false}, {S, "a.*", false}}},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *claims = cases[i].claims ? json_loads(cases[i].claims, 0, NULL) : NULL;
        struct wsb_acl *acl;
        if (cases[i].claims)
            assert_non_null(claims);
        acl = wsb_acl_compile(rules, sizeof(rules) / sizeof(rules[0]), claims, NULL);
        assert_non_null(acl);
        for (size_t j = 0; j < 12 && cases[i].checks[j].channel; j++) {
            const struct check *c = &cases[i].checks[j];
            bool got = wsb_acl_check(acl, c->action, c->channel, strlen(c->channel));
            if (got != c->allowed)
                fail_msg("%s: %s %s: got %d", cases[i].name,
                         c->action == S ? "subscribe" : "publish", c->channel, got);
        }
        wsb_acl_free(acl);
        json_decref(claims);
    }
}

static void test_permissions_claim(void **state)
{
    json_t *claims = json_loads(
        "{\"sub\":\"u\",\"wsb\":{\"subscribe\":[\"orders\",\"prices.*\",\"bad..x\",7,"
        "\"user.{sub}\"],\"publish\":[\"chat.room1\"]},\"other\":{\"subscribe\":[\"**\"]}}",
        0, NULL);
    struct wsb_acl *acl;
    (void)state;
    assert_non_null(claims);
    acl = wsb_acl_compile(NULL, 0, claims, "wsb");
    assert_non_null(acl);
    assert_true(wsb_acl_check(acl, S, "orders", 6));
    assert_true(wsb_acl_check(acl, S, "prices.eur", 10));
    assert_false(wsb_acl_check(acl, P, "orders", 6));
    assert_true(wsb_acl_check(acl, P, "chat.room1", 10));
    assert_false(wsb_acl_check(acl, S, "chat.room1", 10));
    assert_false(wsb_acl_check(acl, S, "user.u", 6)); /* templates not allowed there */
    assert_false(wsb_acl_check(acl, S, "x", 1));
    wsb_acl_free(acl);
    /* without permissions_claim, the claim is ignored */
    acl = wsb_acl_compile(NULL, 0, claims, NULL);
    assert_false(wsb_acl_check(acl, S, "orders", 6));
    wsb_acl_free(acl);
    /* a permissions claim of the wrong shape grants nothing */
    acl = wsb_acl_compile(NULL, 0, claims, "sub");
    assert_false(wsb_acl_check(acl, S, "orders", 6));
    wsb_acl_free(acl);
    json_decref(claims);
}

static void test_empty(void **state)
{
    struct wsb_acl *acl = wsb_acl_compile(NULL, 0, NULL, "wsb");
    (void)state;
    assert_non_null(acl);
    assert_false(wsb_acl_check(acl, S, "a", 1));
    assert_false(wsb_acl_check(acl, P, "a", 1));
    assert_false(wsb_acl_check(NULL, P, "a", 1));
    wsb_acl_free(acl);
    wsb_acl_free(NULL);
}

/* Which rule sets may be shared between identities (grants.c compiles them once per worker),
 * and the shared grants' references. */
static void test_shareable(void **state)
{
    static char *fixed[] = {"public.*", "news.**"};
    const struct wsb_acl_rule plain[] = {{.subscribe = fixed, .nsubscribe = 2}};
    const struct wsb_acl_rule templ[] = {{.subscribe = fixed, .nsubscribe = 2},
                                         {.publish = pub_user, .npublish = 1}};
    const struct wsb_acl_rule cond[] = {{.when_op = WSB_WHEN_HAS,
                                         .when_claim = "roles",
                                         .when_value = "x",
                                         .subscribe = fixed,
                                         .nsubscribe = 1}};
    (void)state;
    assert_false(wsb_acl_rules_use_claims(NULL, 0));
    assert_false(wsb_acl_rules_use_claims(plain, 1));
    assert_true(wsb_acl_rules_use_claims(templ, 2));
    assert_true(wsb_acl_rules_use_claims(cond, 1));
    assert_true(wsb_acl_rules_use_claims(rules, sizeof(rules) / sizeof(rules[0])));

    /* Without a claim reference the grants are the same with or without claims. */
    json_t *claims = json_loads("{\"sub\":\"alice\",\"roles\":[\"x\"]}", 0, NULL);
    struct wsb_acl *mine = wsb_acl_compile(plain, 1, claims, "wsb");
    struct wsb_acl *shared = wsb_acl_compile(plain, 1, NULL, NULL);
    assert_non_null(mine);
    assert_non_null(shared);
    const char *chans[] = {"public.a", "news.a.b", "public.a.b", "private", "news"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(wsb_acl_check(mine, S, chans[i], strlen(chans[i])),
                         wsb_acl_check(shared, S, chans[i], strlen(chans[i])));
    assert_true(wsb_acl_ref(shared) == shared);
    wsb_acl_free(shared);
    assert_true(wsb_acl_check(shared, S, "public.a", 8)); /* one reference left */
    wsb_acl_free(shared);
    wsb_acl_free(mine);
    json_decref(claims);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_permissions_claim),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_shareable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
