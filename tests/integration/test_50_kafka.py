"""Kafka connector end to end: real Kafka clients (confluent_kafka) against librdkafka's mock
cluster (wsb-kafka-mock), the bridge in between, WebSocket clients on the other side.

Covers the acceptance criteria of "Kafka connector, channel routing, fan-out hub": fan-out
to 50 clients exactly once and in order per partition with the topic read once upstream;
resume from offsets with no gap and no duplicate; `from` earliest / timestamp / offsets;
pattern routing; unknown channels; the message envelope (key, headers, timestamp,
partition, offset; JSON verbatim, UTF-8 as string, binary as base64); publish confirmed by
the delivery report and read back by a separate consumer.
"""

# ctest: lock=heavy cost=45  (scheduling: docs/testing.md)

import asyncio
import base64
import json
import socket
import time

import pytest

from kafka_helpers import (BackgroundProducer, check_partition_order, kafka_mock,  # noqa: F401
                           kafka_overrides, next_offsets, produce, read_topic, ws_open,
                           ws_request)

# Slow asyncio clients must not be cut off as slow consumers: these tests are about
# delivery, not backpressure.
BIG_BUFFERS = {"send_buffer": {"soft_bytes": 256 << 20, "hard_bytes": 256 << 20,
                               "soft_seconds": 600}}


def big_buffer_overrides(bootstrap, log_level="info"):
    limits = dict(BIG_BUFFERS)
    return kafka_overrides(bootstrap, extra={"limits": limits, "log": {"level": log_level}})


def run(coro, timeout):
    """Runs a coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def recv_messages(c, n, timeout=10.0):
    """Reads n `message`s from a wsclient; fails on anything else or on the deadline."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, "got %d of %d messages within %.0fs: %r" % (len(out), n, timeout,
                                                                   out[-3:])
        m = c.recv_json(timeout=left)
        assert m.get("type") == "message", m
        out.append(m)
    return out


def assert_quiet(c, within=0.5):
    """No further message arrives within `within` seconds."""
    try:
        m = c.recv_json(timeout=within)
    except socket.timeout:
        return
    raise AssertionError("unexpected extra message: %r" % (m,))


def subscribe(c, channel, id_=1, from_=None, timeout=10.0):
    req = {"op": "subscribe", "id": id_, "channel": channel}
    if from_ is not None:
        req["from"] = from_
    c.send_json(req)
    r = c.recv_json(timeout=timeout)
    return r


# ---- 1. fan-out: 50 clients x 10,000 messages ------------------------------------------


N_CLIENTS = 50
N_MSGS = 10000


async def _fanout(ws_url, bootstrap, n_clients=N_CLIENTS, n_msgs=N_MSGS, **ws_kw):
    clients = await asyncio.gather(*[ws_open(ws_url, **ws_kw) for _ in range(n_clients)])
    try:
        replies = await asyncio.gather(*[
            ws_request(ws, {"op": "subscribe", "id": i, "channel": "orders", "from": "latest"})
            for i, ws in enumerate(clients)])
        for i, r in enumerate(replies):
            assert r.get("type") == "subscribed" and r.get("id") == i, r
            assert set(r.get("offsets", {})) == {"0", "1", "2"}, r

        async def reader(ws, idx):
            got = []
            append = got.append
            loads = json.loads
            while len(got) < n_msgs:
                m = loads(await ws.recv())
                if m.get("type") != "message":
                    raise AssertionError("client %d: unexpected %r after %d messages"
                                         % (idx, m, len(got)))
                append((m["partition"], m["offset"], m["data"]["i"]))
            return got

        readers = [asyncio.ensure_future(reader(ws, i)) for i, ws in enumerate(clients)]
        records = [{"value": b'{"i":%d}' % i, "partition": i % 3} for i in range(n_msgs)]
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, produce, bootstrap, "orders", records, 45.0)
        try:
            done, pending = await asyncio.wait(readers, timeout=45)
        finally:
            for t in readers:
                t.cancel()
        got = []
        for i, t in enumerate(readers):
            if t.cancelled() or not t.done():
                raise AssertionError("client %d did not receive all %d messages within 45 s"
                                     % (i, n_msgs))
            got.append(t.result())

        async def extra(ws):
            try:
                return await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                return None

        extras = await asyncio.gather(*[extra(ws) for ws in clients])
        for i, x in enumerate(extras):
            assert x is None, "client %d: message after the %d expected: %r" % (i, n_msgs, x)
        return replies, reports, got
    finally:
        await asyncio.gather(*[ws.close() for ws in clients], return_exceptions=True)


def test_fanout_50_clients_10000_messages_exactly_once_in_order_read_once(kafka_mock,
                                                                          bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(big_buffer_overrides(mc.bootstrap))
    t0 = time.monotonic()
    replies, reports, got = run(_fanout(b.ws_url, mc.bootstrap), 90)
    elapsed = time.monotonic() - t0

    expected = {(r["partition"], r["offset"]): json.loads(r["value"])["i"] for r in reports}
    assert len(expected) == N_MSGS
    first = {}
    for (p, o) in expected:
        first[p] = min(first.get(p, o), o)
    for r in replies:
        # Delivery starts where the subscribed reply said: nothing was produced before.
        assert {int(k): v for k, v in r["offsets"].items()} == {p: first.get(p, 0)
                                                                for p in range(3)}, r
    for idx, msgs in enumerate(got):
        last = {}
        for p, o, i in msgs:
            assert o > last.get(p, -1), "client %d: partition %d offset %d after %d" % (
                idx, p, o, last.get(p, -1))
            last[p] = o
            assert expected.get((p, o)) == i, "client %d: (%d,%d) carried i=%r, expected %r" % (
                idx, p, o, i, expected.get((p, o)))
        # Strictly increasing per partition + every (p, o) produced + same count:
        # the set is complete and nothing came twice.
        assert len(msgs) == N_MSGS, "client %d: %d messages" % (idx, len(msgs))

    m = b.wait_metric("wsbridge_messages_in_total", lambda v: v >= N_MSGS, timeout=5,
                      connector="k")
    assert m.value("wsbridge_messages_in_total", connector="k") == N_MSGS, \
        "upstream must be read once: messages_in{connector=k} = %r" % \
        m.value("wsbridge_messages_in_total", connector="k")
    out = m.value("wsbridge_messages_out_total", 0.0)
    assert out >= N_CLIENTS * N_MSGS, "messages_out_total = %r" % out
    # ARCHITECTURE: a broker message is encoded once per loop (worker), whatever the number
    # of subscribers (these clients do not negotiate permessage-deflate).
    workers = b.config["workers"]
    enc = m.value("wsbridge_frames_encoded_total")
    assert enc is not None, "no wsbridge_frames_encoded_total in /metrics"
    assert N_MSGS <= enc <= workers * N_MSGS, \
        "frames_encoded_total = %r for %d messages on %d workers" % (enc, N_MSGS, workers)
    print("fan-out of %d x %d took %.1f s" % (N_CLIENTS, N_MSGS, elapsed))


def test_fanout_with_permessage_deflate_clients(kafka_mock, bridge_factory):
    """Same checks, smaller, with every client negotiating permessage-deflate (each gets
    its own compressed stream) next to one that does not."""
    n_clients, n_msgs = 8, 2000
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(big_buffer_overrides(mc.bootstrap))

    async def run_all():
        # One producer only: the compressed group produces, the plain client just listens.
        ws_plain = await ws_open(b.ws_url)
        r = await ws_request(ws_plain, {"op": "subscribe", "id": 0, "channel": "orders"})
        assert r.get("type") == "subscribed", r
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        probe = await ws_open(b.ws_url, extensions=[ClientPerMessageDeflateFactory()])
        assert probe.extensions, "permessage-deflate was not negotiated"
        await probe.close()
        res = await _fanout(b.ws_url, mc.bootstrap, n_clients, n_msgs,
                            extensions=[ClientPerMessageDeflateFactory()])
        plain = []
        while len(plain) < n_msgs:
            m = json.loads(await asyncio.wait_for(ws_plain.recv(), 10))
            assert m.get("type") == "message", m
            plain.append((m["partition"], m["offset"], m["data"]["i"]))
        await ws_plain.close()
        return res, plain

    (replies, reports, got), plain = run(run_all(), 60)
    expected = {(r["partition"], r["offset"]): json.loads(r["value"])["i"] for r in reports}
    for idx, msgs in enumerate(got + [plain]):
        last = {}
        for p, o, i in msgs:
            assert o > last.get(p, -1), "client %d: partition %d offset %d after %d" % (
                idx, p, o, last.get(p, -1))
            last[p] = o
            assert expected.get((p, o)) == i, (idx, p, o, i)
        assert len(msgs) == n_msgs, "client %d: %d messages" % (idx, len(msgs))
    m = b.metrics()
    assert m.value("wsbridge_messages_in_total", connector="k") == n_msgs


# ---- 2. resume from offsets ------------------------------------------------------------


async def _resume(ws_url, bootstrap):
    ws = await ws_open(ws_url)
    sub = await ws_request(ws, {"op": "subscribe", "id": 1, "channel": "orders",
                                "from": "latest"})
    assert sub.get("type") == "subscribed" and "offsets" in sub, sub
    prod = BackgroundProducer(bootstrap, "orders", 3, rate=600, duration=4.0)
    prod.start()
    try:
        first = []
        while len(first) < 400:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert m.get("type") == "message", m
            first.append(m)
        # Go away abruptly mid-stream (no unsubscribe), while the producer keeps writing.
        ws.transport.abort()
        await asyncio.sleep(0.7)
        resume_from = next_offsets(first, base=sub["offsets"])
        ws2 = await ws_open(ws_url)
        sub2 = await ws_request(ws2, {"op": "subscribe", "id": 2, "channel": "orders",
                                      "from": {"offsets": resume_from}})
        assert sub2.get("type") == "subscribed", sub2
        assert sub2.get("offsets") == resume_from, (sub2, resume_from)
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, lambda: prod.finish(stop=False))
        missed_expected = len(reports) - len(first)
        second = []
        deadline = time.monotonic() + 20
        while len(second) < missed_expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = json.loads(await asyncio.wait_for(ws2.recv(), left))
            except asyncio.TimeoutError:
                break
            assert m.get("type") == "message", m
            second.append(m)
        # Anything beyond what was produced would be a duplicate: wait a little for it.
        try:
            extra = json.loads(await asyncio.wait_for(ws2.recv(), 0.7))
            second.append(extra)
        except asyncio.TimeoutError:
            pass
        await ws2.close()
        return sub, first, sub2, second, reports
    finally:
        prod.stop()


def test_resume_from_offsets_no_gap_no_duplicate(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(big_buffer_overrides(mc.bootstrap))
    sub, first, sub2, second, reports = run(_resume(b.ws_url, mc.bootstrap), 60)
    produced = {(p, o): i for p, o, i in reports}
    assert len(produced) == len(reports) > 1000, "producer wrote only %d" % len(reports)
    check_partition_order(first, "first session")
    check_partition_order(second, "resumed session")
    seen1 = [(m["partition"], m["offset"]) for m in first]
    seen2 = [(m["partition"], m["offset"]) for m in second]
    for m in first + second:
        assert produced.get((m["partition"], m["offset"])) == m["data"]["i"], m
    dup = set(seen1) & set(seen2)
    assert not dup, "%d messages delivered twice, e.g. %r" % (len(dup), sorted(dup)[:5])
    assert len(seen2) == len(set(seen2)), "duplicates inside the resumed session"
    missing = set(produced) - set(seen1) - set(seen2)
    assert not missing, "%d messages never delivered, e.g. %r (first session %d, resumed %d, " \
        "produced %d)" % (len(missing), sorted(missing)[:5], len(seen1), len(seen2),
                          len(produced))
    assert len(seen1) + len(seen2) == len(produced)


async def _staggered(ws_url, bootstrap, n_clients):
    """Subscribes n_clients one after another (latest) while a producer writes; returns
    (subscribed replies, messages per client, delivery reports)."""
    prod = BackgroundProducer(bootstrap, "orders", 3, rate=800, duration=4.0)
    clients, subs, readers = [], [], []
    inboxes = [[] for _ in range(n_clients)]

    async def reader(ws, box):
        while True:
            m = json.loads(await ws.recv())
            assert m.get("type") == "message", m
            box.append(m)

    def caught_up(box, ends):
        last = {}
        for m in box:
            last[m["partition"]] = m["offset"]
        return all(last.get(p, -1) >= e - 1 for p, e in ends.items())

    prod.start()
    try:
        await asyncio.sleep(0.3)
        for i in range(n_clients):
            ws = await ws_open(ws_url)
            r = await ws_request(ws, {"op": "subscribe", "id": i, "channel": "orders"})
            assert r.get("type") == "subscribed", r
            clients.append(ws)
            subs.append(r)
            readers.append(asyncio.ensure_future(reader(ws, inboxes[i])))
            await asyncio.sleep(0.25)
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, lambda: prod.finish(stop=False))
        ends = {}
        for p, o, _ in reports:
            ends[p] = max(ends.get(p, -1), o + 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for t in readers:
                if t.done():
                    t.result()  # a reader failed: raise its error
            if all(caught_up(box, ends) for box in inboxes):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        return subs, inboxes, reports
    finally:
        prod.stop()
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*[ws.close() for ws in clients], return_exceptions=True)


def test_latest_offsets_are_exact_while_the_topic_is_live(kafka_mock, bridge_factory):
    """Clients subscribing one after another with `latest` while a producer writes: each
    `subscribed.offsets` is exactly where that client's delivery starts, and from there it
    gets every record to the end of the log (no gap, no duplicate, nothing earlier)."""
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(big_buffer_overrides(mc.bootstrap))
    subs, results, reports = run(_staggered(b.ws_url, mc.bootstrap, 10), 60)
    ends = {}
    for p, o, _ in reports:
        ends[p] = max(ends.get(p, -1), o + 1)
    assert len(reports) > 2000, len(reports)
    for idx, (sub, got) in enumerate(zip(subs, results)):
        per = check_partition_order(got, "client %d" % idx)
        for p in range(3):
            start = sub["offsets"][str(p)]
            want = list(range(start, ends[p]))
            have = per.get(p, [])
            assert have == want, "client %d partition %d: subscribed at %d, got %r..%r (%d), " \
                "want %d..%d (%d)" % (idx, p, start, have[:3], have[-3:], len(have), start,
                                      ends[p] - 1, len(want))


# ---- 3. from, routing, envelope --------------------------------------------------------


def test_from_earliest_replays_from_the_start(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    reports = produce(mc.bootstrap, "orders",
                      [{"value": b'{"n":%d}' % i, "partition": i % 3} for i in range(30)])
    c = b.connect()
    r = subscribe(c, "orders", from_="earliest")
    assert r.get("type") == "subscribed", r
    assert r.get("offsets") == {"0": 0, "1": 0, "2": 0}, r
    msgs = recv_messages(c, 30)
    check_partition_order(msgs, "earliest")
    assert sorted((m["partition"], m["offset"], m["data"]["n"]) for m in msgs) == \
        sorted((x["partition"], x["offset"], json.loads(x["value"])["n"]) for x in reports)
    assert_quiet(c)
    # A "latest" subscriber on another connection sees none of the old messages, and its
    # offsets are the end of every partition.
    c2 = b.connect()
    r2 = subscribe(c2, "orders", from_="latest")
    assert r2.get("offsets") == {"0": 10, "1": 10, "2": 10}, r2
    assert_quiet(c2)
    more = produce(mc.bootstrap, "orders", [{"value": b'{"n":99}', "partition": 2}])
    m2 = recv_messages(c2, 1)[0]
    assert (m2["partition"], m2["offset"], m2["data"]) == (2, more[0]["offset"], {"n": 99})
    m1 = recv_messages(c, 1)[0]
    assert (m1["partition"], m1["offset"]) == (2, 10)


def test_from_offsets_starts_exactly_there(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    produce(mc.bootstrap, "orders",
            [{"value": b'{"n":%d}' % i, "partition": i % 3} for i in range(30)])
    c = b.connect()
    r = subscribe(c, "orders", from_={"offsets": {"0": 7, "1": 10, "2": 3}})
    assert r.get("type") == "subscribed", r
    assert r.get("offsets") == {"0": 7, "1": 10, "2": 3}, r
    msgs = recv_messages(c, 3 + 0 + 7)
    per = check_partition_order(msgs, "offsets")
    assert per == {0: [7, 8, 9], 2: [3, 4, 5, 6, 7, 8, 9]}, per
    assert_quiet(c)


def test_replay_next_to_a_live_subscriber(kafka_mock, bridge_factory):
    """A late `earliest` subscriber on a topic already read live: it gets the history then
    the live stream, and the live subscriber sees no replayed record."""
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    produce(mc.bootstrap, "orders",
            [{"value": b'{"n":%d}' % i, "partition": i % 3} for i in range(30)])
    live = b.connect()
    r1 = subscribe(live, "orders", from_="latest")
    assert r1.get("offsets") == {"0": 10, "1": 10, "2": 10}, r1
    late = b.connect()
    r2 = subscribe(late, "orders", from_="earliest")
    assert r2.get("offsets") == {"0": 0, "1": 0, "2": 0}, r2
    reports = produce(mc.bootstrap, "orders",
                      [{"value": b'{"n":%d}' % i, "partition": i % 3} for i in range(30, 60)])
    assert sorted((x["partition"], x["offset"]) for x in reports) == \
        sorted((p, o) for p in range(3) for o in range(10, 20))
    got_live = recv_messages(live, 30)
    per = check_partition_order(got_live, "live")
    assert per == {p: list(range(10, 20)) for p in range(3)}, per
    got_late = recv_messages(late, 60)
    per = check_partition_order(got_late, "late")
    assert per == {p: list(range(0, 20)) for p in range(3)}, per
    for m in got_live + got_late:
        assert m["data"]["n"] % 3 == m["partition"], m
    assert_quiet(live)
    assert_quiet(late, 0.2)


def test_unsubscribe_stops_delivery_and_resubscribe_works(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    assert subscribe(c, "orders").get("type") == "subscribed"
    produce(mc.bootstrap, "orders", [{"value": b'{"n":1}', "partition": 0}])
    assert recv_messages(c, 1)[0]["offset"] == 0
    c.send_json({"op": "unsubscribe", "id": 5, "channel": "orders"})
    r = c.recv_json(timeout=10)
    assert r == {"type": "unsubscribed", "id": 5, "channel": "orders"}, r
    produce(mc.bootstrap, "orders", [{"value": b'{"n":2}', "partition": 0}])
    assert_quiet(c, 1.5)
    r = subscribe(c, "orders", id_=6, from_={"offsets": {"0": 1}})
    assert r.get("type") == "subscribed", r
    assert r["offsets"]["0"] == 1, r
    m = recv_messages(c, 1)[0]
    assert (m["partition"], m["offset"], m["data"]) == (0, 1, {"n": 2}), m
    assert_quiet(c)


def test_from_timestamp_starts_at_first_message_at_or_after(kafka_mock, bridge_factory):
    from confluent_kafka import Consumer, TopicPartition

    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    base = int(time.time() * 1000) - 600000
    t_split = base + 300000
    old = [{"value": b'{"n":%d}' % i, "partition": i % 3, "timestamp": base + i}
           for i in range(12)]
    new = [{"value": b'{"n":%d}' % (100 + i), "partition": i % 3, "timestamp": t_split + i}
           for i in range(9)]
    produce(mc.bootstrap, "orders", old)
    new_reports = produce(mc.bootstrap, "orders", new)
    want = {}
    for r in new_reports:
        want[r["partition"]] = min(want.get(r["partition"], r["offset"]), r["offset"])
    assert want == {0: 4, 1: 4, 2: 4}

    c = b.connect()
    r = subscribe(c, "orders", from_={"timestamp": t_split})
    assert r.get("type") == "subscribed", r

    # What the cluster itself answers to ListOffsets(timestamp) (a real consumer asks).
    cons = Consumer({"bootstrap.servers": mc.bootstrap, "group.id": "wsb-ts-probe"})
    try:
        answer = cons.offsets_for_times([TopicPartition("orders", p, t_split)
                                         for p in range(3)], timeout=10)
    finally:
        cons.close()
    broker = {tp.partition: tp.offset for tp in answer}
    if broker == want:
        assert r.get("offsets") == {str(p): o for p, o in want.items()}, r
    else:
        # librdkafka's mock cluster answers every ListOffsets-by-time with -1 ("FIXME: by
        # timestamp" in rdkafka_mock_handlers.c), i.e. "no such message". Each partition's
        # last record is after T, so the bridge knows better: it starts at the low watermark
        # (what it reports) and drops the records older than T.
        assert all(v == -1 for v in broker.values()), broker
        assert r.get("offsets") == {"0": 0, "1": 0, "2": 0}, r
    msgs = recv_messages(c, 9)
    for m in msgs:
        assert m["offset"] >= want[m["partition"]], m
    check_partition_order(msgs, "timestamp")
    assert sorted(m["data"]["n"] for m in msgs) == list(range(100, 109))
    assert all(m["timestamp"] >= t_split for m in msgs), msgs
    assert_quiet(c)


def test_future_timestamp_starts_at_the_end(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    produce(mc.bootstrap, "orders", [{"value": b"{}", "partition": p} for p in (0, 1, 1)])
    c = b.connect()
    r = subscribe(c, "orders", from_={"timestamp": int(time.time() * 1000) + 3600000})
    assert r.get("type") == "subscribed", r
    assert r.get("offsets") == {"0": 1, "1": 2, "2": 0}, r
    assert_quiet(c)


def test_pattern_channel_routes_to_templated_topic(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3, "prices-eur": 1})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    r = subscribe(c, "prices.eur")
    assert r.get("type") == "subscribed" and r.get("channel") == "prices.eur", r
    assert r.get("offsets") == {"0": 0}, r
    # Noise on the other topic must not reach this subscriber.
    produce(mc.bootstrap, "orders", [{"value": b'{"o":1}', "partition": 0}])
    rep = produce(mc.bootstrap, "prices-eur", [{"value": b'{"eur":1.08}', "key": b"EURUSD"}])
    m = recv_messages(c, 1)[0]
    assert m["channel"] == "prices.eur", m
    assert m["data"] == {"eur": 1.08} and m["key"] == "EURUSD", m
    assert (m["partition"], m["offset"]) == (rep[0]["partition"], rep[0]["offset"])
    assert_quiet(c)


def test_unknown_channel(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    for i, ch in enumerate(["nothing.routes.here", "prices", "orders.x"]):
        r = subscribe(c, ch, id_=10 + i)
        assert r.get("type") == "error" and r.get("code") == "unknown_channel", (ch, r)
        assert r.get("id") == 10 + i, r
    # The connection is still fine.
    r = subscribe(c, "orders", id_=20)
    assert r.get("type") == "subscribed", r


def test_message_envelope_and_payload_encodings(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    r = subscribe(c, "orders")
    assert r.get("type") == "subscribed", r
    ts = int(time.time() * 1000) - 5000
    binary = bytes([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3])
    records = [
        {"value": b'{"a": [1, 2.50, "x"], "b": null}', "key": b"user-1",
         "headers": [("trace", b"abc"), ("n", b"1")], "partition": 1, "timestamp": ts},
        {"value": "caf\u00e9 not json".encode(), "key": b"k2", "partition": 1,
         "timestamp": ts + 1},
        {"value": binary, "partition": 1, "timestamp": ts + 2},
        {"value": b"12", "partition": 1, "timestamp": ts + 3},
        {"value": b"", "partition": 1, "timestamp": ts + 4},
    ]
    reports = produce(mc.bootstrap, "orders", records)
    msgs = recv_messages(c, len(records))
    for m, rep in zip(msgs, reports):
        assert m["type"] == "message" and m["channel"] == "orders", m
        assert m["partition"] == rep["partition"] and m["offset"] == rep["offset"], (m, rep)
        assert isinstance(m.get("timestamp"), int), m
    j, s, bn, num, empty = msgs
    # JSON verbatim: check the raw frame text preserved the number spelling too.
    assert j["data"] == {"a": [1, 2.5, "x"], "b": None}, j
    assert j["key"] == "user-1", j
    assert j["headers"] == {"trace": "abc", "n": "1"}, j
    assert j["timestamp"] == ts, j
    assert "encoding" not in j, j
    assert s["data"] == "caf\u00e9 not json" and "encoding" not in s, s
    assert s["key"] == "k2" and s["timestamp"] == ts + 1, s
    assert bn.get("encoding") == "base64", bn
    assert base64.b64decode(bn["data"]) == binary, bn
    assert "key" not in bn or bn["key"] is None, bn
    assert num["data"] == 12 and "encoding" not in num, num
    assert empty["data"] == "" and "encoding" not in empty, empty


def test_json_payload_is_forwarded_verbatim(kafka_mock, bridge_factory):
    """The data member is the broker payload byte for byte when it is JSON."""
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    assert subscribe(c, "orders").get("type") == "subscribed"
    payload = b'{"price":2.50,"big":1E2,"s":"\\u00e9"}'
    produce(mc.bootstrap, "orders", [{"value": payload, "partition": 0}])
    deadline = time.monotonic() + 10
    while True:
        op, text = c.recv_message(timeout=max(0.1, deadline - time.monotonic()))
        if json.loads(text).get("type") == "message":
            break
    assert payload in text, text


# ---- 4. publish round trip -------------------------------------------------------------


def test_publish_confirmed_then_read_back_by_a_kafka_consumer(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    c.send_json({"op": "publish", "id": 3, "channel": "orders", "data": {"x": 1},
                 "key": "k1", "headers": {"h": "v"}})
    r = c.recv_json(timeout=15)
    assert r == {"type": "published", "id": 3, "channel": "orders"}, r
    # The delivery report came before `published`: the record is in the log right now.
    msgs = read_topic(mc.bootstrap, "orders", 3, 1, timeout=10)
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m.key() == b"k1", m.key()
    assert json.loads(m.value()) == {"x": 1}, m.value()
    assert m.value() == b'{"x":1}', m.value()
    assert [(k, v) for k, v in (m.headers() or [])] == [("h", b"v")], m.headers()
    m = b.wait_metric("wsbridge_publish_total", lambda v: v >= 1, timeout=5, result="ok")
    assert m.value("wsbridge_publish_total", 0.0, result="ok") >= 1


def test_publish_is_delivered_to_subscribers_of_the_channel(kafka_mock, bridge_factory):
    mc = kafka_mock(topics={"orders": 3, "prices-eur": 1})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    sub = b.connect()
    assert subscribe(sub, "prices.eur").get("type") == "subscribed"
    pub = b.connect()
    pub.send_json({"op": "publish", "id": "p1", "channel": "prices.eur", "data": [1, "two"]})
    r = pub.recv_json(timeout=15)
    assert r == {"type": "published", "id": "p1", "channel": "prices.eur"}, r
    m = recv_messages(sub, 1)[0]
    assert m["data"] == [1, "two"] and m["channel"] == "prices.eur", m
    assert (m["partition"], m["offset"]) == (0, 0), m
    got = read_topic(mc.bootstrap, "prices-eur", 1, 1)
    assert [x.value() for x in got] == [b'[1,"two"]']


def test_publish_refused_by_kafka_is_publish_failed(kafka_mock, bridge_factory):
    """A record over librdkafka's message.max.bytes (1,000,000 by default) but under the
    bridge's max_message_bytes (1 MiB) is refused by the Kafka client: error publish_failed
    with the request id, nothing in the topic, the connection stays usable."""
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(kafka_overrides(mc.bootstrap))
    c = b.connect()
    big = "x" * 1020000
    c.send_json({"op": "publish", "id": 9, "channel": "orders", "data": big})
    r = c.recv_json(timeout=30)
    assert r.get("type") == "error" and r.get("id") == 9 and r.get("code") == "publish_failed", r
    assert big[:100] not in json.dumps(r)
    c.send_json({"op": "publish", "id": 10, "channel": "orders", "data": {"ok": True}})
    r = c.recv_json(timeout=15)
    assert r == {"type": "published", "id": 10, "channel": "orders"}, r
    log = read_topic(mc.bootstrap, "orders", 3, 1, timeout=10)
    assert [x.value() for x in log] == [b'{"ok":true}'], [x.value()[:50] for x in log]
    m = b.metrics()
    total = m.sum("wsbridge_publish_total")
    ok = m.value("wsbridge_publish_total", 0.0, result="ok")
    assert total - ok >= 1, {k: v for k, v in m.items() if "publish" in k}
