#!/usr/bin/python3
"""The benchmark suite behind bench/run.sh: wsbridge and its peers (a Node.js `ws` broadcast
server, nginx + nchan) under the same load generator (build/wsb-load), one server at a
time, interleaved (rep 1: bridge, node, nchan; rep 2: ...), median of --reps with min and
max. Loopback only; connections spread over 127.0.0.x. Writes results.json, results.md (the
tables) and the gnuplot data into --out (default bench/results/; bench/run.sh passes
docs/bench/ and then draws the PNGs).

Scenarios (issue 14): S1 fan-out 1,000 subscribers as fast as the server drains; S2 the
same with 10,000; S3 latency at 1,000 x 100 msg/s; S4 10,000 idle subscribed connections
(RSS before -> after, /proc/PID/status, summed over the server's processes); S5 handshakes
(connect + upgrade [+ JWT + subscribe] + close) per second, against a plain HTTP request on
the same listener; S6 S1 with 10 clients that stop reading (bridge only); S7 Kafka ingest;
S8 filtered fan-out.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import free_port, open_limits, start_bridge

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def sockstat_tcp_pages():
    with open("/proc/net/sockstat") as f:
        tcp = [l for l in f if l.startswith("TCP:")][0].split()
    return int(tcp[tcp.index("mem") + 1])


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_port(port, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


_MINT_KEYS = None


def _mint(alg, sub):
    return _MINT_KEYS.token(alg, sub)


class Keys:
    def __init__(self, d):
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        self.jwt = jwt
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.secret = "s" * 43
        self.dir = d
        self.rsa_path = os.path.join(d, "r1.pem")
        self.ec_path = os.path.join(d, "e1.pem")
        for k, p in ((self.rsa, self.rsa_path), (self.ec, self.ec_path)):
            with open(p, "wb") as f:
                f.write(k.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def token_file(self, alg, n, d):
        """n distinct tokens (sub bench-0 ...) in a file, for wsb-load --token-file. Minted
        once per suite run, by as many processes as there are CPUs (RS256 signing costs
        ~0.5 ms a token)."""
        path = os.path.join(d, "tokens-%s-%d" % (alg, n))
        if not os.path.exists(path):
            import multiprocessing
            global _MINT_KEYS
            _MINT_KEYS = self  # inherited by the forked workers (keys do not pickle)
            with multiprocessing.get_context("fork").Pool() as pool:
                toks = pool.starmap(_mint, [(alg, "bench-%d" % i) for i in range(n)],
                                    chunksize=500)
            with open(path, "w") as f:
                f.write("\n".join(toks) + "\n")
        return path

    def token(self, alg, sub="bench"):
        now = int(time.time())
        body = {"iss": "https://bench/", "aud": "wsbridge", "sub": sub, "iat": now,
                "exp": now + 3600}
        if alg == "RS256":
            return self.jwt.encode(body, self.rsa, algorithm=alg, headers={"kid": "r1"})
        if alg == "ES256":
            return self.jwt.encode(body, self.ec, algorithm=alg, headers={"kid": "e1"})
        return self.jwt.encode(body, self.secret, algorithm="HS256")


class Server:
    """One running server: .url (subscriber URL), .raw (a peer), .pub_path, .pids()."""

    def __init__(self, kind, a, tmp, keys):
        self.kind, self.a, self.keys = kind, a, keys
        self.port = free_port()
        self.procs = []
        self.pub_path = None
        self.raw = kind != "wsbridge"
        if kind == "wsbridge":
            admin = free_port()
            cfg = {
                "listen": "127.0.0.1:%d" % self.port, "admin": {"listen": "127.0.0.1:%d" % admin},
                "workers": 2,
                "auth": {"token_sources": ["query", "header"],
                         "jwt": {"algorithms": ["HS256", "RS256", "ES256"],
                                 "keys": [{"kid": "r1", "file": keys.rsa_path},
                                          {"kid": "e1", "file": keys.ec_path},
                                          {"secret": keys.secret}],
                                 "issuer": "https://bench/", "audience": "wsbridge"}},
                "acl": [{"subscribe": ["**"], "publish": ["**"]}],
                "connectors": {"m": {"type": "memory"}},
                "channels": [{"match": "bench", "connector": "m", "topic": "bench"},
                             # S8: per-record filters (issue 15), one group per token sub
                             {"match": "benchf", "connector": "m", "topic": "benchf",
                              "filter": {"key": "{sub}"}}],
                "limits": dict(open_limits(1000000), max_inflight_publishes=100000),
                "log": {"level": "error"},
            }
            self.procs.append(start_bridge(a.build, cfg, os.path.join(tmp, "bridge.json"),
                                           os.path.join(tmp, "bridge.log"), admin))
            self.url = "ws://127.0.0.1:%d/ws" % self.port
        elif kind == "node":
            if not os.path.isdir(os.path.join(HERE, "peers", "node_modules", "ws")):
                raise SystemExit("bench: npm ws is not installed under bench/peers: run "
                                 "bench/setup.sh (or --servers wsbridge,nchan)")
            self.procs.append(subprocess.Popen(
                ["node", os.path.join(HERE, "peers", "ws_broadcast.js"), str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, NODE_PATH=os.path.join(HERE, "peers", "node_modules"))))
            wait_port(self.port)
            self.url = "ws://127.0.0.1:%d/" % self.port
        else:
            d = tempfile.mkdtemp(prefix="nchan-", dir=tmp)
            with open(os.path.join(HERE, "peers", "nchan.conf.in")) as f:
                conf = f.read().replace("@DIR@", d).replace("@PORT@", str(self.port))
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(conf)
            self.procs.append(subprocess.Popen(
                ["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "stderr"), "w")))
            wait_port(self.port)
            time.sleep(0.3)
            self.url = "ws://127.0.0.1:%d/sub" % self.port
            self.pub_path = "/pub"

    def pids(self):
        """Every process of the server (nginx: the master and its workers)."""
        out = []
        for p in self.procs:
            out.append(p.pid)
            try:
                kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                      text=True).stdout.split()
                out += [int(k) for k in kids]
            except OSError:
                pass
        return out

    def cpu_arg(self):
        return ",".join("%s%d=%d" % ("server", i, pid) for i, pid in enumerate(self.pids()))

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def load_args(srv, a, clients, extra, token_alg="HS256"):
    args = [os.path.join(a.build, "wsb-load"), "--url", srv.url, "--clients", str(clients),
            "--channel", "bench", "--spread", "32", "--cpu", srv.cpu_arg()] + extra
    if a.gen_threads != 1:
        args += ["--threads", str(a.gen_threads)]
    if srv.raw:
        args.append("--raw")
    else:
        args += ["--token", srv.keys.token(token_alg)]
    if srv.pub_path:
        args += ["--publish-path", srv.pub_path]
    return args


def run_load(args, timeout):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("wsb-load gave no summary: %s" % p.stderr[-500:])
    return json.loads(lines[-1])


def server_cpu(summary):
    return round(sum(v for k, v in summary.get("cpu_s", {}).items() if k.startswith("server")), 3)


def delivery_figures(s):
    """A wsb-load summary's delivery rate, latency percentiles and CPU shares (of the
    measured window)."""
    lat = s.get("latency_ms", {})
    w = s.get("window_s") or 1
    return {"delivered_per_s": s.get("delivered_per_s", 0), "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"), "p99.9_ms": lat.get("p99.9"),
            "server_cpu_pct": round(100 * server_cpu(s) / w, 1), **gen_cpu(s, w)}


def gen_cpu(s, w):
    """The generator's CPU over the window: in total (% of one core), per event-loop thread
    (the busiest one: "under 80 % of a core" is judged per thread and in total), and per
    delivered frame (microseconds: what a change to the generator moves)."""
    total = s.get("cpu_s", {}).get("generator", 0)
    threads = s.get("generator_threads_cpu_s") or [total]
    frames = (s.get("delivered_per_s") or 0) * w
    return {"generator_cpu_pct": round(100 * total / w, 1),
            "generator_thread_max_pct": round(100 * max(threads) / w, 1),
            "generator_threads_cpu_pct": [round(100 * t / w, 1) for t in threads],
            "generator_us_per_frame": round(1e6 * total / frames, 3) if frames else None,
            "frames_per_read": s.get("frames_per_read")}


def fanout(srv, a, clients, duration, slow=0):
    extra = ["--publish", "1000000", "--connect-rate", "5000", "--duration",
             str(duration + clients / 4000.0), "--payload", "100", "--window", str(a.window)]
    if slow:
        extra += ["--slow", str(slow)]
    s = run_load(load_args(srv, a, clients, extra), duration + 60)
    return dict(delivery_figures(s), subscribed=s.get("subscribed"),
                order_violations=s.get("order_violations"), close_codes=s.get("close_codes"))


def s1(srv, a):
    return fanout(srv, a, a.fanout_clients, a.seconds)


def s2(srv, a):
    return fanout(srv, a, 10000, a.seconds)


def s6(srv, a):
    return fanout(srv, a, a.fanout_clients, a.seconds, slow=10)


def s8(srv, a):
    """S1 through a filtered channel: the clients hold tokens of 10 subs in turn (100 clients
    per filter group), the publisher keys its records round-robin over the 10 subs, so each
    record goes to one group: 100 deliveries per record instead of 1,000."""
    groups = 10
    extra = ["--publish", "1000000", "--connect-rate", "5000", "--duration",
             str(a.seconds + a.fanout_clients / 4000.0), "--payload", "100", "--window",
             str(a.window), "--keys", ",".join("bench-%d" % i for i in range(groups))]
    args = load_args(srv, a, a.fanout_clients, extra)
    i = args.index("--token")
    args[i:i + 2] = ["--token-file", srv.keys.token_file("HS256", groups, srv.keys.dir)]
    args[args.index("--channel") + 1] = "benchf"
    s = run_load(args, a.seconds + 60)
    w = s.get("window_s") or 1
    return dict(delivery_figures(s), published_per_s=round(s.get("published_ok", 0) / w),
                subscribed=s.get("subscribed"), order_violations=s.get("order_violations"))


def s3(srv, a):
    extra = ["--publish", "100", "--connect-rate", "5000", "--duration", str(a.seconds + 0.5)]
    s = run_load(load_args(srv, a, 1000, extra), a.seconds + 60)
    return delivery_figures(s)


def s4(srv, a):
    n = a.idle
    time.sleep(0.5)
    before = rss_kib(srv.pids())
    tcp0 = sockstat_tcp_pages()
    args = load_args(srv, a, n, ["--connect-rate", "5000", "--hold", "--duration", "60"])
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = p.stderr.readline()
    time.sleep(2)  # idle
    after = rss_kib(srv.pids())
    # kernel socket memory: the TCP "mem" pages of /proc/net/sockstat (whole host, both
    # ends of every loopback connection, and whatever else runs on the machine)
    tcp1 = sockstat_tcp_pages()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    summary = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    subscribed = summary.get("subscribed", 0)
    return {"rss_before_kib": before, "rss_after_kib": after,
            "per_conn_kib": round((after - before) / max(1, subscribed), 2),
            "subscribed": subscribed, "ready": ready.strip(),
            "kernel_tcp_kib_per_conn": round((tcp1 - tcp0) * 4 / max(1, subscribed), 2)}


def s5(srv, a, alg=None, probe=False, distinct=0):
    extra = ["--churn", "--clients", "64", "--connect-rate", "100000", "--duration",
             str(a.hs_seconds)]
    args = load_args(srv, a, 64, extra, token_alg=alg or "HS256")
    if distinct:
        i = args.index("--token")
        args[i:i + 2] = ["--token-file", srv.keys.token_file(alg, distinct, srv.keys.dir)]
    if probe:
        args = [x for x in args if x != "--churn"] + ["--probe"]
    s = run_load(args, a.hs_seconds + 30)
    w = s.get("window_s") or 1
    per_s = s.get("cycles_per_s", 0)
    # CPU per handshake holds still on a shared machine where the rates do not
    return {"per_s": per_s, "refused": s.get("refused"),
            "tokens_reused": s.get("tokens_reused"),
            "server_us_per_cycle": round(1e6 * server_cpu(s) / w / per_s, 1) if per_s else None,
            "server_cpu_pct": round(100 * server_cpu(s) / w, 1),
            **gen_cpu(s, w)}


def metric_value(admin, name, label):
    """One sample of the bridge's /metrics, e.g. wsbridge_messages_in_total{connector="k"}."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=2).read()
    want = ("%s{%s}" % (name, label)).encode()
    for line in text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    return None


def s7(a, tmp, rep):
    """Ingest from one Kafka partition (the mock) with no subscriber, against a plain
    librdkafka batch consumer (wsb-kafka-bench follow) reading the same partition, same run.

    Both start at the partition's end: the bridge through one `wsb-load` client that subscribes
    and leaves (the shared source lingers, reading, with 0 subscribers), the plain consumer
    assigned at the end. A round stops both (SIGSTOP), produces K records of ~100 bytes
    (wsb-kafka-bench produce; K fits the mock's ~5 MB per-partition log), then resumes one at a
    time (the order alternates) and times its catch-up from the SIGCONT: the plain consumer
    prints the time it read its Kth record; the bridge's wsbridge_messages_in_total is polled
    every 2 ms once 70 % of the previous round's catch-up time has passed. Rate = records /
    catch-up time over all rounds."""
    k, rounds = a.ingest_batch, a.ingest_rounds
    bench_bin = os.path.join(a.build, "wsb-kafka-bench")
    mock = subprocess.Popen([os.path.join(a.build, "wsb-kafka-mock"), "--brokers", "1",
                             "--topic", "ingest:1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs = []
    try:
        bootstrap = mock.stdout.readline().decode().strip()
        props = {"fetch.wait.max.ms": "10"}
        port, admin = free_port(), free_port()
        cfg = {"listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
               "workers": 2, "acl": [{"subscribe": ["**"]}],
               "connectors": {"k": {"type": "kafka", "brokers": bootstrap, "properties": props}},
               "channels": [{"match": "ingest", "connector": "k", "topic": "ingest"}],
               "limits": {"source_linger_ms": 3600000}, "log": {"level": "error"}}
        bridge = start_bridge(a.build, cfg, os.path.join(tmp, "s7-bridge.json"),
                              os.path.join(tmp, "s7-bridge.log"), admin)
        procs.append(bridge)
        # one subscriber starts the shared source at the end, then leaves: it lingers
        run_load([os.path.join(a.build, "wsb-load"), "--url", "ws://127.0.0.1:%d/ws" % port,
                  "--channel", "ingest", "--duration", "1.5"], 30)
        # the bridge sees the close on its own time (a loaded machine: 100s of ms)
        end = time.monotonic() + 10
        while metric_value(admin, "wsbridge_sources", 'state="lingering"') != 1:
            if time.monotonic() > end:
                raise RuntimeError("the source is not lingering")
            time.sleep(0.05)
        plain = subprocess.Popen([bench_bin, "follow", "--brokers", bootstrap, "--topic", "ingest",
                                  "--count", str(k), "--seconds", "600",
                                  "--property", "fetch.wait.max.ms=10"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(plain)
        if "ready" not in plain.stdout.readline():
            raise RuntimeError("plain consumer did not start")
        time.sleep(1.0)  # its assignment and first fetch
        t = {"plain": 0.0, "bridge": 0.0}
        last_bridge = 0.0
        base_in = metric_value(admin, "wsbridge_messages_in_total", 'connector="k"') or 0
        cpu0 = {"plain": proc_cpu(plain.pid), "bridge": proc_cpu(bridge.pid)}
        if os.environ.get("WSB_S7_PERF"):  # a profile of the bridge over the rounds
            procs.insert(0, subprocess.Popen(
                ["perf", "record", "-F", "4999", "-g", "-o", os.environ["WSB_S7_PERF"], "-p",
                 str(bridge.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for r in range(1, rounds + 1):
            for p in (plain, bridge):
                p.send_signal(signal.SIGSTOP)
            out = subprocess.run([bench_bin, "produce", "--brokers", bootstrap, "--topic",
                                  "ingest", "--count", str(k), "--payload", "100"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError("produce failed: %s" % out.stdout)
            order = ("plain", "bridge") if (r + rep) % 2 else ("bridge", "plain")
            for who in order:
                if who == "plain":
                    t0 = time.monotonic()
                    plain.send_signal(signal.SIGCONT)
                    line = json.loads(plain.stdout.readline())
                    if line.get("records") != r * k:
                        raise RuntimeError("plain consumer read %s" % line)
                    t["plain"] += line["mono_s"] - t0
                else:
                    t0 = time.monotonic()
                    bridge.send_signal(signal.SIGCONT)
                    deadline = t0 + 60
                    # each /metrics request costs the bridge CPU: none during the first 70 %
                    # of the previous round's catch-up, then one every 2 ms
                    time.sleep(0.7 * last_bridge)
                    while True:
                        n = metric_value(admin, "wsbridge_messages_in_total", 'connector="k"')
                        if n is not None and n - base_in >= r * k:
                            last_bridge = time.monotonic() - t0
                            t["bridge"] += last_bridge
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError("bridge ingested %s of %d" % (n, r * k))
                        time.sleep(0.002)
        total = k * rounds
        cpu = {"bridge": proc_cpu(bridge.pid) - cpu0["bridge"],
               "plain": proc_cpu(plain.pid) - cpu0["plain"]}
        res = {"records": total, "rounds": rounds, "batch": k,
               "bridge_per_s": round(total / t["bridge"]), "plain_per_s": round(total / t["plain"])}
        for who in ("bridge", "plain"):
            res[who + "_cpu_s"] = round(cpu[who], 3)
            res[who + "_cpu_us_per_record"] = round(1e6 * cpu[who] / total, 2)
        res["ratio"] = round(res["bridge_per_s"] / res["plain_per_s"], 3)
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        mock.stdin.close()
        try:
            mock.wait(10)
        except subprocess.TimeoutExpired:
            mock.kill()


def proc_cpu(pid):
    """CPU seconds (user + system) of a process and its threads so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SCENARIOS = {
    "S1": ("fan-out, 1,000 subscribers, 100 B, as fast as drained: delivered frames/s", s1,
           "delivered_per_s"),
    "S2": ("fan-out, 10,000 subscribers: delivered frames/s", s2, "delivered_per_s"),
    "S3": ("latency at 1,000 x 100 msg/s: p99 ms", s3, "p99_ms"),
    "S4": ("10,000 idle subscribed connections: KiB RSS per connection", s4, "per_conn_kib"),
    "S6": ("S1 with 10 clients that stop reading: delivered frames/s", s6, "delivered_per_s"),
    "S7": ("Kafka ingest, 1 partition, 0 subscribers: records/s", None, "per_s"),
    "S8": ("S1 through a key filter, 10 groups of 100: delivered frames/s", s8,
           "delivered_per_s"),
}


def summarize(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6, help="measured seconds per run")
    ap.add_argument("--hs-seconds", type=float, default=4)
    ap.add_argument("--idle", type=int, default=10000, help="S4 connections")
    ap.add_argument("--fanout-clients", type=int, default=1000, help="S1 and S6 subscribers")
    ap.add_argument("--window", type=int, default=32,
                    help="S1/S2/S6: publishes awaiting acknowledgement (wsb-load --window)")
    ap.add_argument("--gen-threads", type=int, default=min(2, os.cpu_count() or 1),
                    help="wsb-load --threads for every server alike (default: 2, as the "
                    "bridge and nchan use both cores)")
    ap.add_argument("--only", default="S1,S2,S3,S4,S5,S6,S7,S8")
    ap.add_argument("--ingest-batch", type=int, default=30000,
                    help="S7: records produced per round (the mock keeps ~5 MB per partition)")
    ap.add_argument("--ingest-rounds", type=int, default=3, help="S7: rounds per run")
    ap.add_argument("--distinct-tokens", type=int, default=20000,
                    help="S5: distinct RS256/ES256 tokens minted for the uncached runs (more "
                    "than a run uses: a token sent twice may be answered by the bridge's "
                    "verified-token cache; tokens_reused reports it)")
    ap.add_argument("--servers", default="wsbridge,node,nchan")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="wsb-bench-")
    keys = Keys(tmp)
    servers = a.servers.split(",")
    only = a.only.split(",")
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "generator_threads": a.gen_threads,
               "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname()),
                           "loadavg_start": loadavg()},
               "runs": []}

    def record(scen, server, rep, variant, r):
        r.update({"scenario": scen, "server": server, "rep": rep, "variant": variant,
                  "loadavg": loadavg()})
        results["runs"].append(r)
        print(json.dumps(r), flush=True)

    for scen in [s for s in ("S1", "S2", "S3", "S4", "S6", "S8") if s in only]:
        fn = SCENARIOS[scen][1]
        for rep in range(1, a.reps + 1):
            for kind in servers:
                if scen in ("S6", "S8") and kind != "wsbridge":
                    continue
                srv = Server(kind, a, tmp, keys)
                try:
                    record(scen, kind, rep, "", fn(srv, a))
                except Exception as e:  # a failed run is reported, not fatal
                    record(scen, kind, rep, "", {"error": str(e)})
                finally:
                    srv.stop()
    if "S5" in only:
        for rep in range(1, a.reps + 1):
            for kind in servers:
                srv = Server(kind, a, tmp, keys)
                try:
                    # Every variant at the same kernel state: a churn of this length fills
                    # the TIME_WAIT table (tcp_max_tw_buckets), which stays full for the
                    # rest; measured first on a fuller or emptier table, `tcp` and the
                    # upgrades differed by up to 17 points in their ratio (docs/benchmarks.md)
                    s5(srv, a, probe=True)
                    record("S5", kind, rep, "tcp", s5(srv, a, probe=True))
                    for alg in (("HS256", "RS256", "ES256") if kind == "wsbridge" else (None,)):
                        record("S5", kind, rep, alg or "ws", s5(srv, a, alg=alg))
                        if alg in ("RS256", "ES256"):
                            # a distinct token per connection: no cache hit
                            record("S5", kind, rep, alg + "-distinct",
                                   s5(srv, a, alg=alg, distinct=a.distinct_tokens))
                except Exception as e:
                    record("S5", kind, rep, "", {"error": str(e)})
                finally:
                    srv.stop()
    if "S7" in only:
        for rep in range(1, a.reps + 1):
            try:
                r = s7(a, tmp, rep)
                for who in ("bridge", "plain"):
                    record("S7", "wsbridge" if who == "bridge" else "librdkafka", rep, "",
                           {"per_s": r["%s_per_s" % who], "cpu_s": r["%s_cpu_s" % who],
                            "cpu_us_per_record": r["%s_cpu_us_per_record" % who],
                            "ratio": r["ratio"], "records": r["records"]})
            except Exception as e:
                record("S7", "wsbridge", rep, "", {"error": str(e)})
    results["machine"]["loadavg_end"] = loadavg()
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_tables(results, a.out)
    shutil.rmtree(tmp, ignore_errors=True)


def write_tables(results, out):
    runs = results["runs"]
    groups = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["variant"], r["server"]), []).append(r)
    lines = ["Taken %s; %s; wsb-load with %s event-loop thread(s); load average %s at the "
             "start, %s at the end." % (
        results["started"], results["machine"]["uname"], results.get("generator_threads", 1),
        results["machine"]["loadavg_start"],
        results["machine"]["loadavg_end"]), "",
        "| scenario | metric | server | median | min | max | other medians |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    dat = {}
    for (scen, variant, server), rs in sorted(groups.items()):
        metric = {"S5": "per_s", "S7": "per_s"}.get(scen) or SCENARIOS[scen][2]
        s = summarize([r.get(metric) for r in rs])
        if s is None:
            lines.append("| %s %s | %s | %s | failed: %s | | | |" % (
                scen, variant, metric, server, rs[0].get("error", "?")[:80]))
            continue
        others = []
        for k in ("p50_ms", "p99_ms", "p99.9_ms", "server_cpu_pct", "server_us_per_cycle",
                  "generator_cpu_pct", "generator_thread_max_pct", "generator_us_per_frame",
                  "rss_before_kib", "rss_after_kib", "kernel_tcp_kib_per_conn", "ratio",
                  "cpu_us_per_record"):
            if k != metric:
                o = summarize([r.get(k) for r in rs])
                if o:
                    others.append("%s %g" % (k, o["median"]))
        lines.append("| %s %s | %s | %s | %g | %g | %g | %s |" % (
            scen, variant, metric, server, s["median"], s["min"], s["max"], ", ".join(others)))
        dat.setdefault((scen, metric), []).append((("%s %s" % (server, variant)).strip(), s))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for (scen, metric), rows in dat.items():
        with open(os.path.join(out, "%s.dat" % scen), "w") as f:
            f.write("# server median min max (%s)\n" % metric)
            for name, s in rows:
                f.write('"%s" %g %g %g\n' % (name, s["median"], s["min"], s["max"]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
