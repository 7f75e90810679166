"""Source linger (limits.source_linger_ms, issue 8 item 3): a shared broadcast source whose
last subscriber leaves keeps reading for the linger time, so a reconnect re-subscribes warm
(no new upstream read) with exact positions; then it stops. Counted by
wsbridge_sources_started_total / wsbridge_sources_stopped_total and the gauge
wsbridge_sources{state}. The memory connector is the broker (the registry does not care)."""

import json
import signal
import time

import pytest

SRC = "wsbridge_sources"


def sources(b):
    m = b.metrics()
    return (m.value("wsbridge_sources_started_total"), m.value("wsbridge_sources_stopped_total"),
            m.value(SRC, state="subscribed"), m.value(SRC, state="lingering"))


def wait_sources(b, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = sources(b)
        if got == want:
            return got
        assert time.monotonic() < deadline, "sources %r, wanted %r" % (got, want)
        time.sleep(0.05)


def publish(c, rid, channel, data):
    r = c.request({"op": "publish", "id": rid, "channel": channel, "data": data})
    assert r.get("type") == "published", r


def sub(c, rid, channel, **kw):
    req = {"op": "subscribe", "id": rid, "channel": channel}
    req.update(kw)
    r = c.request(req)
    assert r.get("type") == "subscribed", r
    return r


def test_linger_keeps_the_source_warm_with_exact_positions(bridge_factory):
    b = bridge_factory({"limits": {"source_linger_ms": 1500}})
    pub = b.connect()
    a = b.connect()
    r = sub(a, 1, "mem.l")
    assert r["offsets"] == {"0": 0}, r
    assert sources(b) == (1, 0, 1, 0)
    for i in range(5):
        publish(pub, i, "mem.l", {"i": i})
    got = [a.recv_json() for _ in range(5)]
    assert [m["offset"] for m in got] == [0, 1, 2, 3, 4], got
    a.close()  # the last subscriber leaves (the connection goes)

    wait_sources(b, (1, 0, 0, 1))
    for i in range(5, 8):  # published while nobody listens: the source keeps reading
        publish(pub, i, "mem.l", {"i": i})
    time.sleep(0.2)

    # A reconnect within the linger: no new upstream read, and the position is exact.
    c = b.connect()
    r = sub(c, 1, "mem.l")
    assert r["offsets"] == {"0": 8}, r
    assert sources(b) == (1, 0, 1, 0)
    publish(pub, 8, "mem.l", {"i": 8})
    m = c.recv_json()
    assert m["offset"] == 8 and m["data"] == {"i": 8}, m

    # Unsubscribe (not a close) lingers too, and the linger runs out.
    r = c.request({"op": "unsubscribe", "id": 2, "channel": "mem.l"})
    assert r.get("type") == "unsubscribed", r
    assert sources(b)[3] == 1
    t0 = time.monotonic()
    wait_sources(b, (1, 1, 0, 0), timeout=5)
    assert time.monotonic() - t0 >= 1.0, "stopped before the linger ran out"

    # After the stop a subscribe starts a fresh read, from the end.
    r = sub(c, 3, "mem.l")
    assert r["offsets"] == {"0": 9}, r
    assert sources(b) == (2, 1, 1, 0)
    for cl in (pub, c):
        cl.close()


def test_private_and_zero_linger_sources_stop_at_once(bridge_factory):
    b = bridge_factory({"limits": {"source_linger_ms": 60000}})
    c = b.connect()
    # A replay (from earliest) is private to its subscriber: it never lingers.
    sub(c, 1, "mem.p", **{"from": "earliest"})
    r = c.request({"op": "unsubscribe", "id": 2, "channel": "mem.p"})
    assert r.get("type") == "unsubscribed", r
    wait_sources(b, (1, 1, 0, 0))

    # A reload to 0 ends the lingers under way and stops the next ones at once.
    sub(c, 3, "mem.q")
    r = c.request({"op": "unsubscribe", "id": 4, "channel": "mem.q"})
    assert r.get("type") == "unsubscribed", r
    wait_sources(b, (2, 1, 0, 1))
    cfg = json.loads(json.dumps(b.config))
    cfg["limits"]["source_linger_ms"] = 0
    with open(b.config_path, "w") as f:
        json.dump(cfg, f)
    b.proc.send_signal(signal.SIGHUP)
    wait_sources(b, (2, 2, 0, 0))
    sub(c, 5, "mem.q")
    r = c.request({"op": "unsubscribe", "id": 6, "channel": "mem.q"})
    assert r.get("type") == "unsubscribed", r
    wait_sources(b, (3, 3, 0, 0))
    c.close()


@pytest.mark.parametrize("delivery", ["ack"])
def test_ack_sources_never_linger(bridge_factory, delivery):
    b = bridge_factory({"limits": {"source_linger_ms": 60000},
                        "channels": [{"match": "mem.**", "connector": "m", "topic": "mem-{1}",
                                      "delivery": delivery}]})
    c = b.connect()
    sub(c, 1, "mem.w")
    c.close()
    wait_sources(b, (1, 1, 0, 0))


def test_shutdown_while_a_source_lingers(bridge_factory):
    """SIGTERM with a source lingering (and one about to run out): a clean, prompt exit; the
    linger thread is joined before the loops and connectors go (ASan checks the rest)."""
    b = bridge_factory({"limits": {"source_linger_ms": 60000}})
    c = b.connect()
    sub(c, 1, "mem.s1")
    c.close()
    wait_sources(b, (1, 0, 0, 1))
    t0 = time.monotonic()
    assert b.stop() == 0
    assert time.monotonic() - t0 < 10
