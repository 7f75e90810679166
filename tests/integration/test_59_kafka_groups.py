"""Kafka `delivery: ack` channels (issue 12): the bridge joins consumer `group`, hands each
record to one acking client, commits only past contiguous acked runs. Real clients on the
other side: confluent_kafka producers, a separate consumer reading the group's committed
offsets, asyncio WebSocket clients. The mock cluster (wsb-kafka-mock, librdkafka 2.0.2)
implements JoinGroup/SyncGroup/Heartbeat/OffsetCommit/OffsetFetch and the bridge's
cooperative-sticky assignment runs against it as it would against a real cluster."""

# ctest: lock=heavy cost=58  (scheduling: docs/testing.md)

import asyncio
import json
import os
import threading
import time

from kafka_helpers import kafka_mock, kafka_overrides, produce, ws_open, ws_request  # noqa: F401

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
TOPIC = "work"
GROUP = "wsb-work"
# A 6 s session (librdkafka's default is 45 s) so a consumer that leaves or dies is noticed
# within the test's time; the mock takes a rebalance round per session timeout.
PROPS = {"fetch.wait.max.ms": "10", "session.timeout.ms": "6000",
         "heartbeat.interval.ms": "500"}


def channels(max_unacked=50, dlq=None):
    ch = {"match": "work", "connector": "k", "topic": TOPIC, "delivery": "ack",
          "group": GROUP, "max_unacked": max_unacked}
    if dlq:
        ch["dead_letter_topic"] = dlq
    return [ch, {"match": "orders", "connector": "k", "topic": "orders"}]


def overrides(mc, **kw):
    return kafka_overrides(mc.bootstrap, channels=channels(**kw), properties=PROPS,
                           extra={"log": {"level": "info"},
                                  "limits": {"send_buffer": {"soft_bytes": 64 << 20,
                                                             "hard_bytes": 64 << 20,
                                                             "soft_seconds": 600}}})


def committed(bootstrap, partitions, group=GROUP):
    """The group's committed offsets {partition: offset} (-1001 when none), read with a
    separate confluent_kafka consumer that does not join the group."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def run(coro, timeout):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Worker:
    """An acking WebSocket client: records (partition, offset, value) of what it got."""

    def __init__(self, ws, name, ack=True):
        self.ws, self.name, self.ack = ws, name, ack
        self.got = []
        self.held = []  # deliveries not acked (ack=False)
        self.task = None

    async def loop(self):
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("type") != "message":
                continue
            self.got.append((m["partition"], m["offset"], m["data"]["i"]))
            if self.ack:
                await self.ws.send(json.dumps({"op": "ack", "channel": "work",
                                               "ack_id": m["ack_id"]}))
            else:
                self.held.append(m)

    def start(self):
        self.task = asyncio.ensure_future(self.loop())


async def workers(url, n, ack=True):
    out = []
    for i in range(n):
        ws = await ws_open(url)
        r = await ws_request(ws, {"op": "subscribe", "id": 1, "channel": "work"})
        assert r.get("type") == "subscribed", r
        w = Worker(ws, "w%d" % i, ack=ack)
        w.start()
        out.append(w)
    return out


async def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        await asyncio.sleep(0.05)


def records(n, partitions=4, start=0):
    return [{"value": b'{"i":%d}' % i, "partition": i % partitions}
            for i in range(start, start + n)]


# ---- 1. 10,000 records, 4 partitions, 4 acking clients --------------------------------


def test_records_split_over_acking_clients_and_committed(kafka_mock, bridge_factory):
    n = 2000 if SANITIZED else 10000
    mc = kafka_mock(brokers=1, topics={TOPIC: 4, "orders": 1})
    produce(mc.bootstrap, TOPIC, records(n))
    b = bridge_factory(overrides(mc, max_unacked=50))

    async def body():
        ws = await workers(b.ws_url, 4)
        try:
            t0 = time.monotonic()
            await wait_for(lambda: sum(len(w.got) for w in ws) >= 1, 40, "a record")
            t1 = time.monotonic()
            await wait_for(lambda: sum(len(w.got) for w in ws) >= n, 40, "%d records" % n)
            print("join %.1f s, %d records in %.1f s" % (t1 - t0, n, time.monotonic() - t1))
            await asyncio.sleep(0.3)
            return [list(w.got) for w in ws]
        finally:
            for w in ws:
                w.task.cancel()
                await w.ws.close()

    got = run(body(), 60)
    every = [v for g in got for v in g]
    assert len(every) == n, "duplicates: %d deliveries of %d records" % (len(every), n)
    assert sorted(v[2] for v in every) == list(range(n))
    assert sum(1 for g in got if g) >= 2, [len(g) for g in got]
    for g in got:  # per partition, offsets increase for each client
        last = {}
        for p, o, _ in g:
            assert o > last.get(p, -1), (p, o, last.get(p))
            last[p] = o
    deadline = time.monotonic() + 10
    while committed(mc.bootstrap, 4) != {p: n // 4 for p in range(4)}:
        assert time.monotonic() < deadline, committed(mc.bootstrap, 4)
        time.sleep(0.2)
    m = b.metrics()
    assert m.value("wsbridge_kafka_group_commits_total", connector="k") >= 1
    assert m.value("wsbridge_kafka_group_unacked", connector="k") == 0
    assert m.value("wsbridge_kafka_groups", connector="k") == 1
    m = b.wait_metric("wsbridge_kafka_group_lag", lambda v: v == 0, timeout=5, connector="k")
    assert m.value("wsbridge_kafka_group_lag", connector="k") == 0


# ---- 2. a client leaves holding 50 unacked records --------------------------------------


def test_unacked_records_of_a_leaving_client_go_to_another(kafka_mock, bridge_factory):
    n = 400
    mc = kafka_mock(brokers=1, topics={TOPIC: 4, "orders": 1})
    produce(mc.bootstrap, TOPIC, records(n))
    b = bridge_factory(overrides(mc))
    observations = []  # (time after the read, committed offsets)

    async def body():
        holder = (await workers(b.ws_url, 1, ack=False))[0]
        await wait_for(lambda: len(holder.got) >= 50, 20, "50 records to the holder")
        acker = (await workers(b.ws_url, 1))[0]
        acked_at = {}  # (partition, offset) -> time the ack was sent

        orig = acker.ws.send

        async def send(data):
            await orig(data)
            if acker.got:
                acked_at.setdefault(acker.got[-1][:2], time.monotonic())
        acker.ws.send = send
        loop = asyncio.get_running_loop()
        await wait_for(lambda: len(acker.got) >= n - 50, 20, "the rest to the acker")
        for _ in range(5):  # commits while the holder still holds its 50
            c = await loop.run_in_executor(None, committed, mc.bootstrap, 4)
            observations.append((time.monotonic(), c))
            await asyncio.sleep(0.2)
        held = [(m["partition"], m["offset"]) for m in holder.held]
        assert len(held) == 50 and len(holder.got) == 50
        holder.task.cancel()
        await holder.ws.close()
        await wait_for(lambda: len(acker.got) >= n, 20, "the 50 redelivered")
        deadline = time.monotonic() + 10
        while True:
            c = await loop.run_in_executor(None, committed, mc.bootstrap, 4)
            observations.append((time.monotonic(), c))
            if c == {p: n // 4 for p in range(4)}:
                break
            assert time.monotonic() < deadline, c
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)
        acker.task.cancel()
        await acker.ws.close()
        return held, list(acker.got), acked_at

    held, got, acked_at = run(body(), 60)
    assert len(got) == n, "acker got %d deliveries of %d records" % (len(got), n)
    assert sorted(v[2] for v in got) == list(range(n))
    assert set(held) <= {v[:2] for v in got}
    # No observed commit ever passed a record that was not acked at that time.
    for t, c in observations:
        for p, off in c.items():
            for o in range(max(off, 0)):
                assert acked_at.get((p, o), float("inf")) <= t, (
                    "committed %d on partition %d before offset %d was acked" % (off, p, o))
    m = b.metrics()
    assert m.value("wsbridge_kafka_group_redeliveries_total", connector="k") >= 50


# ---- 3. nack: requeue, and without requeue to the dead-letter topic ---------------------


def test_nack_requeue_and_dead_letter(kafka_mock, bridge_factory):
    from kafka_helpers import read_topic

    mc = kafka_mock(brokers=1, topics={TOPIC: 1, "work.dlq": 1, "orders": 1})
    produce(mc.bootstrap, TOPIC, [
        {"value": b'{"i":0}', "key": b"k0", "headers": [("trace", b"t-0"), ("n", b"1")]},
        {"value": b'{"i":1}', "key": b"k1"}])
    b = bridge_factory(overrides(mc, dlq="work.dlq"))
    c = b.connect()
    assert c.request({"op": "subscribe", "id": 1, "channel": "work"})["type"] == "subscribed"
    first = [c.recv_json(timeout=15) for _ in range(2)]
    assert [m["data"]["i"] for m in first] == [0, 1], first
    # requeue: the same record again, with a new ack_id
    c.send_json({"op": "nack", "channel": "work", "ack_id": first[1]["ack_id"],
                 "requeue": True})
    again = c.recv_json(timeout=5)
    assert again["data"]["i"] == 1 and again["ack_id"] != first[1]["ack_id"], again
    c.send_json({"op": "ack", "channel": "work", "ack_id": again["ack_id"]})
    # no requeue: dead-lettered with key, headers and a reason header
    c.send_json({"op": "nack", "channel": "work", "ack_id": first[0]["ack_id"],
                 "requeue": False})
    dl = read_topic(mc.bootstrap, "work.dlq", 1, 1, timeout=10)
    assert len(dl) == 1, dl
    assert dl[0].key() == b"k0" and dl[0].value() == b'{"i":0}'
    h = dict(dl[0].headers())
    assert h["trace"] == b"t-0" and h["n"] == b"1", h
    assert h["x-wsbridge-reason"] == b"nack", h
    deadline = time.monotonic() + 10
    while committed(mc.bootstrap, 1) != {0: 2}:
        assert time.monotonic() < deadline, committed(mc.bootstrap, 1)
        time.sleep(0.2)
    m = b.metrics()
    assert m.value("wsbridge_kafka_group_dead_lettered_total", connector="k") == 1
    assert m.value("wsbridge_kafka_group_redeliveries_total", connector="k") == 1


# ---- 5. a slow client at max_unacked: the partition is paused, not buffered -------------


def test_slow_client_pauses_the_partition(kafka_mock, bridge_factory):
    mc = kafka_mock(brokers=1, topics={TOPIC: 1, "orders": 1})
    b = bridge_factory(overrides(mc, max_unacked=10))
    c = b.connect()
    assert c.request({"op": "subscribe", "id": 1, "channel": "work"})["type"] == "subscribed"
    produce(mc.bootstrap, TOPIC, records(20, partitions=1))
    got = [c.recv_json(timeout=15) for _ in range(10)]
    assert all(m["type"] == "message" for m in got)
    time.sleep(0.5)
    rss0 = b.rss_kib()
    # ~4 MB of 1 KB records while the client holds its 10 (the mock keeps about 5 MB of a
    # partition: more would delete what the client holds)
    total = 2000 if SANITIZED else 4000
    done = threading.Event()
    produced = []

    def write():
        from kafka_helpers import producer
        p = producer(mc.bootstrap)
        pad = "x" * 1000
        start = time.monotonic()
        for i in range(20, 20 + total):
            while True:
                try:
                    p.produce(TOPIC, value=json.dumps({"i": i, "pad": pad}).encode(),
                              partition=0)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 250 == 0:  # ~4 s of writing
                p.poll(0)
                time.sleep(max(0.0, start + (i - 20) / (total / 4.0) - time.monotonic()))
        produced.append(total - p.flush(30))
        done.set()
    t = threading.Thread(target=write, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set() and produced == [total], produced
    time.sleep(0.5)
    rss1 = b.rss_kib()
    m = b.metrics()
    read = m.value("wsbridge_messages_in_total", connector="k")
    assert m.value("wsbridge_kafka_group_unacked", connector="k") == 10
    # Paused: the bridge read what the client holds, the 500 records of slack that may wait
    # (kafka_group.c PAUSE_SLACK) and what came before the pause took effect, not the 4,000
    # records written.
    assert read < 1000, "read %d of %d records while the client was full" % (read, total)
    # (Under ASan, freed memory sits in the allocator's quarantine, so RSS counts what the
    # fetches churned, not what is held: there the records read are the check.)
    if not SANITIZED:
        assert rss1 - rss0 < 2560, "RSS grew %d KiB while paused" % (rss1 - rss0)
    try:
        extra = c.recv_json(timeout=0.3)
    except OSError:
        extra = None
    assert extra is None, extra
    # acks resume it
    for x in got:
        c.send_json({"op": "ack", "channel": "work", "ack_id": x["ack_id"]})
    more = [c.recv_json(timeout=10) for _ in range(10)]
    assert [x["data"]["i"] for x in more] == list(range(10, 20)), more


# ---- 4. two bridges in one group; broadcast answers during the rebalance ----------------


def test_two_bridges_split_and_take_over(kafka_mock, bridge_factory):
    n = 1000 if SANITIZED else 4000
    mc = kafka_mock(brokers=1, topics={TOPIC: 4, "orders": 1})
    b1 = bridge_factory(overrides(mc))
    b2 = bridge_factory(overrides(mc))

    def assigned(b, k=1):
        return lambda: sum(1 for r in b.log_records()
                           if r.get("msg") == "kafka group partitions assigned"
                           and r.get("partitions", 0) > 0) >= k

    async def body():
        loop = asyncio.get_running_loop()
        w1 = await workers(b1.ws_url, 2)
        await wait_for(assigned(b1), 20, "bridge 1 assigned")
        # Half the records before bridge 2 joins (bridge 1 acks them all), half after the
        # partitions moved. (Not while they move: librdkafka 2.0.2 takes an OffsetCommit
        # answered during a rebalance for the loss of the assignment, confluentinc/
        # librdkafka#4059; the bridge avoids most such commits, not all. See docs/kafka.md.)
        await loop.run_in_executor(None, produce, mc.bootstrap, TOPIC, records(n // 2))
        await wait_for(lambda: sum(len(w.got) for w in w1) >= n // 2, 30, "the first half")
        # ... and committed (the periodic commits, every ~100 ms while the group is steady)
        # before bridge 2 joins. Without this wait the acks of the last ~100 ms are committed
        # by bridge 1's revoke callback, which librdkafka's mock may refuse: it answers an
        # OffsetCommit with REBALANCE_IN_PROGRESS while the group is JOINING, where Apache
        # Kafka accepts a current-generation commit until the group is completing the
        # rebalance; the revoked partitions' uncommitted tail is then delivered again (at
        # least once, docs/kafka.md). Seen once in CI (297 of 4,000 twice).
        deadline = time.monotonic() + 20
        while sum((await loop.run_in_executor(None, committed, mc.bootstrap, 4)).values()) \
                != n // 2:
            assert time.monotonic() < deadline, committed(mc.bootstrap, 4)
            await asyncio.sleep(0.1)
        w2 = await workers(b2.ws_url, 2)
        probe = await ws_open(b1.ws_url)
        lat = []
        i = 0
        while not assigned(b2)():
            i += 1
            t0 = time.monotonic()
            r = await ws_request(probe, {"op": "subscribe", "id": i, "channel": "orders"})
            lat.append(time.monotonic() - t0)
            assert r.get("type") == "subscribed", r
            await ws_request(probe, {"op": "unsubscribe", "id": "u%d" % i, "channel": "orders"})
            await asyncio.sleep(0.02)
            assert len(lat) < 3000, "bridge 2 never got partitions"
        await probe.close()
        await loop.run_in_executor(None, produce, mc.bootstrap, TOPIC,
                                   records(n // 2, start=n // 2))
        everyone = w1 + w2
        await wait_for(lambda: sum(len(w.got) for w in everyone) >= n, 40, "%d records" % n)
        await asyncio.sleep(0.5)
        phase1 = [list(w.got) for w in everyone]
        # Bridge 1's clients stop acking; more records; bridge 1 stops.
        for w in w1:
            w.ack = False
        m = 400
        await loop.run_in_executor(None, produce, mc.bootstrap, TOPIC, records(m, start=n))
        await wait_for(lambda: sum(len(w.got) for w in everyone) >= n + 100, 20,
                       "phase 2 deliveries")
        await asyncio.sleep(0.5)
        held = [v for i, w in enumerate(w1) for v in w.got[len(phase1[i]):]]
        for w in w1:
            w.task.cancel()
        await loop.run_in_executor(None, b1.stop)
        await wait_for(lambda: {v[2] for w in w2 for v in w.got} >= set(range(n, n + m)), 40,
                       "the take-over")
        await asyncio.sleep(0.5)
        for w in w2:
            w.task.cancel()
            await w.ws.close()
        return phase1, held, [list(w.got) for w in w2], lat

    phase1, held, got2, lat = run(body(), 100)
    every = [v for g in phase1 for v in g]
    assert len(every) == n, "%d deliveries of %d records (duplicates)" % (len(every), n)
    assert sorted(v[2] for v in every) == list(range(n))
    # the second half split between the bridges
    assert sum(1 for g in phase1[:2] for v in g if v[2] >= n // 2) > 0
    assert sum(1 for g in phase1[2:] for v in g if v[2] >= n // 2) > 0, [len(g) for g in phase1]
    # Phase 2: bridge 2 delivered every record bridge 1's clients did not ack.
    # Bridge 1's clients acked nothing then: bridge 2 ends with all of them, those bridge 1
    # held unacked included (delivered again: at least once across a stop).
    assert held, "bridge 1 got no record in phase 2"
    later = [v[2] for g in got2 for v in g if v[2] >= n]
    assert set(later) == set(range(n, n + 400))
    lat.sort()
    print("broadcast subscribe during rebalance: n=%d p50=%.1f ms max=%.1f ms"
          % (len(lat), 1000 * lat[len(lat) // 2], 1000 * lat[-1]))
    assert lat[len(lat) // 2] < 0.05 and lat[-1] < 0.25, lat[-5:]
