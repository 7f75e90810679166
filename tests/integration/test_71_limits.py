"""Limits (SPEC §2 limits, §3 429/503 refusals, §5 rate_limited / too_many_subscriptions,
§6 4429, §7 wsbridge_rate_limited_total{kind} and wsbridge_disconnects_total{code}):
inbound request flood, per-IP handshake rate, per-IP and global connection caps,
subscriptions per session, publishes awaiting confirmation, handshake timeout, and the
keepalive (pong timeout).

max_inflight_publishes is tested deterministically with the memory connector: its
confirmations are delivered through the worker's mailbox, i.e. never inside the read
callback that parsed the publish. So with max_inflight_publishes 1, a batch of 50 publishes
sent in ONE TCP write is parsed in one go: the first is in flight, and the ones parsed
before its confirmation came back must get rate_limited. Every publish is answered
exactly once (published or rate_limited).
"""

# ctest: cost=10  (scheduling: docs/testing.md)

import json
import socket
import time

import pytest

import wsclient
from conftest import raw_exchange
from flow_helpers import LoadRun


def refusal(b, **kw):
    with pytest.raises(wsclient.HandshakeError) as ei:
        c = b.connect(**kw)
        c.close()
    return ei.value


def assert_retry_after(err, status):
    assert err.status == status, (err.status, err.body)
    ra = err.headers.get("retry-after")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, err.headers
    body = err.json()
    assert set(body) >= {"error", "message"}, body
    assert "close" in err.headers.get("connection", "").lower(), err.headers


def test_inbound_flood_gets_rate_limited_then_4429(bridge_factory):
    b = bridge_factory({"limits": {"inbound_rate": {"per_second": 50, "burst": 100}}})
    c = b.connect()
    # 500 requests in one write, as fast as the socket takes them: subscribes to one channel
    # (the first succeeds, the rest are already_subscribed) and unsubscribes of a channel
    # never subscribed (not_subscribed). Each admitted request gets exactly one reply with
    # its id, whatever the timing of the source start.
    frames = b""
    for i in range(500):
        req = ({"op": "subscribe", "id": i, "channel": "mem.flood"} if i % 2 == 0 else
               {"op": "unsubscribe", "id": i, "channel": "mem.other"})
        frames += wsclient.build_frame(wsclient.OP_TEXT, json.dumps(req).encode())
    c.send_raw(frames)
    replies, code, reason = [], None, b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            replies.append(c.recv_json(timeout=max(0.1, deadline - time.monotonic())))
        except wsclient.Closed as e:
            code, reason = e.code, e.reason
            break
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    answered = [r for r in replies if r.get("code") != "rate_limited" and "id" in r]
    assert limited, "no rate_limited error among %d replies" % len(replies)
    assert code == 4429, (code, reason, replies[-3:])
    # the burst (100) was honoured before the limiter kicked in (+1 for refill meanwhile)
    # (the first subscribe's `subscribed` is sent when the source has started, which may be
    # after the 4429 close: it is the one reply allowed to be missing)
    ids = sorted(r["id"] for r in answered)
    assert set(range(1, 100)) <= set(ids) <= set(range(0, 102)), ids
    assert replies.index(limited[0]) >= 99
    # 4429 comes after persistent abuse, not at the first refusal
    assert len(limited) >= 10, len(limited)
    m = b.wait_metric("wsbridge_disconnects_total", lambda v: v >= 1, code="4429")
    assert m.value("wsbridge_disconnects_total", 0, code="4429") == 1
    assert m.value("wsbridge_rate_limited_total", 0, kind="messages") >= len(limited)
    # a polite client right after is unaffected
    c2 = b.connect()
    assert c2.request({"op": "subscribe", "id": 1, "channel": "mem.ok"})["type"] == "subscribed"
    c2.close()


def test_subscribe_then_immediate_unsubscribe_answers_both(bridge_factory):
    """Found by the flood test: a subscribe followed in the same write by an unsubscribe of
    the same channel. Every request with an id gets a reply (SPEC §5): the subscribe's is
    `subscribed` (then the unsubscribe's `unsubscribed`) or the error `cancelled`."""
    b = bridge_factory()
    c = b.connect()
    c.send_raw(wsclient.build_frame(wsclient.OP_TEXT, json.dumps(
        {"op": "subscribe", "id": "s", "channel": "mem.race"}).encode()) +
        wsclient.build_frame(wsclient.OP_TEXT, json.dumps(
            {"op": "unsubscribe", "id": "u", "channel": "mem.race"}).encode()))
    got = {}
    deadline = time.monotonic() + 3
    while len(got) < 2 and time.monotonic() < deadline:
        try:
            m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        except socket.timeout:
            break
        if "id" in m:
            got[m["id"]] = m
    assert "u" in got, got
    assert "s" in got, "the subscribe was never answered; replies: %r" % got
    # docs/protocol.md: a subscribe still waiting for its source is answered `cancelled`
    assert got["s"].get("type") == "subscribed" or got["s"].get("code") == "cancelled", got
    c.close()


def test_inbound_rate_spread_out_is_fine(bridge_factory):
    b = bridge_factory({"limits": {"inbound_rate": {"per_second": 50, "burst": 10}}})
    c = b.connect()
    for i in range(30):
        r = c.request({"op": "subscribe", "id": i, "channel": "mem.s%d" % i})
        assert r["type"] == "subscribed", r
        time.sleep(0.03)  # ~33/s, under 50/s
    c.close()
    assert b.metrics().value("wsbridge_rate_limited_total", 0, kind="messages") == 0


def test_handshake_rate_per_ip_429_with_retry_after(bridge_factory):
    b = bridge_factory({"limits": {"handshake_rate_per_ip": {"per_second": 2, "burst": 5}}})
    ok, refused, clients = 0, [], []
    for _ in range(20):
        try:
            clients.append(b.connect())
            ok += 1
        except wsclient.HandshakeError as e:
            refused.append(e)
    for c in clients:
        c.close()
    # burst 5, plus at most one token refilled during the burst (2/s)
    assert 5 <= ok <= 6, ok
    assert len(refused) == 20 - ok
    for e in refused:
        assert_retry_after(e, 429)
    m = b.metrics()
    assert m.value("wsbridge_rate_limited_total", 0, kind="handshake") == len(refused)
    assert m.value("wsbridge_handshakes_total", 0, result="rate_limited") == len(refused)


def test_handshake_rate_burst_through_wsb_load(bridge_factory, tmp_path):
    """The same limit seen by the C load client: refused handshakes are counted, not fatal."""
    b = bridge_factory({"limits": {"handshake_rate_per_ip": {"per_second": 2, "burst": 5}}})
    run = LoadRun(["--url", b.ws_url, "--clients", 20, "--connect-rate", 100000,
                   "--duration", 1.5], tmp_path / "load.stderr")
    rc, s = run.result(timeout=20)
    assert s["handshakes_ok"] + s["refused"].get("429", 0) == 20, s
    assert 5 <= s["handshakes_ok"] <= 8, s
    assert rc == 0, s
    assert b.alive()


def test_max_connections_per_ip_429(bridge_factory):
    b = bridge_factory({"limits": {"max_connections_per_ip": 3}})
    held = [b.connect() for _ in range(3)]
    err = refusal(b)
    assert_retry_after(err, 429)
    # closing one frees a slot
    held.pop().close_handshake()
    deadline = time.monotonic() + 3
    while True:
        try:
            held.append(b.connect())
            break
        except wsclient.HandshakeError as e:
            assert e.status == 429 and time.monotonic() < deadline, e.status
            time.sleep(0.05)
    for c in held:
        c.close()
    assert b.metrics().value("wsbridge_rate_limited_total", 0, kind="connections_per_ip") >= 1


def test_early_refusal_flood_logs_a_line_per_second(bridge_factory):
    """429s at accept come in floods: the first refusal of each second is logged in full
    (so it stays visible), the rest are summed up in one line per second with their
    count. Every refusal is still answered and counted in the metrics."""
    b = bridge_factory({"limits": {"max_connections_per_ip": 1}, "log": {"level": "info"}})
    held = b.connect()
    n = 150
    t0 = time.monotonic()
    for _ in range(n):
        out, _ = raw_exchange(b.host, b.port, b"", timeout=5.0)
        assert out.startswith(b"HTTP/1.1 429 "), out[:200]
    took = time.monotonic() - t0

    def lines():
        recs = b.log_records()
        full = [r for r in recs if r.get("msg") == "handshake refused" and r.get("status") == 429]
        summed = [r for r in recs if r.get("msg") == "handshake refusals not logged one by one"]
        return full, summed

    deadline = time.monotonic() + 5
    while True:  # the last second's sum is written on a worker tick
        full, summed = lines()
        if len(full) + sum(r["rate_limited"] for r in summed) >= n or \
                time.monotonic() > deadline:
            break
        time.sleep(0.1)
    workers = b.config.get("workers", 2)
    print("%d refusals in %.2fs: %d logged in full, %d sum lines %s" % (
        n, took, len(full), len(summed), [r["rate_limited"] for r in summed]))
    assert 1 <= len(full) <= workers * (int(took) + 2), (len(full), took)
    assert len(summed) <= workers * (int(took) + 2), (len(summed), took)
    assert len(full) + sum(r["rate_limited"] for r in summed) == n, (full, summed)
    assert all(r["overloaded"] == 0 and r["period_ms"] >= 1000 for r in summed), summed
    assert b.metrics().value("wsbridge_handshakes_total", 0, result="rate_limited") == n
    held.close()


def test_max_connections_503(bridge_factory):
    b = bridge_factory({"limits": {"max_connections": 5}})
    held = [b.connect() for _ in range(5)]
    err = refusal(b)
    assert_retry_after(err, 503)
    # the refused connection may be counted until its socket is closed
    m = b.wait_metric("wsbridge_connections", lambda v: v == 5)
    assert m.value("wsbridge_connections", 0) == 5
    assert m.value("wsbridge_handshakes_total", 0, result="overloaded") == 1 or \
        m.sum("wsbridge_handshakes_total") - m.value("wsbridge_handshakes_total", 0,
                                                      result="ok") >= 1
    for c in held:
        c.close()


def test_max_subscriptions(bridge_factory):
    b = bridge_factory({"limits": {"max_subscriptions": 3}})
    c = b.connect()
    for i in range(3):
        assert c.request({"op": "subscribe", "id": i, "channel": "mem.m%d" % i})["type"] == \
            "subscribed"
    r = c.request({"op": "subscribe", "id": 9, "channel": "mem.m9"})
    assert r.get("type") == "error" and r.get("code") == "too_many_subscriptions", r
    assert r.get("id") == 9
    # after an unsubscribe there is room again
    assert c.request({"op": "unsubscribe", "id": 10, "channel": "mem.m0"})["type"] == \
        "unsubscribed"
    assert c.request({"op": "subscribe", "id": 11, "channel": "mem.m9"})["type"] == "subscribed"
    c.close()


def test_max_inflight_publishes(bridge_factory):
    b = bridge_factory({"limits": {"max_inflight_publishes": 1}})
    c = b.connect()
    n = 50
    frames = b"".join(wsclient.build_frame(wsclient.OP_TEXT, json.dumps(
        {"op": "publish", "id": i, "channel": "mem.p", "data": {"i": i}}).encode())
        for i in range(n))
    c.send_raw(frames)
    got = {}
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        if "id" in m:
            assert m["id"] not in got, "two replies for publish %r" % m["id"]
            got[m["id"]] = m
    assert len(got) == n, "%d of %d publishes answered" % (len(got), n)
    ok = [i for i, m in got.items() if m["type"] == "published"]
    limited = [i for i, m in got.items() if m.get("code") == "rate_limited"]
    assert len(ok) + len(limited) == n, [m for m in got.values()
                                         if m["type"] != "published"][:3]
    assert 0 in ok, got[0]
    assert limited, "no publish was refused with max_inflight_publishes 1"
    assert b.metrics().value("wsbridge_rate_limited_total", 0,
                             kind="inflight_publishes") == len(limited)
    # once confirmed, publishing works again
    assert c.request({"op": "publish", "id": "after", "channel": "mem.p", "data": 1})["type"] \
        == "published"
    c.close()


def test_handshake_timeout(bridge_factory):
    b = bridge_factory({"limits": {"handshake_timeout_ms": 500}})
    t0 = time.monotonic()
    out, closed = raw_exchange(b.host, b.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n", timeout=4)
    dt = time.monotonic() - t0
    assert closed, "connection still open 4 s after an incomplete head"
    assert 0.3 <= dt <= 2.5, dt
    assert out == b"" or out.startswith(b"HTTP/1.1 408") or out.startswith(b"HTTP/1.1 400"), out
    # an idle TCP connection that never sends anything is dropped too
    s = socket.create_connection((b.host, b.port), timeout=4)
    try:
        t0 = time.monotonic()
        s.settimeout(4)
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        assert time.monotonic() - t0 <= 2.5
    finally:
        s.close()


def test_pong_timeout_drops_a_silent_client(bridge_factory):
    b = bridge_factory({"limits": {"ping_interval_ms": 300, "pong_timeout_ms": 300}})
    silent = b.connect()
    polite = b.connect()
    t0 = time.monotonic()
    pings = 0
    closed_code = None
    # the silent client reads frames but never answers pings
    while time.monotonic() - t0 < 4:
        # keep the polite client alive meanwhile: it answers every ping
        try:
            pf = polite.recv_frame(timeout=0.02)
            if pf.opcode == wsclient.OP_PING:
                polite.pong(pf.payload)
        except socket.timeout:
            pass
        try:
            f = silent.recv_frame(timeout=0.05)
        except socket.timeout:
            continue
        except wsclient.ConnectionClosed:
            break
        if f.opcode == wsclient.OP_PING:
            pings += 1
        elif f.opcode == wsclient.OP_CLOSE:
            closed_code = f.close_code()[0]
            break
    dt = time.monotonic() - t0
    assert pings >= 1, "no ping within %.1fs" % dt
    assert dt <= 0.6 + 2.0, "silent client still connected after %.1fs" % dt
    assert closed_code in (None, 1000, 1001, 1002, 1008, 1011), closed_code
    assert silent.wait_tcp_closed(3)
    # the polite one (wsclient answers pings while reading) is still there
    polite.send_json({"op": "subscribe", "id": 1, "channel": "mem.k"})
    r, _ = polite.recv_until(lambda m: m.get("id") == 1, timeout=3)
    assert r["type"] == "subscribed", r
    polite.close()
    m = b.metrics()
    assert m.sum("wsbridge_disconnects_total") >= 1
