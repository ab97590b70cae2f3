"""HTTP Digest authentication (RFC 7616, qop=auth, MD5 and SHA-256) and device ownership.

As the production lime-server does, the realm is the SIP domain and the accounts are the SIP
accounts: a device ``sip:alice@example.org;gr=...`` may only be registered, updated or deleted
by the account ``alice`` of realm ``example.org``. The account store keeps HA1 values only.

A nonce is an issue time, a random part and an HMAC of both under the nonce key; a
:class:`~pylime.keyserver.state.NonceBook` remembers, for each nonce in use, its account and
the highest nonce count (nc), and a request is accepted only with a higher one, so a captured
request cannot be replayed; nonces expire after ``nonce_lifetime`` seconds. Processes that
share the key and the book (the database's, see :mod:`pylime.keyserver.state`) accept each
other's nonces, so a client may land on any of them without an extra challenge. A nonce
another process issued under another key is answered ``401`` with ``stale=true`` when the
credentials are right, and the client simply answers the fresh challenge (httpx and
belle-sip do). Each account may hold a bounded number of live nonces, so one account
creating nonces fast can only make its own new nonces stale.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pylime.deviceid import device_owner  # re-exported: the owner rule of the key server
from pylime.keyserver.state import MemoryNonceBook, NonceBook
from pylime.keyserver.storage import Account, NonceUse, Storage

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "DigestAuthenticator",
    "device_owner",
    "digest_response",
    "ha1",
    "make_account",
]

ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}


def _h(algorithm: str, data: str) -> str:
    return ALGORITHMS[algorithm](data.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) in hex, as RFC 7616 defines it."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings, whatever characters an attacker put in them."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def digest_response(
    algorithm: str, ha1_hex: str, nonce: str, nc: str, cnonce: str, method: str, uri: str
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 for qop=auth."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


def make_account(username: str, realm: str, password: str) -> Account:
    """An account holding the HA1 of every supported algorithm; the password is not kept."""
    if not username or ":" in username or not realm or ":" in realm:
        raise ValueError("username and realm must be non-empty and contain no ':'")
    return Account(
        username,
        realm,
        ha1("MD5", username, realm, password),
        ha1("SHA-256", username, realm, password),
    )


@dataclass(frozen=True)
class AuthResult:
    """The outcome of checking an Authorization header.

    ``account`` is set on success. ``stale`` means the credentials were right but the nonce
    had expired: the client should simply retry with the fresh challenge. ``reason`` is for
    logs and never holds a secret.
    """

    account: Account | None
    stale: bool = False
    reason: str = ""


# One auth-param of RFC 7616: name=token or name="quoted string" (with backslash escapes).
_PARAM = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)'
)


def _parse_authorization(header: str) -> dict[str, str] | None:
    """The parameters of a Digest Authorization header (names lower-cased), or None."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields: dict[str, str] = {}
    pos = 0
    params = params.strip()
    while pos < len(params):
        m = _PARAM.match(params, pos)
        if m is None or m.end() == pos:
            return None
        name, quoted, token = m.group(1).lower(), m.group(2), m.group(3)
        if name in fields:
            return None  # each directive at most once (RFC 7616 §3.4)
        if quoted is None:
            fields[name] = token
        else:
            fields[name] = re.sub(r"\\(.)", r"\1", quoted) if "\\" in quoted else quoted
        pos = m.end()
    return fields


class DigestAuthenticator:
    """Issues Digest challenges and checks Authorization headers against the account store.

    Args:
        storage: where the accounts are kept.
        realm: the SIP domain; only accounts of this realm can authenticate.
        algorithms: the challenge's algorithms, in order of preference (one header each).
        nonce_lifetime: seconds a nonce stays valid.
        account_cache_ttl: seconds an account read from the store is reused; a removed
            account or changed password takes effect in running servers after at most this.
        max_nonces: with the default in-memory book, the most nonces remembered at once
            (memory stays bounded); beyond it new nonces are refused (as stale) until old
            ones expire.
        max_nonces_per_account: with the default in-memory book, the most live nonces one
            account may hold; beyond it that account's new nonces are refused as stale.
        secret: the key nonces are signed with (see state.nonce_secret); random for this
            process alone by default.
        nonce_book: where nonce uses are recorded; by default in this process's memory.
    """

    def __init__(
        self,
        storage: Storage,
        realm: str,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_lifetime: float = 300.0,
        account_cache_ttl: float = 5.0,
        max_nonces: int = 1_000_000,
        max_nonces_per_account: int | None = None,
        secret: bytes | None = None,
        nonce_book: NonceBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = [a for a in algorithms if a.upper() not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"supported digest algorithms are {sorted(ALGORITHMS)}")
        if not realm or '"' in realm or "\\" in realm:
            raise ValueError("realm must be a domain name")
        self.storage = storage
        self.realm = realm
        self.algorithms = tuple(a.upper() for a in algorithms)
        self.nonce_lifetime = nonce_lifetime
        self._clock = clock
        if secret is not None and len(secret) < 16:
            raise ValueError("the nonce secret must hold at least 16 bytes")
        self._secret = secrets.token_bytes(32) if secret is None else bytes(secret)
        # Clients echo it back unchanged; derived from the key so processes sharing it agree.
        self._opaque = hmac.new(self._secret, b"opaque", hashlib.sha256).hexdigest()[:32]
        if nonce_book is None:
            per_account = max_nonces_per_account or min(max_nonces, 1000)
            nonce_book = MemoryNonceBook(per_account, max_total=max_nonces)
        self.nonce_book = nonce_book
        self._account_ttl = account_cache_ttl
        self._accounts: dict[str, tuple[float, Account]] = {}
        self._accounts_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DigestAuthenticator(realm={self.realm!r}, algorithms={self.algorithms!r})"

    # ----------------------------------------------------------------- nonces

    def _sign(self, stamp: str, rand: str) -> str:
        msg = f"{stamp}.{rand}.{self.realm}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        """A fresh nonce: issue time, random part, and their HMAC."""
        stamp = f"{int(self._clock()):x}"
        rand = secrets.token_hex(12)
        return f"{stamp}.{rand}.{self._sign(stamp, rand)}"

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since the nonce was issued; None if we did not issue it."""
        parts = nonce.split(".")
        if len(parts) != 3:
            return None
        stamp, rand, mac = parts
        if not _same(mac, self._sign(stamp, rand)):
            return None
        try:
            return self._clock() - int(stamp, 16)
        except ValueError:
            return None

    # ----------------------------------------------------------------- challenge

    def challenge(self, stale: bool = False) -> list[str]:
        """WWW-Authenticate header values: one per algorithm, preferred first, one shared nonce."""
        nonce = self.new_nonce()
        return [
            f'Digest realm="{self.realm}", qop="auth", algorithm={algorithm}, '
            f'nonce="{nonce}", opaque="{self._opaque}"' + (", stale=true" if stale else "")
            for algorithm in self.algorithms
        ]

    # ----------------------------------------------------------------- verification

    def authenticate(self, method: str, uri: str, authorization: str | None) -> AuthResult:
        """Check an Authorization header for a request with this method and request target."""
        if not authorization:
            return AuthResult(None, reason="no credentials")
        f = _parse_authorization(authorization)
        if f is None:
            return AuthResult(None, reason="not a Digest Authorization header")
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(k not in f for k in required):
            return AuthResult(None, reason="incomplete Digest credentials")
        algorithm = f.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return AuthResult(None, reason=f"algorithm {algorithm[:20]!r} not offered")
        if f["realm"] != self.realm:
            return AuthResult(None, reason="wrong realm")
        if f["qop"] != "auth":
            return AuthResult(None, reason="qop must be auth")
        if f["uri"] != uri:
            return AuthResult(None, reason="uri does not match the request")
        try:
            nc = int(f["nc"], 16)
        except ValueError:
            return AuthResult(None, reason="bad nonce count")
        if len(f["nc"]) != 8 or nc < 1:
            return AuthResult(None, reason="bad nonce count")
        account = self._account(f["username"])
        if account is None:
            return AuthResult(None, reason="unknown account")
        stored_ha1 = account.ha1(algorithm)
        if stored_ha1 is None:
            return AuthResult(None, reason="no HA1 for this algorithm")
        nonce = f["nonce"]
        expected = digest_response(
            algorithm, stored_ha1, nonce, f["nc"], f["cnonce"], method, f["uri"]
        )
        if not _same(expected, f["response"].lower()):
            return AuthResult(None, reason="wrong password")
        # The password is right; from here on a refusal only asks for a fresh nonce.
        age = self._nonce_age(nonce)
        if age is None or not _same(f.get("opaque", self._opaque), self._opaque):
            return AuthResult(None, stale=True, reason="nonce not issued under this key")
        if age > self.nonce_lifetime or age < -60:
            return AuthResult(None, stale=True, reason="nonce expired")
        now = self._clock()
        expires = now - age + self.nonce_lifetime
        use = self.nonce_book.use(nonce, f"{account.username}:{account.realm}", nc, expires, now)
        if use is NonceUse.REPLAYED:
            return AuthResult(None, reason="replayed nonce count")
        if use is NonceUse.FULL:
            return AuthResult(None, stale=True, reason="too many nonces in use by this account")
        return AuthResult(account)

    def _account(self, username: str) -> Account | None:
        """The account, from a short-lived cache: most requests come from known devices."""
        now = self._clock()
        with self._accounts_lock:
            hit = self._accounts.get(username)
        if hit is not None and hit[0] > now:
            return hit[1]
        account = self.storage.get_account(username, self.realm)
        if account is not None and self._account_ttl > 0:
            with self._accounts_lock:
                if len(self._accounts) > 10_000:  # bound memory: drop everything, refill
                    self._accounts.clear()
                self._accounts[username] = (now + self._account_ttl, account)
        return account

    @staticmethod
    def owns(account: Account, device_id: str) -> bool:
        """Whether the account may act on this device: same user and the realm as its domain."""
        owner = device_owner(device_id)
        return owner is not None and owner == (account.username, account.realm.lower())
