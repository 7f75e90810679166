/* Error codes shared by every module. */
#ifndef WSB_UTIL_ERR_H
#define WSB_UTIL_ERR_H

enum wsb_err {
    WSB_OK = 0,
    WSB_ERR_NOMEM,       /* allocation failed */
    WSB_ERR_INVALID,     /* malformed input or argument */
    WSB_ERR_IO,          /* system call or file error */
    WSB_ERR_AGAIN,       /* need more input / try later */
    WSB_ERR_LIMIT,       /* a configured limit was exceeded */
    WSB_ERR_NOT_FOUND,   /* no such key, channel, entry */
    WSB_ERR_EXISTS,      /* already present */
    WSB_ERR_UNSUPPORTED, /* valid request we do not support */
    WSB_ERR_UNAVAILABLE, /* dependency (broker) not available */
    WSB_ERR_AUTH,        /* authentication failed */
    WSB_ERR_FORBIDDEN,   /* authenticated but not allowed */
    WSB_ERR_INTERNAL,    /* bug or unexpected state */
};

/** Returns a static, human-readable name for `err`. @locality any */
const char *wsb_strerror(enum wsb_err err);

#define WSB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define WSB_UNUSED(x) ((void)(x))

#endif
