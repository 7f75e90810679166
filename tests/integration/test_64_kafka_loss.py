"""Records lost at the broker (docs/kafka.md, "Records lost at the broker"): when the bridge's
consumer falls out of a partition's retained range, librdkafka resets it (auto.offset.reset)
past records nobody will ever read. Every subscriber then gets a `gap` whose `dropped` is the
number of records skipped, in their place (after the last message before them, before the
first one after), `wsbridge_records_lost_total{connector}` counts them and a warning names
the topic, partition and count.

How it is provoked: the mock cluster keeps ~5 MB per partition. The bridge is frozen
(SIGSTOP) while 12 MB of records are produced, so its position falls below the oldest record
left; once it runs again (SIGCONT) its next fetch is "offset out of range". Two workers (the
default), two clients on each loop (placed with /clients), and both the fixture's
fetch setting and librdkafka's defaults.

A stall that stays within retention is no loss: the same freeze with 1 MB produced gives no
gap and a zero counter. On a `delivery: ack` channel the group consumer's reset is a gap of the
same count for every member. The mock cluster of librdkafka 2.0.2 cannot make ordinary offset holes
(it writes no transaction markers and never compacts): that records with a hole but no reset
are not a loss is unit-tested (tests/unit/connectors/kafka_reset_test.c).
"""

# ctest: cost=12  (scheduling: docs/testing.md)

import json
import os
import signal
import threading
import time

import pytest

from kafka_helpers import kafka_mock, kafka_overrides, produce, producer  # noqa: F401

TOPIC = "lossy"
CHANNEL = "lossy"
SIZE = 32 * 1024
BEFORE = 20
CLIENTS = 4


def record(i):
    return {"value": json.dumps({"i": i, "pad": "x" * SIZE}).encode(), "partition": 0}


def start(bridge_factory, kafka_mock, properties):  # noqa: F811
    mc = kafka_mock(brokers=1, topics={TOPIC: 1})
    b = bridge_factory(kafka_overrides(
        mc.bootstrap, channels=[{"match": CHANNEL, "connector": "k", "topic": TOPIC}],
        properties=properties,
        extra={"log": {"level": "info", "format": "json"},
               "limits": {"ping_interval_ms": 120000}}))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and b.readyz()[0] != 200:
        time.sleep(0.1)
    assert b.readyz()[0] == 200, "bridge not ready: %r" % (b.readyz(),)
    # Two clients on each worker (the kernel's SO_REUSEPORT spread is random: connect until
    # both loops hold two, closing the extra ones).
    per, spare = {}, []
    for _ in range(64):
        c = b.connect()
        st, _, body = b.admin_get("/clients?top=1000")
        assert st == 200
        w = next(e["worker"] for e in json.loads(body)["clients"]
                 if e["session"] == c.welcome["session"])
        (per.setdefault(w, []) if len(per.get(w, [])) < CLIENTS // 2 else spare).append(c)
        if sum(len(v) for v in per.values()) == CLIENTS and len(per) == 2:
            break
    for c in spare:
        c.close()
    workers = set(per)
    clients = [c for v in per.values() for c in v]
    for c in clients:
        # from latest (the default): one shared source, read once for every client
        reply = c.request({"op": "subscribe", "id": 1, "channel": CHANNEL})
        assert reply.get("type") == "subscribed", reply
    return mc, b, clients, workers


def read_all(c, last_offset, out, timeout=30.0):
    """Reads messages and gaps of `c` in order into `out` until the message at last_offset."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            out.append({"type": "timeout"})
            return
        m = c.recv_json(timeout=left)
        out.append(m)
        if m.get("type") == "message" and m.get("offset") == last_offset:
            return


def read_clients(clients, last_offset):
    seen = [[] for _ in clients]
    threads = [threading.Thread(target=read_all, args=(c, last_offset, seen[i]), daemon=True)
               for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    return seen


def frozen(b, work):
    """Runs work() while the bridge process is stopped."""
    os.kill(b.pid, signal.SIGSTOP)
    try:
        return work()
    finally:
        os.kill(b.pid, signal.SIGCONT)


def lost_metric(b):
    return b.metrics().value("wsbridge_records_lost_total", 0.0, connector="k")


@pytest.mark.parametrize("properties", [None, {}], ids=["fixture", "librdkafka-defaults"])
def test_reset_past_records_is_a_gap(bridge_factory, kafka_mock, properties):  # noqa: F811
    mc, b, clients, workers = start(bridge_factory, kafka_mock, properties)
    assert workers == {0, 1}, "the clients did not spread over both workers: %r" % workers
    prod = producer(mc.bootstrap)
    produce(mc.bootstrap, TOPIC, [record(i) for i in range(BEFORE)], prod=prod)
    for c in clients:  # caught up before the freeze
        seen = []
        read_all(c, BEFORE - 1, seen, timeout=15)
        assert [m.get("offset") for m in seen] == list(range(BEFORE)), seen[-3:]

    # 400 x 32 KiB = 12.8 MB while the bridge is frozen: the mock keeps the last ~5 MB.
    stopped = frozen(b, lambda: produce(mc.bootstrap, TOPIC,
                                        [record(i) for i in range(BEFORE, BEFORE + 400)],
                                        prod=prod))
    after = produce(mc.bootstrap, TOPIC, [record(i) for i in range(BEFORE + 400, BEFORE + 410)],
                    prod=prod)
    last = after[-1]["offset"]
    assert stopped[-1]["offset"] + 10 == last

    lost_counts = set()
    for i, seen in enumerate(read_clients(clients, last)):
        assert seen and seen[-1].get("offset") == last, (
            "client %d did not get the last record: %r" % (i, [m.get("type") for m in seen][-5:]))
        gaps = [(k, m) for k, m in enumerate(seen) if m.get("type") == "gap"]
        assert len(gaps) == 1, "client %d: expected one gap, got %r" % (i, [g for _, g in gaps])
        k, gap = gaps[0]
        assert gap == {"type": "gap", "channel": CHANNEL, "dropped": gap["dropped"]}, gap
        msgs = [m for m in seen if m.get("type") == "message"]
        assert len(msgs) == len(seen) - 1, [m.get("type") for m in seen if m.get("type") !=
                                            "message"]
        # In its place: between the last message before the loss and the first after it.
        before = seen[k - 1]["offset"] if k > 0 else BEFORE - 1
        first_after = seen[k + 1]["offset"]
        assert gap["dropped"] == first_after - before - 1 > 0, (before, gap, first_after)
        # Every other step is contiguous: nothing else is missing, nothing repeated.
        offsets = [BEFORE - 1] + [m["offset"] for m in msgs]
        jumps = [(a, c) for a, c in zip(offsets, offsets[1:]) if c != a + 1]
        assert jumps == [(before, first_after)], jumps
        assert len(msgs) + gap["dropped"] == last + 1 - BEFORE
        lost_counts.add(gap["dropped"])
    assert len(lost_counts) == 1, lost_counts  # one source: the same records for every client
    lost = lost_counts.pop()
    print("records lost at the broker: %d of %d" % (lost, 410))

    assert lost_metric(b) == lost
    warn = [r for r in b.log_records() if r.get("msg") == "kafka records lost"]
    assert len(warn) == 1, warn
    w = warn[0]
    assert (w["level"], w["connector"], w["topic"], w["partition"], w["lost"]) == (
        "warn", "k", TOPIC, 0, lost), w
    assert w["offset"] == w["expected"] + lost
    # librdkafka's own line about the reset is there too.
    assert any(r.get("facility") == "OFFSET" for r in b.log_records())


def test_stall_within_retention_is_no_gap(bridge_factory, kafka_mock):  # noqa: F811
    mc, b, clients, _ = start(bridge_factory, kafka_mock, None)
    prod = producer(mc.bootstrap)
    produce(mc.bootstrap, TOPIC, [record(i) for i in range(BEFORE)], prod=prod)
    # 30 x 32 KiB = 1 MB while frozen: well within the mock's retention.
    frozen(b, lambda: produce(mc.bootstrap, TOPIC,
                              [record(i) for i in range(BEFORE, BEFORE + 30)], prod=prod))
    last = BEFORE + 30 - 1
    for i, seen in enumerate(read_clients(clients, last)):
        assert [m.get("type") for m in seen] == ["message"] * (last + 1), (
            "client %d: %r" % (i, [m.get("type") for m in seen if m.get("type") != "message"]))
        assert [m["offset"] for m in seen] == list(range(last + 1))
    assert lost_metric(b) == 0
    assert not [r for r in b.log_records() if r.get("msg") == "kafka records lost"]


def read_quiet(c, out, quiet=2.0, timeout=40.0):
    """Reads messages and gaps of `c` into `out` until nothing came for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out.append(c.recv_json(timeout=quiet))
        except OSError:  # socket.timeout: quiet
            return


def test_ack_channel_loss_is_a_gap_for_every_member(bridge_factory, kafka_mock):  # noqa: F811
    """`delivery: ack`: the group consumer's reset past records is a gap of their count for
    each member (each record would have gone to one of them)."""
    mc = kafka_mock(brokers=1, topics={TOPIC: 1})
    ch = {"match": "work", "connector": "k", "topic": TOPIC, "delivery": "ack",
          "group": "wsb-loss", "max_unacked": 1000}
    b = bridge_factory(kafka_overrides(
        mc.bootstrap, channels=[ch], extra={"log": {"level": "info", "format": "json"},
                                            "limits": {"ping_interval_ms": 120000}}))
    members = []
    for _ in range(2):
        c = b.connect()
        reply = c.request({"op": "subscribe", "id": 1, "channel": "work"})
        assert reply.get("type") == "subscribed", reply
        members.append(c)
    prod = producer(mc.bootstrap)
    produce(mc.bootstrap, TOPIC, [record(i) for i in range(BEFORE)], prod=prod)
    got = [[] for _ in members]
    deadline = time.monotonic() + 30  # the group's join, then the records
    while sum(len(g) for g in got) < BEFORE and time.monotonic() < deadline:
        for i, c in enumerate(members):
            try:
                got[i].append(c.recv_json(timeout=0.2))
            except OSError:
                pass
    assert sorted(m["offset"] for g in got for m in g) == list(range(BEFORE)), got
    frozen(b, lambda: produce(mc.bootstrap, TOPIC,
                              [record(i) for i in range(BEFORE, BEFORE + 400)], prod=prod))
    after = produce(mc.bootstrap, TOPIC, [record(i) for i in range(BEFORE + 400, BEFORE + 410)],
                    prod=prod)
    last = after[-1]["offset"]
    seen = [[] for _ in members]
    threads = [threading.Thread(target=read_quiet, args=(c, seen[i]), daemon=True)
               for i, c in enumerate(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(45)
    gaps = [[m for m in s if m.get("type") == "gap"] for s in seen]
    assert [len(g) for g in gaps] == [1, 1], gaps
    dropped = gaps[0][0]["dropped"]
    assert gaps[1][0] == {"type": "gap", "channel": "work", "dropped": dropped}, gaps
    offsets = sorted(m["offset"] for s in seen for m in s if m.get("type") == "message")
    assert offsets and offsets[-1] == last, offsets[-3:]
    # Contiguous from the freeze on but for one jump: the records lost.
    steps = [BEFORE - 1] + offsets
    jumps = [(a, c) for a, c in zip(steps, steps[1:]) if c != a + 1]
    assert len(jumps) == 1 and jumps[0][1] - jumps[0][0] - 1 == dropped > 0, (jumps, dropped)
    assert len(offsets) + dropped == last + 1 - BEFORE
    print("records lost at the broker (ack channel): %d of 410" % dropped)
    assert lost_metric(b) == dropped
    warn = [r for r in b.log_records() if r.get("msg") == "kafka records lost"]
    assert len(warn) == 1 and (warn[0]["group"], warn[0]["lost"]) == ("wsb-loss", dropped), warn
