"""Smoke check of the benchmark suite (bench/suite.py, bench/run.sh's engine) against the
bridge alone, so that it does not rot between quiet-machine runs: tiny loads, one repetition,
no peers (Node ws and nchan are bench-only dependencies, bench/setup.sh). It checks that each
scenario's run produces its figure — fan-out frames delivered in order with latency
percentiles and CPU seconds, RSS per idle connection, handshake rates for the raw TCP probe
and for HS256/RS256/ES256 tokens (reused and distinct), Kafka ingest next to a plain
librdkafka consumer (S7), fan-out through a key filter (S8) — not how good the figures are;
and bench/kafka_latency.py's bridge-added split (the hand-over tracer loaded into the bridge),
and bench/tls_idle.py (memory per idle wss:// and ws:// connection).
"""

# ctest: serial release-only cost=26  (scheduling: docs/testing.md)

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_suite_runs_every_bridge_scenario(tmp_path):
    # the build directory holding wsbridge and wsb-load (ctest sets both paths)
    build = os.path.dirname(os.environ.get("WSBRIDGE_BIN",
                                           os.path.join(REPO, "build", "wsbridge")))
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "suite.py"), "--build", build,
         "--out", str(out), "--servers", "wsbridge", "--reps", "1", "--seconds", "1",
         "--hs-seconds", "1", "--idle", "300", "--fanout-clients", "100", "--distinct-tokens", "40",
         "--ingest-batch", "2000", "--ingest-rounds", "1", "--only", "S1,S4,S5,S7,S8"],
        capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    runs = {(r["scenario"], r["variant"]): r for r in res["runs"]}
    for r in res["runs"]:
        assert "error" not in r, r
    s1 = runs[("S1", "")]
    assert s1["delivered_per_s"] > 0 and s1["order_violations"] == 0, s1
    assert s1["subscribed"] == 100 and s1["p99_ms"] is not None, s1
    assert s1["server_cpu_pct"] > 0 and s1["generator_cpu_pct"] > 0, s1
    s4 = runs[("S4", "")]
    assert s4["subscribed"] == 300 and 0 < s4["per_conn_kib"] < 256, s4
    for v in ("tcp", "HS256", "RS256", "RS256-distinct", "ES256", "ES256-distinct"):
        s5 = runs[("S5", v)]
        assert s5["per_s"] > 0 and s5["refused"] == {}, (v, s5)
    assert (out / "results.md").read_text().count("| S5") == 6
    for server in ("wsbridge", "librdkafka"):
        s7 = [r for r in res["runs"] if r["scenario"] == "S7" and r["server"] == server]
        assert len(s7) == 1 and s7[0]["per_s"] > 0 and s7[0]["records"] == 2000, s7
    s8 = runs[("S8", "")]
    assert s8["delivered_per_s"] > 0 and s8["order_violations"] == 0, s8
    assert s8["subscribed"] == 100 and s8["published_per_s"] > 0, s8
    # each record reaches one filter group of the 10 (10 clients here), not all 100
    assert s8["delivered_per_s"] < 20 * s8["published_per_s"], s8


def test_kafka_latency_splits_bridge_added(tmp_path):
    """bench/kafka_latency.py at a tiny load: every record reaches every client, and the
    bridge-added split is taken against the bridge's own consumer hand-over (the interceptor
    plugin loaded into the bridge) as well as against the plain consumer."""
    build = os.path.dirname(os.environ.get("WSBRIDGE_BIN",
                                           os.path.join(REPO, "build", "wsbridge")))
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "kafka_latency.py"), "--build", build,
         "--clients", "5", "--rate", "50", "--duration", "2"],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["tracer"] is True, r
    n = r["produced"]  # 100 unless the producer fell behind its pace
    assert n > 0 and r["received_total"] == 5 * n, r
    assert r["order_violations"] == 0 and r["gaps_total"] == 0, r
    # every delivery is paired with the bridge's own hand-over of its record, none before it
    assert r["bridge_added_handover_ms"]["samples"] == 5 * n, r
    assert r["bridge_added_handover_ms"]["earlier"] == 0, r
    assert r["bridge_handover_after_fetch_ms"]["n"] == n, r
    # the plain consumer (a process of its own, reading from its end) pairs with most
    assert r["bridge_added_ms"]["samples"] > 0 and r["handover_minus_plain_ms"]["n"] > 0, r
    assert r["plain_handover_after_fetch_ms"]["n"] > 0, r


def test_tls_idle_measures_both_transports():
    """bench/tls_idle.py with a few clients: each transport's clients all subscribe over
    their transport (TLS 1.3 for wss) and a per-connection figure comes out."""
    build = os.path.dirname(os.environ.get("WSBRIDGE_BIN",
                                           os.path.join(REPO, "build", "wsbridge")))
    p = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "tls_idle.py"), "--build", build,
         "--clients", "50"],
        capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {r["transport"]: r for r in map(json.loads, p.stdout.strip().splitlines())}
    assert set(rows) == {"tls", "plain"}, rows
    assert rows["tls"]["clients"] == 50 and rows["tls"]["tls_version"] == "TLSv1.3", rows
    assert rows["plain"]["clients"] == 50 and rows["plain"]["tls_version"] is None, rows
    # a TLS session holds OpenSSL's state on top of the plain one (figures: docs/deployment.md)
    assert rows["tls"]["rss_after_kib"] > rows["tls"]["rss_before_kib"], rows
