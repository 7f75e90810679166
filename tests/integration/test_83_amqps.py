"""The AMQP connector over TLS (amqps) against a real rabbitmq-server with a TLS listener.

A throwaway PKI is made with the `openssl` command at test time in a temp dir: a CA, a server
certificate for `localhost` and 127.0.0.2 (not 127.0.0.1), a client certificate of the same
CA, and a second CA with a client certificate of its own. The node (amqp_helpers.RabbitMQ
with `tls`) listens for AMQPS on 127.0.0.1 and 127.0.0.2 (same port) next to its plain
listener, verifies client certificates when one is sent (`verify_peer`, no
`fail_if_no_peer_cert`).

Covers: the bridge (2 workers) on `amqps://localhost` with `tls.ca_file` and a client
certificate (`tls.cert_file` / `tls.key_file`): the broker lists its connections as TLS with
the client certificate's subject; messages published with pika over TLS and over plain AMQP
reach two WebSocket clients in order (also 300 KB messages: many TLS records per AMQP
frame); a client publish is confirmed. Refusals, each with /readyz 503 naming the connector
and a reason that says what failed, the `amqp connect failed` log line carrying it, the
bridge alive and stopping at once: a CA that did not sign the server
certificate; a host name the certificate does not name (127.0.0.1); a client certificate of
another CA. An IP address the certificate names (127.0.0.2) is accepted; `tls.verify: false`
connects to the misnamed host; without `tls.ca_file` the system trust store (here
SSL_CERT_FILE) verifies the broker. The TLS listener going away (`stop_app`) and back: 503,
then 200, and messages flow again on the same subscription. A peer that never answers the
TLS handshake: the attempt ends after `connect_timeout_ms`, the bridge stops at once.
Rotation without a restart: a new client certificate and key (renamed over the old files) are
presented at the next reconnect (the broker's `peer_cert_subject` changes), and a CA bundle
replaced by one without the broker's CA makes the next attempt fail, then a bundle with both
CAs brings it back; the same subscription delivers throughout. A wrong password over amqp://
and amqps://: the reason names the broker's host:port, the password is nowhere in the
bridge's stderr. Config:
`cert_file` without `key_file`, unknown keys, `tls` on an amqp:// URL, TLS files that do not
load stop the start.
"""

# ctest: lock=heavy cost=20  (scheduling: docs/testing.md)

import json
import os
import socket
import ssl
import subprocess
import time

import pika
import pytest

from amqp_helpers import RabbitMQ, amqp_overrides, scale
from conftest import free_port

EXCHANGE = "wsb.tls-fan"
CHANNELS = [{"match": "tls.*", "connector": "r", "exchange": EXCHANGE, "binding_key": "tls.{1}"}]


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(args), r.stderr)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
            "-subj", "/CN=wsbridge test %s" % name,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d, name, ca, cn, ext):
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
            cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-out", name + ".pem", "-extfile", name + ".ext",
            cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "ca2")
    make_leaf(d, "server", "ca", "localhost",
              "subjectAltName=DNS:localhost,IP:127.0.0.2\nextendedKeyUsage=serverAuth\n")
    make_leaf(d, "client", "ca", "wsbridge-client", "extendedKeyUsage=clientAuth\n")
    make_leaf(d, "client2", "ca2", "wsbridge-stranger", "extendedKeyUsage=clientAuth\n")
    return lambda name: os.path.join(d, name)


@pytest.fixture(scope="module")
def node(pki):
    n = RabbitMQ(tls={"cacertfile": pki("ca.pem"), "certfile": pki("server.pem"),
                      "keyfile": pki("server.key"), "addresses": ["127.0.0.1", "127.0.0.2"]})
    print("rabbitmq-server with a TLS listener started in %.1fs" % n.startup_s)
    try:
        c = n.connection()
        c.channel().exchange_declare(EXCHANGE, "topic", durable=True)
        c.close()
        yield n
    finally:
        n.stop()


def amqps_url(node, host="localhost"):
    return "amqps://guest:guest@%s:%d/%%2f" % (host, node.ssl_port)


def start(bridge_factory, node, pki, host="localhost", tls=None, env=None, wait=True):
    if tls is None:
        tls = {"ca_file": pki("ca.pem"), "cert_file": pki("client.pem"),
               "key_file": pki("client.key")}
    conn = {"heartbeat_s": 2, "connect_timeout_ms": 3000, "reconnect_max_ms": 500}
    if tls is not False:
        conn["tls"] = tls
    return bridge_factory(amqp_overrides(amqps_url(node, host), CHANNELS, conn=conn),
                          env=env, wait=wait)


def wait_ready(b, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = b.readyz()
        if status == want:
            return json.loads(body) if body else {}
        assert time.monotonic() < deadline, "readyz stayed %d: %r" % (status, body)
        time.sleep(0.05)


def pika_tls(node, pki):
    ctx = ssl.create_default_context(cafile=pki("ca.pem"))
    ctx.load_cert_chain(pki("client.pem"), pki("client.key"))
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="localhost", port=node.ssl_port, credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(ctx, "localhost"), socket_timeout=10))


def publish(conn, rk, ids, pad=0):
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for i in ids:
            ch.basic_publish(EXCHANGE, rk, json.dumps({"i": i, "pad": "x" * pad}).encode())
    finally:
        conn.close()


def subscribe(b, channel):
    c = b.connect()
    c.send_json({"op": "subscribe", "id": 1, "channel": channel})
    r = c.recv_json(timeout=10)
    assert r.get("type") == "subscribed", r
    return c


def receive(c, n, timeout=20.0, pad=0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, "got %d of %d messages" % (len(got), n)
        m = c.recv_json(timeout=left)
        if m.get("type") == "message":
            got.append(m["data"]["i"])
            assert len(m["data"].get("pad", "")) == pad, (got[-1], len(m["data"]["pad"]))
    return got


def bridge_connections(node):
    """(ssl, peer_cert_subject) of the broker's connections named by the bridge."""
    out = []
    for line in node.ctl("list_connections", "ssl", "peer_cert_subject",
                         "client_properties").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and "wsbridge r (" in parts[2]:
            out.append((parts[0], parts[1]))
    return out


def assert_refused(b, words):
    """/readyz 503 naming connector r with a reason containing one of `words` (each tried in
    lower case), the same reason in an `amqp connect failed` log line; the bridge alive, no hang."""
    deadline = time.monotonic() + 15
    while True:  # "connecting" until the first attempt fails
        body = wait_ready(b, 503)
        reason = body.get("reason", {}).get("connectors", {}).get("r")
        assert reason, body
        if reason != "connecting" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(w in reason.lower() for w in words), reason
    rec = b.wait_log(lambda r: r.get("msg") == "amqp connect failed" and r.get("connector") == "r")
    assert rec and any(w in rec.get("reason", "").lower() for w in words), rec
    assert b.healthz() == 200
    # It keeps retrying (backoff ≤ reconnect_max_ms) and stays down; nothing crashes.
    time.sleep(0.6)
    assert b.alive() and b.readyz()[0] == 503
    t0 = time.monotonic()
    assert b.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    return reason


def test_round_trip_over_tls(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki)
    assert wait_ready(b, 200) is not None
    c1, c2 = subscribe(b, "tls.a"), subscribe(b, "tls.a")
    # The publish and the consumer connection, both TLS with the client certificate.
    conns = bridge_connections(node)
    assert len(conns) == 2 and all(s == "true" for s, _ in conns), conns
    assert all("CN=wsbridge-client" in subj for _, subj in conns), conns
    n = scale(500)
    publish(pika_tls(node, pki), "tls.a", range(n))
    publish(node.connection(), "tls.a", range(n, 2 * n))
    for c in (c1, c2):
        assert receive(c, 2 * n) == list(range(2 * n))
    # A client publish goes out over the TLS publish connection and is confirmed.
    c1.send_json({"op": "publish", "id": 2, "channel": "tls.a", "data": {"i": -1}})
    r, echo = c1.recv_json(timeout=10), []
    while r.get("type") == "message":
        echo.append(r["data"]["i"])
        r = c1.recv_json(timeout=10)
    assert r.get("type") == "published", r
    assert (echo or receive(c1, 1)) == [-1]
    assert receive(c2, 1) == [-1]
    # Messages larger than a TLS record and than a frame (frame_max 128 KiB): each arrives
    # in many records, read as they come (nothing left waiting in OpenSSL behind a poll).
    big = scale(30)
    publish(node.connection(), "tls.a", range(5000, 5000 + big), pad=300000)
    for c in (c1, c2):
        assert receive(c, big, pad=300000) == list(range(5000, 5000 + big))

    # The TLS listener goes away (the whole AMQP application stops) and comes back.
    node.ctl("stop_app")
    try:
        wait_ready(b, 503)
        body = json.loads(b.readyz()[2])
        # "connection to localhost:P lost: …", or the next attempt's "cannot connect to
        # localhost:P: …": either way the reason names the broker
        assert "localhost:%d" % node.ssl_port in body["reason"]["connectors"]["r"], body
    finally:
        node.ctl("start_app")  # returns once the application runs
    wait_ready(b, 200, timeout=30)
    publish(pika_tls(node, pki), "tls.a", range(2 * n, 2 * n + 10))
    for c in (c1, c2):
        assert receive(c, 10) == list(range(2 * n, 2 * n + 10))
    assert b.stop(timeout=10) == 0


def test_unknown_ca_refused(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, tls={"ca_file": pki("ca2.pem")})
    assert_refused(b, ["certificate", "verif"])
    assert not bridge_connections(node)


def test_wrong_host_name_refused(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, host="127.0.0.1", tls={"ca_file": pki("ca.pem")})
    reason = assert_refused(b, ["ip address mismatch"])
    assert "127.0.0.1" in reason, reason


def test_ip_address_in_certificate_accepted(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, host="127.0.0.2", tls={"ca_file": pki("ca.pem")})
    wait_ready(b, 200)
    c = subscribe(b, "tls.ip")
    publish(node.connection(), "tls.ip", [7])
    assert receive(c, 1) == [7]


def test_verify_off_connects_to_misnamed_host(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, host="127.0.0.1", tls={"verify": False})
    wait_ready(b, 200)
    assert any(r.get("level") == "warn" and "not authenticated" in r.get("msg", "")
               for r in b.log_records()), b.logs()
    assert b.stop(timeout=10) == 0


def test_system_trust_store_without_ca_file(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, tls=False, env={"SSL_CERT_FILE": pki("ca.pem")})
    wait_ready(b, 200)
    assert b.stop(timeout=10) == 0
    b = start(bridge_factory, node, pki, tls=False, env={"SSL_CERT_FILE": pki("ca2.pem")})
    assert_refused(b, ["certificate", "verif"])


def test_client_certificate_of_another_ca_refused(node, pki, bridge_factory):
    b = start(bridge_factory, node, pki, tls={"ca_file": pki("ca.pem"),
                                             "cert_file": pki("client2.pem"),
                                             "key_file": pki("client2.key")})
    # The broker's alert ("unknown ca") when it is read before the broker's reset, else the
    # connector's hint (docs/amqp.md).
    reason = assert_refused(b, ["unknown ca", "client certificate refused"])
    print("client certificate of another CA:", reason)


def put(path, src):
    """Replaces `path` with the bytes of `src` (a file or a list of files, concatenated) by
    a rename, as a certificate renewal tool does: a reader sees the old or the new file."""
    data = b""
    for f in (src if isinstance(src, list) else [src]):
        with open(f, "rb") as fh:
            data += fh.read()
    with open(path + ".new", "wb") as fh:
        fh.write(data)
    os.replace(path + ".new", path)


def close_connections(node):
    """Makes the broker close every connection of its default vhost (the bridge's; the
    test's own pika connections are closed after each publish)."""
    node.ctl("close_all_connections", "--vhost", "/", "wsbridge test: rotation")


def wait_subjects(node, want, timeout=20.0):
    """Waits until the bridge has its 2 connections up, all with `want` in their subject."""
    deadline = time.monotonic() + timeout
    while True:
        conns = bridge_connections(node)
        if len(conns) == 2 and all(want in subj for _, subj in conns):
            return conns
        assert time.monotonic() < deadline, "bridge connections: %r" % conns
        time.sleep(0.1)


def test_certificate_rotation(node, pki, bridge_factory, tmp_path):
    """The TLS files are read again at each connection: a client certificate and a CA bundle
    replaced on disk are used from the next reconnect, with no restart, and the same
    subscription keeps delivering."""
    make_leaf(os.path.dirname(pki("ca.pem")), "client3", "ca", "wsbridge-rotated",
              "extendedKeyUsage=clientAuth\n")
    ca, cert, key = (str(tmp_path / n) for n in ("bundle.pem", "cert.pem", "cert.key"))
    put(ca, pki("ca.pem"))
    put(cert, pki("client.pem"))
    put(key, pki("client.key"))
    b = start(bridge_factory, node, pki, tls={"ca_file": ca, "cert_file": cert, "key_file": key})
    wait_ready(b, 200)
    c = subscribe(b, "tls.rot")
    wait_subjects(node, "CN=wsbridge-client")
    publish(node.connection(), "tls.rot", [1])
    assert receive(c, 1) == [1]

    # A renewed client certificate: the reconnect presents it.
    put(key, pki("client3.key"))
    put(cert, pki("client3.pem"))
    close_connections(node)
    conns = wait_subjects(node, "CN=wsbridge-rotated")
    assert all(s == "true" for s, _ in conns), conns
    wait_ready(b, 200)
    publish(node.connection(), "tls.rot", [2])
    assert receive(c, 1) == [2]

    # A CA bundle without the broker's CA: the next attempt is refused, so it was read again.
    put(ca, pki("ca2.pem"))
    close_connections(node)
    body = wait_ready(b, 503)
    deadline = time.monotonic() + 15
    while "not accepted" not in body["reason"]["connectors"].get("r", ""):
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
        body = json.loads(b.readyz()[2] or "{}")
    assert "localhost:%d" % node.ssl_port in body["reason"]["connectors"]["r"], body
    # The bundle extended with it (a CA rollover): back, the same subscription delivers.
    put(ca, [pki("ca2.pem"), pki("ca.pem")])
    wait_ready(b, 200)
    wait_subjects(node, "CN=wsbridge-rotated")
    publish(node.connection(), "tls.rot", [3, 4])
    assert receive(c, 2) == [3, 4]
    assert b.stop(timeout=10) == 0


WRONG_PASSWORD = "Wr0ng-pa55word-zq7"


@pytest.mark.parametrize("tls", [False, True], ids=["amqp", "amqps"])
def test_login_refused_names_host_not_password(node, pki, bridge_factory, tls):
    """A wrong password: the reason (/readyz, the log line) names the broker's host:port and
    what the broker said; the password appears nowhere in the bridge's output."""
    if tls:
        url = "amqps://guest:%s@localhost:%d/%%2f" % (WRONG_PASSWORD, node.ssl_port)
        hostport = "localhost:%d" % node.ssl_port
        conn = {"tls": {"ca_file": pki("ca.pem")}}
    else:
        url = "amqp://guest:%s@127.0.0.1:%d/%%2f" % (WRONG_PASSWORD, node.port)
        hostport = "127.0.0.1:%d" % node.port
        conn = {}
    conn.update({"connect_timeout_ms": 3000, "reconnect_max_ms": 500})
    b = bridge_factory(amqp_overrides(url, CHANNELS, conn=conn))
    reason = assert_refused(b, ["access_refused"])
    print("wrong password:", reason)
    assert reason.startswith("cannot log in to " + hostport + ": "), reason
    assert "guest" not in reason, reason
    logs = b.logs()
    assert hostport in logs
    assert WRONG_PASSWORD not in logs, logs


def test_silent_server_times_out(pki, bridge_factory):
    """A peer that takes the TCP connection and never answers the TLS handshake: the attempt
    ends after connect_timeout_ms, the bridge stays responsive and stops at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", free_port()))
    srv.listen(16)  # never accepted: the kernel completes TCP, nobody speaks TLS
    try:
        url = "amqps://guest:guest@localhost:%d/%%2f" % srv.getsockname()[1]
        b = bridge_factory(amqp_overrides(url, CHANNELS, conn={
            "connect_timeout_ms": 1000, "reconnect_max_ms": 500,
            "tls": {"ca_file": pki("ca.pem")}}))
        t0 = time.monotonic()
        rec = b.wait_log(lambda r: r.get("msg") == "amqp connect failed", timeout=10)
        assert rec and "timed out" in rec["reason"], rec
        assert time.monotonic() - t0 < 5
        assert b.healthz() == 200 and b.readyz()[0] == 503
        c = b.connect()  # subscriptions wait for the connection; the worker answers
        c.send_json({"op": "subscribe", "id": 1, "channel": "tls.x"})
        t0 = time.monotonic()
        assert b.stop(timeout=10) == 0
        assert time.monotonic() - t0 < 6  # one handshake timeout + the drain (1 s each)
    finally:
        srv.close()


def test_config_errors(node, pki, run_cli, tmp_path):
    def check(tls, run=False, url=None):
        cfg = {"connectors": {"r": {"type": "amqp", "url": url or amqps_url(node), "tls": tls}},
               "channels": CHANNELS, "acl": [{"subscribe": ["**"], "publish": ["**"]}],
               "listen": "127.0.0.1:0"}
        p = tmp_path / "c.json"
        p.write_text(json.dumps(cfg))
        return run_cli((["-c"] if run else ["--check-config", "-c"]) + [str(p)])

    r = check({"cert_file": pki("client.pem")})
    assert r.returncode == 1 and "connectors.r.tls.key_file" in r.stdout + r.stderr, r
    r = check({"key_file": pki("client.key")})
    assert r.returncode == 1 and "connectors.r.tls.cert_file" in r.stdout + r.stderr, r
    cfg_url = amqps_url(node)
    r = check({"ca_file": pki("ca.pem")}, url=cfg_url.replace("amqps://", "amqp://"))
    assert r.returncode == 1 and "connectors.r.tls: only for an amqps://" in r.stderr, r
    r = check({"ca_file": pki("ca.pem"), "verify_name": False})
    assert r.returncode == 1 and "connectors.r.tls.verify_name" in r.stdout + r.stderr, r
    r = check({"ca_file": pki("ca.pem"), "cert_file": pki("client.pem"),
               "key_file": pki("client.key"), "verify": True})
    assert r.returncode == 0, r
    # The files are loaded when the connector is made: a wrong one stops the start (exit 1).
    r = check({"ca_file": pki("nope.pem")}, run=True)
    assert r.returncode == 1 and "tls.ca_file" in r.stderr, r
    r = check({"ca_file": pki("ca.pem"), "cert_file": pki("client.pem"),
               "key_file": pki("client2.key")}, run=True)
    assert r.returncode == 1 and "tls.cert_file" in r.stderr, r
