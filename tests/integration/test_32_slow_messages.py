"""Slow fragmented or compressed messages (issue 9 item 3, SPEC §11 `message_timeout_ms`): a
message must be complete within limits.message_timeout_ms of its first byte, or the bridge
closes with 1008, even while the client answers every ping; and inbound bytes are charged as
they arrive (inflated bytes for a compressed message), so a message that overdraws the byte
bucket is refused at once, not when (or if) it ends."""

# ctest: cost=10  (scheduling: docs/testing.md)

import json
import time

import pytest

import wsclient
from wsclient import OP_CLOSE, OP_CONT, OP_PING, OP_TEXT

TIMEOUT_MS = 1000
TICK_S = 0.5  # the session tick that checks the deadline


@pytest.fixture(scope="module")
def bridge(module_bridge_factory):
    return module_bridge_factory({
        "permessage_deflate": True,
        "limits": {"message_timeout_ms": TIMEOUT_MS, "ping_interval_ms": 200,
                   "pong_timeout_ms": 5000},
    })


def wait_close(c, timeout=6.0, answer_pings=True):
    """Reads until the server's close frame, answering pings. Returns (code, pings seen)."""
    deadline = time.monotonic() + timeout
    pings = 0
    while True:
        f = c.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
        if f.opcode == OP_PING:
            if answer_pings:
                c.pong(f.payload)
            pings += 1
        elif f.opcode == OP_CLOSE:
            code = int.from_bytes(f.payload[:2], "big") if len(f.payload) >= 2 else None
            return code, pings


def assert_1008_in_time(c, started, answer_pings=True):
    code, pings = wait_close(c, answer_pings=answer_pings)
    took = time.monotonic() - started
    assert code == 1008, code
    if answer_pings:
        assert pings >= 2, "no ping while the client waited"
    assert TIMEOUT_MS / 1000 - 0.05 <= took <= TIMEOUT_MS / 1000 + TICK_S + 1.5, took
    assert c.wait_tcp_closed(3)


def test_fragmented_message_not_completed_closes_1008(bridge):
    c = bridge.connect()
    started = time.monotonic()
    c.send_frame(OP_TEXT, b'{"op":"subscribe",', fin=False)
    assert_1008_in_time(c, started)
    m = bridge.metrics()
    assert m.value("wsbridge_disconnects_total", code="1008") >= 1


def test_trickled_fragments_do_not_extend_the_deadline(bridge):
    c = bridge.connect()
    started = time.monotonic()
    c.send_frame(OP_TEXT, b'{"op":"subscribe","channel":"mem.a","id":"', fin=False)
    closed = None
    for _ in range(20):  # a fragment every 150 ms: far longer than the timeout in all
        time.sleep(0.15)
        c.send_frame(OP_CONT, b"x", fin=False)
        if c.send_failed:
            break
    code, _ = wait_close(c)
    closed = time.monotonic() - started
    assert code == 1008
    assert closed <= TIMEOUT_MS / 1000 + TICK_S + 1.5, closed


def test_compressed_message_not_completed_closes_1008(bridge):
    c = bridge.connect(extensions="permessage-deflate")
    assert c.deflate is not None
    body = json.dumps({"op": "subscribe", "id": 1, "channel": "mem.z",
                       "pad": "p" * 5000}).encode()
    z = c.compress(body)
    started = time.monotonic()
    c.send_frame(OP_TEXT, z[: len(z) // 2], fin=False, rsv1=True)
    assert_1008_in_time(c, started)


def test_one_slow_frame_closes_1008(bridge):
    """A single frame that never completes holds its partial payload just the same. (The
    client cannot answer pings here: a pong would land inside the frame's payload.)"""
    c = bridge.connect()
    frame = wsclient.build_frame(OP_TEXT, b'{"op":"subscribe","channel":"mem.b","id":1}' + b" " * 900)
    started = time.monotonic()
    c.send_raw(frame[:200])
    assert_1008_in_time(c, started, answer_pings=False)


def test_slow_message_completed_in_time_is_served(bridge):
    c = bridge.connect()
    parts = [b'{"op":"subscribe",', b'"id":7,', b'"channel":', b'"mem.slow"}']
    for i, p in enumerate(parts):
        c.send_frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
        time.sleep(0.15)
    r = c.recv_json(timeout=5)
    assert r["type"] == "subscribed" and r["id"] == 7, r
    # and the next slow message gets a fresh deadline
    time.sleep(TIMEOUT_MS / 1000 + TICK_S)
    c.send_json({"op": "unsubscribe", "id": 8, "channel": "mem.slow"})
    assert c.recv_json(timeout=5)["type"] == "unsubscribed"
    c.close()


# ---- bytes charged as they arrive ----------------------------------------------------------

BUCKET = 65536


@pytest.fixture
def byte_bridge(bridge_factory):
    return bridge_factory({
        "permessage_deflate": True,
        "limits": {"max_message_bytes": BUCKET,
                   "inbound_bytes": {"per_second": 1, "burst": BUCKET}},
    })


def drain_bucket(c):
    """Spends almost the whole byte bucket on one publish (~60,000 bytes)."""
    c.send_json({"op": "publish", "id": 1, "channel": "mem.x", "data": "a" * 60000})
    r = c.recv_json(timeout=5)
    assert r["type"] == "published", r


def test_message_overdrawing_the_byte_bucket_is_refused_while_it_arrives(byte_bridge):
    c = byte_bridge.connect()
    drain_bucket(c)
    # 10,000 bytes of a message that has not ended: more than the ~5,500 left.
    body = json.dumps({"op": "publish", "id": 2, "channel": "mem.x", "data": "b" * 20000})
    c.send_frame(OP_TEXT, body[:10000].encode(), fin=False)
    r = c.recv_json(timeout=3)  # before the message ends
    assert r["type"] == "error" and r["code"] == "rate_limited", r
    c.send_frame(OP_CONT, body[10000:].encode(), fin=True)
    # The refused message is not answered again, and the connection stays usable.
    c.send_json({"op": "subscribe", "id": 3, "channel": "mem.y"})
    r = c.recv_json(timeout=5)
    assert r["type"] == "subscribed" and r["id"] == 3, r
    m = byte_bridge.metrics()
    assert m.value("wsbridge_rate_limited_total", kind="bytes") == 1
    c.close()


def test_compressed_message_is_charged_its_inflated_size(byte_bridge):
    c = byte_bridge.connect(extensions="permessage-deflate")
    drain_bucket(c)
    body = json.dumps({"op": "publish", "id": 2, "channel": "mem.x", "data": "c" * 20000})
    z = c.compress(body.encode())
    assert len(z) < 200  # a few hundred bytes on the wire, 20,000 once inflated
    c.send_frame(OP_TEXT, z[: len(z) - 8], fin=False, rsv1=True)
    r = c.recv_json(timeout=3)
    assert r["type"] == "error" and r["code"] == "rate_limited", r
    c.send_frame(OP_CONT, z[len(z) - 8:], fin=True)
    c.send_json({"op": "subscribe", "id": 3, "channel": "mem.y"})
    assert c.recv_json(timeout=5)["id"] == 3
    c.close()
