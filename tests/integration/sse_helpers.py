"""A plain-socket Server-Sent Events client for the SSE tests (test_66_sse): the request
head by hand, the event-stream parsed as the HTML standard says (fields, comments, blank
line ends an event, several data lines joined with "\\n"), and helpers for the bridge's
resume token (`id:`). Every read is bounded by a timeout; nothing here can hang a test.

    s = SSEClient.open(port, "/sse?channel=orders")
    ev = s.next_event()              # {"event": "welcome", "data": {...}, "id": None}
"""

import base64
import http.client
import json
import socket
import struct
import time


class StreamEnded(AssertionError):
    """The server closed the stream."""


class SSEClient:
    def __init__(self, sock, status, headers, body):
        self.sock = sock
        self.status = status
        self.headers = headers
        self.buf = body
        self.last_id = None
        self.comments = 0

    @classmethod
    def open(cls, port, target, headers=None, timeout=5.0, rcvbuf=None, host="127.0.0.1"):
        """GET target; returns the client once the response head arrived (any status)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        lines = ["GET %s HTTP/1.1" % target, "Host: %s:%d" % (host, port),
                 "Accept: text/event-stream"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        first, *hl = head.decode("latin-1").split("\r\n")
        status = int(first.split()[1])
        hdrs = {}
        for line in hl:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return cls(sock, status, hdrs, rest)

    def read_body(self, timeout=5.0):
        """The rest of a non-stream answer (until Content-Length or close)."""
        n = int(self.headers.get("content-length", "-1"))
        deadline = time.monotonic() + timeout
        while (n < 0 or len(self.buf) < n) and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf[:n] if n >= 0 else self.buf

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no event in time")
        self.sock.settimeout(left)
        chunk = self.sock.recv(262144)
        if not chunk:
            raise StreamEnded("stream closed by the server")
        self.buf += chunk

    def next_event(self, timeout=5.0):
        """The next event: {"event", "data" (parsed JSON), "id"}; comments are counted."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" not in self.buf:
                self._fill(deadline)
            block, _, self.buf = self.buf.partition(b"\n\n")
            ev, data, eid = "message", [], None
            for line in block.decode("utf-8").split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if name == "event":
                    ev = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    eid = value
            if eid is not None:
                self.last_id = eid
            if not data:
                continue  # retry: or a comment block
            return {"event": ev, "data": json.loads("\n".join(data)), "id": eid}

    def events(self, n, kind="message", timeout=10.0):
        """The next n events of `kind`; any other event fails unless it is subscribed or
        welcome."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, "got %d of %d %s events" % (len(out), n, kind)
            e = self.next_event(timeout=left)
            if e["event"] == kind:
                out.append(e)
            else:
                assert e["event"] in ("welcome", "subscribed"), e
        return out

    def until(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            e = self.next_event(timeout=max(0.01, deadline - time.monotonic()))
            if pred(e):
                return e

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def decode_token(tok):
    """The bridge's resume token as {hash: {partition: next_offset}}."""
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    assert raw[0] == 1, raw
    at, out = 1, {}

    def varint():
        nonlocal at
        x, shift = 0, 0
        while True:
            c = raw[at]
            at += 1
            x |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return x

    while at < len(raw):
        (h,) = struct.unpack_from("<I", raw, at)
        at += 4
        parts = {}
        for _ in range(varint()):
            p = varint()
            parts[p] = varint()
        out[h] = parts
    return out


def post_publish(port, body, headers=None, timeout=10.0):
    """POST /publish; returns (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        conn.request("POST", "/publish", body=raw, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        conn.close()
