"""`delivery: ack` channels through the bridge (SPEC §5 Delivery), on the memory connector:
each message goes to one subscriber at a time, a client can only ack what it was given, and
what a client leaves unacked when it goes away goes back to the broker and is redelivered."""

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
    b = bridge_factory({"channels": ACK_CHANNELS, "workers": 1})
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
