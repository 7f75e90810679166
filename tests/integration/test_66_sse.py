"""The Server-Sent Events transport and HTTP publish (SPEC §11, docs/sse.md), with a plain
socket client (sse_helpers.SSEClient) and http.client: Kafka records as `message` events
whose ids resume exactly (mock cluster), refusals with JSON bodies, a forbidden channel next
to an allowed one, a stalled reader under the send-buffer limits, POST /publish answered
after the broker confirms and landing once."""

# ctest: cost=25  (scheduling: docs/testing.md)

import json
import os
import socket
import threading
import time
import urllib.parse

import pytest

from auth_helpers import Keys, auth_overrides, mint
from kafka_helpers import kafka_mock, kafka_overrides, produce, read_topic  # noqa: F401
from sse_helpers import SSEClient, StreamEnded, decode_token, post_publish

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"


def fnv1a(name):
    h = 2166136261
    for c in name.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h


def subscribed(s, channels, timeout=10.0):
    """Reads welcome and one `subscribed` per channel; returns {channel: offsets}."""
    got = {}
    while len(got) < len(channels):
        e = s.next_event(timeout=timeout)
        assert e["event"] in ("welcome", "subscribed"), e
        if e["event"] == "subscribed":
            got[e["data"]["channel"]] = e["data"].get("offsets")
    return got


def test_head_and_kafka_records_as_events_then_resume(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap, extra={"limits": {"ping_interval_ms": 300}}))
    s = SSEClient.open(b.port, "/sse?channel=orders")
    assert s.status == 200
    assert s.headers["content-type"] == "text/event-stream"
    assert s.headers["cache-control"] == "no-cache"
    assert s.headers["x-accel-buffering"] == "no"
    assert "content-length" not in s.headers
    subscribed(s, ["orders"])
    produce(mc.bootstrap, "orders",
            [{"value": json.dumps({"i": i}).encode(), "partition": i % 3} for i in range(20)])
    evs = s.events(20)
    assert sorted(e["data"]["data"]["i"] for e in evs) == list(range(20))
    # Each id names the stream's positions: one more record delivered per event.
    totals = []
    for e in evs:
        assert e["id"] and len(e["id"]) < 200, e
        pos = decode_token(e["id"])
        assert list(pos) == [fnv1a("orders")], pos
        p, o = e["data"]["partition"], e["data"]["offset"]
        assert pos[fnv1a("orders")][p] == o + 1, (pos, e["data"])
        totals.append(sum(pos[fnv1a("orders")].values()))
    assert totals == list(range(totals[0], totals[0] + 20)), totals
    s.close()

    # Resume after the 10th with Last-Event-ID: exactly the other 10, then new ones.
    tenth = evs[9]["id"]
    produce(mc.bootstrap, "orders",
            [{"value": json.dumps({"i": i}).encode(), "partition": i % 3} for i in range(20, 25)])
    r = SSEClient.open(b.port, "/sse?channel=orders", headers={"Last-Event-ID": tenth})
    assert r.status == 200
    got = r.events(15, timeout=15)
    want = {(e["data"]["partition"], e["data"]["offset"]) for e in evs[10:]}
    seen = [(e["data"]["partition"], e["data"]["offset"]) for e in got]
    assert len(set(seen)) == 15, seen
    assert want <= set(seen), (want, seen)
    assert sorted(e["data"]["data"]["i"] for e in got) == sorted(
        [e["data"]["data"]["i"] for e in evs[10:]] + list(range(20, 25)))
    produce(mc.bootstrap, "orders", [{"value": b'{"i":25}', "partition": 1}])
    assert r.events(1)[0]["data"]["data"] == {"i": 25}
    with pytest.raises(socket.timeout):
        e = r.until(lambda e: e["event"] == "message", timeout=0.8)
    assert r.comments >= 1  # the keep-alive comment (ping_interval_ms 300)
    r.close()

    # The same token in the query string (last_event_id) resumes too.
    q = SSEClient.open(b.port, "/sse?channel=orders&last_event_id=" + evs[18]["id"])
    assert q.status == 200
    got = sorted(e["data"]["data"]["i"] for e in q.events(7, timeout=15))
    assert got == sorted([evs[19]["data"]["data"]["i"]] + list(range(20, 26))), got
    with pytest.raises(socket.timeout):
        q.until(lambda e: e["event"] == "message", timeout=0.5)
    q.close()


def test_bad_requests_and_tokens_get_json_answers(bridge_factory, tmp_path):
    keys = Keys(tmp_path)
    b = bridge_factory(auth_overrides(keys, acl=[{"subscribe": ["ok.**"],
                                                   "publish": ["ok.**"]}]), env=keys.env())
    s = SSEClient.open(b.port, "/sse?channel=ok.a")
    assert s.status == 401
    assert json.loads(s.read_body())["error"] == "token_missing"
    s = SSEClient.open(b.port, "/sse?channel=ok.a",
                       headers={"Authorization": "Bearer x.y.z"})
    assert s.status == 401 and s.headers["content-type"] == "application/json"
    assert json.loads(s.read_body())["error"] in ("token_malformed", "token_invalid")
    st, body = post_publish(b.port, {"channel": "ok.a", "data": 1})
    assert st == 401, body
    tok = mint(keys)
    for target in ("/sse", "/sse?channel=bad..name", "/sse?channel=ok.a&last_event_id=%21"):
        s = SSEClient.open(b.port, target, headers={"Authorization": "Bearer " + tok})
        assert s.status == 400, (target, s.status)
        assert json.loads(s.read_body())["error"] == "invalid_request"
    st, body = post_publish(b.port, "[1]", headers={"Authorization": "Bearer " + tok})
    assert st == 400 and body["type"] == "error" and body["code"] == "invalid_request", body
    st, body = post_publish(b.port, {"channel": "no.pe", "data": 1},
                            headers={"Authorization": "Bearer " + tok})
    assert st == 403 and body["code"] == "forbidden", body
    # A token in the query string works for the stream (EventSource cannot set headers).
    s = SSEClient.open(b.port, "/sse?channel=ok.a&access_token=" + tok)
    assert s.status == 200, s.read_body()
    s.close()


def test_forbidden_channel_gets_its_error_and_the_other_streams(bridge_factory, tmp_path):
    keys = Keys(tmp_path)
    b = bridge_factory(auth_overrides(keys, acl=[{"subscribe": ["ok.**"],
                                                   "publish": ["ok.**"]}]), env=keys.env())
    tok = mint(keys, exp_in=4)
    auth = {"Authorization": "Bearer " + tok}
    s = SSEClient.open(b.port, "/sse?channel=secret.b&channel=ok.a", headers=auth)
    assert s.status == 200
    e = s.until(lambda e: e["event"] == "error")
    assert e["data"]["code"] == "forbidden" and e["data"]["id"] == "secret.b", e
    s.until(lambda e: e["event"] == "subscribed")
    st, body = post_publish(b.port, {"channel": "ok.a", "data": {"n": 1}}, headers=auth)
    assert st == 200 and body == {"type": "published", "channel": "ok.a"}, body
    e = s.until(lambda e: e["event"] == "message")
    assert e["data"]["data"] == {"n": 1} and e["data"]["channel"] == "ok.a", e
    # The stream is a session like any other: in /clients (transport sse) and the metrics.
    st, _, body = b.admin_get("/clients?top=10")
    entries = [c for c in json.loads(body)["clients"] if c["transport"] == "sse"]
    assert len(entries) == 1 and entries[0]["sub"] == "u1", body
    assert entries[0]["subscriptions"] == ["ok.a"], entries
    m = b.metrics()
    assert m.value("wsbridge_sessions_opened_total", 0, transport="sse") == 1, m
    assert m.value("wsbridge_sessions_opened_total", 0, transport="http") == 1, m
    # The token runs out: an error event token_expired, then the stream ends.
    e = s.until(lambda e: e["event"] == "error", timeout=8)
    assert e["data"]["code"] == "token_expired", e
    with pytest.raises(StreamEnded):
        s.next_event(timeout=3)
    # A stream whose only channel is refused ends after its error event.
    s = SSEClient.open(b.port, "/sse?channel=secret.b", headers={"Authorization": "Bearer " + mint(keys)})
    e = s.until(lambda e: e["event"] == "error")
    assert e["data"]["code"] == "forbidden"
    with pytest.raises(StreamEnded):
        s.next_event(timeout=3)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("policy", ["disconnect", "drop_oldest"])
def test_stalled_reader_is_cut_off_or_gapped_while_others_keep_up(bridge_factory, policy,
                                                                  workers):
    # ~12 MB in all: more than the kernel's socket buffers on loopback (tcp_wmem up to 4 MB)
    # hold for the stalled reader, so the send-buffer limits must act. With 1 worker the
    # stalled and the fast reader share a loop; with 2 the kernel spreads the three
    # connections over both loops (SO_REUSEPORT), so the stalled reader's loop may or may
    # not be the fast reader's or the publisher's.
    n, pad = (3000, 4000) if SANITIZED else (4000, 3000)
    b = bridge_factory({"workers": workers, "limits": {
        "send_buffer": {"soft_bytes": 64 << 10, "hard_bytes": 256 << 10, "soft_seconds": 1,
                        "policy": policy}}})
    stalled = SSEClient.open(b.port, "/sse?channel=mem.flow", rcvbuf=4096)
    subscribed(stalled, ["mem.flow"])
    fast = SSEClient.open(b.port, "/sse?channel=mem.flow")
    subscribed(fast, ["mem.flow"])
    got = []
    gaps = []

    def reader():
        try:
            while len(got) < n:
                e = fast.next_event(timeout=30)
                (got if e["event"] == "message" else gaps).append(e)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            gaps.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    pub = b.connect()
    acks = []

    def drain():  # the publisher reads its `published` answers, or it would stall itself
        try:
            while len(acks) < n:
                acks.append(pub.recv_json(timeout=30))
        except Exception as exc:  # noqa: BLE001
            acks.append(exc)

    d = threading.Thread(target=drain)
    d.start()
    pad = "x" * pad
    start = time.monotonic()
    for i in range(n):
        # A small window (under max_inflight_publishes, and 16 messages stay under the soft
        # limit) keeps the fast reader's backlog at the pace of the publisher.
        while i - len(acks) >= 16:
            time.sleep(0.001)
        pub.send_json({"op": "publish", "channel": "mem.flow", "data": {"i": i, "pad": pad}})
    t.join(60)
    took = time.monotonic() - start
    d.join(30)
    assert len(got) == n, (len(got), gaps[:3], [a for a in acks if a.get("type") != "published"][:3])
    assert [e["data"]["data"]["i"] for e in got] == list(range(n))
    assert not gaps, gaps[:3]
    # The stalled reader: its buffered bytes never pass the hard limit; disconnect ends the
    # stream (what was queued is dropped and an error event says why), drop_oldest keeps it
    # with `gap` events once it reads again.
    # The limits act on the stalled reader's own loop (soft_seconds 1 s, checked each tick);
    # with 2 workers that loop need not be the fast reader's, which can be done first.
    deadline = time.monotonic() + 5
    m = b.metrics()
    while m.sum("wsbridge_messages_dropped_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        m = b.metrics()
    waited = 5 - (deadline - time.monotonic())
    dropped = m.sum("wsbridge_messages_dropped_total")
    assert dropped > 0, m
    stalled.sock.settimeout(10)
    events = []
    try:
        while True:
            events.append(stalled.next_event(timeout=3))
    except (StreamEnded, socket.timeout) as exc:
        ended = isinstance(exc, StreamEnded)
    msgs = [e for e in events if e["event"] == "message"]
    kinds = sorted({e["event"] for e in events})
    assert len(msgs) < n, (len(msgs), kinds)
    if policy == "disconnect":
        # Cut off: what was queued is dropped and an `error` event says why; a reader that
        # does not take it within a second just sees the stream end.
        assert ended, (len(events), kinds)
        assert "gap" not in kinds, kinds
        errs = [e for e in events if e["event"] == "error"]
        assert all(e["data"]["code"] == "slow_consumer" for e in errs), errs
    else:
        assert not ended, (len(events), kinds)
        gap = [e for e in events if e["event"] == "gap"]
        assert gap, kinds
        assert sum(e["data"]["dropped"] for e in gap) + len(msgs) == n, (
            len(gap), sum(e["data"]["dropped"] for e in gap), len(msgs))
    print("fast reader: %d events in %.2fs while one reader stalled (%s, %d workers); first "
          "drop %.1fs after" % (n, took, policy, workers, waited))


def test_publish_answers_after_the_broker_confirms_and_lands_once(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 1})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    st, body = post_publish(b.port, {"channel": "orders", "data": {"x": 1}, "key": "k1",
                                     "headers": {"h": "v"}})
    assert (st, body) == (200, {"type": "published", "channel": "orders"})
    msgs = read_topic(mc.bootstrap, "orders", 1, 1, timeout=10)
    assert len(msgs) == 1 and msgs[0].value() == b'{"x":1}' and msgs[0].key() == b"k1"
    # No leader: the broker cannot confirm, so there is no answer yet.
    mc.leader("orders", 0, -1)
    res = {}

    def publish():
        res["r"] = post_publish(b.port, {"channel": "orders", "data": {"x": 2}}, timeout=60)
        res["at"] = time.monotonic()

    t = threading.Thread(target=publish)
    t.start()
    time.sleep(1.5)
    assert "r" not in res, res
    back = time.monotonic()
    mc.leader("orders", 0, 1)
    t.join(60)
    assert res["r"] == (200, {"type": "published", "channel": "orders"}), res
    assert res["at"] >= back
    msgs = read_topic(mc.bootstrap, "orders", 1, 2, timeout=10, settle=1.0)
    assert [m.value() for m in msgs] == [b'{"x":1}', b'{"x":2}'], [m.value() for m in msgs]


def raw_http(port, data, timeout=5.0):
    """Sends raw bytes; returns (status, headers, body) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        n = int(hdrs.get("content-length", "0"))
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return int(lines[0].split()[1]), hdrs, body
    finally:
        s.close()


def test_publish_bounds_preflight_and_per_subject_limits(bridge_factory):
    b = bridge_factory({"limits": {"max_message_bytes": 4096,
                                   "inbound_rate": {"per_second": 1, "burst": 3}}})
    head = "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    st, _, body = raw_http(b.port, (head + "Content-Length: 5000\r\n\r\n").encode())
    assert st == 413 and json.loads(body)["error"] == "too_large", (st, body)
    st, _, body = raw_http(b.port, (head + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode())
    assert st == 411, (st, body)
    st, _, _ = raw_http(b.port, b"GET /publish HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 405
    st, hdrs, _ = raw_http(b.port, b"OPTIONS /publish HTTP/1.1\r\nHost: x\r\n"
                                   b"Origin: http://app.test\r\n"
                                   b"Access-Control-Request-Method: POST\r\n\r\n")
    assert st == 204 and hdrs["access-control-allow-origin"] == "http://app.test", hdrs
    assert "Authorization" in hdrs["access-control-allow-headers"], hdrs
    # A body that arrives in pieces is waited for.
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    msg = json.dumps({"channel": "mem.pieces", "data": {"x": 1}}).encode()
    s.sendall((head + "Content-Length: %d\r\n\r\n" % len(msg)).encode() + msg[:7])
    time.sleep(0.3)
    s.sendall(msg[7:])
    ans = b""
    while b"published" not in ans:
        chunk = s.recv(4096)
        assert chunk, ans
        ans += chunk
    assert ans.startswith(b"HTTP/1.1 200"), ans
    s.close()
    # inbound_rate counts per subject (here the anonymous address) across connections: the
    # burst of 3 is spent (one above), so two more pass at most, then 429.
    res = [post_publish(b.port, {"channel": "mem.lim", "data": i}) for i in range(4)]
    assert [r[0] for r in res].count(429) >= 2, res
    assert all(r[1]["code"] == "rate_limited" for r in res if r[0] == 429), res


def test_publish_body_above_the_read_mark_is_waited_for(bridge_factory):
    """A POST /publish body larger than the 256 KiB read high-water mark (the bridge raises
    it to the announced length, up to max_message_bytes) is read whole and published."""
    b = bridge_factory({"limits": {"max_message_bytes": 1 << 20}})
    st, body = post_publish(b.port, {"channel": "mem.big", "data": "x" * (400 * 1024)})
    assert st == 200 and body["type"] == "published", (st, body)


def test_client_filter_narrows_the_stream_and_never_widens(bridge_factory, tmp_path):
    """`filter=` (docs/sse.md): a JSON object from the stream's channels to the filter a
    WebSocket subscribe would carry. It narrows as on a WebSocket; a widening asks for the
    channel's `forbidden` error event while the other channels stream; a malformed one, or one
    naming a channel the request does not, is a 400."""
    keys = Keys(tmp_path)
    over = auth_overrides(keys)
    over["channels"] = [
        {"match": "orders", "connector": "m", "topic": "orders", "filter": {"key": "{sub}"}},
        {"match": "**", "connector": "m", "topic": "t-{1}"}]
    b = bridge_factory(over, env=keys.env())
    auth = {"Authorization": "Bearer " + mint(keys, sub="u1")}

    def target(f):
        return ("/sse?channel=all&channel=orders&filter=" +
                urllib.parse.quote(f if isinstance(f, str) else json.dumps(f)))

    for f in ("not json", "[1]", '"x"', {"nope": {"key": "a"}}, {"all": {"keys": "a"}},
              {"all": {}}, {"all": {"key": ""}}, '{"all":{"key":"a"},"all":{"key":"b"}}'):
        s = SSEClient.open(b.port, target(f), headers=auth)
        assert s.status == 400, (f, s.status)
        body = json.loads(s.read_body())
        assert body["error"] == "invalid_request", (f, body)
        s.close()
    s = SSEClient.open(b.port, "/sse?channel=all&filter=%7B%7D&filter=%7B%7D", headers=auth)
    assert s.status == 400  # two filter= would leave one of them unapplied
    s.close()
    # An empty object names no channel: the stream is the unfiltered one.
    s = SSEClient.open(b.port, "/sse?channel=all&filter=%7B%7D", headers=auth)
    assert s.status == 200
    s.close()

    # Widening the channel's own filter (key {sub} = u1) is refused for that channel only.
    wide = SSEClient.open(b.port, target({"orders": {"key": "u2"}, "all": {"key": "k3"}}),
                          headers=auth)
    assert wide.status == 200
    seen = {}
    while len(seen) < 2:  # the refusal of orders and the start of all, in either order
        e = wide.next_event()
        if e["event"] in ("error", "subscribed"):
            seen[e["event"]] = e["data"]
    assert seen["error"]["code"] == "forbidden" and seen["error"]["id"] == "orders", seen
    assert seen["subscribed"]["channel"] == "all", seen
    narrow = SSEClient.open(b.port, target({
        "orders": {"key": "u1", "headers": {"kind": "paid"}},
        "all": [{"key": "k3"}, {"headers": {"kind": "refund"}}]}), headers=auth)
    assert narrow.status == 200
    assert sorted(subscribed(narrow, ["all", "orders"])) == ["all", "orders"]

    want = {"wide": [], "narrow": []}
    n = 0
    for ch in ("orders", "all"):
        for key in ("u1", "u2", "k3"):
            for kind in ("paid", "refund", "new"):
                st, body = post_publish(b.port, {"channel": ch, "data": {"n": n}, "key": key,
                                                 "headers": {"kind": kind}}, headers=auth)
                assert st == 200, body
                if ch == "all" and key == "k3":
                    want["wide"].append((ch, n))
                if (ch == "orders" and key == "u1" and kind == "paid") or \
                        (ch == "all" and (key == "k3" or kind == "refund")):
                    want["narrow"].append((ch, n))
                n += 1
    for name, s in (("wide", wide), ("narrow", narrow)):
        got = []
        while len(got) < len(want[name]):
            e = s.next_event(timeout=5)
            if e["event"] == "message":
                got.append((e["data"]["channel"], e["data"]["data"]["n"]))
        with pytest.raises(socket.timeout):  # nothing beyond the narrowed records
            e = s.next_event(timeout=0.5)
            raise AssertionError("an extra event: %r" % (e,))
        assert got == want[name], (name, got)
        s.close()
