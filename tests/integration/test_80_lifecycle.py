"""SPEC §3 admin surface, §7 metrics and §8 lifecycle: /healthz, /readyz, /metrics families
and counts, SIGTERM/SIGINT drain (close 1001 to every client, /readyz 503, exit 0 within
drain_timeout_ms)."""

# ctest: cost=15  (scheduling: docs/testing.md)

import http.client
import json
import signal
import socket
import threading
import time

import pytest

from conftest import http_request, split_series
from wsclient import ConnectionClosed, HandshakeError, WSClient

FAMILIES = [
    "wsbridge_connections",
    "wsbridge_handshakes_total",
    "wsbridge_subscriptions",
    "wsbridge_messages_in_total",
    "wsbridge_messages_out_total",
    "wsbridge_bytes_out_total",
    "wsbridge_messages_dropped_total",
    "wsbridge_disconnects_total",
    "wsbridge_publish_total",
    "wsbridge_rate_limited_total",
    "wsbridge_delivery_latency_seconds",
    "wsbridge_ping_rtt_seconds",
    "wsbridge_connector_up",
    "wsbridge_send_buffer_bytes",
]


# ---- admin endpoints ----------------------------------------------------------------------


def test_healthz_200(bridge):
    status, headers, body = bridge.admin_get("/healthz")
    assert status == 200, body


def test_readyz_200_with_memory_connector(bridge):
    status, headers, body = bridge.readyz()
    assert status == 200, body


def test_admin_unknown_path_404(bridge):
    status, _, _ = bridge.admin_get("/nope")
    assert status == 404


def test_admin_is_not_on_the_main_listener(bridge):
    status, _, _ = http_request(bridge.host, bridge.port, "/metrics")
    assert status == 404


def test_metrics_content_type_and_families(bridge):
    status, headers, body = bridge.admin_get("/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain"), headers
    m = bridge.metrics()
    missing = [f for f in FAMILIES if not m.has_family(f)]
    assert not missing, "families missing from /metrics: %s" % missing
    for f in ("wsbridge_delivery_latency_seconds", "wsbridge_ping_rtt_seconds"):
        assert m.types.get(f) == "histogram", (f, m.types.get(f))
        assert m.value(f + "_bucket", le="+Inf") is not None, "%s has no +Inf bucket" % f
        assert m.value(f + "_count") is not None
    assert m.types.get("wsbridge_connections") == "gauge"
    assert m.value("wsbridge_connector_up", connector="m") == 1.0, \
        {k: v for k, v in m.items() if "connector_up" in k}


def test_metrics_count_connections(bridge):
    m0 = bridge.metrics()
    assert m0.value("wsbridge_connections") == 0
    cs = [bridge.connect() for _ in range(3)]
    m = bridge.wait_metric("wsbridge_connections", lambda v: v == 3)
    assert m.value("wsbridge_connections") == 3
    assert m.value("wsbridge_handshakes_total", result="ok") >= 3
    cs[0].close_handshake(1000)
    cs[1].close()  # abrupt
    cs[2].close_handshake(1000)
    m = bridge.wait_metric("wsbridge_connections", lambda v: v == 0)
    assert m.value("wsbridge_connections") == 0
    assert m.value("wsbridge_disconnects_total", code="1000") >= 2, \
        {k: v for k, v in m.items() if "disconnects" in k}


def test_metrics_subscriptions_and_messages(bridge):
    a = bridge.connect()
    p = bridge.connect()
    a.request({"op": "subscribe", "id": 1, "channel": "mem.metrics"})
    m = bridge.wait_metric("wsbridge_subscriptions", lambda v: v == 1)
    assert m.value("wsbridge_subscriptions") == 1
    out0 = m.sum("wsbridge_messages_out_total")
    bytes0 = m.sum("wsbridge_bytes_out_total")
    pub0 = m.value("wsbridge_publish_total", 0, result="ok")
    for i in range(5):
        p.request({"op": "publish", "id": i, "channel": "mem.metrics", "data": i})
    for i in range(5):
        assert a.recv_json()["data"] == i
    m = bridge.wait_metric("wsbridge_messages_out_total", lambda v: v >= out0 + 5)
    assert m.sum("wsbridge_messages_out_total") >= out0 + 5
    assert m.sum("wsbridge_bytes_out_total") > bytes0
    assert m.value("wsbridge_publish_total", 0, result="ok") >= pub0 + 5
    assert m.value("wsbridge_messages_in_total", 0, connector="m") >= 5, \
        {k: v for k, v in m.items() if "messages_in" in k}
    a.request({"op": "unsubscribe", "id": 9, "channel": "mem.metrics"})
    m = bridge.wait_metric("wsbridge_subscriptions", lambda v: v == 0)
    assert m.value("wsbridge_subscriptions") == 0
    a.close()
    p.close()


def test_metrics_labels_never_carry_client_or_channel_values(bridge):
    c = bridge.connect()
    c.request({"op": "subscribe", "id": 1, "channel": "mem.labelcheck"})
    c.send_text("garbage")
    c.recv_json()
    m = bridge.metrics()
    # `rule` (wsbridge_filtered_records_total) is a channel rule's `match` pattern from the
    # config, never a channel a client named.
    allowed = {"result", "connector", "reason", "code", "kind", "le", "decision", "state",
               "transport", "rule"}
    for key in m:
        _, labels = split_series(key)
        assert set(labels) <= allowed, "unexpected label in %s" % key
        for v in labels.values():
            assert "labelcheck" not in v and "127.0.0.1" not in v, key
    c.close()


def test_metrics_scrape_under_load_is_consistent(bridge):
    """Scrapes while connections come and go never fail and never go negative."""
    stop = threading.Event()
    errors = []

    def churn():
        while not stop.is_set():
            try:
                bridge.connect().close()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(20):
            m = bridge.metrics()
            assert m.value("wsbridge_connections") >= 0
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(10)
    assert not errors, errors


# ---- signals and drain --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_no_clients_exits_0_quickly(bridge_factory, sig):
    b = bridge_factory()
    t0 = time.monotonic()
    assert b.stop(sig, timeout=10) == 0
    assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_sends_1001_to_every_client_and_exits_0(bridge_factory, sig):
    drain_ms = 3000
    b = bridge_factory({"drain_timeout_ms": drain_ms})
    clients = [b.connect() for _ in range(5)]
    clients[0].request({"op": "subscribe", "id": 1, "channel": "mem.drain"})
    t0 = time.monotonic()
    b.proc.send_signal(sig)
    for c in clients:
        code, reason = c.expect_close(timeout=drain_ms / 1000 + 2, echo=True)
        assert code == 1001, (code, reason)
        assert c.wait_tcp_closed(3)
    rc = b.stop(sig, timeout=drain_ms / 1000 + 5)
    assert rc == 0
    assert time.monotonic() - t0 <= drain_ms / 1000 + 1.5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_readyz_503_and_new_connections_refused(bridge_factory, sig):
    """While a client holds the drain open (it never answers the close), /readyz answers 503
    with a JSON reason and new upgrades are refused (503 with Retry-After, or the listener is
    closed). Then the process exits 0 within drain_timeout_ms."""
    drain_ms = 2500
    b = bridge_factory({"drain_timeout_ms": drain_ms})
    stubborn = b.connect()
    t0 = time.monotonic()
    b.proc.send_signal(sig)
    code, _ = stubborn.expect_close(timeout=3, echo=False)
    assert code == 1001
    # readyz: 503 during the drain (when the admin listener is still up)
    observed = None
    try:
        status, headers, body = b.readyz(timeout=1.0)
        observed = status
        assert status == 503, (status, body)
        json.loads(body)  # a JSON reason
    except (OSError, http.client.HTTPException):
        observed = "admin closed"
    # new upgrades are refused
    try:
        c = WSClient.connect(b.host, b.port, "/ws", timeout=2)
        pytest.fail("upgrade accepted during the drain: %r" % c.headers)
    except HandshakeError as e:
        assert e.status == 503, e
        assert e.headers.get("retry-after", "").strip().isdigit(), e.headers
    except (ConnectionRefusedError, ConnectionResetError, ConnectionClosed):
        pass
    rc = b.stop(sig, timeout=drain_ms / 1000 + 5)
    elapsed = time.monotonic() - t0
    assert rc == 0, rc
    assert elapsed <= drain_ms / 1000 + 1.5, \
        "exit after %.2fs, drain_timeout_ms=%d (readyz during drain: %s)" % (elapsed, drain_ms,
                                                                           observed)
    stubborn.close()


def test_drain_with_silent_client_bounded_by_drain_timeout(bridge_factory):
    """A client that neither reads nor answers: the process still exits 0 in time."""
    drain_ms = 1500
    b = bridge_factory({"drain_timeout_ms": drain_ms})
    silent = b.connect()
    silent.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    t0 = time.monotonic()
    rc = b.stop(signal.SIGTERM, timeout=drain_ms / 1000 + 5)
    assert rc == 0
    assert time.monotonic() - t0 <= drain_ms / 1000 + 1.5
    silent.close()


def test_second_signal_during_drain_is_harmless(bridge_factory):
    b = bridge_factory({"drain_timeout_ms": 2000})
    c = b.connect()
    b.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    if b.alive():
        b.proc.send_signal(signal.SIGTERM)
    rc = b.stop(signal.SIGTERM, timeout=8)
    assert rc in (0,), rc
    c.close()


def test_drain_logs_are_json(bridge_factory):
    b = bridge_factory({"drain_timeout_ms": 1000})
    c = b.connect()
    b.stop(signal.SIGTERM, timeout=6)
    c.close()
    for line in b.logs().splitlines():
        if line.strip():
            rec = json.loads(line)
            assert {"ts", "level", "msg"} <= set(rec), line


# ---- more metrics -----------------------------------------------------------------------


def test_metrics_protocol_error_counts_disconnect_code(bridge):
    c = bridge.connect()
    c.send_frame(0x1, b'{"op":"x"}', mask=False)
    code, _ = c.expect_close()
    assert code == 1002
    c.close()
    m = bridge.wait_metric("wsbridge_disconnects_total", lambda v: v >= 1, code="1002")
    assert m.value("wsbridge_disconnects_total", 0, code="1002") >= 1, \
        {k: v for k, v in m.items() if "disconnects" in k}


def test_metrics_handshake_timeout_counted(bridge_factory):
    b = bridge_factory({"limits": {"handshake_timeout_ms": 300}})
    s = socket.create_connection((b.host, b.port), timeout=3)
    try:
        s.sendall(b"GET /ws HTTP/1.1\r\n")
        try:
            while s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    m = b.wait_metric("wsbridge_handshakes_total", lambda v: v >= 1, result="timeout")
    assert m.value("wsbridge_handshakes_total", 0, result="timeout") >= 1, \
        {k: v for k, v in m.items() if "handshakes" in k}


def test_metrics_ping_rtt_observed(bridge_factory):
    b = bridge_factory({"limits": {"ping_interval_ms": 200, "pong_timeout_ms": 1000}})
    c = b.connect()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            c.recv_message(timeout=max(0.01, deadline - time.monotonic()))  # answers pings
        except socket.timeout:
            break
    assert c.pings_answered >= 2, c.pings_answered
    m = b.wait_metric("wsbridge_ping_rtt_seconds_count", lambda v: v >= 1)
    assert m.value("wsbridge_ping_rtt_seconds_count") >= 1
    c.close()


def test_half_closed_and_reset_clients_are_cleaned_up(bridge):
    a = bridge.connect()
    a.request({"op": "subscribe", "id": 1, "channel": "mem.cleanup"})
    a.sock.shutdown(socket.SHUT_WR)  # EOF without a close frame
    b = bridge.connect()
    b.request({"op": "subscribe", "id": 1, "channel": "mem.cleanup"})
    b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    b.close()  # RST
    assert a.wait_tcp_closed(3), "the server kept a half-closed connection open"
    a.close()
    m = bridge.wait_metric("wsbridge_connections", lambda v: v == 0)
    assert m.value("wsbridge_connections") == 0
    m = bridge.wait_metric("wsbridge_subscriptions", lambda v: v == 0)
    assert m.value("wsbridge_subscriptions") == 0


# ---- SIGHUP reload (SPEC §8) --------------------------------------------------------------


def rewrite_config(b, cfg):
    with open(b.config_path, "w") as f:
        f.write(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))


def try_subscribe(b, channel):
    c = b.connect()
    try:
        r = c.request({"op": "subscribe", "id": 1, "channel": channel}, timeout=3)
        return r["type"] if r["type"] == "subscribed" else r.get("code")
    finally:
        c.close()


def wait_subscribe_result(b, channel, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = try_subscribe(b, channel)
        if got == want:
            return got
        time.sleep(0.1)
    return got


def test_sighup_reloads_acl_without_dropping_connections(bridge_factory):
    b = bridge_factory({"acl": [{"subscribe": ["mem.a.*"], "publish": ["**"]}]})
    old = b.connect()
    r = old.request({"op": "subscribe", "id": 1, "channel": "mem.a.x"})
    assert r["type"] == "subscribed"
    assert try_subscribe(b, "mem.b.x") == "forbidden"
    cfg = dict(b.config)
    cfg["acl"] = [{"subscribe": ["mem.b.*"], "publish": ["**"]}]
    rewrite_config(b, cfg)
    b.proc.send_signal(signal.SIGHUP)
    assert wait_subscribe_result(b, "mem.b.x", "subscribed") == "subscribed"
    assert try_subscribe(b, "mem.a.y") == "forbidden"
    assert b.alive()
    # the old connection is still open and served
    old.send_json({"op": "nope", "id": "still-here"})
    m, _ = old.recv_until(lambda x: x.get("id") == "still-here")
    assert m["type"] == "error"
    old.close_handshake(1000)


def test_sighup_with_invalid_config_keeps_the_old_one(bridge_factory):
    b = bridge_factory({"acl": [{"subscribe": ["mem.a.*"], "publish": ["**"]}]})
    c = b.connect()
    bad = dict(b.config)
    bad["limts"] = {}
    bad["acl"] = [{"subscribe": ["mem.b.*"], "publish": ["**"]}]
    rewrite_config(b, bad)
    b.proc.send_signal(signal.SIGHUP)
    rec = b.wait_log(lambda r: "limts" in json.dumps(r), timeout=5)
    assert rec is not None, "the invalid reload was not logged (naming the bad key)"
    assert rec.get("level") in ("warn", "warning", "error"), rec
    assert b.alive()
    assert try_subscribe(b, "mem.a.x") == "subscribed"
    assert try_subscribe(b, "mem.b.x") == "forbidden"
    c.send_json({"op": "nope", "id": 1})
    assert c.recv_json()["type"] == "error"
    c.close()
    assert b.stop() == 0


def test_500_connections_counted_and_released(bridge):
    clients = []
    try:
        for _ in range(500):
            clients.append(bridge.connect())
        m = bridge.wait_metric("wsbridge_connections", lambda v: v == 500, timeout=10)
        assert m.value("wsbridge_connections") == 500
        assert len({c.welcome["session"] for c in clients}) == 500
    finally:
        for c in clients:
            c.close()
    m = bridge.wait_metric("wsbridge_connections", lambda v: v == 0, timeout=10)
    assert m.value("wsbridge_connections") == 0
