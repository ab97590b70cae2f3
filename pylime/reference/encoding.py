"""Parse and serialise every lime 5.1.64 message (lime-wire.md §2.3, §3.4, §3.5, §4).

lime 5.4's post-quantum algorithms (CurveId 3-5) extend two of them, here too
(``src/lime_double_ratchet_protocol.{hpp,cpp}``, ``src/lime_double_ratchet.cpp``): the X3DH
init carries the KEM ciphertext after Ek, and the DR header carries either the sender's
whole ratchet public part (EC key ‖ KEM key ‖ KEM ciphertext) or, type bit 2 set, its EC key
and two 12-byte KEM indexes (the sender's, then the one it holds of the receiver).

The Double Ratchet side (DR header, X3DH init, DR message, cipherMessage) is defined here;
the key-server messages come from :mod:`pylime.keyserver.protocol` and are re-exported, so
the server, the reference and the tests share one codec. Parsing keeps every byte that
lime's parser ignores (the unused type bits, any OPk-flag value), so parse then serialise
gives back the exact input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pylime.errors import MalformedMessageError
from pylime.keyserver.protocol import (
    Ack,
    Bundle,
    BundleFlag,
    DeleteUser,
    DeprecatedRegisterUser,
    ErrorCode,
    ErrorMessage,
    GetPeerBundle,
    GetSelfOPks,
    MessageType,
    OPk,
    PeerBundle,
    PostOPks,
    PostSPk,
    RegisterUser,
    SelfOPks,
    X3DHParseError,
    parse_request,
    parse_response,
)
from pylime.reference import kem
from pylime.reference.primitives import SIZES
from pylime.types import Curve

__all__ = [
    "DR_PROTOCOL_VERSION",
    "KEM_INDEX_SIZE",
    "TAG_SIZE",
    "Ack",
    "Bundle",
    "BundleFlag",
    "DRHeader",
    "DRMessage",
    "DeleteUser",
    "DeprecatedRegisterUser",
    "ErrorCode",
    "ErrorMessage",
    "GetPeerBundle",
    "GetSelfOPks",
    "MessageType",
    "OPk",
    "PeerBundle",
    "PostOPks",
    "PostSPk",
    "RegisterUser",
    "SelfOPks",
    "X3DHInit",
    "X3DHParseError",
    "header_size",
    "parse_cipher_message",
    "parse_dr_header",
    "parse_dr_message",
    "parse_request",
    "parse_response",
    "parse_x3dh_init",
    "ratchet_public_size",
    "x3dh_init_size",
]

DR_PROTOCOL_VERSION = 0x01
TAG_SIZE = 16
_TYPE_X3DH_INIT = 0x01
_TYPE_PAYLOAD_DIRECT = 0x02
_TYPE_KEM_INDEX = 0x04  # lime 5.4, post-quantum curves only
KEM_INDEX_SIZE = 12


def _kem_ct(curve: Curve) -> int:
    return kem.SIZES[kem.KEM_OF[curve]].ct if curve.is_post_quantum else 0


def ratchet_public_size(curve: Curve) -> int:
    """The sender's ratchet public part in a full header: DHs, or EC ‖ KEM key ‖ KEM ct."""
    if not curve.is_post_quantum:
        return SIZES[curve].x_pub
    k = kem.SIZES[kem.KEM_OF[curve]]
    return SIZES[curve].x_pub + k.pk + k.ct


def x3dh_init_size(curve: Curve, with_opk: bool) -> int:
    """Size of an X3DH init: flag ‖ Ik ‖ Ek [‖ KEM ct] ‖ SPk id [‖ OPk id]."""
    s = SIZES[curve]
    return 1 + s.ed_pub + s.x_pub + _kem_ct(curve) + 4 + (4 if with_opk else 0)


def header_size(curve: Curve, x3dh_init: X3DHInit | None = None,
                kem_indexes: bool = False) -> int:
    """Size of a DR header, with its X3DH init if any (``kem_indexes``: type bit 2)."""
    tail = (SIZES[curve].x_pub + 2 * KEM_INDEX_SIZE if kem_indexes
            else ratchet_public_size(curve))
    return 3 + (len(x3dh_init.to_bytes()) if x3dh_init else 0) + 4 + tail


@dataclass(frozen=True)
class X3DHInit:
    """The X3DH init an initiator prepends to its messages until the peer answers."""

    curve: Curve
    ik: bytes = field(repr=False)
    ek: bytes = field(repr=False)
    spk_id: int
    opk_id: int | None = None
    # lime reads "OPk present" as flag == 1 and anything else as "absent"; the raw byte is kept.
    flag: int | None = None
    #: the KEM ciphertext (post-quantum curves: encapsulated to the OPk's KEM key, else the SPk's)
    ct: bytes = field(default=b"", repr=False)

    def to_bytes(self) -> bytes:
        """The wire bytes."""
        flag = self.flag if self.flag is not None else (1 if self.opk_id is not None else 0)
        out = bytes([flag]) + self.ik + self.ek + self.ct + struct.pack(">I", self.spk_id)
        if self.opk_id is not None:
            out += struct.pack(">I", self.opk_id)
        return out


def parse_x3dh_init(data: bytes, curve: Curve) -> X3DHInit:
    """Parse a standalone X3DH init (as stored in ``DR_sessions.X3DHInit``)."""
    data = bytes(data)
    if not data:
        raise MalformedMessageError("empty X3DH init")
    with_opk = data[0] == 1
    if len(data) < x3dh_init_size(curve, with_opk):
        raise MalformedMessageError("X3DH init too short")
    s = SIZES[curve]
    pos = 1
    ik = data[pos : pos + s.ed_pub]
    pos += s.ed_pub
    ek = data[pos : pos + s.x_pub]
    pos += s.x_pub
    ct = data[pos : pos + _kem_ct(curve)]
    pos += len(ct)
    spk_id = int.from_bytes(data[pos : pos + 4], "big")
    pos += 4
    opk_id = int.from_bytes(data[pos : pos + 4], "big") if with_opk else None
    # keep the raw flag only when it is not the canonical 0/1, so equal inits compare equal
    return X3DHInit(curve, ik, ek, spk_id, opk_id, flag=None if data[0] in (0, 1) else data[0],
                    ct=ct)


@dataclass(frozen=True)
class DRHeader:
    """A Double Ratchet header: version, type bits, curve, [X3DH init], Ns, PN, DHs."""

    curve: Curve
    ns: int
    pn: int
    dhs: bytes = field(repr=False)
    payload_direct: bool
    x3dh_init: X3DHInit | None = None
    # Type bits 2-7 are unused; lime ignores them, parse keeps them for a byte-exact round trip.
    # (On the post-quantum curves bit 2 means kem_indexes.)
    unused_type_bits: int = 0
    #: post-quantum curves, type bit 2: (the sender's KEM index, the receiver's as the sender
    #: holds it); ``dhs`` is then the sender's EC key alone, else EC ‖ KEM key ‖ KEM ct
    kem_indexes: tuple[bytes, bytes] | None = field(default=None, repr=False)

    @property
    def type_byte(self) -> int:
        """The message-type bit field."""
        return (
            (_TYPE_X3DH_INIT if self.x3dh_init else 0)
            | (_TYPE_PAYLOAD_DIRECT if self.payload_direct else 0)
            | (_TYPE_KEM_INDEX if self.kem_indexes is not None else 0)
            | (self.unused_type_bits & (0xF8 if self.curve.is_post_quantum else 0xFC))
        )

    @property
    def chain_index(self) -> bytes:
        """What names the sender's ratchet key in ``DR_MSk_DHr.DHr``: lime 5.1 stores the DHs
        itself, lime 5.4's hybrids the 24-byte index HMAC(EC key)[:12] ‖ KEM index."""
        if not self.curve.is_post_quantum:
            return self.dhs
        x = SIZES[self.curve].x_pub
        if self.kem_indexes is not None:
            return kem.index(self.dhs[:x]) + self.kem_indexes[0]
        return kem.index(self.dhs[:x]) + kem.index(self.dhs[x:])

    def to_bytes(self) -> bytes:
        """The wire bytes."""
        out = bytes([DR_PROTOCOL_VERSION, self.type_byte, int(self.curve)])
        if self.x3dh_init is not None:
            out += self.x3dh_init.to_bytes()
        out += struct.pack(">HH", self.ns, self.pn) + self.dhs
        if self.kem_indexes is not None:
            out += self.kem_indexes[0] + self.kem_indexes[1]
        return out


def parse_dr_header(data: bytes, curve: Curve | None = None) -> tuple[DRHeader, int]:
    """Parse the header at the start of a DR message; return it and its size.

    ``curve`` is the local user's curve: lime refuses a header for another curve. Without
    it the curve byte decides.

    Raises:
        MalformedMessageError: too short, wrong version, wrong or unknown curve.
    """
    data = bytes(data)
    if len(data) < 3:
        raise MalformedMessageError("DR message shorter than its header")
    if data[0] != DR_PROTOCOL_VERSION:
        raise MalformedMessageError(f"unsupported DR protocol version {data[0]}")
    try:
        msg_curve = Curve(data[2])
    except ValueError:
        raise MalformedMessageError(f"unknown curve id {data[2]}") from None
    if curve is not None and msg_curve != curve:
        raise MalformedMessageError("DR message for another curve")
    s = SIZES[msg_curve]
    type_byte = data[1]
    indexes = msg_curve.is_post_quantum and bool(type_byte & _TYPE_KEM_INDEX)
    tail = s.x_pub + 2 * KEM_INDEX_SIZE if indexes else ratchet_public_size(msg_curve)
    if len(data) < 7 + tail:
        raise MalformedMessageError("DR message shorter than its header")
    pos = 3
    x3dh = None
    if type_byte & _TYPE_X3DH_INIT:
        with_opk = data[3] == 1
        size = x3dh_init_size(msg_curve, with_opk)
        if len(data) < 3 + size + 4 + tail:
            raise MalformedMessageError("DR message shorter than its header and X3DH init")
        x3dh = parse_x3dh_init(data[3 : 3 + size], msg_curve)
        pos += size
    ns, pn = struct.unpack(">HH", data[pos : pos + 4])
    pos += 4
    kem_indexes = None
    if indexes:
        dhs = data[pos : pos + s.x_pub]
        pos += s.x_pub
        kem_indexes = (data[pos : pos + KEM_INDEX_SIZE],
                       data[pos + KEM_INDEX_SIZE : pos + 2 * KEM_INDEX_SIZE])
        pos += 2 * KEM_INDEX_SIZE
    else:
        dhs = data[pos : pos + tail]
        pos += tail
    unused = type_byte & (0xF8 if msg_curve.is_post_quantum else 0xFC)
    header = DRHeader(
        msg_curve, ns, pn, dhs, bool(type_byte & _TYPE_PAYLOAD_DIRECT), x3dh, unused,
        kem_indexes,
    )
    return header, pos


@dataclass(frozen=True)
class DRMessage:
    """A DR message: header ‖ AES-GCM ciphertext ‖ tag (payload = plaintext or 32-byte seed)."""

    header: DRHeader
    ciphertext: bytes = field(repr=False)  # payload ciphertext followed by the 16-byte tag

    def to_bytes(self) -> bytes:
        """The wire bytes."""
        return self.header.to_bytes() + self.ciphertext

    @property
    def header_bytes(self) -> bytes:
        """The header exactly as authenticated in the AEAD associated data."""
        return self.header.to_bytes()


def parse_dr_message(data: bytes, curve: Curve | None = None) -> DRMessage:
    """Parse a whole DR message.

    Raises:
        MalformedMessageError: bad header, or no room for the 16-byte tag.
    """
    data = bytes(data)
    header, size = parse_dr_header(data, curve)
    if len(data) - size < TAG_SIZE:
        raise MalformedMessageError("DR message has no room for its authentication tag")
    return DRMessage(header, data[size:])


def parse_cipher_message(data: bytes) -> tuple[bytes, bytes]:
    """Split a cipherMessage into (ciphertext, 16-byte tag).

    Raises:
        MalformedMessageError: shorter than the tag (lime throws before trying any session).
    """
    data = bytes(data)
    if len(data) < TAG_SIZE:
        raise MalformedMessageError("cipher message shorter than its authentication tag")
    return data[:-TAG_SIZE], data[-TAG_SIZE:]
