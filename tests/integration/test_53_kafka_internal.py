"""Kafka internal topics (SPEC §11 routing, issue 9 item 10): a channel never maps to a
topic whose name begins with "__" (`__consumer_offsets`, `__transaction_state`, ...), even
when a `**` capture spells it; subscribe and publish answer `forbidden`, and the broker is
never asked. A literal internal topic in a channel rule is a config error."""

import json

from conftest import DELETE  # noqa: F401
from kafka_helpers import kafka_mock, kafka_overrides, produce  # noqa: F401


def test_capture_cannot_reach_internal_topics(bridge_factory, kafka_mock):  # noqa: F811
    mc = kafka_mock(brokers=1, topics={"orders": 1})
    channels = [{"match": "raw.**", "connector": "k", "topic": "{1}"}]
    b = bridge_factory(kafka_overrides(mc.bootstrap, channels=channels))
    c = b.connect()
    rid = 0
    for name in ("__consumer_offsets", "__transaction_state", "__x.y"):
        for op in ("subscribe", "publish"):
            rid += 1
            req = {"op": op, "id": rid, "channel": "raw." + name}
            if op == "publish":
                req["data"] = {"n": rid}
            r = c.request(req, timeout=10)
            assert r.get("type") == "error" and r.get("code") == "forbidden", (name, op, r)
    # an ordinary topic through the same rule works, end to end
    rid += 1
    r = c.request({"op": "subscribe", "id": rid, "channel": "raw.orders"}, timeout=10)
    assert r.get("type") == "subscribed", r
    produce(mc.bootstrap, "orders", [{"value": b'{"n":1}'}])
    m, _ = c.recv_until(lambda x: x.get("type") == "message", 15)
    assert m["channel"] == "raw.orders" and m["data"] == {"n": 1}, m
    c.close()
    m = b.metrics()
    assert m.value("wsbridge_publish_total", 0, result="rejected") == 3, m


def test_literal_internal_topic_is_a_config_error(run_cli, tmp_path):
    from conftest import default_config, free_port
    cfg = default_config(free_port(), free_port())
    cfg["channels"] = [{"match": "offsets", "connector": "m", "topic": "__consumer_offsets"}]
    f = tmp_path / "w.json"
    f.write_text(json.dumps(cfg))
    r = run_cli(["--check-config", "-c", str(f)])
    assert r.returncode == 1, r.stdout + r.stderr
    want = "%s: channels[0].topic: " % f
    assert any(line.startswith(want) for line in (r.stdout + r.stderr).splitlines()), \
        r.stdout + r.stderr
