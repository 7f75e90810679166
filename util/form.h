/* application/x-www-form-urlencoded helpers (query strings). Pure. */
#ifndef WSB_UTIL_FORM_H
#define WSB_UTIL_FORM_H

#include <stddef.h>

/** The value of a hex digit, or -1. */
static inline int wsb_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/** Finds the first parameter `name` in a query string (without '?'), comparing decoded
 * names, and decodes its value ('+' is a space, %XX escapes) into out, NUL-terminated.
 * Returns the decoded length, -1 when absent, -2 when malformed, containing NUL, or longer
 * than outlen - 1. */
long wsb_form_param(const char *query, size_t len, const char *name, char *out, size_t outlen);

#endif
