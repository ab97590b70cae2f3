"""Identity binding through ZRTP: SDP identity attributes, the auxiliary secret, SAS verdicts.

Facts from linphone.md §4 and linphone-5.1.65.md §1/§3, checked against liblinphone
src/chat/encryption/lime-x3dh-encryption-engine.cpp (``getEncryptionParameters``,
``parseLimeIks``, ``mutualAuthentication``, ``authenticationVerified``,
``authenticationRejected``); nothing below is copied from it.

- ``a=Ik:<base64 Ik>`` (legacy; the only one 5.1.65 sends) and
  ``a=lime-Iks:<algo>:<base64 Ik>;…;`` (5.4+), session-level, raw EdDSA public identity keys.
- Auxiliary secret = caller part ‖ callee part, by SIP call direction, no hashing. With
  ``lime-Iks`` on both sides each part is ``CurveId byte ‖ Ik`` per entry in attribute order;
  otherwise, with ``Ik`` on both sides, each part is the raw Ik (5.1.65: 32 + 32 bytes).
- bzrtp (src/stateMachine.c, RFC 6189 §4.3) compares ``HMAC(auxsecret, H3)`` truncated to
  8 bytes; :func:`aux_secret_id` and :func:`check_aux_secret` model that comparison so two
  parties can be checked without a ZRTP stack.
- SAS verified + aux secret MATCH → TRUSTED (a different stored key: delete the device and
  trust the new key, :class:`~pylime.linphone.events.IdentityKeyChanged` unless it was
  unsafe); MISMATCH → UNSAFE and :class:`~pylime.linphone.events.ManInTheMiddleDetected`;
  UNSET → nothing. SAS refused → UNTRUSTED (UNSAFE and a man-in-the-middle event with
  ``unsafe_if_sas_refused``), with :class:`~pylime.linphone.events.SecurityLevelDowngraded`
  if it was trusted.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pylime.errors import IdentityKeyMismatchError
from pylime.linphone.address import normalize_device_id
from pylime.linphone.errors import InvalidSdpAttributeError
from pylime.linphone.events import (
    IdentityKeyChanged,
    ManInTheMiddleDetected,
    PeerStatusChanged,
    SecurityEvent,
    SecurityEvents,
    SecurityLevelDowngraded,
)
from pylime.types import Curve, PeerStatus

__all__ = [
    "ALGORITHMS",
    "AuxSecretStatus",
    "IdentityKey",
    "PeerTrustManager",
    "SdpIdentity",
    "apply_sas_verdict",
    "aux_secret",
    "aux_secret_id",
    "check_aux_secret",
    "encode_ik",
    "encode_lime_iks",
    "parse_ik",
    "parse_lime_iks",
    "parse_sdp_identity",
    "peer_identity_keys",
    "sdp_identity_lines",
]

ALGORITHMS: dict[str, int] = {
    "c25519": 1,
    "c448": 2,
    "c25519k512": 3,
    "c25519mlk512": 4,
    "c448mlk1024": 5,
}
"""lime base-algorithm names and their CurveId bytes (lime ``CurveId2String``)."""

_NAMES = {v: k for k, v in ALGORITHMS.items()}
_IK_SIZES = {1: 32, 2: 57, 3: 32, 4: 32, 5: 57}


@dataclass(frozen=True)
class IdentityKey:
    """A lime identity key (raw EdDSA public key) with its base algorithm (CurveId 1..5)."""

    algo: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.algo not in _IK_SIZES:
            raise InvalidSdpAttributeError(f"unknown lime algorithm id {self.algo}")
        if len(self.key) != _IK_SIZES[self.algo]:
            raise InvalidSdpAttributeError(
                f"an identity key for {_NAMES[self.algo]} has {_IK_SIZES[self.algo]} bytes, "
                f"not {len(self.key)}"
            )

    @property
    def algo_name(self) -> str:
        """The algorithm's name in SDP (``c25519``, ``c448``, …)."""
        return _NAMES[self.algo]

    @classmethod
    def of(cls, curve: Curve, key: bytes) -> IdentityKey:
        """An identity key of a lime 5.1.64 user (curve25519 or curve448)."""
        return cls(int(curve), bytes(key))


def encode_ik(key: bytes) -> str:
    """The value of a legacy ``a=Ik`` attribute: padded base64 of the raw key."""
    return base64.b64encode(key).decode("ascii")


def _decode_key(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSdpAttributeError(f"the {what} value is not base64") from exc


def parse_ik(value: str) -> bytes:
    """Decode an ``a=Ik`` value.

    Raises:
        InvalidSdpAttributeError: not base64, or not 32 or 57 bytes long.
    """
    key = _decode_key(value, "a=Ik")
    if len(key) not in (32, 57):
        raise InvalidSdpAttributeError(f"an a=Ik key has 32 or 57 bytes, not {len(key)}")
    return key


def encode_lime_iks(keys: Sequence[IdentityKey]) -> str:
    """The value of ``a=lime-Iks``: ``algo:b64;`` per key, ascending CurveId, trailing ``;``."""
    if not keys:
        raise InvalidSdpAttributeError("a=lime-Iks needs at least one key")
    ordered = sorted(keys, key=lambda k: k.algo)
    if len({k.algo for k in ordered}) != len(ordered):
        raise InvalidSdpAttributeError("a=lime-Iks carries one key per algorithm")
    return "".join(f"{k.algo_name}:{encode_ik(k.key)};" for k in ordered)


def parse_lime_iks(value: str) -> list[IdentityKey]:
    """Decode an ``a=lime-Iks`` value, keeping attribute order; unknown algorithms are skipped, as Linphone does.

    Raises:
        InvalidSdpAttributeError: an entry without ``:``, a key that is not base64 or has the
            wrong size, or no usable entry at all.
    """
    keys: list[IdentityKey] = []
    for entry in value.strip().split(";"):
        if not entry.strip():
            continue
        name, sep, b64 = entry.partition(":")
        if not sep:
            raise InvalidSdpAttributeError("an a=lime-Iks entry is not algo:key")
        algo = ALGORITHMS.get(name.strip())
        if algo is None:
            continue
        keys.append(IdentityKey(algo, _decode_key(b64, "a=lime-Iks")))
    if not keys:
        raise InvalidSdpAttributeError("a=lime-Iks has no entry of a known algorithm")
    return keys


def sdp_identity_lines(
    keys: Sequence[IdentityKey],
    *,
    legacy_algo: int = Curve.C25519,
    lime_iks: bool = True,
) -> list[str]:
    """The session-level SDP lines advertising our identity keys.

    ``a=Ik`` carries the key whose algorithm is ``legacy_algo`` (Linphone's ``[lime] curve``);
    ``a=lime-Iks`` all of them. Linphone 5.1.65 only reads ``a=Ik``; pass ``lime_iks=False`` to
    look exactly like it.
    """
    lines = [f"a=Ik:{encode_ik(k.key)}" for k in keys if k.algo == int(legacy_algo)][:1]
    if lime_iks:
        lines.append(f"a=lime-Iks:{encode_lime_iks(keys)}")
    return lines


@dataclass(frozen=True)
class SdpIdentity:
    """The identity attributes of one SDP: ``a=lime-Iks`` entries and the legacy ``a=Ik``."""

    lime_iks: tuple[IdentityKey, ...] | None = None
    ik: bytes | None = field(default=None, repr=False)

    @property
    def is_lime_aware(self) -> bool:
        """Whether this SDP advertises any identity key."""
        return bool(self.lime_iks) or bool(self.ik)

    @classmethod
    def from_keys(cls, keys: Sequence[IdentityKey], *, legacy_algo: int = Curve.C25519,
                  lime_iks: bool = True) -> SdpIdentity:
        """What an SDP built with :func:`sdp_identity_lines` from ``keys`` would parse to."""
        legacy = next((k.key for k in keys if k.algo == int(legacy_algo)), None)
        return cls(tuple(sorted(keys, key=lambda k: k.algo)) if lime_iks else None, legacy)


def parse_sdp_identity(sdp: str) -> SdpIdentity:
    """Read ``a=lime-Iks`` and ``a=Ik`` from the session level of an SDP (before the first ``m=``).

    Raises:
        InvalidSdpAttributeError: an attribute is present but does not parse.
    """
    lime_iks: tuple[IdentityKey, ...] | None = None
    ik: bytes | None = None
    for raw in sdp.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if line.startswith("m="):
            break
        if line.startswith("a=lime-Iks:") and lime_iks is None:
            lime_iks = tuple(parse_lime_iks(line[len("a=lime-Iks:") :]))
        elif line.startswith("a=Ik:") and ik is None:
            ik = parse_ik(line[len("a=Ik:") :])
    return SdpIdentity(lime_iks, ik)


def _lime_iks_part(keys: Sequence[IdentityKey]) -> bytes:
    return b"".join(bytes((k.algo,)) + k.key for k in keys)


def aux_secret(local: SdpIdentity, remote: SdpIdentity, *, outgoing: bool) -> bytes | None:
    """The ZRTP auxiliary secret exactly as liblinphone sets it, or None when it sets none.

    Args:
        local: the identity attributes of our SDP.
        remote: those of the peer's SDP.
        outgoing: True if we placed the call (we are the SIP caller), whatever the ZRTP roles.
    """
    if local.lime_iks and remote.lime_iks:
        mine, theirs = _lime_iks_part(local.lime_iks), _lime_iks_part(remote.lime_iks)
    elif local.ik and remote.ik:
        mine, theirs = local.ik, remote.ik
    else:
        return None
    return mine + theirs if outgoing else theirs + mine


class AuxSecretStatus(enum.IntEnum):
    """bzrtp's auxiliary-secret flag after the DH exchange."""

    MATCH = 0
    MISMATCH = 1
    UNSET = 2


def aux_secret_id(secret: bytes, h3: bytes, hash_name: str = "sha256") -> bytes:
    """The 8-byte ``auxsecretID`` a ZRTP party sends: HMAC(auxsecret, its H3), truncated."""
    return hmac.new(secret, h3, getattr(hashlib, hash_name)).digest()[:8]


def check_aux_secret(
    local_secret: bytes | None,
    peer_h3: bytes,
    peer_id: bytes,
    hash_name: str = "sha256",
) -> AuxSecretStatus:
    """What bzrtp concludes from the peer's ``auxsecretID`` (computed with the peer's H3)."""
    if not local_secret:
        return AuxSecretStatus.UNSET
    expected = aux_secret_id(local_secret, peer_h3, hash_name)
    return AuxSecretStatus.MATCH if hmac.compare_digest(expected, peer_id) else AuxSecretStatus.MISMATCH


def peer_identity_keys(remote: SdpIdentity, legacy_algo: int = Curve.C25519) -> list[IdentityKey]:
    """The peer keys a verified SAS vouches for: its ``lime-Iks``, else its ``Ik`` as ``legacy_algo``."""
    if remote.lime_iks:
        return list(remote.lime_iks)
    if remote.ik:
        return [IdentityKey(int(legacy_algo), remote.ik)]
    return []


class PeerTrustManager(Protocol):
    """What applying a SAS verdict needs from a Manager or ReferenceManager."""

    def peer_status(self, peer_device_id: str) -> PeerStatus:
        """The stored status; UNKNOWN if never met."""
        ...

    def set_peer_status(
        self, peer_device_id: str, status: PeerStatus, identity_key: bytes | None = None
    ) -> None:
        """Record a status (TRUSTED needs the key)."""
        ...

    def delete_peer(self, peer_device_id: str) -> None:
        """Forget the device and its sessions."""
        ...


def apply_sas_verdict(
    manager: PeerTrustManager,
    peer_contact: str,
    *,
    verified: bool,
    aux_status: AuxSecretStatus,
    peer_keys: Sequence[IdentityKey] | SdpIdentity,
    curve: Curve = Curve.C25519,
    events: SecurityEvents | None = None,
    unsafe_if_sas_refused: bool = False,
) -> PeerStatus:
    """Apply the user's SAS verdict to lime's status of the peer device, as Linphone does.

    Args:
        manager: the local lime manager.
        peer_contact: the remote Contact; normalised to the device id first (unlike 5.1.65,
            which stores the raw Contact and so misses non-Flexisip GRUUs).
        verified: True if the user confirmed the SAS, False if they refused it.
        aux_status: bzrtp's auxiliary-secret flag for this call.
        peer_keys: the peer's identity keys from its SDP (or its parsed SDP identity).
        curve: our lime user's curve; lime 5.1.64 stores one key per device, of that curve.
        events: where to report security events (none reported when None).
        unsafe_if_sas_refused: Linphone's ``[lime] unsafe_if_sas_refused``.

    Returns:
        The peer device's status afterwards.

    On a mismatch Linphone also clears the ZRTP cache's "SAS verified" flag
    (``ms_zrtp_sas_reset_verified``); a ZRTP stack driving this should do the same.
    """
    peer = normalize_device_id(peer_contact)
    keys = peer_identity_keys(peer_keys, curve) if isinstance(peer_keys, SdpIdentity) else list(peer_keys)
    before = manager.peer_status(peer)

    def emit(event: SecurityEvent) -> None:
        if events is not None:
            events.emit(event)

    if not verified:
        if before is PeerStatus.TRUSTED:
            emit(SecurityLevelDowngraded(peer))
        status = PeerStatus.UNSAFE if unsafe_if_sas_refused else PeerStatus.UNTRUSTED
        if unsafe_if_sas_refused:
            emit(ManInTheMiddleDetected(peer, "SAS refused"))
        manager.set_peer_status(peer, status)
    elif aux_status is AuxSecretStatus.UNSET:
        return before
    elif aux_status is AuxSecretStatus.MISMATCH:
        manager.set_peer_status(peer, PeerStatus.UNSAFE)
        emit(ManInTheMiddleDetected(peer, "ZRTP auxiliary secrets differ"))
    else:
        mine = [k for k in keys if k.algo == int(curve)]
        try:
            for key in mine:
                manager.set_peer_status(peer, PeerStatus.TRUSTED, key.key)
        except IdentityKeyMismatchError:
            if before in (PeerStatus.UNTRUSTED, PeerStatus.TRUSTED):
                emit(IdentityKeyChanged(peer, before))
            manager.delete_peer(peer)
            for key in mine:
                manager.set_peer_status(peer, PeerStatus.TRUSTED, key.key)
    after = manager.peer_status(peer)
    if after is not before:
        emit(PeerStatusChanged(peer, before, after))
    return after
