"""The browser library (clients/js/wsbridge.js, SPEC §10) in a real headless chromium against
the real bridge on the Kafka mock cluster, and the `--demo` page built on it.

The test page lives on another origin (a loopback HTTP server on its own port) and
imports the library from the bridge, as a user's page would. Producers and the consumer that
checks publishes are confluent_kafka, never the bridge's own code. Ticks carry sequence
numbers in their payloads, so order, gaps and duplicates are checked by value."""

# ctest: serial cost=37  (scheduling: docs/testing.md)

import http.server
import json
import os
import threading
import time

import jwt
import pytest

from browser_helpers import BROWSER_DIR, browser  # noqa: F401 (fixture)
from conftest import deep_merge, default_config, free_port, http_get
from kafka_helpers import BackgroundProducer, MockCluster, kafka_overrides, produce, read_topic

SECRET = "browser-tests-hs256-secret-0123456789abcdef"
SANITIZED = os.environ.get("WSB_SANITIZED") == "1"

with open(os.path.join(BROWSER_DIR, "test_page.html"), encoding="utf-8") as _f:
    TEST_PAGE = _f.read()


def token(sub="u1", ttl=3600, secret=SECRET):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    topics = {"ticks": 1, "restart": 1, "refresh": 1, "unsub": 1, "chat-u1": 1,
              "chat-other": 1, "sse1": 2, "sse2": 2, "sse3": 1}
    mc = MockCluster(1, topics, tmp_path_factory.mktemp("kafka") / "mock.stderr")
    yield mc
    mc.close()


def bridge_config(mc, port=None, admin=None):
    cfg = deep_merge(default_config(port or free_port(), admin or free_port()), kafka_overrides(
        mc.bootstrap, channels=[{"match": "t.*", "connector": "k", "topic": "{1}"},
                                {"match": "chat.*", "connector": "k", "topic": "chat-{1}"}]))
    cfg["auth"] = {"refusal": "close",
                   "jwt": {"algorithms": ["HS256"], "keys": [{"secret": SECRET}], "leeway_s": 0}}
    cfg["acl"] = [{"subscribe": ["t.*", "chat.*"], "publish": ["chat.{sub}"]}]
    return cfg


@pytest.fixture(scope="module")
def app_origin():
    """The user's site: a loopback HTTP server on its own port (another origin than the
    bridge) serving the test page."""
    with open(os.path.join(BROWSER_DIR, "..", "..", "clients", "js", "examples", "index.html"),
              "rb") as f:
        files = {"/t.html": TEST_PAGE.encode(), "/example.html": f.read()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = files.get(self.path.split("?")[0].split("#")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def shared_bridge(mock, module_bridge_factory):
    return module_bridge_factory(config=bridge_config(mock))


def open_page(browser, b, name, origin):  # noqa: F811
    lib = "http://127.0.0.1:%d/wsbridge.js" % b.port
    browser.page(name, origin + "/t.html?lib=" + lib)
    browser.wait(name, "window.T && T.ready", 10, "the test page did not load the library")
    return name


def start(browser, page, b, **opts):  # noqa: F811
    browser.eval(page, "T.start(%s, %s)" % (json.dumps(b.ws_url), json.dumps(opts)))


def seqs(browser, page, field="i"):  # noqa: F811
    return browser.eval(page, "T.msgs.map(m => m.data.%s)" % field)


def states(browser, page):  # noqa: F811
    return browser.eval(page, "T.states.map(s => s.state)")


def test_library_is_served_with_type_etag_and_cache_headers(shared_bridge):
    b = shared_bridge
    status, headers, body = http_get("http://127.0.0.1:%d/wsbridge.js" % b.port)
    assert status == 200, status
    assert headers["content-type"] == "text/javascript; charset=utf-8", headers
    with open(os.path.join(BROWSER_DIR, "..", "..", "clients", "js", "wsbridge.js"), "rb") as f:
        assert body == f.read(), "the served library is not clients/js/wsbridge.js"
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 8, etag
    assert headers["cache-control"] == "no-cache", headers
    assert headers["access-control-allow-origin"] == "*", headers
    status, headers2, body2 = http_get("http://127.0.0.1:%d/wsbridge.js" % b.port,
                                       headers={"If-None-Match": 'W/"x", ' + etag})
    assert status == 304 and body2 == b"" and headers2["etag"] == etag, (status, headers2)
    status, _, body3 = http_get("http://127.0.0.1:%d/wsbridge.js" % b.port,
                                headers={"If-None-Match": '"other"'})
    assert status == 200 and body3 == body
    status, headers, body = http_get("http://127.0.0.1:%d/wsbridge.d.ts" % b.port)
    assert status == 200 and b"export function connect" in body, status
    assert headers["content-type"].startswith("application/typescript"), headers
    # Not the demo: no page at /, and the internal template is not reachable.
    assert http_get("http://127.0.0.1:%d/" % b.port)[0] == 404
    assert http_get("http://127.0.0.1:%d/demo.html" % b.port)[0] == 404


def test_messages_arrive_in_order_on_a_page(browser, app_origin, shared_bridge, mock):  # noqa: F811
    p = open_page(browser, shared_bridge, "order", app_origin)
    start(browser, p, shared_bridge, token=token(), channel="t.ticks")
    browser.wait(p, "T.subscribed.length === 1", 15, "no subscribed")
    produce(mock.bootstrap, "ticks", [{"value": json.dumps({"i": i}).encode()}
                                      for i in range(200)])
    browser.wait(p, "T.msgs.length >= 200", 15, "not every tick arrived")
    assert seqs(browser, p) == list(range(200))
    # What the page shows, in order.
    shown = browser.eval(p, "[...document.querySelectorAll('#msgs li')].map(li => "
                            "JSON.parse(li.textContent).i)")
    assert shown == list(range(200))
    assert states(browser, p) == ["connecting", "open"]
    assert browser.errors(p) == []
    browser.close_page(p)


def test_bridge_restart_resumes_with_no_gap_and_no_duplicate(browser, app_origin, mock, bridge_factory):  # noqa: F811,E501
    cfg = bridge_config(mock)
    b = bridge_factory(config=cfg)
    p = open_page(browser, b, "restart", app_origin)
    start(browser, p, b, token=token(), channel="t.restart",
          backoff={"initialMs": 100, "maxMs": 1000})
    browser.wait(p, "T.subscribed.length === 1", 15, "no subscribed")
    prod = BackgroundProducer(mock.bootstrap, "restart", 1, rate=100, duration=6.0)
    prod.start()
    browser.wait(p, "T.msgs.length >= 50", 10, "no ticks before the restart")
    assert b.stop() == 0  # SIGTERM: drain, close 1001
    time.sleep(0.3)  # records keep coming while the bridge is down
    b2 = bridge_factory(config=cfg)
    assert b2.port == b.port
    reports = prod.finish(stop=False)
    n = len(reports)
    assert n > 300, n
    browser.wait(p, "T.msgs.length >= %d" % n, 20, "the page did not catch up after the restart")
    time.sleep(0.3)
    got = seqs(browser, p)
    first = got[0]
    assert got == list(range(first, n)), "gap or duplicate across the restart: %s" % (
        [x for i, x in enumerate(got[1:]) if x != got[i] + 1][:10])
    st = browser.eval(p, "T.states")
    names = [s["state"] for s in st]
    assert names.count("open") == 2 and "reconnecting" in names, names
    rec = next(s for s in st if s["state"] == "reconnecting")
    assert rec["code"] in (1001, 1006), rec
    sub = browser.eval(p, "T.subscribed")
    assert len(sub) == 2 and sub[1]["resumed"] is True, sub
    # The resume asked for exactly the offset after the last message delivered before it.
    assert sub[1]["offsets"]["0"] <= n, sub
    # Chromium logs each refused reconnect attempt; nothing else may go wrong.
    errs = [e for e in browser.errors(p) if "ERR_CONNECTION_REFUSED" not in e]
    assert errs == []
    browser.close_page(p)


def test_token_about_to_expire_is_refreshed_without_reconnect(browser, app_origin, shared_bridge, mock):  # noqa: F811,E501
    b = shared_bridge
    p = open_page(browser, b, "refresh", app_origin)
    ttl = 6 if SANITIZED else 3
    start(browser, p, b, token=token(ttl=ttl), tokens=[token(ttl=3600)], channel="t.refresh")
    browser.wait(p, "T.subscribed.length === 1", 10, "no subscribed")
    browser.wait(p, "T.authenticated.length >= 1", ttl + 2, "the token was not refreshed")
    assert browser.eval(p, "T.tokenCalls") == 1
    time.sleep(ttl + 1)  # past the first token's exp (leeway 0): the session lives on
    produce(mock.bootstrap, "refresh", [{"value": b'{"i":1}'}])
    browser.wait(p, "T.msgs.length === 1", 10, "no message after the first token's expiry")
    assert states(browser, p) == ["connecting", "open"], browser.eval(p, "T.states")
    exp = browser.eval(p, "T.client.expiresAt")
    assert exp > time.time() + 3000, exp
    browser.close_page(p)


def test_bad_token_with_refusal_close_shows_the_reason(browser, app_origin, shared_bridge):  # noqa: F811
    b = shared_bridge
    bad = token(secret="another-secret-entirely-0123456789")
    p = open_page(browser, b, "refused", app_origin)
    start(browser, p, b, token=bad, channel="t.ticks")
    browser.wait(p, "T.states.some(s => s.state === 'closed')", 10, "no closed state")
    closed = browser.eval(p, "T.states.at(-1)")
    assert closed["state"] == "closed" and closed["code"] == 4401, closed
    reason = json.loads(closed["reason"])
    assert reason["error"].startswith("token_") and closed["error"] == reason["error"], closed
    shown = browser.eval(p, "document.getElementById('state').textContent")
    assert "4401" in shown and reason["error"] in shown, shown
    assert states(browser, p) == ["connecting", "closed"]  # no retry of a refusal

    # With getToken handing out the same bad token: one fresh attempt is refused, then final.
    p2 = open_page(browser, b, "refused2", app_origin)
    start(browser, p2, b, tokens=[bad], channel="t.ticks")
    browser.wait(p2, "T.states.some(s => s.state === 'closed')", 10, "no closed state")
    assert browser.eval(p2, "T.tokenCalls") == 1
    assert browser.eval(p2, "T.states.at(-1).code") == 4401
    browser.close_page(p)
    browser.close_page(p2)


def test_publish_resolves_after_the_record_is_in_the_topic(browser, app_origin, shared_bridge, mock):  # noqa: F811,E501
    p = open_page(browser, shared_bridge, "publish", app_origin)
    start(browser, p, shared_bridge, token=token("u1"))
    browser.wait(p, "T.client.state === 'open'", 10, "not open")
    marker = "m-%d" % time.monotonic_ns()
    res = browser.eval(p, "T.client.publish('chat.u1', {text: %s}, {key: 'u1', "
                          "headers: {h: 'v'}}).then(r => r)" % json.dumps(marker))
    assert res["type"] == "published" and res["channel"] == "chat.u1", res
    recs = read_topic(mock.bootstrap, "chat-u1", 1, 1, timeout=10, settle=0.2)
    mine = [m for m in recs if marker.encode() in m.value()]
    assert len(mine) == 1, [m.value() for m in recs]
    assert json.loads(mine[0].value()) == {"text": marker}
    assert mine[0].key() == b"u1" and mine[0].headers() == [("h", b"v")]

    err = browser.eval(p, "T.client.publish('chat.other', 1).then(r => ({ok: r}), "
                          "e => ({code: e.code, message: e.message}))")
    assert err.get("code") == "forbidden" and err.get("message"), err
    browser.close_page(p)


def sse_receive_and_publish(browser, p, mock, topic):  # noqa: F811
    """The page (already started on channel t.TOPIC) gets 60 records over two partitions in
    order per partition, and publishes through POST /publish (record in the topic once)."""
    browser.wait(p, "T.subscribed.length === 1", 15, "no subscribed over SSE")
    opened = [s for s in browser.eval(p, "T.states") if s["state"] == "open"]
    assert opened and opened[-1]["transport"] == "sse", opened
    produce(mock.bootstrap, topic, [{"value": json.dumps({"i": i}).encode(), "partition": i % 2}
                                    for i in range(60)])
    browser.wait(p, "T.msgs.length >= 60", 15, "not every record arrived over SSE")
    msgs = browser.eval(p, "T.msgs.map(m => [m.partition, m.offset, m.data.i])")
    assert sorted(m[2] for m in msgs) == list(range(60)), msgs
    for part in (0, 1):
        offs = [m[1] for m in msgs if m[0] == part]
        assert offs == sorted(offs) and len(set(offs)) == 30, (part, offs)
    marker = "sse-%d" % time.monotonic_ns()
    res = browser.eval(p, "T.client.publish('chat.u1', {text: %s}, {key: 'u1'}).then(r => r, "
                          "e => ({code: e.code, message: e.message}))" % json.dumps(marker))
    assert res.get("type") == "published" and res["channel"] == "chat.u1", res
    recs = read_topic(mock.bootstrap, "chat-u1", 1, 1, timeout=10, settle=0.3)
    mine = [m for m in recs if marker.encode() in m.value()]
    assert len(mine) == 1, [m.value() for m in recs]
    err = browser.eval(p, "T.client.publish('chat.other', 1).then(r => ({ok: r}), "
                          "e => ({code: e.code}))")
    assert err.get("code") == "forbidden", err
    # Chromium logs every non-2xx fetch; the refused publish is the only one.
    errors = [e for e in browser.errors(p) if "status of 403" not in e]
    assert errors == [], errors


def test_sse_only_page_receives_and_publishes(browser, app_origin, shared_bridge, mock):  # noqa: F811,E501
    p = open_page(browser, shared_bridge, "sse-only", app_origin)
    start(browser, p, shared_bridge, token=token("u1"), channel="t.sse1", transports=["sse"])
    sse_receive_and_publish(browser, p, mock, "sse1")
    assert states(browser, p) == ["connecting", "open"]
    browser.close_page(p)


def test_page_falls_back_to_sse_when_websocket_fails(browser, app_origin, shared_bridge, mock):  # noqa: F811,E501
    p = open_page(browser, shared_bridge, "sse-fallback", app_origin)
    browser.eval(p, "window.WebSocket = function () { throw new Error('WebSocket blocked'); }; 1")
    start(browser, p, shared_bridge, token=token("u1"), channel="t.sse2",
          backoff={"initialMs": 50, "maxMs": 200})
    sse_receive_and_publish(browser, p, mock, "sse2")
    st = browser.eval(p, "T.states")
    assert [s["state"] for s in st][:3] == ["connecting", "reconnecting", "connecting"], st
    assert "WebSocket blocked" in st[1].get("reason", ""), st
    browser.close_page(p)


def test_sse_page_gets_only_what_its_filter_asks_for(browser, app_origin, shared_bridge, mock):  # noqa: F811,E501
    """A subscription's own filter survives the fall-back to SSE: the library sends it in the
    stream's filter= object, the bridge narrows with it (before, the page got the channel
    unnarrowed)."""
    p = open_page(browser, shared_bridge, "sse-filter", app_origin)
    start(browser, p, shared_bridge, token=token("u1"), channel="t.sse3", transports=["sse"],
          filter={"key": "k1"})
    browser.wait(p, "T.subscribed.length === 1", 15, "no subscribed over SSE")
    produce(mock.bootstrap, "sse3", [{"value": json.dumps({"i": i}).encode(),
                                      "key": b"k1" if i % 2 == 0 else b"k2"} for i in range(40)])
    browser.wait(p, "T.msgs.length >= 20", 15, "the k1 records did not arrive over SSE")
    time.sleep(0.5)  # any k2 record would be here by now
    msgs = browser.eval(p, "T.msgs.map(m => [m.key, m.data.i])")
    assert msgs == [["k1", i] for i in range(0, 40, 2)], msgs
    assert browser.errors(p) == []
    browser.close_page(p)


def test_unsubscribe_stops_delivery(browser, app_origin, shared_bridge, mock):  # noqa: F811
    b = shared_bridge
    p = open_page(browser, b, "unsub", app_origin)
    start(browser, p, b, token=token(), channel="t.unsub")
    browser.wait(p, "T.subscribed.length === 1", 10, "no subscribed")
    produce(mock.bootstrap, "unsub", [{"value": json.dumps({"i": i}).encode()} for i in range(5)])
    browser.wait(p, "T.msgs.length === 5", 10, "no messages")
    subs_before = b.metrics().sum("wsbridge_subscriptions")
    browser.eval(p, "T.sub.unsubscribe().then(() => true)")
    assert browser.eval(p, "T.sub.active") is False
    b.wait_metric("wsbridge_subscriptions", lambda v: v <= subs_before - 1, timeout=5)
    assert b.metrics().sum("wsbridge_subscriptions") <= subs_before - 1
    produce(mock.bootstrap, "unsub", [{"value": json.dumps({"i": i}).encode()}
                                      for i in range(5, 10)])
    time.sleep(1.0)
    assert seqs(browser, p) == list(range(5))
    assert browser.eval(p, "T.client.state") == "open"
    browser.close_page(p)


def test_demo_page_shows_live_ticks_publish_and_latency(browser, app_origin, bridge_factory,  # noqa: F811,E501
                                                        tmp_path):
    port, admin = free_port(), free_port()
    overlay = {"listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
               "log": {"level": "info", "format": "json"}}
    b = bridge_factory(config=overlay, args=["--demo"], timeout=20)
    p = "demo"
    browser.page(p, "http://127.0.0.1:%d/" % port)
    # A tick every 500 ms: 12 samples for the latency readout.
    browser.wait(p, "window.wsbDemo && wsbDemo.count >= 12", 20, "the demo page shows no ticks")
    demo = browser.eval(p, "({seqs: wsbDemo.seqs, gaps: wsbDemo.gaps, dups: wsbDemo.dups, "
                           "lat: wsbDemo.latencies, state: document.getElementById('state')"
                           ".textContent, p50: document.getElementById('p50').textContent, "
                           "rows: document.querySelectorAll('#rows tr').length})")
    s = demo["seqs"]
    assert s == list(range(s[0], s[0] + len(s))), s
    assert demo["gaps"] == 0 and demo["dups"] == 0 and demo["state"] == "open", demo
    assert demo["rows"] == len(s)
    lat = sorted(demo["lat"])
    p50 = lat[len(lat) // 2]
    assert int(demo["p50"]) == p50, demo  # the readout is the median of the same samples
    # Where the time went, if it went: the page's samples in arrival order, the bridge's own
    # delivery latency (broker timestamp to socket write), and the hand-off gate, which
    # never holds for a page that keeps up with 2 ticks/s.
    mt = b.metrics()
    held = mt.value("wsbridge_handoff_held_seconds_total")
    n = mt.value("wsbridge_delivery_latency_seconds_count", 0)
    under = {le: mt.value("wsbridge_delivery_latency_seconds_bucket", 0, le=le)
             for le in ("0.025", "0.05", "0.5")}
    where = ("page samples in arrival order %s; bridge delivery latency: %d of %d under 25 ms, "
             "%d under 50 ms, %d under 500 ms; hand-off held %s s" % (
                 demo["lat"], under["0.025"], n, under["0.05"], under["0.5"], held))
    print("demo page latency: p50 %d ms, max %d ms over %d ticks; %s" % (
        p50, lat[-1], len(lat), where))
    assert held == 0, where
    with open(tmp_path / "demo-latency.txt", "w") as f:
        f.write("p50 %d max %d n %d\n" % (p50, lat[-1], len(lat)))

    # The publish box: resolves once Kafka confirmed; a channel outside the ACL is refused.
    browser.eval(p, "document.getElementById('pubbtn').click(), true")
    res = browser.wait(p, "(t => t.startsWith('published') || t.startsWith('refused') ? t : '')"
                          "(document.getElementById('pubres').textContent)", 10, "no result")
    assert res.startswith("published"), res
    browser.eval(p, "document.getElementById('pubch').value = 'other.chat', "
                    "document.getElementById('pubbtn').click(), true")
    res = browser.wait(p, "(t => t.startsWith('refused') ? t : '')"
                          "(document.getElementById('pubres').textContent)", 10, "no refusal")
    assert res == "refused: forbidden", res
    assert browser.errors(p) == []
    browser.screenshot(p, tmp_path / "demo.png")

    # The plain example page of clients/js/examples, on another origin, against the demo.
    tok = browser.eval(p, "document.querySelector('meta[name=wsbridge-token]').content")
    ex = "example"
    browser.page(ex, "%s/example.html?bridge=http://127.0.0.1:%d#token=%s" % (app_origin, port, tok))
    browser.wait(ex, "(document.getElementById('log').textContent.match(/\"seq\"/g) || [])"
                     ".length >= 2", 10, "the example page shows no ticks")
    assert browser.eval(ex, "document.getElementById('state').textContent") == "open"
    assert browser.errors(ex) == []
    browser.close_page(ex)
    browser.close_page(p)
    # The target: the page's readout shows p50 under 50 ms on this machine.
    assert p50 < 50, "demo page latency p50 %d ms (%s)" % (p50, where)


def test_demo_page_survives_a_demo_restart(browser, bridge_factory):  # noqa: F811
    """A restarted demo has a new secret and a new in-process cluster: the page reconnects,
    gets the new token through getToken (its own page, fetched again) and shows ticks again."""
    port, admin = free_port(), free_port()
    overlay = {"listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
               "log": {"level": "info", "format": "json"}}
    b = bridge_factory(config=overlay, args=["--demo"], timeout=20)
    p = "demo-restart"
    browser.page(p, "http://127.0.0.1:%d/" % port)
    browser.wait(p, "window.wsbDemo && wsbDemo.count >= 2", 15, "no ticks")
    assert b.stop() == 0
    b2 = bridge_factory(config=overlay, args=["--demo"], timeout=20)
    assert b2.port == port
    n = browser.eval(p, "wsbDemo.count")
    browser.wait(p, "wsbDemo.count >= %d" % (n + 3), 20, "no ticks after the restart")
    st = browser.eval(p, "wsbDemo.client.state")
    assert st == "open", st
    events = browser.eval(p, "document.getElementById('events').textContent")
    assert "reconnecting" in events and "resumed" in events, events
    # Within each connection the ticks are contiguous (a new topic after the restart is
    # noted on the page, not counted).
    assert browser.eval(p, "[wsbDemo.dups, wsbDemo.gaps]") == [0, 0], events
    browser.close_page(p)
