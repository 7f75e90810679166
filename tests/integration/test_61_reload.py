"""SIGHUP reload (SPEC §8): ACLs, JWT keys and limits change without dropping connections;
live sessions are re-checked against the new ACLs; an invalid file keeps the old config."""

# ctest: cost=10  (scheduling: docs/testing.md)

import json
import signal
import time

import jwt
import pytest

from wsclient import HandshakeError, WSClient


def rewrite(b, **changes):
    cfg = json.loads(json.dumps(b.config))
    for k, v in changes.items():
        cfg[k] = v
    with open(b.config_path, "w") as f:
        json.dump(cfg, f)
    b.config = cfg


def hup_and_wait(b, marker="configuration reloaded", before=None):
    before = len([r for r in b.log_records() if r.get("msg") == marker])
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len([r for r in b.log_records() if r.get("msg") == marker]) > before:
            return
        time.sleep(0.05)
    pytest.fail("no %r log line after SIGHUP:\n%s" % (marker, b.logs()[-3000:]))


def recv_type(c, t, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
        if m.get("type") == t:
            return m
    pytest.fail("no %s message" % t)


def test_acl_reload_rechecks_live_sessions(bridge_factory):
    b = bridge_factory({"acl": [{"subscribe": ["mem.**"], "publish": ["mem.**"]}]})
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.a"})
    assert recv_type(c, "subscribed")["channel"] == "mem.a"
    c.send_json({"op": "subscribe", "id": 2, "channel": "mem.b.x"})
    assert recv_type(c, "subscribed")["channel"] == "mem.b.x"

    rewrite(b, acl=[{"subscribe": ["mem.b.**"], "publish": []}])
    hup_and_wait(b)

    m = recv_type(c, "unsubscribed")
    assert m == {"type": "unsubscribed", "channel": "mem.a", "reason": "forbidden"}
    # Still connected; new grants apply to new requests.
    c.send_json({"op": "subscribe", "id": 3, "channel": "mem.a"})
    m = recv_type(c, "error")
    assert m["id"] == 3 and m["code"] == "forbidden"
    c.send_json({"op": "publish", "id": 4, "channel": "mem.b.x", "data": 1})
    m = recv_type(c, "error")
    assert m["id"] == 4 and m["code"] == "forbidden"
    # mem.b.x is still delivered.
    other = b.connect()
    rewrite(b, acl=[{"subscribe": ["mem.b.**"], "publish": ["mem.b.**"]}])
    hup_and_wait(b)
    other.send_json({"op": "publish", "id": 5, "channel": "mem.b.x", "data": {"v": 7}})
    assert recv_type(other, "published")["id"] == 5
    m = recv_type(c, "message")
    assert m["channel"] == "mem.b.x" and m["data"] == {"v": 7}
    assert b.stop() == 0


def test_invalid_reload_keeps_running_config(bridge_factory):
    b = bridge_factory()
    c = b.connect()
    with open(b.config_path, "w") as f:
        f.write('{"listen": "127.0.0.1:1", "limts": {}}')
    b.proc.send_signal(signal.SIGHUP)
    rec = b.wait_log(lambda r: "reload failed" in r.get("msg", ""), timeout=5)
    assert rec, b.logs()[-2000:]
    # The error names the bad key's path.
    assert b.wait_log(lambda r: r.get("path") == "limts", timeout=2), b.logs()[-2000:]
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.z"})
    assert recv_type(c, "subscribed")["id"] == 1
    assert b.healthz() == 200
    assert b.stop() == 0


def test_limits_reload_applies_to_live_sessions(bridge_factory):
    b = bridge_factory({"limits": {"max_subscriptions": 1}})
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.a"})
    recv_type(c, "subscribed")
    c.send_json({"op": "subscribe", "id": 2, "channel": "mem.b"})
    assert recv_type(c, "error")["code"] == "too_many_subscriptions"
    limits = dict(b.config["limits"])
    limits["max_subscriptions"] = 3
    rewrite(b, limits=limits)
    hup_and_wait(b)
    c.send_json({"op": "subscribe", "id": 3, "channel": "mem.b"})
    assert recv_type(c, "subscribed")["id"] == 3
    assert b.stop() == 0


def test_jwt_key_reload(bridge_factory):
    old, new = "old-secret-0123456789abcdef0123456789", "new-secret-0123456789abcdef0123456789"

    def auth(secret):
        return {"jwt": {"algorithms": ["HS256"], "keys": [{"secret": secret}]}}

    def tok(secret, sub="alice"):
        return jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, secret, algorithm="HS256")

    b = bridge_factory({"auth": auth(old)})
    live = WSClient.connect(b.host, b.port, "/ws?access_token=" + tok(old))
    assert live.recv_json()["sub"] == "alice"

    rewrite(b, auth=auth(new))
    hup_and_wait(b)

    with pytest.raises(HandshakeError) as e:
        WSClient.connect(b.host, b.port, "/ws?access_token=" + tok(old))
    assert e.value.status == 401
    fresh = WSClient.connect(b.host, b.port, "/ws?access_token=" + tok(new, "bob"))
    assert fresh.recv_json()["sub"] == "bob"
    # The live connection keeps its verified identity and still works.
    live.send_json({"op": "subscribe", "id": 1, "channel": "mem.q"})
    assert recv_type(live, "subscribed")["id"] == 1
    # A refresh must now use the new key.
    live.send_json({"op": "auth", "id": 2, "token": tok(old)})
    assert recv_type(live, "error")["code"] == "token_rejected"
    live.send_json({"op": "auth", "id": 3, "token": tok(new)})
    assert recv_type(live, "authenticated")["id"] == 3
    assert b.stop() == 0


HARD_WARNING = "limits.send_buffer.hard_bytes is below limits.max_message_bytes"


def test_hard_bytes_below_max_message_bytes_is_warned_at_start_and_reload(bridge_factory):
    """A hard_bytes under max_message_bytes: a message that large published by a client can
    never reach a subscriber. Warned (naming the path), not refused: clients may publish
    large records that only backends read."""
    b = bridge_factory({"limits": {"max_message_bytes": 64 << 10,
                                   "send_buffer": {"soft_bytes": 32 << 10,
                                                   "hard_bytes": 64 << 10}}})
    warned = [r for r in b.log_records() if r.get("msg", "").startswith(HARD_WARNING)]
    assert warned == [], warned
    limits = dict(b.config["limits"])
    limits["max_message_bytes"] = 1 << 20
    rewrite(b, limits=limits)
    hup_and_wait(b)
    rec = b.wait_log(lambda r: r.get("msg", "").startswith(HARD_WARNING))
    assert rec is not None, b.logs()[-2000:]
    assert rec["level"] in ("warn", "warning"), rec
    assert rec["path"] == "limits.send_buffer.hard_bytes", rec
    assert (rec["hard_bytes"], rec["max_message_bytes"]) == (64 << 10, 1 << 20), rec
    assert b.connect().welcome["type"] == "welcome"  # still serving
    assert b.stop() == 0

    b = bridge_factory({"limits": {"send_buffer": {"soft_bytes": 32 << 10,
                                                   "hard_bytes": 64 << 10}}})
    assert b.wait_log(lambda r: r.get("msg", "").startswith(HARD_WARNING)) is not None
