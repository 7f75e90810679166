"""Kafka subscription churn with librdkafka's DEFAULT settings (issue 8 item 2: the connector
thread never blocks on one source for others). The connector's properties are left empty on
purpose (kafka_overrides(properties={})): fetch.wait.max.ms stays 500 ms, so every idle
partition has a long-polling fetch in flight, which used to hold the connector thread when a
source stopped (~343 ms) and made lookups on that connection wait behind the fetch.

- subscribe -> subscribed p99 <= 20 ms while other sources are idle, stopping (every
  iteration stops one: limits.source_linger_ms = 0) and failing (the leader of kt-stuck's
  partition is down, so its lookups hang until they time out, and are asked for again);
- 5,000 sequential connect -> subscribe -> close sessions, 1 in 50 on a Kafka channel, the
  rest on a channel without a rule, in under 60 s;
- 200 subscribes to 20 topics while another topic's partition has no leader: p99 <= 20 ms.

Under a sanitizer build (WSB_SANITIZED=1) the loads are scaled down and the p99 figures are
printed, not asserted (a figure of the release build; see assert_p99); the 60 s and the stop
bounds hold there too.
"""

# ctest: serial cost=18  (scheduling: docs/testing.md)

import os
import time

import pytest

import wsclient  # noqa: F401
from kafka_helpers import kafka_mock, kafka_overrides  # noqa: F401

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
TOPICS = 20
RETRY_S = 1.0  # a failed kt.stuck subscribe is asked for again after this


def churn_bridge(bridge_factory, kafka_mock, linger_ms=0):  # noqa: F811
    topics = {"kt-%d" % i: 1 for i in range(TOPICS)}
    topics["kt-idle"] = 3
    topics["kt-stuck"] = 1
    mc = kafka_mock(brokers=3, topics=topics)
    b = bridge_factory(kafka_overrides(
        mc.bootstrap, properties={},
        channels=[{"match": "kt.*", "connector": "k", "topic": "kt-{1}"}],
        extra={"limits": {"source_linger_ms": linger_ms, "max_subscriptions": 1000},
               "log": {"level": "info", "format": "json"}}))
    deadline = time.monotonic() + 15
    while b.readyz()[0] != 200:
        assert time.monotonic() < deadline, "the Kafka connector never became ready"
        time.sleep(0.1)
    return mc, b


def timed_subscribe(c, rid, channel, timeout=10.0):
    t0 = time.monotonic()
    r = c.request({"op": "subscribe", "id": rid, "channel": channel}, timeout=timeout)
    ms = (time.monotonic() - t0) * 1000.0
    assert r.get("type") == "subscribed", (channel, r)
    return ms


def p99(samples):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def assert_p99(lat):
    """The target, p99 <= 20 ms, is a figure of the release build. Under a sanitizer (every
    hop of the path 3-5x slower, the mock broker instrumented too) the scenario still runs
    for memory and thread errors and every subscribe must be answered, but the figure is
    only printed."""
    if SANITIZED:
        print("sanitizer build, not asserted:", summary(lat))
        return
    assert p99(lat) <= 20, summary(lat)


def summary(samples):
    s = sorted(samples)
    return "n=%d p50=%.1f p99=%.1f max=%.1f ms, %d over 20 ms; load average %s" % (
        len(s), s[len(s) // 2], p99(s), s[-1], sum(1 for x in s if x > 20),
        " ".join("%.1f" % x for x in os.getloadavg()))


class Stuck:
    """A client subscribed to kt.stuck, whose partition has no leader (or a leader that is
    down): its subscribe fails, and is asked for again RETRY_S later, so some source is
    failing during the whole measurement."""

    def __init__(self, b):
        self.c = b.connect()
        self.n = 0
        self.failures = 0
        self.retry_at = None
        self._send()

    def _send(self):
        self.n += 1
        self.c.send_json({"op": "subscribe", "id": "stuck-%d" % self.n, "channel": "kt.stuck"})

    def pump(self):
        """Re-asks RETRY_S after each failure; never blocks."""
        if self.retry_at is not None and time.monotonic() >= self.retry_at:
            self.retry_at = None
            self._send()
        while True:
            try:
                m = self.c.recv_json(timeout=0.001)
            except OSError:
                return
            if m.get("type") == "error":
                self.failures += 1
                self.retry_at = time.monotonic() + RETRY_S
            elif m.get("type") == "subscribed":
                raise AssertionError("a leaderless partition answered: %r" % (m,))


def test_subscribe_p99_while_others_idle_stopping_failing(kafka_mock, bridge_factory):
    mc, b = churn_bridge(bridge_factory, kafka_mock)
    idle = b.connect()  # idle sources: a fetch is always in flight on their partitions
    for i in range(3):
        assert timed_subscribe(idle, "i%d" % i, "kt.%d" % i) < 5000
    assert timed_subscribe(idle, "idle", "kt.idle") < 5000
    # Failing: kt-stuck is led by broker 3, which goes down; every other partition is led
    # by broker 1 or 2. A lookup for kt-stuck waits for broker 3 until it times out.
    for t in ["kt-%d" % i for i in range(TOPICS)]:
        mc.leader(t, 0, 1 + hash(t) % 2)
    for p in range(3):
        mc.leader("kt-idle", p, 1 + p % 2)
    mc.leader("kt-stuck", 0, 3)
    mc.down(3)
    stuck = Stuck(b)

    c = b.connect()
    n = 200 if SANITIZED else 500
    lat = []
    for i in range(n):
        ch = "kt.%d" % (3 + i % (TOPICS - 3))
        lat.append(timed_subscribe(c, i, ch))
        r = c.request({"op": "unsubscribe", "id": "u%d" % i, "channel": ch}, timeout=10)
        assert r.get("type") == "unsubscribed", r  # the source stops (linger 0)
        stuck.pump()
    print("subscribe latency while others idle/stopping/failing:", summary(lat),
          "(kt.stuck: %d asked, %d failed)" % (stuck.n, stuck.failures))
    assert_p99(lat)
    for cl in (idle, stuck.c, c):
        cl.close()


def test_stop_never_waits_a_hanging_lookup_out(kafka_mock, bridge_factory):
    """SPEC §8: exit within drain_timeout_ms (1 s here) even while a subscribe's lookup waits
    for a leader that is down (it would wait up to 5 s)."""
    mc, b = churn_bridge(bridge_factory, kafka_mock)
    for t in ["kt-%d" % i for i in range(TOPICS)]:
        mc.leader(t, 0, 1)
    mc.leader("kt-stuck", 0, 3)
    mc.down(3)
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": "kt.stuck"})
    time.sleep(0.3)
    t0 = time.monotonic()
    assert b.stop() == 0
    took = time.monotonic() - t0
    assert took < 3.0, "stop took %.1f s with a lookup hanging" % took


def test_5000_sequential_sessions_under_60s(kafka_mock, bridge_factory):
    mc, b = churn_bridge(bridge_factory, kafka_mock)
    n = 1000 if SANITIZED else 5000
    kafka = 0
    t0 = time.monotonic()
    for i in range(n):
        c = b.connect()
        on_kafka = i % 50 == 0
        ch = "kt.%d" % (i // 50 % TOPICS) if on_kafka else "nowhere.%d" % i
        r = c.request({"op": "subscribe", "id": 1, "channel": ch}, timeout=10)
        if on_kafka:
            assert r.get("type") == "subscribed", r
            kafka += 1
        else:
            assert r.get("type") == "error", r
        c.close()
    took = time.monotonic() - t0
    print("%d sessions (%d on Kafka) in %.1f s" % (n, kafka, took))
    assert took < 60, "%d sessions took %.1f s" % (n, took)


def test_200_subscribes_while_a_partition_has_no_leader(kafka_mock, bridge_factory):
    mc, b = churn_bridge(bridge_factory, kafka_mock)
    mc.leader("kt-stuck", 0, -1)
    stuck = Stuck(b)
    time.sleep(0.2)  # its lookup is under way
    c = b.connect()
    lat = []
    n = 200 if SANITIZED else 500
    for i in range(n):
        ch = "kt.%d" % (i % TOPICS)
        lat.append(timed_subscribe(c, i, ch))
        r = c.request({"op": "unsubscribe", "id": "u%d" % i, "channel": ch}, timeout=10)
        assert r.get("type") == "unsubscribed", r
        stuck.pump()
    print("subscribe latency next to a leaderless partition:", summary(lat))
    assert_p99(lat)
    stuck.c.close()
    c.close()


def test_reconnect_within_linger_is_warm_and_exact(kafka_mock, bridge_factory):
    """The default linger (5 s): a client that reconnects re-subscribes to the running source
    (no new upstream read: wsbridge_sources_started_total unchanged) and its `offsets` are
    exactly where the records produced meanwhile end."""
    from kafka_helpers import produce

    mc, b = churn_bridge(bridge_factory, kafka_mock, linger_ms=5000)
    c = b.connect()
    r = c.request({"op": "subscribe", "id": 1, "channel": "kt.idle"}, timeout=10)
    assert r.get("type") == "subscribed", r
    base = {int(p): o for p, o in r["offsets"].items()}
    started = b.metrics().value("wsbridge_sources_started_total")
    c.close()
    m = b.wait_metric("wsbridge_sources", lambda v: v == 1, state="lingering")
    assert m.value("wsbridge_sources", state="lingering") == 1
    reports = produce(mc.bootstrap, "kt-idle",
                      [{"value": b'{"i":%d}' % i, "partition": i % 3} for i in range(9)])
    want = dict(base)
    for rep in reports:
        want[rep["partition"]] = max(want.get(rep["partition"], 0), rep["offset"] + 1)
    # The lingering source reads them (the hub advances its positions) before we return.
    deadline = time.monotonic() + 10
    while True:
        c = b.connect()
        r = c.request({"op": "subscribe", "id": 2, "channel": "kt.idle"}, timeout=10)
        assert r.get("type") == "subscribed", r
        got = {int(p): o for p, o in r["offsets"].items()}
        if got == want or time.monotonic() > deadline:
            break
        c.close()
    assert got == want, (got, want)
    assert b.metrics().value("wsbridge_sources_started_total") == started
    c.close()

