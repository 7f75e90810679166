// wsbridge.js: the browser client of wsbridge (protocol wsbridge.v1). An ES module with no
// dependencies; the bridge serves this file at /wsbridge.js.
//
//   import { connect } from "/wsbridge.js";
//   const client = connect("wss://host/ws", { getToken: async () => fetchToken() });
//   client.on("state", ({ state, code, reason }) => {});
//   const sub = client.subscribe("orders", (msg) => {}, { from: "latest" });
//   await client.publish("chat.u1", { text: "hi" }, { key: "u1" });
//   client.ack(msg); client.nack(msg, { requeue: true });
//   sub.unsubscribe(); client.close();
//
// What it does for you: reconnects with exponential backoff and jitter; resumes Kafka
// subscriptions from the offset just past the last message it delivered, per partition (no
// gap, no duplicate); refreshes the token with the `auth` op before `expires_at` through
// getToken; reports refusals it cannot overcome (a 4401 that getToken cannot renew) as the
// final `closed` state with the server's code and reason.
//
// Transports (`transports`, default ["websocket", "sse"]): when the WebSocket cannot open
// (the upgrade is refused, or the connection is cut before `welcome`), the next attempt uses
// Server-Sent Events (SPEC §11): an EventSource on `/sse` with the channels in the query and
// the token as access_token, `POST /publish` (fetch) for publish(), and a token refresh that
// reopens the stream from the positions delivered so far (nothing lost, nothing twice).
// `state` events say which transport is in use (`transport`). ack/nack need the WebSocket.

const PROTOCOL = "wsbridge.v1";

const DEFAULTS = {
    transports: ["websocket", "sse"],
    backoff: { initialMs: 500, maxMs: 30000, factor: 2, maxAttempts: Infinity },
    refreshMarginS: 30, // refresh this long before expires_at (at most half the lifetime)
    stableMs: 5000, // a connection open this long resets the backoff
    tokenIn: "subprotocol", // or "query" (?access_token=)
    ssePath: "/sse", // the bridge's sse.path
};

// ---- Pure helpers (exercised by tests/js through the client's behaviour) ------------------

// Delay before reconnect attempt `attempt` (0-based): exponential, capped, with "equal
// jitter" (a uniform draw in [d/2, d]) so that clients cut off together do not return together.
function backoffDelay(attempt, b, random = Math.random) {
    const d = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, attempt));
    return Math.round(d / 2 + (random() * d) / 2);
}

// The next offset per partition after a delivered message (Kafka messages carry both).
function advance(positions, msg) {
    if (Number.isInteger(msg.partition) && Number.isInteger(msg.offset))
        positions[String(msg.partition)] = msg.offset + 1;
}

// The `exp` claim of a JWT, read without verification (to refresh a stale token before
// using it); null when the token is not a readable JWT.
function tokenExp(token) {
    try {
        const part = String(token).split(".")[1];
        if (!part) return null;
        const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
        const json = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
        return Number.isFinite(json.exp) ? json.exp : null;
    } catch {
        return null;
    }
}

function parseReason(reason) {
    if (!reason) return null;
    try {
        const r = JSON.parse(reason);
        return r && typeof r.error === "string" ? r.error : null;
    } catch {
        return null;
    }
}

function absoluteUrl(url) {
    if (/^wss?:\/\//i.test(url)) return url;
    const loc = globalThis.location;
    if (/^https?:\/\//i.test(url)) return url.replace(/^http/i, "ws");
    if (loc && url.startsWith("/"))
        return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + url;
    return url;
}

class WsbridgeError extends Error {
    constructor(code, message) {
        super(message || code);
        this.name = "WsbridgeError";
        this.code = code;
    }
}

// ---- Transports ---------------------------------------------------------------------------
// A transport opens one connection and speaks §5 objects over it:
//   open(url, token, options, {onOpen, onMessage(obj), onClose({code, reason, opened})},
//        client) -> {send(obj) -> bool, close(code, reason)}

function openWebSocket(url, token, options, h) {
    const WS = options.WebSocket || globalThis.WebSocket;
    const protocols = [PROTOCOL];
    let target = url;
    if (token) {
        if (options.tokenIn === "query") {
            target += (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
        } else {
            protocols.push("bearer." + token); // never echoed back by the server
        }
    }
    const ws = new WS(target, protocols);
    let opened = false;
    let done = false;
    ws.onopen = () => {
        opened = true;
        h.onOpen();
    };
    ws.onmessage = (e) => {
        if (done || typeof e.data !== "string") return;
        let m;
        try {
            m = JSON.parse(e.data);
        } catch {
            return;
        }
        if (m && typeof m === "object") h.onMessage(m);
    };
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (e) => {
        if (done) return;
        done = true;
        h.onClose({ code: e.code, reason: e.reason || "", opened });
    };
    return {
        send(obj) {
            if (done || ws.readyState !== 1) return false;
            ws.send(JSON.stringify(obj));
            return true;
        },
        close(code, reason) {
            done = true;
            try {
                ws.close(code, reason);
            } catch {
                ws.close();
            }
        },
    };
}

// The bridge's resume token (bridge/sse_wire.c): base64url of 0x01, then per channel the
// FNV-1a hash of its name (4 bytes, little endian), the number of partitions and each
// partition with its next offset (varints). Built from the offsets this client delivered,
// so a stream resumes exactly where the page is, whichever transport delivered last.
function fnv1a(name) {
    let h = 0x811c9dc5;
    for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    return h;
}

function resumeToken(subs) {
    const bytes = [1];
    const varint = (v) => {
        let x = BigInt(v);
        do {
            let c = Number(x & 0x7fn);
            x >>= 7n;
            bytes.push(x ? c | 0x80 : c);
        } while (x);
    };
    let named = 0;
    for (const sub of subs) {
        const pos = sub._positions ? Object.entries(sub._positions) : [];
        if (!pos.length) continue;
        const h = fnv1a(sub.channel);
        bytes.push(h & 0xff, (h >>> 8) & 0xff, (h >>> 16) & 0xff, h >>> 24);
        varint(pos.length);
        for (const [p, o] of pos) {
            varint(Number(p));
            varint(o);
        }
        named++;
    }
    if (!named) return null;
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function httpBase(url) {
    return url.replace(/^ws/i, "http").replace(/^(https?:\/\/[^/]+).*$/i, "$1");
}

// Server-Sent Events: one EventSource per channel set (a subscribe or unsubscribe reopens
// it, batched per tick, from the delivered positions), fetch for publish. The stream's
// implicit subscribes answer with the channel's name as id; this maps them back to the
// client's request ids. EventSource's own reconnect is not used: a dropped stream is a
// closed connection, and the client reconnects with its backoff.
function openSse(url, token, options, h, client) {
    const ES = options.EventSource || globalThis.EventSource;
    const doFetch = options.fetch || globalThis.fetch.bind(globalThis);
    const base = httpBase(url);
    let es = null;
    let done = false;
    let welcomed = false;
    let channels = new Set(client ? [...client._subs.keys()] : []);
    const confirmed = new Map(); // channel -> its `subscribed` on the current stream
    const waiting = new Map(); // channel -> request id of the client's subscribe
    let authWaiting = null; // {id} while a refresh reopens the stream
    let reopenQueued = false;

    const fail = (code, reason) => {
        if (done) return;
        done = true;
        if (es) es.close();
        h.onClose({ code, reason, opened: welcomed });
    };
    const onEvent = (stream, type, e) => {
        if (done || stream !== es) return;
        let m;
        try {
            m = JSON.parse(e.data);
        } catch {
            return;
        }
        if (type === "welcome") {
            if (!welcomed) {
                welcomed = true;
                h.onMessage(m);
            }
            if (authWaiting) {
                const id = authWaiting.id;
                authWaiting = null;
                h.onMessage({ type: "authenticated", id, expires_at: m.expires_at });
            }
            return;
        }
        if (type === "subscribed") {
            confirmed.set(m.channel, m);
            const id = waiting.get(m.channel);
            if (id !== undefined) {
                waiting.delete(m.channel);
                h.onMessage({ ...m, id });
            }
            return;
        }
        if (type === "error") {
            if (m.id !== undefined && channels.has(m.id)) {
                const ch = m.id;
                channels.delete(ch);
                const id = waiting.get(ch);
                waiting.delete(ch);
                if (id !== undefined) h.onMessage({ ...m, id });
                else h.onMessage({ type: "unsubscribed", channel: ch, reason: m.code });
                return;
            }
            if (/^token_/.test(m.code)) {
                fail(4401, JSON.stringify({ error: m.code }));
                return;
            }
            if (m.code === "slow_consumer") return fail(4408, "slow consumer");
            if (m.code === "shutting_down") return fail(1001, "server shutting down");
            h.onMessage(m);
            return;
        }
        if (type === "unsubscribed") channels.delete(m.channel);
        h.onMessage(m);
    };
    const open = () => {
        if (es) es.close();
        es = null;
        confirmed.clear();
        if (!channels.size) {
            // Nothing to stream: the connection is "open" with no request on the wire.
            if (!welcomed) {
                welcomed = true;
                queueMicrotask(() => {
                    if (!done) h.onMessage({ type: "welcome", session: null, sub: null,
                        expires_at: token ? tokenExp(token) : null, protocol: PROTOCOL });
                });
            }
            if (authWaiting) {
                const id = authWaiting.id;
                authWaiting = null;
                queueMicrotask(() => h.onMessage({ type: "authenticated", id, expires_at: tokenExp(token) }));
            }
            return;
        }
        const q = [...channels].map((c) => "channel=" + encodeURIComponent(c));
        const subs = client ? [...client._subs.values()].filter((s) => channels.has(s.channel)) : [];
        const resume = resumeToken(subs);
        if (resume) q.push("last_event_id=" + resume);
        else {
            const first = subs.find((s) => typeof s._from === "string" || Number.isInteger(s._from?.timestamp));
            if (first) q.push("from=" + (typeof first._from === "string" ? first._from : first._from.timestamp));
        }
        // Each subscription's own filter (subscribe.filter), one JSON object for the stream.
        const filters = {};
        for (const s of subs) if (s._filter !== undefined && s._filter !== null) filters[s.channel] = s._filter;
        if (Object.keys(filters).length) q.push("filter=" + encodeURIComponent(JSON.stringify(filters)));
        if (token) q.push("access_token=" + encodeURIComponent(token));
        const stream = new ES(base + options.ssePath + "?" + q.join("&"));
        es = stream;
        for (const type of ["welcome", "subscribed", "message", "gap", "unsubscribed", "error"])
            stream.addEventListener(type, (e) => onEvent(stream, type, e));
        // Any error ends this stream (EventSource would retry without our positions).
        stream.onerror = () => {
            if (stream === es) fail(1006, "event stream failed");
        };
    };
    const reopenSoon = () => {
        if (reopenQueued) return;
        reopenQueued = true;
        queueMicrotask(() => {
            reopenQueued = false;
            if (!done) open();
        });
    };
    const publish = (req) => {
        const body = { channel: req.channel, data: req.data };
        if (req.key !== undefined) body.key = req.key;
        if (req.headers) body.headers = req.headers;
        const headers = { "Content-Type": "application/json" };
        if (token) headers.Authorization = "Bearer " + token;
        doFetch(base + "/publish", { method: "POST", headers, body: JSON.stringify(body) })
            .then((r) =>
                r.json().then((m) => {
                    if (r.ok) return h.onMessage({ ...m, id: req.id });
                    // A §5 error object, or a refusal's {"error", "message"} (401, 403, 429).
                    const code = (m && (m.code || m.error)) || "publish_failed";
                    h.onMessage({ type: "error", id: req.id, code, message: (m && m.message) || code });
                })
            )
            .catch((e) =>
                h.onMessage({ type: "error", id: req.id, code: "disconnected", message: String(e && e.message || e) })
            );
    };
    open();
    return {
        send(req) {
            if (done) return false;
            switch (req.op) {
                case "subscribe":
                    if (req.id !== undefined) waiting.set(req.channel, req.id);
                    if (channels.has(req.channel) && confirmed.has(req.channel)) {
                        waiting.delete(req.channel);
                        queueMicrotask(() => h.onMessage({ ...confirmed.get(req.channel), id: req.id }));
                    } else if (!channels.has(req.channel)) {
                        channels.add(req.channel);
                        reopenSoon();
                    }
                    return true;
                case "unsubscribe":
                    channels.delete(req.channel);
                    waiting.delete(req.channel);
                    reopenSoon();
                    queueMicrotask(() => h.onMessage({ type: "unsubscribed", id: req.id, channel: req.channel }));
                    return true;
                case "publish":
                    publish(req);
                    return true;
                case "auth":
                    // A refresh reopens the stream with the new token from the delivered
                    // positions: the bridge checks the token at the request.
                    token = req.token;
                    authWaiting = { id: req.id };
                    reopenSoon();
                    return true;
                default:
                    return false; // ack/nack need the WebSocket
            }
        },
        close() {
            done = true;
            if (es) es.close();
        },
    };
}

const TRANSPORTS = {
    websocket: {
        available: (o) => typeof (o.WebSocket || globalThis.WebSocket) === "function",
        open: openWebSocket,
    },
    sse: {
        available: (o) =>
            typeof (o.EventSource || globalThis.EventSource) === "function" &&
            typeof (o.fetch || globalThis.fetch) === "function",
        open: openSse,
    },
};

// ---- Subscriptions ------------------------------------------------------------------------

class Subscription {
    constructor(client, channel, onMessage, options) {
        this._client = client;
        this.channel = channel;
        this._onMessage = onMessage;
        this._from = options.from;
        this._filter = options.filter; // issue 15: narrows the channel's per-record filter
        this._onError = options.onError;
        this._positions = null; // {"PARTITION": NEXT_OFFSET} once the channel reported offsets
        this._confirmed = false; // a `subscribed` arrived on the current connection
        this.active = true;
        this.ready = new Promise((resolve, reject) => {
            this._resolve = resolve;
            this._reject = reject;
        });
        this.ready.catch(() => {}); // errors also go to onError / the client's "error" event
    }

    /** The next offset per partition (Kafka channels): where a resume would start. */
    get offsets() {
        return this._positions ? { ...this._positions } : null;
    }

    _request() {
        const req = { op: "subscribe", channel: this.channel };
        if (this._positions && Object.keys(this._positions).length)
            req.from = { offsets: { ...this._positions } };
        else if (this._from !== undefined && this._from !== null) req.from = this._from;
        if (this._filter !== undefined && this._filter !== null) req.filter = this._filter;
        return req;
    }

    _subscribed(reply, resumed) {
        this._confirmed = true;
        if (reply.offsets && typeof reply.offsets === "object")
            this._positions = { ...this._positions, ...reply.offsets };
        this._resolve(reply);
        this._client._emit("subscribed", {
            channel: this.channel,
            offsets: this.offsets,
            resumed,
        });
    }

    _deliver(msg) {
        if (!this.active) return;
        if (this._positions || Number.isInteger(msg.offset)) {
            this._positions = this._positions || {};
            advance(this._positions, msg);
        }
        try {
            this._onMessage(msg);
        } catch (e) {
            setTimeout(() => {
                throw e;
            });
        }
    }

    _fail(err) {
        const wasActive = this.active;
        this.active = false;
        this._reject(err);
        if (wasActive && this._onError) this._onError(err);
        return wasActive;
    }

    /** Stops delivery at once and tells the server; resolves when it confirmed. */
    unsubscribe() {
        if (!this.active) return Promise.resolve();
        this.active = false;
        return this._client._unsubscribe(this);
    }
}

// ---- The client ---------------------------------------------------------------------------

class Client {
    constructor(url, options) {
        this.url = absoluteUrl(url);
        this.options = {
            ...DEFAULTS,
            ...options,
            backoff: { ...DEFAULTS.backoff, ...(options.backoff || {}) },
        };
        const o = this.options;
        this._transports = (o.transports || DEFAULTS.transports).filter(
            (t) => TRANSPORTS[t] && TRANSPORTS[t].available(o)
        );
        if (!this._transports.length)
            throw new Error("wsbridge: no usable transport in " + JSON.stringify(o.transports));
        this._token = o.token || null;
        this._tokenFresh = false; // the current token came from getToken for this attempt
        this._listeners = new Map();
        this._subs = new Map(); // channel -> Subscription
        this._pending = new Map(); // id -> {kind, resolve, reject, sent, timer}
        this._queue = []; // requests waiting for an open connection
        this._nextId = 1;
        this._attempt = 0;
        this._failures = 0; // connection attempts in a row that never got a welcome
        this._tIndex = 0;
        this._conn = null;
        this._timer = null;
        this._refreshTimer = null;
        this._openedAt = 0;
        this.state = "connecting";
        this.session = null;
        this.sub = null;
        this.expiresAt = null;
        this._closed = false;
        queueMicrotask(() => this._connect());
    }

    // -- events

    /** on("state" | "subscribed" | "unsubscribed" | "gap" | "authenticated" | "error", fn);
     * returns a function that removes the listener. */
    on(event, fn) {
        if (!this._listeners.has(event)) this._listeners.set(event, new Set());
        this._listeners.get(event).add(fn);
        return () => this.off(event, fn);
    }

    off(event, fn) {
        const s = this._listeners.get(event);
        if (s) s.delete(fn);
    }

    _emit(event, arg) {
        const s = this._listeners.get(event);
        if (!s) return;
        for (const fn of [...s]) {
            try {
                fn(arg);
            } catch (e) {
                setTimeout(() => {
                    throw e;
                });
            }
        }
    }

    _setState(state, extra = {}) {
        this.state = state;
        this._emit("state", { state, ...extra });
    }

    // -- connection lifecycle

    async _tokenForAttempt() {
        const o = this.options;
        if (!o.getToken) return this._token;
        const exp = this._token ? tokenExp(this._token) : null;
        const stale =
            !this._token || this._tokenStale || (exp !== null && exp * 1000 <= Date.now() + 1000);
        if (!stale) {
            this._tokenFresh = false;
            return this._token;
        }
        const t = await o.getToken();
        if (typeof t !== "string" || !t) throw new WsbridgeError("token_unavailable", "getToken returned no token");
        this._token = t;
        this._tokenStale = false;
        this._tokenFresh = true;
        return t;
    }

    async _connect() {
        if (this._closed) return;
        this._timer = null;
        if (this.state !== "connecting") this._setState("connecting", { attempt: this._attempt });
        else this._emit("state", { state: "connecting", attempt: this._attempt });
        let token;
        try {
            token = await this._tokenForAttempt();
        } catch (e) {
            if (this._closed) return;
            this._emit("error", { code: e.code || "token_unavailable", message: String(e.message || e) });
            this._retry({ code: 0, reason: "getToken failed" });
            return;
        }
        if (this._closed) return;
        const name = this._transports[this._tIndex % this._transports.length];
        let conn;
        const handlers = {
            onOpen: () => {},
            onMessage: (m) => this._onMessage(conn, m),
            onClose: (e) => this._onClose(conn, e),
        };
        try {
            conn = TRANSPORTS[name].open(this.url, token, this.options, handlers, this);
        } catch (e) {
            // A constructor that throws (a blocked or replaced WebSocket): a failed attempt.
            conn = { send: () => false, close: () => {} };
            queueMicrotask(() => handlers.onClose({ code: 1006, reason: String(e && e.message || e), opened: false }));
        }
        conn.transport = name;
        conn.welcomed = false;
        this._conn = conn;
    }

    _onOpen(conn, welcome) {
        conn.welcomed = true;
        this._failures = 0;
        this._openedAt = Date.now();
        this.session = welcome.session;
        this.sub = welcome.sub;
        this.expiresAt = welcome.expires_at;
        this._setState("open", {
            session: welcome.session,
            sub: welcome.sub,
            expires_at: welcome.expires_at,
            transport: conn.transport,
        });
        this._scheduleRefresh(null);
        for (const sub of this._subs.values()) {
            sub._confirmed = false;
            this._send({ ...sub._request(), id: this._track("subscribe", sub) });
        }
        const q = this._queue;
        this._queue = [];
        for (const req of q) if (!this._send(req)) this._queue.push(req);
    }

    _onClose(conn, { code, reason, opened }) {
        if (conn !== this._conn) return;
        this._conn = null;
        const welcomed = conn.welcomed;
        clearTimeout(this._refreshTimer);
        this._refreshTimer = null;
        // Requests sent on this connection and not answered: their outcome is unknown.
        for (const [id, p] of this._pending) {
            if (p.kind === "publish" && p.sent) {
                this._pending.delete(id);
                clearTimeout(p.timer);
                p.reject(new WsbridgeError("disconnected", "connection lost before the publish was confirmed"));
            } else if (p.kind !== "publish") {
                this._pending.delete(id);
                if (p.kind === "unsubscribe") p.resolve();
            }
        }
        if (this._closed) return;
        if (welcomed && Date.now() - this._openedAt >= this.options.stableMs) this._attempt = 0;

        if (code === 4401) {
            // Token refused (refusal "close", expiry, revocation). Renewable only through
            // getToken, and not when a token fresh from getToken was refused at once.
            const fatal = !this.options.getToken || (!welcomed && this._tokenFresh);
            if (fatal) {
                this._finish({ code, reason, error: parseReason(reason) });
                return;
            }
            this._tokenStale = true;
        }
        if (!welcomed) {
            // A refused handshake (401, 403, 429, 503) is invisible to a page: after two
            // failures in a row, a new token is worth asking for in case it was the token.
            if (++this._failures >= 2 && this.options.getToken) {
                this._tokenStale = true;
                this._failures = 0;
            }
            // The next transport when this one could not open, or was cut before welcome
            // (a proxy that lets the upgrade through and then kills it); a refused token
            // is not the transport's fault.
            if (code !== 4401 && this._transports.length > 1) this._tIndex++;
        }
        this._retry({ code, reason, error: parseReason(reason) });
    }

    _retry(info) {
        const b = this.options.backoff;
        if (this._attempt >= b.maxAttempts) {
            this._finish(info);
            return;
        }
        const delay = backoffDelay(this._attempt, b);
        this._attempt++;
        this._setState("reconnecting", { ...info, attempt: this._attempt, delay });
        this._timer = setTimeout(() => this._connect(), delay);
    }

    _finish(info) {
        this._closed = true;
        clearTimeout(this._timer);
        clearTimeout(this._refreshTimer);
        const err = new WsbridgeError(info.error || "closed", info.reason || "connection closed");
        for (const p of this._pending.values()) {
            clearTimeout(p.timer);
            if (p.kind === "unsubscribe") p.resolve();
            else if (p.reject) p.reject(err);
        }
        this._pending.clear();
        this._queue = [];
        this._setState("closed", info);
    }

    /** Closes for good: no reconnect; pending publishes reject with code "closed". */
    close(code = 1000, reason = "") {
        if (this._closed) return;
        const conn = this._conn;
        this._conn = null;
        if (conn) conn.close(code, reason);
        this._finish({ code, reason });
    }

    // -- token refresh (auth op)

    _scheduleRefresh(previousExp) {
        clearTimeout(this._refreshTimer);
        this._refreshTimer = null;
        const exp = this.expiresAt;
        if (!this.options.getToken || !Number.isFinite(exp)) return;
        const left = exp * 1000 - Date.now();
        const margin = Math.min(this.options.refreshMarginS * 1000, Math.max(left, 0) / 2);
        let delay = left - margin;
        // A refresh that did not move expires_at (getToken handed back the same token): try
        // again later rather than at once.
        if (previousExp !== null && exp <= previousExp) delay = Math.max(1000, left / 2);
        this._refreshTimer = setTimeout(() => this._refresh(), Math.max(0, delay));
    }

    async _refresh() {
        this._refreshTimer = null;
        const conn = this._conn;
        if (!conn || !conn.welcomed) return;
        const before = this.expiresAt;
        let token;
        try {
            token = await this.options.getToken();
        } catch (e) {
            this._emit("error", { code: "token_unavailable", message: String(e.message || e) });
        }
        if (conn !== this._conn) return;
        if (typeof token !== "string" || !token) {
            this._scheduleRefresh(before);
            return;
        }
        const id = this._nextId++;
        this._pending.set(id, {
            kind: "auth",
            sent: true,
            resolve: (reply) => {
                this._token = token;
                this.expiresAt = reply.expires_at;
                this._emit("authenticated", { expires_at: reply.expires_at });
                this._scheduleRefresh(before);
            },
            reject: (err) => {
                this._emit("error", { code: err.code, message: err.message });
                if (conn === this._conn) this._scheduleRefresh(before);
            },
        });
        conn.send({ op: "auth", id, token });
    }

    // -- requests

    _track(kind, sub) {
        const id = this._nextId++;
        this._pending.set(id, { kind, sub, sent: true });
        return id;
    }

    _send(req) {
        const conn = this._conn;
        if (conn && conn.welcomed && conn.send(req)) {
            const p = req.id !== undefined ? this._pending.get(req.id) : null;
            if (p) p.sent = true;
            return true;
        }
        return false;
    }

    /** Subscribes; onMessage gets each server `message` object. Options: from (first
     * subscription only; a resume uses the offsets delivered so far), onError(err). */
    subscribe(channel, onMessage, options = {}) {
        if (this._closed) throw new Error("wsbridge: client is closed");
        if (typeof onMessage !== "function") throw new TypeError("wsbridge: onMessage must be a function");
        if (this._subs.has(channel)) throw new Error("wsbridge: already subscribed to " + channel);
        const sub = new Subscription(this, channel, onMessage, options);
        this._subs.set(channel, sub);
        if (this._conn && this._conn.welcomed)
            this._send({ ...sub._request(), id: this._track("subscribe", sub) });
        return sub;
    }

    _unsubscribe(sub) {
        if (this._subs.get(sub.channel) === sub) this._subs.delete(sub.channel);
        if (!(this._conn && this._conn.welcomed)) return Promise.resolve();
        return new Promise((resolve) => {
            const id = this._nextId++;
            this._pending.set(id, { kind: "unsubscribe", sent: true, resolve, reject: resolve });
            this._send({ op: "unsubscribe", id, channel: sub.channel });
        });
    }

    /** Publishes; resolves with the `published` reply once the broker confirmed, rejects with
     * {code, message} (a WsbridgeError): the server's error code, "disconnected" when the
     * connection dropped before the answer (outcome unknown), "closed", or "timeout". */
    publish(channel, data, options = {}) {
        if (this._closed) return Promise.reject(new WsbridgeError("closed", "client is closed"));
        return new Promise((resolve, reject) => {
            const id = this._nextId++;
            const req = { op: "publish", id, channel, data: data === undefined ? null : data };
            if (options.key !== undefined && options.key !== null) req.key = options.key;
            if (options.headers) req.headers = options.headers;
            const p = { kind: "publish", sent: false, resolve, reject, timer: null };
            if (options.timeoutMs > 0) {
                p.timer = setTimeout(() => {
                    this._pending.delete(id);
                    this._queue = this._queue.filter((r) => r !== req);
                    reject(new WsbridgeError("timeout", "no answer within " + options.timeoutMs + " ms"));
                }, options.timeoutMs);
            }
            this._pending.set(id, p);
            if (!this._send(req)) this._queue.push(req); // sent when the connection opens
        });
    }

    /** Acknowledges a message of a `delivery: ack` channel. */
    ack(msg) {
        this._ackOp("ack", msg);
    }

    /** Negatively acknowledges; requeue defaults to true. */
    nack(msg, options = {}) {
        this._ackOp("nack", msg, options.requeue);
    }

    _ackOp(op, msg, requeue) {
        if (!msg || msg.ack_id === undefined) throw new TypeError("wsbridge: message has no ack_id");
        const req = { op, channel: msg.channel, ack_id: msg.ack_id };
        if (op === "nack" && requeue !== undefined) req.requeue = !!requeue;
        // A delivery left unacked when a connection drops goes back to the broker, so an ack
        // that cannot be sent now is not queued for the next connection.
        this._send(req);
    }

    // -- server messages

    _onMessage(conn, m) {
        if (conn !== this._conn) return;
        switch (m.type) {
            case "message": {
                const sub = this._subs.get(m.channel);
                if (sub) sub._deliver(m);
                return;
            }
            case "welcome":
                if (m.protocol && m.protocol !== PROTOCOL) {
                    conn.close(1002, "protocol");
                    this._conn = null;
                    this._finish({ code: 1002, reason: "server speaks " + m.protocol });
                    return;
                }
                this._onOpen(conn, m);
                return;
            case "gap":
                this._emit("gap", m);
                return;
            case "unsubscribed":
                if (m.id === undefined) {
                    // The server ended the subscription (lost permission, source failed).
                    const sub = this._subs.get(m.channel);
                    if (sub) {
                        this._subs.delete(m.channel);
                        sub._fail(new WsbridgeError(m.reason || "unsubscribed", "subscription ended by the server"));
                    }
                    this._emit("unsubscribed", m);
                    return;
                }
                break;
            default:
                break;
        }
        const p = m.id !== undefined ? this._pending.get(m.id) : null;
        if (!p) {
            if (m.type === "error") this._emit("error", { code: m.code, message: m.message });
            return;
        }
        this._pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.type === "error") {
            const err = new WsbridgeError(m.code, m.message);
            if (p.kind === "subscribe") {
                if (this._subs.get(p.sub.channel) === p.sub) this._subs.delete(p.sub.channel);
                if (p.sub._fail(err))
                    this._emit("error", { code: m.code, message: m.message, channel: p.sub.channel });
            } else {
                p.reject(err);
            }
            return;
        }
        if (p.kind === "subscribe") {
            const resumed = !!p.sub._everConfirmed;
            p.sub._everConfirmed = true;
            if (p.sub.active) p.sub._subscribed(m, resumed);
        } else {
            p.resolve(m);
        }
    }
}

/** Opens a client (see the module banner). Options: token | getToken, transports
 * (["websocket", "sse"]), backoff {initialMs, maxMs, factor, maxAttempts}, refreshMarginS,
 * tokenIn ("subprotocol" | "query"), ssePath ("/sse"), WebSocket, EventSource, fetch
 * (constructors/functions, for non-browser runtimes). */
export function connect(url, options = {}) {
    return new Client(url, options);
}
