"""The hand-off gate holds per source (issue 14, S6 isolation; docs/flow-control.md): a client
that is behind on channel A holds back channel A's records on its loop, and only those.
Clients of channel B on the same loop keep their latency and get every record, in order.

Two workers (the default). On each worker one raw client subscribed to `mem.a` (found with
the admin /clients listing; a socket with `SO_RCVBUF` 4096) alternates: it stops reading
for STALL_S (it falls behind and holds its loop's gate for up to its 500 ms allowance), then
reads everything for READ_S (it catches up and repays the allowance), over and over. Channel
A carries 200 records/s of 16 KB (wsb-load's publisher and one fast A client, which gets every
record once, in order), channel B 200 records/s of 100 bytes to 20 wsb-load clients spread
over both workers.

Before the gate held per source (main until 2026-12-06), every record of the loop waited
while the A client held, B's included: B's p99 was about the holding time (~500 ms: 1 in 4
of B's records waited). Now B's records never wait for A's client: B's p99 stays in
milliseconds (asserted ≤ B_P99_MS = 250 ms, half a hold: on main 1 in 4 of B's records waits
up to 500 ms, so its p99 is near 500 ms; the fixed bridge measured 8-20 ms at load 3-5 and
177 ms once at load 8 on the shared 2-core machine), while the gate did hold (its time is
counted).

Under ASan (WSB_SANITIZED=1) B's stream is shorter and the latency bound is the same: a
hold is 500 ms whatever the build, and B's load is light.
"""

# ctest: serial cost=20  (scheduling: docs/testing.md)

import json
import os
import socket
import threading
import time

from flow_helpers import LoadRun, slow_client

SANITIZED = os.environ.get("WSB_SANITIZED") == "1"
A_RATE, A_PAYLOAD = 200, 16000  # ~3.2 MB/s: the kernel takes ~1-4 MB of a stalled socket first
B_RATE, B_CLIENTS = 200, 20
B_TOTAL = 1000 if SANITIZED else 1600  # 5 or 8 s of B
STALL_S, READ_S = 1.5, 1.0  # a hold of 500 ms per cycle, the allowance repaid in between
A_TOTAL = A_RATE * (B_TOTAL // B_RATE + 3)  # A flows before, during and after B
B_P99_MS = 250.0  # half a hold; measured 8-20 ms at load 3-5, 177 ms at load 8; 481 ms on main


def gate_bridge(bridge_factory):
    return bridge_factory({
        "limits": {
            # behind above 128 KiB; a 1.2 s stall stays under hard_bytes; drop_oldest would
            # keep the A client connected if it came to that
            "send_buffer": {"soft_bytes": 1 << 20, "soft_seconds": 2, "hard_bytes": 4 << 20,
                            "policy": "drop_oldest"},
            "ping_interval_ms": 120000,  # the A clients answer no ping while stalled
        },
        "log": {"level": "info", "format": "json"},
    })


def worker_of(b, session):
    status, headers, body = b.admin_get("/clients?top=1000")
    assert status == 200, status
    for c in json.loads(body).get("clients", []):
        if c.get("session") == session:
            return c.get("worker")
    return None


def a_client_per_worker(b, workers=2, tries=24):
    """One stalling A client subscribed on each worker (connections land on a worker by the
    kernel's SO_REUSEPORT hash: open until each has one, close the others)."""
    found = {}
    extra = []
    for _ in range(tries):
        c = slow_client(b)
        c.send_json({"op": "subscribe", "id": 1, "channel": "mem.a"})
        reply = c.recv_json(timeout=5)
        assert reply.get("type") == "subscribed", reply
        w = worker_of(b, c.welcome["session"])
        if w is not None and w not in found:
            found[w] = c
        else:
            extra.append(c)
        if len(found) == workers:
            break
    for c in extra:
        c.close()
    assert len(found) == workers, "no A client on workers %r" % (
        set(range(workers)) - set(found))
    return list(found.values())


class Staller(threading.Thread):
    """Stops reading for STALL_S, then reads (and discards) everything for READ_S, until
    stopped."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.sock = client.sock
        self.stop_evt = threading.Event()
        self.read_bytes = 0
        self.cycles = 0

    def run(self):
        self.sock.settimeout(0.02)
        while not self.stop_evt.wait(STALL_S):
            end = time.monotonic() + READ_S
            while time.monotonic() < end and not self.stop_evt.is_set():
                try:
                    data = self.sock.recv(1 << 18)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.read_bytes += len(data)
            self.cycles += 1

    def stop(self):
        """Stops and closes the client (it then holds nothing)."""
        self.stop_evt.set()
        if self.is_alive():
            self.join(5)
        self.sock.close()


def test_behind_client_holds_only_its_channel(bridge_factory, tmp_path):
    b = gate_bridge(bridge_factory)
    stallers = [Staller(c) for c in a_client_per_worker(b)]
    a_load = LoadRun(["--url", b.ws_url, "--clients", 1, "--channel", "mem.a",
                      "--publish", A_RATE, "--payload", A_PAYLOAD, "--expect", A_TOTAL,
                      "--duration", 40], tmp_path / "a-load.stderr")
    try:
        # A flows before B starts: the A clients fall behind from the first stall on
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (b.metrics().value("wsbridge_messages_out_total") or 0) > 0:
                break
            time.sleep(0.1)
        for s in stallers:
            s.start()
        held0 = b.metrics().value("wsbridge_handoff_held_seconds_total") or 0.0
        b_load = LoadRun(["--url", b.ws_url, "--clients", B_CLIENTS, "--channel", "mem.b",
                          "--publish", B_RATE, "--expect", B_TOTAL, "--duration", 40],
                         tmp_path / "b-load.stderr")
        rc, summary = b_load.result(timeout=60)
        held = (b.metrics().value("wsbridge_handoff_held_seconds_total") or 0.0) - held0
        for s in stallers:
            s.stop()
        a_rc, a_summary = a_load.result(timeout=40)
    finally:
        for s in stallers:
            s.stop()
        a_load.kill()
    print("A:", json.dumps(a_summary))
    print("B:", json.dumps(summary))
    print("A clients: %d stall cycles, %d bytes read; hand-off held %.2f s during B" % (
        sum(s.cycles for s in stallers), sum(s.read_bytes for s in stallers), held))
    assert summary["fast"] == B_CLIENTS and summary["close_codes"] == {}, summary
    assert summary["order_violations"] == 0 and summary["gaps_total"] == 0, summary
    assert summary["per_client_min"] == B_TOTAL, summary
    assert rc == 0, summary
    # A's own fast client got every record of the held channel once, in order
    assert a_summary["per_client_min"] == A_TOTAL and a_summary["gaps_total"] == 0, a_summary
    assert a_summary["order_violations"] == 0 and a_rc == 0, a_summary
    # The A clients did hold their loops (else this test shows nothing) ...
    assert all(s.cycles >= 2 for s in stallers), [s.cycles for s in stallers]
    assert held >= 0.5, "the hand-off gate held %.2f s: the A clients never got behind" % held
    # ... and B's records did not wait for them.
    p99 = summary["latency_ms"]["p99"]
    assert p99 <= B_P99_MS, "B's p99 %.1f ms while A's clients held their loops" % p99
