"""SPEC §2/§8 TLS: wss:// through OpenSSL with certificates made at test time (tls_helpers):
TLS 1.2+ with modern ciphers, certificate rotation on SIGHUP without dropping live connections,
plaintext on the TLS port, client certificates (client_ca) with the verified subject in ACL
conditions (mtls_cn / mtls_subject), drain with 1001, permessage-deflate and the send-buffer
accounting over TLS, and TLS settings that cannot be honoured stopping the server at start."""

# ctest: cost=8  (scheduling: docs/testing.md)

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

import wsclient
from conftest import bridge_bin, default_config, free_port, http_get, raw_exchange
from tls_helpers import CA, client_context, peer_cn


@pytest.fixture
def pki(tmp_path):
    class P:
        pass
    p = P()
    p.dir = tmp_path
    p.ca = CA("wsbridge test server CA")
    p.ca_path = p.ca.write_ca(tmp_path, "server-ca")
    p.cert, p.key, _ = p.ca.write_leaf(tmp_path, "server", "server-one")
    p.client_ca = CA("wsbridge test client CA")
    p.client_ca_path = p.client_ca.write_ca(tmp_path, "client-ca")
    p.alice = p.client_ca.write_leaf(tmp_path, "alice", "alice", server=False)
    p.bob = p.client_ca.write_leaf(tmp_path, "bob", "bob", server=False)
    p.rogue_ca = CA("somebody else's CA")
    p.mallory = p.rogue_ca.write_leaf(tmp_path, "mallory", "alice", server=False)
    return p


def tls_bridge(bridge_factory, pki, extra=None, client_ca=False):
    tls = {"cert": pki.cert, "key": pki.key}
    if client_ca:
        tls["client_ca"] = pki.client_ca_path
    over = {"tls": tls}
    over.update(extra or {})
    return bridge_factory(over)


def wss(b, ctx, **kw):
    return b.connect(ssl_context=ctx, **kw)


def test_wss_round_trip_with_a_test_ca(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki)
    ctx = client_context(pki.ca_path)
    sub = wss(b, ctx)
    assert sub.welcome["protocol"] == "wsbridge.v1"
    assert sub.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert peer_cn(sub) == "server-one"
    assert sub.request({"op": "subscribe", "id": 1, "channel": "mem.t"})["type"] == "subscribed"
    pub = wss(b, ctx)
    assert pub.request({"op": "publish", "id": 2, "channel": "mem.t",
                        "data": {"x": 1}})["type"] == "published"
    m = sub.recv_json()
    assert m["type"] == "message" and m["data"] == {"x": 1}
    # ALPN: a client offering h2 and http/1.1 gets http/1.1 (a WebSocket upgrade is HTTP/1.1).
    actx = client_context(pki.ca_path)
    actx.set_alpn_protocols(["h2", "http/1.1"])
    c = wss(b, actx)
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    # The admin listener stays plain HTTP.
    assert http_get(b.admin_url + "/healthz")[0] == 200
    # /clients says the connection is TLS.
    _, _, body = b.admin_get("/clients")
    assert {c["tls"] for c in json.loads(body)["clients"]} == {True}


def test_tls12_only_modern_ciphers(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki)
    c = wss(b, client_context(pki.ca_path, max_version=ssl.TLSVersion.TLSv1_2))
    assert c.sock.version() == "TLSv1.2"
    name, _, bits = c.sock.cipher()
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name
    # A client that offers only RSA key exchange with CBC (no forward secrecy) is refused.
    ctx = client_context(pki.ca_path, max_version=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        wss(b, ctx)
    # TLS 1.1 is refused (the client may refuse to even try: either way no connection).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = client_context(pki.ca_path, max_version=ssl.TLSVersion.TLSv1_1)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        ctx = None
    if ctx is not None:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            wss(b, ctx)
    assert b.alive()


def test_sighup_swaps_the_certificate_and_keeps_live_connections(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki)
    ctx = client_context(pki.ca_path)
    old = wss(b, ctx)
    assert peer_cn(old) == "server-one"
    assert old.request({"op": "subscribe", "id": 1, "channel": "mem.rot"})["type"] == "subscribed"
    pub = wss(b, ctx)

    def publish(i):
        pub.send_json({"op": "publish", "id": i, "channel": "mem.rot", "data": i})

    def confirmed(ids):
        # Each batch is confirmed before the next: more than max_inflight_publishes (64)
        # unconfirmed would be refused with rate_limited on a slow (loaded) machine.
        answers = [pub.recv_json(timeout=10) for _ in ids]
        assert sorted((a["type"], a["id"]) for a in answers) == [("published", i) for i in ids]

    for i in range(50):
        publish(i)
    confirmed(range(50))
    # Replace the files the way a deployment does (write new files, rename over the old).
    new_crt, new_key, _ = pki.ca.write_leaf(pki.dir, "server-two", "server-two")
    os.replace(new_crt, pki.cert)
    os.replace(new_key, pki.key)
    b.proc.send_signal(signal.SIGHUP)
    assert b.wait_log(lambda r: r.get("msg") == "tls certificate loaded"
                      and "server-two" in r.get("certificate", ""), timeout=5), b.logs()[-2000:]
    for i in range(50, 100):
        publish(i)
    confirmed(range(50, 100))
    # New connections see the new certificate...
    new = wss(b, ctx)
    assert peer_cn(new) == "server-two"
    # ...while the old connection kept streaming, in order, nothing lost.
    got = []
    while len(got) < 100:
        m = old.recv_json(timeout=5)
        if m["type"] == "message":
            got.append(m["data"])
    assert got == list(range(100))
    assert peer_cn(old) == "server-one"
    for i in range(100, 110):
        publish(i)
    assert [old.recv_json()["data"] for _ in range(10)] == list(range(100, 110))


def test_changed_files_are_picked_up_without_a_signal(bridge_factory, pki):
    """tls.watch_interval_ms: replacing the files is enough (a renewed Kubernetes Secret)."""
    b = tls_bridge(bridge_factory, pki, {"tls": {"cert": pki.cert, "key": pki.key,
                                                 "watch_interval_ms": 200}})
    ctx = client_context(pki.ca_path)
    old = wss(b, ctx)
    assert old.request({"op": "subscribe", "id": 1, "channel": "mem.w"})["type"] == "subscribed"
    # Nothing changed: no reload.
    time.sleep(1.5)
    assert not b.wait_log(lambda r: r.get("msg") == "tls files changed; reloading", timeout=0.1)
    # A certificate and a key that do not match yet (the key is written second): logged and
    # kept; once the key arrives too, the new pair is served.
    new_crt, new_key, _ = pki.ca.write_leaf(pki.dir, "server-three", "server-three")
    os.replace(new_crt, pki.cert)
    assert b.wait_log(lambda r: r.get("msg") == "reload failed; keeping the running configuration",
                      timeout=5), b.logs()[-2000:]
    assert peer_cn(wss(b, ctx)) == "server-one"
    os.replace(new_key, pki.key)
    assert b.wait_log(lambda r: r.get("msg") == "tls certificate loaded"
                      and "server-three" in r.get("certificate", ""), timeout=5), b.logs()[-2000:]
    assert peer_cn(wss(b, ctx)) == "server-three"
    pub = wss(b, ctx)
    assert pub.request({"op": "publish", "id": 2, "channel": "mem.w", "data": 7})["type"] == "published"
    assert old.recv_json()["data"] == 7
    assert peer_cn(old) == "server-one"


def test_sighup_with_a_broken_certificate_keeps_the_old_one(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki)
    ctx = client_context(pki.ca_path)
    live = wss(b, ctx)
    # A key that does not belong to the certificate.
    other_crt, other_key, _ = pki.ca.write_leaf(pki.dir, "other", "other")
    shutil.copy(other_key, pki.key)
    b.proc.send_signal(signal.SIGHUP)
    rec = b.wait_log(lambda r: "tls.key" in json.dumps(r) and r.get("level") in ("error", "warn"),
                     timeout=5)
    assert rec, b.logs()[-2000:]
    assert "does not match" in json.dumps(rec)
    c = wss(b, ctx)
    assert peer_cn(c) == "server-one"
    assert live.request({"op": "subscribe", "id": 1, "channel": "mem.k"})["type"] == "subscribed"


def test_plaintext_and_garbage_on_the_tls_port(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki, {"limits": {"handshake_timeout_ms": 1000}})
    req, _ = wsclient.WSClient.build_request(b.host, b.port, "/ws")
    data, closed = raw_exchange(b.host, b.port, req, timeout=5)
    assert closed
    assert b"HTTP/1.1 101" not in data
    data, closed = raw_exchange(b.host, b.port, os.urandom(3000), timeout=5)
    assert closed
    # A client that opens TCP and says nothing is closed after the handshake timeout.
    s = socket.create_connection((b.host, b.port), timeout=5)
    t0 = time.monotonic()
    s.settimeout(5)
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 < 4
    s.close()
    # Many half-done TLS handshakes at once do not wedge it.
    socks = []
    for _ in range(50):
        s = socket.create_connection((b.host, b.port), timeout=5)
        s.sendall(b"\x16\x03\x01\x00\xff")  # a ClientHello record header, then nothing
        socks.append(s)
    c = wss(b, client_context(pki.ca_path))
    assert c.request({"op": "subscribe", "id": 1, "channel": "mem.p"})["type"] == "subscribed"
    for s in socks:
        s.close()
    assert b.alive() and b.healthz() == 200


def test_client_ca_refuses_without_a_certificate_and_admits_with_one(bridge_factory, pki):
    acl = [{"when": {"claim": "mtls_cn", "equals": "alice"}, "subscribe": ["mem.alice.**"]},
           {"subscribe": ["mem.cn.{claim.mtls_cn}"]}]
    b = tls_bridge(bridge_factory, pki, {"acl": acl}, client_ca=True)
    # No certificate: the TLS handshake fails (TLS 1.3 reports it at the first read).
    with pytest.raises((ssl.SSLError, wsclient.ConnectionClosed, ConnectionError)):
        wss(b, client_context(pki.ca_path))
    # A certificate from another CA, even with the right name: refused.
    crt, key, _ = pki.mallory
    with pytest.raises((ssl.SSLError, wsclient.ConnectionClosed, ConnectionError)):
        wss(b, client_context(pki.ca_path, crt, key))
    # alice: admitted; the ACL sees her certificate's subject.
    crt, key, _ = pki.alice
    alice = wss(b, client_context(pki.ca_path, crt, key))
    assert alice.request({"op": "subscribe", "id": 1,
                          "channel": "mem.alice.x"})["type"] == "subscribed"
    assert alice.request({"op": "subscribe", "id": 2,
                          "channel": "mem.cn.alice"})["type"] == "subscribed"
    r = alice.request({"op": "subscribe", "id": 3, "channel": "mem.cn.bob"})
    assert r["type"] == "error" and r["code"] == "forbidden"
    # bob: admitted, but the alice-only rule does not apply.
    crt, key, _ = pki.bob
    bob = wss(b, client_context(pki.ca_path, crt, key))
    r = bob.request({"op": "subscribe", "id": 1, "channel": "mem.alice.x"})
    assert r["type"] == "error" and r["code"] == "forbidden"
    assert bob.request({"op": "subscribe", "id": 2, "channel": "mem.cn.bob"})["type"] == "subscribed"
    assert b.alive()


def test_token_cannot_claim_a_certificate_subject(bridge_factory, pki, tmp_path):
    """With auth and client_ca: a token claiming mtls_cn=alice does not make bob alice."""
    import jwt as pyjwt
    secret = "s" * 32
    acl = [{"when": {"claim": "mtls_cn", "equals": "alice"}, "subscribe": ["mem.alice.**"]},
           {"subscribe": ["mem.pub.**"]}]
    b = tls_bridge(bridge_factory, pki,
                   {"acl": acl, "auth": {"jwt": {"algorithms": ["HS256"],
                                                 "keys": [{"secret": secret}]}}},
                   client_ca=True)
    tok = pyjwt.encode({"sub": "bob", "exp": int(time.time()) + 600, "mtls_cn": "alice",
                        "mtls_subject": "CN=alice"}, secret, algorithm="HS256")
    crt, key, _ = pki.bob
    bob = wss(b, client_context(pki.ca_path, crt, key),
              headers={"Authorization": "Bearer " + tok})
    assert bob.welcome["sub"] == "bob"
    r = bob.request({"op": "subscribe", "id": 1, "channel": "mem.alice.x"})
    assert r["type"] == "error" and r["code"] == "forbidden"
    assert bob.request({"op": "subscribe", "id": 2, "channel": "mem.pub.x"})["type"] == "subscribed"
    crt, key, _ = pki.alice
    alice = wss(b, client_context(pki.ca_path, crt, key),
                headers={"Authorization": "Bearer " + tok})
    assert alice.request({"op": "subscribe", "id": 1,
                          "channel": "mem.alice.x"})["type"] == "subscribed"


def test_sigterm_closes_tls_clients_with_1001(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki, {"drain_timeout_ms": 3000})
    ctx = client_context(pki.ca_path)
    clients = [wss(b, ctx) for _ in range(10)]
    for i, c in enumerate(clients):
        assert c.request({"op": "subscribe", "id": 1, "channel": "mem.d%d" % i})["type"] == "subscribed"
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    for c in clients:
        code, _ = c.expect_close(timeout=5)
        assert code == 1001
    assert b.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 3.0 + 1.0


def test_deflate_and_send_buffer_over_tls(bridge_factory, pki):
    b = tls_bridge(bridge_factory, pki, {
        "limits": {"send_buffer": {"soft_bytes": 512 << 10, "soft_seconds": 60,
                                   "hard_bytes": 1 << 20, "policy": "disconnect"},
                   "max_inflight_publishes": 1000}})
    ctx = client_context(pki.ca_path)
    fast = wss(b, ctx, extensions="permessage-deflate")
    assert fast.deflate is not None
    assert fast.request({"op": "subscribe", "id": 1, "channel": "mem.f"})["type"] == "subscribed"
    slow = wss(b, ctx)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert slow.request({"op": "subscribe", "id": 1, "channel": "mem.f"})["type"] == "subscribed"
    pub = wss(b, ctx)
    payload = "compressible " * 2000  # 26 KB, deflates well
    n = 300
    for i in range(n):
        pub.send_json({"op": "publish", "id": i, "channel": "mem.f", "data": {"i": i, "p": payload}})
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        m = fast.recv_json(timeout=10)
        if m["type"] == "message":
            got.append(m["data"]["i"])
            assert m["data"]["p"] == payload
    assert got == list(range(n))
    # The slow TLS reader crossed the 1 MiB hard limit: closed with 4408. What the TLS layer has
    # not written to the socket counts against it (the fast reader, same messages, is fine).
    m = b.wait_metric("wsbridge_disconnects_total", lambda v: v >= 1, timeout=10, code="4408")
    assert m.value("wsbridge_disconnects_total", code="4408") == 1
    rec = b.wait_log(lambda r: r.get("msg") == "slow consumer disconnected", timeout=2)
    assert rec and rec["queued"] > (1 << 20), rec
    # The bridge let go of it (its kernel buffer may still hold data for the stalled reader).
    deadline = time.monotonic() + 5
    while True:
        _, _, body = b.admin_get("/clients?sort=age")
        sessions = [c["session"] for c in json.loads(body)["clients"]]
        if slow.welcome["session"] not in sessions or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sessions == [fast.welcome["session"], pub.welcome["session"]]
    assert fast.request({"op": "subscribe", "id": 9, "channel": "mem.g"})["type"] == "subscribed"


def start_fails(tmp_path, tls):
    port, admin = free_port(), free_port()
    cfg = default_config(port, admin)
    cfg["tls"] = tls
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = subprocess.run([bridge_bin(), "-c", str(p)], capture_output=True, text=True, timeout=20)
    return r.returncode, r.stderr


def test_tls_settings_that_cannot_be_honoured_stop_the_start(pki, tmp_path):
    missing = str(tmp_path / "nope.crt")
    rc, err = start_fails(tmp_path, {"cert": missing, "key": pki.key})
    assert rc == 1 and "tls.cert " + missing in err and "No such file" in err, err
    other_crt, other_key, _ = pki.ca.write_leaf(tmp_path, "other", "other")
    rc, err = start_fails(tmp_path, {"cert": pki.cert, "key": other_key})
    assert rc == 1 and "tls.key" in err and "does not match" in err, err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    rc, err = start_fails(tmp_path, {"cert": str(garbage), "key": pki.key})
    assert rc == 1 and "tls.cert" in err, err
    rc, err = start_fails(tmp_path, {"cert": pki.cert, "key": pki.key, "client_ca": str(garbage)})
    assert rc == 1 and "tls.client_ca" in err, err
    # One line, no crash.
    assert len(err.strip().splitlines()) >= 1 and "Sanitizer" not in err
