"""A raw-socket WebSocket test client (RFC 6455 + RFC 7692) for the wsbridge integration
tests. Unlike a library client it builds frames of any shape — unmasked, RSV bits, unknown
opcodes, fragmented or oversized control frames, lying 64-bit lengths, split across TCP
writes — and reports exactly what the server sent back, including how it closed.

Every blocking call takes a timeout; nothing here can hang a test.

    c = WSClient.connect("127.0.0.1", port, "/ws", subprotocols=["wsbridge.v1"])
    welcome = c.recv_json()
    c.send_json({"op": "subscribe", "id": 1, "channel": "mem.a"})
    c.send_frame(OP_TEXT, b"x", rsv2=True)
    code, reason = c.expect_close()     # reads until the server's close frame
    assert c.wait_tcp_closed()
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

DEFAULT_TIMEOUT = 5.0
MAX_HEAD = 65536


class HandshakeError(AssertionError):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw = raw
        super().__init__("handshake refused: %s %r" % (status, body[:300]))

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class ConnectionClosed(AssertionError):
    """TCP closed (EOF or reset) while a frame was expected."""


class Closed(AssertionError):
    """A close frame arrived where a data message was expected."""

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason
        super().__init__("server closed the WebSocket: code=%s reason=%r" % (code, reason))


class Frame:
    __slots__ = ("fin", "rsv1", "rsv2", "rsv3", "opcode", "masked", "payload")

    def __init__(self, fin, rsv1, rsv2, rsv3, opcode, masked, payload):
        self.fin, self.rsv1, self.rsv2, self.rsv3 = fin, rsv1, rsv2, rsv3
        self.opcode, self.masked, self.payload = opcode, masked, payload

    def close_code(self):
        """(code, reason bytes) of a close frame; code None when the payload is empty."""
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0], self.payload[2:]
        return None, self.payload

    def __repr__(self):
        p = self.payload if len(self.payload) <= 60 else self.payload[:60] + b"..."
        return "Frame(op=%#x fin=%d rsv=%d%d%d masked=%d len=%d %r)" % (
            self.opcode, self.fin, self.rsv1, self.rsv2, self.rsv3, self.masked,
            len(self.payload), p)


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def build_frame(opcode, payload=b"", fin=True, rsv1=False, rsv2=False, rsv3=False, mask=True,
                mask_key=None, length=None, length_form=None):
    """Builds one frame. `length` overrides the length written in the header (lying
    headers); `length_form` forces the encoding: 7, 16 or 64 (bits of the length field)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | \
        (0x10 if rsv3 else 0) | (opcode & 0x0F)
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if length_form is None:
        length_form = 7 if n <= 125 else (16 if n <= 0xFFFF else 64)
    if length_form == 7:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif length_form == 16:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        hdr += key
        payload = apply_mask(payload, key)
    return hdr + payload


def apply_mask(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def deflate_message(data, wbits=15, level=6):
    """RFC 7692 §7.2.1: raw deflate with a sync flush, the 00 00 ff ff tail removed."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def parse_extensions(value):
    """'permessage-deflate; a; b=1, x' -> [("permessage-deflate", {"a": None, "b": "1"}),
    ("x", {})]."""
    out = []
    for ext in (value or "").split(","):
        parts = [p.strip() for p in ext.split(";") if p.strip()]
        if not parts:
            continue
        params = {}
        for p in parts[1:]:
            k, eq, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"') if eq else None
        out.append((parts[0].lower(), params))
    return out


class WSClient:
    def __init__(self, sock, buf=b"", status=101, headers=None, deflate=None):
        self.sock = sock
        self.buf = buf
        self.status = status
        self.headers = headers or {}
        self.deflate = deflate  # dict of negotiated params, or None
        self.eof = False
        self.send_failed = None
        self.welcome = None
        self.trailing = b""
        self.pings_answered = 0
        self._inflater = None

    # ---- handshake -----------------------------------------------------------------

    @staticmethod
    def build_request(host, port, path="/ws", headers=None, key=None, subprotocols=None,
                      extensions=None, method="GET", version="HTTP/1.1", ws_version="13",
                      omit=()):
        """The upgrade request bytes. `omit` names default headers to leave out
        (e.g. ("Upgrade",)). `headers` is a list of (name, value) or a dict, appended."""
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        default = [
            ("Host", "%s:%d" % (host, port)),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", ws_version),
        ]
        if subprotocols:
            default.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
        if extensions:
            default.append(("Sec-WebSocket-Extensions", extensions))
        omit_l = {o.lower() for o in omit}
        lines = ["%s %s %s" % (method, path, version)]
        for k, v in default:
            if k.lower() not in omit_l:
                lines.append("%s: %s" % (k, v))
        extra = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in extra:
            lines.append("%s: %s" % (k, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), key

    @classmethod
    def connect(cls, host, port, path="/ws", headers=None, subprotocols=None, extensions=None,
                timeout=DEFAULT_TIMEOUT, expect_status=101, source_address=None, ssl_context=None,
                server_hostname=None, **kw):
        """Opens TCP (wrapped in TLS with `ssl_context`: wss://), sends the upgrade and reads
        the response head. Returns a WSClient on 101 (Sec-WebSocket-Accept checked); raises
        HandshakeError otherwise (the body is read per Content-Length, or until close, within
        `timeout`). `source_address` binds the client side, e.g. ("127.0.0.2", 0) to come from
        another loopback address."""
        req, key = cls.build_request(host, port, path, headers=headers, subprotocols=subprotocols,
                                     extensions=extensions, **kw)
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=source_address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            except Exception:
                sock.close()
                raise
        try:
            sock.sendall(req)
            status, hdrs, rest, raw_head = read_http_head(sock, timeout)
        except Exception:
            sock.close()
            raise
        if status != 101:
            body = read_http_body(sock, hdrs, rest, timeout)
            sock.close()
            raise HandshakeError(status, hdrs, body, raw_head + body)
        want = accept_key(key)
        got = hdrs.get("sec-websocket-accept")
        if got != want:
            sock.close()
            raise AssertionError("bad Sec-WebSocket-Accept %r, want %r" % (got, want))
        deflate = None
        for name, params in parse_extensions(hdrs.get("sec-websocket-extensions")):
            if name == "permessage-deflate":
                deflate = params
        c = cls(sock, rest, 101, hdrs, deflate)
        c.key = key
        return c

    # ---- sending -------------------------------------------------------------------

    def send_raw(self, data):
        """Sends bytes. A peer that already closed (EPIPE/ECONNRESET) is not an error here:
        tests that break the protocol expect the server to close mid-send. The failure is
        recorded in self.send_failed; the next read reports the close."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            self.send_failed = e

    def send_frame(self, opcode, payload=b"", **kw):
        self.send_raw(build_frame(opcode, payload, **kw))

    def send_text(self, text, compress=False, fin=True):
        data = text.encode("utf-8") if isinstance(text, str) else text
        if compress:
            data = self.compress(data)
        self.send_frame(OP_TEXT, data, fin=fin, rsv1=compress)

    def send_binary(self, data, compress=False):
        if compress:
            data = self.compress(data)
        self.send_frame(OP_BINARY, data, rsv1=compress)

    def send_json(self, obj, compress=False):
        self.send_text(json.dumps(obj, separators=(",", ":")), compress=compress)

    def send_fragments(self, opcode, chunks, rsv1_first=False):
        """Sends one message as len(chunks) frames."""
        for i, ch in enumerate(chunks):
            self.send_frame(opcode if i == 0 else OP_CONT, ch, fin=(i == len(chunks) - 1),
                            rsv1=(rsv1_first and i == 0))

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def pong(self, payload=b""):
        self.send_frame(OP_PONG, payload)

    def send_close(self, code=None, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def compress(self, data):
        wbits = 15
        if self.deflate and self.deflate.get("client_max_window_bits"):
            wbits = int(self.deflate["client_max_window_bits"])
        return deflate_message(data, wbits=max(9, wbits))

    # ---- receiving -----------------------------------------------------------------

    def _fill(self, need, deadline):
        while len(self.buf) < need:
            if self.eof:
                raise ConnectionClosed("TCP closed with %d of %d bytes buffered"
                                       % (len(self.buf), need))
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for a frame")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, ssl.SSLError):  # a TLS alert or an unclean end
                chunk = b""
            if not chunk:
                self.eof = True
                continue
            self.buf += chunk

    def recv_frame(self, timeout=DEFAULT_TIMEOUT):
        """Reads one raw frame. Raises ConnectionClosed on EOF, socket.timeout."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            self._fill(off + 4, deadline)
            key = self.buf[off:off + 4]
            off += 4
        assert n < (64 << 20), "server frame of %d bytes" % n
        self._fill(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        if masked:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10),
                     b0 & 0x0F, masked, payload)

    def recv_message(self, timeout=DEFAULT_TIMEOUT, auto_pong=True, return_control=False):
        """Reads one whole data message: returns (opcode, payload bytes) with fragments
        joined and permessage-deflate undone. Pings are answered (auto_pong) and skipped,
        pongs skipped; with return_control, control frames are returned as
        (opcode, payload). A close frame raises Closed(code, reason)."""
        deadline = time.monotonic() + timeout
        parts = []
        opcode = None
        compressed = False
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            assert not f.masked, "server frame is masked: %r" % f
            if f.opcode >= 0x8:
                if f.opcode == OP_CLOSE:
                    code, reason = f.close_code()
                    raise Closed(code, reason)
                if return_control:
                    return f.opcode, f.payload
                if f.opcode == OP_PING and auto_pong:
                    self.pong(f.payload)
                    self.pings_answered += 1
                continue
            if opcode is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), "unexpected server frame %r" % f
                opcode = f.opcode
                compressed = f.rsv1
                assert not compressed or self.deflate is not None, \
                    "RSV1 set without permessage-deflate: %r" % f
            else:
                assert f.opcode == OP_CONT, "server interleaved a new message: %r" % f
                assert not f.rsv1, "RSV1 on a continuation frame: %r" % f
            assert not f.rsv2 and not f.rsv3, "server set RSV2/3: %r" % f
            parts.append(f.payload)
            if f.fin:
                break
        data = b"".join(parts)
        if compressed:
            data = self.inflate(data)
        self.last_compressed = compressed
        return opcode, data

    def inflate(self, data):
        wbits = 15
        if self.deflate and self.deflate.get("server_max_window_bits"):
            wbits = int(self.deflate["server_max_window_bits"])
        if self.deflate is not None and "server_no_context_takeover" in self.deflate:
            d = zlib.decompressobj(-wbits)
        else:
            if self._inflater is None:
                self._inflater = zlib.decompressobj(-wbits)
            d = self._inflater
        return d.decompress(data + b"\x00\x00\xff\xff", 64 << 20)

    def recv_text(self, timeout=DEFAULT_TIMEOUT):
        op, data = self.recv_message(timeout)
        assert op == OP_TEXT, "expected a text message, got opcode %#x: %r" % (op, data[:200])
        return data.decode("utf-8")

    def recv_json(self, timeout=DEFAULT_TIMEOUT):
        return json.loads(self.recv_text(timeout))

    def recv_until(self, pred, timeout=DEFAULT_TIMEOUT):
        """Reads JSON messages until pred(msg); returns (msg, skipped list)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no matching message within %.1fs; got %r"
                                     % (timeout, skipped[-5:]))
            m = self.recv_json(left)
            if pred(m):
                return m, skipped
            skipped.append(m)

    def request(self, obj, timeout=DEFAULT_TIMEOUT):
        """Sends a request with an id and returns the reply carrying the same id (other
        messages in between are skipped)."""
        self.send_json(obj)
        rid = obj.get("id")
        m, _ = self.recv_until(lambda x: x.get("id") == rid and x.get("type") != "message",
                               timeout)
        return m

    def expect_close(self, timeout=DEFAULT_TIMEOUT, echo=True):
        """Reads frames until the server's close frame (data frames and pings are skipped;
        they are kept in self.skipped). Returns (code, reason bytes), code None for an empty
        close payload. With echo, answers with a close frame of the same code (when the
        socket is still writable). Raises ConnectionClosed when TCP closes with no close
        frame."""
        deadline = time.monotonic() + timeout
        self.skipped = []
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                code, reason = f.close_code()
                if echo:
                    try:
                        self.sock.sendall(build_frame(OP_CLOSE, close_payload(code)))
                    except OSError:
                        pass
                return code, reason
            self.skipped.append(f)

    def wait_tcp_closed(self, timeout=DEFAULT_TIMEOUT):
        """True when the server closes TCP (EOF or reset) within `timeout`; bytes arriving
        meanwhile are discarded (kept in self.trailing)."""
        if self.eof:
            self.trailing = self.buf
            return True
        deadline = time.monotonic() + timeout
        self.trailing = self.buf
        self.buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return False
            except (ConnectionResetError, OSError):  # ssl.SSLError is an OSError
                self.eof = True
                return True
            if not chunk:
                self.eof = True
                return True
            self.trailing += chunk
        return False

    def close_handshake(self, code=1000, reason=b"", timeout=DEFAULT_TIMEOUT):
        """Client-initiated close: sends close(code), reads the server's close, checks TCP
        then closes. Returns the server's (code, reason)."""
        self.send_close(code, reason)
        got = self.expect_close(timeout, echo=False)
        assert self.wait_tcp_closed(timeout), "TCP still open after the close handshake"
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_http_head(sock, timeout=DEFAULT_TIMEOUT):
    """Reads an HTTP response head. Returns (status, headers lower-case dict with repeated
    headers joined by ', ', rest bytes after the head, raw head bytes). Raises
    ConnectionClosed when the peer closes before a full head."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no HTTP response head within %.1fs (got %r)"
                                 % (timeout, data[:200]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("connection closed before a response head (got %r)"
                                   % data[:200])
        data += chunk
        assert len(data) < MAX_HEAD, "response head too long"
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert len(parts) >= 2 and parts[0] in ("HTTP/1.1", "HTTP/1.0"), \
        "bad status line %r" % lines[0]
    status = int(parts[1])
    hdrs = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        hdrs[name] = hdrs[name] + ", " + value if name in hdrs else value
    return status, hdrs, rest, head + b"\r\n\r\n"


def read_http_body(sock, hdrs, rest, timeout=DEFAULT_TIMEOUT):
    """Reads a body per Content-Length, or until close (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    want = int(hdrs["content-length"]) if "content-length" in hdrs else None
    body = rest
    while want is None or len(body) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        body += chunk
    return body[:want] if want is not None else body


def raw_upgrade(host, port, request_bytes, timeout=DEFAULT_TIMEOUT):
    """Sends arbitrary request bytes and reads the answer. Returns (status, headers, body,
    closed) where closed tells whether the server closed TCP within `timeout` after the
    response (status None when the server closed or timed out with no response head)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request_bytes)
        try:
            status, hdrs, rest, _ = read_http_head(sock, timeout)
        except ConnectionClosed:
            return None, {}, b"", True
        except socket.timeout:
            return None, {}, b"", False
        if status == 101:
            return status, hdrs, rest, False
        body = read_http_body(sock, hdrs, rest, timeout)
        closed = _wait_eof(sock, timeout)
        return status, hdrs, body, closed
    finally:
        sock.close()


def _wait_eof(sock, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, OSError):
            return True
        if not chunk:
            return True
    return False
