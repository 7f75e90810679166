"""What the benchmark scripts share (suite.py, kafka_latency.py): free ports, the bridge's
limits opened for one load generator, starting a bridge and waiting for its /readyz."""

import json
import os
import socket
import subprocess
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def open_limits(n):
    """`limits` that let one address open n connections and publish at n/s."""
    return {"max_connections_per_ip": n,
            "handshake_rate_per_ip": {"per_second": n, "burst": n},
            "inbound_rate": {"per_second": n, "burst": n}}


def start_bridge(build, cfg, config_path, log_path, admin, timeout=20):
    """Writes cfg to config_path, starts build/wsbridge on it (stderr appended to log_path)
    and waits until the admin port `admin` answers /readyz 200. Returns the Popen; raises
    RuntimeError (the process killed) when it is not ready within timeout seconds."""
    with open(config_path, "w") as f:
        json.dump(cfg, f)
    with open(log_path, "a") as log:
        proc = subprocess.Popen([os.path.join(build, "wsbridge"), "--config", config_path],
                                stdout=subprocess.DEVNULL, stderr=log)
    end = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen("http://127.0.0.1:%d/readyz" % admin,
                                      timeout=1).status == 200:
                return proc
        except OSError:
            pass
        if time.monotonic() > end or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise RuntimeError("bridge not ready; log in %s" % log_path)
        time.sleep(0.05)
