"""HTTP Digest for SIP (RFC 3261 §22.4 over RFC 2617 / RFC 7616): answer a 401 or 407 challenge.

MD5 and SHA-256 (and their ``-sess`` forms), ``qop=auth`` with a client nonce and nonce count,
or the RFC 2069 form when the challenge offers no qop. ``auth-int`` is not offered by SIP
registrars in practice (Flexisip, Kamailio, Asterisk) and is not supported: such a challenge
is refused rather than answered wrongly.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
from dataclasses import dataclass

from pylime.sip.errors import SipParseError
from pylime.sip.message import _scan, unquote

__all__ = ["Challenge", "DigestCredentials", "authorization"]

_HASHES = {"MD5": "md5", "SHA-256": "sha256"}


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> Challenge:
        """Parse a Digest challenge.

        Raises:
            SipParseError: not Digest, or no realm or nonce.
        """
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            raise SipParseError(f"unsupported authentication scheme {scheme[:20]!r}")
        params: dict[str, str] = {}
        cuts = [-1] + [i for i, _ in _scan(rest, ",")] + [len(rest)]
        for a, b in itertools.pairwise(cuts):
            name, sep, raw = rest[a + 1 : b].partition("=")
            if sep:
                params[name.strip().lower()] = unquote(raw)
        if "realm" not in params or "nonce" not in params:
            raise SipParseError("a Digest challenge without realm or nonce")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm", "MD5"),
            qop=tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()),
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )


@dataclass(frozen=True)
class DigestCredentials:
    """A SIP account's digest credentials; ``repr`` hides the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"DigestCredentials(username={self.username!r}, password=<hidden>)"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, credentials: DigestCredentials, method: str, uri: str,
                  *, nonce_count: int = 1, cnonce: str | None = None) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``.

    Raises:
        SipParseError: an algorithm or qop we do not implement (``auth-int`` only).
    """
    algorithm = challenge.algorithm.upper()
    sess = algorithm.endswith("-SESS")
    name = _HASHES.get(algorithm.removesuffix("-SESS"))
    if name is None:
        raise SipParseError(f"unsupported digest algorithm {challenge.algorithm[:20]!r}")
    if challenge.qop and "auth" not in challenge.qop:
        raise SipParseError("the challenge offers only qop=auth-int, which is not supported")

    def h(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8")).hexdigest()

    cnonce = cnonce or secrets.token_hex(8)
    ha1 = h(f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if sess:
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    fields = [("username", _quote(credentials.username)), ("realm", _quote(challenge.realm)),
              ("nonce", _quote(challenge.nonce)), ("uri", _quote(uri))]
    if challenge.qop:
        nc = f"{nonce_count:08x}"
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [("response", _quote(response)), ("algorithm", challenge.algorithm),
                   ("cnonce", _quote(cnonce)), ("qop", "auth"), ("nc", nc)]
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
        fields += [("response", _quote(response)), ("algorithm", challenge.algorithm)]
    if challenge.opaque is not None:
        fields.append(("opaque", _quote(challenge.opaque)))
    return "Digest " + ", ".join(f"{k}={v}" for k, v in fields)
