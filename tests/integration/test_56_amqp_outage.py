"""AMQP broker outage: `rabbitmqctl stop_app` / `start_app` on the session's real node while
clients consume. /readyz turns 503 naming the connector, then 200; the connector reconnects
with backoff and re-opens every subscription; work-queue delivery resumes and nothing acked
is lost (every message acked at least once, the broker ends at 0 ready, 0 unacked); an
exchange subscription gets what is published after the restart."""

# ctest: lock=heavy cost=20  (scheduling: docs/testing.md)

import asyncio
import json
import time

import pika

from amqp_helpers import amqp_overrides, scale
from kafka_helpers import ws_open, ws_request

CHANNELS = [
    {"match": "jobs", "connector": "r", "queue": "wsb.durable-jobs", "delivery": "ack",
     "max_unacked": 20},
    {"match": "fan.*", "connector": "r", "exchange": "wsb.durable-fan", "binding_key": "fan.{1}"},
]


def publish(rabbitmq, exchange, rk, ids):
    conn = rabbitmq.connection()
    try:
        ch = conn.channel()
        for i in ids:
            ch.basic_publish(exchange, rk, json.dumps({"i": i}).encode(),
                             properties=pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def wait_ready(b, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = b.readyz()
        if status == want:
            return body
        assert time.monotonic() < deadline, "readyz stayed %d: %r" % (status, body)
        time.sleep(0.05)


def test_broker_restart_mid_stream(rabbitmq, bridge_factory):
    conn = rabbitmq.connection()
    ch = conn.channel()
    ch.queue_declare("wsb.durable-jobs", durable=True)
    ch.queue_purge("wsb.durable-jobs")
    ch.exchange_declare("wsb.durable-fan", "topic", durable=True)
    conn.close()
    b = bridge_factory(amqp_overrides(rabbitmq.url, CHANNELS))
    assert wait_ready(b, 200)
    n = scale(2000, 4)
    acked, fan = set(), []
    publish(rabbitmq, "", "wsb.durable-jobs", range(n))
    loop_state = {"outage_done": False}

    async def run():
        w = await ws_open(b.ws_url)
        f = await ws_open(b.ws_url)
        r = await ws_request(w, {"op": "subscribe", "id": 1, "channel": "jobs"})
        assert r["type"] == "subscribed", r
        r = await ws_request(f, {"op": "subscribe", "id": 1, "channel": "fan.a"})
        assert r["type"] == "subscribed", r

        async def worker():
            deadline = time.monotonic() + 90
            while len(acked) < 2 * n and time.monotonic() < deadline:
                try:
                    m = json.loads(await asyncio.wait_for(w.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                if m.get("type") != "message":
                    continue
                # Half done: hold this delivery (and the prefetch behind it) unacked until the
                # broker has restarted, so the outage always hits mid-stream.
                while not loop_state["outage_done"] and len(acked) >= n // 2:
                    await asyncio.sleep(0.05)
                acked.add(m["data"]["i"])
                await w.send(json.dumps({"op": "ack", "channel": "jobs",
                                         "ack_id": m["ack_id"]}))

        async def fanout():
            deadline = time.monotonic() + 90
            while len(fan) < n and time.monotonic() < deadline:
                try:
                    m = json.loads(await asyncio.wait_for(f.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                if m.get("type") == "message":
                    fan.append(m["data"]["i"])

        async def outage():
            ex = asyncio.get_running_loop().run_in_executor
            while len(acked) < n // 4:
                await asyncio.sleep(0.05)
            await ex(None, rabbitmq.ctl, "stop_app")
            body = await ex(None, wait_ready, b, 503)
            assert b'"r"' in body, body  # names the connector
            mid = len(acked)
            await ex(None, rabbitmq.ctl, "start_app")
            await ex(None, rabbitmq.wait_running)
            await ex(None, wait_ready, b, 200)
            loop_state["outage_done"] = True
            # more work and fan-out messages after the restart
            await ex(None, publish, rabbitmq, "", "wsb.durable-jobs", range(n, 2 * n))
            await asyncio.sleep(0.5)  # the exchange subscription is re-bound by now
            await ex(None, publish, rabbitmq, "wsb.durable-fan", "fan.a", range(n))
            return mid

        results = await asyncio.gather(worker(), fanout(), outage())
        await w.close()
        await f.close()
        return results[2]

    mid = asyncio.run(run())
    assert mid < n, "the outage came after all the work was done: not mid-stream"
    assert acked == set(range(2 * n)), "lost: %r" % sorted(set(range(2 * n)) - acked)[:20]
    assert fan == list(range(n)), fan[:20]
    deadline = time.monotonic() + 10
    while rabbitmq.queue_counts("wsb.durable-jobs") != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rabbitmq.queue_counts("wsb.durable-jobs") == (0, 0)
    m = b.metrics()
    assert m.value("wsbridge_connector_up", connector="r") == 1


def test_resource_alarm_blocks_publishes_not_consumers(rabbitmq, bridge_factory):
    """A broker memory alarm blocks the connection that publishes (connection.blocked): the
    publish in flight waits for the alarm to end, later ones fail fast with publish_failed, and
    deliveries and acks go on (they use another connection); afterwards publishing works."""
    conn = rabbitmq.connection()
    ch = conn.channel()
    ch.queue_declare("wsb.alarm-jobs")
    ch.queue_purge("wsb.alarm-jobs")
    conn.close()
    publish(rabbitmq, "", "wsb.alarm-jobs", range(50))
    b = bridge_factory(amqp_overrides(rabbitmq.url, [
        {"match": "jobs", "connector": "r", "queue": "wsb.alarm-jobs", "delivery": "ack",
         "max_unacked": 5}]))
    c = b.connect()
    assert c.request({"op": "subscribe", "id": 1, "channel": "jobs"})["type"] == "subscribed"
    replies = {}

    def take(n, timeout=10):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            try:
                m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            except OSError:  # timed out
                break
            if m.get("type") == "message":
                out.append(m)
            elif "id" in m:
                replies[m["id"]] = m
        return out

    def reply(rid, timeout=15):
        deadline = time.monotonic() + timeout
        while rid not in replies and time.monotonic() < deadline:
            held.extend(take(1, timeout=0.2))
        return replies.get(rid)

    held = take(5)
    assert len(held) == 5
    rabbitmq.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        time.sleep(1.0)
        c.send_json({"op": "publish", "id": 2, "channel": "jobs", "data": {"i": 99}})
        assert b.wait_log(lambda r: r.get("msg") == "amqp publishing blocked", timeout=15), \
            "no connection.blocked"
        c.send_json({"op": "publish", "id": 3, "channel": "jobs", "data": {"i": 98}})
        r = reply(3)
        assert r and r["type"] == "error" and r["code"] == "publish_failed", r
        assert "blocking" in r["message"], r
        assert 2 not in replies, replies  # waits for the broker
        got = []
        for _ in range(20):  # consumption and acks go on during the alarm
            got += [m["data"]["i"] for m in held]
            for m in held:
                c.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
            if len(got) >= 50:
                break
            held = take(5)
        assert sorted(got) == list(range(50)), got
        held = []
    finally:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")
    r = reply(2)
    assert r and r["type"] == "published", r
    assert b.wait_log(lambda r: r.get("msg") == "amqp publishing unblocked", timeout=15)
    c.send_json({"op": "publish", "id": 4, "channel": "jobs", "data": {"i": 100}})
    r = reply(4)
    assert r and r["type"] == "published", r
    held += take(2 - len(held))
    assert sorted(m["data"]["i"] for m in held) == [99, 100], held
    for m in held:
        c.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
    deadline = time.monotonic() + 10
    while rabbitmq.queue_counts("wsb.alarm-jobs") != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rabbitmq.queue_counts("wsb.alarm-jobs") == (0, 0)
