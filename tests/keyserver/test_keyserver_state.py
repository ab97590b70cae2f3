"""Nonce books, rate limiters and the nonce secret: in memory and in the shared database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ks_pg import fresh_pg_storage, require_pg_url

from pylime.keyserver import KeyServer
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import DigestAuthenticator, digest_response, ha1, make_account
from pylime.keyserver.state import (
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
    SECRET_ENV,
    MemoryNonceBook,
    MemoryRateLimiter,
    NonceBook,
    StoreNonceBook,
    StoreRateLimiter,
    nonce_secret,
)
from pylime.keyserver.storage import NonceUse, SQLiteStorage, Storage

REALM = "example.org"
URI = "/lime"
NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Storage]]:
    """Two storage objects on one database, as two server processes would hold them."""
    if request.param == "postgres":
        from pylime.keyserver.postgres import PostgresStorage

        one: Storage = fresh_pg_storage()
        two: Storage = PostgresStorage(require_pg_url())
    else:
        one = SQLiteStorage(tmp_path / "shared.sqlite3")
        two = SQLiteStorage(tmp_path / "shared.sqlite3")
    for user in ("alice", "bob"):
        one.put_account(make_account(user, REALM, f"{user}-pw"))
    yield one, two
    one.close()
    two.close()


@pytest.fixture(params=["memory", "store"])
def book_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _book(kind: str, storage: Storage, max_per_account: int) -> NonceBook:
    if kind == "memory":
        return MemoryNonceBook(max_per_account)
    return StoreNonceBook(storage, max_per_account)


# ----------------------------------------------------------------- the storage primitives


def test_nonce_use_rules(server: KeyServer) -> None:
    """First use accepted; then only a higher nc by the same account; one nonce, one account."""
    s = server.storage
    use = lambda n, a, nc: s.use_nonce(n, a, nc, NOW + 300, NOW, 10)
    assert use("n1", "alice", 1) is NonceUse.ACCEPTED
    assert use("n1", "alice", 1) is NonceUse.REPLAYED
    assert use("n1", "alice", 3) is NonceUse.ACCEPTED
    assert use("n1", "alice", 2) is NonceUse.REPLAYED  # below the highest seen
    assert use("n1", "bob", 9) is NonceUse.REPLAYED  # alice's nonce
    assert use("n2", "bob", 1) is NonceUse.ACCEPTED


def test_nonces_per_account_are_bounded_and_purged(server: KeyServer) -> None:
    """An account holding its most live nonces gets FULL for new ones; others are unaffected;
    expired nonces neither count nor stay stored."""
    s = server.storage
    for k in range(3):
        assert s.use_nonce(f"a{k}", "alice", 1, NOW + 300, NOW, 3) is NonceUse.ACCEPTED
    assert s.use_nonce("a3", "alice", 1, NOW + 300, NOW, 3) is NonceUse.FULL
    assert s.use_nonce("a0", "alice", 2, NOW + 300, NOW, 3) is NonceUse.ACCEPTED  # in use: fine
    assert s.use_nonce("b0", "bob", 1, NOW + 300, NOW, 3) is NonceUse.ACCEPTED
    later = NOW + 301
    assert s.use_nonce("a4", "alice", 1, later + 300, later, 3) is NonceUse.ACCEPTED
    assert s.purge_nonces(later) == 4  # a0..a2 and b0
    assert s.use_nonce("a4", "alice", 1, later + 300, later, 3) is NonceUse.REPLAYED  # kept


def test_token_bucket(server: KeyServer) -> None:
    """burst tokens at once, then one per 1/rate seconds; the wait says when the next comes."""
    s = server.storage
    assert [s.take_token("alice", 2.0, 3.0, NOW) for _ in range(3)] == [0.0] * 3
    assert s.take_token("alice", 2.0, 3.0, NOW) == pytest.approx(0.5)
    assert s.take_token("bob", 2.0, 3.0, NOW) == 0.0  # a bucket each
    assert s.take_token("alice", 2.0, 3.0, NOW + 0.5) == 0.0
    assert s.take_token("alice", 2.0, 3.0, NOW + 0.5) == pytest.approx(0.5)
    assert s.take_token("alice", 2.0, 3.0, NOW - 100) > 0  # a clock behind refills nothing
    assert s.take_token("alice", 2.0, 3.0, NOW + 100) == 0.0  # refilled, capped at burst
    assert s.purge_buckets(NOW + 50) == 1  # bob's, untouched since NOW
    assert s.take_token("bob", 2.0, 3.0, NOW + 100) == 0.0


def test_shared_secret_is_created_once(two_stores: tuple[Storage, Storage]) -> None:
    """Whichever process asks first creates the secret; every other one reads the same."""
    one, two = two_stores
    first = one.shared_secret("nonce_secret")
    assert len(first) == 32 and two.shared_secret("nonce_secret") == first
    assert one.shared_secret("other") != first


def test_nonce_secret_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_stores: tuple[Storage, Storage]
) -> None:
    """File, then environment, then database; too short a secret is refused; per process else."""
    one, two = two_stores
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert nonce_secret(one) == nonce_secret(two)
    assert nonce_secret(None) != nonce_secret(None)
    monkeypatch.setenv(SECRET_ENV, "x" * 40)
    from_env = nonce_secret(one)
    assert from_env == nonce_secret(two) == nonce_secret(None)  # the environment wins
    monkeypatch.delenv(SECRET_ENV)
    assert from_env != nonce_secret(one)
    f = tmp_path / "secret"
    f.write_text("y" * 40 + "\n")
    f.chmod(0o600)
    assert nonce_secret(one, str(f)) == nonce_secret(None, str(f)) != from_env
    f.write_text("short")
    with pytest.raises(ValueError, match="at least 16"):
        nonce_secret(one, str(f))
    with pytest.raises(ValueError, match="cannot read"):
        nonce_secret(one, str(tmp_path / "missing"))


# ----------------------------------------------------------------- through the authenticator


def _authorization(challenge: str, user: str, nc: int = 1, cnonce: str = "c0ffee") -> str:
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge.partition(" ")[2]))
    algorithm = fields["algorithm"]
    resp = digest_response(
        algorithm,
        ha1(algorithm, user, REALM, f"{user}-pw"),
        fields["nonce"],
        f"{nc:08x}",
        cnonce,
        "POST",
        URI,
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{fields["nonce"]}", uri="{URI}", '
        f'algorithm={algorithm}, qop=auth, nc={nc:08x}, cnonce="{cnonce}", response="{resp}", '
        f'opaque="{fields["opaque"]}"'
    )


def _shared_pair(one: Storage, two: Storage) -> tuple[DigestAuthenticator, DigestAuthenticator]:
    return (
        DigestAuthenticator(one, REALM, secret=nonce_secret(one), nonce_book=StoreNonceBook(one)),
        DigestAuthenticator(two, REALM, secret=nonce_secret(two), nonce_book=StoreNonceBook(two)),
    )


def test_processes_sharing_the_database_accept_each_others_nonces(
    two_stores: tuple[Storage, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A nonce from one process works on the other with the next nc, and a replay of any
    request is refused by both, not as stale (so a client cannot be tricked into it)."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    one, two = _shared_pair(*two_stores)
    challenge = one.challenge()[0]
    first = _authorization(challenge, "alice", nc=1)
    assert one.authenticate("POST", URI, first).account is not None
    second = _authorization(challenge, "alice", nc=2)
    assert two.authenticate("POST", URI, second).account is not None
    for auth in (one, two):
        for replay in (first, second):
            refused = auth.authenticate("POST", URI, replay)
            assert refused.account is None and not refused.stale
            assert refused.reason == "replayed nonce count"


def test_a_process_keeping_nonces_in_memory_makes_others_stale(
    two_stores: tuple[Storage, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without shared state, another process's nonce is stale: the old one-process behaviour."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    one, _ = _shared_pair(*two_stores)
    alone = DigestAuthenticator(two_stores[1], REALM)
    header = _authorization(one.challenge()[0], "alice")
    result = alone.authenticate("POST", URI, header)
    assert result.account is None and result.stale


def test_nonce_flooding_by_one_account_does_not_stale_another(
    book_kind: str, server: KeyServer
) -> None:
    """alice using nonce after nonce only makes her own new nonces stale; bob's keep working,
    old and new, and alice's nonces already in use keep working too."""
    for user in ("alice", "bob"):
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    book = _book(book_kind, server.storage, max_per_account=20)
    auth = DigestAuthenticator(server.storage, REALM, nonce_book=book)
    bob_challenge = auth.challenge()[0]
    assert auth.authenticate("POST", URI, _authorization(bob_challenge, "bob")).account
    alice_first = auth.challenge()[0]
    assert auth.authenticate("POST", URI, _authorization(alice_first, "alice")).account
    outcomes = [
        auth.authenticate("POST", URI, _authorization(auth.challenge()[0], "alice"))
        for _ in range(40)
    ]
    assert sum(r.account is not None for r in outcomes) == 19
    assert all(r.stale for r in outcomes[19:])
    assert auth.authenticate("POST", URI, _authorization(bob_challenge, "bob", nc=2)).account
    assert auth.authenticate("POST", URI, _authorization(auth.challenge()[0], "bob")).account
    assert auth.authenticate("POST", URI, _authorization(alice_first, "alice", nc=2)).account


def test_memory_book_total_bound() -> None:
    """The in-memory book also bounds its total size (memory), and expiry frees room."""
    book = MemoryNonceBook(max_per_account=5, max_total=6)
    uses = [book.use(f"n{k}", f"user{k % 3}", 1, NOW + 10, NOW) for k in range(8)]
    assert uses.count(NonceUse.ACCEPTED) == 6 and uses[6:] == [NonceUse.FULL] * 2
    assert book.use("late", "user0", 1, NOW + 30, NOW + 11) is NonceUse.ACCEPTED
    assert len(book) == 1


# ----------------------------------------------------------------- rate limiters


def test_store_rate_limiter_is_one_limit_for_every_process(
    two_stores: tuple[Storage, Storage],
) -> None:
    """Two processes on one database share each requester's bucket: together they allow
    what one would."""
    now = [NOW]
    one, two = (StoreRateLimiter(s, 1.0, 10.0, clock=lambda: now[0]) for s in two_stores)
    allowed = [(one if k % 2 else two).wait("alice@example.org") == 0.0 for k in range(30)]
    assert sum(allowed) == 10
    now[0] += 2
    assert [one.wait("alice@example.org"), two.wait("alice@example.org")] == [0.0, 0.0]
    assert one.wait("alice@example.org") == pytest.approx(1.0)


def test_memory_rate_limiter_stays_bounded() -> None:
    """Beyond max_buckets requesters, refilled buckets are forgotten first (they lose nothing)."""
    now = [0.0]
    limiter = MemoryRateLimiter(1.0, 2.0, clock=lambda: now[0], max_buckets=4)
    for k in range(4):
        limiter.wait(f"w{k}")
    now[0] = 10.0
    limiter.wait("busy")
    limiter.wait("busy")
    assert limiter.wait("busy") > 0  # its bucket survived the forgetting
    assert len(limiter._buckets) <= 4


def test_rate_limit_is_on_by_default() -> None:
    """A server configured with nothing but its realm limits each account."""
    config = ServerConfig(realm=REALM)
    assert (config.rate_limit, config.rate_burst) == (DEFAULT_RATE_LIMIT, DEFAULT_RATE_BURST)
    assert DEFAULT_RATE_LIMIT > 0 and config.shared_state == "auto"
    with pytest.raises(ValueError):
        ServerConfig(realm=REALM, shared_state="disk")
