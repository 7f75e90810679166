"""SPEC §7 metrics through a real Prometheus text-format parser (Debian python3-prometheus-client),
/readyz reasons, and the admin listener's GET /clients introspection (SPEC §11): the heaviest
connections with sub, peer, worker, subscriptions, buffered bytes and drops — a stalled client
must come out on top."""

# ctest: cost=11  (scheduling: docs/testing.md)

import json
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, http_get

# SPEC §7 families, their Prometheus types and label names.
SPEC_FAMILIES = {
    "wsbridge_connections": ("gauge", set()),
    "wsbridge_handshakes": ("counter", {"result"}),
    "wsbridge_subscriptions": ("gauge", set()),
    "wsbridge_messages_in": ("counter", {"connector"}),
    "wsbridge_messages_out": ("counter", set()),
    "wsbridge_bytes_out": ("counter", set()),
    "wsbridge_messages_dropped": ("counter", {"reason"}),
    "wsbridge_disconnects": ("counter", {"code"}),
    "wsbridge_publish": ("counter", {"result"}),
    "wsbridge_rate_limited": ("counter", {"kind"}),
    "wsbridge_delivery_latency_seconds": ("histogram", {"le"}),
    "wsbridge_ping_rtt_seconds": ("histogram", {"le"}),
    "wsbridge_connector_up": ("gauge", {"connector"}),
    "wsbridge_send_buffer_bytes": ("gauge", set()),
}


def scrape(b):
    status, headers, body = b.admin_get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode("utf-8")
    # The parser raises on anything that is not valid exposition format.
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return text, fams


def roundtrip(b, channel, n=5):
    sub = b.connect()
    sub.send_json({"op": "subscribe", "id": 1, "channel": channel})
    assert sub.recv_json()["type"] == "subscribed"
    pub = b.connect()
    for i in range(n):
        pub.send_json({"op": "publish", "id": i, "channel": channel, "data": {"i": i}})
        assert pub.recv_json()["type"] == "published"
    for i in range(n):
        assert sub.recv_json()["data"] == {"i": i}
    return sub, pub


def test_metrics_parse_with_prometheus_client(bridge_factory):
    b = bridge_factory({"limits": {"ping_interval_ms": 200, "pong_timeout_ms": 2000}})
    sub, pub = roundtrip(b, "mem.metrics")
    # wsclient answers pings while reading: wait for one RTT observation.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sub.recv_message(timeout=0.3)
        except socket.timeout:
            pass
        _, fams = scrape(b)
        rtt = [s for s in fams["wsbridge_ping_rtt_seconds"].samples if s.name.endswith("_count")]
        if rtt and rtt[0].value >= 1:
            break
    text, fams = scrape(b)
    for name, (typ, labels) in SPEC_FAMILIES.items():
        assert name in fams, (name, sorted(fams))
        f = fams[name]
        assert f.type == typ, (name, f.type)
        assert f.documentation, name
        for s in f.samples:
            assert set(s.labels) <= labels, (name, s.labels)
    # Histograms: cumulative buckets, +Inf equals _count, observations made.
    for name in ("wsbridge_delivery_latency_seconds", "wsbridge_ping_rtt_seconds"):
        samples = fams[name].samples
        buckets = [s for s in samples if s.name == name + "_bucket"]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), (name, counts)
        assert buckets[-1].labels["le"] == "+Inf"
        count = [s.value for s in samples if s.name == name + "_count"][0]
        total = [s.value for s in samples if s.name == name + "_sum"][0]
        assert buckets[-1].value == count >= 1, (name, count)
        assert total >= 0
    # Values that the round trip fixed.
    by = {(s.name, tuple(sorted(s.labels.items()))): s.value
          for f in fams.values() for s in f.samples}
    assert by[("wsbridge_connections", ())] == 2
    assert by[("wsbridge_subscriptions", ())] == 1
    assert by[("wsbridge_messages_in_total", (("connector", "m"),))] >= 5
    assert by[("wsbridge_publish_total", (("result", "ok"),))] == 5
    assert by[("wsbridge_connector_up", (("connector", "m"),))] == 1
    # Delivery latency: 5 messages, each well under 10 s on loopback.
    lat = {s.labels.get("le"): s.value for s in fams["wsbridge_delivery_latency_seconds"].samples
           if s.name.endswith("_bucket")}
    ten = [v for le, v in lat.items() if le != "+Inf" and float(le) == 10.0]
    assert lat["+Inf"] >= 5 and ten == [lat["+Inf"]], lat
    # One HELP and one TYPE line per family, no duplicate series.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))


def test_readyz_names_a_connector_that_is_not_ready(bridge_factory):
    """A Kafka connector whose broker does not answer: /readyz 503 names it, the memory
    connector that is fine is not listed, wsbridge_connector_up says the same."""
    dead = free_port()
    b = bridge_factory({"connectors": {"m": {"type": "memory"},
                                       "k": {"type": "kafka", "brokers": "127.0.0.1:%d" % dead}},
                        "channels": [{"match": "mem.**", "connector": "m", "topic": "mem-{1}"},
                                     {"match": "k.*", "connector": "k", "topic": "k-{1}"}]})
    deadline = time.monotonic() + 10
    while True:
        status, _, body = b.readyz()
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 503
    doc = json.loads(body)
    assert doc["status"] == "not_ready"
    assert list(doc["reason"]["connectors"]) == ["k"], doc
    assert doc["reason"]["connectors"]["k"]
    _, fams = scrape(b)
    up = {s.labels["connector"]: s.value for s in fams["wsbridge_connector_up"].samples}
    assert up == {"m": 1.0, "k": 0.0}


def test_readyz_names_the_drain(bridge_factory):
    b = bridge_factory({"drain_timeout_ms": 4000})
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.d"})
    c.recv_json()
    # The client never answers the close, which holds the drain open.
    b.proc.send_signal(15)
    deadline = time.monotonic() + 3
    doc = None
    while time.monotonic() < deadline:
        try:
            status, _, body = b.readyz(timeout=1.0)
        except OSError:
            break
        if status == 503:
            doc = json.loads(body)
            break
        time.sleep(0.05)
    assert doc == {"status": "not_ready", "reason": {"draining": True}}, doc
    assert b.stop(timeout=10) == 0


# ---- /clients ------------------------------------------------------------------------------


def clients(b, query=""):
    status, headers, body = b.admin_get("/clients" + query)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def test_clients_stalled_client_on_top(bridge_factory):
    b = bridge_factory({"limits": {"send_buffer": {"soft_bytes": 64 << 20, "soft_seconds": 60,
                                                    "hard_bytes": 64 << 20,
                                                    "policy": "drop_oldest"},
                                   "max_inflight_publishes": 1000}})
    fast = b.connect()
    fast.send_json({"op": "subscribe", "id": 1, "channel": "mem.load"})
    assert fast.recv_json()["type"] == "subscribed"
    stalled = b.connect()
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.send_json({"op": "subscribe", "id": 1, "channel": "mem.load"})
    stalled.send_json({"op": "subscribe", "id": 2, "channel": "mem.other"})
    assert stalled.recv_json()["type"] == "subscribed"
    assert stalled.recv_json()["type"] == "subscribed"
    idle = b.connect()  # no subscription

    pub = b.connect()
    payload = "x" * 32768
    n = 200
    for i in range(n):
        pub.send_json({"op": "publish", "id": i, "channel": "mem.load", "data": payload})
    got_pub = 0
    got_fast = 0
    deadline = time.monotonic() + 20
    while (got_pub < n or got_fast < n) and time.monotonic() < deadline:
        if got_pub < n:
            try:
                m = pub.recv_json(timeout=0.05)
                assert m["type"] == "published", m
                got_pub += 1
            except socket.timeout:
                pass
        if got_fast < n:
            try:
                m = fast.recv_json(timeout=0.05)
                if m["type"] == "message":
                    got_fast += 1
            except socket.timeout:
                pass
    assert (got_pub, got_fast) == (n, n)
    # The stalled client's loop may still be holding the rest of the records for it (the
    # hand-off gate: at most 500 ms), and the publish answers no longer wait for that; so
    # wait, bounded, for its queue to fill.
    deadline = time.monotonic() + 5
    while True:
        status, doc = clients(b, "?top=2&sort=send_buffer")
        top = doc.get("clients") or [{}]
        if top[0].get("buffered_bytes", 0) > 2 * (1 << 20) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    assert doc["sort"] == "send_buffer" and doc["top"] == 2 and doc["complete"] is True
    assert doc["total"] == 4
    top = doc["clients"]
    assert len(top) == 2
    first = top[0]
    assert first["session"] == stalled.welcome["session"], doc
    # 200 x 32 KiB were queued; the kernel took at most a few hundred KiB of it.
    assert first["buffered_bytes"] > 2 * (1 << 20), first
    assert top[1]["buffered_bytes"] < first["buffered_bytes"]
    assert sorted(first["subscriptions"]) == ["mem.load", "mem.other"]
    local = stalled.sock.getsockname()
    assert first["peer"] == "%s:%d" % local
    assert first["sub"] is None  # anonymous
    assert first["worker"] in (0, 1)
    assert first["dropped"] == 0
    assert first["lag_ms"] >= 0 and first["age_ms"] > 0
    for k in ("messages_out", "over_soft_limit_ms", "tls"):
        assert k in first

    # Lag: the stalled client has the oldest undelivered message.
    time.sleep(0.3)
    status, doc = clients(b, "?sort=lag&top=1")
    assert doc["clients"][0]["session"] == stalled.welcome["session"]
    assert doc["clients"][0]["lag_ms"] >= 300, doc

    # Age: oldest connection first, every connection listed with the default top.
    status, doc = clients(b, "?sort=age")
    order = [c["session"] for c in doc["clients"]]
    assert order == [x.welcome["session"] for x in (fast, stalled, idle, pub)]
    assert [c["subscriptions"] for c in doc["clients"]][2] == []

    for c in (fast, stalled, idle, pub):
        c.close()


def test_clients_counts_drops(bridge_factory):
    b = bridge_factory({"limits": {"send_buffer": {"soft_bytes": 256 << 10, "soft_seconds": 60,
                                                    "hard_bytes": 256 << 10,
                                                    "policy": "drop_oldest"},
                                   "max_inflight_publishes": 1000}})
    slow = b.connect()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send_json({"op": "subscribe", "id": 1, "channel": "mem.drops"})
    assert slow.recv_json()["type"] == "subscribed"
    pub = b.connect()
    n = 300
    for i in range(n):
        pub.send_json({"op": "publish", "id": i, "channel": "mem.drops", "data": "y" * 16384})
    for i in range(n):
        assert pub.recv_json(timeout=10)["type"] == "published"
    deadline = time.monotonic() + 5
    while True:
        status, doc = clients(b, "?top=1")
        first = doc["clients"][0]
        if first["dropped"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert first["session"] == slow.welcome["session"]
    assert first["dropped"] > 0, first
    _, fams = scrape(b)
    dropped = {s.labels["reason"]: s.value for s in fams["wsbridge_messages_dropped"].samples
               if s.name == "wsbridge_messages_dropped_total"}
    assert dropped["slow_consumer"] >= first["dropped"]


@pytest.mark.parametrize("query", ["?top=0", "?top=1001", "?top=abc", "?sort=size",
                                   "?limit=3", "?top=5&sort="])
def test_clients_bad_query_400(bridge_factory, query):
    b = bridge_factory()
    status, doc = clients(b, query)
    assert status == 400 and doc["error"] == "bad_request" and doc["message"], doc


def test_clients_empty_and_admin_only(bridge_factory):
    b = bridge_factory()
    status, doc = clients(b)
    assert status == 200
    assert doc == {"sort": "send_buffer", "top": 20, "total": 0, "complete": True, "clients": []}
    # Not on the main listener.
    status, _, _ = http_get("http://127.0.0.1:%d/clients" % b.port)
    assert status == 404
