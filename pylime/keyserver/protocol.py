"""lime's X3DH key-server messages (lime 5.1.64): constants, dataclasses, parsers and builders.

lime 5.4 speaks the same protocol (version 0x01, the same message types and layouts) on its
post-quantum curve ids 3-5: only the key sizes change, since an SPk or OPk is then the EC
key followed by the KEM key, and the SPk signature covers both (lime 5.4
``src/lime_x3dh_protocol.cpp``, ``src/lime_x3dh.hpp``).

Both sides live here so the server, the pure-Python reference and the tests share one
definition of the wire format (``lime-wire.md`` §4). Every message starts with the 3-byte
header ``version ‖ type ‖ curve``; integers are big-endian. Requests are parsed strictly
(trailing bytes are refused); responses are parsed like lime does (bytes after the last
announced entry are ignored).

Device ids travel as raw bytes; here they are ``str`` decoded as UTF-8 with
``surrogateescape``, so any byte string survives a parse/serialise round trip unchanged.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from pylime.errors import LimeError
from pylime.types import Curve

__all__ = [
    "ANSWER_TYPE",
    "CONTENT_TYPE",
    "KEY_SIZES",
    "MAX_DEVICE_ID_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "Bundle",
    "BundleFlag",
    "DeleteUser",
    "DeprecatedRegisterUser",
    "ErrorCode",
    "ErrorMessage",
    "GetPeerBundle",
    "GetSelfOPks",
    "KeySizes",
    "MessageType",
    "OPk",
    "PeerBundle",
    "PostOPks",
    "PostSPk",
    "RegisterUser",
    "Request",
    "Response",
    "SelfOPks",
    "X3DHParseError",
    "decode_device_id",
    "encode_device_id",
    "parse_request",
    "parse_response",
    "parse_response_size",
]

PROTOCOL_VERSION = 0x01
CONTENT_TYPE = "x3dh/octet-stream"
_HEADER_SIZE = 3


class MessageType(enum.IntEnum):
    """The second header byte."""

    DEPRECATED_REGISTER_USER = 0x01
    DELETE_USER = 0x02
    POST_SPK = 0x03
    POST_OPKS = 0x04
    GET_PEER_BUNDLE = 0x05
    PEER_BUNDLE = 0x06
    GET_SELF_OPKS = 0x07
    SELF_OPKS = 0x08
    REGISTER_USER = 0x09
    ERROR = 0xFF


#: The longest device id the protocol can carry (a 16-bit length precedes it on the wire).
MAX_DEVICE_ID_SIZE = 0xFFFF

#: The answer type a well-behaved server gives to each request type (besides ERROR).
ANSWER_TYPE: dict[int, MessageType] = {
    MessageType.REGISTER_USER: MessageType.REGISTER_USER,
    MessageType.DELETE_USER: MessageType.DELETE_USER,
    MessageType.POST_SPK: MessageType.POST_SPK,
    MessageType.POST_OPKS: MessageType.POST_OPKS,
    MessageType.GET_PEER_BUNDLE: MessageType.PEER_BUNDLE,
    MessageType.GET_SELF_OPKS: MessageType.SELF_OPKS,
}


class ErrorCode(enum.IntEnum):
    """The code byte of an error message (``lime-wire.md`` §4.4)."""

    BAD_CONTENT_TYPE = 0x00
    BAD_CURVE = 0x01
    MISSING_SENDER_ID = 0x02
    BAD_X3DH_PROTOCOL_VERSION = 0x03
    BAD_SIZE = 0x04
    USER_ALREADY_IN = 0x05
    USER_NOT_FOUND = 0x06
    DB_ERROR = 0x07
    BAD_REQUEST = 0x08
    SERVER_FAILURE = 0x09
    RESOURCE_LIMIT_REACHED = 0x0A


class BundleFlag(enum.IntEnum):
    """What a peerBundle entry carries."""

    NO_OPK = 0
    WITH_OPK = 1
    NO_BUNDLE = 2


@dataclass(frozen=True)
class KeySizes:
    """Public key and signature sizes of one curve, in bytes."""

    x: int  # SPk/OPk public key: X25519 / X448, or EC key ‖ KEM key on lime 5.4's hybrids
    ed: int  # Ed25519 / Ed448 public key (Ik)
    sig: int  # EdDSA signature


KEY_SIZES: dict[Curve, KeySizes] = {
    Curve.C25519: KeySizes(x=32, ed=32, sig=64),
    Curve.C448: KeySizes(x=56, ed=57, sig=114),
    # lime 5.4: X25519 + Kyber-512 / ML-KEM-512 (800-byte KEM key), X448 + ML-KEM-1024 (1568)
    Curve.C25519K512: KeySizes(x=32 + 800, ed=32, sig=64),
    Curve.C25519MLK512: KeySizes(x=32 + 800, ed=32, sig=64),
    Curve.C448MLK1024: KeySizes(x=56 + 1568, ed=57, sig=114),
}


class X3DHParseError(LimeError, ValueError):
    """A message does not follow the wire format; ``code`` is the error code a server answers.

    ``curve`` is the raw curve byte of the message (0 when the header was too short), so a
    server can echo it in its error answer.
    """

    def __init__(self, message: str, code: ErrorCode, curve: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.curve = curve


def encode_device_id(device_id: str) -> bytes:
    """The wire bytes of a device id (UTF-8; lone surrogates map back to the original bytes)."""
    return device_id.encode("utf-8", "surrogateescape")


def decode_device_id(raw: bytes) -> str:
    """A device id from its wire bytes; never fails, and round-trips through encode_device_id."""
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class OPk:
    """A one-time prekey: public X key and its 32-bit id."""

    public: bytes = field(repr=False)
    id: int


def _header(msg_type: MessageType, curve: Curve) -> bytes:
    return bytes((PROTOCOL_VERSION, msg_type, curve))


def _u16(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise ValueError(f"{n} does not fit a 16-bit field (count or device id length)")
    return struct.pack(">H", n)


def _u32(n: int) -> bytes:
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"{n} does not fit a 32-bit key id")
    return struct.pack(">I", n)


def _opks_bytes(opks: tuple[OPk, ...]) -> bytes:
    return _u16(len(opks)) + b"".join(o.public + _u32(o.id) for o in opks)


@dataclass(frozen=True)
class RegisterUser:
    """registerUser (0x09): publish a device's identity key, signed prekey and first OPks."""

    curve: Curve
    ik: bytes = field(repr=False)
    spk: bytes = field(repr=False)
    spk_sig: bytes = field(repr=False)
    spk_id: int
    opks: tuple[OPk, ...] = ()

    def to_bytes(self) -> bytes:
        """The wire message."""
        return (
            _header(MessageType.REGISTER_USER, self.curve)
            + self.ik
            + self.spk
            + self.spk_sig
            + _u32(self.spk_id)
            + _opks_bytes(self.opks)
        )


@dataclass(frozen=True)
class DeprecatedRegisterUser:
    """The deprecated registerUser (0x01), identity key only; lime 5.1.64 never sends it."""

    curve: Curve
    ik: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """The wire message."""
        return _header(MessageType.DEPRECATED_REGISTER_USER, self.curve) + self.ik


@dataclass(frozen=True)
class DeleteUser:
    """deleteUser (0x02): remove the sending device and its keys."""

    curve: Curve

    def to_bytes(self) -> bytes:
        """The wire message."""
        return _header(MessageType.DELETE_USER, self.curve)


@dataclass(frozen=True)
class PostSPk:
    """postSPk (0x03): replace the sending device's signed prekey (signature before id)."""

    curve: Curve
    spk: bytes = field(repr=False)
    spk_sig: bytes = field(repr=False)
    spk_id: int

    def to_bytes(self) -> bytes:
        """The wire message."""
        return (
            _header(MessageType.POST_SPK, self.curve) + self.spk + self.spk_sig + _u32(self.spk_id)
        )


@dataclass(frozen=True)
class PostOPks:
    """postOPks (0x04): add one-time prekeys for the sending device."""

    curve: Curve
    opks: tuple[OPk, ...]

    def to_bytes(self) -> bytes:
        """The wire message."""
        return _header(MessageType.POST_OPKS, self.curve) + _opks_bytes(self.opks)


@dataclass(frozen=True)
class GetPeerBundle:
    """getPeerBundle (0x05): ask for the key bundles of these devices."""

    curve: Curve
    device_ids: tuple[str, ...]

    def to_bytes(self) -> bytes:
        """The wire message."""
        parts = [_header(MessageType.GET_PEER_BUNDLE, self.curve), _u16(len(self.device_ids))]
        for device_id in self.device_ids:
            raw = encode_device_id(device_id)
            parts.append(_u16(len(raw)) + raw)
        return b"".join(parts)


@dataclass(frozen=True)
class GetSelfOPks:
    """getSelfOPks (0x07): ask which of the sending device's OPk ids the server still holds."""

    curve: Curve

    def to_bytes(self) -> bytes:
        """The wire message."""
        return _header(MessageType.GET_SELF_OPKS, self.curve)


@dataclass(frozen=True)
class Bundle:
    """One peerBundle entry: the device's keys, or none (flag 2) when the server does not know it."""

    device_id: str
    ik: bytes | None = field(default=None, repr=False)
    spk: bytes | None = field(default=None, repr=False)
    spk_id: int | None = None
    spk_sig: bytes | None = field(default=None, repr=False)
    opk: OPk | None = None

    @property
    def flag(self) -> BundleFlag:
        """The entry's flag byte."""
        if self.ik is None:
            return BundleFlag.NO_BUNDLE
        return BundleFlag.WITH_OPK if self.opk is not None else BundleFlag.NO_OPK

    def to_bytes(self) -> bytes:
        """The entry on the wire; note that the SPk id comes before the signature here."""
        raw = encode_device_id(self.device_id)
        out = _u16(len(raw)) + raw + bytes((self.flag,))
        if self.ik is None:
            return out
        assert self.spk is not None and self.spk_sig is not None and self.spk_id is not None
        out += self.ik + self.spk + _u32(self.spk_id) + self.spk_sig
        if self.opk is not None:
            out += self.opk.public + _u32(self.opk.id)
        return out


@dataclass(frozen=True)
class PeerBundle:
    """peerBundle (0x06): the answer to getPeerBundle, one entry per requested id, in order."""

    curve: Curve
    bundles: tuple[Bundle, ...]

    def to_bytes(self) -> bytes:
        """The wire message."""
        return (
            _header(MessageType.PEER_BUNDLE, self.curve)
            + _u16(len(self.bundles))
            + b"".join(b.to_bytes() for b in self.bundles)
        )


@dataclass(frozen=True)
class SelfOPks:
    """selfOPks (0x08): the OPk ids the server still holds for the requesting device."""

    curve: Curve
    opk_ids: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """The wire message."""
        return (
            _header(MessageType.SELF_OPKS, self.curve)
            + _u16(len(self.opk_ids))
            + b"".join(_u32(i) for i in self.opk_ids)
        )


@dataclass(frozen=True)
class Ack:
    """A success answer: the bare header of the request type (registerUser, deleteUser, ...)."""

    curve: Curve
    type: MessageType

    def to_bytes(self) -> bytes:
        """The wire message."""
        return _header(self.type, self.curve)


@dataclass(frozen=True)
class ErrorMessage:
    """error (0xFF): ``code`` and a UTF-8 text that lime only logs.

    ``curve`` is a raw byte rather than a :class:`Curve`: a server echoes whatever curve byte
    the faulty request carried (0 when there was none).
    """

    curve: int
    code: int
    text: str = ""

    def to_bytes(self) -> bytes:
        """The wire message."""
        return bytes(
            (PROTOCOL_VERSION, MessageType.ERROR, self.curve & 0xFF, self.code & 0xFF)
        ) + self.text.encode("utf-8", "replace")


Request = (
    RegisterUser
    | DeprecatedRegisterUser
    | DeleteUser
    | PostSPk
    | PostOPks
    | GetPeerBundle
    | GetSelfOPks
)
Response = Ack | PeerBundle | SelfOPks | ErrorMessage

# ---------------------------------------------------------------------------- parsing


class _Reader:
    """Reads fields off a message, raising bad_size when it runs out."""

    def __init__(self, data: bytes, curve: int, what: str) -> None:
        self.data = data
        self.pos = _HEADER_SIZE
        self.curve = curve
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise X3DHParseError(
                f"{self.what}: message too short for {field_name}", ErrorCode.BAD_SIZE, self.curve
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def u16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "big")

    def u32(self, field_name: str) -> int:
        return int.from_bytes(self.take(4, field_name), "big")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def end(self) -> None:
        """Refuse trailing bytes: the announced counts disagree with the body."""
        if self.pos != len(self.data):
            raise X3DHParseError(
                f"{self.what}: {len(self.data) - self.pos} bytes after the announced content",
                ErrorCode.BAD_REQUEST,
                self.curve,
            )

    def opks(self, sizes: KeySizes) -> tuple[OPk, ...]:
        count = self.u16("OPk count")
        need = count * (sizes.x + 4)
        if self.remaining() < need:
            raise X3DHParseError(
                f"{self.what}: {count} OPks announced, body holds {self.remaining()} bytes",
                ErrorCode.BAD_SIZE,
                self.curve,
            )
        return tuple(OPk(self.take(sizes.x, "OPk"), self.u32("OPk id")) for _ in range(count))


def _parse_header(body: bytes, direction: str) -> tuple[int, Curve]:
    """Check version and curve; return (raw type byte, curve)."""
    if len(body) < _HEADER_SIZE:
        raise X3DHParseError(f"{direction} shorter than the 3-byte header", ErrorCode.BAD_SIZE, 0)
    version, msg_type, curve_byte = body[0], body[1], body[2]
    if version != PROTOCOL_VERSION:
        raise X3DHParseError(
            f"unsupported X3DH protocol version {version}",
            ErrorCode.BAD_X3DH_PROTOCOL_VERSION,
            curve_byte,
        )
    try:
        curve = Curve(curve_byte)
    except ValueError:
        raise X3DHParseError(
            f"curve id {curve_byte} is not served", ErrorCode.BAD_CURVE, curve_byte
        ) from None
    return msg_type, curve


def parse_request(body: bytes) -> Request:
    """Parse a client→server message.

    Raises:
        X3DHParseError: with the error code a server answers (bad_size for a body shorter than
            its fields, bad_request for trailing bytes, a zero-id bundle request or a type that
            is not a request, bad_curve, bad_x3dh_protocol_version).
    """
    body = bytes(body)
    msg_type, curve = _parse_header(body, "request")
    sizes = KEY_SIZES[curve]
    request: Request
    if msg_type == MessageType.REGISTER_USER:
        r = _Reader(body, curve, "registerUser")
        request = RegisterUser(
            curve,
            ik=r.take(sizes.ed, "Ik"),
            spk=r.take(sizes.x, "SPk"),
            spk_sig=r.take(sizes.sig, "SPk signature"),
            spk_id=r.u32("SPk id"),
            opks=r.opks(sizes),
        )
    elif msg_type == MessageType.DELETE_USER:
        r = _Reader(body, curve, "deleteUser")
        request = DeleteUser(curve)
    elif msg_type == MessageType.POST_SPK:
        r = _Reader(body, curve, "postSPk")
        request = PostSPk(
            curve,
            spk=r.take(sizes.x, "SPk"),
            spk_sig=r.take(sizes.sig, "SPk signature"),
            spk_id=r.u32("SPk id"),
        )
    elif msg_type == MessageType.POST_OPKS:
        r = _Reader(body, curve, "postOPks")
        request = PostOPks(curve, r.opks(sizes))
    elif msg_type == MessageType.GET_PEER_BUNDLE:
        r = _Reader(body, curve, "getPeerBundle")
        count = r.u16("device count")
        if count == 0:
            raise X3DHParseError(
                "getPeerBundle: no device id requested", ErrorCode.BAD_REQUEST, curve
            )
        ids = []
        for i in range(count):
            length = r.u16(f"length of device id {i + 1} of {count}")
            ids.append(decode_device_id(r.take(length, f"device id {i + 1} of {count}")))
        request = GetPeerBundle(curve, tuple(ids))
    elif msg_type == MessageType.GET_SELF_OPKS:
        r = _Reader(body, curve, "getSelfOPks")
        request = GetSelfOPks(curve)
    elif msg_type == MessageType.DEPRECATED_REGISTER_USER:
        r = _Reader(body, curve, "deprecated registerUser")
        request = DeprecatedRegisterUser(curve, r.take(sizes.ed, "Ik"))
    else:
        raise X3DHParseError(
            f"message type 0x{msg_type:02x} is not a request", ErrorCode.BAD_REQUEST, curve
        )
    r.end()
    return request


def parse_response(body: bytes) -> Response:
    """Parse a server→client message the way lime 5.1.64 does (bytes after it are ignored).

    Raises:
        X3DHParseError: for anything lime would reject (short or truncated message, bad flag,
            wrong version or curve, an error message without its code byte, a type that is
            not a response).
    """
    return parse_response_size(body)[0]


def parse_response_size(body: bytes) -> tuple[Response, int]:
    """:func:`parse_response`, and how many bytes the message takes (the rest is trailing)."""
    body = bytes(body)
    msg_type, curve = _parse_header(body, "response")
    sizes = KEY_SIZES[curve]
    if msg_type in (
        MessageType.REGISTER_USER,
        MessageType.DELETE_USER,
        MessageType.POST_SPK,
        MessageType.POST_OPKS,
    ):
        return Ack(curve, MessageType(msg_type)), _HEADER_SIZE
    if msg_type == MessageType.ERROR:
        r = _Reader(body, curve, "error")
        code = r.u8("error code")
        text = body[r.pos :].rstrip(b"\x00").decode("utf-8", "replace")
        return ErrorMessage(curve, code, text), len(body)
    if msg_type == MessageType.SELF_OPKS:
        r = _Reader(body, curve, "selfOPks")
        count = r.u16("OPk count")
        return SelfOPks(curve, tuple(r.u32("OPk id") for _ in range(count))), r.pos
    if msg_type == MessageType.PEER_BUNDLE:
        r = _Reader(body, curve, "peerBundle")
        count = r.u16("bundle count")
        bundles = []
        for _ in range(count):
            device_id = decode_device_id(r.take(r.u16("device id length"), "device id"))
            flag = r.u8("bundle flag")
            if flag == BundleFlag.NO_BUNDLE:
                bundles.append(Bundle(device_id))
                continue
            if flag not in (BundleFlag.NO_OPK, BundleFlag.WITH_OPK):
                raise X3DHParseError(f"peerBundle: bad flag {flag}", ErrorCode.BAD_REQUEST, curve)
            ik = r.take(sizes.ed, "Ik")
            spk = r.take(sizes.x, "SPk")
            spk_id = r.u32("SPk id")
            spk_sig = r.take(sizes.sig, "SPk signature")
            opk = None
            if flag == BundleFlag.WITH_OPK:
                opk = OPk(r.take(sizes.x, "OPk"), r.u32("OPk id"))
            bundles.append(Bundle(device_id, ik, spk, spk_id, spk_sig, opk))
        return PeerBundle(curve, tuple(bundles)), r.pos
    raise X3DHParseError(
        f"message type 0x{msg_type:02x} is not a response", ErrorCode.BAD_REQUEST, curve
    )
