"""Helpers for the Kafka integration tests (test_50_kafka, test_51_kafka_outage,
test_52_demo): the librdkafka mock cluster as a process (`wsb-kafka-mock`), bridge configs
routed to it, real Kafka producers/consumers (python3 confluent_kafka, never the bridge's
own code), and asyncio WebSocket clients (python3-websockets) for many subscribers.

    def test_x(kafka_mock, bridge_factory):
        mc = kafka_mock(topics={"orders": 3})          # MockCluster, bootstrap in mc.bootstrap
        b = bridge_factory(kafka_overrides(mc.bootstrap))
        reports = produce(mc.bootstrap, "orders", [{"value": b'{"i":1}', "partition": 0}])
        ...

Every wait is bounded; nothing here can hang a test.
"""

import asyncio
import json
import os
import threading
import time

import pytest

from conftest import DELETE, kafka_mock_bin
from lineproc import LineProcess

# ---------------------------------------------------------------------------------------
# The mock cluster process


class MockCluster(LineProcess):
    """One `wsb-kafka-mock` process. Attributes: bootstrap ("127.0.0.1:P1,..."), brokers,
    proc, log_path. Commands: down(id), up(id), create(topic, partitions), command(line)."""

    def __init__(self, brokers, topics, log_path, timeout=10.0):
        binary = kafka_mock_bin()
        if not os.path.exists(binary):
            if os.environ.get("WSB_KAFKA_MOCK_BIN"):
                pytest.fail("WSB_KAFKA_MOCK_BIN=%s does not exist" % binary)
            pytest.skip("wsb-kafka-mock not built (%s); set WSB_KAFKA_MOCK_BIN" % binary)
        args = [binary, "--brokers", str(brokers)]
        for name, parts in topics.items():
            args += ["--topic", "%s:%d" % (name, parts)]
        self.brokers = brokers
        super().__init__(args, log_path)
        line = self._readline(timeout)
        if line is None:
            self.close()
            raise AssertionError("wsb-kafka-mock printed no bootstrap line within %.0fs; "
                                 "stderr:\n%s" % (timeout, self.logs()))
        self.bootstrap = line
        assert self.bootstrap.startswith("127.0.0.1:"), self.bootstrap

    def _readline(self, timeout):
        """One stdout line (without the newline), or None on timeout/EOF."""
        line = self.readline(timeout)
        return None if line is None else line.decode("utf-8", "replace").strip()

    def command(self, line, timeout=5.0):
        """Sends one command line; returns the answer line ("ok" or "error ...")."""
        assert self.proc.poll() is None, "wsb-kafka-mock exited: %s" % self.logs()
        self.send(line)
        ans = self._readline(timeout)
        assert ans is not None, "wsb-kafka-mock did not answer %r within %.0fs" % (line, timeout)
        return ans

    def ok(self, line):
        ans = self.command(line)
        assert ans == "ok", "wsb-kafka-mock %r answered %r" % (line, ans)

    def down(self, broker_id):
        self.ok("down %d" % broker_id)

    def up(self, broker_id):
        self.ok("up %d" % broker_id)

    def create(self, topic, partitions):
        self.ok("create %s %d" % (topic, partitions))

    def leader(self, topic, partition, broker_id):
        """Moves the partition's leadership; broker_id -1 leaves it without a leader."""
        self.ok("leader %s %d %d" % (topic, partition, broker_id))


@pytest.fixture
def kafka_mock(tmp_path):
    """kafka_mock(brokers=3, topics={"orders": 3, "prices-eur": 1}) -> MockCluster; every
    cluster is shut down at teardown."""
    clusters = []

    def start(brokers=3, topics=None):
        if topics is None:
            topics = {"orders": 3, "prices-eur": 1}
        mc = MockCluster(brokers, topics, tmp_path / ("kafka-mock-%d.stderr" % len(clusters)))
        clusters.append(mc)
        return mc

    yield start
    for mc in clusters:
        mc.close()


# ---------------------------------------------------------------------------------------
# Bridge configuration


def kafka_channels(name="k"):
    return [
        {"match": "orders", "connector": name, "topic": "orders"},
        {"match": "prices.*", "connector": name, "topic": "prices-{1}"},
    ]


# librdkafka's mock broker answers a fetch that found no data at arrival only after the
# consumer's fetch.wait.max.ms (default 500 ms), even when data arrives meanwhile; a real
# broker answers as soon as data arrives. With the default, every record produced while a
# fetch waits reaches the bridge up to half a second late, which is not what a real
# deployment sees. So the mock-based tests lower it, as --demo does; tests about the
# defaults pass properties={} (librdkafka's own settings).
MOCK_PROPERTIES = {"fetch.wait.max.ms": "10"}


def kafka_overrides(bootstrap, extra=None, channels=None, properties=None, name="k"):
    """bridge_factory overrides routing `orders` and `prices.*` to the mock cluster through
    the connector `name` (the memory connector of the default config removed). `properties`
    are the connector's librdkafka properties: MOCK_PROPERTIES when None, none with {}."""
    conn = {"type": "kafka", "brokers": bootstrap}
    if properties is None:
        properties = MOCK_PROPERTIES
    if properties:
        conn["properties"] = properties
    out = {
        "drain_timeout_ms": 1000,
        "connectors": {"m": DELETE, name: conn},
        "channels": channels if channels is not None else kafka_channels(name),
    }
    for key, value in (extra or {}).items():
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------
# Real Kafka clients (confluent_kafka)


def producer(bootstrap, **conf):
    from confluent_kafka import Producer

    base = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
            "message.timeout.ms": 60000}
    base.update(conf)
    return Producer(base)


def produce(bootstrap, topic, records, timeout=30.0, prod=None):
    """Produces `records` (dicts with value, and optionally key, headers, partition,
    timestamp) and waits for every delivery report. Returns the reports as dicts
    {partition, offset, key, value, headers, timestamp} in production order; fails the test
    on a delivery error or a timeout."""
    p = prod or producer(bootstrap)
    reports = [None] * len(records)
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, str(err)))
            else:
                reports[i] = {"partition": msg.partition(), "offset": msg.offset(),
                              "key": msg.key(), "value": msg.value(),
                              "headers": msg.headers(), "timestamp": msg.timestamp()[1]}
        return cb

    for i, r in enumerate(records):
        kw = {"value": r.get("value"), "on_delivery": on_delivery(i)}
        for name in ("key", "headers", "partition", "timestamp"):
            if r.get(name) is not None:
                kw[name] = r[name]
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, "%d messages not delivered within %.0fs" % (left, timeout)
    assert not errors, "delivery errors: %r" % errors[:5]
    assert all(r is not None for r in reports), "missing delivery reports"
    return reports


class BackgroundProducer(threading.Thread):
    """Produces `{"i": N}` to `topic` round-robin over `partitions` at about `rate` messages
    per second for at most `duration` seconds (or until stop()). `reports` collects the
    delivery reports (partition, offset, i); `errors` any delivery error."""

    def __init__(self, bootstrap, topic, partitions, rate=500.0, duration=5.0, **conf):
        super().__init__(daemon=True)
        self.prod = producer(bootstrap, **conf)
        self.topic, self.partitions, self.rate, self.duration = topic, partitions, rate, duration
        self.reports = []
        self.errors = []
        self.produced = 0
        self.flushed_left = None
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()

    def _cb(self, err, msg):
        with self._lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.reports.append((msg.partition(), msg.offset(),
                                     json.loads(msg.value())["i"]))

    def run(self):
        start = time.monotonic()
        i = 0
        while not self._stop_evt.is_set() and time.monotonic() - start < self.duration:
            due = start + i / self.rate
            now = time.monotonic()
            if due > now:
                self.prod.poll(min(0.01, due - now))
                continue
            try:
                self.prod.produce(self.topic, value=json.dumps({"i": i}).encode(),
                                  partition=i % self.partitions, on_delivery=self._cb)
            except BufferError:
                self.prod.poll(0.05)
                continue
            self.prod.poll(0)
            i += 1
        self.produced = i
        self.flushed_left = self.prod.flush(60)

    def stop(self):
        self._stop_evt.set()

    def finish(self, timeout=70.0, stop=True):
        """Waits for the end (stopping it first unless stop=False, which lets it run its
        whole duration) and the flush; fails unless every message was delivered."""
        if stop:
            self.stop()
        self.join(timeout)
        assert not self.is_alive(), "producer thread did not finish"
        assert self.flushed_left == 0, "%d messages undelivered" % self.flushed_left
        assert not self.errors, self.errors[:5]
        assert len(self.reports) == self.produced
        return self.reports


def read_topic(bootstrap, topic, partitions, count, timeout=15.0, settle=0.5):
    """Reads every partition of `topic` from the earliest offset with a separate
    confluent_kafka Consumer (assign, no group commits) until `count` messages arrived, then
    keeps reading for `settle` seconds so that extra messages are seen too. Returns the
    Message objects (per partition in offset order)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wsb-test-reader",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            if settle_until is None and len(out) >= count:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            m = c.poll(0.1)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
        return out
    finally:
        c.close()


# ---------------------------------------------------------------------------------------
# asyncio WebSocket clients (python3-websockets 10.4)


async def ws_open(url, **kw):
    """A websockets client connection with the wsbridge.v1 subprotocol, compression off
    unless asked, welcome read and checked."""
    import websockets

    kw.setdefault("subprotocols", ["wsbridge.v1"])
    kw.setdefault("compression", None)
    kw.setdefault("max_size", 16 * 1024 * 1024)
    kw.setdefault("max_queue", 4096)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("ping_interval", None)
    ws = await websockets.connect(url, **kw)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome.get("type") == "welcome", welcome
    return ws


async def ws_request(ws, req, timeout=10.0):
    """Sends `req` and returns the next reply (a message that is not type=message)."""
    await ws.send(json.dumps(req))
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no reply to %r within %.0fs" % (req, timeout)
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if m.get("type") != "message":
            return m


def next_offsets(messages, base=None):
    """{"P": last offset + 1} per partition over `messages` (dicts with partition/offset),
    starting from `base` (a subscribed reply's offsets)."""
    out = dict(base or {})
    for m in messages:
        p = str(m["partition"])
        out[p] = max(out.get(p, 0), m["offset"] + 1)
    return out


def check_partition_order(messages, what="client"):
    """Asserts offsets strictly increase per partition; returns {partition: [offsets]}."""
    last = {}
    per = {}
    for m in messages:
        p, o = m["partition"], m["offset"]
        assert o > last.get(p, -1), "%s: partition %d offset %d after %d" % (
            what, p, o, last.get(p, -1))
        last[p] = o
        per.setdefault(p, []).append(o)
    return per
