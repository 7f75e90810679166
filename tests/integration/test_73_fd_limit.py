"""Running out of file descriptors (issue 9 item 1, the accept side): with a hard
RLIMIT_NOFILE of 96 the bridge warns at start that max_connections cannot be reached; when
accept() fails with EMFILE it pauses accepting with a growing back-off (a handful of WARN
lines, counted in wsbridge_accept_paused_total) instead of spinning; once descriptors are
free again the clients that waited in the backlog are served. With the default 2 workers:
each loop has its own listener (SO_REUSEPORT), so the waiting clients sit in both backlogs
and both listeners must resume."""

import os
import select
import socket
import stat
import time

import wsclient

# The bridge itself uses ~30 descriptors (stdio, loops, listeners, mailboxes, admin, memory
# connector). NOFILE clients exhaust the rest and leave about that many waiting: fewer than
# the descriptors the held ones free, so every waiting client (and a scrape) fits afterwards.
NOFILE = 96


def wrapper(tmp_path, binpath):
    """A launcher that lowers the soft and hard descriptor limits, then execs the bridge."""
    p = tmp_path / "wsbridge-nofile.sh"
    p.write_text('#!/bin/sh\nulimit -n %d || exit 99\nexec "%s" "$@"\n' % (NOFILE, binpath))
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def open_upgrade(b):
    """TCP connect and send an upgrade request without waiting for the answer."""
    s = socket.create_connection((b.host, b.port), timeout=5)
    req, _ = wsclient.WSClient.build_request(b.host, b.port, b.path)
    s.sendall(req)
    return s


def answered(socks, timeout):
    """The sockets among `socks` that got a 101 within `timeout` (reads only the status)."""
    got, pending = [], list(socks)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        r, _, _ = select.select(pending, [], [], max(0.0, deadline - time.monotonic()))
        for s in r:
            data = s.recv(4096, socket.MSG_PEEK)
            assert data.startswith(b"HTTP/1.1 101"), data[:80]
            pending.remove(s)
            got.append(s)
    return got, pending


def paused_lines(b):
    return [r for r in b.log_records() if r.get("msg") == "accept failed; accepting paused"]


def test_emfile_pauses_accepting_then_recovers(bridge_factory, tmp_path):
    bridge_factory.binpath = wrapper(tmp_path, bridge_factory.binpath)
    b = bridge_factory({"limits": {"max_connections": 10000}})  # 2 workers, 2 listeners
    warn = b.wait_log(lambda r: "exceeds what the descriptor limit allows" in r.get("msg", ""))
    assert warn is not None and warn.get("nofile") == NOFILE, b.logs()

    socks = [open_upgrade(b) for _ in range(NOFILE)]
    held, waiting = answered(socks, 3.0)
    assert held and waiting and len(waiting) < len(held), (len(held), len(waiting))
    # Out of descriptors now: a scrape attempt makes the admin listener fail too.
    admin = socket.create_connection((b.host, b.admin_port), timeout=5)
    admin.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    # Stay there ~1.5 s and count the pauses.
    time.sleep(1.5)
    admin_pauses = [r for r in b.log_records()
                    if r.get("msg") == "admin accept failed; accepting paused"]
    assert 1 <= len(admin_pauses) <= 10, len(admin_pauses)
    n = len(paused_lines(b))
    # Back-off 50, 100, 200, 400, 800 ms...: a handful, not a hot loop of thousands.
    assert 1 <= n <= 20, n
    rec = paused_lines(b)[0]
    assert rec.get("error") and rec.get("pause_ms") == 50, rec

    # Free descriptors: the clients waiting in the backlog are accepted and upgraded.
    for s in held:
        s.close()
    admin.settimeout(5)
    assert admin.recv(64).startswith(b"HTTP/1.1 200"), "the paused admin listener never resumed"
    admin.close()
    got, still = answered(waiting, 5.0)
    assert not still, "%d waiting clients never served after descriptors were freed" % len(still)
    for s in got + still:
        s.close()
    c = b.connect()
    c.close()
    assert b.metrics().value("wsbridge_accept_paused_total", 0) >= 1
    assert b.alive()
