"""Long tokens at the handshake (issue 9 item 4): RS256 tokens from real identity providers
carry many claims (groups, roles, scopes, namespaced claims) and are often several KiB. Any
Sec-WebSocket-Protocol or Cookie header that fits the 8 KiB request-head limit works: a
3 KiB token as `bearer.T` (and `wsbridge.v1` still echoed), a 5 KiB one in a cookie, also
when the cookies come in two Cookie headers. A head over the limit is still 431."""

import time
import uuid

import pytest

import wsclient
from auth_helpers import Keys, assert_no_token_in, auth_overrides, claims, mint


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bridge(module_bridge_factory, keys):
    return module_bridge_factory(
        auth_overrides(keys, sources=["header", "subprotocol", "cookie:wsb_token"]),
        env=keys.env())


def idp_claims(groups):
    """Claims shaped like an enterprise IdP's access token (Keycloak/Entra/Okta style)."""
    return {
        "jti": str(uuid.uuid4()),
        "nbf": int(time.time()) - 5,
        "azp": "trading-web",
        "typ": "Bearer",
        "sid": str(uuid.uuid4()),
        "acr": "1",
        "scope": "openid profile email offline_access market.read orders.write",
        "email": "jane.doe@example.com",
        "email_verified": True,
        "name": "Jane Doe",
        "preferred_username": "jane.doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "allowed-origins": ["https://app.example.com", "https://admin.example.com"],
        "realm_access": {"roles": ["offline_access", "uma_authorization", "trader"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "https://example.com/claims/tenant": "acme-emea-prod",
        "groups": ["/org/acme/emea/desk-%03d/traders" % i for i in range(groups)],
    }


def long_token(keys, size, sub):
    """An RS256 token (kid r1) of at least `size` bytes, grown by group memberships."""
    groups = 1
    while True:
        tok = mint(keys, "RS256", sub=sub, **idp_claims(groups))
        if len(tok) >= size:
            return tok
        groups += 1


def test_3k_token_in_subprotocol(bridge, keys):
    tok = long_token(keys, 3 * 1024, "sub-3k")
    assert 3 * 1024 <= len(tok) < 3 * 1024 + 200
    c = wsclient.WSClient.connect(bridge.host, bridge.port, bridge.path,
                                  subprotocols=["wsbridge.v1", "bearer." + tok])
    assert c.headers.get("sec-websocket-protocol") == "wsbridge.v1"
    w = c.recv_json(timeout=5)
    assert w["type"] == "welcome" and w["sub"] == "sub-3k", w
    c.close()


def test_3k_token_in_subprotocol_as_separate_headers(bridge, keys):
    """The list may also come as several Sec-WebSocket-Protocol headers."""
    tok = long_token(keys, 3 * 1024, "sub-3k-split")
    c = wsclient.WSClient.connect(bridge.host, bridge.port, bridge.path, subprotocols=[],
                                  headers=[("Sec-WebSocket-Protocol", "bearer." + tok),
                                           ("Sec-WebSocket-Protocol", "wsbridge.v1")])
    assert c.headers.get("sec-websocket-protocol") == "wsbridge.v1"
    assert c.recv_json(timeout=5)["sub"] == "sub-3k-split"
    c.close()


def test_5k_token_in_cookie(bridge, keys):
    tok = long_token(keys, 5 * 1024, "sub-5k")
    assert 5 * 1024 <= len(tok) < 5 * 1024 + 200
    c = wsclient.WSClient.connect(
        bridge.host, bridge.port, bridge.path, subprotocols=["wsbridge.v1"],
        headers=[("Cookie", "theme=dark; _ga=GA1.2.%d.%d; wsb_token=%s; lang=en"
                  % (123456789, int(time.time()), tok))])
    w = c.recv_json(timeout=5)
    assert w["type"] == "welcome" and w["sub"] == "sub-5k", w
    c.close()


def test_5k_token_in_second_cookie_header(bridge, keys):
    """Cookies split over two Cookie headers (as HTTP/2 front proxies forward them) join
    with "; ", so the token's cookie is found whole."""
    tok = long_token(keys, 5 * 1024, "sub-5k-split")
    c = wsclient.WSClient.connect(bridge.host, bridge.port, bridge.path,
                                  headers=[("Cookie", "theme=dark"),
                                           ("Cookie", "wsb_token=" + tok),
                                           ("Cookie", "lang=en")])
    assert c.recv_json(timeout=5)["sub"] == "sub-5k-split"
    c.close()


def test_head_over_the_limit_is_still_431(bridge, keys):
    tok = long_token(keys, 9 * 1024, "sub-9k")
    with pytest.raises(wsclient.HandshakeError) as e:
        wsclient.WSClient.connect(bridge.host, bridge.port, bridge.path,
                                  headers=[("Cookie", "wsb_token=" + tok)])
    assert e.value.status == 431


def test_no_long_token_in_the_log(bridge, keys):
    tok = long_token(keys, 4 * 1024, "sub-4k")
    # a refused one too: signed by another key
    bad = mint(keys, "RS256", key=keys.rsa_other, sub="x", **idp_claims(60))
    for t in (tok, bad):
        try:
            wsclient.WSClient.connect(bridge.host, bridge.port, bridge.path,
                                      headers=[("Cookie", "wsb_token=" + t)]).close()
        except wsclient.HandshakeError as e:
            assert t is bad and e.status == 401
    time.sleep(0.2)
    assert_no_token_in(bridge.logs(), [tok, bad])
