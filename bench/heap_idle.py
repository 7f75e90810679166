#!/usr/bin/python3
"""Heap profile of idle connections (docs/benchmarks.md, Footprint): starts the bridge of
suite.py's S4 under heaptrack, holds N idle subscribed wsb-load clients, kills the bridge
with SIGKILL while they hold on (so heaptrack's "leaked" view is the live heap of that
moment) and prints the allocation sites with their bytes per connection.

    bench/heap_idle.py [--build build] [--clients 2000] [--out /tmp/wsb-heap]

Needs heaptrack (bench/setup.sh). Not part of bench/run.sh's table.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import suite  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(suite.REPO, "build"))
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "wsb-heap"))
    ap.add_argument("--gen-threads", type=int, default=1)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wsb-heap-")
    keys = suite.Keys(tmp)
    # suite.Server starts build/wsbridge through subprocess.Popen: run it under heaptrack
    real_popen = subprocess.Popen

    def popen(args, **kw):
        if args and str(args[0]).endswith("/wsbridge"):
            args = ["heaptrack", "-o", a.out] + list(args)
        return real_popen(args, **kw)

    subprocess.Popen = popen
    srv = suite.Server("wsbridge", a, tmp, keys)
    subprocess.Popen = real_popen
    time.sleep(1)
    load = real_popen(suite.load_args(srv, a, a.clients, ["--connect-rate", "2000", "--hold",
                                                          "--duration", "60"]),
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    print(load.stderr.readline().strip(), flush=True)
    time.sleep(3)  # idle
    bridge = subprocess.run(["pgrep", "-x", "-P", str(srv.procs[0].pid), "wsbridge"],
                            capture_output=True, text=True).stdout.split()
    for pid in bridge:
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(2)
    load.send_signal(signal.SIGINT)
    load.communicate(timeout=30)
    srv.procs[0].wait(60)
    data = [f for f in os.listdir(os.path.dirname(a.out))
            if f.startswith(os.path.basename(a.out)) and f.endswith((".zst", ".gz"))]
    path = os.path.join(os.path.dirname(a.out), sorted(data)[-1])
    text = subprocess.run(["heaptrack_print", "-f", path, "--print-leaks", "1",
                           "--print-peaks", "0", "--print-allocators", "0",
                           "--print-temporary", "0", "-n", "60"],
                          capture_output=True, text=True).stdout
    # top-level entries: "<size> leaked over <n> calls from" then the allocating function
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^([\d.]+)([KMG]?)B? leaked over (\d+) calls from$", line)
        if not m:
            continue
        size = float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
        site = lines[i + 1].strip() if i + 1 < len(lines) else "?"
        where = lines[i + 2].strip() if i + 2 < len(lines) else ""
        print("%8.0f B/conn  %6s calls  %s %s" % (size / a.clients, m.group(3), site, where))
    print("profile:", path)


if __name__ == "__main__":
    main()
