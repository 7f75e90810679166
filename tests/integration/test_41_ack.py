"""`delivery: ack` channels through the bridge (SPEC §5 Delivery), on the memory connector:
each message goes to one subscriber at a time, a client can only ack what it was given, and
what a client leaves unacked when it goes away goes back to the broker and is redelivered."""

# ctest: cost=13  (scheduling: docs/testing.md)

import time

import pytest

ACK_CHANNELS = [{"match": "jobs", "connector": "m", "topic": "jobs", "delivery": "ack",
                 "max_unacked": 10},
                {"match": "mem.**", "connector": "m", "topic": "mem-{1}"}]


def recv_messages(c, n, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        if m.get("type") == "message":
            out.append(m)
    return out


def drain(c, quiet=0.5):
    """Messages until the connection is quiet for `quiet` seconds."""
    out = []
    while True:
        try:
            m = c.recv_json(timeout=quiet)
        except OSError:
            return out
        if m.get("type") == "message":
            out.append(m)


@pytest.fixture
def ab(bridge_factory):
    b = bridge_factory({"channels": ACK_CHANNELS})  # 2 workers (the default config)
    a, bb, pub = b.connect(), b.connect(), b.connect()
    for c in (a, bb):
        r = c.request({"op": "subscribe", "id": 1, "channel": "jobs"})
        assert r["type"] == "subscribed", r
    return b, a, bb, pub


def publish(pub, n, start=0):
    for i in range(start, start + n):
        r = pub.request({"op": "publish", "id": i, "channel": "jobs", "data": {"job": i}})
        assert r["type"] == "published", r


def test_each_message_to_one_subscriber_with_ack_id(ab):
    b, a, bb, pub = ab
    publish(pub, 6)
    got_a, got_b = drain(a), drain(bb)
    jobs = sorted(m["data"]["job"] for m in got_a + got_b)
    assert jobs == list(range(6)), (got_a, got_b)
    assert got_a and got_b, "round robin should give both subscribers work"
    for m in got_a + got_b:
        assert "ack_id" in m, m
    for c, got in ((a, got_a), (bb, got_b)):
        for m in got:
            c.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
    # acks have no reply; nothing is redelivered
    assert drain(a) == [] and drain(bb) == []


def test_cannot_ack_another_clients_delivery(ab):
    b, a, bb, pub = ab
    publish(pub, 2)
    got_a, got_b = drain(a), drain(bb)
    assert len(got_a) == 1 and len(got_b) == 1, (got_a, got_b)
    r = bb.request({"op": "ack", "id": "x", "channel": "jobs", "ack_id": got_a[0]["ack_id"]})
    assert r["type"] == "error" and r["code"] == "invalid_request" and r["id"] == "x", r
    # an ack on a broadcast channel is refused too
    bb.request({"op": "subscribe", "id": 2, "channel": "mem.q"})
    r = bb.request({"op": "ack", "id": "y", "channel": "mem.q", "ack_id": 1})
    assert r["type"] == "error" and r["id"] == "y", r


def test_unacked_deliveries_return_when_a_client_leaves(ab):
    b, a, bb, pub = ab
    publish(pub, 4)
    got_a, got_b = drain(a), drain(bb)
    assert len(got_a) + len(got_b) == 4
    for m in got_a:
        a.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
    left = sorted(m["data"]["job"] for m in got_b)
    bb.close_handshake(1000)  # goes away without acking
    again = recv_messages(a, len(left))
    assert sorted(m["data"]["job"] for m in again) == left, (left, again)


def test_nack_requeue_redelivers(ab):
    b, a, bb, pub = ab
    bb.request({"op": "unsubscribe", "id": 9, "channel": "jobs"})
    publish(pub, 1)
    m = recv_messages(a, 1)[0]
    a.send_json({"op": "nack", "channel": "jobs", "ack_id": m["ack_id"], "requeue": True})
    m2 = recv_messages(a, 1)[0]
    assert m2["data"] == m["data"]
    a.send_json({"op": "ack", "channel": "jobs", "ack_id": m2["ack_id"]})
    assert drain(a) == []


def test_exactly_one_client_across_worker_loops(bridge_factory):
    """An ack source shared by several loops must not deliver one copy per loop: 6 clients
    over the 2 workers, every message delivered exactly once in all."""
    b = bridge_factory({"channels": ACK_CHANNELS})
    subs = [b.connect() for _ in range(6)]
    for c in subs:
        assert c.request({"op": "subscribe", "id": 1, "channel": "jobs"})["type"] == "subscribed"
    pub = b.connect()
    got = []
    for k in range(3):  # each round: 20 jobs, acked, so max_unacked never binds
        publish(pub, 20, start=20 * k)
        for c in subs:
            for m in drain(c, quiet=0.3):
                got.append(m["data"]["job"])
                c.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
    assert sorted(got) == list(range(60)), sorted(got)


def test_one_client_that_never_acks_does_not_stall_the_others(bridge_factory):
    """max_unacked (10) is per subscription: a client holding 10 unacked deliveries gets no
    more, and every other message goes to the client that acks."""
    b = bridge_factory({"channels": ACK_CHANNELS})
    lazy, busy, pub = b.connect(), b.connect(), b.connect()
    for c in (lazy, busy):
        assert c.request({"op": "subscribe", "id": 1, "channel": "jobs"})["type"] == "subscribed"
    publish(pub, 50)
    held = drain(lazy, quiet=0.3)
    done = []
    deadline = time.monotonic() + 10
    while len(done) + len(held) < 50 and time.monotonic() < deadline:
        for m in drain(busy, quiet=0.3):
            done.append(m["data"]["job"])
            busy.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
        held += drain(lazy, quiet=0.1)
    assert len(held) == 10, len(held)
    assert sorted(done + [m["data"]["job"] for m in held]) == list(range(50))
