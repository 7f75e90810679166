/* --demo: secret, token and the page at `/` that subscribes to demo.ticks. */
#include "bridge/demo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/rand.h>

#include "util/buf.h"

int wsb_demo_secret(char out[65])
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -1;
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

char *wsb_demo_token(const char *secret, long ttl_s)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    long now = (long)time(NULL);
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "sub", "demo") == 0 && jwt_add_grant_int(jwt, "iat", now) == 0 &&
        jwt_add_grant_int(jwt, "exp", now + ttl_s) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        tok = jwt_encode_str(jwt);
    jwt_free(jwt);
    return tok;
}

static const char page_head[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<title>wsbridge demo</title>\n<style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}\n"
    "#state{font-weight:bold}#log{font:12px ui-monospace,monospace;background:#f5f5f5;"
    "padding:1rem;height:24rem;overflow:auto;white-space:pre}\n"
    "</style></head><body>\n<h1>wsbridge demo</h1>\n"
    "<p>Live messages from the Kafka topic <code>demo.ticks</code> (an in-process mock "
    "cluster), through the bridge, into this page. State: <span id=\"state\">connecting"
    "</span> &middot; messages: <span id=\"count\">0</span></p>\n<div id=\"log\"></div>\n"
    "<script>\n";

static const char page_tail[] =
    "const log = document.getElementById('log');\n"
    "const state = document.getElementById('state');\n"
    "const count = document.getElementById('count');\n"
    "let n = 0;\n"
    "function line(t){log.textContent = t + '\\n' + log.textContent.slice(0, 20000);}\n"
    "const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + PATH;\n"
    "const ws = new WebSocket(url, ['wsbridge.v1', 'bearer.' + TOKEN]);\n"
    "ws.onopen = () => { state.textContent = 'open'; "
    "ws.send(JSON.stringify({op:'subscribe', id:1, channel:'demo.ticks'})); };\n"
    "ws.onclose = (e) => { state.textContent = 'closed (' + e.code + ')'; };\n"
    "ws.onmessage = (e) => { const m = JSON.parse(e.data);\n"
    "  if (m.type === 'message') { count.textContent = ++n; }\n"
    "  line(e.data); };\n"
    "</script></body></html>\n";

char *wsb_demo_page(const char *token, const char *path)
{
    struct wsb_buf b;
    wsb_buf_init(&b);
    wsb_buf_append(&b, page_head, sizeof(page_head) - 1);
    wsb_buf_puts(&b, "const TOKEN = ");
    wsb_buf_json_str(&b, token, strlen(token));
    wsb_buf_puts(&b, ";\nconst PATH = ");
    wsb_buf_json_str(&b, path, strlen(path));
    wsb_buf_puts(&b, ";\n");
    wsb_buf_append(&b, page_tail, sizeof(page_tail) - 1);
    wsb_buf_append(&b, "", 1);
    if (b.oom) {
        wsb_buf_cleanup(&b);
        return NULL;
    }
    return (char *)wsb_buf_steal(&b, NULL);
}
