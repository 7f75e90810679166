#!/usr/bin/python3
"""End-to-end latency through the Kafka connector: producer timestamp -> WebSocket client.

Starts librdkafka's mock cluster (build/wsb-kafka-mock, 1 broker, topic "bench" with one
partition), a wsbridge (build/wsbridge, 2 workers) whose Kafka connector reads it, N wsb-load
clients subscribed to the topic's channel, and a confluent_kafka producer writing
{"seq":N,"ts":MS,"pad":"..."} at RATE msg/s (ts = the producer's wall clock, fractional ms,
taken just before produce()). wsb-load reports p50/p99 of receive time - ts over every
delivery. Deliveries/s = RATE x N.

    bench/kafka_latency.py --clients 10 --rate 100            # 1k deliveries/s
    bench/kafka_latency.py --clients 500 --rate 200           # 100k deliveries/s
    bench/kafka_latency.py ... --properties '{}'              # librdkafka defaults

--properties is the connector's librdkafka "properties" object (default
{"fetch.wait.max.ms": "10"}, as --demo and the tests use against the mock: see docs/kafka.md).
Prints one JSON line: the settings and wsb-load's summary. Not a test: nothing is asserted.

What the bridge adds (bridge_added_handover_ms): per delivery, the client's receive time minus
the moment the bridge's own consumer returned that record to the connector thread, stamped by
the interceptor plugin build/libwsb-kafka-trace.so (bench/kafka_trace.c), which librdkafka
loads into the bridge through the connector's "properties" (plugin.library.paths). The older
split, bridge_added_ms (minus a separate plain consumer's receive time), is printed next to it:
two consumers fetch the mock independently, and the mock answers a Fetch that finds no data
only when its wait (fetch.wait.max.ms) runs out, never when a record arrives
(rdkafka_mock_handlers.c), so that difference spreads by up to one fetch wait either way
(handover_minus_plain_ms: the bridge's hand-over minus the plain consumer's, per record).
bridge_handover_after_fetch_ms / plain_handover_after_fetch_ms check the stamp: hand-over
minus the arrival of the Fetch response that carried the record, in either process.
"""

import argparse
import bisect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import free_port, open_limits, start_bridge

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0, help="produced messages per second")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of producing")
    ap.add_argument("--payload", type=int, default=100, help="approximate bytes per record")
    ap.add_argument("--properties", default='{"fetch.wait.max.ms": "10"}')
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--no-trace", action="store_true",
                    help="do not load the hand-over tracer (build/libwsb-kafka-trace.so) into "
                         "the bridge: bridge_added_ms only against the plain consumer")
    ap.add_argument("--memory", action="store_true",
                    help="the memory connector instead (wsb-load publishes through the bridge), "
                         "for comparison under the same conditions")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run's files (bridge log, configs, times) and name their "
                         "directory in the output; removed at the end otherwise")
    a = ap.parse_args()

    from confluent_kafka import Producer

    tmp = tempfile.mkdtemp(prefix="wsb-kbench-")
    # The bridge's own hand-over times: librdkafka loads bench/kafka_trace.c's interceptor
    # into the bridge's Kafka clients (through the connector's "properties", so the bridge is
    # unchanged) and it logs "SEQ MS" when the bridge's consumer returns each record.
    plugin = os.path.join(a.build, "libwsb-kafka-trace.so")
    trace_path = os.path.join(tmp, "handover-times")
    trace = not a.memory and not a.no_trace and os.path.exists(plugin)
    bridge_props = dict(json.loads(a.properties))
    fetch_paths = {w: os.path.join(tmp, w + "-fetches") for w in ("bridge", "plain")}
    if trace:
        os.environ["WSB_KAFKA_TRACE"] = trace_path
        os.environ["WSB_KAFKA_TRACE_FETCH"] = fetch_paths["bridge"]
        bridge_props["plugin.library.paths"] = plugin
    mock = subprocess.Popen([os.path.join(a.build, "wsb-kafka-mock"), "--brokers", "1",
                             "--topic", "bench:1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    bootstrap = mock.stdout.readline().decode().strip()
    port, admin = free_port(), free_port()
    cfg = {
        "listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
        "workers": 2, "acl": [{"subscribe": ["**"], "publish": ["**"]}],
        "connectors": {"k": {"type": "kafka", "brokers": bootstrap,
                             "properties": bridge_props},
                       "m": {"type": "memory"}},
        "channels": [{"match": "bench", "connector": "m" if a.memory else "k",
                      "topic": "bench"}],
        "limits": open_limits(100000),
        "log": {"level": "warn"},
    }
    if not cfg["connectors"]["k"]["properties"]:
        del cfg["connectors"]["k"]["properties"]
    try:
        bridge = start_bridge(a.build, cfg, os.path.join(tmp, "bench.json"),
                              os.path.join(tmp, "log"), admin)
    except RuntimeError as e:
        mock.stdin.close()
        mock.wait(10)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(str(e))
    load = None
    try:
        # The producer connects (and gets its idempotent producer id) before anyone listens,
        # so its warm-up is not counted as latency; clients subscribe from latest.
        prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0,
                         "enable.idempotence": True})
        prod.produce("bench", value=b'{"warmup":true}', partition=0)
        prod.flush(10)

        args = [os.path.join(a.build, "wsb-load"), "--url", "ws://127.0.0.1:%d/ws" % port,
                "--clients", str(a.clients), "--connect-rate", "2000", "--channel", "bench",
                "--duration", str(a.duration + 8)]
        ref = None
        if a.memory:
            n = int(a.rate * a.duration)
            args += ["--publish", str(a.rate), "--payload", str(a.payload), "--expect", str(n)]
        else:
            # The broker side: a plain librdkafka consumer with the bridge's properties reads
            # the partition from its end next to the bridge and logs when it got each record;
            # wsb-load then reports, per delivery, its receive time minus that (after_ref_ms).
            ref_path = os.path.join(tmp, "ref-times")
            ref = subprocess.Popen(
                [os.path.join(a.build, "wsb-kafka-bench"), "latency", "--brokers", bootstrap,
                 "--topic", "bench", "--seconds", str(a.duration + 5 + a.clients / 1000.0),
                 "--out", ref_path] +
                sum((["--property", "%s=%s" % kv] for kv in json.loads(a.properties).items()),
                    []) + (["--property", "plugin.library.paths=" + plugin] if trace else []),
                env=dict(os.environ, WSB_KAFKA_TRACE="",
                         WSB_KAFKA_TRACE_FETCH=fetch_paths["plain"]),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            args += ["--ref-times", ref_path]
            if trace:
                args += ["--ref-times", trace_path]
        load = subprocess.Popen(args, stdout=subprocess.PIPE)
        time.sleep(3 + a.clients / 1000.0)  # every client connected and subscribed

        pad = "x" * max(0, a.payload - 40)
        sent = [0]
        appended = []  # producer stamp -> delivery report (the broker's append acknowledged)
        stamps = {}  # seq -> the producer's stamp

        def on_delivery(ts):
            def cb(err, msg):
                if err is None:
                    appended.append(time.time() * 1000.0 - ts)
            return cb

        def run():
            start = time.monotonic()
            i = 0
            while time.monotonic() - start < a.duration:
                due = start + i / a.rate
                now = time.monotonic()
                if due > now:
                    time.sleep(min(0.002, due - now))
                    prod.poll(0)
                    continue
                ts = time.time() * 1000.0
                v = json.dumps({"seq": i, "ts": ts, "pad": pad})
                stamps[i] = ts
                prod.produce("bench", value=v.encode(), partition=0, on_delivery=on_delivery(ts))
                prod.poll(0)
                i += 1
            prod.flush(30)
            sent[0] = i

        if a.memory:
            sent[0] = int(a.rate * a.duration)
        else:
            t = threading.Thread(target=run)
            t.start()
            t.join()
        broker = None
        if ref:
            rout, _ = ref.communicate(timeout=a.duration + 60)
            broker = json.loads(rout.decode().strip().splitlines()[-1])
        out, _ = load.communicate(timeout=a.duration + 60)
        summary = json.loads(out.decode().strip().splitlines()[-1])

        def times(path):
            t = {}
            try:
                with open(path) as f:
                    for line in f:
                        seq, ms = line.split()
                        t.setdefault(int(seq), float(ms))
            except OSError:
                pass
            return t

        def pcts(v):
            v = sorted(v)
            if not v:
                return None
            out = {q: round(v[min(len(v) - 1, int(f * len(v)))], 1)
                   for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
            out.update(min=round(v[0], 1), max=round(v[-1], 1), n=len(v))
            return out
        def after_fetch(who, handed):
            # per record: its hand-over to the application minus the arrival of the last
            # Fetch response that carried data before it (librdkafka's parse and queue, and
            # the application thread's wake-up). A response is taken to carry data when it is
            # larger than the smallest (empty) one by 50 bytes.
            try:
                with open(fetch_paths[who]) as f:
                    fr = [tuple(map(float, line.split())) for line in f]
            except OSError:
                return None
            if not fr or not handed:
                return None
            empty = min(size for _, size in fr)
            data = sorted(t for t, size in fr if size > empty + 50)
            v = []
            for ms in handed.values():
                i = bisect.bisect_right(data, ms) - 1
                if i >= 0 and ms - data[i] < 1000:
                    v.append(ms - data[i])
            return pcts(v)

        handover = times(trace_path) if trace else None
        plain = times(ref_path) if ref else {}
        print(json.dumps({"connector": "memory" if a.memory else "kafka", "clients": a.clients, "rate": a.rate, "duration_s": a.duration,
                          "payload": a.payload, "properties": json.loads(a.properties),
                          "tracer": trace, "files": tmp if a.keep else None,
                          "produced": sent[0],
                          "deliveries_per_s": round(a.rate * a.clients),
                          "received_total": summary.get("received_total"),
                          "order_violations": summary.get("order_violations"),
                          "gaps_total": summary.get("gaps_total"),
                          "latency_ms": summary.get("latency_ms"),
                          # the split (Kafka only): stamp -> append acknowledged, stamp -> a
                          # plain consumer has it, and per delivery the client's receive time
                          # minus the plain consumer's for the same record
                          "append_ms": pcts(appended),
                          "broker_ms": broker and broker.get("latency_ms"),
                          "bridge_added_ms": summary.get("after_ref_ms"),
                          # with the tracer: the same per delivery against the bridge's own
                          # consumer (the moment it returned the record to the connector),
                          # the stamp -> that moment, and per record that moment minus the
                          # plain consumer's (what the two consumers' fetch cycles differ by)
                          "bridge_added_handover_ms": summary.get("after_ref2_ms"),
                          "bridge_consumer_ms": handover and pcts(
                              [ms - stamps[q] for q, ms in handover.items() if q in stamps]),
                          "handover_minus_plain_ms": handover and pcts(
                              [ms - plain[q] for q, ms in handover.items() if q in plain]),
                          # the hand-over after its Fetch response arrived, in the bridge and
                          # in the plain consumer
                          "bridge_handover_after_fetch_ms": trace and after_fetch("bridge",
                                                                                  handover),
                          "plain_handover_after_fetch_ms": trace and after_fetch("plain", plain)
                          }))
    finally:
        if load and load.poll() is None:
            load.kill()
        if not a.memory and ref and ref.poll() is None:
            ref.kill()
        bridge.terminate()
        try:
            bridge.wait(10)
        except subprocess.TimeoutExpired:
            bridge.kill()
        mock.stdin.close()
        mock.wait(10)


if __name__ == "__main__":
    main()
