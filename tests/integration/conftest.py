"""Shared pytest fixtures for the wsbridge integration tests: start the real binary with a
JSON config on free loopback ports, wait for /healthz, capture its JSON log lines per test
(shown on failure), stop it with a signal, and read /metrics.

Typical use:

    def test_x(bridge_factory):
        b = bridge_factory({"limits": {"max_message_bytes": 65536}})
        ws = b.connect()                 # wsclient.WSClient, handshake done, welcome read
        ...
        assert b.stop() == 0

Environment: WSBRIDGE_BIN (path of the built binary; default ../../build/wsbridge),
WSB_KAFKA_MOCK_BIN (the librdkafka mock-cluster helper, used by the Kafka tests).
Everything binds 127.0.0.1. Every wait is bounded.
"""

import collections
import copy
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import weakref

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Sentinel: an override value that removes the key from the default config.
DELETE = object()


# ---------------------------------------------------------------------------------------
# Small helpers (importable: `from conftest import free_port, http_get, ...`)


def bridge_bin():
    """Path of the wsbridge binary, or None when it does not exist."""
    env = os.environ.get("WSBRIDGE_BIN")
    if env:
        return os.path.abspath(env)
    for cand in ("build/wsbridge", "build-it/wsbridge"):
        p = os.path.join(REPO, cand)
        if os.path.exists(p):
            return p
    return os.path.join(REPO, "build/wsbridge")


def kafka_mock_bin():
    env = os.environ.get("WSB_KAFKA_MOCK_BIN")
    if env:
        return os.path.abspath(env)
    for cand in ("build/wsb-kafka-mock", "build-it/wsb-kafka-mock"):
        p = os.path.join(REPO, cand)
        if os.path.exists(p):
            return p
    return os.path.join(REPO, "build/wsb-kafka-mock")


_PORT_LO, _PORT_HI = 20000, 32000  # below Linux's ephemeral range (32768-60999)
# Test files run in parallel (ctest -jN). A port handed out here is claimed across processes
# with an flock on a file named after it, held by this process, so two test processes never
# pick the same port between the probe and the bridge's bind. The newest claims are kept (a
# bridge restarted on its port stays covered); older ones are let go to bound the descriptors.
_PORT_DIR = os.path.join(tempfile.gettempdir(), "wsbridge-test-ports")
_PORT_CLAIMS_KEPT = 64
_claims = collections.OrderedDict()  # port -> descriptor holding its flock


def _claim(port):
    if port in _claims:
        return False  # already handed out by this process
    os.makedirs(_PORT_DIR, exist_ok=True)
    fd = os.open(os.path.join(_PORT_DIR, str(port)), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # another test process holds it
    _claims[port] = fd
    while len(_claims) > _PORT_CLAIMS_KEPT:
        os.close(_claims.popitem(last=False)[1])
    return True


def free_port():
    """A currently free TCP port on 127.0.0.1, chosen below the kernel's ephemeral range so
    that no socket bound to port 0 meanwhile (a client connection, the demo's in-process
    Kafka cluster, another test's mock broker) can take it before the bridge binds it, and
    claimed so that no other test process (files run in parallel) is given it too.
    Random start, then probe upward; falls back to a kernel-chosen port."""
    import random

    start = random.randrange(_PORT_LO, _PORT_HI)
    for i in range(_PORT_HI - _PORT_LO):
        port = _PORT_LO + (start - _PORT_LO + i) % (_PORT_HI - _PORT_LO)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        if _claim(port):
            return port
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def deep_merge(base, overrides):
    """Returns base with overrides merged in: dicts merge recursively, DELETE removes a key,
    anything else (lists included) replaces."""
    out = copy.deepcopy(base)
    for k, v in (overrides or {}).items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_config(port, admin_port):
    """The config every test starts from: anonymous clients allowed everything, one
    in-process memory connector routed from `mem.**`, generous per-IP limits (tests open
    many connections from 127.0.0.1), short drain."""
    return {
        "listen": "127.0.0.1:%d" % port,
        "path": "/ws",
        "admin": {"listen": "127.0.0.1:%d" % admin_port},
        "workers": 2,
        "permessage_deflate": True,
        "drain_timeout_ms": 3000,
        "acl": [{"subscribe": ["**"], "publish": ["**"]}],
        "connectors": {"m": {"type": "memory"}},
        "channels": [{"match": "mem.**", "connector": "m", "topic": "mem-{1}"}],
        "limits": {
            "max_connections": 10000,
            "max_connections_per_ip": 10000,
            "handshake_rate_per_ip": {"per_second": 100000, "burst": 100000},
            "handshake_timeout_ms": 5000,
            "max_message_bytes": 1048576,
            "inbound_rate": {"per_second": 100000, "burst": 100000},
        },
        "log": {"level": "debug", "format": "json"},
    }


def http_request(host, port, path, method="GET", headers=None, body=None, timeout=5.0):
    """One HTTP/1.1 request. Returns (status, headers dict (lower-case names), body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def http_get(url, timeout=5.0, headers=None):
    """GET http://host:port/path. Returns (status, headers, body)."""
    m = re.match(r"http://([^:/]+):(\d+)(/.*)?$", url)
    assert m, url
    return http_request(m.group(1), int(m.group(2)), m.group(3) or "/", headers=headers,
                        timeout=timeout)


def raw_exchange(host, port, data, timeout=5.0, half_close=False):
    """Sends raw bytes, reads until the peer closes or `timeout` passes. Returns
    (bytes read, closed_by_peer)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True
            if not chunk:
                return out, True
            out += chunk
        return out, False
    finally:
        s.close()


def parse_http_response(raw):
    """Splits a raw HTTP response into (status, headers dict lower-case, body bytes).
    Multiple headers with the same name are joined with ', '."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "no complete HTTP response head in %r" % raw[:300]
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert m, "bad status line %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return int(m.group(1)), headers, body


class Metrics(dict):
    """Prometheus text parsed into {series: value}, where series is the metric name plus its
    labels exactly as printed, normalised to `name{a="x",b="y"}` with sorted labels (or
    just `name`). Also keeps `types` {family: type}."""

    def __init__(self):
        super().__init__()
        self.types = {}

    def value(self, name, default=None, **labels):
        """The value of one series, e.g. m.value("wsbridge_handshakes_total", result="ok")."""
        return self.get(series_key(name, labels), default)

    def sum(self, name, **labels):
        """Sum over every series of `name` whose labels include `labels`."""
        total = 0.0
        for key, v in self.items():
            n, lab = split_series(key)
            if n == name and all(lab.get(k) == str(x) for k, x in labels.items()):
                total += v
        return total

    def families(self):
        """Every metric name present (histogram _bucket/_sum/_count kept as is)."""
        return {split_series(k)[0] for k in self}

    def has_family(self, family):
        """True when a `# TYPE family` line or any series of it is present."""
        if family in self.types:
            return True
        fams = self.families()
        return any(f == family or f in (family + "_bucket", family + "_sum",
                                        family + "_count", family + "_total")
                   for f in fams)


def series_key(name, labels):
    if not labels:
        return name
    inner = ",".join('%s="%s"' % (k, labels[k]) for k in sorted(labels))
    return "%s{%s}" % (name, inner)


_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def split_series(key):
    m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?$", key)
    assert m, "bad series %r" % key
    labels = {}
    if m.group(3):
        for lm in _LABEL_RE.finditer(m.group(3)):
            labels[lm.group(1)] = lm.group(2)
    return m.group(1), labels


def parse_metrics(text):
    """Parses Prometheus exposition text into a Metrics dict. Fails the test on a malformed
    sample line (the format is part of the contract)."""
    out = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                out.types[parts[2]] = parts[3]
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$", line)
        assert m, "malformed metrics line: %r" % line
        name, lab, val = m.group(1), m.group(2), m.group(3)
        labels = {}
        if lab:
            for lm in _LABEL_RE.finditer(lab[1:-1]):
                labels[lm.group(1)] = lm.group(2)
        v = float(val.replace("+Inf", "inf").replace("-Inf", "-inf"))
        out[series_key(name, labels)] = v
    return out


# ---------------------------------------------------------------------------------------
# The bridge process


class BridgeDied(AssertionError):
    pass


class Bridge:
    """One running wsbridge process. Attributes: host, port, admin_port (or None), path,
    ws_url, admin_url, config (dict or None), config_path, log_path, proc."""

    def __init__(self, proc, config, config_path, log_path, port, admin_port, path):
        self.proc = proc
        self.pid = proc.pid
        self.config = config
        self.config_path = config_path
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = port
        self.admin_port = admin_port
        self.path = path
        self.ws_url = "ws://127.0.0.1:%d%s" % (port, path)
        self.admin_url = "http://127.0.0.1:%d" % admin_port if admin_port else None
        self.exit_code = None
        self.clients = weakref.WeakSet()  # the WSClients connect() opened

    # -- logs
    def logs(self):
        """Everything the bridge wrote on stderr so far (text)."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_records(self):
        """The JSON log lines parsed (lines that are not JSON are returned as
        {"_raw": line})."""
        out = []
        for line in self.logs().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out.append(rec if isinstance(rec, dict) else {"_raw": line})
            except ValueError:
                out.append({"_raw": line})
        return out

    def wait_log(self, pred, timeout=5.0):
        """Waits until some log record satisfies pred(record); returns it or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.log_records():
                if pred(rec):
                    return rec
            time.sleep(0.05)
        return None

    # -- process
    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Sends `sig` and waits for the exit. Returns the exit code (negative: killed by a
        signal). Raises AssertionError when it does not exit within `timeout` (the process is
        then killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError("wsbridge did not exit within %.1fs after %s"
                                 % (timeout, signal.Signals(sig).name))
        return self.exit_code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def rss_kib(self):
        """VmRSS of the process in KiB (Linux)."""
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # -- HTTP
    def admin_get(self, path, timeout=5.0):
        assert self.admin_port, "this bridge has no admin listener"
        return http_request(self.host, self.admin_port, path, timeout=timeout)

    def healthz(self, timeout=2.0):
        return self.admin_get("/healthz", timeout=timeout)[0]

    def readyz(self, timeout=2.0):
        return self.admin_get("/readyz", timeout=timeout)

    def metrics(self, timeout=5.0):
        status, headers, body = self.admin_get("/metrics", timeout=timeout)
        assert status == 200, "/metrics answered %d: %r" % (status, body[:300])
        return parse_metrics(body.decode("utf-8"))

    def wait_metric(self, name, pred, timeout=5.0, **labels):
        """Polls /metrics until pred(value) holds for series name{labels} (missing series
        counts as 0). Returns the last Metrics."""
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.metrics()
            if pred(m.value(name, 0.0, **labels)):
                return m
            time.sleep(0.05)
        return m

    # -- WebSocket
    def connect(self, path=None, read_welcome=True, **kw):
        """Opens a WebSocket (wsclient.WSClient) to this bridge; the handshake must succeed
        (101). With read_welcome, reads the first server message and checks it is the
        welcome (available as client.welcome)."""
        import wsclient

        c = wsclient.WSClient.connect(self.host, self.port, path or self.path, **kw)
        self.clients.add(c)
        if read_welcome:
            c.welcome = c.recv_json(timeout=5.0)
            assert c.welcome.get("type") == "welcome", c.welcome
        return c


def _wait_ready(b, timeout):
    """Waits until /healthz answers 200 (or, without admin, the main port accepts)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not b.alive():
            raise BridgeDied("wsbridge exited with %s during start-up; stderr:\n%s"
                             % (b.proc.returncode, b.logs()[-4000:]))
        try:
            if b.admin_port:
                if b.healthz(timeout=1.0) == 200:
                    return
            else:
                socket.create_connection((b.host, b.port), timeout=0.5).close()
                return
        except (OSError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.05)
    b.kill()
    raise BridgeDied("wsbridge did not become healthy within %.0fs (last error %r); "
                     "stderr:\n%s" % (timeout, last, b.logs()[-4000:]))


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches every bridge's stderr to a failing test's report."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        bridges = list(getattr(item, "_wsb_bridges", []))
        mod = getattr(item, "module", None)
        bridges += [b for b in getattr(mod, "_wsb_module_bridges", []) if b not in bridges]
        for i, b in enumerate(bridges):
            text = b.logs()
            if len(text) > 20000:
                text = "...(truncated)...\n" + text[-20000:]
            rep.sections.append(("wsbridge #%d stderr (pid %d)" % (i, b.pid), text))


def _bin_or_skip():
    p = bridge_bin()
    if not os.path.exists(p):
        if os.environ.get("WSBRIDGE_BIN"):
            pytest.fail("WSBRIDGE_BIN=%s does not exist" % p)
        pytest.skip("wsbridge binary not built (%s); set WSBRIDGE_BIN" % p)
    return p


@pytest.fixture
def bridge_bin_path():
    return _bin_or_skip()


@pytest.fixture
def run_cli(bridge_bin_path, tmp_path):
    """Runs the binary to completion (for --version, --check-config, bad configs).
    run_cli(args, env=None, timeout=10) -> CompletedProcess with text stdout/stderr."""

    def run(args, env=None, timeout=10.0, input=None):
        full_env = dict(os.environ)
        full_env.pop("WSBRIDGE_CONFIG", None)
        if env:
            full_env.update(env)
        return subprocess.run([bridge_bin_path] + list(args), capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=str(tmp_path), input=input)

    return run


class _Starter:
    """Starts bridges into `workdir` and stops them all in finish()."""

    def __init__(self, binpath, workdir):
        self.binpath = binpath
        self.workdir = workdir
        self.bridges = []
        self.counter = 0

    def __call__(self, overrides=None, config=None, config_text=None, env=None, args=None,
                 wait=True, timeout=10.0):
        self.counter += 1
        n = self.counter
        port, admin_port = free_port(), free_port()
        if config_text is None:
            if config is None:
                config = deep_merge(default_config(port, admin_port), overrides)
            config_text = json.dumps(config, indent=2)
        elif config is None:
            try:
                config = json.loads(config_text)
            except ValueError:
                config = None
        if isinstance(config, dict):
            port = _port_of(config.get("listen"), port)
            admin_port = _port_of((config.get("admin") or {}).get("listen"), None)
        path = (config or {}).get("path", "/ws") if isinstance(config, dict) else "/ws"
        config_path = self.workdir / ("wsbridge-%d.json" % n)
        config_path.write_text(config_text)
        log_path = self.workdir / ("wsbridge-%d.stderr" % n)
        full_env = dict(os.environ)
        full_env.pop("WSBRIDGE_CONFIG", None)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        if env:
            full_env.update(env)
        cmd = [self.binpath, "-c", str(config_path)] + list(args or [])
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    env=full_env, cwd=str(self.workdir))
        b = Bridge(proc, config, str(config_path), str(log_path), port, admin_port, path)
        self.bridges.append(b)
        if wait:
            _wait_ready(b, timeout)
        return b

    def finish(self):
        problems = []
        for b in self.bridges:
            if b.alive():
                # The drain starts with the test's clients still connected; they then go
                # away instead of leaving the bridge to wait out the close handshake they
                # would never answer (the drain itself is test_80's and test_82's subject).
                b.proc.send_signal(signal.SIGTERM)
                for c in list(b.clients):
                    c.close()
                try:
                    b.exit_code = b.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    b.kill()
                    problems.append("wsbridge did not exit within 10s after SIGTERM")
            text = b.logs()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    problems.append("sanitizer report in wsbridge stderr (pid %d):\n%s"
                                    % (b.pid, text[-6000:]))
                    break
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def bridge_factory(bridge_bin_path, tmp_path, request):
    """bridge_factory(overrides=None, *, config=None, config_text=None, env=None, args=None,
    wait=True, timeout=10) -> Bridge.

    Starts `wsbridge -c FILE` with default_config() deep-merged with `overrides` (or exactly
    `config`, or the raw `config_text`; ports are then the caller's business: use
    free_port()). Waits for /healthz 200. Every bridge is stopped at teardown; a sanitizer
    report in its stderr fails the test."""
    starter = _Starter(bridge_bin_path, tmp_path)
    request.node._wsb_bridges = starter.bridges
    yield starter
    starter.finish()


@pytest.fixture(scope="module")
def module_bridge_factory(tmp_path_factory, request):
    """Like bridge_factory, but the bridges live for the whole test module (faster for tests
    that do not change the config or kill the process). Their logs are attached to any
    failing test of the module."""
    starter = _Starter(_bin_or_skip(), tmp_path_factory.mktemp("bridge"))
    request.module._wsb_module_bridges = starter.bridges
    yield starter
    starter.finish()


def _port_of(listen, default):
    if not listen or not isinstance(listen, str):
        return default
    m = re.search(r":(\d+)$", listen)
    return int(m.group(1)) if m else default


@pytest.fixture
def bridge(bridge_factory):
    """A bridge with the default config."""
    return bridge_factory()


@pytest.fixture
def metrics():
    """metrics(bridge) -> Metrics (a dict of series -> float) from its /metrics."""

    def get(b):
        return b.metrics()

    return get


@pytest.fixture(scope="session")
def rabbitmq():
    """A private Debian rabbitmq-server node on loopback (amqp_helpers.RabbitMQ), started
    once per test session (start-up takes seconds) and stopped at the end with nothing left
    behind. Skips when rabbitmq-server is not installed."""
    from amqp_helpers import RabbitMQ

    node = RabbitMQ()
    yield node
    node.stop()
