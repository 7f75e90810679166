"""Flow control (SPEC §2 limits.send_buffer, §5 gap, §6 4408, §7 metrics): 200 fast clients
and 10 clients that stop reading share one Kafka channel carrying 20,000 records of ~1 KiB.
Fast clients must get every record in order whatever the slow ones do; slow ones are
disconnected with 4408 (policy "disconnect") or see `gap` notices that account for every
record exactly (policy "drop_oldest"); the bridge's memory stays bounded.

Fast clients are wsb-load (bench/wsb_load.c); under drop_oldest the slow clients are raw
Python sockets so that they can start reading again and count messages and gaps.

The producer is paced (PRODUCE_RATE/s) rather than dumped at once: fan-out to 200 clients
multiplies the rate by 200 and a burst of 20 MB would put every *fast* client over the
1 MiB hard limit too (the bridge reads Kafka far faster than 200 sockets drain), which is
correct behaviour for the bridge but not what this test is about.

The producer connects (one record flushed to another topic) before the paced loop
starts: produce() only queues locally, and paced calls made before the connection is up
would leave as one burst of ~1,000 records, exactly the kind of burst that puts every
client over hard_bytes.

The consumer's fetch.wait.max.ms is set to 10 ms: librdkafka's mock broker holds a fetch
for the whole wait (500 ms by default) instead of answering when records arrive (measured:
latency p50 259 ms, max 505 ms at 1,000 records/s), so every fetch would bring ~500
records at once. A real broker answers a fetch as soon as fetch.min.bytes is there.

RSS bound (RSS_BOUND_KIB = 300 MiB), reasoning: frames are encoded once and shared by
reference, so per-client queues hold references, not copies; still, in the worst case each
of the 210 clients may hold up to hard_bytes (1 MiB) of distinct frames = 210 MiB, plus
librdkafka's fetch queue (queued.max.messages.kbytes, 64 MiB by default), plus the process
baseline (~10 MiB). 300 MiB is that sum rounded up; a leak of the 20 MB stream per slow
client (10 x 22 MB) or per fast client (200 x 22 MB = 4.4 GB) would exceed it.
"""

# ctest: serial cost=50  (scheduling: docs/testing.md)

import json
import os
import time

import pytest

from flow_helpers import LoadRun, PacedProducer, RssSampler, drain_messages, slow_client
from kafka_helpers import kafka_mock, kafka_overrides  # noqa: F401  (fixture)

# The ASan+UBSan pass (scripts/test.sh sets WSB_SANITIZED=1) runs a bridge 3-5x slower: the
# same scenario, scaled to a rate it sustains. The release pass carries the figures.
SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
TOTAL = 5000 if SANITIZED else 20000
SIZE = 1024
PRODUCE_RATE = 250.0 if SANITIZED else 1000.0  # 20 s per run; 200x fan-out = 220 MB/s out
FAST = 200
SLOW = 10
RSS_BOUND_KIB = 300 * 1024
TOPIC = "flow"
WARM_TOPIC = "flow-warm"  # the producer's first record goes here (no subscriber)


def flow_bridge(bridge_factory, kafka_mock, policy):  # noqa: F811
    mc = kafka_mock(brokers=1, topics={TOPIC: 1, WARM_TOPIC: 1})
    limits = {"send_buffer": {"soft_bytes": 262144, "soft_seconds": 1,
                              "hard_bytes": 1048576, "policy": policy},
              "max_subscriptions": 10,
              # slow clients answer no ping while they do not read: keep them alive for
              # the whole run (keepalive has its own test in test_71_limits)
              "ping_interval_ms": 120000}
    b = bridge_factory(kafka_overrides(
        mc.bootstrap, channels=[{"match": "flow", "connector": "k", "topic": TOPIC}],
        properties={"fetch.wait.max.ms": "10"},
        extra={"limits": limits, "log": {"level": "info", "format": "json"}}),
        # under an ASan build, keep the allocator's quarantine (256 MiB by default) out of
        # the RSS measured against RSS_BOUND_KIB; ignored by a plain build
        env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and b.readyz()[0] != 200:
        time.sleep(0.1)
    assert b.readyz()[0] == 200, "bridge not ready: %r" % (b.readyz(),)
    return mc, b


def wait_subscriptions(b, n, timeout=30.0):
    m = b.wait_metric("wsbridge_subscriptions", lambda v: v >= n, timeout=timeout)
    got = m.value("wsbridge_subscriptions", 0.0)
    assert got >= n, "only %s of %d subscriptions after %.0fs" % (got, n, timeout)


def accounted(msgs):
    """True once messages plus gap counts cover the whole stream."""
    return sum(1 if m.get("type") == "message" else m.get("dropped", 0)
               for m in msgs) >= TOTAL


def check_fast(rc, summary):
    print("wsb-load summary:", json.dumps(summary))
    assert summary["fast"] == FAST and summary["slow"] == SLOW, summary
    assert summary["refused"] == {} and summary["connect_errors"] == 0, summary
    assert summary["order_violations"] == 0, summary
    assert summary["gaps_total"] == 0, "a fast client saw a gap: %r" % summary
    assert summary["complete_clients"] == FAST, summary
    assert summary["per_client_min"] == TOTAL and summary["per_client_max"] == TOTAL, summary
    assert rc == 0, summary


def test_slow_clients_disconnected_4408_fast_clients_get_everything(
        bridge_factory, kafka_mock, tmp_path):  # noqa: F811
    mc, b = flow_bridge(bridge_factory, kafka_mock, "disconnect")
    load = LoadRun(["--url", b.ws_url, "--clients", FAST + SLOW, "--slow", SLOW,
                    "--channel", TOPIC, "--expect", TOTAL, "--duration", 100,
                    "--connect-rate", 1000], tmp_path / "wsb-load.stderr")
    rss = RssSampler(b)
    try:
        wait_subscriptions(b, FAST + SLOW)
        rss.start()
        prod = PacedProducer(mc.bootstrap, TOPIC, TOTAL, SIZE, PRODUCE_RATE, WARM_TOPIC)
        prod.start()
        prod.finish()
        rc, summary = load.result(timeout=90)
    finally:
        load.kill()
        peak = rss.stop()
    check_fast(rc, summary)
    # Slow clients never read, so their close frames are never seen by them: the bridge's
    # metrics and logs tell.
    m = b.wait_metric("wsbridge_disconnects_total", lambda v: v >= SLOW, timeout=10,
                      code="4408")
    assert m.value("wsbridge_disconnects_total", 0, code="4408") == SLOW, \
        "4408 disconnects: %s" % m.value("wsbridge_disconnects_total", 0, code="4408")
    assert m.sum("wsbridge_messages_dropped_total") >= SLOW  # counted, label set by bridge
    recs = [r for r in b.log_records() if "slow consumer" in str(r.get("msg", ""))]
    conns = {r.get("conn") for r in recs}
    assert len(conns) == SLOW, "slow-consumer log lines for %d conns: %r" % (len(conns),
                                                                           recs[:3])
    assert peak < RSS_BOUND_KIB, "bridge RSS peaked at %d KiB (bound %d)" % (peak,
                                                                            RSS_BOUND_KIB)


def test_drop_oldest_slow_clients_see_gaps_that_account_for_everything(
        bridge_factory, kafka_mock, tmp_path):  # noqa: F811
    mc, b = flow_bridge(bridge_factory, kafka_mock, "drop_oldest")
    slows = []
    for i in range(SLOW):
        c = slow_client(b)
        r = c.request({"op": "subscribe", "id": "s%d" % i, "channel": TOPIC})
        assert r.get("type") == "subscribed", r
        slows.append(c)
    load = LoadRun(["--url", b.ws_url, "--clients", FAST, "--channel", TOPIC,
                    "--expect", TOTAL, "--duration", 100, "--connect-rate", 1000],
                   tmp_path / "wsb-load.stderr")
    rss = RssSampler(b)
    try:
        wait_subscriptions(b, FAST + SLOW)
        rss.start()
        prod = PacedProducer(mc.bootstrap, TOPIC, TOTAL, SIZE, PRODUCE_RATE, WARM_TOPIC)
        prod.start()
        prod.finish()
        rc, summary = load.result(timeout=90)
    finally:
        load.kill()
        peak = rss.stop()
    print("wsb-load summary:", json.dumps(summary))
    print("bridge cpu %.1fs over %.1fs, rss peak %d KiB" % (
        rss.cpu_end - rss.cpu_start, rss.t_end - rss.t_start, peak))
    assert summary["fast"] == FAST, summary
    assert summary["order_violations"] == 0 and summary["gaps_total"] == 0, summary
    assert summary["complete_clients"] == FAST, summary
    assert rc == 0, summary
    # The slow clients start reading again: they are still connected, and what they got
    # plus what the bridge says it dropped is the whole stream, in order.
    dropped_any = 0
    for i, c in enumerate(slows):
        msgs = drain_messages(c, idle=3.0, done=accounted, deadline_s=30)
        assert c.closed_with is None, "slow client %d closed: %r" % (i, c.closed_with)
        data = [m for m in msgs if m.get("type") == "message"]
        gaps = [m for m in msgs if m.get("type") == "gap"]
        other = [m for m in msgs if m.get("type") not in ("message", "gap")]
        assert not other, other[:3]
        assert all(g.get("channel") == TOPIC and g.get("dropped", 0) > 0 for g in gaps), gaps
        dropped = sum(g["dropped"] for g in gaps)
        offsets = [m["offset"] for m in data]
        assert offsets == sorted(set(offsets)), "slow client %d: offsets out of order" % i
        assert len(data) + dropped == TOTAL, (
            "slow client %d: %d delivered + %d dropped != %d" % (i, len(data), dropped, TOTAL))
        dropped_any += dropped
        c.close()
    assert dropped_any > 0, "no slow client ever had a message dropped: the test is not " \
                            "exercising drop_oldest"
    m = b.metrics()
    assert m.value("wsbridge_disconnects_total", 0, code="4408") == 0
    assert m.value("wsbridge_messages_dropped_total", 0, reason="slow_consumer") == dropped_any
    assert peak < RSS_BOUND_KIB, "bridge RSS peaked at %d KiB (bound %d)" % (peak,
                                                                            RSS_BOUND_KIB)
