"""AMQP connector end to end against a real rabbitmq-server (the session's `rabbitmq` node),
pika on the broker side, WebSocket clients on the other, the bridge with 2 workers in between.

Covers: exchange fan-out (20 clients x 5,000 messages, each all in order, headers and
content-type carried); a work queue (5,000 messages over 4 acking clients, each delivered to
exactly one; a client leaving with 100 unacked loses none; the broker's counts end at 0 ready,
0 unacked); publish confirmed then read back by pika with headers intact; unroutable and
unknown-exchange publishes get publish_failed; `from` other than latest is unsupported; a
missing queue is unavailable. Loads scale down under the sanitizer pass (WSB_SANITIZED=1).
"""

# ctest: lock=heavy cost=28  (scheduling: docs/testing.md)

import asyncio
import json
import socket
import threading
import time

import pika

from amqp_helpers import amqp_overrides, scale
from kafka_helpers import ws_open, ws_request

CHANNELS = [
    {"match": "fan.*", "connector": "r", "exchange": "wsb.fan", "binding_key": "fan.{1}"},
    {"match": "jobs", "connector": "r", "queue": "wsb.jobs", "delivery": "ack",
     "max_unacked": 100},
    {"match": "out.*", "connector": "r", "exchange": "wsb.out", "routing_key": "out.{1}"},
    {"match": "ghost", "connector": "r", "exchange": "wsb.ghost", "routing_key": "x"},
    {"match": "noq", "connector": "r", "queue": "wsb.no-such-queue"},
]


def start(rabbitmq, bridge_factory):
    return bridge_factory(amqp_overrides(rabbitmq.url, CHANNELS))


def publish_all(rabbitmq, exchange, routing_key, n, props=None):
    conn = rabbitmq.connection()
    try:
        ch = conn.channel()
        for i in range(n):
            ch.basic_publish(exchange, routing_key, json.dumps({"i": i}).encode(),
                             properties=props)
    finally:
        conn.close()


async def read_messages(ws, n, timeout=60.0, on_message=None):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, "got %d of %d messages" % (len(out), n)
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if m.get("type") == "message":
            out.append(m)
            if on_message:
                await on_message(ws, m)
    return out


def test_exchange_fanout_every_client_gets_everything_in_order(rabbitmq, bridge_factory):
    b = start(rabbitmq, bridge_factory)
    conn = rabbitmq.connection()
    conn.channel().exchange_declare("wsb.fan", "topic")
    conn.close()
    nclients, nmsgs = scale(20, 2), scale(5000, 5)
    props = pika.BasicProperties(content_type="application/json",
                                 headers={"origin": "pika", "timestamp_in_ms": 1700000000123})

    async def run():
        clients = [await ws_open(b.ws_url) for _ in range(nclients)]
        for c in clients:
            r = await ws_request(c, {"op": "subscribe", "id": 1, "channel": "fan.t"})
            assert r["type"] == "subscribed", r
        pub = asyncio.get_running_loop().run_in_executor(
            None, publish_all, rabbitmq, "wsb.fan", "fan.t", nmsgs, props)
        got = await asyncio.gather(*[read_messages(c, nmsgs) for c in clients])
        await pub
        # nothing more than published
        await asyncio.sleep(0.3)
        for c in clients:
            try:
                extra = await asyncio.wait_for(c.recv(), 0.05)
                raise AssertionError("extra message %r" % extra)
            except asyncio.TimeoutError:
                pass
            await c.close()
        return got

    got = asyncio.run(run())
    for msgs in got:
        assert [m["data"]["i"] for m in msgs] == list(range(nmsgs))
    m = got[0][0]
    assert m["channel"] == "fan.t" and m["key"] == "fan.t", m
    assert m["headers"] == {"content-type": "application/json", "origin": "pika",
                            "timestamp_in_ms": "1700000000123"}, m
    assert m["timestamp"] == 1700000000123, m
    # read once upstream: one consumer queue however many subscribers
    m = b.metrics()
    assert m.value("wsbridge_messages_in_total", connector="r") == nmsgs
    assert m.value("wsbridge_connector_up", connector="r") == 1


def test_work_queue_each_message_to_one_client_none_lost(rabbitmq, bridge_factory):
    b = start(rabbitmq, bridge_factory)
    conn = rabbitmq.connection()
    ch = conn.channel()
    ch.queue_declare("wsb.jobs")
    ch.queue_purge("wsb.jobs")
    conn.close()
    n = scale(5000, 5)
    acked = []

    async def ack(ws, m):
        acked.append(m["data"]["i"])
        await ws.send(json.dumps({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]}))

    async def run():
        # A client takes 100 (its max_unacked: the broker's prefetch) and leaves without acking.
        quitter = await ws_open(b.ws_url)
        r = await ws_request(quitter, {"op": "subscribe", "id": 1, "channel": "jobs"})
        assert r["type"] == "subscribed", r
        await asyncio.get_running_loop().run_in_executor(None, publish_all, rabbitmq, "",
                                                         "wsb.jobs", n)
        held = await read_messages(quitter, 100)
        try:  # prefetch: no 101st delivery while 100 are unacked
            extra = await asyncio.wait_for(quitter.recv(), 0.5)
            raise AssertionError("delivery past max_unacked: %r" % extra)
        except asyncio.TimeoutError:
            pass
        assert rabbitmq.queue_counts("wsb.jobs") == (n - 100, 100)

        workers = [await ws_open(b.ws_url) for _ in range(4)]
        for w in workers:
            r = await ws_request(w, {"op": "subscribe", "id": 1, "channel": "jobs"})
            assert r["type"] == "subscribed", r
        await quitter.close()
        counts = [0] * 4

        async def work(k, w):
            while len(acked) < n:
                try:
                    m = json.loads(await asyncio.wait_for(w.recv(), 1.0))
                except asyncio.TimeoutError:
                    continue
                if m.get("type") == "message":
                    counts[k] += 1
                    await ack(w, m)

        await asyncio.wait_for(asyncio.gather(*[work(k, w) for k, w in enumerate(workers)]),
                               120)
        await asyncio.sleep(0.5)
        for w in workers:
            await w.close()
        return held, counts

    held, counts = asyncio.run(run())
    assert len(acked) == n and sorted(acked) == list(range(n)), "duplicates or gaps"
    assert set(m["data"]["i"] for m in held) <= set(acked)
    assert all(c > 0 for c in counts), counts
    deadline = time.monotonic() + 10
    while rabbitmq.queue_counts("wsb.jobs") != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rabbitmq.queue_counts("wsb.jobs") == (0, 0)


def test_publish_confirmed_and_read_back(rabbitmq, bridge_factory):
    b = start(rabbitmq, bridge_factory)
    conn = rabbitmq.connection()
    ch = conn.channel()
    ch.exchange_declare("wsb.out", "topic")
    ch.queue_declare("wsb.out.q")
    ch.queue_purge("wsb.out.q")
    ch.queue_bind("wsb.out.q", "wsb.out", "out.#")
    c = b.connect()
    r = c.request({"op": "publish", "id": 7, "channel": "out.x", "data": {"hello": [1, 2]},
                   "headers": {"trace": "abc", "content-type": "application/json"}})
    assert r == {"type": "published", "id": 7, "channel": "out.x"}, r
    method, props, body = ch.basic_get("wsb.out.q", auto_ack=True)
    assert method is not None and method.routing_key == "out.x", method
    assert json.loads(body) == {"hello": [1, 2]}
    assert props.content_type == "application/json"
    assert props.headers == {"trace": "abc"}, props.headers
    conn.close()

    # an exchange that does not exist: the broker closes the publish channel
    r = c.request({"op": "publish", "id": 9, "channel": "ghost", "data": 1})
    assert r["type"] == "error" and r["code"] == "publish_failed" and r["id"] == 9, r
    # the publish channel recovers after the broker closed it
    r = c.request({"op": "publish", "id": 10, "channel": "out.y", "data": 2})
    assert r["type"] == "published", r
    assert b.metrics().value("wsbridge_publish_total", result="failed") == 1


def test_unroutable_publish_fails(rabbitmq, bridge_factory):
    b = start(rabbitmq, bridge_factory)
    conn = rabbitmq.connection()
    conn.channel().exchange_declare("wsb.fan", "topic")
    conn.close()
    c = b.connect()
    # fan.* has a binding_key and so a routing key, but no queue is bound while nobody
    # subscribes: mandatory publish comes back
    r = c.request({"op": "publish", "id": 1, "channel": "fan.lonely", "data": {"x": 1}})
    assert r["type"] == "error" and r["code"] == "publish_failed", r
    assert "unroutable" in r["message"], r
    r = c.request({"op": "publish", "id": 2, "channel": "fan.lonely", "data": {"x": 1},
                   "key": "k"})
    assert r["type"] == "error" and r["code"] == "publish_failed", r
    # a header name AMQP cannot encode (short string) is refused; the connection stays up
    r = c.request({"op": "publish", "id": 3, "channel": "fan.lonely", "data": 1,
                   "headers": {"h" * 300: "v"}})
    assert r["type"] == "error" and r["code"] == "publish_failed" and "255" in r["message"], r
    assert b.readyz()[0] == 200
    assert [x["msg"] for x in b.log_records() if x.get("msg") == "amqp down"] == []


def test_refusals(rabbitmq, bridge_factory):
    b = start(rabbitmq, bridge_factory)
    c = b.connect()
    r = c.request({"op": "subscribe", "id": 1, "channel": "fan.t", "from": "earliest"})
    assert r["type"] == "error" and r["code"] == "unsupported" and r["id"] == 1, r
    r = c.request({"op": "subscribe", "id": 2, "channel": "noq"})
    assert r["type"] == "error" and r["code"] == "unavailable" and r["id"] == 2, r
    assert "no-such-queue" in r["message"], r
    # the connection survives a refused source
    assert b.readyz()[0] == 200
    r = c.request({"op": "subscribe", "id": 3, "channel": "fan.t"})
    assert r["type"] == "subscribed", r


def test_heartbeats_keep_an_idle_connection(rabbitmq, bridge_factory):
    """heartbeat_s 1: the broker closes a connection that stays silent for two intervals, and
    the bridge one whose broker does; 3.5 s idle must leave the first connection in place."""
    b = bridge_factory(amqp_overrides(rabbitmq.url, CHANNELS, conn={"heartbeat_s": 1}))
    c = b.connect()
    assert c.request({"op": "subscribe", "id": 1, "channel": "fan.hb"})["type"] == "subscribed"
    time.sleep(3.5)
    assert b.readyz()[0] == 200
    ups = [r for r in b.log_records() if r.get("msg") in ("amqp up", "amqp down")]
    assert [r["msg"] for r in ups] == ["amqp up"], ups
    assert "\t1\n" in rabbitmq.ctl("list_connections", "name", "timeout")


class Relay:
    """A TCP relay to the broker whose existing connections can be silenced: from then on
    nothing the broker sends reaches the bridge, while the connection stays open and the
    bridge's own frames (its heartbeats) still reach the broker: a broker that hangs, which
    only missed heartbeats reveal. Connections made after silence() relay normally."""

    def __init__(self, port):
        self.port_to = port
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.silenced = set()  # ids of the connections whose broker side is dropped
        self.pairs = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.port_to))
            with self.lock:
                self.pairs.append((c, u))
            threading.Thread(target=self._pump, args=(c, u, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, id(c)), daemon=True).start()

    def _pump(self, src, dst, key):
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                if key is not None and key in self.silenced:
                    continue  # swallowed: the bridge hears nothing more
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def silence(self):
        with self.lock:
            self.silenced.update(id(c) for c, _ in self.pairs)

    def close(self):
        self.srv.close()
        with self.lock:
            for pair in self.pairs:
                for s in pair:
                    s.close()


def test_a_silent_broker_is_found_by_missed_heartbeats(rabbitmq, bridge_factory):
    """heartbeat_s 1 through a relay that stops passing the broker's frames (the TCP
    connection stays up): the bridge declares the connection lost for missed heartbeats
    about 2 s later and reconnects (a fresh relayed connection); /readyz is 200 again."""
    relay = Relay(rabbitmq.port)
    try:
        url = rabbitmq.url.replace(":%d/" % rabbitmq.port, ":%d/" % relay.port)
        b = bridge_factory(amqp_overrides(url, CHANNELS, conn={"heartbeat_s": 1}))
        c = b.connect()
        assert c.request({"op": "subscribe", "id": 1, "channel": "fan.hb"})["type"] == "subscribed"
        time.sleep(1.5)  # heartbeats flow: still up
        assert [r["msg"] for r in b.log_records() if r.get("msg") == "amqp down"] == []
        t0 = time.monotonic()
        relay.silence()

        def downs():
            return [r for r in b.log_records() if r.get("msg") == "amqp down"]

        while not downs():
            assert time.monotonic() - t0 < 15, "no amqp down after the broker went silent"
            time.sleep(0.05)
        took = time.monotonic() - t0
        # Found by the connector's check ("missed heartbeats") or by rabbitmq-c's own while
        # it reads ("heartbeat timeout"), whichever looks first: both after two intervals.
        assert "heartbeat" in downs()[0]["reason"], downs()
        assert 1.5 <= took < 6.0, took
        # The reconnect goes through a fresh relayed connection, which is not silenced.
        deadline = time.monotonic() + 20
        while [r["msg"] for r in b.log_records() if r.get("msg") in ("amqp up", "amqp down")][-1] \
                != "amqp up":
            assert time.monotonic() < deadline, "no reconnect"
            time.sleep(0.05)
        assert b.readyz()[0] == 200
    finally:
        relay.close()


def test_check_config_amqp_rules(run_cli, tmp_path):
    cfg = {"connectors": {"r": {"type": "amqp", "url": "amqp://u:${AMQP_PW:-x}@h:5672/%2f",
                                "heartbeat": 5}},
           "channels": [{"match": "a", "connector": "r", "exchange": "e", "queue": "q"},
                        {"match": "b", "connector": "r", "topic": "t"},
                        {"match": "c", "connector": "r", "exchange": "e", "delivery": "ack"},
                        {"match": "d", "connector": "r", "queue": "q", "binding_key": "k"}]}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    r = run_cli(["--check-config", "-c", str(p)])
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    for path in ("connectors.r.heartbeat: unknown key", "channels[0].queue:",
                 "channels[1].topic:", "channels[1].exchange:", "channels[2].delivery:",
                 "channels[3].binding_key:"):
        assert path in out, (path, out)
    cfg = {"connectors": {"r": {"type": "amqp", "url": "amqps://u:p@h/v", "heartbeat_s": 5,
                                "tls": {"verify": False}}},
           "channels": [{"match": "x.*", "connector": "r", "exchange": "e",
                         "binding_key": "k.{1}"},
                        {"match": "jobs", "connector": "r", "queue": "q", "delivery": "ack"}]}
    p.write_text(json.dumps(cfg))
    r = run_cli(["--check-config", "-c", str(p)])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r


def test_more_sources_than_channels_open_more_connections(rabbitmq, bridge_factory):
    """channel_max 4 (3 source channels per consumer connection): 9 acking clients and an
    exchange subscription need 4 consumer connections; each job still goes to exactly one
    client, and the connector stays one unit for readiness."""
    conn = rabbitmq.connection()
    ch = conn.channel()
    ch.queue_declare("wsb.jobs")
    ch.queue_purge("wsb.jobs")
    ch.exchange_declare("wsb.fan", "topic")
    conn.close()
    b = bridge_factory(amqp_overrides(rabbitmq.url, CHANNELS, conn={"channel_max": 4}))
    clients = [b.connect() for _ in range(9)]
    for c in clients:
        r = c.request({"op": "subscribe", "id": 1, "channel": "jobs"})
        assert r["type"] == "subscribed", r
    f = b.connect()
    assert f.request({"op": "subscribe", "id": 1, "channel": "fan.x"})["type"] == "subscribed"
    names = rabbitmq.ctl("list_connections", "client_properties").count("(consume ")
    assert names == 4, rabbitmq.ctl("list_connections", "client_properties")
    publish_all(rabbitmq, "", "wsb.jobs", 90)
    publish_all(rabbitmq, "wsb.fan", "fan.x", 3)
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 90 and time.monotonic() < deadline:
        for c in clients:
            try:
                m = c.recv_json(timeout=0.05)
            except OSError:
                continue
            if m.get("type") == "message":
                got.append(m["data"]["i"])
                c.send_json({"op": "ack", "channel": "jobs", "ack_id": m["ack_id"]})
    assert sorted(got) == list(range(90)), sorted(got)
    assert [f.recv_json(timeout=5)["data"]["i"] for _ in range(3)] == [0, 1, 2]
    assert b.readyz()[0] == 200
