// Unit tests of clients/js/wsbridge.js against a scripted fake WebSocket (node --test).
// The browser tests (tests/integration/test_90_browser.py) run the same library in Chromium
// against the real bridge; these pin the pure parts: backoff, offsets bookkeeping, the
// refusal rules, publish settlement and the refresh timer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../clients/js/wsbridge.js";

// One fake connection per `new FakeWS`; the test plays the server.
function fakeServer() {
    const conns = [];
    let waiters = [];
    class FakeWS {
        constructor(url, protocols) {
            this.url = url;
            this.protocols = protocols;
            this.readyState = 0;
            this.sent = [];
            conns.push(this);
            const w = waiters;
            waiters = [];
            w.forEach((f) => f(this));
        }
        send(text) {
            this.sent.push(JSON.parse(text));
            const w = this._sendWaiters || [];
            this._sendWaiters = [];
            w.forEach((f) => f());
        }
        close(code, reason) {
            this.readyState = 3;
            this.clientClosed = { code, reason };
        }
        // server side
        open(welcome = {}) {
            this.readyState = 1;
            this.onopen && this.onopen({});
            this.push({ type: "welcome", session: "s", sub: "u", expires_at: null, protocol: "wsbridge.v1", ...welcome });
        }
        push(obj) {
            this.onmessage && this.onmessage({ data: JSON.stringify(obj) });
        }
        drop(code = 1006, reason = "") {
            this.readyState = 3;
            this.onclose && this.onclose({ code, reason });
        }
        async request(pred = () => true, timeout = 2000) {
            const deadline = Date.now() + timeout;
            for (;;) {
                const i = this.sent.findIndex(pred);
                if (i >= 0) return this.sent.splice(i, 1)[0];
                assert.ok(Date.now() < deadline, "no matching request; sent: " + JSON.stringify(this.sent));
                await new Promise((r) => {
                    (this._sendWaiters = this._sendWaiters || []).push(r);
                    setTimeout(r, 20);
                });
            }
        }
    }
    return {
        FakeWS,
        conns,
        next(timeout = 3000) {
            return new Promise((resolve, reject) => {
                const t = setTimeout(() => reject(new Error("no new connection")), timeout);
                waiters.push((c) => {
                    clearTimeout(t);
                    resolve(c);
                });
            });
        },
    };
}

function states(client) {
    const out = [];
    client.on("state", (e) => out.push(e));
    return out;
}

const until = async (pred, timeout = 2000) => {
    const deadline = Date.now() + timeout;
    while (!pred()) {
        assert.ok(Date.now() < deadline, "condition not met in time");
        await new Promise((r) => setTimeout(r, 5));
    }
};

test("backoff is exponential, capped, jittered in [d/2, d], and stops at maxAttempts", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", {
        token: "t",
        WebSocket: srv.FakeWS,
        backoff: { initialMs: 8, maxMs: 40, factor: 2, maxAttempts: 6 },
    });
    const st = states(client);
    for (let i = 0; i < 7; i++) (await srv.next()).drop(1006);
    await until(() => client.state === "closed");
    const delays = st.filter((e) => e.state === "reconnecting").map((e) => e.delay);
    assert.equal(delays.length, 6);
    delays.forEach((d, n) => {
        const cap = Math.min(40, 8 * 2 ** n);
        assert.ok(d >= cap / 2 && d <= cap, `attempt ${n}: ${d} not in [${cap / 2}, ${cap}]`);
    });
    assert.equal(srv.conns.length, 7);
    assert.equal(st.at(-1).code, 1006);
});

test("the token travels as a bearer subprotocol entry (or in the query when asked)", async () => {
    const srv = fakeServer();
    const a = connect("ws://x/ws", { token: "abc.def.ghi", WebSocket: srv.FakeWS });
    const c = await srv.next();
    assert.deepEqual(c.protocols, ["wsbridge.v1", "bearer.abc.def.ghi"]);
    a.close();
    const b = connect("ws://x/ws?x=1", { token: "a b", tokenIn: "query", WebSocket: srv.FakeWS });
    const d = await srv.next();
    assert.equal(d.url, "ws://x/ws?x=1&access_token=a%20b");
    assert.deepEqual(d.protocols, ["wsbridge.v1"]);
    b.close();
});

test("a reconnect resumes each Kafka partition just past the last delivered message", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", { token: "t", WebSocket: srv.FakeWS, backoff: { initialMs: 1 } });
    const got = [];
    const sub = client.subscribe("orders", (m) => got.push([m.partition, m.offset]), { from: "earliest" });
    const c1 = await srv.next();
    c1.open();
    const r1 = await c1.request((r) => r.op === "subscribe");
    assert.deepEqual(r1.from, "earliest");
    c1.push({ type: "subscribed", id: r1.id, channel: "orders", offsets: { 0: 0, 1: 5, 2: 9 } });
    for (const [p, o] of [[0, 0], [1, 5], [0, 1], [0, 2], [1, 6]])
        c1.push({ type: "message", channel: "orders", data: {}, partition: p, offset: o });
    assert.deepEqual(sub.offsets, { 0: 3, 1: 7, 2: 9 });
    c1.drop(1001, "draining");
    const c2 = await srv.next();
    c2.open();
    const r2 = await c2.request((r) => r.op === "subscribe");
    // Partition 2 delivered nothing: it resumes where the first subscription started.
    assert.deepEqual(r2.from, { offsets: { 0: 3, 1: 7, 2: 9 } });
    const events = [];
    client.on("subscribed", (e) => events.push(e));
    c2.push({ type: "subscribed", id: r2.id, channel: "orders", offsets: { 0: 3, 1: 7, 2: 9 } });
    assert.equal(events[0].resumed, true);
    c2.push({ type: "message", channel: "orders", data: {}, partition: 0, offset: 3 });
    assert.deepEqual(got.at(-1), [0, 3]);
    // Channels without offsets (AMQP) resubscribe with their original `from`.
    client.subscribe("jobs", () => {});
    const r3 = await c2.request((r) => r.op === "subscribe" && r.channel === "jobs");
    assert.equal(r3.from, undefined);
    c2.push({ type: "subscribed", id: r3.id, channel: "jobs" });
    c2.drop(1006);
    const c3 = await srv.next();
    c3.open();
    const a = await c3.request((r) => r.channel === "orders");
    const b = await c3.request((r) => r.channel === "jobs");
    assert.deepEqual(a.from, { offsets: { 0: 4, 1: 7, 2: 9 } });
    assert.equal(b.from, undefined);
    client.close();
});

test("a filtered subscription sends its filter and resumes past sparse offsets with it", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", { token: "t", WebSocket: srv.FakeWS, backoff: { initialMs: 1 } });
    const filter = { headers: { kind: "paid" } };
    const sub = client.subscribe("orders", () => {}, { filter });
    const c1 = await srv.next();
    c1.open();
    const r1 = await c1.request((r) => r.op === "subscribe");
    assert.deepEqual(r1.filter, filter);
    c1.push({ type: "subscribed", id: r1.id, channel: "orders", offsets: { 0: 0, 1: 0 } });
    // The channel filter lets through offsets 4 and 9 only: no gap event, positions past them.
    const gaps = [];
    client.on("gap", (g) => gaps.push(g));
    for (const o of [4, 9]) c1.push({ type: "message", channel: "orders", data: {}, partition: 0, offset: o });
    assert.deepEqual(sub.offsets, { 0: 10, 1: 0 });
    c1.drop(1001, "draining");
    const c2 = await srv.next();
    c2.open();
    const r2 = await c2.request((r) => r.op === "subscribe");
    assert.deepEqual(r2.from, { offsets: { 0: 10, 1: 0 } });
    assert.deepEqual(r2.filter, filter);
    assert.equal(gaps.length, 0);
    client.close();
});

test("4401 with a fixed token ends the client with the server's reason; no retry", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", { token: "t", WebSocket: srv.FakeWS, backoff: { initialMs: 1 } });
    const st = states(client);
    (await srv.next()).drop(4401, '{"error":"token_expired"}');
    await until(() => client.state === "closed");
    assert.deepEqual(
        { code: st.at(-1).code, reason: st.at(-1).reason, error: st.at(-1).error },
        { code: 4401, reason: '{"error":"token_expired"}', error: "token_expired" }
    );
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(srv.conns.length, 1);
});

test("4401 with getToken: one retry with a fresh token; a fresh token refused at once is final", async () => {
    const srv = fakeServer();
    let n = 0;
    const client = connect("ws://x/ws", {
        getToken: async () => "tok" + ++n,
        WebSocket: srv.FakeWS,
        backoff: { initialMs: 1 },
    });
    const c1 = await srv.next();
    c1.open();
    c1.drop(4401, '{"error":"token_expired"}'); // expired mid-session: renew
    const c2 = await srv.next();
    assert.deepEqual(c2.protocols, ["wsbridge.v1", "bearer.tok2"]);
    c2.readyState = 1;
    c2.onopen({});
    c2.drop(4401, '{"error":"token_invalid"}'); // the fresh token refused at the handshake
    await until(() => client.state === "closed");
    assert.equal(srv.conns.length, 2);
});

test("publish settles on published / error; an unanswered publish rejects on disconnect", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", { token: "t", WebSocket: srv.FakeWS, backoff: { initialMs: 1 } });
    const early = client.publish("chat.a", { x: 1 }, { key: "k", headers: { h: "v" } }); // queued
    const c1 = await srv.next();
    c1.open();
    const r1 = await c1.request((r) => r.op === "publish");
    assert.deepEqual(r1, { op: "publish", id: r1.id, channel: "chat.a", data: { x: 1 }, key: "k", headers: { h: "v" } });
    c1.push({ type: "published", id: r1.id, channel: "chat.a" });
    assert.equal((await early).type, "published");
    const bad = client.publish("chat.b", 1);
    const r2 = await c1.request((r) => r.op === "publish");
    c1.push({ type: "error", id: r2.id, code: "forbidden", message: "no" });
    await assert.rejects(bad, (e) => e.code === "forbidden" && e.message === "no");
    const lost = client.publish("chat.c", 2);
    await c1.request((r) => r.op === "publish");
    c1.drop(1006);
    await assert.rejects(lost, (e) => e.code === "disconnected");
    const later = client.publish("chat.d", 3);
    client.close();
    await assert.rejects(later, (e) => e.code === "closed");
});

test("the token is refreshed through auth before expires_at, on the same connection", async () => {
    const srv = fakeServer();
    let n = 0;
    const client = connect("ws://x/ws", { getToken: () => "tok" + ++n, WebSocket: srv.FakeWS });
    const st = states(client);
    const c1 = await srv.next();
    const now = Math.floor(Date.now() / 1000);
    c1.open({ expires_at: now + 1 }); // under a second left: refresh at half of it
    const auth = await c1.request((r) => r.op === "auth", 1500);
    assert.equal(auth.token, "tok2");
    c1.push({ type: "authenticated", id: auth.id, expires_at: now + 3600 });
    await until(() => client.expiresAt === now + 3600);
    assert.equal(srv.conns.length, 1);
    assert.deepEqual(st.map((e) => e.state), ["connecting", "open"]);
    client.close();
});

test("unsubscribe stops delivery at once and tells the server", async () => {
    const srv = fakeServer();
    const client = connect("ws://x/ws", { token: "t", WebSocket: srv.FakeWS });
    const got = [];
    const sub = client.subscribe("a", (m) => got.push(m.data));
    const c1 = await srv.next();
    c1.open();
    const r = await c1.request((x) => x.op === "subscribe");
    c1.push({ type: "subscribed", id: r.id, channel: "a" });
    await sub.ready;
    c1.push({ type: "message", channel: "a", data: 1 });
    const done = sub.unsubscribe();
    c1.push({ type: "message", channel: "a", data: 2 }); // in flight: not delivered
    const u = await c1.request((x) => x.op === "unsubscribe");
    c1.push({ type: "unsubscribed", id: u.id, channel: "a" });
    await done;
    assert.deepEqual(got, [1]);
    assert.equal(sub.active, false);
    client.close();
});

test("handshakes failing twice in a row (an invisible 401?) ask getToken again", async () => {
    const srv = fakeServer();
    let n = 0;
    const client = connect("ws://x/ws", { getToken: () => "tok" + ++n, WebSocket: srv.FakeWS, backoff: { initialMs: 1 } });
    (await srv.next()).drop(1006);
    const c2 = await srv.next();
    assert.deepEqual(c2.protocols, ["wsbridge.v1", "bearer.tok1"]); // one failure: same token
    c2.drop(1006);
    const c3 = await srv.next();
    assert.deepEqual(c3.protocols, ["wsbridge.v1", "bearer.tok2"]);
    c3.open();
    await until(() => client.state === "open");
    client.close();
});

// ---- the SSE transport: a fake EventSource and fetch play the bridge ----------------------

function fakeSse() {
    const streams = [];
    const posts = [];
    let waiters = [];
    class FakeES {
        constructor(url) {
            this.url = url;
            this.listeners = {};
            this.closed = false;
            streams.push(this);
            const w = waiters;
            waiters = [];
            w.forEach((f) => f(this));
        }
        addEventListener(type, fn) {
            (this.listeners[type] = this.listeners[type] || []).push(fn);
        }
        close() {
            this.closed = true;
        }
        // server side
        emit(type, obj) {
            (this.listeners[type] || []).forEach((fn) => fn({ data: JSON.stringify(obj) }));
        }
        welcome(extra = {}) {
            this.emit("welcome", { type: "welcome", session: "s", sub: "u", expires_at: null, protocol: "wsbridge.v1", ...extra });
        }
        fail() {
            this.onerror && this.onerror({});
        }
        get query() {
            return new URL(this.url).searchParams;
        }
    }
    const fetch = (url, init) =>
        new Promise((resolve) => {
            posts.push({ url, init, body: JSON.parse(init.body), resolve: (status, obj) =>
                resolve({ ok: status === 200, status, json: async () => obj }) });
        });
    return {
        FakeES,
        fetch,
        streams,
        posts,
        next(timeout = 3000) {
            return new Promise((resolve, reject) => {
                const t = setTimeout(() => reject(new Error("no new stream")), timeout);
                waiters.push((c) => {
                    clearTimeout(t);
                    resolve(c);
                });
            });
        },
    };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test("a WebSocket cut before welcome falls back to SSE; state says which transport", async () => {
    const srv = fakeServer();
    const sse = fakeSse();
    const client = connect("ws://x:1/ws", {
        token: "t.o.k", WebSocket: srv.FakeWS, EventSource: sse.FakeES, fetch: sse.fetch,
        backoff: { initialMs: 1 },
    });
    const st = states(client);
    const got = [];
    client.subscribe("orders", (m) => got.push(m.offset));
    const ws = await srv.next();
    ws.readyState = 1;
    ws.onopen({});
    ws.drop(1006); // the upgrade went through, then a proxy cut it before welcome
    const es = await sse.next();
    assert.equal(es.url.split("?")[0], "http://x:1/sse");
    assert.deepEqual(es.query.getAll("channel"), ["orders"]);
    assert.equal(es.query.get("access_token"), "t.o.k");
    es.welcome();
    es.emit("subscribed", { type: "subscribed", id: "orders", channel: "orders", offsets: { 0: 4 } });
    await tick();
    const open = st.find((e) => e.state === "open");
    assert.equal(open.transport, "sse");
    es.emit("message", { type: "message", channel: "orders", data: 1, partition: 0, offset: 4 });
    es.emit("message", { type: "message", channel: "orders", data: 2, partition: 0, offset: 5 });
    assert.deepEqual(got, [4, 5]);
    client.close();
});

test("SSE: subscribe reopens from the delivered positions, a channel error fails only it", async () => {
    const sse = fakeSse();
    const client = connect("wss://h/ws", {
        token: "t", transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch,
    });
    const got = [];
    const a = client.subscribe("orders", (m) => got.push(m.offset));
    const s1 = await sse.next();
    s1.welcome();
    s1.emit("subscribed", { type: "subscribed", id: "orders", channel: "orders", offsets: { 0: 0, 1: 3 } });
    await a.ready;
    s1.emit("message", { type: "message", channel: "orders", data: 1, partition: 1, offset: 3 });
    const errs = [];
    const b = client.subscribe("secret", () => {}, { onError: (e) => errs.push(e.code) });
    const s2 = await sse.next();
    assert.ok(s1.closed);
    assert.equal(s2.url.split("?")[0], "https://h/sse");
    assert.deepEqual(s2.query.getAll("channel").sort(), ["orders", "secret"]);
    // The token names orders at partition 0 -> 0 and 1 -> 4 (just past the delivered one).
    const raw = Buffer.from(s2.query.get("last_event_id"), "base64url");
    assert.equal(raw[0], 1);
    assert.deepEqual([...raw.subarray(5)], [2, 0, 0, 1, 4]);
    s2.welcome();
    s2.emit("error", { type: "error", id: "secret", code: "forbidden", message: "no" });
    s2.emit("subscribed", { type: "subscribed", id: "orders", channel: "orders", offsets: { 0: 0, 1: 4 } });
    await assert.rejects(b.ready, (e) => e.code === "forbidden");
    assert.deepEqual(errs, ["forbidden"]);
    s2.emit("message", { type: "message", channel: "orders", data: 2, partition: 1, offset: 4 });
    assert.deepEqual(got, [3, 4]);
    assert.equal(a.active, true);
    client.close();
});

test("SSE: each subscription's filter travels in the stream's filter= object", async () => {
    const sse = fakeSse();
    const client = connect("ws://h/ws", {
        token: "t", transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch,
    });
    client.subscribe("orders", () => {}, { filter: { key: "u1" } });
    const s1 = await sse.next();
    assert.deepEqual(JSON.parse(s1.query.get("filter")), { orders: { key: "u1" } });
    s1.welcome();
    client.subscribe("all", () => {}); // no filter of its own: not named
    const s2 = await sse.next();
    assert.deepEqual(s2.query.getAll("channel").sort(), ["all", "orders"]);
    assert.deepEqual(JSON.parse(s2.query.get("filter")), { orders: { key: "u1" } });
    s2.welcome();
    client.subscribe("audit", () => {}, { filter: [{ key: "a" }, { headers: { kind: "x" } }] });
    const s3 = await sse.next();
    assert.deepEqual(JSON.parse(s3.query.get("filter")),
        { orders: { key: "u1" }, audit: [{ key: "a" }, { headers: { kind: "x" } }] });
    client.close();
    const plain = connect("ws://h/ws", {
        token: "t", transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch,
    });
    plain.subscribe("orders", () => {});
    const s4 = await sse.next();
    assert.equal(s4.query.get("filter"), null); // no filter anywhere: no parameter
    plain.close();
});

test("SSE: publish is a POST answered by the bridge; refusals reject with their code", async () => {
    const sse = fakeSse();
    const client = connect("ws://h/ws", { token: "tok", transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch });
    await tick(); // no channel: open without a stream
    assert.equal(client.state, "open");
    const p = client.publish("chat.a", { t: 1 }, { key: "k", headers: { h: "v" } });
    await tick();
    const req = sse.posts.shift();
    assert.equal(req.url, "http://h/publish");
    assert.equal(req.init.headers.Authorization, "Bearer tok");
    assert.deepEqual(req.body, { channel: "chat.a", data: { t: 1 }, key: "k", headers: { h: "v" } });
    req.resolve(200, { type: "published", channel: "chat.a" });
    assert.equal((await p).type, "published");
    const q = client.publish("chat.b", 1);
    await tick();
    sse.posts.shift().resolve(403, { type: "error", code: "forbidden", message: "no" });
    await assert.rejects(q, (e) => e.code === "forbidden");
    const r = client.publish("chat.b", 1);
    await tick();
    sse.posts.shift().resolve(401, { error: "token_expired", message: "authentication failed" });
    await assert.rejects(r, (e) => e.code === "token_expired");
    client.close();
});

test("SSE: a token refresh reopens the stream with the new token from the positions", async () => {
    const sse = fakeSse();
    let n = 0;
    const exp = Math.floor(Date.now() / 1000) + 2;
    const client = connect("ws://h/ws", {
        transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch, refreshMarginS: 60,
        getToken: async () => "tok" + ++n,
    });
    const auths = [];
    client.on("authenticated", (e) => auths.push(e));
    client.subscribe("orders", () => {});
    const s1 = await sse.next();
    assert.equal(s1.query.get("access_token"), "tok1");
    s1.welcome({ expires_at: exp });
    s1.emit("subscribed", { type: "subscribed", id: "orders", channel: "orders", offsets: { 0: 7 } });
    const s2 = await sse.next(); // the refresh timer (half the lifetime)
    assert.equal(s2.query.get("access_token"), "tok2");
    assert.ok(s2.query.get("last_event_id"));
    s2.welcome({ expires_at: exp + 60 });
    await tick();
    assert.deepEqual(auths, [{ expires_at: exp + 60 }]);
    assert.equal(client.state, "open");
    client.close();
});

test("SSE: token_expired on the stream is a 4401 (final with a fixed token)", async () => {
    const sse = fakeSse();
    const client = connect("ws://h/ws", { token: "t", transports: ["sse"], EventSource: sse.FakeES, fetch: sse.fetch });
    const st = states(client);
    client.subscribe("orders", () => {});
    const s1 = await sse.next();
    s1.welcome();
    s1.emit("error", { type: "error", code: "token_expired", message: "x" });
    await tick();
    assert.equal(st.at(-1).state, "closed");
    assert.equal(st.at(-1).code, 4401);
    assert.equal(st.at(-1).error, "token_expired");
});
