"""Avro records through a schema registry (docs/schema-registry.md): records written by
python3-avro in the registry's wire format, produced by confluent_kafka into the mock
cluster, reach WebSocket clients as the Avro JSON encoding; the registry (registry_helpers,
Confluent's response shapes) counts the bridge's fetches.

Covers: 10,000 records of a schema with nested records, unions, arrays, enums and decimals
to 100 clients with one fetch per schema id and a schema change mid-stream; a publish
encoded with the subject's latest schema and read back by python3-avro, and refusals;
registry down (records wait in order, then `unavailable` past max_held_records with /readyz
naming the registry, and resume); unknown ids under `avro` (skipped, a gap) and `auto`
(passed through); an undecodable record on filtered channels: a gap to every subscriber,
filtered or not (docs/filters.md). Loads scale down under WSB_SANITIZED=1, assertions do not.
"""

# ctest: cost=12  (scheduling: docs/testing.md)

import asyncio
import base64
import decimal
import json
import os
import time

import pytest

from flow_helpers import LoadRun
from kafka_helpers import (check_partition_order, kafka_mock, kafka_overrides,  # noqa: F401
                           produce, read_topic, ws_open, ws_request)
from registry_helpers import Registry, decoder, encoder, framed

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
N_CLIENTS = 20 if SANITIZED else 100
N_RECORDS = 2000 if SANITIZED else 10000
N_JSON_CLIENTS = 2  # the others are wsb-load clients (count and order)

BIG_BUFFERS = {"send_buffer": {"soft_bytes": 256 << 20, "hard_bytes": 256 << 20,
                               "soft_seconds": 600}}

ADDRESS = {"type": "record", "name": "Address", "fields": [
    {"name": "city", "type": "string"},
    {"name": "zip", "type": ["null", "string"]}]}
ORDER_V1 = {"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "i", "type": "long"},
    {"name": "status", "type": {"type": "enum", "name": "Status",
                                "symbols": ["NEW", "PAID", "SHIPPED"]}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12,
                               "scale": 2}},
    {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
        {"name": "name", "type": "string"},
        {"name": "address", "type": ADDRESS}]}},
    {"name": "items", "type": {"type": "array", "items": {
        "type": "record", "name": "Item", "fields": [
            {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
    {"name": "note", "type": ["null", "string"]},
    {"name": "discount", "type": ["null", {"type": "bytes", "logicalType": "decimal",
                                           "precision": 5, "scale": 2}]},
]}
ORDER_V2 = json.loads(json.dumps(ORDER_V1))
ORDER_V2["fields"].append({"name": "source", "type": "string", "default": "web"})

STATUS = ["NEW", "PAID", "SHIPPED"]


def datum(i, v2=False):
    d = {"i": i, "status": STATUS[i % 3],
         "price": decimal.Decimal(i * 7 - 5000).scaleb(-2),
         "customer": {"name": "c%d" % i,
                      "address": {"city": "Oslo", "zip": None if i % 2 else "0%d" % i}},
         "items": [{"sku": "s%d" % k, "qty": k} for k in range(i % 4)],
         "note": None if i % 5 == 0 else "n\u00e9%d" % i,
         "discount": None if i % 3 else decimal.Decimal("0.50")}
    if v2:
        d["source"] = "app%d" % (i % 2)
    return d


def expected_json(i, v2=False):
    """The Avro JSON encoding of datum(i) as docs/schema-registry.md describes it."""
    d = datum(i, v2)
    out = dict(d)
    out["price"] = "%.2f" % d["price"]
    out["customer"] = {"name": d["customer"]["name"], "address": {
        "city": "Oslo",
        "zip": None if d["customer"]["address"]["zip"] is None
        else {"string": d["customer"]["address"]["zip"]}}}
    out["note"] = None if d["note"] is None else {"string": d["note"]}
    out["discount"] = None if d["discount"] is None else {"bytes": "%.2f" % d["discount"]}
    return out


def overrides(bootstrap, registry_url, channels=None, registry_extra=None, log_level="info"):
    o = kafka_overrides(bootstrap, extra={"limits": dict(BIG_BUFFERS),
                                          "log": {"level": log_level}},
                        channels=channels or [
                            {"match": "orders", "connector": "k", "topic": "orders",
                             "value_format": "avro"},
                            {"match": "auto.orders", "connector": "k", "topic": "orders"},
                        ])
    reg = {"url": registry_url}
    reg.update(registry_extra or {})
    o["connectors"]["k"]["schema_registry"] = reg
    return o


def run(coro, timeout):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def registry():
    reg = Registry()
    yield reg
    reg.close()


# ---- 1. many records, many clients, one fetch per id, a schema change --------------------


def test_avro_records_to_100_clients_one_fetch_per_schema_id(kafka_mock, bridge_factory,
                                                             registry, tmp_path):
    """N_CLIENTS subscribers: N_JSON_CLIENTS Python clients check every record's JSON, the
    others (wsb-load, C) check count and per-partition order; the frame is encoded once per
    worker and shared, so they all receive the same bytes."""
    id1 = registry.register("orders-value", ORDER_V1)
    id2 = registry.register("orders-value", ORDER_V2)
    enc1, enc2 = encoder(ORDER_V1), encoder(ORDER_V2)
    mc = kafka_mock(topics={"orders": 3})
    b = bridge_factory(overrides(mc.bootstrap, registry.url))
    half = N_RECORDS // 2
    # The schema changes mid-stream: the second half is written with version 2 (a new id).
    records = [{"value": framed(id1, enc1(datum(i))) if i < half
                else framed(id2, enc2(datum(i, True))), "partition": i % 3}
               for i in range(N_RECORDS)]
    n_load = N_CLIENTS - N_JSON_CLIENTS
    load = LoadRun(["--url", b.ws_url, "--clients", n_load, "--channel", "orders",
                    "--expect", N_RECORDS, "--duration", 100], tmp_path / "wsb-load.stderr")

    async def main():
        clients = await asyncio.gather(*[ws_open(b.ws_url) for _ in range(N_JSON_CLIENTS)])
        try:
            for i, ws in enumerate(clients):
                r = await ws_request(ws, {"op": "subscribe", "id": i, "channel": "orders"})
                assert r.get("type") == "subscribed", r
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: b.wait_metric("wsbridge_subscriptions",
                                            lambda v: v >= N_CLIENTS, timeout=30))

            async def reader(ws):
                got = []
                while len(got) < N_RECORDS:
                    m = json.loads(await ws.recv())
                    assert m.get("type") == "message", m
                    got.append((m["partition"], m["offset"], m["data"]))
                return got

            readers = [asyncio.ensure_future(reader(ws)) for ws in clients]
            loop = asyncio.get_running_loop()
            t0 = time.monotonic()
            reports = await loop.run_in_executor(None, produce, mc.bootstrap, "orders",
                                                 records, 45.0)
            done, _ = await asyncio.wait(readers, timeout=60)
            for t in readers:
                t.cancel()
            assert len(done) == len(readers), "%d of %d clients got every record" % (
                len(done), len(readers))
            return reports, [t.result() for t in readers], time.monotonic() - t0
        finally:
            await asyncio.gather(*[ws.close() for ws in clients], return_exceptions=True)

    try:
        reports, got, elapsed = run(main(), 150)
    except BaseException:
        load.kill()
        raise
    code, summary = load.result(110)
    assert code == 0, "wsb-load: %r" % summary
    by_pos = {(r["partition"], r["offset"]): i for i, r in enumerate(reports)}
    want = {}
    for idx, msgs in enumerate(got):
        check_partition_order([{"partition": p, "offset": o} for p, o, _ in msgs],
                              "client %d" % idx)
        for p, o, data in msgs:
            i = by_pos[(p, o)]
            if i not in want:
                want[i] = expected_json(i, i >= half)
            assert data == want[i], "client %d, record %d:\n got  %r\n want %r" % (
                idx, i, data, want[i])
    assert len(want) == N_RECORDS
    assert registry.id_fetches(id1) == 1, registry.counts
    assert registry.id_fetches(id2) == 1, registry.counts
    m = b.metrics()
    assert m.value("wsbridge_schema_registry_records_total", connector="k",
                   result="decoded") == N_RECORDS, "decoded once per record, not per client"
    print("%d Avro records to %d clients in %.1f s" % (N_RECORDS, N_CLIENTS, elapsed))


# ---- 2. publish through the subject's latest schema ------------------------------------


def test_publish_encodes_with_the_latest_schema(kafka_mock, bridge_factory, registry):
    registry.register("orders-value", ORDER_V1)
    latest = registry.register("orders-value", ORDER_V2)
    mc = kafka_mock(topics={"orders": 1, "plain": 1})
    b = bridge_factory(overrides(mc.bootstrap, registry.url, channels=[
        {"match": "orders", "connector": "k", "topic": "orders", "value_format": "avro"},
        {"match": "plain", "connector": "k", "topic": "plain", "value_format": "avro"}]))
    data = expected_json(7, True)

    async def main():
        ws = await ws_open(b.ws_url)
        try:
            ok = await ws_request(ws, {"op": "publish", "id": 1, "channel": "orders",
                                       "data": data})
            # a datum that does not fit: a symbol outside the enum, then a missing field
            bad = dict(data, status="LOST")
            refused = await ws_request(ws, {"op": "publish", "id": 2, "channel": "orders",
                                            "data": bad})
            missing = dict(data)
            del missing["price"]
            refused2 = await ws_request(ws, {"op": "publish", "id": 3, "channel": "orders",
                                             "data": missing})
            # no subject for the topic
            nosub = await ws_request(ws, {"op": "publish", "id": 4, "channel": "plain",
                                          "data": data})
            return ok, refused, refused2, nosub
        finally:
            await ws.close()

    ok, refused, refused2, nosub = run(main(), 30)
    assert ok.get("type") == "published", ok
    assert refused.get("code") == "invalid_request" and "status" in refused["message"], refused
    assert refused2.get("code") == "invalid_request" and "price" in refused2["message"], refused2
    assert nosub.get("code") == "invalid_request" and "plain-value" in nosub["message"], nosub
    msgs = read_topic(mc.bootstrap, "orders", 1, 1)
    assert len(msgs) == 1, "only the fitting publish reaches the topic: %d" % len(msgs)
    raw = msgs[0].value()
    assert raw[0] == 0 and int.from_bytes(raw[1:5], "big") == latest, raw[:5]
    back = decoder(ORDER_V2)(raw[5:])
    assert back == datum(7, True), back
    assert registry.fetches("/subjects/orders-value/versions/latest") == 1, registry.counts


# ---- 3. registry down --------------------------------------------------------------------


def wait_readyz(b, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        st, _, body = b.readyz(timeout=2.0)
        last = (st, body)
        if st == status:
            return json.loads(body or b"null")
        time.sleep(0.1)
    raise AssertionError("/readyz did not answer %d within %.0fs: %r" % (status, timeout, last))


def test_registry_down_records_wait_in_order_then_unavailable(kafka_mock, bridge_factory,
                                                              registry):
    bound = 150
    id1 = registry.register("orders-value", ORDER_V1)
    enc = encoder(ORDER_V1)
    mc = kafka_mock(topics={"orders": 2})
    b = bridge_factory(overrides(mc.bootstrap, registry.url,
                                 registry_extra={"max_held_records": bound}))

    def batch(sid, start, n):
        return [{"value": framed(sid, enc(datum(i))), "partition": i % 2}
                for i in range(start, start + n)]

    async def recv_until(ws, n, timeout):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            m = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            out.append(m)
        return out

    async def main():
        ws = await ws_open(b.ws_url)
        try:
            r = await ws_request(ws, {"op": "subscribe", "id": 1, "channel": "orders"})
            assert r.get("type") == "subscribed", r
            produce(mc.bootstrap, "orders", batch(id1, 0, 20))
            first = await recv_until(ws, 20, 15)
            assert [m["data"]["i"] for m in first] and all(
                m["type"] == "message" for m in first), first[:2]

            # Down: the records of a new schema id wait (in order) and /readyz names it.
            registry.down()
            id3 = registry.register("orders-value", ORDER_V1, sid=3)
            produce(mc.bootstrap, "orders", batch(id3, 20, 60))
            body = await asyncio.get_running_loop().run_in_executor(None, wait_readyz, b, 503)
            assert "schema registry" in json.dumps(body), body
            try:
                early = await asyncio.wait_for(ws.recv(), 1.0)
                raise AssertionError("a record arrived while its schema was unknown: %r"
                                     % early)
            except asyncio.TimeoutError:
                pass
            registry.up()
            waited = await recv_until(ws, 60, 20)
            check_partition_order(waited, "after the registry came back")
            assert sorted(m["data"]["i"] for m in waited) == list(range(20, 80))
            await asyncio.get_running_loop().run_in_executor(None, wait_readyz, b, 200)

            # Down again, more records than the bound: the source fails as unavailable.
            registry.down()
            id4 = registry.register("orders-value", ORDER_V1, sid=4)
            reports = produce(mc.bootstrap, "orders", batch(id4, 80, bound + 50))
            end = await recv_until(ws, 1, 20)
            assert end[0].get("type") == "unsubscribed" and "unavailable" in json.dumps(
                end[0]), end
            body = await asyncio.get_running_loop().run_in_executor(None, wait_readyz, b, 503)
            assert "schema registry" in json.dumps(body), body

            # Back: /readyz recovers by itself, and a resubscribe from the last positions
            # gets the rest, in order.
            registry.up()
            await asyncio.get_running_loop().run_in_executor(None, wait_readyz, b, 200)
            positions = {}
            for m in first + waited:
                positions[str(m["partition"])] = max(positions.get(str(m["partition"]), 0),
                                                     m["offset"] + 1)
            r = await ws_request(ws, {"op": "subscribe", "id": 2, "channel": "orders",
                                      "from": {"offsets": positions}})
            assert r.get("type") == "subscribed", r
            rest = await recv_until(ws, bound + 50, 20)
            check_partition_order(rest, "after the resubscribe")
            assert sorted(m["data"]["i"] for m in rest) == list(range(80, 80 + bound + 50))
            assert len(reports) == bound + 50
        finally:
            await ws.close()

    run(main(), 90)
    assert registry.id_fetches(3) >= 1 and registry.id_fetches(4) >= 1


# ---- 4. unknown schema ids ---------------------------------------------------------------


def test_unknown_id_is_skipped_under_avro_and_passed_under_auto(kafka_mock, bridge_factory,
                                                                registry):
    id1 = registry.register("orders-value", ORDER_V1)
    enc = encoder(ORDER_V1)
    mc = kafka_mock(topics={"orders": 1})
    b = bridge_factory(overrides(mc.bootstrap, registry.url))
    unknown = framed(999, enc(datum(2)))
    records = [{"value": framed(id1, enc(datum(1))), "partition": 0},
               {"value": unknown, "partition": 0},
               {"value": b'{"plain": true}', "partition": 0},
               {"value": framed(id1, enc(datum(4))), "partition": 0}]

    async def main():
        strict = await ws_open(b.ws_url)
        auto = await ws_open(b.ws_url)
        try:
            for ws, ch in ((strict, "orders"), (auto, "auto.orders")):
                r = await ws_request(ws, {"op": "subscribe", "id": 1, "channel": ch})
                assert r.get("type") == "subscribed", r
            produce(mc.bootstrap, "orders", records)
            got_strict, dropped = [], 0
            while len(got_strict) < 2:
                m = json.loads(await asyncio.wait_for(strict.recv(), 15))
                if m["type"] == "gap":
                    dropped += m["dropped"]
                else:
                    got_strict.append(m)
            got_auto = [json.loads(await asyncio.wait_for(auto.recv(), 15)) for _ in range(4)]
            return got_strict, dropped, got_auto
        finally:
            await strict.close()
            await auto.close()

    got_strict, dropped, got_auto = run(main(), 40)
    assert [m["data"] for m in got_strict] == [expected_json(1), expected_json(4)]
    assert dropped == 2, "avro: the unknown id and the plain JSON record are gaps"
    assert [m["offset"] for m in got_auto] == [0, 1, 2, 3]
    assert got_auto[0]["data"] == expected_json(1) and got_auto[3]["data"] == expected_json(4)
    # auto: the unknown id's record passes through as it came (not decoded)
    a1 = got_auto[1]
    passed = base64.b64decode(a1["data"]) if a1.get("encoding") == "base64" else \
        a1["data"].encode("utf-8")
    assert passed == unknown, a1
    assert got_auto[2]["data"] == {"plain": True}
    assert registry.id_fetches(999) == 1, registry.counts
    m = b.wait_metric("wsbridge_messages_dropped_total", lambda v: v >= 2, timeout=5,
                      reason="undecodable")
    assert m.value("wsbridge_messages_dropped_total", reason="undecodable") == 2
    # counted per connector, once per record (not per client)
    rec = "wsbridge_schema_registry_records_total"
    assert m.value(rec, connector="k", result="undecodable") == 2, m
    assert m.value(rec, connector="k", result="passed_unknown") == 1, m
    assert m.value(rec, connector="k", result="decoded") == 4, m
    assert m.value("wsbridge_schema_registry_fetches_total", connector="k") == 2, m


# ---- 5. an undecodable record on filtered channels ---------------------------------------


def test_undecodable_record_is_a_gap_to_every_filtered_subscriber(kafka_mock, bridge_factory,
                                                                   registry):
    """docs/filters.md: a record the connector cannot decode (`value_format: avro`) cannot be
    judged by a filter, so every subscriber of the source gets a `gap` in its place — a keyed
    group, a header-scanned group, a client filter that takes none of the records, and an
    unfiltered subscriber — each on both workers (several clients of each kind), and the
    decoded records still go to exactly the groups whose filter takes them."""
    id1 = registry.register("orders-value", ORDER_V1)
    enc = encoder(ORDER_V1)
    mc = kafka_mock(topics={"orders": 1})
    avro = {"connector": "k", "topic": "orders", "value_format": "avro"}
    b = bridge_factory(overrides(mc.bootstrap, registry.url, channels=[
        dict(avro, match="orders"),
        dict(avro, match="by-key.*", filter={"key": "{1}"}),
        dict(avro, match="by-kind.*", filter={"headers": {"kind": "{1}"}})]))
    paid = [("kind", b"paid")]
    records = [{"key": b"u1", "value": framed(id1, enc(datum(0)))},             # 0
               {"key": b"u2", "value": framed(id1, enc(datum(1)))},             # 1
               {"key": b"u1", "value": framed(999, enc(datum(2)))},             # 2 unknown id
               {"key": b"u2", "value": b'{"plain": true}', "headers": paid},    # 3 no magic
               {"key": b"u1", "value": framed(id1, enc(datum(4)))},             # 4
               {"key": b"u2", "value": framed(id1, enc(datum(5))), "headers": paid}]  # 5
    # kind: (channel, the client's own filter, the offsets it must get)
    kinds = {"keyed": ("by-key.u1", None, [0, 4]),
             "scanned": ("by-kind.paid", None, [5]),
             "narrowed": ("by-key.u1", {"key": "u1", "headers": {"kind": "paid"}}, []),
             "unfiltered": ("orders", None, [0, 1, 4, 5])}
    per_kind = 3  # over 2 workers: SO_REUSEPORT spreads the connections

    async def one(kind):
        channel, own, _ = kinds[kind]
        ws = await ws_open(b.ws_url)
        req = {"op": "subscribe", "id": 1, "channel": channel}
        if own:
            req["filter"] = own
        r = await ws_request(ws, req)
        assert r.get("type") == "subscribed", (kind, r)
        return ws

    async def collect(ws, want):
        """(offsets of the messages, the dropped count of each gap and the offset of the
        message it came before) once all are in and 0.5 s brought nothing more."""
        offsets, gaps, quiet = [], [], 0.5
        while True:
            done = len(offsets) >= len(want) and sum(d for d, _ in gaps) >= 2
            try:
                m = json.loads(await asyncio.wait_for(ws.recv(), quiet if done else 15))
            except asyncio.TimeoutError:
                assert done, (offsets, gaps)
                return offsets, gaps
            if m["type"] == "gap":
                gaps.append((m["dropped"], None))
            elif m["type"] == "message":
                gaps = [(d, m["offset"] if at is None else at) for d, at in gaps]
                offsets.append(m["offset"])
            else:
                raise AssertionError(m)

    def workers_used():
        st, _, body = b.admin_get("/clients?top=1000")
        assert st == 200, body
        return {c["worker"] for c in json.loads(body)["clients"]}

    async def main():
        clients = {k: [await one(k) for _ in range(per_kind)] for k in kinds}
        try:
            # Both loops must hold subscribers (the kernel's spread is random: a few more
            # clients when every one landed on the same loop).
            for _ in range(8):
                if len(workers_used()) == 2:
                    break
                for k in kinds:
                    clients[k].append(await one(k))
            assert len(workers_used()) == 2
            produce(mc.bootstrap, "orders", records)
            return {k: await asyncio.gather(*[collect(ws, kinds[k][2]) for ws in wss])
                    for k, wss in clients.items()}
        finally:
            for wss in clients.values():
                for ws in wss:
                    await ws.close()

    got = run(main(), 60)
    for kind, results in got.items():
        want = kinds[kind][2]
        for offsets, gaps in results:
            assert offsets == want, (kind, offsets)
            assert sum(d for d, _ in gaps) == 2, (kind, gaps)
            # In its place: before the first message after offset 3 (4 or 5), or at the end
            # for a subscriber with no message after it.
            after = [o for o in want if o > 3]
            assert all(at == (after[0] if after else None) for _, at in gaps), (kind, gaps)
    n_subs = sum(len(results) for results in got.values())
    m = b.wait_metric("wsbridge_messages_dropped_total", lambda v: v >= 2 * n_subs, timeout=5,
                      reason="undecodable")
    assert m.value("wsbridge_messages_dropped_total", reason="undecodable") == 2 * n_subs
    rec = "wsbridge_schema_registry_records_total"
    assert m.value(rec, connector="k", result="undecodable") == 2, m  # once per record
    assert m.value(rec, connector="k", result="decoded") == 4, m
