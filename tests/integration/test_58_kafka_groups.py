"""Kafka `delivery: ack` channels (issue 12): the bridge joins consumer `group`, hands each
record to one acking client, commits only past contiguous acked runs. Real clients on the
other side: confluent_kafka producers, a separate consumer reading the group's committed
offsets, asyncio WebSocket clients. The mock cluster (wsb-kafka-mock, librdkafka 2.0.2)
implements JoinGroup/SyncGroup/Heartbeat/OffsetCommit/OffsetFetch and the bridge's
cooperative-sticky assignment runs against it as it would against a real cluster."""

import asyncio
import json
import os
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
    b = bridge_factory(overrides(mc))

    async def body():
        ws = await workers(b.ws_url, 4)
        try:
            await wait_for(lambda: sum(len(w.got) for w in ws) >= n, 40, "%d records" % n)
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
