"""Helpers for the auth integration tests (test_60_auth): per-run keys (RSA 2048, EC P-256,
an HMAC secret) written as PEM files, tokens minted with PyJWT at test time (plus the
hand-made forgeries PyJWT refuses to produce: alg none, HS256 keyed with an RSA public
key's PEM), an auth config for the bridge, and a registry of every token minted so that
the tests can check none ever reaches the bridge's log.
"""

import base64
import hashlib
import hmac
import json
import os
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import DELETE

ISSUER = "https://auth.test/"
AUDIENCE = "wsbridge"

# Every token string minted by this module (the log checks grep for each).
MINTED = []


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")))


class Keys:
    """Key material of one test run: .rsa / .rsa_other (private keys), .ec, .secret,
    and the PEM paths of the public keys (.rsa_pub_path, .ec_pub_path)."""

    def __init__(self, directory):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ec_other = ec.generate_private_key(ec.SECP256R1())
        self.secret = b64url(os.urandom(32))
        self.rsa_pub_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        ec_pub_pem = self.ec.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.rsa_pub_path = os.path.join(str(directory), "r1.pub.pem")
        self.ec_pub_path = os.path.join(str(directory), "e1.pub.pem")
        with open(self.rsa_pub_path, "wb") as f:
            f.write(self.rsa_pub_pem)
        with open(self.ec_pub_path, "wb") as f:
            f.write(ec_pub_pem)

    def env(self):
        return {"JWT_SECRET": self.secret}


def claims(sub="u1", exp_in=300, **extra):
    """A claim set valid now: iss, aud, sub, iat, exp (now + exp_in; None leaves exp out),
    plus `extra` (a value of None removes that claim)."""
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now}
    if exp_in is not None:
        c["exp"] = now + exp_in
    for k, v in extra.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def _keep(tok):
    MINTED.append(tok)
    return tok


def mint(keys, alg="HS256", key=None, kid=None, **claim_kw):
    """A token signed with PyJWT. alg RS256 uses keys.rsa (kid r1 unless `kid` given),
    ES256 keys.ec (kid e1), HS256 the HMAC secret (no kid). `key` overrides the signing
    key; kid=False leaves the kid out."""
    body = claims(**claim_kw)
    if alg.startswith("RS"):
        k, default_kid = (key or keys.rsa), "r1"
    elif alg.startswith("ES"):
        k, default_kid = (key or keys.ec), "e1"
    else:
        k, default_kid = (key if key is not None else keys.secret), None
    kid = default_kid if kid is None else kid
    headers = {"kid": kid} if kid else None
    return _keep(jwt.encode(body, k, algorithm=alg, headers=headers))


def mint_raw(header, body, signing_input_key=None, signature=b""):
    """A hand-made compact JWS: base64url(header).base64url(body).sig where sig is
    HMAC-SHA256 over the signing input with `signing_input_key` (bytes) when given, else
    `signature` verbatim."""
    signing_input = b64json(header) + "." + b64json(body)
    if signing_input_key is not None:
        signature = hmac.new(signing_input_key, signing_input.encode(), hashlib.sha256).digest()
    return _keep(signing_input + "." + b64url(signature))


def tamper(token):
    """The token with one signature byte changed (still well-formed base64url)."""
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return _keep(head + "." + body + "." + b64url(bytes(raw)))


def auth_overrides(keys, sources=None, refusal=None, acl=None, permissions_claim=None,
                   extra_limits=None, allowed_origins=None):
    """bridge_factory overrides: JWT auth with the three keys (the HMAC secret through
    ${JWT_SECRET}: pass keys.env() as the bridge's env), leeway 0, the memory connector for
    every channel."""
    jwt_conf = {
        "algorithms": ["RS256", "ES256", "HS256"],
        "keys": [{"kid": "r1", "file": keys.rsa_pub_path},
                 {"kid": "e1", "file": keys.ec_pub_path},
                 {"secret": "${JWT_SECRET}"}],
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway_s": 0,
    }
    if permissions_claim:
        jwt_conf["permissions_claim"] = permissions_claim
    auth = {"token_sources": sources or ["header", "query", "subprotocol", "cookie:wsb_token"],
            "jwt": jwt_conf}
    if refusal:
        auth["refusal"] = refusal
    out = {
        "auth": auth,
        "acl": acl if acl is not None else [{"subscribe": ["**"], "publish": ["**"]}],
        "channels": [{"match": "**", "connector": "m", "topic": "t-{1}"}],
        "log": {"level": "debug", "format": "json"},
    }
    if allowed_origins is None and any(s.startswith("cookie:") for s in auth["token_sources"]):
        # a cookie source needs its origins said out loud (config error otherwise)
        allowed_origins = ["*"]
    if allowed_origins is not None:
        out["allowed_origins"] = allowed_origins
    if extra_limits:
        out["limits"] = extra_limits
    return out


def token_fragments(tok):
    """The strings whose presence in a log would leak the token: the whole token and its
    signature segment."""
    parts = tok.split(".")
    out = [tok]
    if len(parts) == 3 and len(parts[2]) >= 16:
        out.append(parts[2])
    return out


def assert_no_token_in(text, tokens=None):
    for tok in tokens if tokens is not None else MINTED:
        for frag in token_fragments(tok):
            assert frag not in text, "a token (or its signature) appears in the bridge log"


__all__ = ["Keys", "mint", "mint_raw", "tamper", "claims", "auth_overrides", "MINTED",
           "assert_no_token_in", "DELETE", "b64json", "b64url"]
