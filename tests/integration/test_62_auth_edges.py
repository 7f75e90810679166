"""Auth edge cases of issue 9 (docs/auth.md): RFC 9068 `typ` values, tokens without `kid`,
an empty `access_token=`, and the Origin rules (`["*"]`, requests without Origin, the cookie
source needing allowed_origins). Tokens are minted with PyJWT."""

import pytest

import wsclient
from auth_helpers import Keys, assert_no_token_in, auth_overrides, mint

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
