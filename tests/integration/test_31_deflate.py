"""SPEC §4 / RFC 7692: permessage-deflate negotiation, compressed round trips through the
memory connector, context takeover, deflate bombs (1009 with bounded RSS), RSV1 misuse
(1002) and corrupt deflate data (1007)."""

import json
import os
import threading
import time
import zlib

import pytest

from wsclient import (OP_CONT, OP_PING, OP_TEXT, ConnectionClosed, HandshakeError, WSClient,
                      deflate_message, parse_extensions)

MAX = 65536


@pytest.fixture(scope="module")
def db(module_bridge_factory):
    return module_bridge_factory({"permessage_deflate": True, "limits": {"max_message_bytes": MAX}})


def pmd(c):
    """The negotiated permessage-deflate params, or None."""
    exts = parse_extensions(c.headers.get("sec-websocket-extensions"))
    names = [n for n, _ in exts]
    assert names.count("permessage-deflate") <= 1, exts
    for n, params in exts:
        assert n == "permessage-deflate", "unexpected extension %r" % n
        return params
    return None


def connect(b, offer):
    c = WSClient.connect(b.host, b.port, "/ws", extensions=offer)
    c.welcome = c.recv_json()
    assert c.welcome["type"] == "welcome"
    return c


def assert_close(c, code, timeout=3.0):
    try:
        got, reason = c.expect_close(timeout=timeout)
    except ConnectionClosed:
        pytest.fail("TCP closed without a close frame (expected %d)" % code)
    assert got == code, "close code %s (reason %r), expected %d" % (got, reason, code)
    assert c.wait_tcp_closed(timeout), "TCP still open after the close frame"
    c.close()


# ---- negotiation ------------------------------------------------------------------------


def test_offer_accepted_with_server_no_context_takeover(db):
    c = connect(db, "permessage-deflate")
    p = pmd(c)
    assert p is not None, c.headers
    assert "server_no_context_takeover" in p, p
    assert "client_max_window_bits" not in p, \
        "RFC 7692 §7.1.2.2: client_max_window_bits answered though not offered: %r" % p
    for k in p:
        assert k in ("server_no_context_takeover", "client_no_context_takeover",
                     "server_max_window_bits", "client_max_window_bits"), p
    c.close()


def test_client_max_window_bits_offered_without_value(db):
    c = connect(db, "permessage-deflate; client_max_window_bits")
    p = pmd(c)
    assert p is not None
    if "client_max_window_bits" in p:
        assert p["client_max_window_bits"] is not None and \
            9 <= int(p["client_max_window_bits"]) <= 15, p
    c.close()


def test_client_max_window_bits_offered_with_value(db):
    c = connect(db, "permessage-deflate; client_max_window_bits=10")
    p = pmd(c)
    assert p is not None
    if "client_max_window_bits" in p:
        assert 9 <= int(p["client_max_window_bits"]) <= 10, p
    # the client compresses with a 10-bit window: the server must inflate it
    c.deflate = dict(p, client_max_window_bits=p.get("client_max_window_bits") or "10")
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.w10"}, compress=True)
    assert c.recv_json()["type"] == "subscribed"
    c.close()


def test_server_max_window_bits_requested(db):
    """server_max_window_bits=10: declined, or accepted with a value <= 10 (§7.1.2.1)."""
    c = connect(db, "permessage-deflate; server_max_window_bits=10")
    p = pmd(c)
    if p is not None:
        assert "server_max_window_bits" in p and 9 <= int(p["server_max_window_bits"]) <= 10, p
    c.close()


def test_server_max_window_bits_honoured_by_server_messages(db):
    """When server_max_window_bits=10 is accepted, the server's compressed messages must
    never reference more than 1 KiB back: a 2 KiB random block repeated is inflated here
    with a 10-bit window (zlib fails with 'invalid distance too far back' otherwise)."""
    c = connect(db, "permessage-deflate; server_max_window_bits=10")
    p = pmd(c)
    if p is None:
        pytest.skip("server_max_window_bits=10 declined (allowed)")
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.z.win"})
    assert c.recv_json()["type"] == "subscribed"
    pub = connect(db, None)
    block = os.urandom(1024).hex()  # 2 KiB of incompressible text
    data = block * 8
    pub.send_json({"op": "publish", "id": 2, "channel": "mem.z.win", "data": data})
    assert pub.recv_json()["type"] == "published"
    op, raw = c.recv_message()
    assert json.loads(raw)["data"] == data
    c.close()
    pub.close()


def test_server_max_window_bits_8_declined_then_fallback(db):
    c = connect(db, "permessage-deflate; server_max_window_bits=8, permessage-deflate")
    p = pmd(c)
    assert p is not None, "the second (acceptable) offer was not taken"
    assert p.get("server_max_window_bits") != "8", p
    c.close()


@pytest.mark.parametrize("offer", [
    "permessage-deflate; foo=1",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "x-webkit-deflate-frame",
])
def test_unacceptable_offer_not_negotiated(db, offer):
    """An offer with bad or unknown parameters is declined (no extension), the upgrade still
    succeeds (or, for a malformed header, is refused with 400)."""
    try:
        c = connect(db, offer)
    except HandshakeError as e:
        assert e.status == 400, e
        return
    assert pmd(c) is None, (offer, c.headers)
    c.close()


def test_not_offered_no_extension(db):
    c = connect(db, None)
    assert "sec-websocket-extensions" not in c.headers
    c.close()


def test_disabled_in_config_never_negotiated(bridge_factory):
    b = bridge_factory({"permessage_deflate": False})
    c = connect(b, "permessage-deflate; client_max_window_bits")
    assert "sec-websocket-extensions" not in c.headers, c.headers
    c.send_frame(OP_TEXT, b'{"op":"x"}', rsv1=True)
    assert_close(c, 1002)


# ---- compressed traffic -----------------------------------------------------------------


def test_compressed_subscribe_publish_round_trip(db):
    a = connect(db, "permessage-deflate; client_max_window_bits")
    b = connect(db, "permessage-deflate")
    a.send_json({"op": "subscribe", "id": "s", "channel": "mem.z.room"}, compress=True)
    r = a.recv_json()
    assert r["type"] == "subscribed" and r["id"] == "s" and r["channel"] == "mem.z.room", r
    data = {"text": "hello " * 200, "n": [1, 2, 3], "u": "κόσμε"}
    b.send_json({"op": "publish", "id": 7, "channel": "mem.z.room", "data": data}, compress=True)
    r = b.recv_json()
    assert r["type"] == "published" and r["id"] == 7 and r["channel"] == "mem.z.room", r
    m = a.recv_json()
    assert m["type"] == "message" and m["channel"] == "mem.z.room" and m["data"] == data, m
    a.close()
    b.close()


def test_server_messages_compressed_when_negotiated(db):
    """A large, compressible message to a deflate client arrives with RSV1 (the server uses
    the extension it agreed to) and inflates to the right JSON."""
    a = connect(db, "permessage-deflate")
    a.send_json({"op": "subscribe", "id": 1, "channel": "mem.z.big"})
    assert a.recv_json()["type"] == "subscribed"
    p = connect(db, None)
    data = {"blob": "abcdefgh" * 2000}
    p.send_json({"op": "publish", "id": 2, "channel": "mem.z.big", "data": data})
    assert p.recv_json()["type"] == "published"
    op, raw = a.recv_message()
    assert json.loads(raw)["data"] == data
    assert a.last_compressed, "a 16 KB compressible message was sent uncompressed"
    a.close()
    p.close()


def test_uncompressed_message_on_deflate_connection(db):
    c = connect(db, "permessage-deflate")
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.z.plain"}, compress=False)
    assert c.recv_json()["type"] == "subscribed"
    c.close()


def test_compressed_fragmented_message(db):
    """RSV1 on the first frame only; compressed bytes split over three fragments."""
    c = connect(db, "permessage-deflate")
    z = deflate_message(json.dumps({"op": "subscribe", "id": 3, "channel": "mem.z.frag",
                                    "pad": "x" * 3000}).encode())
    parts = [z[: len(z) // 3], z[len(z) // 3: 2 * len(z) // 3], z[2 * len(z) // 3:]]
    c.send_fragments(OP_TEXT, parts, rsv1_first=True)
    m = c.recv_json()
    assert m["type"] in ("subscribed", "error") and m["id"] == 3, m
    c.close()


def test_client_context_takeover(db):
    """Without client_no_context_takeover the client may reference earlier messages'
    window: the server must keep its inflater across messages."""
    c = connect(db, "permessage-deflate")
    p = pmd(c)
    assert "client_no_context_takeover" not in p
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    for i in range(5):
        msg = json.dumps({"op": "subscribe", "id": i, "channel": "mem.z.ctx%d" % i}).encode()
        z = comp.compress(msg) + comp.flush(zlib.Z_SYNC_FLUSH)
        c.send_frame(OP_TEXT, z[:-4], rsv1=True)
        m = c.recv_json()
        assert m["type"] == "subscribed" and m["id"] == i, m
    c.close()


def test_client_no_context_takeover_offer(db):
    c = connect(db, "permessage-deflate; client_no_context_takeover")
    p = pmd(c)
    assert p is not None
    for i in range(3):
        c.send_json({"op": "subscribe", "id": i, "channel": "mem.z.nct%d" % i}, compress=True)
        assert c.recv_json()["id"] == i
    c.close()


def test_empty_compressed_message(db):
    """An empty message compresses to 0x00 (RFC 7692 §7.2.3.6); it is an empty text message
    (invalid JSON: an error reply, not a close)."""
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_TEXT, b"\x00", rsv1=True)
    m = c.recv_json()
    assert m["type"] == "error" and m["code"] == "invalid_request", m
    c.close()


# ---- abuse ------------------------------------------------------------------------------


def bomb(n_zero_bytes):
    z = deflate_message(b"\x00" * n_zero_bytes, level=9)
    assert len(z) < MAX, len(z)
    return z


def test_deflate_bomb_8mib_1009(db):
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_TEXT, bomb(8 << 20), rsv1=True)
    assert_close(c, 1009)


def test_inflated_just_over_limit_1009(db):
    c = connect(db, "permessage-deflate")
    text = b'{"op":"x","pad":"' + b"a" * (MAX + 10) + b'"}'
    c.send_frame(OP_TEXT, deflate_message(text), rsv1=True)
    assert_close(c, 1009)


def test_inflated_at_limit_accepted(db):
    c = connect(db, "permessage-deflate")
    head, tail = b'{"op":"nope","id":1,"pad":"', b'"}'
    text = head + b"a" * (MAX - len(head) - len(tail)) + tail
    assert len(text) == MAX
    c.send_frame(OP_TEXT, deflate_message(text), rsv1=True)
    m = c.recv_json()
    assert m["type"] == "error" and m["id"] == 1, m
    c.close()


def test_deflate_bombs_keep_rss_bounded(db):
    """Ten clients each send a ~48 KB message inflating to 48 MiB: every one gets 1009 and
    the bridge's RSS grows by far less than one inflated message."""
    payload = bomb(48 << 20)
    clients = [connect(db, "permessage-deflate") for _ in range(10)]
    time.sleep(0.2)
    rss0 = db.rss_kib()
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], db.rss_kib())
            except OSError:
                return
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        for c in clients:
            c.send_frame(OP_TEXT, payload, rsv1=True)
        for c in clients:
            assert_close(c, 1009, timeout=5)
    finally:
        stop.set()
        t.join()
    growth_mib = (peak[0] - rss0) / 1024
    assert growth_mib < 32, "RSS grew by %.1f MiB during 10 deflate bombs of 48 MiB" % growth_mib
    assert db.healthz() == 200


def test_rsv1_on_continuation_1002(db):
    c = connect(db, "permessage-deflate")
    z = deflate_message(b'{"op":"subscribe","id":1,"channel":"mem.z.c"}')
    c.send_frame(OP_TEXT, z[:5], fin=False, rsv1=True)
    c.send_frame(OP_CONT, z[5:], fin=True, rsv1=True)
    assert_close(c, 1002)


def test_rsv1_on_control_frame_1002(db):
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_PING, b"p", rsv1=True)
    assert_close(c, 1002)


@pytest.mark.parametrize("rsv", ["rsv2", "rsv3"])
def test_rsv2_rsv3_still_invalid_with_deflate(db, rsv):
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_TEXT, deflate_message(b'{"op":"x"}'), rsv1=True, **{rsv: True})
    assert_close(c, 1002)


@pytest.mark.parametrize("data", [
    b"\xff\xff\xff\xff",                 # reserved block type 11
    b"\x07\x00\x00\x00",                 # reserved block type, different bit layout
    b"\x00\x01\x00\x01\x00",             # stored block whose LEN/NLEN do not match
])
def test_corrupt_deflate_1007(db, data):
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_TEXT, data, rsv1=True)
    assert_close(c, 1007)


def test_compressed_invalid_utf8_1007(db):
    c = connect(db, "permessage-deflate")
    c.send_frame(OP_TEXT, deflate_message(b'{"op":"x","id":"\xed\xa0\x80"}'), rsv1=True)
    assert_close(c, 1007)


def test_bridge_healthy_after_abuse(db):
    for data in (b"\xff\xff\xff\xff", bomb(8 << 20)):
        c = connect(db, "permessage-deflate")
        c.send_frame(OP_TEXT, data, rsv1=True)
        c.expect_close()
        c.close()
    assert db.healthz() == 200
    c = connect(db, "permessage-deflate")
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.z.after"}, compress=True)
    assert c.recv_json()["type"] == "subscribed"
    c.close()


def test_interop_with_the_websockets_library(db):
    """A real client implementation (python3-websockets, which offers permessage-deflate with
    client_max_window_bits and keeps its context) subscribes and publishes compressed."""
    import asyncio

    import websockets

    async def run():
        url = "ws://%s:%d/ws" % (db.host, db.port)
        async with websockets.connect(url, subprotocols=["wsbridge.v1"], open_timeout=5,
                                      close_timeout=2) as a, \
                websockets.connect(url, subprotocols=["wsbridge.v1"], open_timeout=5,
                                   close_timeout=2) as b:
            assert a.subprotocol == "wsbridge.v1"
            ext = a.response_headers.get("Sec-WebSocket-Extensions", "")
            assert "permessage-deflate" in ext, ext
            for ws in (a, b):
                w = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert w["type"] == "welcome"
            await a.send(json.dumps({"op": "subscribe", "id": 1, "channel": "mem.z.lib"}))
            r = json.loads(await asyncio.wait_for(a.recv(), 5))
            assert r["type"] == "subscribed", r
            payloads = [{"i": i, "text": "repeat " * (50 + i)} for i in range(20)]
            for i, p in enumerate(payloads):
                await b.send(json.dumps({"op": "publish", "id": i, "channel": "mem.z.lib",
                                         "data": p}))
            for i in range(20):
                r = json.loads(await asyncio.wait_for(b.recv(), 5))
                assert r["type"] == "published", r
            for p in payloads:
                m = json.loads(await asyncio.wait_for(a.recv(), 5))
                assert m["type"] == "message" and m["data"] == p, m
            await a.close()
            assert a.close_code == 1000

    asyncio.run(asyncio.wait_for(run(), 20))
