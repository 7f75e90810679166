"""Send-buffer policy details (issue 8, scope 6), on the memory connector with a client that
does not read (SO_RCVBUF 4096), 8 KB messages:

- the periodic check (a queue over soft_bytes for soft_seconds while no new message
  arrives) acts with the channel's own `policy`, as delivery does: a `drop_oldest` channel
  under a global `disconnect` policy gets gaps, not 4408;
- frames still queued for a subscription that ends (unsubscribe) do not go out: after the
  `unsubscribed` reply no message of the channel arrives, and most of the backlog never
  does;
- `drop_oldest` never drops a `delivery: ack` message: every job reaches the slow client,
  while the other channel's messages are dropped with exact `gap` counts.
"""

# ctest: cost=14  (scheduling: docs/testing.md)

import time

from flow_helpers import drain_messages, slow_client

PAD = "x" * 8000
# The kernel buffers up to 4 MiB for a client that does not read (tcp_wmem max): each test
# queues more than that, so that the bridge's own queue holds a backlog.


def publish_many(pub, channel, n, window=32, start=0):
    """Publishes n messages {"i": start + k, "pad": ...} with at most `window` awaiting
    `published`."""
    sent = acked = 0
    while acked < n:
        while sent < n and sent - acked < window:
            pub.send_json({"op": "publish", "id": sent, "channel": channel,
                           "data": {"i": start + sent, "pad": PAD}})
            sent += 1
        r = pub.recv_json(timeout=10)
        assert r.get("type") == "published", r
        acked += 1


def check_exact(msgs, channel, total):
    """Messages of `channel` plus its gap counts are `total`, in order, each gap exactly the
    hole it precedes."""
    last, pending, got = -1, 0, 0
    for m in msgs:
        if m.get("channel") != channel:
            continue
        if m.get("type") == "gap":
            pending += m["dropped"]
        elif m.get("type") == "message":
            i = m["data"]["i"]
            assert i - last - 1 == pending, "gap of %d before %d (last %d)" % (pending, i, last)
            last, pending, got = i, 0, got + 1
    assert total - 1 - last == pending, "trailing gap %d after %d" % (pending, last)
    return got


def test_periodic_check_uses_the_channel_policy(bridge_factory):
    b = bridge_factory({
        "channels": [{"match": "lazy.**", "connector": "m", "topic": "lazy-{1}",
                      "policy": "drop_oldest"},
                     {"match": "mem.**", "connector": "m", "topic": "mem-{1}"}],
        "limits": {"send_buffer": {"soft_bytes": 65536, "soft_seconds": 1,
                                   "hard_bytes": 64 << 20, "policy": "disconnect"},
                   "ping_interval_ms": 120000}})
    stalled = slow_client(b)
    assert stalled.request({"op": "subscribe", "id": 1, "channel": "lazy.x"})["type"] == \
        "subscribed"
    pub = b.connect()
    publish_many(pub, "lazy.x", 1000)
    # Nothing new arrives; the periodic check (every 0.5 s) finds the queue over soft_bytes
    # for longer than soft_seconds.
    time.sleep(2.5)
    m = b.metrics()
    assert m.value("wsbridge_disconnects_total", 0, code="4408") == 0
    assert m.value("wsbridge_messages_dropped_total", 0, reason="slow_consumer") > 0, \
        "the periodic check did not act"
    msgs = drain_messages(stalled, idle=2.0)
    assert stalled.closed_with is None, stalled.closed_with
    got = check_exact(msgs, "lazy.x", 1000)
    m = b.metrics()
    dropped = m.value("wsbridge_messages_dropped_total", 0, reason="slow_consumer")
    assert got + dropped == 1000, (got, dropped)
    assert m.value("wsbridge_disconnects_total", 0, code="4408") == 0
    stalled.close()


def test_unsubscribe_purges_queued_messages(bridge_factory):
    b = bridge_factory({"limits": {"send_buffer": {"soft_bytes": 32 << 20, "soft_seconds": 60,
                                                   "hard_bytes": 64 << 20},
                                   "ping_interval_ms": 120000}})
    stalled = slow_client(b)
    assert stalled.request({"op": "subscribe", "id": 1, "channel": "mem.purge"})["type"] == \
        "subscribed"
    pub = b.connect()
    publish_many(pub, "mem.purge", 2000)
    m = b.wait_metric("wsbridge_send_buffer_bytes", lambda v: v > 4000000, timeout=5)
    assert m.value("wsbridge_send_buffer_bytes") > 4000000
    stalled.send_json({"op": "unsubscribe", "id": 2, "channel": "mem.purge"})
    msgs = drain_messages(stalled, idle=2.0,
                          done=lambda ms: any(x.get("type") == "unsubscribed" for x in ms))
    assert msgs and msgs[-1].get("type") == "unsubscribed" and msgs[-1].get("id") == 2, \
        msgs[-3:]
    data = [x for x in msgs if x.get("type") == "message"]
    after = drain_messages(stalled, idle=1.0)
    assert after == [], "after unsubscribed: %r" % after[:3]
    print("%d of 2000 messages went out before the unsubscribe took effect" % len(data))
    assert len(data) < 1000, "%d queued messages still went out" % len(data)
    assert [x["data"]["i"] for x in data] == list(range(len(data)))
    m = b.wait_metric("wsbridge_send_buffer_bytes", lambda v: v == 0, timeout=3)
    assert m.value("wsbridge_send_buffer_bytes") == 0
    stalled.close()


def test_drop_oldest_never_drops_ack_deliveries(bridge_factory):
    b = bridge_factory({
        "channels": [{"match": "jobs", "connector": "m", "topic": "jobs", "delivery": "ack",
                      "max_unacked": 1000},
                     {"match": "mem.**", "connector": "m", "topic": "mem-{1}"}],
        "limits": {"send_buffer": {"soft_bytes": 262144, "soft_seconds": 1,
                                   "hard_bytes": 1 << 20, "policy": "drop_oldest"},
                   "ping_interval_ms": 120000}})
    stalled = slow_client(b)
    for i, ch in enumerate(("jobs", "mem.flood")):
        r = stalled.request({"op": "subscribe", "id": i, "channel": ch})
        assert r["type"] == "subscribed", r
    pub = b.connect()
    # flood 0..599 fills the kernel's buffer, the jobs wait in the bridge's queue, then
    # flood 600..1199 pushes the queue over hard_bytes: drop_oldest must skip the jobs
    publish_many(pub, "mem.flood", 600)
    publish_many(pub, "jobs", 100)
    publish_many(pub, "mem.flood", 600, start=600)
    m = b.wait_metric("wsbridge_messages_dropped_total", lambda v: v > 0, timeout=5,
                      reason="slow_consumer")
    msgs = drain_messages(stalled, idle=2.0)
    # read after the client got everything: deliveries trail the publish confirmations
    dropped = b.metrics().value("wsbridge_messages_dropped_total", 0, reason="slow_consumer")
    assert stalled.closed_with is None, stalled.closed_with
    jobs = [x for x in msgs if x.get("channel") == "jobs" and x.get("type") == "message"]
    assert not [x for x in msgs if x.get("channel") == "jobs" and x.get("type") == "gap"]
    assert sorted(x["data"]["i"] for x in jobs) == list(range(100)), \
        "%d of 100 ack deliveries arrived" % len(jobs)
    assert all("ack_id" in x for x in jobs)
    got = check_exact(msgs, "mem.flood", 1200)
    assert got + dropped == 1200, (got, dropped)
    stalled.close()
