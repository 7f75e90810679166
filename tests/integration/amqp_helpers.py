"""Helpers for the AMQP integration tests (test_55_amqp, test_56_amqp_outage): Debian's real
rabbitmq-server started by the tests themselves, on loopback only, in a private temp dir,
with pika (python3-pika) as the other side.

    def test_x(rabbitmq, bridge_factory):           # `rabbitmq` is session-scoped (conftest)
        b = bridge_factory(amqp_overrides(rabbitmq.url, channels=[...]))
        ch = rabbitmq.channel()                       # a pika BlockingConnection channel
        rabbitmq.ctl("stop_app")

The node: `RABBITMQ_NODE_IP_ADDRESS=127.0.0.1` on a free port; its own epmd, started by us as
a child (`epmd -address 127.0.0.1 -port P`), so Erlang never daemonizes one; distribution on
a fixed free port bound to 127.0.0.1 (`inet_dist_use_interface`); MNESIA_BASE, LOG_BASE,
config, enabled-plugins file (no plugins), cookie and HOME all in one temp dir that is
removed at the end. `stop()` shuts the node down with rabbitmqctl, then kills whatever is
left of its process group and epmd. Every wait is bounded.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import DELETE, free_port

RABBIT_BIN = "/usr/lib/rabbitmq/bin"


class RabbitMQ:
    """One private rabbitmq-server node. Attributes: port, url ("amqp://guest:guest@..."),
    dir, startup_s (seconds from spawn to `await_startup` succeeding). With `tls` (a dict for
    tls_conf) it also has an AMQPS listener on `ssl_port`."""

    def __init__(self, timeout=60.0, tls=None):
        server = os.path.join(RABBIT_BIN, "rabbitmq-server")
        if not os.path.exists(server) or not shutil.which("epmd"):
            pytest.skip("rabbitmq-server not installed (scripts/setup.sh installs it)")
        self.dir = tempfile.mkdtemp(prefix="wsb-rabbitmq-")
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        while len({self.port, self.dist_port, self.epmd_port}) < 3:
            self.dist_port, self.epmd_port = free_port(), free_port()
        self.node = "wsbtest%d@localhost" % os.getpid()
        self.url = "amqp://guest:guest@127.0.0.1:%d/%%2f" % self.port
        self.ssl_port = None
        if tls:  # a TLS listener too (the same node: a second one would cost its start-up)
            self.ssl_port = free_port()
            while self.ssl_port in (self.port, self.dist_port, self.epmd_port):
                self.ssl_port = free_port()
        self.proc = self.epmd = None
        d = self.dir
        with open(os.path.join(d, ".erlang.cookie"), "w") as f:
            f.write("wsbtest%d" % os.getpid())
        os.chmod(os.path.join(d, ".erlang.cookie"), 0o400)
        with open(os.path.join(d, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        open(os.path.join(d, "rabbitmq-env.conf"), "w").close()
        with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
            # Connection heartbeats are the client's business; keep the disk alarm away on
            # small CI disks.
            f.write("disk_free_limit.absolute = 10MB\n")
            if tls:
                f.write(tls_conf(tls, self.ssl_port))
        dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        self.env = dict(os.environ)
        self.env.update({
            "HOME": d,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
            "RABBITMQ_PID_FILE": os.path.join(d, "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(d, "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(d, "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": dist,
            "RABBITMQ_CTL_ERL_ARGS": dist,
        })
        start = time.monotonic()
        self.epmd = subprocess.Popen(["epmd", "-address", "127.0.0.1", "-port",
                                      str(self.epmd_port)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._out = open(os.path.join(d, "server.out"), "wb")
        self.proc = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")], env=self.env,
                                     cwd=d, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_running(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - start

    def logs(self):
        try:
            with open(os.path.join(self.dir, "server.out"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def ctl(self, *args, timeout=30.0, check=True):
        """Runs `rabbitmqctl -q ARGS` against this node; returns stdout text."""
        r = subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-q", "-n", self.node]
                           + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, "rabbitmqctl %s: %s %s" % (args, r.stdout, r.stderr)
        return r.stdout

    def wait_running(self, timeout=60.0):
        """Waits until the node runs the rabbit application (after start-up or start_app)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("rabbitmq-server exited with %s:\n%s"
                                     % (self.proc.returncode, self.logs()))
            left = deadline - time.monotonic()
            assert left > 0, "rabbitmq-server not running within %.0fs:\n%s" % (timeout,
                                                                                self.logs())
            r = subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-q", "-n", self.node,
                                "await_startup", "--timeout", "%d" % max(1, min(left, 10))],
                               env=self.env, capture_output=True, timeout=left + 15)
            if r.returncode == 0:
                return
            time.sleep(0.2)

    def queue_counts(self, name):
        """(messages_ready, messages_unacknowledged) of queue `name` (None when absent)."""
        for line in self.ctl("list_queues", "name", "messages_ready",
                             "messages_unacknowledged").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] == name:
                return int(parts[1]), int(parts[2])
        return None

    def connection(self):
        import pika

        return pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=self.port, credentials=pika.PlainCredentials("guest", "guest"),
            blocked_connection_timeout=30, socket_timeout=10))

    def stop(self):
        """Shuts the node down and leaves no process (server, epmd) and no files behind."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.ctl("shutdown", timeout=30, check=False)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:  # whatever the node spawned (erl_child_setup, inet_gethost) shares its group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            try:
                self.epmd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait(timeout=5)
        if getattr(self, "_out", None):
            self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_conf(tls, port):
    """rabbitmq.conf lines of a TLS listener on `port` at each of tls["addresses"] (default
    127.0.0.1): the server's `certfile`/`keyfile`, `cacertfile` to verify client certificates
    (`verify_peer`; a client without one is still admitted unless `fail_if_no_peer_cert`)."""
    lines = ["listeners.ssl.l%d = %s:%d" % (i, addr, port)
             for i, addr in enumerate(tls.get("addresses", ["127.0.0.1"]))]
    for k in ("cacertfile", "certfile", "keyfile"):
        lines.append("ssl_options.%s = %s" % (k, tls[k]))
    lines.append("ssl_options.verify = verify_peer")
    lines.append("ssl_options.fail_if_no_peer_cert = %s"
                 % ("true" if tls.get("fail_if_no_peer_cert") else "false"))
    return "".join(line + "\n" for line in lines)


def amqp_overrides(url, channels, extra=None, name="r", conn=None):
    """bridge_factory overrides: the memory connector replaced by an amqp connector `name`
    at `url`, with `channels`."""
    c = {"type": "amqp", "url": url}
    c.update(conn or {})
    out = {"drain_timeout_ms": 1000, "connectors": {"m": DELETE, name: c}, "channels": channels,
           "limits": {"send_buffer": {"soft_bytes": 256 << 20, "hard_bytes": 256 << 20,
                                      "soft_seconds": 600}}}
    out.update(extra or {})
    return out


def scale(n, sanitized_div=4):
    """`n`, divided under the sanitizer pass (WSB_SANITIZED=1): scale loads, not assertions."""
    return max(1, n // sanitized_div) if os.environ.get("WSB_SANITIZED") == "1" else n
