"""Helpers for the flow-control and limits tests (test_70_flow, test_71_limits): the C load
client `wsb-load` as a subprocess, a paced Kafka producer of ~1 KiB JSON records, an RSS
sampler for the bridge process, and raw-socket "slow" WebSocket clients whose receive
buffer is shrunk before connect so that the bridge's own send buffer fills up.

Every wait is bounded.
"""

import json
import os
import socket
import subprocess
import threading
import time

import pytest

import wsclient
from conftest import REPO


def load_bin():
    """Path of wsb-load ($WSB_LOAD_BIN, else build*/wsb-load); skips when not built."""
    env = os.environ.get("WSB_LOAD_BIN")
    if env:
        p = os.path.abspath(env)
        if not os.path.exists(p):
            pytest.fail("WSB_LOAD_BIN=%s does not exist" % p)
        return p
    for cand in ("build/wsb-load", "build-it/wsb-load", "build-ft/wsb-load"):
        p = os.path.join(REPO, cand)
        if os.path.exists(p):
            return p
    pytest.skip("wsb-load not built; set WSB_LOAD_BIN")


class LoadRun:
    """One wsb-load process started with `args`; result() waits for it and returns
    (exit code, summary dict)."""

    def __init__(self, args, log_path):
        self.args = [load_bin()] + [str(a) for a in args]
        self.log_path = str(log_path)
        self._err = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._err)

    def result(self, timeout):
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise AssertionError("wsb-load did not finish within %.0fs" % timeout)
        finally:
            self._err.close()
        text = out.decode("utf-8", "replace").strip()
        assert text, "wsb-load printed no summary (exit %s); stderr: %s" % (
            self.proc.returncode, open(self.log_path).read()[-2000:])
        return self.proc.returncode, json.loads(text.splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class RssSampler(threading.Thread):
    """Samples the VmRSS (KiB) of a bridge every `period` seconds until stop()."""

    def __init__(self, bridge, period=0.1):
        super().__init__(daemon=True)
        self.bridge = bridge
        self.period = period
        self.samples = []
        self._stop_evt = threading.Event()

    def cpu_s(self):
        """User + system CPU seconds of the bridge so far."""
        with open("/proc/%d/stat" % self.bridge.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self):
        self.cpu_start, self.t_start = self.cpu_s(), time.monotonic()
        while not self._stop_evt.is_set():
            try:
                self.cpu_end, self.t_end = self.cpu_s(), time.monotonic()
                self.samples.append(self.bridge.rss_kib())
            except (OSError, ValueError):
                return
            self._stop_evt.wait(self.period)

    def stop(self):
        self._stop_evt.set()
        self.join(5)
        return max(self.samples) if self.samples else 0


def record_value(seq, size):
    """A JSON record of about `size` bytes: {"seq":N,"ts":MS,"pad":"xxx..."}."""
    head = '{"seq":%d,"ts":%d,"pad":"' % (seq, int(time.time() * 1000))
    return head.encode() + b"x" * max(0, size - len(head) - 2) + b'"}'


class PacedProducer(threading.Thread):
    """Produces `count` records of ~`size` bytes to partition 0 of `topic` at about `rate`
    per second (confluent_kafka), then flushes. `done` is set at the end; `error` holds a
    failure text. A thread that got no CPU for a while produces what fell due meanwhile at
    once; with `max_late` (seconds) at most that much of it, the rest of the schedule moving
    back (never faster than `rate` beyond `max_late` worth of records). `late_max` is the
    most it fell behind its schedule, `shifted` how far the schedule moved (seconds)."""

    def __init__(self, bootstrap, topic, count, size=1024, rate=2000.0, warm_topic=None,
                 max_late=None):
        super().__init__(daemon=True)
        from kafka_helpers import producer

        self.prod = producer(bootstrap, **{"linger.ms": 2})
        self.topic, self.count, self.size, self.rate = topic, count, size, rate
        self.warm_topic = warm_topic
        self.max_late = max_late
        self.late_max = self.shifted = 0.0
        self.delivered = 0
        self.error = None
        self.left = None

    def _cb(self, err, msg):
        if err is not None:
            self.error = str(err)
        else:
            self.delivered += 1

    def run(self):
        # produce() only queues locally: until the producer is connected, paced calls would
        # pile up and leave as one burst. Fetch metadata first so the connection is up.
        # (a metadata request only opens the bootstrap connection: the partition leader's is
        # another one, so one record is produced to `warm_topic` and flushed first)
        try:
            self.prod.list_topics(self.topic, timeout=10)
            if self.warm_topic:
                self.prod.produce(self.warm_topic, value=b"{}", partition=0)
                if self.prod.flush(10) != 0:
                    raise RuntimeError("warm-up record not delivered")
        except Exception as e:  # noqa: BLE001  (reported by finish())
            self.error = "producer warm-up: %r" % e
            self.left = -1
            return
        start = time.monotonic()
        i = 0
        while i < self.count and self.error is None:
            due = start + i / self.rate
            now = time.monotonic()
            if due > now:
                self.prod.poll(min(0.005, due - now))
                continue
            self.late_max = max(self.late_max, now - due)
            if self.max_late is not None and now - due > self.max_late:
                start += now - due - self.max_late
                self.shifted += now - due - self.max_late
            try:
                self.prod.produce(self.topic, value=record_value(i, self.size), partition=0,
                                  on_delivery=self._cb)
            except BufferError:
                self.prod.poll(0.05)
                continue
            self.prod.poll(0)
            i += 1
        self.left = self.prod.flush(60)

    def finish(self, timeout=90.0):
        self.join(timeout)
        assert not self.is_alive(), "producer did not finish"
        assert self.error is None, self.error
        assert self.left == 0 and self.delivered == self.count, (
            "%d of %d delivered" % (self.delivered, self.count))


def slow_client(bridge, rcvbuf=4096, timeout=5.0):
    """A wsclient.WSClient whose socket got SO_RCVBUF=`rcvbuf` before connect (so the
    kernel's receive window stays small); handshake done, welcome read."""
    req, key = wsclient.WSClient.build_request(bridge.host, bridge.port, bridge.path,
                                               subprotocols=["wsbridge.v1"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((bridge.host, bridge.port))
    sock.sendall(req)
    status, hdrs, rest, _ = wsclient.read_http_head(sock, timeout)
    assert status == 101, "slow client handshake answered %s" % status
    assert hdrs.get("sec-websocket-accept") == wsclient.accept_key(key)
    c = wsclient.WSClient(sock, rest, 101, hdrs, None)
    c.welcome = c.recv_json(timeout)
    assert c.welcome.get("type") == "welcome", c.welcome
    return c


def drain_messages(client, idle=3.0, done=None, deadline_s=60.0):
    """Reads JSON messages until done(list) holds, or none arrives for `idle` seconds, or
    `deadline_s` passed. Returns the list. A close frame ends the read (client.closed_with
    is set to (code, reason))."""
    out = []
    client.closed_with = None
    deadline = time.monotonic() + deadline_s
    while not (done and done(out)) and time.monotonic() < deadline:
        try:
            out.append(client.recv_json(timeout=idle))
        except socket.timeout:
            break
        except wsclient.Closed as e:
            client.closed_with = (e.code, e.reason)
            break
        except wsclient.ConnectionClosed:
            client.closed_with = (1006, b"")
            break
    return out
