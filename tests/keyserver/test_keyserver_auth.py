"""HTTP Digest authentication (RFC 7616) and device ownership, without a network."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylime.keyserver import KeyServer
from pylime.keyserver.auth import (
    DigestAuthenticator,
    device_owner,
    digest_response,
    ha1,
    make_account,
)

REALM = "example.org"
URI = "/lime-server/lime-server.php"


def test_rfc7616_example_md5_and_sha256() -> None:
    """The response values of RFC 7616 §3.9.1 are reproduced for MD5 and SHA-256."""
    args = {
        "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "nc": "00000001",
        "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        "method": "GET",
        "uri": "/dir/index.html",
    }
    md5 = ha1("MD5", "Mufasa", "http-auth@example.org", "Circle of Life")
    sha = ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life")
    assert digest_response("MD5", md5, **args) == "8ca523f5e9506fed4657c9700eebdbec"
    assert (
        digest_response("SHA-256", sha, **args)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


@pytest.mark.parametrize(
    ("device_id", "owner"),
    [
        ("sip:alice@example.org;gr=urn:uuid:1", ("alice", "example.org")),
        ("sips:alice@Example.ORG;gr=x", ("alice", "example.org")),
        ("sip:al%69ce@example.org;gr=x", ("alice", "example.org")),
        ("sips:alice@example.org:5061;gr=x", None),  # a port: not canonical
        ("<sip:alice@example.org;gr=x>", None),  # brackets: not canonical
        ("sip:alice:x@bob@example.org", None),  # nobody's, not bob's
        ("sip:alice@example.org", ("alice", "example.org")),
        ("sip:example.org;gr=x", None),
        ("tel:+331234", None),
        ("alice@example.org", None),
        ("", None),
    ],
)
def test_device_owner(device_id: str, owner: tuple[str, str] | None) -> None:
    """A canonical device id's owner is its user and lower-cased domain; other shapes have none."""
    assert device_owner(device_id) == owner


def test_make_account_keeps_no_password() -> None:
    """An account holds HA1 values only, and its repr shows neither."""
    a = make_account("alice", REALM, "s3cret")
    assert a.ha1_md5 == ha1("MD5", "alice", REALM, "s3cret")
    assert "s3cret" not in repr(a) and a.ha1_md5 not in repr(a)
    with pytest.raises(ValueError):
        make_account("al:ice", REALM, "x")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> Iterator[DigestAuthenticator]:
    """An authenticator with alice's and bob's accounts, on an in-memory store."""
    with KeyServer() as server:
        server.storage.put_account(make_account("alice", REALM, "alice-pw"))
        server.storage.put_account(make_account("bob", REALM, "bob-pw"))
        yield DigestAuthenticator(server.storage, REALM, nonce_lifetime=60, clock=clock)


def _fields(challenge: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="?([^",]+)"?', challenge.partition(" ")[2]))


def answer(
    challenge: str,
    user: str = "alice",
    password: str = "alice-pw",
    count: int = 1,
    uri: str = URI,
    method: str = "POST",
    **override: str,
) -> str:
    """An Authorization header answering ``challenge``, as a client computes it."""
    c = _fields(challenge)
    algorithm = c["algorithm"]
    f = {
        "username": user,
        "realm": c["realm"],
        "nonce": c["nonce"],
        "uri": uri,
        "qop": "auth",
        "nc": f"{count:08x}",
        "cnonce": "0a4f113b",
        "opaque": c["opaque"],
        "algorithm": algorithm,
    }
    f.update(override)
    f["response"] = override.get("response") or digest_response(
        algorithm,
        ha1(algorithm, user, c["realm"], password),
        f["nonce"],
        f["nc"],
        f["cnonce"],
        method,
        f["uri"],
    )
    quoted = ", ".join(
        f"{k}={v}" if k in ("qop", "nc", "algorithm") else f'{k}="{v}"' for k, v in f.items()
    )
    return "Digest " + quoted


def test_challenge_offers_sha256_then_md5(auth: DigestAuthenticator) -> None:
    """The challenge has one header per algorithm, SHA-256 first, realm = SIP domain, qop=auth."""
    sha, md5 = auth.challenge()
    assert sha.startswith('Digest realm="example.org", qop="auth", algorithm=SHA-256, nonce="')
    assert "algorithm=MD5" in md5 and _fields(sha)["nonce"] == _fields(md5)["nonce"]
    assert "stale" not in sha and "stale=true" in auth.challenge(stale=True)[0]


@pytest.mark.parametrize("which", [0, 1], ids=["sha256", "md5"])
def test_right_password_authenticates(auth: DigestAuthenticator, which: int) -> None:
    """A correct answer with either algorithm authenticates the account."""
    result = auth.authenticate("POST", URI, answer(auth.challenge()[which]))
    assert result.account is not None and result.account.username == "alice"


def test_wrong_password_is_refused(auth: DigestAuthenticator) -> None:
    """A wrong password is refused, and the reason names no secret."""
    result = auth.authenticate("POST", URI, answer(auth.challenge()[0], password="nope"))
    assert result.account is None and not result.stale and "nope" not in result.reason


def test_unknown_account_is_refused(auth: DigestAuthenticator) -> None:
    """A user without an account is refused."""
    assert auth.authenticate("POST", URI, answer(auth.challenge()[0], user="eve")).account is None


def test_replayed_nonce_count_is_refused(auth: DigestAuthenticator) -> None:
    """The same Authorization header works once; nc must grow for each reuse of a nonce."""
    c = auth.challenge()[1]
    assert auth.authenticate("POST", URI, answer(c, count=1)).account is not None
    assert auth.authenticate("POST", URI, answer(c, count=1)).account is None
    assert auth.authenticate("POST", URI, answer(c, count=2)).account is not None
    assert auth.authenticate("POST", URI, answer(c, count=2)).account is None


def test_expired_nonce_is_stale(auth: DigestAuthenticator, clock: Clock) -> None:
    """A right answer on an expired nonce is refused as stale, so the client just retries."""
    c = auth.challenge()[0]
    clock.now += 61
    result = auth.authenticate("POST", URI, answer(c))
    assert result.account is None and result.stale


def test_forged_nonce_is_refused(auth: DigestAuthenticator) -> None:
    """A nonce the server did not issue is refused, even with a correct response for it."""
    c = auth.challenge()[0].replace('nonce="', 'nonce="0')
    assert auth.authenticate("POST", URI, answer(c)).account is None
    c = auth.challenge()[0].replace('nonce="', 'nonce="caf\u00e9')  # not even ASCII
    assert auth.authenticate("POST", URI, answer(c)).account is None


@pytest.mark.parametrize(
    "override",
    [
        {"realm": "other.org"},
        {"qop": "auth-int"},
        {"algorithm": "SHA-512"},
        {"opaque": "0" * 32},
        {"nc": "1"},
        {"response": "0" * 64},
    ],
)
def test_inconsistent_answers_are_refused(
    auth: DigestAuthenticator, override: dict[str, str]
) -> None:
    """Wrong realm, qop, algorithm, opaque, nc format or response: refused."""
    assert auth.authenticate("POST", URI, answer(auth.challenge()[0], **override)).account is None


def test_uri_and_method_are_bound(auth: DigestAuthenticator) -> None:
    """An answer computed for another URI or method does not authenticate this request."""
    c = auth.challenge()[0]
    assert auth.authenticate("POST", "/other", answer(c)).account is None
    assert auth.authenticate("POST", URI, answer(c, method="GET")).account is None


@pytest.mark.parametrize("header", [None, "", "Basic YWxpY2U6eA==", "Digest", 'Digest ,,,="'])
def test_missing_or_garbage_credentials(auth: DigestAuthenticator, header: str | None) -> None:
    """No header, another scheme or garbage: refused without an exception."""
    assert auth.authenticate("POST", URI, header).account is None


def test_another_process_nonce_is_stale(clock: Clock) -> None:
    """A nonce issued by another server process is refused as stale (the client just re-answers),
    and a request replayed to that other process is refused too."""
    with KeyServer() as server:
        server.storage.put_account(make_account("alice", REALM, "alice-pw"))
        one = DigestAuthenticator(server.storage, REALM, clock=clock)
        two = DigestAuthenticator(server.storage, REALM, clock=clock)
        h = answer(one.challenge()[0])
        assert one.authenticate("POST", URI, h).account is not None
        elsewhere = two.authenticate("POST", URI, h)
        assert elsewhere.account is None and elsewhere.stale
        wrong = two.authenticate("POST", URI, answer(one.challenge()[0], password="x"))
        assert wrong.account is None and not wrong.stale  # no hint for a wrong password


def test_nonce_memory_is_bounded(clock: Clock) -> None:
    """Beyond max_nonces remembered nonces, new ones are refused as stale until old ones expire."""
    with KeyServer() as server:
        server.storage.put_account(make_account("alice", REALM, "alice-pw"))
        auth = DigestAuthenticator(
            server.storage, REALM, max_nonces=2, nonce_lifetime=60, clock=clock
        )
        for _ in range(2):
            assert auth.authenticate("POST", URI, answer(auth.challenge()[0])).account is not None
        full = auth.authenticate("POST", URI, answer(auth.challenge()[0]))
        assert full.account is None and full.stale
        clock.now += 200  # the remembered nonces expire and are purged
        assert auth.authenticate("POST", URI, answer(auth.challenge()[0])).account is not None


def test_ownership_binds_user_and_domain(auth: DigestAuthenticator) -> None:
    """An account owns exactly the devices of its user at its realm."""
    alice = make_account("alice", REALM, "x")
    assert DigestAuthenticator.owns(alice, "sip:alice@example.org;gr=urn:uuid:1")
    assert DigestAuthenticator.owns(alice, "sip:alice@EXAMPLE.org;gr=urn:uuid:2")
    assert not DigestAuthenticator.owns(alice, "sip:bob@example.org;gr=urn:uuid:1")
    assert not DigestAuthenticator.owns(alice, "sip:alice@evil.org;gr=urn:uuid:1")
    assert not DigestAuthenticator.owns(alice, "alice")


def test_removed_account_is_refused_after_the_cache_ttl(
    auth: DigestAuthenticator, clock: Clock
) -> None:
    """A removed account still works within account_cache_ttl (5 s), and not after it."""
    assert auth.authenticate("POST", URI, answer(auth.challenge()[0])).account is not None
    auth.storage.remove_account("alice", REALM)
    assert auth.authenticate("POST", URI, answer(auth.challenge()[0])).account is not None
    clock.now += 6
    assert auth.authenticate("POST", URI, answer(auth.challenge()[0])).account is None


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.text(max_size=300), st.builds(lambda t: "Digest " + t, st.text(max_size=300))
    )
)
def test_authenticate_never_raises(auth: DigestAuthenticator, header: str) -> None:
    """Any Authorization header is refused or accepted, never an exception."""
    assert auth.authenticate("POST", URI, header).account is None


def test_duplicate_directives_are_refused(auth: DigestAuthenticator) -> None:
    """A header repeating a directive (two responses, say) is not a valid answer."""
    good = answer(auth.challenge()[0])
    assert auth.authenticate("POST", URI, good + ', response="' + "0" * 64 + '"').account is None
