/* Logging: one JSON object per line on stderr (ts, level, msg, fields), or a text form for
 * humans. Thread-safe; a line is written with one write(2). Tokens never go in here. */
#ifndef WSB_UTIL_LOG_H
#define WSB_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wsb_log_level { WSB_LOG_DEBUG, WSB_LOG_INFO, WSB_LOG_WARN, WSB_LOG_ERROR };

enum wsb_log_type { WSB_LF_STR, WSB_LF_INT, WSB_LF_UINT, WSB_LF_DBL, WSB_LF_BOOL };

struct wsb_log_field {
    const char *key;
    enum wsb_log_type type;
    union {
        const char *s; /* NULL prints null */
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
};

#define WSB_LSTR(k, x) ((struct wsb_log_field){.key = (k), .type = WSB_LF_STR, .v.s = (x)})
#define WSB_LINT(k, x) ((struct wsb_log_field){.key = (k), .type = WSB_LF_INT, .v.i = (x)})
#define WSB_LUINT(k, x) ((struct wsb_log_field){.key = (k), .type = WSB_LF_UINT, .v.u = (x)})
#define WSB_LDBL(k, x) ((struct wsb_log_field){.key = (k), .type = WSB_LF_DBL, .v.d = (x)})
#define WSB_LBOOL(k, x) ((struct wsb_log_field){.key = (k), .type = WSB_LF_BOOL, .v.b = (x)})

/** Sets the minimum level and the format (json or text). @locality main thread, at start */
void wsb_log_init(enum wsb_log_level level, bool json);
/** Parses "debug", "info", "warn", "error". Returns -1 when unknown. */
int wsb_log_level_parse(const char *s);
bool wsb_log_enabled(enum wsb_log_level level);

/** Writes one line. Strings are JSON-escaped. @locality any */
void wsb_log_fields(enum wsb_log_level level, const char *msg, const struct wsb_log_field *f,
                    size_t n);

/** wsb_log(WSB_LOG_INFO, "connected", WSB_LSTR("ip", ip), WSB_LUINT("conn", id)); */
#define wsb_log(level, msg, ...)                                                                   \
    wsb_log_fields((level), (msg), (const struct wsb_log_field[]){__VA_ARGS__},                    \
                   sizeof((const struct wsb_log_field[]){__VA_ARGS__}) /                           \
                       sizeof(struct wsb_log_field))
/** A line with no fields. */
#define wsb_log0(level, msg) wsb_log_fields((level), (msg), NULL, 0)

#endif
