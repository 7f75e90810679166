#!/usr/bin/python3
"""Memory per idle connection over wss:// next to ws:// (docs/deployment.md, "Memory"; the
TLS counterpart of the suite's S4): one bridge per transport with suite.py's S4 config (2
workers, JWT HS256, the memory connector) plus a `tls` section with a P-256 certificate made
here, then N Python clients that each finish the TLS handshake (TLS 1.3, the default), the
upgrade with a token in the query, and a subscribe, and then stay idle. The figure is the
bridge's RSS (all its processes, /proc/PID/status VmRSS) after 2 s idle minus before
connecting, per subscribed connection.

    bench/tls_idle.py [--build build] [--clients 2000] [--transports tls,plain]

Prints one JSON line per transport. Not part of bench/run.sh's table (wsb-load speaks no
TLS); loopback only.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import suite  # noqa: E402
from benchlib import free_port, open_limits, start_bridge  # noqa: E402


def make_cert(d):
    key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def frame(obj):
    """A masked client text frame (payload < 126 bytes)."""
    data = json.dumps(obj).encode()
    mask = os.urandom(4)
    return (bytes([0x81, 0x80 | len(data)]) + mask +
            bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def read_until(sock, token, buf=b"", timeout=10.0):
    deadline = time.monotonic() + timeout
    while token not in buf:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed by the server: %r" % buf[:200])
        buf += chunk
    return buf


def open_client(port, token, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wsbridge.v1\r\n\r\n"
               % (token, port, key)).encode())
    buf = read_until(s, b"\r\n\r\n")
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError("upgrade refused: %r" % buf[:200])
    s.sendall(frame({"op": "subscribe", "id": 1, "channel": "bench"}))
    read_until(s, b'"subscribed"', buf)
    return s


def measure(a, transport, tmp):
    keys = suite.Keys(tmp)
    port, admin = free_port(), free_port()
    cfg = {
        "listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
        "workers": 2,
        "auth": {"token_sources": ["query", "header"],
                 "jwt": {"algorithms": ["HS256"], "keys": [{"secret": keys.secret}],
                         "issuer": "https://bench/", "audience": "wsbridge"}},
        "acl": [{"subscribe": ["**"]}],
        "connectors": {"m": {"type": "memory"}},
        "channels": [{"match": "bench", "connector": "m", "topic": "bench"}],
        "limits": open_limits(1000000),
        "log": {"level": "error"},
    }
    ctx = None
    if transport == "tls":
        cert, key = make_cert(tmp)
        cfg["tls"] = {"cert": cert, "key": key}
        ctx = ssl.create_default_context(cafile=cert)
    bridge = start_bridge(a.build, cfg, os.path.join(tmp, transport + ".json"),
                          os.path.join(tmp, transport + ".log"), admin)
    clients = []
    try:
        time.sleep(0.5)
        before = suite.rss_kib([bridge.pid])
        token = keys.token("HS256")
        t0 = time.monotonic()
        for _ in range(a.clients):
            clients.append(open_client(port, token, ctx))
        connect_s = time.monotonic() - t0
        time.sleep(2)  # idle: the idle tick gives empty buffers back
        after = suite.rss_kib([bridge.pid])
        return {"transport": transport, "clients": len(clients), "rss_before_kib": before,
                "rss_after_kib": after,
                "per_conn_kib": round((after - before) / max(1, len(clients)), 2),
                "connect_s": round(connect_s, 1),
                "tls_version": clients[0].version() if ctx and clients else None}
    finally:
        for c in clients:
            c.close()
        bridge.terminate()
        bridge.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(suite.REPO, "build"))
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--transports", default="tls,plain")
    a = ap.parse_args()
    for t in a.transports.split(","):
        with tempfile.TemporaryDirectory(prefix="wsb-tls-idle-") as tmp:
            print(json.dumps(measure(a, t, tmp)), flush=True)


if __name__ == "__main__":
    main()
