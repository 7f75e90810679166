"""Per-record filters (issue 15, SPEC §11 `channels[].filter`) on the Kafka mock cluster, with
JWT identities: one shared `orders` topic where each client sees only the records keyed with
its own `sub` (all of them, in order), an ACL bypass for admins, header filters and OR
alternatives, claims that are not valid filter values (no records, never all), a client's own
filter that may narrow but never widen (`forbidden`), a SIGHUP that re-resolves live
subscriptions, and an exact resume from offsets. Real binary (`workers` 2), real producers.
"""

# ctest: cost=17  (scheduling: docs/testing.md)

import asyncio
import json
import os
import signal
import time

from auth_helpers import Keys, auth_overrides, mint
from kafka_helpers import kafka_mock, kafka_overrides, next_offsets, produce  # noqa: F401
from kafka_helpers import ws_open, ws_request

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
PER_SUB = 8 if SANITIZED else 30  # records per sub in the fan-out test (scaled, not asserted)

BIG_BUFFERS = {"send_buffer": {"soft_bytes": 64 << 20, "hard_bytes": 64 << 20,
                               "soft_seconds": 600}}


def run(coro, timeout):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def produce_records(bootstrap, records):
    """produce() with each report's headers taken from its record (delivery reports do not
    always carry them)."""
    reports = produce(bootstrap, "orders", records)
    for rec, rep in zip(records, reports):
        rep["headers"] = rec.get("headers")
    return reports


def config(tmp_path, mc, channels, acl=None):
    keys = Keys(tmp_path)
    acl = acl if acl is not None else [
        {"subscribe": ["**"]},
        {"when": {"claim": "roles", "has": "admin"}, "unfiltered": ["**"]},
    ]
    over = auth_overrides(keys, sources=["query"], acl=acl, permissions_claim="wsb")
    k = kafka_overrides(mc.bootstrap, channels=channels)
    over["connectors"] = k["connectors"]
    over["channels"] = k["channels"]
    over["drain_timeout_ms"] = 1000
    over["limits"] = BIG_BUFFERS
    over["log"] = {"level": "info", "format": "json"}
    return keys, over


# The shared topic's usual rule: each client sees the records keyed with its own `sub`.
BY_SUB = {"match": "orders", "connector": "k", "topic": "orders", "filter": {"key": "{sub}"}}


def start(kafka_mock, bridge_factory, tmp_path, partitions, channels=(BY_SUB,)):
    """A mock cluster with an `orders` topic of `partitions` and a bridge whose channel
    rules are `channels` (config()); returns (cluster, keys, bridge)."""
    mc = kafka_mock(topics={"orders": partitions})
    keys, over = config(tmp_path, mc, list(channels))
    return mc, keys, bridge_factory(over, env=keys.env())


def url(b, keys, **claims):
    return b.ws_url + "?access_token=" + mint(keys, **claims)


class Client:
    """One WebSocket client whose `message`s (and anything else) collect in inboxes."""

    def __init__(self, ws):
        self.ws = ws
        self.msgs = []
        self.other = []
        self.waiters = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            m = json.loads(await self.ws.recv())
            (self.msgs if m.get("type") == "message" else self.other).append(m)

    async def request(self, req, timeout=10.0):
        n = len(self.other)
        await self.ws.send(json.dumps(req))
        deadline = time.monotonic() + timeout
        while len(self.other) == n:
            assert not self.task.done() or self.task.result(), "reader ended"
            assert time.monotonic() < deadline, "no reply to %r" % (req,)
            await asyncio.sleep(0.01)
        return self.other[n]

    async def close(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.ws.close()


async def open_client(u):
    return Client(await ws_open(u))


async def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        await asyncio.sleep(0.02)


def sent(reports, pred):
    """(partition, offset) of the produced records that `pred` selects, in production order."""
    return [(r["partition"], r["offset"]) for r in reports if pred(r)]


def got(client, channel=None):
    return [(m["partition"], m["offset"]) for m in client.msgs
            if channel is None or m["channel"] == channel]


def key_of(r):
    return r["key"].decode() if r["key"] is not None else None


def header_of(r, name):
    for k, v in r["headers"] or []:
        if k == name:
            return v.decode()
    return None


# ---- 1. 50 clients, 10 subs, one topic ----------------------------------------------------


async def _fanout(b, keys, mc):
    subs = ["u%d" % i for i in range(10)]
    clients = await asyncio.gather(*[open_client(url(b, keys, sub=subs[i % 10]))
                                     for i in range(50)])
    admin = await open_client(url(b, keys, sub="root", roles=["admin"]))
    try:
        for i, c in enumerate(clients + [admin]):
            r = await c.request({"op": "subscribe", "id": i, "channel": "orders"})
            assert r.get("type") == "subscribed", r
        # Keys of every sub, and records nobody but the admin may see.
        records = []
        for n in range(PER_SUB):
            for s in subs:
                records.append({"key": s.encode(), "value": b'{"n":%d}' % n})
            records.append({"key": b"nobody", "value": b'{"n":%d}' % n})
            records.append({"value": b'{"keyless":%d}' % n})
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, produce_records, mc.bootstrap, records)
        await wait_for(lambda: len(admin.msgs) >= len(records), 30, "the admin's records")
        for i, c in enumerate(clients):
            want = sent(reports, lambda r, s=subs[i % 10]: key_of(r) == s)
            await wait_for(lambda c=c, want=want: len(c.msgs) >= len(want), 30,
                           "client %d's %d records" % (i, len(want)))
        await asyncio.sleep(0.5)  # anything extra would arrive now
        m = await loop.run_in_executor(None, b.metrics)  # while every client is subscribed
        return clients, admin, reports, m
    finally:
        await asyncio.gather(*[c.close() for c in clients + [admin]], return_exceptions=True)


def test_50_clients_10_subs_each_sees_exactly_its_own_records(kafka_mock, bridge_factory,
                                                               tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 3)
    clients, admin, reports, m = run(_fanout(b, keys, mc), 90)
    for i, c in enumerate(clients):
        want = sent(reports, lambda r, s="u%d" % (i % 10): key_of(r) == s)
        assert len(want) == PER_SUB
        # Exactly its own records, all of them, in production (= offset) order.
        assert got(c) == want, "client %d (sub u%d): %r vs %r" % (i, i % 10, got(c)[:5],
                                                                   want[:5])
        assert all(m["key"] == "u%d" % (i % 10) for m in c.msgs)
        assert not [m for m in c.other if m.get("type") == "gap"]
    # The bypass: every record, keyless and foreign ones included, per partition in order.
    assert sorted(got(admin)) == sorted(sent(reports, lambda r: True))
    groups = m.value("wsbridge_filter_groups")
    # 10 filter groups per worker holding clients of them (the admin's group is unfiltered).
    assert groups is not None and 10 <= groups <= 20, groups
    assert m.value("wsbridge_filtered_records_total", rule="orders") > 0
    # One frame per record and worker at most, however many groups and clients took it.
    enc = m.value("wsbridge_frames_encoded_total")
    assert enc <= b.config["workers"] * len(reports), (enc, len(reports))
    assert b.stop() == 0


# ---- 2. the client's own filter -----------------------------------------------------------


async def _client_filter(b, keys, mc):
    u1 = await open_client(url(b, keys, sub="u1"))
    admin = await open_client(url(b, keys, sub="root", roles=["admin"]))
    try:
        # Widening on a filtered channel: forbidden, with the request's id.
        r = await u1.request({"op": "subscribe", "id": "w", "channel": "orders",
                              "filter": {"key": "u2"}})
        assert r == {"type": "error", "id": "w", "code": "forbidden",
                     "message": r.get("message")}, r
        r = await u1.request({"op": "subscribe", "id": "w2", "channel": "orders",
                              "filter": [{"key": "u2"}, {"key": "u3"}]})
        assert r.get("code") == "forbidden" and r.get("id") == "w2", r
        # Malformed: invalid_request.
        for bad in ({"keys": "u1"}, {}, [], "u1", {"headers": {"h": 5}}, {"key": ""}):
            r = await u1.request({"op": "subscribe", "id": 9, "channel": "orders",
                                  "filter": bad})
            assert r.get("type") == "error" and r.get("code") == "invalid_request", (bad, r)
        # The same value, or one more condition, narrows: allowed.
        r = await u1.request({"op": "subscribe", "id": 1, "channel": "orders",
                              "filter": {"key": "u1", "headers": {"kind": "paid"}}})
        assert r.get("type") == "subscribed", r
        # An unfiltered channel: the client's filter simply narrows.
        r = await u1.request({"op": "subscribe", "id": 2, "channel": "all",
                              "filter": [{"key": "u3"}, {"headers": {"kind": "refund"}}]})
        assert r.get("type") == "subscribed", r
        # The admin's bypass with a filter of its own: narrows to it, even for others' keys.
        r = await admin.request({"op": "subscribe", "id": 3, "channel": "orders",
                                 "filter": {"key": "u2"}})
        assert r.get("type") == "subscribed", r
        records = []
        for n in range(6):
            for k in ("u1", "u2", "u3"):
                for kind in ("paid", "refund", "new"):
                    records.append({"key": k.encode(), "value": b"%d" % n,
                                    "headers": [("kind", kind.encode())]})
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, produce_records, mc.bootstrap, records)
        want_orders = sent(reports, lambda r: key_of(r) == "u1" and header_of(r, "kind") == "paid")
        want_all = sent(reports, lambda r: key_of(r) == "u3" or header_of(r, "kind") == "refund")
        want_admin = sent(reports, lambda r: key_of(r) == "u2")
        await wait_for(lambda: len(u1.msgs) >= len(want_orders) + len(want_all) and
                       len(admin.msgs) >= len(want_admin), 20, "the narrowed records")
        await asyncio.sleep(0.4)
        return got(u1, "orders"), want_orders, got(u1, "all"), want_all, got(admin), want_admin
    finally:
        await asyncio.gather(u1.close(), admin.close(), return_exceptions=True)


def test_client_filter_narrows_and_never_widens(kafka_mock, bridge_factory, tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 2, [
        BY_SUB, {"match": "all", "connector": "k", "topic": "orders"}])
    g1, w1, g2, w2, g3, w3 = run(_client_filter(b, keys, mc), 60)
    assert g1 == w1 and len(w1) == 6
    assert sorted(g2) == sorted(w2) and len(w2) == 6 * 3 + 12
    assert g3 == w3 and len(w3) == 18
    assert b.stop() == 0


# ---- 3. headers, alternatives, invalid claims ----------------------------------------------


async def _headers(b, keys, mc):
    good = await open_client(url(b, keys, sub="u1", tenant="t1"))
    number = await open_client(url(b, keys, sub="u5", tenant=7))
    bad = [await open_client(url(b, keys, sub="u2", tenant=["t1"])),     # an array
           await open_client(url(b, keys, sub="u3")),                     # missing
           await open_client(url(b, keys, sub="u4", tenant="t" * 300)),   # too long
           await open_client(url(b, keys, sub="u6", tenant={"id": "t1"})),  # an object
           await open_client(url(b, keys, sub="u7", tenant=""))]          # empty
    try:
        for c in [good, number] + bad:
            for ch in ("tenant", "either"):
                r = await c.request({"op": "subscribe", "id": ch, "channel": ch})
                assert r.get("type") == "subscribed", r
        records = []
        for n in range(5):
            for key in ("u1", "u2", "u3", "u4"):
                for tenant in ("t1", "t2", "7", None):
                    rec = {"key": key.encode(), "value": b"%d" % n}
                    if tenant:
                        rec["headers"] = [("tenant", tenant.encode()), ("x", b"y")]
                    records.append(rec)
        loop = asyncio.get_running_loop()
        reports = await loop.run_in_executor(None, produce_records, mc.bootstrap, records)
        w = {
            ("good", "tenant"): sent(reports, lambda r: header_of(r, "tenant") == "t1"),
            ("good", "either"): sent(reports, lambda r: key_of(r) == "u1" or
                                     header_of(r, "tenant") == "t1"),
            ("number", "tenant"): sent(reports, lambda r: header_of(r, "tenant") == "7"),
            ("number", "either"): sent(reports, lambda r: header_of(r, "tenant") == "7"),
        }
        for sub, c in (("u2", bad[0]), ("u3", bad[1]), ("u4", bad[2])):
            # The dropped tenant alternative leaves the sub's own: never all.
            w[(sub, "either")] = sent(reports, lambda r, s=sub: key_of(r) == s)
        await wait_for(lambda: len(good.msgs) >= len(w[("good", "tenant")]) +
                       len(w[("good", "either")]) and
                       len(number.msgs) >= 2 * len(w[("number", "tenant")]) and
                       all(len(c.msgs) >= len(w[(s, "either")])
                           for s, c in (("u2", bad[0]), ("u3", bad[1]), ("u4", bad[2]))),
                       20, "the header-filtered records")
        await asyncio.sleep(0.5)
        return good, number, bad, w
    finally:
        await asyncio.gather(*[c.close() for c in [good, number] + bad], return_exceptions=True)


def test_header_filters_alternatives_and_invalid_claims(kafka_mock, bridge_factory, tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 2, [
        {"match": "tenant", "connector": "k", "topic": "orders",
         "filter": {"headers": {"tenant": "{claim.tenant}"}}},
        {"match": "either", "connector": "k", "topic": "orders",
         "filter": [{"key": "{sub}"}, {"headers": {"tenant": "{claim.tenant}"}}]}])
    good, number, bad, w = run(_headers(b, keys, mc), 60)
    for ch in ("tenant", "either"):
        assert sorted(got(good, ch)) == sorted(w[("good", ch)]), ch
        assert sorted(got(number, ch)) == sorted(w[("number", ch)]), ch
    assert len(w[("good", "either")]) == 5 * 4 + 5 * 3
    for c, sub in zip(bad, ("u2", "u3", "u4", "u6", "u7")):
        assert got(c, "tenant") == [], "sub %s got records with an invalid tenant claim" % sub
        mine = [(m["partition"], m["offset"]) for m in c.msgs if m["channel"] == "either"]
        assert all(m["key"] == sub for m in c.msgs if m["channel"] == "either"), sub
        if (sub, "either") in w:
            assert sorted(mine) == sorted(w[(sub, "either")]), sub
    # Claim values never reach the log at info level.
    assert "t" * 300 not in b.logs()
    assert b.stop() == 0


# ---- 4. reload ----------------------------------------------------------------------------


def hup_and_wait(b):
    marker = "configuration reloaded"
    before = len([r for r in b.log_records() if r.get("msg") == marker])
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len([r for r in b.log_records() if r.get("msg") == marker]) > before:
            return
        time.sleep(0.05)
    raise AssertionError("no reload: " + b.logs()[-2000:])


async def _reload(b, keys, mc):
    c = await open_client(url(b, keys, sub="u1", alt="u2"))
    loop = asyncio.get_running_loop()
    try:
        r = await c.request({"op": "subscribe", "id": 1, "channel": "orders"})
        assert r.get("type") == "subscribed", r
        mixed = [{"key": k.encode(), "value": b"1"} for k in ("u1", "u2", "u3") * 4]
        before = await loop.run_in_executor(None, produce, mc.bootstrap, "orders", mixed)
        want = sent(before, lambda r: key_of(r) == "u1")
        await wait_for(lambda: len(c.msgs) >= len(want), 20, "records before the reload")
        await asyncio.sleep(0.3)
        assert got(c) == want
        cfg = json.loads(json.dumps(b.config))
        cfg["channels"][0]["filter"] = {"key": "{claim.alt}"}
        with open(b.config_path, "w") as f:
            json.dump(cfg, f)
        await loop.run_in_executor(None, hup_and_wait, b)
        # The workers pick the new config up on their own loops: wait until a u2 record comes.
        n0 = len(c.msgs)
        deadline = time.monotonic() + 15
        while len(c.msgs) == n0:
            assert time.monotonic() < deadline, "the reloaded filter never took effect"
            await loop.run_in_executor(None, produce, mc.bootstrap, "orders",
                                       [{"key": b"u2", "value": b"probe"}])
            await asyncio.sleep(0.2)
        n1 = len(c.msgs)
        after = await loop.run_in_executor(None, produce, mc.bootstrap, "orders", mixed)
        want2 = sent(after, lambda r: key_of(r) == "u2")
        await wait_for(lambda: len(c.msgs) >= n1 + len(want2), 20, "records after the reload")
        await asyncio.sleep(0.4)
        return c.msgs[n0:n1], c.msgs[n1:], want2
    finally:
        await c.close()


def test_reload_re_resolves_live_subscriptions(kafka_mock, bridge_factory, tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 2)
    probes, rest, want2 = run(_reload(b, keys, mc), 60)
    assert all(m["key"] == "u2" for m in probes + rest)
    assert [(m["partition"], m["offset"]) for m in rest] == want2
    assert b.stop() == 0


# ---- 5. resume -----------------------------------------------------------------------------


async def _resume(b, keys, mc):
    loop = asyncio.get_running_loop()
    mixed = [{"key": k.encode(), "value": b"1"} for k in ("u1", "u2", "u3", "u4") * 10]
    c = await open_client(url(b, keys, sub="u1"))
    try:
        r = await c.request({"op": "subscribe", "id": 1, "channel": "orders"})
        assert r.get("type") == "subscribed", r
        first = await loop.run_in_executor(None, produce, mc.bootstrap, "orders", mixed)
        want1 = sent(first, lambda r: key_of(r) == "u1")
        await wait_for(lambda: len(c.msgs) >= len(want1), 20, "the first session's records")
        await asyncio.sleep(0.3)
        seen1 = got(c)
        positions = next_offsets(c.msgs, r.get("offsets"))
    finally:
        await c.close()
    # Records meanwhile (the client is away), then more of others' only at the tail.
    second = await loop.run_in_executor(None, produce, mc.bootstrap, "orders", mixed)
    tail = await loop.run_in_executor(None, produce, mc.bootstrap, "orders",
                                      [{"key": b"u9", "value": b"x"}] * 6)
    c = await open_client(url(b, keys, sub="u1"))
    try:
        r = await c.request({"op": "subscribe", "id": 2, "channel": "orders",
                             "from": {"offsets": positions}})
        assert r.get("type") == "subscribed", r
        want2 = sent(second, lambda r: key_of(r) == "u1")
        await wait_for(lambda: len(c.msgs) >= len(want2), 20, "the resumed records")
        await asyncio.sleep(0.5)
        return seen1, want1, got(c), want2, c.other, tail
    finally:
        await c.close()


def test_resume_from_offsets_on_a_filtered_subscription(kafka_mock, bridge_factory, tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 3)
    seen1, want1, seen2, want2, other, _ = run(_resume(b, keys, mc), 60)
    assert seen1 == want1 and len(want1) == 10
    # No gap, no duplicate: exactly the records it may see that came while it was away.
    assert seen2 == want2 and len(want2) == 10
    assert not set(seen1) & set(seen2)
    assert not [m for m in other if m.get("type") in ("gap", "error")], other
    assert b.stop() == 0


def test_config_errors_name_the_path(run_cli, tmp_path):
    cfg = {"connectors": {"m": {"type": "memory"}},
           "channels": [
               {"match": "a.*", "connector": "m", "topic": "a", "filter": {"key": "{2}"}},
               {"match": "b", "connector": "m", "topic": "b",
                "filter": [{"key": "{sub}"}, {"headers": {"t": "{claim.x"}}]},
               {"match": "c", "connector": "m", "topic": "c", "delivery": "ack",
                "filter": {"key": "{sub}"}},
               {"match": "d", "connector": "m", "topic": "d", "filter": {"kye": "x"}}]}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = run_cli(["--check-config", "-c", str(p)])
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "channels[0].filter.key:" in out, out
    assert "channels[1].filter[1].headers.t:" in out, out
    assert "channels[2].filter:" in out, out
    assert "channels[3].filter.kye:" in out, out


# ---- 6. a fresh token through `auth` --------------------------------------------------------


async def _auth(b, keys, mc):
    loop = asyncio.get_running_loop()
    c = await open_client(url(b, keys, sub="u1", tenant="t1"))
    try:
        r = await c.request({"op": "subscribe", "id": 1, "channel": "tenant"})
        assert r.get("type") == "subscribed", r
        recs = [{"key": b"k", "value": b"1", "headers": [("tenant", t.encode())]}
                for t in ("t1", "t2") * 3]
        first = await loop.run_in_executor(None, produce_records, mc.bootstrap, recs)
        want1 = sent(first, lambda r: header_of(r, "tenant") == "t1")
        await wait_for(lambda: len(c.msgs) >= len(want1), 20, "t1's records")
        # The same sub, a new tenant claim: the live subscription moves group at once.
        r = await c.request({"op": "auth", "id": 2,
                             "token": mint(keys, sub="u1", tenant="t2")})
        assert r.get("type") == "authenticated", r
        n = len(c.msgs)
        second = await loop.run_in_executor(None, produce_records, mc.bootstrap, recs)
        want2 = sent(second, lambda r: header_of(r, "tenant") == "t2")
        await wait_for(lambda: len(c.msgs) >= n + len(want2), 20, "t2's records")
        await asyncio.sleep(0.4)
        return got(c)[:n], want1, got(c)[n:], want2
    finally:
        await c.close()


def test_auth_with_new_claims_re_resolves_the_filter(kafka_mock, bridge_factory, tmp_path):
    mc, keys, b = start(kafka_mock, bridge_factory, tmp_path, 1, [
        {"match": "tenant", "connector": "k", "topic": "orders",
         "filter": {"headers": {"tenant": "{claim.tenant}"}}}])
    g1, w1, g2, w2 = run(_auth(b, keys, mc), 60)
    assert g1 == w1 and len(w1) == 3
    assert g2 == w2 and len(w2) == 3
    assert b.stop() == 0
