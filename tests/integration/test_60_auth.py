"""Authentication and access control over the wire (SPEC §2 auth/acl, §3 refusals and token
sources, §5 auth op, §6 4401; docs/auth.md): per-run RSA/EC/HMAC keys, tokens minted with
PyJWT, forgeries, every token source, ACL rules with claim conditions, templates and the
permissions claim, expiry and refresh, refusal "close" mode, and no token in any log.
"""

# ctest: cost=18  (scheduling: docs/testing.md)

import json
import socket
import time

import pytest

import wsclient
from auth_helpers import (MINTED, Keys, assert_no_token_in, auth_overrides, claims, mint,
                          mint_raw, tamper)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(autouse=True)
def no_token_in_logs(request):
    """After every test: no token minted so far appears in any bridge's stderr."""
    yield
    for b in getattr(request.node, "_wsb_bridges", []):
        assert_no_token_in(b.logs())


def start(bridge_factory, keys, **kw):
    return bridge_factory(auth_overrides(keys, **kw), env=keys.env())


def connect(b, token=None, source="header", headers=None, subprotocols=None, path=None,
            read_welcome=True):
    """Opens a WebSocket presenting `token` through `source` (header, query, subprotocol,
    cookie). Raises wsclient.HandshakeError on a refusal."""
    hdrs = list(headers or [])
    protos = list(subprotocols) if subprotocols is not None else ["wsbridge.v1"]
    p = path or b.path
    if token is not None:
        if source == "header":
            hdrs.append(("Authorization", "Bearer " + token))
        elif source == "query":
            p += ("&" if "?" in p else "?") + "access_token=" + token
        elif source == "subprotocol":
            protos.append("bearer." + token)
        elif source == "cookie":
            hdrs.append(("Cookie", "theme=dark; wsb_token=" + token))
        else:
            raise ValueError(source)
    c = wsclient.WSClient.connect(b.host, b.port, p, headers=hdrs, subprotocols=protos)
    if read_welcome:
        c.welcome = c.recv_json(timeout=5.0)
        assert c.welcome.get("type") == "welcome", c.welcome
    return c


def refused(b, token=None, source="header", **kw):
    """Asserts the handshake is refused; returns the HandshakeError."""
    with pytest.raises(wsclient.HandshakeError) as ei:
        c = connect(b, token, source, **kw)
        c.close()
    return ei.value


def assert_401(err, codes):
    assert err.status == 401, (err.status, err.body)
    www = err.headers.get("www-authenticate", "")
    assert www.startswith("Bearer") and 'error="invalid_token"' in www, www
    body = err.json()
    assert set(body) >= {"error", "message"}, body
    if isinstance(codes, str):
        codes = (codes,)
    assert body["error"] in codes, body
    assert "close" in err.headers.get("connection", "").lower()
    return body


# ---- the refusal cases, shared by the "http" and "close" modes --------------------------


def bad_tokens(keys):
    """(name, token or None, source, accepted error codes) for every refusal case."""
    now = int(time.time())
    rs = mint(keys, "RS256")
    cases = [
        ("missing", None, "header", ("token_missing",)),
        ("bad_signature", tamper(rs), "header", ("token_invalid",)),
        ("bad_signature_hs", tamper(mint(keys, "HS256")), "header", ("token_invalid",)),
        ("wrong_key_rsa", mint(keys, "RS256", key=keys.rsa_other), "header",
         ("token_invalid",)),
        ("wrong_key_ec", mint(keys, "ES256", key=keys.ec_other), "header", ("token_invalid",)),
        ("wrong_secret", mint(keys, "HS256", key="not-the-secret-" + "x" * 20), "header",
         ("token_invalid",)),
        ("alg_none", mint_raw({"alg": "none", "typ": "JWT"}, claims()), "header",
         ("token_alg", "token_malformed", "token_invalid")),
        ("alg_none_kid", mint_raw({"alg": "none", "kid": "r1"}, claims(), signature=b"x"),
         "header", ("token_alg", "token_invalid", "token_malformed")),
        # the classic confusion: HS256 keyed with the PEM of the server's RSA public key
        ("rsa_pub_as_hmac", mint_raw({"alg": "HS256", "typ": "JWT", "kid": "r1"}, claims(),
                                     signing_input_key=keys.rsa_pub_pem), "header",
         ("token_alg", "token_invalid")),
        ("rsa_pub_as_hmac_nokid", mint_raw({"alg": "HS256", "typ": "JWT"}, claims(),
                                           signing_input_key=keys.rsa_pub_pem), "header",
         ("token_invalid",)),
        ("expired", mint(keys, "RS256", exp_in=-5, iat=now - 60), "header", ("token_expired",)),
        ("nbf_future", mint(keys, "ES256", nbf=now + 120), "header", ("token_not_yet_valid",)),
        ("wrong_iss", mint(keys, "HS256", iss="https://evil.test/"), "header",
         ("token_issuer",)),
        ("no_iss", mint(keys, "HS256", iss=None), "header", ("token_issuer",)),
        ("wrong_aud", mint(keys, "RS256", aud="someone-else"), "header", ("token_audience",)),
        ("wrong_aud_list", mint(keys, "RS256", aud=["a", "b"]), "header", ("token_audience",)),
        # an unknown kid falls back to the kid-less keys (docs/auth.md §3): here only the
        # HMAC secret, which RS256 cannot use
        ("unknown_kid", mint(keys, "RS256", kid="zz"), "header", ("token_invalid", "token_alg")),
        ("garbage", "not-a-jwt", "header", ("token_malformed",)),
        ("alg_not_allowed", mint(keys, "HS512"), "header", ("token_alg",)),
    ]
    return cases


def test_refusals_are_401_with_bearer_challenge_and_json(bridge_factory, keys):
    b = start(bridge_factory, keys)
    for name, tok, source, codes in bad_tokens(keys):
        err = refused(b, tok, source)
        try:
            assert_401(err, codes)
        except AssertionError as e:
            raise AssertionError("case %s: %s" % (name, e))
    # no refused handshake left a connection behind (the last one may still be closing)
    m = b.wait_metric("wsbridge_connections", lambda v: v == 0)
    assert m.value("wsbridge_connections", 0) == 0
    assert m.value("wsbridge_handshakes_total", 0, result="ok") == 0


def test_each_token_source_is_accepted(bridge_factory, keys):
    b = start(bridge_factory, keys)
    for source, alg in (("header", "RS256"), ("query", "ES256"), ("subprotocol", "HS256"),
                        ("cookie", "RS256")):
        tok = mint(keys, alg, sub="src-" + source)
        c = connect(b, tok, source)
        assert c.welcome["sub"] == "src-" + source, (source, c.welcome)
        assert isinstance(c.welcome["expires_at"], int), c.welcome
        # the server selects wsbridge.v1 and never echoes the bearer entry
        assert c.headers.get("sec-websocket-protocol") == "wsbridge.v1", (source, c.headers)
        assert tok not in json.dumps(c.headers)
        r = c.request({"op": "subscribe", "id": 1, "channel": "a.b"})
        assert r["type"] == "subscribed", (source, r)
        c.close()


def test_subprotocol_bearer_only_entry_never_echoed(bridge_factory, keys):
    b = start(bridge_factory, keys)
    tok = mint(keys, "HS256")
    req, key = wsclient.WSClient.build_request(
        b.host, b.port, b.path, subprotocols=["wsbridge.v1", "bearer." + tok])
    status, hdrs, _, _ = wsclient.raw_upgrade(b.host, b.port, req)
    assert status == 101
    assert hdrs.get("sec-websocket-protocol") == "wsbridge.v1", hdrs
    assert "bearer" not in json.dumps(hdrs).lower()


def test_disabled_source_is_not_looked_at(bridge_factory, keys):
    b = start(bridge_factory, keys, sources=["header", "subprotocol", "cookie:wsb_token"])
    tok = mint(keys, "RS256")
    assert_401(refused(b, tok, "query"), ("token_missing",))
    # a cookie with another name is not the configured source either
    assert_401(refused(b, None, headers=[("Cookie", "other=" + tok)]), ("token_missing",))
    c = connect(b, tok, "cookie")
    c.close()


def test_foreign_origin_403_even_with_a_valid_token(bridge_factory, keys):
    b = start(bridge_factory, keys, allowed_origins=["https://app.test"])
    tok = mint(keys, "RS256")
    err = refused(b, tok, headers=[("Origin", "https://evil.test")])
    assert err.status == 403, (err.status, err.body)
    assert set(err.json()) >= {"error", "message"}
    c = connect(b, tok, headers=[("Origin", "https://app.test")])
    c.close()


# ---- ACL over the wire -----------------------------------------------------------------

ACL = [
    {"when": {"claim": "roles", "has": "admin"}, "subscribe": ["**"], "publish": ["**"]},
    {"subscribe": ["public.*", "user.{sub}.**"], "publish": ["chat.{sub}"]},
    {"when": {"claim": "plan", "equals": "gold"}, "subscribe": ["prices.*"]},
    {"subscribe": ["team.{claim.team}.*"]},
]

# (claims, [(op, channel, allowed)])
ACL_TABLE = [
    ({"sub": "u1"}, [
        ("subscribe", "user.u1.inbox", True), ("subscribe", "user.u1.a.b", True),
        ("subscribe", "user.u2.inbox", False), ("subscribe", "user.u1", False),
        ("subscribe", "public.news", True), ("subscribe", "public.a.b", False),
        ("publish", "chat.u1", True), ("publish", "chat.u2", False),
        ("publish", "public.news", False),  # a subscribe grant never allows a publish
        ("subscribe", "chat.u1", False),    # nor the reverse
        ("subscribe", "prices.eur", False), ("subscribe", "admin.x", False),
    ]),
    # template injection: a sub with wildcard or separator characters grants nothing
    ({"sub": "a.*"}, [
        ("subscribe", "user.a.b", False), ("subscribe", "user.a.x", False),
        ("publish", "chat.a", False),
        ("subscribe", "public.ok", True),
    ]),
    ({"sub": "**"}, [
        ("subscribe", "user.anything", False), ("subscribe", "user.x.y", False),
        ("publish", "chat.x", False),
    ]),
    ({"sub": "x.y"}, [
        ("subscribe", "user.x.y", False), ("subscribe", "user.x.y.z", False),
        ("publish", "chat.x.y", False), ("publish", "chat.x", False),
    ]),
    ({"sub": "*"}, [("subscribe", "user.q.r", False), ("publish", "chat.q", False)]),
    ({"sub": "{sub}"}, [("subscribe", "user.a.b", False)]),
    ({"sub": "u2", "team": "red"}, [
        ("subscribe", "team.red.board", True), ("subscribe", "team.blue.board", False),
    ]),
    ({"sub": "u3", "team": "r.*"}, [("subscribe", "team.r.x", False)]),
    ({"sub": "boss", "roles": ["staff", "admin"]}, [
        ("subscribe", "anything.at.all", True), ("publish", "chat.someone", True),
    ]),
    ({"sub": "boss2", "roles": "admin"}, [("publish", "x.y", True)]),
    ({"sub": "u4", "roles": ["administrator"]}, [("publish", "x.y", False)]),
    ({"sub": "g1", "plan": "gold"}, [("subscribe", "prices.eur", True),
                                      ("publish", "prices.eur", False)]),
    ({"sub": "s1", "plan": "silver"}, [("subscribe", "prices.eur", False)]),
    # the permissions claim
    ({"sub": "p1", "wsb": {"subscribe": ["orders", "feed.*"], "publish": ["orders.in"]}}, [
        ("subscribe", "orders", True), ("subscribe", "feed.a", True),
        ("subscribe", "feed.a.b", False), ("publish", "orders", False),
        ("publish", "orders.in", True), ("subscribe", "orders.in", False),
    ]),
    ({"sub": "p2", "wsb": {"subscribe": ["team.{sub}"], "publish": ["**"]}}, [
        ("subscribe", "team.p2", False), ("publish", "anything", True),
    ]),
    ({"sub": "p3", "wsb": "not-an-object"}, [("subscribe", "orders", False)]),
]


def check_op(c, op, channel, allowed, rid):
    if op == "subscribe":
        r = c.request({"op": "subscribe", "id": rid, "channel": channel})
        ok_type = "subscribed"
    else:
        r = c.request({"op": "publish", "id": rid, "channel": channel, "data": {"n": rid}})
        ok_type = "published"
    if allowed:
        assert r.get("type") == ok_type, (op, channel, r)
    else:
        assert r.get("type") == "error" and r.get("code") == "forbidden", (op, channel, r)


def test_acl_table(bridge_factory, keys):
    b = start(bridge_factory, keys, acl=ACL, permissions_claim="wsb")
    rid = 0
    for cl, checks in ACL_TABLE:
        sub = cl["sub"]
        extra = {k: v for k, v in cl.items() if k != "sub"}
        tok = mint(keys, "HS256", sub=sub, **extra)
        c = connect(b, tok)
        assert c.welcome["sub"] == sub
        for op, channel, allowed in checks:
            rid += 1
            try:
                check_op(c, op, channel, allowed, rid)
            except AssertionError as e:
                raise AssertionError("claims %r: %s" % (cl, e))
        c.close()
    m = b.metrics()
    assert m.value("wsbridge_acl_decisions_total", 0, result="deny") >= 1 or \
        not m.has_family("wsbridge_acl_decisions_total")


def test_permissions_claim_ignored_when_not_configured(bridge_factory, keys):
    b = start(bridge_factory, keys, acl=ACL)
    tok = mint(keys, "HS256", sub="p9", wsb={"subscribe": ["orders"], "publish": ["orders"]})
    c = connect(b, tok)
    check_op(c, "subscribe", "orders", False, 1)
    check_op(c, "publish", "orders", False, 2)
    check_op(c, "subscribe", "user.p9.x", True, 3)
    c.close()


# ---- expiry and refresh ----------------------------------------------------------------


def test_expiry_closes_4401_token_expired_on_time(bridge_factory, keys):
    b = start(bridge_factory, keys)
    exp = int(time.time()) + 2
    tok = mint(keys, "RS256", exp_in=None, exp=exp)
    c = connect(b, tok)
    assert c.welcome["expires_at"] == exp
    r = c.request({"op": "subscribe", "id": 1, "channel": "a.b"})
    assert r["type"] == "subscribed"
    code, reason = c.expect_close(timeout=exp - time.time() + 3.0)
    t = time.time()
    assert code == 4401, (code, reason)
    assert b"token_expired" in reason, reason
    assert exp - 0.5 <= t <= exp + 2.0, "closed at %.2f for exp %d" % (t, exp)
    m = b.wait_metric("wsbridge_disconnects_total", lambda v: v >= 1, code="4401")
    assert m.value("wsbridge_disconnects_total", 0, code="4401") >= 1


def test_refresh_same_sub_keeps_the_connection_past_the_old_exp(bridge_factory, keys):
    b = start(bridge_factory, keys)
    exp = int(time.time()) + 2
    c = connect(b, mint(keys, "RS256", sub="r1", exp_in=None, exp=exp))
    assert c.request({"op": "subscribe", "id": 1, "channel": "a.b"})["type"] == "subscribed"
    new_exp = int(time.time()) + 60
    r = c.request({"op": "auth", "id": "re1", "token": mint(keys, "ES256", sub="r1",
                                                            exp_in=None, exp=new_exp)})
    assert r == {"type": "authenticated", "id": "re1", "expires_at": new_exp}, r
    # past the old exp + slack, the connection is still usable and was never closed
    time.sleep(max(0.0, exp - time.time()) + 1.5)
    r = c.request({"op": "publish", "id": 2, "channel": "a.b", "data": 1}, timeout=5)
    assert r["type"] == "published", r
    c.close()


def test_refresh_with_another_sub_or_bad_token_is_rejected(bridge_factory, keys):
    b = start(bridge_factory, keys)
    c = connect(b, mint(keys, "HS256", sub="alice"))
    for rid, tok in (("other", mint(keys, "HS256", sub="mallory")),
                     ("expired", mint(keys, "HS256", sub="alice", exp_in=-5)),
                     ("forged", tamper(mint(keys, "RS256", sub="alice"))),
                     ("none", mint_raw({"alg": "none"}, claims(sub="alice")))):
        r = c.request({"op": "auth", "id": rid, "token": tok})
        assert r.get("type") == "error" and r.get("code") == "token_rejected", (rid, r)
        assert tok not in json.dumps(r)
    # the connection keeps working with the old identity
    r = c.request({"op": "subscribe", "id": 9, "channel": "a.b"})
    assert r["type"] == "subscribed", r
    c.close()


def test_rejected_refresh_still_closes_at_the_old_exp(bridge_factory, keys):
    b = start(bridge_factory, keys)
    exp = int(time.time()) + 2
    c = connect(b, mint(keys, "HS256", sub="bob", exp_in=None, exp=exp))
    r = c.request({"op": "auth", "id": 1, "token": mint(keys, "HS256", sub="eve")})
    assert r.get("code") == "token_rejected", r
    code, reason = c.expect_close(timeout=exp - time.time() + 3.0)
    assert code == 4401 and b"token_expired" in reason, (code, reason)


def test_refresh_that_loses_a_grant_unsubscribes_forbidden(bridge_factory, keys):
    b = start(bridge_factory, keys, acl=[{"subscribe": ["public.*"]}], permissions_claim="wsb")
    c = connect(b, mint(keys, "HS256", sub="p1", wsb={"subscribe": ["orders", "feed"]}))
    for rid, ch in ((1, "orders"), (2, "feed"), (3, "public.x")):
        r = c.request({"op": "subscribe", "id": rid, "channel": ch})
        assert r["type"] == "subscribed", r
    c.send_json({"op": "auth", "id": "a", "token": mint(keys, "HS256", sub="p1",
                                                        wsb={"subscribe": ["feed"]})})
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
            any(m.get("type") == "authenticated" for m in got)
            and any(m.get("type") == "unsubscribed" for m in got)):
        got.append(c.recv_json(timeout=max(0.1, deadline - time.monotonic())))
    auth = [m for m in got if m.get("type") == "authenticated"]
    unsub = [m for m in got if m.get("type") == "unsubscribed"]
    assert auth and auth[0].get("id") == "a", got
    assert unsub == [{"type": "unsubscribed", "channel": "orders", "reason": "forbidden"}], got
    # feed and public.x survive; orders is gone (unsubscribe says not_subscribed)
    r = c.request({"op": "unsubscribe", "id": 4, "channel": "orders"})
    assert r.get("code") == "not_subscribed", r
    r = c.request({"op": "unsubscribe", "id": 5, "channel": "feed"})
    assert r["type"] == "unsubscribed", r
    r = c.request({"op": "unsubscribe", "id": 6, "channel": "public.x"})
    assert r["type"] == "unsubscribed", r
    c.close()


# ---- refusal "close" mode --------------------------------------------------------------


def test_refusal_close_mode_upgrades_then_4401(bridge_factory, keys):
    b = start(bridge_factory, keys, refusal="close")
    pending = []
    for name, tok, source, codes in bad_tokens(keys):
        try:
            c = connect(b, tok, source, read_welcome=False)
        except wsclient.HandshakeError as e:
            raise AssertionError("case %s: refused with HTTP %s in close mode" % (name,
                                                                                   e.status))
        # a request sent right after the upgrade is never answered
        c.send_json({"op": "subscribe", "id": 1, "channel": "a.b"})
        code, reason = c.expect_close(timeout=5)
        assert code == 4401, (name, code, reason)
        assert not c.skipped, "case %s: frames before the close: %r" % (name, c.skipped)
        body = json.loads(reason.decode("utf-8"))
        assert body.get("error") in codes, (name, body)
        pending.append((name, c))
    # TCP is closed afterwards (checked together: the bridge reads nothing more on these
    # connections, so it may hold each open for a short linger after its close frame)
    for name, c in pending:
        assert c.wait_tcp_closed(5), "case %s: TCP still open 5 s after close 4401" % name
        c.close()
    # a valid token still works in close mode
    c = connect(b, mint(keys, "ES256"))
    assert c.request({"op": "subscribe", "id": 1, "channel": "a.b"})["type"] == "subscribed"
    c.close()


def test_origin_refusal_is_403_even_in_close_mode(bridge_factory, keys):
    b = start(bridge_factory, keys, refusal="close", allowed_origins=["https://app.test"])
    err = refused(b, mint(keys, "RS256"), headers=[("Origin", "https://evil.test")])
    assert err.status == 403


# ---- logs ------------------------------------------------------------------------------


def test_logs_never_contain_a_token(bridge_factory, keys):
    """Every kind of token traffic at debug level, then grep the log for each token."""
    b = start(bridge_factory, keys)
    used = []
    for name, tok, source, _ in bad_tokens(keys):
        if tok:
            used.append(tok)
            for src in ("header", "query", "subprotocol", "cookie"):
                try:
                    connect(b, tok, src).close()
                except (wsclient.HandshakeError, wsclient.ConnectionClosed, socket.timeout):
                    pass
    good = mint(keys, "RS256", sub="logme")
    used.append(good)
    c = connect(b, good, "query")
    c.request({"op": "auth", "id": 1, "token": good})
    c.request({"op": "auth", "id": 2, "token": mint(keys, "HS256", sub="other")})
    c.close()
    time.sleep(0.3)
    text = b.logs()
    assert text, "the bridge logged nothing at debug level"
    assert_no_token_in(text, used + MINTED)


def test_wsb_load_token_flag(bridge_factory, keys, tmp_path):
    """The C load client presents --token as ?access_token=; a bad one is counted as 401."""
    from flow_helpers import LoadRun

    b = start(bridge_factory, keys)
    good = mint(keys, "ES256", sub="loader")
    rc, s = LoadRun(["--url", b.ws_url, "--clients", 3, "--token", good, "--channel", "a.b",
                     "--duration", 1], tmp_path / "good.stderr").result(timeout=20)
    assert s["handshakes_ok"] == 3 and s["subscribed"] == 3, s
    bad = tamper(good)
    rc, s = LoadRun(["--url", b.ws_url, "--clients", 3, "--token", bad, "--expect", 1,
                     "--duration", 2], tmp_path / "bad.stderr").result(timeout=20)
    assert s["refused"] == {"401": 3}, s
    assert rc == 1, s
