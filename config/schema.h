/* The configuration schema table (internal to config/): one row per setting, driving loading,
 * validation, defaults and docs/configuration.md, in the spirit of Redis's static_configs[]. */
#ifndef WSB_CONFIG_SCHEMA_H
#define WSB_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum cfg_type {
    CT_OBJ,    /* nested object; its keys are the rows under "path." */
    CT_STR,    /* char * at off */
    CT_BOOL,   /* bool at off */
    CT_U32,    /* uint32_t at off, integer within [min, max] */
    CT_U64,    /* uint64_t at off, integer within [min, max] */
    CT_INT,    /* int at off, integer within [min, max] */
    CT_DBL,    /* double at off, number within [min, max] */
    CT_ENUM,   /* int at off, one of `enums` */
    CT_STRARR, /* char ** at off, size_t count at off2 */
    CT_OBJARR, /* array of objects: item rows under "path[]."; void * at off, count at off2 */
    CT_CUSTOM, /* handled by code in config.c, keyed by `custom` */
};

enum cfg_custom {
    CC_NONE,
    CC_TOKEN_SOURCES,
    CC_ALGORITHMS,
    CC_ACL_WHEN,
    CC_CONNECTORS,
    CC_LOG_FORMAT,
    CC_CHANNEL_CONNECTOR,
    CC_CHANNEL_FILTER,
};

enum cfg_flags {
    CF_REQUIRED = 1u << 0, /* must be present (in its parent) */
    CF_NULLABLE = 1u << 1, /* JSON null is accepted: the value is NULL / the section is off */
    CF_RELOAD = 1u << 2,   /* takes effect on reload without a restart */
    CF_PATTERN = 1u << 3,  /* string array of ACL patterns (templates allowed) */
    CF_LISTEN = 1u << 4,   /* "host:port" */
};

struct cfg_enum {
    const char *name;
    int value;
};

struct cfg_field {
    const char *path; /* "limits.send_buffer.policy"; array items: "channels[].match" */
    enum cfg_type type;
    size_t off;  /* into struct wsb_config, or into the array item for "x[]." rows */
    size_t off2; /* count, for arrays */
    size_t elem; /* item size, for CT_OBJARR */
    double min, max;
    const char *def; /* default, as written in JSON; NULL when none */
    const struct cfg_enum *enums;
    enum cfg_custom custom;
    unsigned flags;
    const char *doc;
};

extern const struct cfg_field wsb_cfg_fields[];
extern const size_t wsb_cfg_nfields;

/** Writes the Markdown configuration reference generated from the table. */
void wsb_config_write_docs(FILE *out);

#endif
