"""lime 5.4's post-quantum hybrids: X3DH with a KEM, and the Double Ratchet's KEM steps.

Read from lime 5.4.24 (``src/lime_x3dh.cpp``, ``src/lime_double_ratchet.cpp``,
``src/lime_x3dh.hpp``, ``src/lime_double_ratchet.hpp``); written here from that reading,
for c25519k512, c25519mlk512 and c448mlk1024 (:data:`pylime.types.POST_QUANTUM_CURVES`).

X3DH (PQXDH-like). The SPk and OPks carry an EC key and a KEM key; the SPk signature covers
EC key ‖ KEM key. The initiator computes DH1..DH4 as lime 5.1 does, encapsulates one secret
to the OPk's KEM key (the SPk's when the bundle has no OPk), and sends the ciphertext in its
X3DH init after Ek. ::

    SK = HKDF-SHA512(salt = 64 zero bytes,
                     IKM = F ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ KEM secret
                           ‖ IkA ‖ EkA ‖ IkB ‖ SPkB(EC) ‖ [OPkB(EC) ‖ OPkB(KEM)] or [SPkB(KEM)] ‖ ct,
                     info = "Lime_" ‖ CURVE25519|CURVE448 ‖ "_SHA512_" ‖ KYBER512|MLKEM512|MLKEM1024,
                     32 bytes)

Double Ratchet. Each side's ratchet key is an EC key pair plus a KEM key pair plus the
ciphertext it last encapsulated to the peer. An EC step is lime 5.1's KDF_RK; a KEM step
also encapsulates to the peer's KEM key and mixes the transcript::

    RK, CK = HKDF-SHA512(salt = RK, IKM = DH ‖ KEM secret ‖ EC(sender) ‖ EC(receiver)
                         ‖ KEM key(receiver) ‖ ct, info = "DR Root Chain Key Derivation", 64)

A KEM step happens on sending when the peer's KEM key is unused and either the chain since
the last KEM step is longer than 42 messages, the last one is older than a day, or the
session was just created on the receiving side. Otherwise the ratchet is EC only. The chain
KDF appends the 16-bit message index to its constants (``0x01 ‖ n`` for the message key,
``0x02 ‖ n`` for the next chain key). Once a side knows the peer holds its KEM key, its
headers carry the EC key and 12-byte KEM indexes instead of the KEM key and ciphertext.
"""

from __future__ import annotations

import hmac
import struct
import time
from dataclasses import dataclass, field

from pylime import errors
from pylime.reference import encoding, kem
from pylime.reference.primitives import (
    SIZES,
    InvalidTag,
    aead_decrypt,
    aead_encrypt,
    dh,
    ed_to_x_private,
    ed_to_x_public,
    hkdf_sha512,
    wipe,
    x_keypair,
)
from pylime.reference.ratchet import DR_CHAIN_INFO, SEED_SIZE, ChainExists, SkippedLookup, kdf_rk
from pylime.types import Curve

__all__ = [
    "DEFAULT_ENTROPY",
    "KEM_RATCHET_CHAIN_SIZE",
    "MAX_KEM_RATCHET_PERIOD",
    "MAX_MESSAGE_SKIP",
    "MAX_SENDING_CHAIN",
    "Entropy",
    "HybridSession",
    "PreKey",
    "initiate",
    "kdf_ck",
    "kem_kdf_rk",
    "respond",
    "split_public",
    "x3dh_info",
]

# lime 5.4 src/lime_settings.hpp
MAX_MESSAGE_SKIP = 512
MAX_SENDING_CHAIN = 500
KEM_RATCHET_CHAIN_SIZE = 42
MAX_KEM_RATCHET_PERIOD = 86400
_ZERO_SALT = bytes(64)
_EC_ID = {Curve.C25519: b"CURVE25519", Curve.C448: b"CURVE448"}


def x3dh_info(curve: Curve) -> bytes:
    """The HKDF info of the hybrid X3DH: ``Lime_<EC>_SHA512_<KEM>``."""
    return b"Lime_" + _EC_ID[curve.ec] + b"_SHA512_" + kem.KEM_OF[curve].value.encode()


def _kem(curve: Curve) -> kem.Kem:
    return kem.KEM_OF[curve]


# --------------------------------------------------------------------------- randomness


class Entropy:
    """Where the hybrid code draws its fresh keys and encapsulations.

    The default is the operating system's randomness. Internal: the lime 5.4 vector tests
    replace it with one that replays recorded keys, to rebuild a recorded exchange byte
    for byte.
    """

    def x_keypair(self, curve: Curve) -> tuple[bytes, bytearray]:
        """A fresh EC key pair (public, raw private)."""
        return x_keypair(curve.ec)

    def kem_keypair(self, k: kem.Kem) -> tuple[bytes, bytearray]:
        """A fresh KEM key pair (public, private)."""
        return kem.generate(k)

    def encaps(self, k: kem.Kem, public: bytes) -> tuple[bytes, bytes]:
        """Encapsulate a fresh secret: (ciphertext, shared secret)."""
        return kem.encaps(k, public)


DEFAULT_ENTROPY = Entropy()


# --------------------------------------------------------------------------- prekeys


@dataclass
class PreKey:
    """An SPk or OPk of a hybrid user: EC pair and KEM pair (private halves secret)."""

    ec_pub: bytes = field(repr=False)
    ec_priv: bytearray = field(repr=False)
    kem_pub: bytes = field(repr=False)
    kem_priv: bytearray = field(repr=False)

    @property
    def public(self) -> bytes:
        """What is published and signed: EC key ‖ KEM key."""
        return self.ec_pub + self.kem_pub

    @property
    def private_part(self) -> bytes:
        """What follows the EC public key in the stored blob: EC private ‖ KEM key ‖ KEM private.

        The stored blob (``X3DH_SPK.SPK``, ``X3DH_OPK.OPK``) is lime 5.4's layout
        EC public ‖ EC private ‖ KEM public ‖ KEM private.
        """
        return bytes(self.ec_priv) + self.kem_pub + bytes(self.kem_priv)

    @classmethod
    def generate(cls, curve: Curve, entropy: Entropy = DEFAULT_ENTROPY) -> PreKey:
        """A fresh hybrid prekey."""
        ec_pub, ec_priv = entropy.x_keypair(curve)
        kem_pub, kem_priv = entropy.kem_keypair(_kem(curve))
        return cls(ec_pub, ec_priv, kem_pub, kem_priv)

    @classmethod
    def from_blob(cls, curve: Curve, blob: bytes) -> PreKey:
        """Split a stored blob (EC public ‖ EC private ‖ KEM public ‖ KEM private)."""
        x, pk = SIZES[curve].x_pub, kem.SIZES[_kem(curve)].pk
        if not kem.private_size_ok(_kem(curve), len(blob) - 2 * x - pk):
            raise errors.InternalError("a stored hybrid prekey has the wrong size")
        return cls(bytes(blob[:x]), bytearray(blob[x:2 * x]), bytes(blob[2 * x:2 * x + pk]),
                   bytearray(blob[2 * x + pk:]))

    def wipe(self) -> None:
        """Zero the private halves."""
        wipe(self.ec_priv)
        wipe(self.kem_priv)


def split_public(curve: Curve, public: bytes) -> tuple[bytes, bytes]:
    """A published hybrid key (EC ‖ KEM) as (EC key, KEM key)."""
    x = SIZES[curve].x_pub
    if len(public) != x + kem.SIZES[_kem(curve)].pk:
        raise ValueError("a hybrid public key has the wrong size")
    return public[:x], public[x:]


# --------------------------------------------------------------------------- X3DH


def _sk(curve: Curve, parts: list[bytes | bytearray]) -> bytearray:
    ikm = bytearray(b"\xff" * SIZES[curve].ed_pub)
    for p in parts:
        ikm += p
    sk = hkdf_sha512(_ZERO_SALT, ikm, x3dh_info(curve), 32)
    wipe(ikm)
    return sk


def initiate(curve: Curve, ik_pub: bytes, ik_seed: bytes | bytearray, peer_ik: bytes,
             spk: bytes, spk_id: int, opk: tuple[bytes, int] | None,
             entropy: Entropy = DEFAULT_ENTROPY) -> tuple[bytearray, encoding.X3DHInit]:
    """The initiator's hybrid X3DH: (SK, the X3DH init to send).

    ``spk`` and ``opk[0]`` are published hybrid keys (EC ‖ KEM); the SPk signature was
    checked by the caller. Raises ValueError for an invalid (low-order) EC key.
    """
    spk_ec, spk_kem = split_public(curve, spk)
    ik_x = ed_to_x_private(curve, ik_seed)
    ek_pub, ek = entropy.x_keypair(curve)
    try:
        parts: list[bytes | bytearray] = [
            dh(curve, ik_x, spk_ec),
            dh(curve, ek, ed_to_x_public(curve, peer_ik)),
            dh(curve, ek, spk_ec),
        ]
        if opk is not None:
            opk_ec, opk_kem = split_public(curve, opk[0])
            parts.append(dh(curve, ek, opk_ec))
            target = opk_kem
        else:
            target = spk_kem
        ct, ss = entropy.encaps(_kem(curve), target)
        parts.append(bytearray(ss))
        parts.append(ik_pub + ek_pub + peer_ik + spk_ec
                     + (opk[0] if opk is not None else spk_kem) + ct)
        sk = _sk(curve, parts)
    finally:
        wipe(ik_x)
        wipe(ek)
    for p in parts:
        if isinstance(p, bytearray):
            wipe(p)
    init = encoding.X3DHInit(curve, ik_pub, ek_pub, spk_id,
                             opk[1] if opk is not None else None, ct=ct)
    return sk, init


def respond(curve: Curve, ik_pub: bytes, ik_seed: bytes | bytearray, spk: PreKey,
            opk: PreKey | None, init: encoding.X3DHInit) -> bytearray:
    """The responder's hybrid X3DH from a received X3DH init: SK.

    Raises ValueError for an invalid (low-order) key in the init.
    """
    k = _kem(curve)
    ik_x = ed_to_x_private(curve, ik_seed)
    try:
        peer_ik_x = ed_to_x_public(curve, init.ik)
        parts: list[bytes | bytearray] = [
            dh(curve, spk.ec_priv, peer_ik_x),
            dh(curve, ik_x, init.ek),
            dh(curve, spk.ec_priv, init.ek),
        ]
        if opk is not None:
            parts.append(dh(curve, opk.ec_priv, init.ek))
            parts.append(kem.decaps(k, opk.kem_priv, init.ct))
            tail = opk.ec_pub + opk.kem_pub
        else:
            parts.append(kem.decaps(k, spk.kem_priv, init.ct))
            tail = spk.kem_pub
        parts.append(init.ik + init.ek + ik_pub + spk.ec_pub + tail + init.ct)
        sk = _sk(curve, parts)
    finally:
        wipe(ik_x)
    for p in parts:
        if isinstance(p, bytearray):
            wipe(p)
    return sk


# --------------------------------------------------------------------------- ratchet KDFs


def kem_kdf_rk(rk: bytes | bytearray, dh_out: bytes | bytearray, kem_ss: bytes | bytearray,
               ec_sender: bytes, ec_receiver: bytes, kem_pk: bytes,
               kem_ct: bytes) -> tuple[bytearray, bytearray]:
    """lime 5.4's KEM_KDF_RK: (new RK, chain key)."""
    ikm = bytearray(dh_out) + kem_ss + ec_sender + ec_receiver + kem_pk + kem_ct
    out = hkdf_sha512(rk, ikm, DR_CHAIN_INFO, 64)
    wipe(ikm)
    new_rk, ck = out[:32], out[32:]
    wipe(out)
    return new_rk, ck


def kdf_ck(ck: bytes | bytearray, n: int) -> tuple[bytearray, bytearray]:
    """The hybrids' KDF_CK: (next chain key, 48-byte message key), the index ``n`` mixed in."""
    idx = struct.pack(">H", n & 0xFFFF)
    return (bytearray(hmac.digest(ck, b"\x02" + idx, "sha512")[:32]),
            bytearray(hmac.digest(ck, b"\x01" + idx, "sha512")[:48]))


# --------------------------------------------------------------------------- session

# DR_sessions.DHrStatus bits (lime 5.4 DHrStatusBitMap), kept in pylime_KEM_sessions
_FORCE_KEM = 0x01
_PEER_KEM_AVAILABLE = 0x02
_PEER_HAS_SELF_KEM = 0x04
_PEER_EC_AVAILABLE = 0x08
_CHAIN_MASK = 0x7FFFFF00


@dataclass(eq=False)
class HybridSession:
    """One hybrid Double Ratchet session: the attributes :class:`~pylime.reference.ratchet.
    Session` has, so the manager and storage handle both, plus the KEM state.

    ``dhr`` and ``dhs_pub + dhs_priv`` are lime 5.4's ``DR_sessions`` blobs: DHr = EC ‖ KEM key
    ‖ ct, DHs = EC public ‖ EC private ‖ KEM public ‖ KEM private ‖ ct.
    """

    curve: Curve
    uid: int
    did: int
    rk: bytearray = field(repr=False)
    cks: bytearray = field(repr=False)
    ckr: bytearray = field(repr=False)
    ec_pub: bytes = field(repr=False)
    ec_priv: bytearray = field(repr=False)
    kem_pub: bytes = field(repr=False)
    kem_priv: bytearray = field(repr=False)
    kem_ct: bytes = field(repr=False)
    dhr_ec: bytes = field(repr=False)
    dhr_kem: bytes = field(repr=False)
    dhr_ct: bytes = field(repr=False)
    ad: bytes = field(repr=False)
    ns: int = 0
    nr: int = 0
    pn: int = 0
    active: bool = True
    x3dh_init: bytes | None = field(default=None, repr=False)
    session_id: int = 0
    dhr_valid: bool = True
    force_kem: bool = False
    peer_kem_available: bool = False
    peer_has_self_kem: bool = False
    peer_ec_available: bool = False
    kem_chain: int = 0
    last_kem: int = 0
    dirty: str = "new"
    peer_device_id: str = ""
    peer_ik: bytes = field(default=b"", repr=False)
    used_opk_id: int = 0
    used_skipped: tuple[int, int] | None = None
    new_skipped: list[tuple[bytes, dict[int, bytes]]] = field(default_factory=list, repr=False)
    dhs_key: None = field(default=None, repr=False)  # no prepared-key cache for hybrids
    skipped_chains: bool = True
    entropy: Entropy = field(default=DEFAULT_ENTROPY, repr=False)

    # ------------------------------------------------------------------ stored form

    @property
    def dhs_pub(self) -> bytes:
        """The EC ratchet public key (the stored DHs blob starts with it)."""
        return self.ec_pub

    @property
    def dhs_priv(self) -> bytes:
        """The rest of the stored DHs blob: EC private ‖ KEM public ‖ KEM private ‖ ct."""
        return bytes(self.ec_priv) + self.kem_pub + bytes(self.kem_priv) + self.kem_ct

    @property
    def dhr(self) -> bytes:
        """The stored DHr blob: peer EC key ‖ peer KEM key ‖ the ciphertext it sent."""
        return self.dhr_ec + self.dhr_kem + self.dhr_ct

    @property
    def chain_key(self) -> bytes:
        """The index naming the current receiving chain in ``DR_MSk_DHr.DHr`` (24 bytes)."""
        return kem.index(self.dhr_ec) + kem.index(self.dhr_kem + self.dhr_ct)

    @property
    def status(self) -> int:
        """lime 5.4's DHrStatus integer."""
        return ((_FORCE_KEM if self.force_kem else 0)
                | (_PEER_KEM_AVAILABLE if self.peer_kem_available else 0)
                | (_PEER_HAS_SELF_KEM if self.peer_has_self_kem else 0)
                | (_PEER_EC_AVAILABLE if self.peer_ec_available else 0)
                | ((self.kem_chain << 8) & _CHAIN_MASK))

    def _set_status(self, value: int) -> None:
        self.force_kem = bool(value & _FORCE_KEM)
        self.peer_kem_available = bool(value & _PEER_KEM_AVAILABLE)
        self.peer_has_self_kem = bool(value & _PEER_HAS_SELF_KEM)
        self.peer_ec_available = bool(value & _PEER_EC_AVAILABLE)
        self.kem_chain = (value & _CHAIN_MASK) >> 8

    @classmethod
    def from_row(cls, curve: Curve, uid: int, did: int, rk: bytes, cks: bytes, ckr: bytes,
                 dhs: bytes, dhr: bytes, ad: bytes, ns: int, nr: int, pn: int, active: bool,
                 x3dh: bytes | None, sid: int, status: int, last_kem: int) -> HybridSession:
        """A session from its stored row and its pylime_KEM_sessions state."""
        k = kem.SIZES[_kem(curve)]
        x = SIZES[curve].x_pub
        ec_pub, ec_priv = dhs[:x], bytearray(dhs[x:2 * x])
        kem_pub = dhs[2 * x:2 * x + k.pk]
        kem_priv, kem_ct = bytearray(dhs[2 * x + k.pk:len(dhs) - k.ct]), dhs[len(dhs) - k.ct:]
        if len(dhr) != x + k.pk + k.ct or not kem.private_size_ok(_kem(curve), len(kem_priv)):
            raise errors.InternalError("a stored hybrid session has the wrong size")
        s = cls(curve, uid, did, bytearray(rk), bytearray(cks), bytearray(ckr), ec_pub,
                ec_priv, kem_pub, kem_priv, kem_ct, dhr[:x], dhr[x:x + k.pk], dhr[x + k.pk:],
                ad, ns, nr, pn, active, x3dh, sid, last_kem=last_kem, dirty="clean")
        s._set_status(status)
        return s

    # ------------------------------------------------------------------ construction

    @classmethod
    def as_sender(cls, curve: Curve, uid: int, did: int, sk: bytearray, ad: bytes,
                  peer_spk: bytes, x3dh_init: bytes, peer_device_id: str, peer_ik: bytes,
                  entropy: Entropy = DEFAULT_ENTROPY) -> HybridSession:
        """Initiator side: DHr = the peer's SPk (no ciphertext yet), a KEM step for CKs."""
        spk_ec, spk_kem = split_public(curve, peer_spk)
        k = _kem(curve)
        ec_pub, ec_priv = entropy.x_keypair(curve)
        shared = dh(curve, ec_priv, spk_ec)
        ct, ss = entropy.encaps(k, spk_kem)
        rk, cks = kem_kdf_rk(sk, shared, ss, ec_pub, spk_ec, spk_kem, ct)
        wipe(shared)
        kem_pub, kem_priv = entropy.kem_keypair(k)
        return cls(curve, uid, did, rk, cks, bytearray(32), ec_pub, ec_priv, kem_pub, kem_priv,
                   ct, spk_ec, spk_kem, bytes(kem.SIZES[k].ct), ad, x3dh_init=x3dh_init,
                   peer_device_id=peer_device_id, peer_ik=peer_ik, last_kem=int(time.time()),
                   entropy=entropy)

    @classmethod
    def as_receiver(cls, curve: Curve, uid: int, did: int, sk: bytearray, ad: bytes,
                    spk: PreKey, opk_id: int, peer_device_id: str, peer_ik: bytes,
                    entropy: Entropy = DEFAULT_ENTROPY) -> HybridSession:
        """Responder side: RK = SK, DHs = the SPk (no ciphertext), DHr unknown."""
        k = kem.SIZES[_kem(curve)]
        return cls(curve, uid, did, bytearray(sk), bytearray(32), bytearray(32), spk.ec_pub,
                   bytearray(spk.ec_priv), spk.kem_pub, bytearray(spk.kem_priv), bytes(k.ct),
                   bytes(SIZES[curve].x_pub), bytes(k.pk), bytes(k.ct), ad, dhr_valid=False,
                   force_kem=True, peer_kem_available=True, peer_ec_available=True,
                   used_opk_id=opk_id, peer_device_id=peer_device_id, peer_ik=peer_ik,
                   last_kem=int(time.time()), entropy=entropy)

    def wipe(self) -> None:
        """Zero the secret state of this in-memory copy."""
        for buf in (self.rk, self.cks, self.ckr, self.ec_priv, self.kem_priv):
            wipe(buf)

    # ------------------------------------------------------------------ ratchet steps

    def _self_index(self) -> bytes:
        return kem.index(self.kem_pub + self.kem_ct)

    def _peer_index(self) -> bytes:
        return kem.index(self.dhr_kem + self.dhr_ct)

    def _ratchet_sending(self) -> None:
        k = _kem(self.curve)
        kem_step = self.peer_kem_available and (
            self.kem_chain > KEM_RATCHET_CHAIN_SIZE
            or int(time.time()) - self.last_kem > MAX_KEM_RATCHET_PERIOD
            or self.force_kem)
        self.pn, self.ns = self.ns, 0
        ec_pub, ec_priv = self.entropy.x_keypair(self.curve)
        shared = dh(self.curve, ec_priv, self.dhr_ec)
        old = self.rk
        if kem_step:
            ct, ss = self.entropy.encaps(k, self.dhr_kem)
            self.rk, self.cks = kem_kdf_rk(old, shared, ss, ec_pub, self.dhr_ec,
                                            self.dhr_kem, ct)
            wipe(self.kem_priv)
            self.kem_pub, self.kem_priv = self.entropy.kem_keypair(k)
            self.kem_ct = ct
            self.peer_has_self_kem = False
            self.peer_kem_available = False
            self.force_kem = False
        else:
            self.rk, self.cks = kdf_rk(old, shared)
        wipe(old)
        wipe(shared)
        wipe(self.ec_priv)
        self.ec_pub, self.ec_priv = ec_pub, ec_priv
        self.peer_ec_available = False
        if self.dirty != "new":
            self.dirty = "ratchet"

    def _ratchet_receiving(self, header: encoding.DRHeader) -> None:
        self.nr = 0
        x = SIZES[self.curve].x_pub
        full = header.kem_indexes is None
        if full:
            k = kem.SIZES[_kem(self.curve)]
            self.dhr_ec = header.dhs[:x]
            self.dhr_kem = header.dhs[x:x + k.pk]
            self.dhr_ct = header.dhs[x + k.pk:]
            self.peer_kem_available = True
            self.peer_has_self_kem = True
            self.kem_chain = 0
        else:
            self.dhr_ec = header.dhs
        self.peer_ec_available = True
        shared = dh(self.curve, self.ec_priv, self.dhr_ec)
        old = self.rk
        if full:
            ss = kem.decaps(_kem(self.curve), self.kem_priv, self.dhr_ct)
            self.rk, ckr = kem_kdf_rk(old, shared, ss, self.dhr_ec, self.ec_pub, self.kem_pub,
                                      self.dhr_ct)
            wipe(ss)
            self.last_kem = int(time.time())
        else:
            self.rk, ckr = kdf_rk(old, shared)
        wipe(old)
        wipe(shared)
        wipe(self.ckr)
        self.ckr = ckr
        if self.dirty != "new":
            self.dirty = "ratchet"

    def _is_current(self, header: encoding.DRHeader) -> bool:
        if header.kem_indexes is not None:
            return header.dhs == self.dhr_ec and header.kem_indexes[0] == self._peer_index()
        return header.dhs == self.dhr

    # ------------------------------------------------------------------ encryption

    def encrypt(self, payload: bytes, ad_prefix: bytes, payload_direct: bool) -> bytes:
        """ratchetEncrypt: one DR message (a ratchet step first when the peer sent a new key)."""
        if self.peer_ec_available:
            self._ratchet_sending()
        old = self.cks
        self.cks, mk = kdf_ck(old, self.ns)
        wipe(old)
        x3dh = (encoding.parse_x3dh_init(self.x3dh_init, self.curve)
                if self.x3dh_init else None)
        if self.peer_has_self_kem:
            header = encoding.DRHeader(self.curve, self.ns, self.pn, self.ec_pub,
                                       payload_direct, x3dh,
                                       kem_indexes=(self._self_index(), self._peer_index()))
        else:
            header = encoding.DRHeader(self.curve, self.ns, self.pn,
                                       self.ec_pub + self.kem_pub + self.kem_ct,
                                       payload_direct, x3dh)
        raw = header.to_bytes()
        self.ns += 1
        self.kem_chain += 1
        body = aead_encrypt(mk[:32], mk[32:48], payload, ad_prefix + self.ad + raw)
        wipe(mk)
        if self.ns >= MAX_SENDING_CHAIN:
            self.active = False
        if self.dirty not in ("new", "ratchet"):
            self.dirty = "encrypt"
        return raw + body

    # ------------------------------------------------------------------ decryption

    def _skip(self, until: int, limit: int) -> None:
        if self.nr == until:
            return
        if self.nr + limit < until:
            raise errors.TooManySkippedError(
                f"message is {until - self.nr} keys ahead of the receiving chain; "
                f"lime 5.4 allows {MAX_MESSAGE_SKIP}")
        keys: dict[int, bytes] = {}
        self.new_skipped.append((self.chain_key, keys))
        while self.nr < until:
            old = self.ckr
            self.ckr, mk = kdf_ck(old, self.nr)
            wipe(old)
            keys[self.nr] = bytes(mk)
            wipe(mk)
            self.nr += 1
            self.kem_chain += 1

    def decrypt(self, message: bytes, ad_prefix: bytes, payload_direct: bool,
                lookup: SkippedLookup, chain_exists: ChainExists,
                parsed: tuple[encoding.DRHeader, int] | None = None) -> bytes:
        """ratchetDecrypt on this in-memory session; returns the payload.

        Raises:
            MalformedMessageError, TooManySkippedError, ReplayError, BadTagError; ValueError
            for an invalid (low-order) peer EC key.
        """
        header, hsize = parsed or encoding.parse_dr_header(message, self.curve)
        if header.payload_direct != payload_direct:
            raise errors.MalformedMessageError(
                "the message's payload flag does not match the presence of a cipher message")
        if len(message) < hsize + encoding.TAG_SIZE + (0 if payload_direct else SEED_SIZE):
            raise errors.MalformedMessageError("DR message too short for its payload")
        ad = ad_prefix + self.ad + message[:hsize]
        if payload_direct:
            body = message[hsize:]
        else:
            body = message[hsize:hsize + SEED_SIZE] + message[-encoding.TAG_SIZE:]
        if self.dirty not in ("new", "ratchet"):
            self.dirty = "decrypt"
        max_allowed = MAX_MESSAGE_SKIP
        if not self.dhr_valid:
            self._ratchet_receiving(header)
            self.dhr_valid = True
        else:
            current = self._is_current(header)
            if header.kem_indexes is not None and header.kem_indexes[1] == self._self_index():
                self.peer_has_self_kem = True
            if not current or header.ns < self.nr:
                stored = lookup(header.chain_index, header.ns)
                if stored is not None:
                    dhid, stored_mk = stored
                    plain = self._open(stored_mk, body, ad)
                    self.used_skipped = (dhid, header.ns)
                    self.x3dh_init = None
                    return plain
                if current:
                    raise errors.ReplayError("this message's key was already used")
                if chain_exists(header.chain_index):
                    raise errors.ReplayError("this message's key was already used")
            if not current:
                max_allowed -= header.pn - self.nr
                self._skip(header.pn, MAX_MESSAGE_SKIP - header.ns)
                self._ratchet_receiving(header)
        self._skip(header.ns, max_allowed)
        old = self.ckr
        self.ckr, mk = kdf_ck(old, self.nr)
        wipe(old)
        self.nr += 1
        self.kem_chain += 1
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
