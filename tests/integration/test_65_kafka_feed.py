"""The feed of a shared Kafka source (bridge/sources.h, issue 14 S7): records go only to the
event loops that have a subscriber of the source, and a lingering source with none builds
and posts nothing per record; a loop that takes the source again is told where its records
resume, so `subscribed.offsets` stays exact (no gap, no duplicate). Counted by
wsbridge_records_handed_total (records handed to loops) next to
wsbridge_messages_in_total (records read from the broker). With 1 and 2 workers; on the
mock with fetch.wait.max.ms 10, and the resume test also with librdkafka's defaults.
"""

# ctest: cost=21  (scheduling: docs/testing.md)

import json
import os
import time

import pytest

import wsclient  # noqa: F401
from kafka_helpers import BackgroundProducer, kafka_mock, kafka_overrides, produce  # noqa: F401

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
TOPIC = "feed"


def feed_bridge(bridge_factory, kafka_mock, workers, properties=None, partitions=1):  # noqa: F811
    mc = kafka_mock(brokers=1, topics={TOPIC: partitions})
    b = bridge_factory(kafka_overrides(
        mc.bootstrap, properties=properties,
        channels=[{"match": "feed", "connector": "k", "topic": TOPIC}],
        extra={"workers": workers, "limits": {"source_linger_ms": 600000}}))
    deadline = time.monotonic() + 15
    while b.readyz()[0] != 200:
        assert time.monotonic() < deadline, "the Kafka connector never became ready"
        time.sleep(0.1)
    return mc, b


def counts(b):
    m = b.metrics()
    return (m.value("wsbridge_messages_in_total", 0, connector="k"),
            m.value("wsbridge_records_handed_total", 0))


def wait_in(b, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = counts(b)
        if got[0] >= want:
            return got
        assert time.monotonic() < deadline, "messages_in %r, wanted %d" % (got, want)
        time.sleep(0.05)


def wait_lingering(b, n=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while b.metrics().value("wsbridge_sources", 0, state="lingering") != n:
        assert time.monotonic() < deadline, "the source does not linger"
        time.sleep(0.05)


def subscribe(c, rid=1):
    r = c.request({"op": "subscribe", "id": rid, "channel": "feed"}, timeout=10)
    assert r.get("type") == "subscribed", r
    return {int(p): o for p, o in r["offsets"].items()}


def worker_of(b, c):
    status, _, body = b.admin_get("/clients")
    assert status == 200
    for ci in json.loads(body)["clients"]:
        if ci["session"] == c.welcome["session"]:
            return ci["worker"]
    raise AssertionError("session not listed")


def clients_on(b, workers):
    """One connected client per worker (connections are spread over the loops)."""
    got, spare = {}, []
    for _ in range(64):
        c = b.connect()
        w = worker_of(b, c)
        if w in got:
            spare.append(c)
        else:
            got[w] = c
        if len(got) == workers:
            break
    for c in spare:
        c.close()
    assert len(got) == workers, "connections reached loops %r only" % sorted(got)
    return got


def records(n, start=0):
    return [{"value": json.dumps({"i": start + i}).encode(), "partition": 0} for i in range(n)]


def recv_offsets(c, n, timeout=15.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        assert m.get("type") == "message", m
        out.append((m["partition"], m["offset"]))
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_records_go_only_to_loops_with_a_subscriber(bridge_factory, kafka_mock, workers):  # noqa: F811
    mc, b = feed_bridge(bridge_factory, kafka_mock, workers)
    loops = clients_on(b, workers)
    n = 200 if SANITIZED else 1000
    last = max(loops)  # the other loop (with 2 workers) has no subscriber
    start = subscribe(loops[last])[0]
    in0, handed0 = counts(b)
    produce(mc.bootstrap, TOPIC, records(n))
    got = recv_offsets(loops[last], n)
    assert got == [(0, start + i) for i in range(n)]
    in1, handed1 = wait_in(b, in0 + n)
    assert in1 - in0 == n
    assert handed1 - handed0 == n, "records handed to a loop without a subscriber"

    # The first loop subscribes later: exact offsets, every record from there, once.
    if workers == 2:
        first = subscribe(loops[0])[0]
        assert first == start + n
        produce(mc.bootstrap, TOPIC, records(n, n))
        for c in loops.values():
            assert recv_offsets(c, n) == [(0, first + i) for i in range(n)]
        _, handed2 = wait_in(b, in0 + 2 * n)
        assert handed2 - handed1 == 2 * n
    for c in loops.values():
        c.close()


@pytest.mark.parametrize("workers,properties", [(1, None), (2, None), (2, {})],
                         ids=["1w", "2w", "2w-defaults"])
def test_lingering_source_hands_nothing_and_resumes_exactly(bridge_factory, kafka_mock,  # noqa: F811
                                                            workers, properties):
    mc, b = feed_bridge(bridge_factory, kafka_mock, workers, properties=properties)
    a = b.connect()
    base = subscribe(a)[0]
    a.close()
    wait_lingering(b)
    # The loop that had the subscriber is fed until the first records after its release are
    # posted; from then on nothing is handed to any loop.
    produce(mc.bootstrap, TOPIC, records(10))
    in0, handed0 = wait_in(b, 10)
    n = 300 if SANITIZED else 3000
    produce(mc.bootstrap, TOPIC, records(n, 10))
    in1, handed1 = wait_in(b, in0 + n)
    assert handed1 == handed0, "a lingering source's records were handed to a loop"

    # Subscribers on every loop start exactly after the last record read.
    loops = clients_on(b, workers)
    for c in loops.values():
        assert subscribe(c)[0] == base + 10 + n
    m = 100
    produce(mc.bootstrap, TOPIC, records(m, 10 + n))
    for c in loops.values():
        assert recv_offsets(c, m) == [(0, base + 10 + n + i) for i in range(m)]
    for c in loops.values():
        c.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_subscribes_during_production_resume_exactly(bridge_factory, kafka_mock, workers):  # noqa: F811
    """Clients come and go while records flow into a source that is, in turn, lingering, fed
    to one loop and fed to both: each client gets every record from its `subscribed.offsets`
    on, in order, once (the resync and the records of a loop never cross)."""
    mc, b = feed_bridge(bridge_factory, kafka_mock, workers, partitions=2)
    a = b.connect()
    subscribe(a)
    a.close()
    wait_lingering(b)
    rate = 400 if SANITIZED else 2000
    bp = BackgroundProducer(mc.bootstrap, TOPIC, 2, rate=rate, duration=30)
    bp.start()
    time.sleep(0.3)
    sessions = []  # (client, start offsets)
    for round_ in range(6):
        cs = [b.connect() for _ in range(3)]
        for c in cs:
            sessions.append((c, subscribe(c)))
            time.sleep(0.05)
        time.sleep(0.2)
        # Some leave again (their loop may stop being fed), and rejoin on a new connection.
        c, _ = sessions[-3]
        c.request({"op": "unsubscribe", "id": 9, "channel": "feed"})
        sessions[-3] = (c, None)
        time.sleep(0.1)
    bp.stop()
    reports = bp.finish()
    end = {p: max(o for pp, o, _ in reports if pp == p) + 1 for p in (0, 1)}
    for c, start in sessions:
        if start is None:
            c.close()
            continue
        want = sum(end[p] - start[p] for p in (0, 1))
        got = {0: [], 1: []}
        deadline = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < want:
            m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            assert m.get("type") == "message", m
            got[m["partition"]].append(m["offset"])
        for p in (0, 1):
            assert got[p] == list(range(start[p], end[p])), \
                "partition %d: from %d, got %r..." % (p, start[p], got[p][:5])
        c.close()
