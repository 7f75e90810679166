/* Logging: JSON lines (or text) on stderr, one write(2) per line, no global lock. */
#include "util/log.h"

#include "util/err.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192
/* Room kept back for the closing of a truncated line: `","truncated":true}\n`. */
#define LINE_TAIL 32

static atomic_int min_level = WSB_LOG_INFO;
static atomic_bool json_format = true;

static const char *const level_json[] = {"debug", "info", "warn", "error"};
static const char *const level_text[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* A line being built in a caller's stack buffer. Everything but the tail stops at `limit`;
 * once something did not fit, `full` is set and nothing more is appended. */
struct line {
    char *p;
    size_t len;
    size_t limit;
    bool full;
};

void wsb_log_init(enum wsb_log_level level, bool json)
{
    atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&json_format, json, memory_order_relaxed);
}

int wsb_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    for (size_t i = 0; i < WSB_ARRAY_LEN(level_json); i++)
        if (strcmp(s, level_json[i]) == 0)
            return (int)i;
    if (strcmp(s, "warning") == 0)
        return WSB_LOG_WARN;
    return -1;
}

bool wsb_log_enabled(enum wsb_log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

static bool room(struct line *l, size_t n)
{
    if (l->full || l->len > l->limit || n > l->limit - l->len) {
        l->full = true;
        return false;
    }
    return true;
}

static void put(struct line *l, const char *s, size_t n)
{
    if (!room(l, n))
        return;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF), or 0 when the byte at s does not start one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* Appends `s` JSON-escaped (without quotes), cutting at a character boundary when the line
 * is full. Invalid UTF-8 bytes become \ufffd. */
static void put_escaped(struct line *l, const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    size_t i = 0;
    while (i < n && !l->full) {
        unsigned char c = s[i];
        char esc[8];
        size_t k = utf8_seq(s + i, n - i);
        if (k == 0) {
            put(l, "\\ufffd", 6);
            i++;
        } else if (k > 1) {
            put(l, (const char *)s + i, k);
            i += k;
        } else {
            const char *e = NULL;
            switch (c) {
            case '"': e = "\\\""; break;
            case '\\': e = "\\\\"; break;
            case '\n': e = "\\n"; break;
            case '\r': e = "\\r"; break;
            case '\t': e = "\\t"; break;
            case '\b': e = "\\b"; break;
            case '\f': e = "\\f"; break;
            default: break;
            }
            if (e != NULL) {
                puts_(l, e);
            } else if (c < 0x20 || c == 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                put(l, esc, 6);
            } else {
                put(l, (const char *)&c, 1);
            }
            i++;
        }
    }
}

/* A JSON string literal. The closing quote always fits: it comes out of the tail. */
static void put_jstr(struct line *l, const char *s)
{
    if (!room(l, 2))
        return;
    l->p[l->len++] = '"';
    put_escaped(l, s);
    l->p[l->len++] = '"';
}

/* Text form: bare when plain, quoted and escaped when it holds spaces, quotes, '=' or
 * anything unusual, so a line always splits back into key=value pairs. */
static void put_tstr(struct line *l, const char *s)
{
    bool plain = *s != '\0';
    for (const char *c = s; *c && plain; c++)
        plain = (unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f && *c != '"' && *c != '=' &&
                *c != '\\';
    if (plain)
        puts_(l, s);
    else
        put_jstr(l, s);
}

static void put_value(struct line *l, const struct wsb_log_field *f, bool json)
{
    char num[40];
    int n = 0;
    switch (f->type) {
    case WSB_LF_STR:
        if (f->v.s == NULL)
            puts_(l, "null");
        else if (json)
            put_jstr(l, f->v.s);
        else
            put_tstr(l, f->v.s);
        return;
    case WSB_LF_INT: n = snprintf(num, sizeof(num), "%lld", (long long)f->v.i); break;
    case WSB_LF_UINT: n = snprintf(num, sizeof(num), "%llu", (unsigned long long)f->v.u); break;
    case WSB_LF_DBL:
        if (isfinite(f->v.d))
            n = snprintf(num, sizeof(num), "%.15g", f->v.d);
        else
            n = snprintf(num, sizeof(num), "null");
        break;
    case WSB_LF_BOOL: n = snprintf(num, sizeof(num), "%s", f->v.b ? "true" : "false"); break;
    default: n = snprintf(num, sizeof(num), "null"); break;
    }
    put(l, num, (size_t)n);
}

static void put_timestamp(struct line *l)
{
    struct timespec ts;
    struct tm tm;
    char buf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    put(l, buf, (size_t)n);
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void wsb_log_fields(enum wsb_log_level level, const char *msg, const struct wsb_log_field *f,
                    size_t n)
{
    if (!wsb_log_enabled(level))
        return;
    if ((unsigned)level >= WSB_ARRAY_LEN(level_json))
        level = WSB_LOG_ERROR;
    if (msg == NULL)
        msg = "";
    if (f == NULL)
        n = 0;
    bool json = atomic_load_explicit(&json_format, memory_order_relaxed);
    char buf[LINE_MAX_BYTES];
    struct line l = {.p = buf, .len = 0, .limit = sizeof(buf) - LINE_TAIL, .full = false};

    if (json) {
        puts_(&l, "{\"ts\":\"");
        put_timestamp(&l);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_json[level]);
        puts_(&l, "\",\"msg\":");
        put_jstr(&l, msg);
    } else {
        put_timestamp(&l);
        put(&l, " ", 1);
        puts_(&l, level_text[level]);
        put(&l, " ", 1);
        put_escaped(&l, msg);
    }
    for (size_t i = 0; i < n && !l.full; i++) {
        size_t start = l.len;
        const char *key = f[i].key != NULL ? f[i].key : "";
        if (json) {
            put(&l, ",", 1);
            put_jstr(&l, key);
            put(&l, ":", 1);
        } else {
            put(&l, " ", 1);
            put_escaped(&l, key);
            put(&l, "=", 1);
        }
        /* A field cut before its value began would leave a dangling key: drop it. A string
         * value cut short is still well-formed (closed quote), so it stays. */
        if (l.full) {
            l.len = start;
            break;
        }
        size_t value_start = l.len;
        put_value(&l, &f[i], json);
        if (l.full && l.len == value_start)
            l.len = start;
    }

    /* The tail: always room for it, whatever was cut above. */
    const char *end;
    if (json)
        end = l.full ? ",\"truncated\":true}\n" : "}\n";
    else
        end = l.full ? " truncated=true\n" : "\n";
    size_t elen = strlen(end);
    memcpy(buf + l.len, end, elen);
    write_all(buf, l.len + elen);
}
