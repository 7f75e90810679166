"""Auth edge cases of issue 9 (docs/auth.md): RFC 9068 `typ` values, tokens without `kid`,
an empty `access_token=`, and the Origin rules (`["*"]`, requests without Origin, the cookie
source needing allowed_origins). Tokens are minted with PyJWT."""

import jwt
import pytest

import wsclient
from auth_helpers import MINTED, Keys, assert_no_token_in, auth_overrides, claims, mint

from test_60_auth import assert_401, connect, refused


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return Keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(autouse=True)
def no_token_in_logs(request):
    yield
    for b in getattr(request.node, "_wsb_bridges", []):
        assert_no_token_in(b.logs())


def start(bridge_factory, keys, **kw):
    return bridge_factory(auth_overrides(keys, **kw), env=keys.env())


# ---- item 7: an empty access_token is malformed, not absent ---------------------------


def test_empty_query_token_is_malformed(bridge_factory, keys):
    b = start(bridge_factory, keys)
    for path in (b.path + "?access_token=", b.path + "?a=1&access_token=&b=2",
                 b.path + "?access_token"):
        err = refused(b, None, path=path)
        assert_401(err, ("token_malformed",))
    # an empty query token is not skipped in favour of a later source
    tok = mint(keys, "HS256")
    err = refused(b, tok, "subprotocol", path=b.path + "?access_token=")
    assert_401(err, ("token_malformed",))
    # a real one still works
    c = connect(b, tok, "query")
    c.close()


# ---- item 5: RFC 9068 typ values --------------------------------------------------------


def mint_typ(keys, alg, typ, kid=None, **claim_kw):
    """A PyJWT token whose header carries `typ` (None: no typ member at all)."""
    key = {"RS": keys.rsa, "ES": keys.ec, "HS": keys.secret}[alg[:2]]
    kid = kid if kid is not None else {"RS": "r1", "ES": "e1", "HS": None}[alg[:2]]
    headers = {"typ": typ}
    if kid:
        headers["kid"] = kid
    tok = jwt.encode(claims(**claim_kw), key, algorithm=alg, headers=headers)
    if typ is None:
        # PyJWT always writes a typ; rebuild the header without it (HS256 only, re-signed)
        assert alg == "HS256"
        import base64, hashlib, hmac, json as _json
        head = base64.urlsafe_b64encode(_json.dumps({"alg": "HS256"}).encode()).rstrip(b"=")
        body = tok.split(".")[1].encode()
        sig = hmac.new(keys.secret.encode(), head + b"." + body, hashlib.sha256).digest()
        tok = (head + b"." + body + b"." +
               base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()
    MINTED.append(tok)
    return tok


@pytest.mark.parametrize("alg,typ", [
    ("RS256", "at+jwt"), ("ES256", "at+jwt"), ("HS256", "at+jwt"),
    ("RS256", "application/at+jwt"), ("HS256", "AT+JWT"), ("HS256", "JWT"),
    ("HS256", None),
])
def test_access_token_typ_accepted(bridge_factory, keys, alg, typ):
    b = start(bridge_factory, keys)
    tok = mint_typ(keys, alg, typ, sub="at-" + alg)
    head = jwt.get_unverified_header(tok)
    assert head.get("typ") == typ, head
    for source in ("header", "subprotocol"):
        c = connect(b, tok, source)
        assert c.welcome["sub"] == "at-" + alg, c.welcome
        c.close()


def test_other_typ_refused_with_reason(bridge_factory, keys):
    b = start(bridge_factory, keys)
    for typ in ("JOSE", "dpop+jwt", "application/jose", "at+jwt2"):
        err = refused(b, mint_typ(keys, "RS256", typ))
        body = assert_401(err, ("token_typ",))
        assert body["error"] == "token_typ", body
    # the refresh op applies the same rule
    c = connect(b, mint_typ(keys, "HS256", "at+jwt", sub="rf"))
    r = c.request({"op": "auth", "id": 1, "token": mint_typ(keys, "HS256", "JOSE", sub="rf")})
    assert r.get("type") == "error" and r.get("code") == "token_rejected", r
    r = c.request({"op": "auth", "id": 2,
                   "token": mint_typ(keys, "ES256", "application/at+jwt", sub="rf")})
    assert r.get("type") == "authenticated", r
    c.close()


# ---- item 6: a token without kid is tried only against keys without kid ----------------


def test_token_without_kid_never_tries_keyed_keys(bridge_factory, keys):
    """The RSA and EC keys are configured with kids r1/e1; the only kid-less key is the HMAC
    secret. A correctly signed RS256/ES256 token that omits its kid is refused (it could only
    have verified by trying keyed keys); with its kid it is accepted."""
    b = start(bridge_factory, keys)
    for alg in ("RS256", "ES256"):
        tok = mint(keys, alg, kid=False)
        assert "kid" not in jwt.get_unverified_header(tok)
        assert_401(refused(b, tok), ("token_alg",))
        c = connect(b, mint(keys, alg))
        c.close()
    # the kid-less HMAC secret still serves tokens without kid, and tokens with an unknown kid
    c = connect(b, mint(keys, "HS256", kid=False))
    c.close()
    c = connect(b, mint(keys, "HS256", kid="rotated-away"))
    c.close()


# ---- item 8: origins ----------------------------------------------------------------------


def test_request_without_origin_is_admitted_when_origins_are_set(bridge_factory, keys):
    b = start(bridge_factory, keys, allowed_origins=["https://app.test"])
    tok = mint(keys, "RS256")
    c = connect(b, tok)  # no Origin header: a server-side or mobile client
    c.close()
    c = connect(b, tok, headers=[("Origin", "HTTPS://APP.TEST")])
    c.close()
    err = refused(b, tok, headers=[("Origin", "https://evil.test")])
    assert err.status == 403 and err.json()["error"] == "origin_not_allowed", err.body
    # "null" (sandboxed frames, file: pages) is an origin like any other: refused
    err = refused(b, tok, headers=[("Origin", "null")])
    assert err.status == 403, err.body


def test_star_admits_any_origin_with_cookie_source(bridge_factory, keys):
    b = start(bridge_factory, keys, sources=["cookie:wsb_token"], allowed_origins=["*"])
    tok = mint(keys, "HS256")
    for origin in ("https://evil.test", "http://localhost:3000", None):
        hdrs = [("Origin", origin)] if origin else []
        c = connect(b, tok, "cookie", headers=hdrs)
        c.close()


def test_cookie_source_with_listed_origins_refuses_others(bridge_factory, keys):
    b = start(bridge_factory, keys, sources=["cookie:wsb_token"],
              allowed_origins=["https://app.test"])
    tok = mint(keys, "HS256")
    c = connect(b, tok, "cookie", headers=[("Origin", "https://app.test")])
    c.close()
    err = refused(b, tok, "cookie", headers=[("Origin", "https://evil.test")])
    assert err.status == 403, err.body
