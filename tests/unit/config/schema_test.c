/* Unit tests for config/schema.c: the table is well-formed and docs/configuration.md matches it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/schema.h"

/* Every row's parent is a row declared before it (an object or an array of objects). */
static void test_table_shape(void **state)
{
    (void)state;
    for (size_t i = 0; i < wsb_cfg_nfields; i++) {
        const struct cfg_field *f = &wsb_cfg_fields[i];
        assert_non_null(f->doc);
        assert_null(strchr(f->doc, '|')); /* would break the Markdown table */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(wsb_cfg_fields[j].path, f->path);
        const char *dot = strrchr(f->path, '.');
        if (!dot)
            continue;
        char parent[128];
        size_t n = (size_t)(dot - f->path);
        assert_true(n < sizeof(parent));
        memcpy(parent, f->path, n);
        parent[n] = '\0';
        bool array = n > 2 && parent[n - 2] == '[' && parent[n - 1] == ']';
        if (array)
            parent[n - 2] = '\0';
        bool found = false;
        for (size_t j = 0; j < i; j++)
            if (strcmp(wsb_cfg_fields[j].path, parent) == 0) {
                assert_int_equal(wsb_cfg_fields[j].type, array ? CT_OBJARR : CT_OBJ);
                found = true;
            }
        if (!found)
            fail_msg("row %s has no parent row", f->path);
    }
}

/* Every default in the table loads: "{}" gives a valid configuration. */
static void test_defaults_load(void **state)
{
    (void)state;
    struct wsb_config *c = wsb_config_load_text("t", "{}", 2, false, NULL, NULL);
    assert_non_null(c);
    wsb_config_unref(c);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_docs_in_sync(void **state)
{
    (void)state;
    char *docs = slurp("../../docs/configuration.md");
    if (!docs)
        docs = slurp("docs/configuration.md");
    assert_non_null(docs);
    char *table = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&table, &len);
    wsb_config_write_docs(mem);
    fclose(mem);
    if (!strstr(docs, table))
        fail_msg("docs/configuration.md is out of date; replace its table with:\n%s", table);
    free(table);
    free(docs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_defaults_load),
        cmocka_unit_test(test_docs_in_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
