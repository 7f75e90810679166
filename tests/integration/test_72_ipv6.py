"""Per-address limits over IPv6 (issue 9 item 2): the bridge listens on ::1 and the per-IP
cap applies to IPv6 clients, keyed on `limits.ipv6_prefix` (default /64). Only ::1 exists
on loopback, so prefix grouping of different addresses is covered by the unit tests
(tests/unit/bridge/iplimit_test.c); here the real listener, the 429 refusal and the release
of a slot are checked end to end, and a reload of `ipv6_prefix` is accepted live."""

import json
import signal
import socket
import time

import pytest

import wsclient
from conftest import free_port


def _has_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


def v6_connect(b, **kw):
    return wsclient.WSClient.connect("::1", b.port, **kw)


def held_until_429(b, n):
    held = [v6_connect(b) for _ in range(n)]
    with pytest.raises(wsclient.HandshakeError) as ei:
        v6_connect(b).close()
    err = ei.value
    assert err.status == 429, (err.status, err.body)
    assert err.headers.get("retry-after", "").isdigit(), err.headers
    assert err.json()["error"] == "rate_limited"
    return held


def test_ipv6_cap_then_slot_freed(bridge_factory):
    port = free_port()
    b = bridge_factory({"listen": "[::1]:%d" % port,
                        "limits": {"max_connections_per_ip": 2}})
    held = held_until_429(b, 2)
    welcome = held[0].recv_json()
    assert welcome["type"] == "welcome", welcome
    held.pop().close_handshake()
    deadline = time.monotonic() + 3
    while True:
        try:
            held.append(v6_connect(b))
            break
        except wsclient.HandshakeError as e:
            assert e.status == 429 and time.monotonic() < deadline, e.status
            time.sleep(0.05)
    for c in held:
        c.close()


def test_ipv6_prefix_reload(bridge_factory):
    port = free_port()
    cfg_over = {"listen": "[::1]:%d" % port, "limits": {"max_connections_per_ip": 2}}
    b = bridge_factory(cfg_over)
    held = held_until_429(b, 2)
    # Reload with another prefix while the two connections are live: they keep their count
    # (no double release, no negative count), and /128 keys ::1 on its own entry.
    cfg = json.loads(open(b.config_path).read())
    cfg["limits"]["ipv6_prefix"] = 128
    with open(b.config_path, "w") as f:
        json.dump(cfg, f)
    b.proc.send_signal(signal.SIGHUP)
    assert b.wait_log(lambda r: r.get("msg") == "configuration reloaded") is not None, b.logs()
    # The /128 entry is new, so two more connections fit; the third is refused.
    more = held_until_429(b, 2)
    for c in held + more:
        c.close_handshake()
    # Everything was released exactly once: the cap is whole again.
    deadline = time.monotonic() + 3
    while True:
        try:
            again = [v6_connect(b) for _ in range(2)]
            break
        except wsclient.HandshakeError as e:
            assert e.status == 429 and time.monotonic() < deadline, e.status
            time.sleep(0.05)
    for c in again:
        c.close()
    assert b.alive()
