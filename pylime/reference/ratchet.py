"""lime's Double Ratchet, session by session (lime-wire.md §3).

A :class:`Session` holds one ``DR_sessions`` row in memory plus what its next save must
write (skipped keys to add, a stored key consumed, an OPk to delete). Encryption and
decryption work on the object; the manager saves it only when lime would, so a failed
decryption never touches the database. Decryption failures raise the precise
:class:`~pylime.errors.DecryptionError` subclass.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from pylime import errors
from pylime.reference import encoding
from pylime.reference.primitives import (
    SIZES,
    InvalidTag,
    XKey,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha512,
    wipe,
    x_generate,
    x_key,
)
from pylime.types import Curve

__all__ = [
    "DR_CHAIN_INFO",
    "MAX_MESSAGES_RECEIVED_AFTER_SKIP",
    "MAX_MESSAGE_SKIP",
    "MAX_SENDING_CHAIN",
    "RANDOM_SEED_INFO",
    "Session",
    "SkippedLookup",
    "kdf_ck",
    "kdf_rk",
]

# lime 5.1.64 src/lime_settings.hpp and src/lime_defines.hpp
MAX_MESSAGE_SKIP = 1024
MAX_MESSAGES_RECEIVED_AFTER_SKIP = 128
MAX_SENDING_CHAIN = 1000
DR_CHAIN_INFO = b"DR Root Chain Key Derivation"
RANDOM_SEED_INFO = b"DR Message Key Derivation"
SEED_SIZE = 32

# (DHid, MK) of a stored skipped key for (DHr, Nr), or None; and "is there a chain for DHr".
SkippedLookup = Callable[[bytes, int], "tuple[int, bytes] | None"]
ChainExists = Callable[[bytes], bool]


def kdf_rk(rk: bytearray, dh_out: bytes | bytearray) -> tuple[bytearray, bytearray]:
    """KDF_RK: HKDF-SHA512(salt=RK, IKM=DH output, info) → (new RK, chain key)."""
    out = hkdf_sha512(rk, dh_out, DR_CHAIN_INFO, 64)
    new_rk, ck = out[:32], out[32:]
    wipe(out)
    return new_rk, ck


def kdf_ck(ck: bytearray) -> tuple[bytearray, bytearray]:
    """KDF_CK: (next chain key, 48-byte message key = AES key ‖ IV)."""
    return bytearray(hmac.digest(ck, b"\x02", "sha512")[:32]), bytearray(
        hmac.digest(ck, b"\x01", "sha512")[:48])


@dataclass(eq=False)
class Session:
    """One Double Ratchet session, mirroring a ``DR_sessions`` row.

    ``dirty`` names what the next save writes, as lime's ``DRSessionDbStatus`` does:
    "new" (insert), "ratchet" (every column), "decrypt" (Nr, CKr), "encrypt" (Ns, CKs,
    Status) or "clean".
    """

    curve: Curve
    uid: int
    did: int
    rk: bytearray = field(repr=False)
    cks: bytearray = field(repr=False)
    ckr: bytearray = field(repr=False)
    dhs_pub: bytes = field(repr=False)
    dhs_priv: bytearray = field(repr=False)
    dhr: bytes = field(repr=False)
    ad: bytes = field(repr=False)
    ns: int = 0
    nr: int = 0
    pn: int = 0
    active: bool = True
    x3dh_init: bytes | None = field(default=None, repr=False)
    session_id: int = 0
    dhr_valid: bool = True
    # What the next save has to do besides the row itself.
    dirty: str = "new"
    peer_device_id: str = ""
    peer_ik: bytes = field(default=b"", repr=False)
    used_opk_id: int = 0
    used_skipped: tuple[int, int] | None = None
    new_skipped: list[tuple[bytes, dict[int, bytes]]] = field(default_factory=list, repr=False)
    # dhs_priv made ready for an exchange (on curve448 a loaded OpenSSL key), if at hand
    dhs_key: XKey | None = field(default=None, repr=False)
    # False when the database is known to hold no skipped-key chain for this session
    skipped_chains: bool = True

    # ------------------------------------------------------------------ construction

    @classmethod
    def as_sender(
        cls, curve: Curve, uid: int, did: int, sk: bytearray, ad: bytes, peer_spk: bytes,
        x3dh_init: bytes, peer_device_id: str, peer_ik: bytes,
    ) -> Session:
        """Initiator side (§3.2): DHr = peer SPk, a fresh DHs, one KDF_RK for the sending chain."""
        dhs_pub, dhs = x_generate(curve)
        shared = dhs.exchange(peer_spk)
        rk, cks = kdf_rk(sk, shared)
        wipe(shared)
        size = 32
        return cls(
            curve, uid, did, rk, cks, bytearray(size), dhs_pub, dhs.raw, peer_spk, ad,
            x3dh_init=x3dh_init, peer_device_id=peer_device_id, peer_ik=peer_ik, dhs_key=dhs,
        )

    @classmethod
    def as_receiver(
        cls, curve: Curve, uid: int, did: int, sk: bytearray, ad: bytes, spk_pub: bytes,
        spk_priv: bytearray, opk_id: int, peer_device_id: str, peer_ik: bytes,
        spk_key: XKey | None = None,
    ) -> Session:
        """Responder side (§3.2): RK = SK, DHs = the SPk named in the X3DH init, DHr unknown.

        ``spk_key``: the SPk already prepared for exchanges, reused for the first ratchet step.
        """
        priv = bytearray(spk_priv)
        key = None
        if spk_key is not None and spk_key.key_object is not None:
            key = XKey(curve, priv, spk_pub, spk_key.key_object)
        return cls(
            curve, uid, did, bytearray(sk), bytearray(32), bytearray(32), spk_pub,
            priv, bytes(SIZES[curve].x_pub), ad, dhr_valid=False,
            used_opk_id=opk_id, peer_device_id=peer_device_id, peer_ik=peer_ik, dhs_key=key,
        )

    def wipe(self) -> None:
        """Zero the secret state of this in-memory copy."""
        for buf in (self.rk, self.cks, self.ckr, self.dhs_priv):
            wipe(buf)
        self.dhs_key = None

    # ------------------------------------------------------------------ encryption

    def encrypt(self, payload: bytes, ad_prefix: bytes, payload_direct: bool) -> bytes:
        """ratchetEncrypt (§3.7): one DR message; Ns reaching 1000 makes the session inactive."""
        old = self.cks
        self.cks, mk = kdf_ck(old)
        wipe(old)
        x3dh = (
            encoding.parse_x3dh_init(self.x3dh_init, self.curve) if self.x3dh_init else None
        )
        header = encoding.DRHeader(
            self.curve, self.ns, self.pn, self.dhs_pub, payload_direct, x3dh
        ).to_bytes()
        self.ns += 1
        ad = ad_prefix + self.ad + header
        body = aead_encrypt(mk[:32], mk[32:48], payload, ad)
        wipe(mk)
        if self.ns >= MAX_SENDING_CHAIN:
            self.active = False
        if self.dirty != "new":
            self.dirty = "encrypt"
        return header + body

    # ------------------------------------------------------------------ decryption

    def _dh_ratchet(self, peer: bytes) -> None:
        self.pn, self.ns, self.nr = self.ns, 0, 0
        self.dhr = peer
        old = self.dhs_key if self.dhs_key is not None else x_key(self.curve, self.dhs_priv)
        shared = old.exchange(self.dhr)
        spent = [self.rk, self.ckr]
        self.rk, self.ckr = kdf_rk(self.rk, shared)
        wipe(shared)
        old.wipe()  # wipes dhs_priv too
        self.dhs_pub, new = x_generate(self.curve)
        self.dhs_priv, self.dhs_key = new.raw, new
        shared = new.exchange(self.dhr)
        spent += [self.rk, self.cks]
        self.rk, self.cks = kdf_rk(self.rk, shared)
        wipe(shared)
        for buf in spent:
            wipe(buf)
        if self.dirty != "new":
            self.dirty = "ratchet"

    def _skip(self, until: int, limit: int) -> None:
        if self.nr == until:
            return
        if self.nr + limit < until:
            raise errors.TooManySkippedError(
                f"message is {until - self.nr} keys ahead of the receiving chain; "
                f"lime allows {MAX_MESSAGE_SKIP}"
            )
        keys: dict[int, bytes] = {}
        self.new_skipped.append((self.dhr, keys))
        while self.nr < until:
            old = self.ckr
            self.ckr, mk = kdf_ck(old)
            wipe(old)
            keys[self.nr] = bytes(mk)
            wipe(mk)
            self.nr += 1

    def decrypt(
        self, message: bytes, ad_prefix: bytes, payload_direct: bool,
        lookup: SkippedLookup, chain_exists: ChainExists,
        parsed: tuple[encoding.DRHeader, int] | None = None,
    ) -> bytes:
        """ratchetDecrypt (§3.8) on this in-memory session; returns the payload.

        ``parsed``: the message's header and its size, when the caller parsed it already.

        Raises:
            MalformedMessageError, TooManySkippedError, ReplayError, BadTagError.
        """
        header, hsize = parsed or encoding.parse_dr_header(message, self.curve)
        if header.payload_direct != payload_direct:
            raise errors.MalformedMessageError(
                "the message's payload flag does not match the presence of a cipher message"
            )
        if len(message) < hsize + encoding.TAG_SIZE + (0 if payload_direct else SEED_SIZE):
            raise errors.MalformedMessageError("DR message too short for its payload")
        ad = ad_prefix + self.ad + message[:hsize]
        if payload_direct:
            body = message[hsize:]
        else:  # lime reads exactly a 32-byte seed then the tag at the very end
            body = message[hsize : hsize + SEED_SIZE] + message[-encoding.TAG_SIZE :]
        if self.dirty != "new":
            self.dirty = "decrypt"
        max_allowed = MAX_MESSAGE_SKIP
        if not self.dhr_valid:
            self._dh_ratchet(header.dhs)
            self.dhr_valid = True
        else:
            stored = lookup(header.dhs, header.ns)
            if stored is not None:
                dhid, stored_mk = stored
                plain = self._open(stored_mk, body, ad)
                self.used_skipped = (dhid, header.ns)
                self.x3dh_init = None
                return plain
            if header.dhs == self.dhr and header.ns < self.nr:
                raise errors.ReplayError("this message's key was already used")
            if header.dhs != self.dhr:
                if chain_exists(header.dhs):
                    raise errors.ReplayError("this message's key was already used")
                max_allowed -= header.pn - self.nr
                self._skip(header.pn, MAX_MESSAGE_SKIP - header.ns)
                self._dh_ratchet(header.dhs)
        self._skip(header.ns, max_allowed)
        old = self.ckr
        self.ckr, mk = kdf_ck(old)
        wipe(old)
        self.nr += 1
        plain = self._open(bytes(mk), body, ad)
        wipe(mk)
        self.x3dh_init = None
        return plain

    @staticmethod
    def _open(mk: bytes, body: bytes, ad: bytes) -> bytes:
        try:
            return aead_decrypt(mk[:32], mk[32:48], body, ad)
        except InvalidTag:
            raise errors.BadTagError("the DR message failed authentication") from None
