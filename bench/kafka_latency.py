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
"""

import argparse
import json
import os
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
    ap.add_argument("--memory", action="store_true",
                    help="the memory connector instead (wsb-load publishes through the bridge), "
                         "for comparison under the same conditions")
    a = ap.parse_args()

    from confluent_kafka import Producer

    tmp = tempfile.mkdtemp(prefix="wsb-kbench-")
    mock = subprocess.Popen([os.path.join(a.build, "wsb-kafka-mock"), "--brokers", "1",
                             "--topic", "bench:1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    bootstrap = mock.stdout.readline().decode().strip()
    port, admin = free_port(), free_port()
    cfg = {
        "listen": "127.0.0.1:%d" % port, "admin": {"listen": "127.0.0.1:%d" % admin},
        "workers": 2, "acl": [{"subscribe": ["**"], "publish": ["**"]}],
        "connectors": {"k": {"type": "kafka", "brokers": bootstrap,
                             "properties": json.loads(a.properties)},
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
                    []), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            args += ["--ref-times", ref_path]
        load = subprocess.Popen(args, stdout=subprocess.PIPE)
        time.sleep(3 + a.clients / 1000.0)  # every client connected and subscribed

        pad = "x" * max(0, a.payload - 40)
        sent = [0]
        appended = []  # producer stamp -> delivery report (the broker's append acknowledged)

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

        def pcts(v):
            v = sorted(v)
            return {q: round(v[min(len(v) - 1, int(f * len(v)))], 1)
                    for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))} if v else None
        print(json.dumps({"connector": "memory" if a.memory else "kafka", "clients": a.clients, "rate": a.rate, "duration_s": a.duration,
                          "payload": a.payload, "properties": json.loads(a.properties),
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
                          "bridge_added_ms": summary.get("after_ref_ms")}))
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
