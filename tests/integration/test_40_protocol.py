"""SPEC §5: the wsbridge.v1 application protocol end to end through the in-process memory
connector: welcome, errors (never a close for a bad request), id echo, subscribe/unsubscribe
state, publish round trips with verbatim data, and fan-out to many clients in order."""

import json
import socket
import time

import pytest

from wsclient import OP_TEXT, Closed


@pytest.fixture(scope="module")
def bridge(module_bridge_factory):
    """One bridge with the default config for the module (tests use distinct channels)."""
    return module_bridge_factory()


def sub(c, channel, rid=1):
    r = c.request({"op": "subscribe", "id": rid, "channel": channel})
    assert r["type"] == "subscribed", r
    return r


def expect_error(c, obj_or_bytes, code, rid=None, codes=None):
    if isinstance(obj_or_bytes, (bytes, str)):
        c.send_text(obj_or_bytes)
    else:
        c.send_json(obj_or_bytes)
    m, _ = c.recv_until(lambda x: x.get("type") == "error", timeout=3)
    allowed = codes or (code,)
    assert m["code"] in allowed, m
    assert isinstance(m.get("message"), str), m
    if rid is not None:
        assert m.get("id") == rid, m
    return m


def assert_no_message(c, within=0.3):
    """Nothing arrives on c for `within` seconds (pings excepted)."""
    try:
        m = c.recv_json(timeout=within)
    except socket.timeout:
        return
    pytest.fail("unexpected message %r" % m)


# ---- welcome ----------------------------------------------------------------------------


def test_welcome_fields(bridge):
    c = bridge.connect(subprotocols=["wsbridge.v1"])
    w = c.welcome
    assert set(w) >= {"type", "session", "sub", "expires_at", "protocol"}, w
    assert w["type"] == "welcome"
    assert isinstance(w["session"], str) and w["session"], w
    assert w["sub"] is None, "anonymous client: sub must be null: %r" % w
    assert w["expires_at"] is None, w
    assert w["protocol"] == "wsbridge.v1"
    c.close()


def test_welcome_is_the_first_frame_and_a_text_frame(bridge):
    c = bridge.connect(read_welcome=False)
    f = c.recv_frame()
    assert f.opcode == OP_TEXT and f.fin and not f.masked, f
    assert json.loads(f.payload)["type"] == "welcome"
    c.close()


def test_sessions_are_unique(bridge):
    cs = [bridge.connect() for _ in range(5)]
    assert len({c.welcome["session"] for c in cs}) == 5
    for c in cs:
        c.close()


# ---- bad requests: error replies, the connection stays -----------------------------------


@pytest.mark.parametrize("text", ["not json", "{", '{"op":"subscribe"', "", " ", "[1,2",
                                  '{"op":"subscribe","channel":"mem.a"}}', "nul\x00l"])
def test_invalid_json_is_an_error_not_a_close(bridge, text):
    c = bridge.connect()
    expect_error(c, text, "invalid_request")
    sub(c, "mem.still.open")
    c.close()


@pytest.mark.parametrize("doc", [[1, 2], 42, "op", None, True])
def test_non_object_request(bridge, doc):
    c = bridge.connect()
    expect_error(c, doc, "invalid_request")
    sub(c, "mem.ok")
    c.close()


def test_missing_op(bridge):
    c = bridge.connect()
    expect_error(c, {"id": 3, "channel": "mem.a"}, "invalid_request", rid=3)
    c.close()


def test_unknown_op(bridge):
    """SPEC lists no dedicated code; invalid_request or unsupported are both acceptable."""
    c = bridge.connect()
    expect_error(c, {"op": "frobnicate", "id": 4}, None, rid=4,
                 codes=("invalid_request", "unsupported"))
    c.close()


@pytest.mark.parametrize("op", [1, None, ["subscribe"], {"x": 1}])
def test_op_of_wrong_type(bridge, op):
    c = bridge.connect()
    expect_error(c, {"op": op, "id": 5}, "invalid_request")
    c.close()


@pytest.mark.parametrize("rid", [1, 0, -7, 12345678901, "abc", "", "κόσμε", "with \"quotes\""])
def test_id_echo_on_success(bridge, rid):
    c = bridge.connect()
    c.send_json({"op": "subscribe", "id": rid, "channel": "mem.idecho"})
    r = c.recv_json()
    assert r["type"] == "subscribed" and r["id"] == rid and type(r["id"]) is type(rid), r
    c.close()


@pytest.mark.parametrize("rid", [9, "req-9"])
def test_id_echo_on_error(bridge, rid):
    c = bridge.connect()
    m = expect_error(c, {"op": "subscribe", "id": rid, "channel": "nope.nothing"},
                     "unknown_channel")
    assert m["id"] == rid and type(m["id"]) is type(rid), m
    c.close()


def test_no_id_no_id_in_reply(bridge):
    c = bridge.connect()
    c.send_json({"op": "subscribe", "channel": "mem.noid"})
    r = c.recv_json()
    assert r["type"] == "subscribed" and "id" not in r, r
    c.close()


@pytest.mark.parametrize("rid", [{"a": 1}, [1], True, "x" * 500])
def test_bad_id_is_invalid_request(bridge, rid):
    """An id must be a string or a number (and bounded): otherwise invalid_request."""
    c = bridge.connect()
    c.send_json({"op": "subscribe", "id": rid, "channel": "mem.badid"})
    m = c.recv_json()
    assert m["type"] == "error" and m["code"] == "invalid_request", m
    c.close()


@pytest.mark.parametrize("channel", [None, "", 5, "a..b", ".a", "a.", "a b", "mem.ü",
                                     "mem.*", "mem.**", "mem/x"])
def test_bad_channel_name_invalid_request(bridge, channel):
    c = bridge.connect()
    req = {"op": "subscribe", "id": 1}
    if channel is not None:
        req["channel"] = channel
    expect_error(c, req, "invalid_request", rid=1)
    c.close()


# ---- subscription state -------------------------------------------------------------------


def test_subscribe_reply_shape(bridge):
    c = bridge.connect()
    r = c.request({"op": "subscribe", "id": 1, "channel": "mem.shape", "from": "latest"})
    assert r["type"] == "subscribed" and r["id"] == 1 and r["channel"] == "mem.shape", r
    c.close()


def test_subscribe_unrouted_channel_unknown_channel(bridge):
    c = bridge.connect()
    expect_error(c, {"op": "subscribe", "id": 2, "channel": "orders"}, "unknown_channel", rid=2)
    c.close()


def test_subscribe_twice_already_subscribed(bridge):
    c = bridge.connect()
    sub(c, "mem.twice", 1)
    expect_error(c, {"op": "subscribe", "id": 2, "channel": "mem.twice"}, "already_subscribed",
                 rid=2)
    c.close()


def test_unsubscribe_without_subscription_not_subscribed(bridge):
    c = bridge.connect()
    expect_error(c, {"op": "unsubscribe", "id": 3, "channel": "mem.never"}, "not_subscribed",
                 rid=3)
    c.close()


def test_unsubscribe_then_again(bridge):
    c = bridge.connect()
    sub(c, "mem.unsub")
    r = c.request({"op": "unsubscribe", "id": 2, "channel": "mem.unsub"})
    assert r == {"type": "unsubscribed", "id": 2, "channel": "mem.unsub"}, r
    expect_error(c, {"op": "unsubscribe", "id": 3, "channel": "mem.unsub"}, "not_subscribed",
                 rid=3)
    sub(c, "mem.unsub", 4)  # and it can subscribe again
    c.close()


def test_max_subscriptions(bridge_factory):
    b = bridge_factory({"limits": {"max_subscriptions": 3}})
    c = b.connect()
    for i in range(3):
        sub(c, "mem.max.%d" % i, i)
    expect_error(c, {"op": "subscribe", "id": 9, "channel": "mem.max.9"},
                 "too_many_subscriptions", rid=9)
    c.request({"op": "unsubscribe", "id": 10, "channel": "mem.max.0"})
    sub(c, "mem.max.9", 11)
    c.close()


def test_acl_forbidden(bridge_factory):
    b = bridge_factory({"acl": [{"subscribe": ["mem.public.*"], "publish": ["mem.chat.*"]}]})
    c = b.connect()
    sub(c, "mem.public.news")
    expect_error(c, {"op": "subscribe", "id": 2, "channel": "mem.secret"}, "forbidden", rid=2)
    expect_error(c, {"op": "subscribe", "id": 3, "channel": "mem.public.a.b"}, "forbidden", rid=3)
    expect_error(c, {"op": "publish", "id": 4, "channel": "mem.public.news", "data": 1},
                 "forbidden", rid=4)
    r = c.request({"op": "publish", "id": 5, "channel": "mem.chat.x", "data": 1})
    assert r["type"] == "published", r
    c.close()


# ---- publish / message ------------------------------------------------------------------

PAYLOADS = [
    {"text": "hi", "n": [1, 2, 3], "nested": {"a": None, "b": True}},
    "a string",
    "κόσμε € 𝄞",
    12345,
    -1.5e-7,
    None,
    False,
    [],
    {},
    [{"deep": [[[[1]]]]}],
]


@pytest.mark.parametrize("i", range(len(PAYLOADS)))
def test_publish_round_trip_data_verbatim(bridge, i):
    a = bridge.connect()
    b = bridge.connect()
    sub(a, "mem.chat.room1")
    data = PAYLOADS[i]
    r = b.request({"op": "publish", "id": 3, "channel": "mem.chat.room1", "data": data})
    assert r == {"type": "published", "id": 3, "channel": "mem.chat.room1"}, r
    m = a.recv_json()
    assert m["type"] == "message" and m["channel"] == "mem.chat.room1", m
    assert "data" in m and m["data"] == data and type(m["data"]) is type(data), (m, data)
    a.close()
    b.close()


def test_publish_data_bytes_verbatim(bridge):
    """The published JSON value reaches subscribers as the same JSON text (compact
    re-encoding allowed: compare parsed values and key order)."""
    a = bridge.connect()
    b = bridge.connect()
    sub(a, "mem.order")
    raw = '{"op":"publish","id":1,"channel":"mem.order","data":{"z":1,"a":2,"m":[3,2,1]}}'
    b.send_text(raw)
    assert b.recv_json()["type"] == "published"
    op, payload = a.recv_message()
    m = json.loads(payload, object_pairs_hook=list)
    data = dict(m)["data"]
    assert data == [("z", 1), ("a", 2), ("m", [3, 2, 1])], data
    a.close()
    b.close()


def test_publish_with_key_and_headers(bridge):
    a = bridge.connect()
    b = bridge.connect()
    sub(a, "mem.kh")
    r = b.request({"op": "publish", "id": 1, "channel": "mem.kh", "data": {"x": 1},
                   "key": "user-1", "headers": {"h1": "v1", "trace": "abc"}})
    assert r["type"] == "published", r
    m = a.recv_json()
    assert m["data"] == {"x": 1}
    # SPEC §5: key/headers are sent "when known"; the memory broker knows them.
    assert m.get("key") == "user-1", m
    assert m.get("headers") == {"h1": "v1", "trace": "abc"}, m
    a.close()
    b.close()


def test_publisher_subscribed_gets_its_own_message(bridge):
    c = bridge.connect()
    sub(c, "mem.self")
    c.send_json({"op": "publish", "id": 2, "channel": "mem.self", "data": "me"})
    got = [c.recv_json(), c.recv_json()]
    types = sorted(m["type"] for m in got)
    assert types == ["message", "published"], got
    c.close()


def test_publish_unrouted_unknown_channel(bridge):
    c = bridge.connect()
    expect_error(c, {"op": "publish", "id": 1, "channel": "nope.x", "data": 1},
                 "unknown_channel", rid=1)
    c.close()


def test_publish_without_data_invalid_request(bridge):
    c = bridge.connect()
    expect_error(c, {"op": "publish", "id": 1, "channel": "mem.x"}, "invalid_request", rid=1)
    c.close()


@pytest.mark.parametrize("extra", [{"key": 5}, {"headers": "x"}, {"headers": {"a": 1}},
                                   {"headers": [1]}])
def test_publish_bad_key_or_headers_invalid_request(bridge, extra):
    c = bridge.connect()
    req = {"op": "publish", "id": 1, "channel": "mem.x", "data": 1}
    req.update(extra)
    expect_error(c, req, "invalid_request", rid=1)
    c.close()


def test_channels_are_isolated(bridge):
    a = bridge.connect()
    b = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.iso.a")
    sub(b, "mem.iso.b")
    p.request({"op": "publish", "id": 1, "channel": "mem.iso.a", "data": "for a"})
    assert a.recv_json()["data"] == "for a"
    assert_no_message(b)
    for c in (a, b, p):
        c.close()


def test_no_messages_after_unsubscribe(bridge):
    a = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.gone")
    p.request({"op": "publish", "id": 1, "channel": "mem.gone", "data": 1})
    assert a.recv_json()["data"] == 1
    a.request({"op": "unsubscribe", "id": 2, "channel": "mem.gone"})
    p.request({"op": "publish", "id": 3, "channel": "mem.gone", "data": 2})
    assert_no_message(a)
    a.close()
    p.close()


def test_subscriber_disconnect_does_not_hurt_others(bridge):
    a = bridge.connect()
    b = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.dc")
    sub(b, "mem.dc")
    a.close()  # abrupt
    time.sleep(0.1)
    p.request({"op": "publish", "id": 1, "channel": "mem.dc", "data": "still"})
    assert b.recv_json()["data"] == "still"
    b.close()
    p.close()


def test_binary_message(bridge):
    """SPEC §5 defines only JSON text frames. Allowed: an invalid_request error (connection
    stays) or close 1003 (unsupported data). See docs/testing.md."""
    c = bridge.connect()
    c.send_binary(b'{"op":"subscribe","id":1,"channel":"mem.bin"}')
    try:
        m = c.recv_json(timeout=3)
    except Closed as e:
        assert e.code == 1003, e
        assert c.wait_tcp_closed(3)
        return
    assert m["type"] == "error" and m["code"] == "invalid_request", m
    sub(c, "mem.bin.after")
    c.close()


def test_request_pipelining_order(bridge):
    """Replies come back in request order for pipelined requests on the same connection."""
    c = bridge.connect()
    for i in range(20):
        c.send_json({"op": "subscribe", "id": i, "channel": "mem.pipe.%d" % i})
    ids = [c.recv_json()["id"] for _ in range(20)]
    assert ids == list(range(20))
    c.close()


# ---- fan-out ----------------------------------------------------------------------------


def test_fanout_50_clients_200_messages_exactly_once_in_order(bridge_factory):
    bridge = bridge_factory({"limits": {"max_inflight_publishes": 1000}})
    n_clients, n_msgs = 50, 200
    subs = [bridge.connect() for _ in range(n_clients)]
    for i, c in enumerate(subs):
        c.send_json({"op": "subscribe", "id": i, "channel": "mem.fan.out"})
    for i, c in enumerate(subs):
        r = c.recv_json()
        assert r["type"] == "subscribed" and r["id"] == i, r
    p = bridge.connect()
    for k in range(n_msgs):
        p.send_json({"op": "publish", "id": k, "channel": "mem.fan.out", "data": {"seq": k}})
    acks = [p.recv_json() for _ in range(n_msgs)]
    assert [a["type"] for a in acks] == ["published"] * n_msgs, \
        [a for a in acks if a["type"] != "published"][:3]
    assert sorted(a["id"] for a in acks) == list(range(n_msgs))
    for i, c in enumerate(subs):
        seqs = []
        deadline = time.monotonic() + 10
        while len(seqs) < n_msgs and time.monotonic() < deadline:
            m = c.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            assert m["type"] == "message" and m["channel"] == "mem.fan.out", m
            seqs.append(m["data"]["seq"])
        assert seqs == list(range(n_msgs)), \
            "client %d: got %d messages, first mismatch at %r" % (
                i, len(seqs), next((j for j, s in enumerate(seqs) if s != j), None))
        assert_no_message(c, within=0.05)
    for c in subs + [p]:
        c.close()


def test_large_payloads_reach_a_late_reader_intact(bridge):
    """Three 600 KB messages while the subscriber is not reading: partial socket writes
    and queued frames must deliver every byte in order."""
    a = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.large")
    blobs = [("%d" % k) * (600 * 1024) for k in range(3)]
    for k, blob in enumerate(blobs):
        r = p.request({"op": "publish", "id": k, "channel": "mem.large", "data": blob}, timeout=10)
        assert r["type"] == "published", {x: y for x, y in r.items() if x != "data"}
    time.sleep(0.3)
    for k, blob in enumerate(blobs):
        m = a.recv_json(timeout=10)
        assert m["type"] == "message" and m["data"] == blob, (k, len(m.get("data", "")))
    a.close()
    p.close()


def test_publish_data_text_byte_identical(bridge):
    """docs/protocol.md: `data` is forwarded as the client's own JSON text with insignificant
    whitespace removed (numbers keep their spelling, strings keep their escapes), so the
    subscriber's `data` is byte-identical."""
    a = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.bytes")
    data_in = '{ "a" : 2.50, "b":1E2 ,"c":-0, "d":"\\u00e9\\n", "e":[ 1 , {"f":null} ] }'
    data_out = '{"a":2.50,"b":1E2,"c":-0,"d":"\\u00e9\\n","e":[1,{"f":null}]}'
    p.send_text('{"op":"publish","id":1,"channel":"mem.bytes","data":%s}' % data_in)
    assert p.recv_json()["type"] == "published"
    op, raw = a.recv_message()
    assert ('"data":' + data_out).encode() in raw, raw
    a.close()
    p.close()


@pytest.mark.parametrize("depth", [64, 65, 5000])
def test_publish_nesting_limit(bridge, depth):
    """docs/protocol.md: data nested at most 64 levels; deeper is invalid_request (never
    delivered as a string, never a crash)."""
    a = bridge.connect()
    p = bridge.connect()
    sub(a, "mem.deep")
    data = "[" * depth + "]" * depth
    p.send_text('{"op":"publish","id":1,"channel":"mem.deep","data":%s}' % data)
    r = p.recv_json()
    if depth <= 64:
        assert r["type"] == "published", r
        op, raw = a.recv_message()
        assert ('"data":' + data).encode() in raw
    else:
        assert r["type"] == "error" and r["code"] == "invalid_request", r
        assert_no_message(a, within=0.2)
    a.close()
    p.close()
