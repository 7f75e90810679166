"""Connections count from accept (issue 9 item 1, the session side): a connection counts
against its address (max_connections_per_ip, handshake rate) and against max_connections
from the moment it is accepted, not once its request head has arrived. So silent sockets
from one address cannot pile up: past the cap they are answered 429 at once (FIN, and
closed within a second), while another address still completes its handshake."""

import resource
import socket
import time

import pytest

import wsclient
from wsclient import HandshakeError

SILENT = 2000
CAP = 20


@pytest.fixture(autouse=True)
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = SILENT + 500
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip("needs %d descriptors, hard limit %d" % (want, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def silent_connections(b, n, source="127.0.0.1"):
    """n TCP connections that never send a byte."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((b.host, b.port), timeout=10, source_address=(source, 0))
        s.setblocking(False)
        socks.append(s)
    return socks


def still_open(socks, status=429):
    """The sockets the server has neither answered nor closed (reads what arrived; an answer
    must be `status`)."""
    out = []
    for s in socks:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            out.append(s)
            continue
        except OSError:
            continue  # reset: closed
        assert data == b"" or data.startswith(b"HTTP/1.1 %d " % status), data[:80]
    return out


def wait_open_at_most(socks, limit, timeout, status=429):
    deadline = time.monotonic() + timeout
    left = list(socks)
    while time.monotonic() < deadline:
        left = still_open(left, status)
        if len(left) <= limit:
            return left
        time.sleep(0.1)
    return left


def test_silent_sockets_from_one_address_are_capped_at_accept(bridge_factory):
    b = bridge_factory({"limits": {
        "max_connections_per_ip": CAP,
        "max_connections": 200,
        "handshake_timeout_ms": 20000,
    }})
    socks = silent_connections(b, SILENT)
    try:
        held = wait_open_at_most(socks, CAP, timeout=15)
        # Exactly the first CAP are accepted and held (for the handshake timeout); every other
        # one was answered 429 and closed without sending a byte.
        assert len(held) == CAP, "%d silent connections held, cap %d" % (len(held), CAP)
        time.sleep(1.5)
        assert len(still_open(held)) == CAP

        # Another address is not affected: a full handshake and a request.
        c = b.connect(source_address=("127.0.0.2", 0))
        c.send_json({"op": "subscribe", "id": 1, "channel": "mem.a"})
        assert c.recv_json(timeout=5)["type"] == "subscribed"
        c.close()

        # The address itself is refused with 429 while its silent sockets are held.
        with pytest.raises(HandshakeError) as e:
            b.connect()
        assert e.value.status == 429 and "retry-after" in e.value.headers
        m = b.metrics()
        assert m.value("wsbridge_rate_limited_total", kind="connections_per_ip") >= SILENT - CAP
    finally:
        for s in socks:
            s.close()
    # Closing the held ones frees the address.
    deadline = time.monotonic() + 10
    while True:
        try:
            b.connect().close()
            break
        except HandshakeError:
            assert time.monotonic() < deadline, "the address stayed refused"
            time.sleep(0.1)


def test_max_connections_counts_silent_sockets(bridge_factory):
    b = bridge_factory({"limits": {
        "max_connections_per_ip": 1000,
        "max_connections": 30,
        "handshake_timeout_ms": 20000,
    }})
    socks = silent_connections(b, 20, "127.0.0.3") + silent_connections(b, 20, "127.0.0.4")
    try:
        held = wait_open_at_most(socks, 30, timeout=10, status=503)
        assert len(held) == 30
        # Every slot is taken by a silent socket: a real client gets 503 at once.
        with pytest.raises(HandshakeError) as e:
            b.connect(source_address=("127.0.0.2", 0))
        assert e.value.status == 503 and "retry-after" in e.value.headers
        assert b.metrics().value("wsbridge_connections") == 30
    finally:
        for s in socks:
            s.close()
    b.wait_metric("wsbridge_connections", lambda v: v == 0, timeout=10)
    b.connect(source_address=("127.0.0.2", 0)).close()
