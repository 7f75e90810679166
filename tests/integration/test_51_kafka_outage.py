"""Kafka broker outage: every broker of the mock cluster goes down and comes back. /readyz
turns 503 naming the connector and back to 200; the subscription survives and the client
receives every message produced before, during (buffered by the producer) and after the
outage, with no gap and no duplicate in offsets (SPEC §8 "Broker outages")."""

# ctest: cost=20  (scheduling: docs/testing.md)

import json
import signal
import socket
import time

from kafka_helpers import kafka_mock, kafka_overrides, producer, read_topic  # noqa: F401

CONNECTOR = "events"  # distinctive, so "the reason names the connector" means something


def wait_readyz(b, want_status, timeout):
    """Polls /readyz until it answers want_status. Returns (status, body json, seconds)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, _, body = b.readyz(timeout=2.0)
            last = (status, body)
            if status == want_status:
                return status, json.loads(body or b"null"), time.monotonic() - t0
        except OSError as e:
            last = repr(e)
        time.sleep(0.1)
    raise AssertionError("/readyz did not answer %d within %.0fs; last %r"
                         % (want_status, timeout, last))


def names_connector(value, name):
    """True when `name` appears as a key or inside a string anywhere in the JSON value."""
    if isinstance(value, str):
        return name in value
    if isinstance(value, dict):
        return any(k == name or name in k or names_connector(v, name) for k, v in value.items())
    if isinstance(value, list):
        return any(names_connector(v, name) for v in value)
    return False


def send_batch(prod, start, n, reports):
    def cb(err, msg):
        reports.append((err, msg.partition() if not err else None,
                        msg.offset() if not err else None,
                        json.loads(msg.value())["i"]))

    for i in range(start, start + n):
        prod.produce("orders", value=json.dumps({"i": i}).encode(), partition=i % 3,
                     on_delivery=cb)
    prod.poll(0)


def drain_messages(c, into, until, timeout):
    """Reads messages into `into` until until(into) or the deadline. Anything but a
    message fails the test (the subscription must survive the outage silently)."""
    deadline = time.monotonic() + timeout
    while not until(into) and time.monotonic() < deadline:
        try:
            m = c.recv_json(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        except socket.timeout:
            continue
        assert m.get("type") == "message", "unexpected during the outage: %r" % (m,)
        into.append(m)
    return into


def subscribed(kafka_mock, bridge_factory, brokers):  # noqa: F811
    """A mock cluster of `brokers` with "orders" (3 partitions), a bridge reading it through
    CONNECTOR (info logs), ready, and one client subscribed to "orders" from latest.
    Returns (cluster, bridge, client, the `subscribed` reply)."""
    mc = kafka_mock(brokers=brokers, topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap, name=CONNECTOR,
                                       extra={"log": {"level": "info"}}))
    wait_readyz(b, 200, 15)
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": "orders", "from": "latest"})
    sub = c.recv_json(timeout=10)
    assert sub.get("type") == "subscribed", sub
    return mc, b, c, sub


def test_all_brokers_down_then_up_readyz_and_no_loss(kafka_mock, bridge_factory):
    mc, b, c, sub = subscribed(kafka_mock, bridge_factory, brokers=3)
    start = {int(p): o for p, o in sub["offsets"].items()}
    assert start == {0: 0, 1: 0, 2: 0}, sub

    prod = producer(mc.bootstrap, **{"message.timeout.ms": 120000, "log_level": 0})
    reports = []
    got = []

    # Before.
    send_batch(prod, 0, 30, reports)
    assert prod.flush(15) == 0
    drain_messages(c, got, lambda g: len(g) >= 30, 10)
    assert len(got) == 30, "before the outage: %d of 30 messages" % len(got)

    # Outage: every broker down.
    for broker in (1, 2, 3):
        mc.down(broker)
    t_down = time.monotonic()
    status, body, took = wait_readyz(b, 503, 20)
    assert isinstance(body, dict), body
    assert body.get("status") != "ready", body
    assert names_connector(body.get("reason"), CONNECTOR), \
        "/readyz reason does not name the connector %r: %r" % (CONNECTOR, body)
    m = b.metrics()
    assert m.value("wsbridge_connector_up", connector=CONNECTOR) == 0.0, \
        {k: v for k, v in m.items() if "connector_up" in k}

    # During: the producer buffers; a client publish through the bridge waits too.
    send_batch(prod, 30, 30, reports)
    prod.poll(0.5)
    pub = b.connect()
    pub.send_json({"op": "publish", "id": "during", "channel": "orders", "data": {"i": -1}})
    # A new subscription cannot learn where to start: it is refused as unavailable, in
    # bounded time, and the connection stays usable.
    late = b.connect()
    t_sub = time.monotonic()
    late.send_json({"op": "subscribe", "id": "late", "channel": "prices.eur"})
    r_late = late.recv_json(timeout=20)
    assert r_late.get("id") == "late" and r_late.get("type") == "error" and \
        r_late.get("code") == "unavailable", r_late
    sub_wait = time.monotonic() - t_sub
    # Stay down a while (several health probes and reconnect attempts); nothing can arrive
    # and nothing may break meanwhile.
    drain_messages(c, got, lambda g: False, 4.0)
    assert len(got) == 30, "messages while every broker is down?! %r" % got[30:33]
    outage = time.monotonic() - t_down

    # Back up.
    for broker in (1, 2, 3):
        mc.up(broker)
    status, body, took_up = wait_readyz(b, 200, 30)
    m = b.metrics()
    assert m.value("wsbridge_connector_up", connector=CONNECTOR) == 1.0
    assert prod.flush(60) == 0, "the producer could not deliver after the outage"

    # After.
    send_batch(prod, 60, 30, reports)
    assert prod.flush(15) == 0
    errors = [r for r in reports if r[0] is not None]
    assert not errors, errors[:5]

    # The publish made during the outage is answered: published (then it is in the log and
    # must reach the subscriber too), or publish_failed — never silence.
    r = pub.recv_json(timeout=60)
    assert r.get("id") == "during", r
    assert r.get("type") == "published" or (r.get("type") == "error" and r.get("code") in (
        "publish_failed", "unavailable")), r
    expected_total = 90 + (1 if r.get("type") == "published" else 0)

    drain_messages(c, got, lambda g: len(g) >= expected_total, 30)
    print("readyz 503 after %.1fs, 200 %.1fs after the brokers came back; outage %.1fs; "
          "publish during the outage: %r; subscribe refused after %.1fs; delivered %d"
          % (took, took_up, outage, r, sub_wait, len(got)))
    # The refused subscription can be made now.
    late.send_json({"op": "subscribe", "id": "again", "channel": "prices.eur"})
    r_again = late.recv_json(timeout=15)
    assert r_again.get("type") == "subscribed" and r_again.get("id") == "again", r_again
    late.close()

    # The log as a separate Kafka consumer reads it is the truth.
    log = read_topic(mc.bootstrap, "orders", 3, expected_total, timeout=15)
    log_set = {(x.partition(), x.offset()) for x in log}
    assert len(log) == expected_total, "the topic holds %d records, expected %d" % (
        len(log), expected_total)
    for _, p, o, i in reports:
        assert (p, o) in log_set, (p, o, i)

    seen = [(m["partition"], m["offset"]) for m in got]
    per = {}
    for p, o in seen:
        per.setdefault(p, []).append(o)
    for p in range(3):
        offs = per.get(p, [])
        n_log = sum(1 for x in log if x.partition() == p)
        assert offs == list(range(start[p], start[p] + n_log)), \
            "partition %d: delivered offsets %r.. (%d), log has %d (gap, duplicate or " \
            "reordering around the outage of %.1fs)" % (p, offs[:10], len(offs), n_log, outage)
    assert len(seen) == len(set(seen)) == expected_total
    by_pos = {(x.partition(), x.offset()): x.value() for x in log}
    for m in got:
        assert json.loads(by_pos[(m["partition"], m["offset"])]) == m["data"], m
    c.close()
    pub.close()


def test_a_stalled_cluster_shorter_than_two_probes_is_not_an_outage(kafka_mock, bridge_factory):
    """The whole mock cluster is stopped (SIGSTOP) for 2.5 s: connections stay open, nothing
    answers, so the one readiness probe in flight times out (its timeout is 1 s, its period
    1.5 s) while the brokers are not gone. A loaded host stalls like this. One late probe is
    not an outage: /readyz stays 200 and no `connector down` is logged. The record produced
    after the stall is delivered."""
    mc, b, c, _ = subscribed(kafka_mock, bridge_factory, brokers=1)
    time.sleep(2.0)  # a probe or two have answered: the state is known and up

    statuses = []
    mc.proc.send_signal(signal.SIGSTOP)
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            statuses.append(b.readyz(timeout=2.0)[0])
            time.sleep(0.1)
    finally:
        mc.proc.send_signal(signal.SIGCONT)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        statuses.append(b.readyz(timeout=2.0)[0])
        time.sleep(0.1)
    down = [r for r in b.log_records() if r.get("msg") == "connector down"]
    assert set(statuses) == {200}, "readyz during/after a 2.5 s stall: %r; log: %r" % (
        sorted(set(statuses)), down)
    assert not down, down

    prod = producer(mc.bootstrap, **{"log_level": 0})
    prod.produce("orders", value=b'{"after":"stall"}', partition=1)
    assert prod.flush(15) == 0
    m = c.recv_json(timeout=10)
    assert m.get("type") == "message" and m["data"] == {"after": "stall"}, m
    c.close()
