"""Shared fuzzing machinery: structured mutations of genuine lime messages, and one check per target.

Used by the hypothesis tests in this directory and by ``scripts/soak_fuzz``. A *recipe* is a
JSON-able list of operations on the regions of a genuine message (header fields, X3DH init,
DR payload and tag, cipher message), so a crashing input can be kept as a regression case
and replayed against a fresh session: offsets are computed from the message's structure,
never from absolute positions.

Each ``check_*`` function returns an outcome name and raises :class:`Finding` when an
invariant breaks: an exception outside the documented tree, a mutated message accepted, a
database changed by a failed decryption, or a session that no longer decrypts the next
genuine message.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pylime import errors
from pylime.keyserver import KeyServer
from pylime.keyserver.protocol import X3DHParseError, parse_request, parse_response
from pylime.linphone import errors as linphone_errors
from pylime.linphone.envelope import content_type_for, parse_envelope
from pylime.reference import encoding
from pylime.types import Curve, Policy

URL = "https://keys.example.org:25519/lime-server"
TAG = 16
# (x public key size, Ed public key size) per curve (lime-wire.md §1.1)
SIZES = {Curve.C25519: (32, 32), Curve.C448: (56, 57)}

# X25519 / X448 public keys a careless implementation mishandles: zero, one, the field
# prime and its neighbours, and points of small order (little-endian u coordinates).
_P25519 = (1 << 255) - 19
_P448 = (1 << 448) - (1 << 224) - 1
BAD_POINTS = {
    Curve.C25519: [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        (_P25519 - 1).to_bytes(32, "little"),
        _P25519.to_bytes(32, "little"),
        (_P25519 + 1).to_bytes(32, "little"),
        b"\xff" * 32,
    ],
    Curve.C448: [
        bytes(56),
        (1).to_bytes(56, "little"),
        (_P448 - 1).to_bytes(56, "little"),
        _P448.to_bytes(56, "little"),
        (_P448 + 1).to_bytes(56, "little"),
        b"\xff" * 56,
    ],
}
INTERESTING_INTS = [0, 1, 2, 127, 128, 255, 256, 999, 1000, 1023, 1024, 1025, 0x7FFF, 0x8000,
                    0xFFFE, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]

#: The exceptions a decrypt may raise on hostile input (the documented tree).
DECRYPT_ERRORS = (errors.LimeError,)
#: The reference parsers document MalformedMessageError and X3DHParseError, both LimeErrors.
PARSER_ERRORS = (errors.LimeError,)
ENVELOPE_ERRORS = (linphone_errors.LinphoneError,)


class Finding(AssertionError):
    """An invariant broke: the input is kept as a regression case."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


# --------------------------------------------------------------------------- regions


def regions(dr: bytes, cipher: bytes, curve: Curve) -> dict[str, tuple[str, int, int]]:
    """Name -> (buffer, start, length) of every field of a genuine message."""
    x, e = SIZES[curve]
    out: dict[str, tuple[str, int, int]] = {
        "version": ("dr", 0, 1), "type": ("dr", 1, 1), "curve": ("dr", 2, 1)}
    pos = 3
    if dr[1] & 1:
        with_opk = dr[3] == 1
        out["x3dh.flag"] = ("dr", 3, 1)
        out["x3dh.ik"] = ("dr", 4, e)
        out["x3dh.ek"] = ("dr", 4 + e, x)
        out["x3dh.spk_id"] = ("dr", 4 + e + x, 4)
        pos = 4 + e + x + 4
        if with_opk:
            out["x3dh.opk_id"] = ("dr", pos, 4)
            pos += 4
        out["x3dh"] = ("dr", 3, pos - 3)
    out["ns"] = ("dr", pos, 2)
    out["pn"] = ("dr", pos + 2, 2)
    out["dhs"] = ("dr", pos + 4, x)
    header_end = pos + 4 + x
    out["header"] = ("dr", 0, header_end)
    out["payload"] = ("dr", header_end, len(dr) - header_end - TAG)
    out["tag"] = ("dr", len(dr) - TAG, TAG)
    if cipher:
        out["cipher"] = ("cipher", 0, len(cipher) - TAG)
        out["cipher.tag"] = ("cipher", len(cipher) - TAG, TAG)
    return out


def random_recipe(rng: random.Random, dr: bytes, cipher: bytes, curve: Curve) -> list[list[Any]]:
    """One to three operations on the regions of this message."""
    regs = regions(dr, cipher, curve)
    names = sorted(regs)
    ops: list[list[Any]] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(["flip", "flip", "set", "fill", "int", "point", "truncate", "extend",
                           "delete", "dup", "swap", "drop_cipher", "add_cipher", "random",
                           "type_bits"])
        name = rng.choice(names)
        length = regs[name][2]
        if kind == "flip":
            ops.append(["flip", name, rng.randrange(max(length, 1)), 1 << rng.randrange(8)])
        elif kind == "set":
            ops.append(["set", name, rng.randrange(max(length, 1)), rng.randrange(256)])
        elif kind == "fill":
            ops.append(["fill", name, rng.choice([0, 0xFF, rng.randrange(256)])])
        elif kind == "int":
            name = rng.choice([n for n in ("ns", "pn", "x3dh.spk_id", "x3dh.opk_id", "curve",
                                           "version", "x3dh.flag") if n in regs])
            ops.append(["int", name, rng.choice(INTERESTING_INTS + [rng.randrange(1 << 32)])])
        elif kind == "point":
            name = rng.choice([n for n in ("dhs", "x3dh.ek", "x3dh.ik") if n in regs])
            ops.append(["point", name, rng.randrange(len(BAD_POINTS[curve]))])
        elif kind == "truncate":
            which = rng.choice(["dr", "cipher"] if cipher else ["dr"])
            size = len(dr) if which == "dr" else len(cipher)
            ops.append(["truncate", which, rng.choice([0, 1, 2, 3, 7, size - 1, size - TAG,
                                                       size - TAG - 1, rng.randrange(size + 1)])])
        elif kind == "extend":
            ops.append(["extend", rng.choice(["dr", "cipher"]),
                        rng.randbytes(rng.choice([1, 2, 16, 17, rng.randrange(300)])).hex()])
        elif kind == "delete":
            ops.append(["delete", name])
        elif kind == "dup":
            ops.append(["dup", name])
        elif kind == "swap":
            ops.append(["swap"])
        elif kind == "drop_cipher":
            ops.append(["drop_cipher"])
        elif kind == "add_cipher":
            ops.append(["add_cipher", rng.randbytes(rng.choice([0, 15, 16, 17, 48])).hex()])
        elif kind == "random":
            ops.append(["random", rng.choice(["dr", "cipher"]),
                        rng.choice([0, 3, 38, 39, 63, 107, 108, 112, len(dr), len(dr) + 1])])
        else:
            ops.append(["type_bits", rng.randrange(256)])
    return ops


def apply_recipe(recipe: list[list[Any]], dr: bytes, cipher: bytes,
                 curve: Curve) -> tuple[bytes, bytes]:
    """Apply field operations first (on the original layout), then the structural ones."""
    regs = regions(dr, cipher, curve)
    bufs = {"dr": bytearray(dr), "cipher": bytearray(cipher)}
    structural = []
    for op in recipe:
        kind = op[0]
        if kind in ("flip", "set", "fill", "int", "point"):
            if op[1] not in regs:
                continue
            which, start, length = regs[op[1]]
            buf = bufs[which]
            if length == 0:
                continue
            if kind == "flip":
                buf[start + op[2] % length] ^= op[3]
            elif kind == "set":
                buf[start + op[2] % length] = op[3]
            elif kind == "fill":
                buf[start:start + length] = bytes([op[2]]) * length
            elif kind == "int":
                buf[start:start + length] = (op[2] % (1 << (8 * length))).to_bytes(length, "big")
            else:
                point = BAD_POINTS[curve][op[2] % len(BAD_POINTS[curve])]
                buf[start:start + length] = point[:length].ljust(length, b"\0")
        elif kind == "type_bits":
            bufs["dr"][1] = op[1]
        else:
            structural.append(op)
    for op in structural:
        kind = op[0]
        if kind == "truncate":
            del bufs[op[1]][max(op[2], 0):]
        elif kind == "extend":
            bufs[op[1]] += bytes.fromhex(op[2])
        elif kind in ("delete", "dup"):
            if op[1] not in regs:
                continue
            which, start, length = regs[op[1]]
            chunk = bytes(dr if which == "dr" else cipher)[start:start + length]
            buf = bufs[which]
            if kind == "delete":
                del buf[start:start + length]
            else:
                buf[start:start] = chunk
        elif kind == "swap":
            bufs["dr"], bufs["cipher"] = bufs["cipher"], bufs["dr"]
        elif kind == "drop_cipher":
            bufs["cipher"] = bytearray()
        elif kind == "add_cipher":
            bufs["cipher"] += bytes.fromhex(op[1])
        elif kind == "random":
            bufs[op[1]] = bytearray(random.Random(len(recipe) * 7919 + op[2]).randbytes(op[2]))
    return bytes(bufs["dr"]), bytes(bufs["cipher"])


def dr_equivalent(dr: bytes, cipher: bytes, new_dr: bytes, curve: Curve) -> bool:
    """True when lime reads the mutated DR message exactly as the genuine one.

    In cipherMessage mode lime reads the 32-byte encrypted seed right after the header and
    the tag from the very end of the DR message, and ignores any bytes in between
    (docs/security.md, "Malleability").
    """
    if new_dr == dr:
        return True
    if not cipher:
        return False
    seed_end = regions(dr, cipher, curve)["header"][2] + 32
    return (len(new_dr) > len(dr) and new_dr[:seed_end] == dr[:seed_end]
            and new_dr[-TAG:] == dr[-TAG:])


def junk_before_tag(dr: bytes, cipher: bytes, new_dr: bytes, new_cipher: bytes,
                    curve: Curve) -> bool:
    """The mutated message differs from the genuine one only by bytes lime ignores."""
    return new_cipher == cipher and new_dr != dr and dr_equivalent(dr, cipher, new_dr, curve)


def consumes_key(dr: bytes, cipher: bytes, new_dr: bytes, new_cipher: bytes,
                 curve: Curve) -> bool:
    """True when lime's documented quirk applies (lime-wire.md §3.8 step 8).

    The DR message reads as the genuine one and authenticates against the cipher message's
    tag, so lime decrypts the seed and saves the session, then fails on the altered cipher
    body: that message key is gone and the genuine message will fail as a replay.
    """
    return (bool(cipher) and len(new_cipher) >= TAG and new_cipher[-TAG:] == cipher[-TAG:]
            and new_cipher != cipher and dr_equivalent(dr, cipher, new_dr, curve))


# --------------------------------------------------------------------------- a pair of devices


def db_dump(path: str) -> list[str]:
    """The SQL dump of a database, read through a separate connection."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return list(db.iterdump())


@dataclass
class Message:
    """A genuine message and what it must decrypt to."""

    dr: bytes
    cipher: bytes
    plaintext: bytes
    stage: str


class Pair:
    """Alice sends to Bob; Bob's decrypt is the target. Both on one in-memory key server."""

    _ids = itertools.count(1)

    def __init__(self, factory: Callable[..., Any], curve: Curve, directory: str,
                 server: KeyServer | None = None) -> None:
        n = next(self._ids)
        self.curve = curve
        self.server = server if server is not None else KeyServer()
        self.alice_id = f"sip:alice@example.org;gr=urn:uuid:a-{os.getpid()}-{n}"
        self.bob_id = f"sip:bob@example.org;gr=urn:uuid:b-{os.getpid()}-{n}"
        self.alice_path = os.path.join(directory, f"alice-{n}.sqlite3")
        self.bob_path = os.path.join(directory, f"bob-{n}.sqlite3")
        self.alice = factory(self.alice_path, transport=self.server)
        self.bob = factory(self.bob_path, transport=self.server)
        self.alice.create_user(self.alice_id, URL, curve)
        self.bob.create_user(self.bob_id, URL, curve)
        self.sent = 0
        self.replied = False

    def next_message(self, policy: Policy, size: int = 20) -> Message:
        """Alice's next message; after her third, Bob replies once (the X3DH init disappears)."""
        if self.sent == 3 and not self.replied:
            out = self.bob.encrypt(self.bob_id, "sip:alice@example.org", [self.alice_id], b"re")
            r = out.recipients[0]
            self.alice.decrypt(self.alice_id, "sip:alice@example.org", self.bob_id,
                               r.dr_message, out.cipher_message)
            self.replied = True
        plaintext = os.urandom(size)
        out = self.alice.encrypt(self.alice_id, "sip:bob@example.org", [self.bob_id],
                                 plaintext, policy=policy)
        r = out.recipients[0]
        stage = "x3dh" if r.dr_message[1] & 1 else "chain"
        self.sent += 1
        return Message(r.dr_message, out.cipher_message, plaintext, stage)

    def decrypt(self, dr: bytes, cipher: bytes) -> Any:
        return self.bob.decrypt(self.bob_id, "sip:bob@example.org", self.alice_id, dr, cipher)

    def close(self) -> None:
        self.alice.close()
        self.bob.close()
        for path in (self.alice_path, self.bob_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def check_mutated_decrypt(pair: Pair, msg: Message, recipe: list[list[Any]],
                          compare_db: bool = False) -> str:
    """Decrypt one mutated message: a typed error, or the genuine plaintext if nothing changed.

    Returns "identity" (the recipe changed nothing), "refused", "consumed" (the documented
    cipher-message quirk), "junk-accepted" (the documented cipherMessage-mode malleability)
    or raises :class:`Finding`.
    """
    dr, cipher = apply_recipe(recipe, msg.dr, msg.cipher, pair.curve)
    if (dr, cipher) == (msg.dr, msg.cipher):
        return "identity"
    before = db_dump(pair.bob_path) if compare_db else None
    try:
        result = pair.decrypt(dr, cipher)
    except DECRYPT_ERRORS:
        pass
    except BaseException as exc:
        raise Finding("untyped-exception", f"{type(exc).__name__}: {exc}") from exc
    else:
        if junk_before_tag(msg.dr, msg.cipher, dr, cipher, pair.curve) \
                and result.plaintext == msg.plaintext:
            return "junk-accepted"
        raise Finding("accepted-mutation",
                      f"a mutated message decrypted ({len(result.plaintext)} bytes)")
    if consumes_key(msg.dr, msg.cipher, dr, cipher, pair.curve):
        return "consumed"
    if before is not None and db_dump(pair.bob_path) != before:
        raise Finding("state-change", "a failed decryption changed the database")
    return "refused"


def check_genuine(pair: Pair, msg: Message, consumed: bool) -> None:
    """The genuine message still decrypts (or is a replay, if the quirk consumed its key)."""
    if consumed:
        try:
            pair.decrypt(msg.dr, msg.cipher)
        except DECRYPT_ERRORS:
            return
        raise Finding("replay-accepted", "a consumed message decrypted again")
    try:
        result = pair.decrypt(msg.dr, msg.cipher)
    except BaseException as exc:
        raise Finding("session-wedged",
                      f"the genuine {msg.stage} message no longer decrypts: "
                      f"{type(exc).__name__}: {exc}") from exc
    if result.plaintext != msg.plaintext:
        raise Finding("wrong-plaintext", "the genuine message decrypted to something else")


def replay_decrypt_case(factory: Callable[..., Any], case: dict[str, Any]) -> str:
    """Replay a kept decrypt case: rebuild its stage on a fresh pair, apply its recipe, check."""
    curve = Curve(case["curve"])
    policy = Policy(case["policy"])
    with tempfile.TemporaryDirectory() as directory:
        pair = Pair(factory, curve, directory)
        try:
            msg = pair.next_message(policy, case.get("size", 20))
            while msg.stage != case["stage"]:
                pair.decrypt(msg.dr, msg.cipher)
                msg = pair.next_message(policy, case.get("size", 20))
            outcome = check_mutated_decrypt(pair, msg, case["recipe"], compare_db=True)
            check_genuine(pair, msg, outcome == "consumed")
            return outcome
        finally:
            pair.close()


# --------------------------------------------------------------------------- byte targets


def check_reference_parsers(data: bytes) -> str:
    """Every parser in pylime.reference.encoding: a LimeError, or a faithful parse."""
    if not data:
        return "empty"
    selector, body = data[0], data[1:]
    curve = (None, Curve.C25519, Curve.C448)[selector % 3]
    try:
        which = (selector >> 2) % 6
        if which == 0:
            header, size = encoding.parse_dr_header(body, curve)
            if header.to_bytes() != body[:size]:
                raise Finding("round-trip", "parse_dr_header(b).to_bytes() != b[:size]")
        elif which == 1:
            msg = encoding.parse_dr_message(body, curve)
            if msg.to_bytes() != body:
                raise Finding("round-trip", "parse_dr_message(b).to_bytes() != b")
        elif which == 2:
            init = encoding.parse_x3dh_init(body, curve or Curve.C25519)
            if init.to_bytes() != body[:len(init.to_bytes())]:
                raise Finding("round-trip", "parse_x3dh_init(b).to_bytes() is not a prefix of b")
        elif which == 3:
            text, tag = encoding.parse_cipher_message(body)
            if text + tag != body or len(tag) != TAG:
                raise Finding("round-trip", "parse_cipher_message split wrongly")
        elif which == 4:
            request = parse_request(body)
            if parse_request(request.to_bytes()) != request:
                raise Finding("round-trip", "parse_request(to_bytes()) differs")
        else:
            response = parse_response(body)
            if parse_response(response.to_bytes()) != response:
                raise Finding("round-trip", "parse_response(to_bytes()) differs")
    except PARSER_ERRORS:
        return "refused"
    except Finding:
        raise
    except BaseException as exc:
        raise Finding("untyped-exception", f"{type(exc).__name__}: {exc}") from exc
    return "parsed"


VICTIM = "sip:victim@example.org;gr=urn:uuid:victim"
SENDERS = [VICTIM.replace("victim", "fuzzer"), VICTIM.replace("victim", "other"), "", "x" * 300,
           "sip:\u00e9@example.org;gr=\u2603"]
CONTENT_TYPES = ["x3dh/octet-stream", "x3dh/octet-stream; charset=binary", "text/plain", None]


class KeyServerTarget:
    """One key server holding a victim device whose keys the fuzzer must never damage."""

    def __init__(self) -> None:
        self.server = KeyServer()
        self.baseline: dict[int, bytes] = {}
        for curve in (Curve.C25519, Curve.C448):
            self.server.handle(VICTIM, _victim_register(curve))
            self.baseline[int(curve)] = self._victim_bundle(curve)

    def _victim_bundle(self, curve: Curve) -> bytes:
        id_bytes = VICTIM.encode()
        request = bytes((1, 0x05, int(curve))) + b"\x00\x01" + len(id_bytes).to_bytes(2, "big") \
            + id_bytes
        return self.server.handle(SENDERS[1], request)

    def check(self, data: bytes, verify_victim: bool = False) -> str:
        """handle() never raises and always answers a well-formed X3DH message."""
        if not data:
            return "empty"
        sender = SENDERS[data[0] % len(SENDERS)]
        content_type = CONTENT_TYPES[(data[0] >> 4) % len(CONTENT_TYPES)]
        try:
            answer = self.server.handle(sender, data[1:], content_type=content_type)
        except BaseException as exc:
            raise Finding("untyped-exception", f"handle raised {type(exc).__name__}: {exc}") \
                from exc
        if not isinstance(answer, bytes) or len(answer) < 3 or answer[0] != 1:
            raise Finding("malformed-answer", f"handle answered {answer[:8]!r}")
        if answer[1] == 0xFF:
            if len(answer) < 4:
                raise Finding("malformed-answer", "an error message without its code")
            outcome = f"error-0x{answer[3]:02x}"
        else:
            if answer[2] in (1, 2, 3, 4, 5):  # every curve the server serves
                try:
                    parse_response(answer)
                except X3DHParseError as exc:
                    raise Finding("malformed-answer", f"answer does not parse: {exc}") from exc
            outcome = "answered"
        if verify_victim:
            for curve in (Curve.C25519, Curve.C448):
                if self._victim_bundle(curve) != self.baseline[int(curve)]:
                    raise Finding("state-change", "another device's keys changed")
        return outcome


def _victim_register(curve: Curve) -> bytes:
    """A registerUser for the victim: fixed bytes (the server does not verify signatures)."""
    x, e = SIZES[curve]
    sig = 64 if curve == Curve.C25519 else 114
    return bytes((1, 0x09, int(curve))) + b"\x11" * e + b"\x22" * x + b"\x33" * sig \
        + (7).to_bytes(4, "big") + (0).to_bytes(2, "big")


ENVELOPE_CONTENT_TYPES = [
    content_type_for("b"),  # exactly what build_envelope sends
    'multipart/encrypted;boundary="b";protocol="application/lime"',
    "multipart/encrypted;boundary=b",
    'multipart/encrypted; protocol="application/lime"; boundary=--a',
    "multipart/encrypted",
    "multipart/mixed;boundary=b",
    "text/plain",
    'multipart/encrypted;boundary*=utf-8\'\'%e2%98%83;protocol="application/lime"',
]
ENCODINGS = [None, "deflate", "identity", "gzip", " Deflate "]


def check_envelope(data: bytes) -> str:
    """parse_envelope: one of pylime.linphone's documented errors, or an envelope."""
    if not data:
        return "empty"
    selector, body = data[0], data[1:]
    content_type = ENVELOPE_CONTENT_TYPES[selector % len(ENVELOPE_CONTENT_TYPES)]
    encoding_name = ENCODINGS[(selector >> 3) % len(ENCODINGS)]
    try:
        env = parse_envelope(content_type, body, encoding_name)
    except ENVELOPE_ERRORS:
        return "refused"
    except BaseException as exc:
        raise Finding("untyped-exception", f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(env.cipher_message, bytes) or not isinstance(env.sender, str):
        raise Finding("bad-result", "parse_envelope returned a malformed Envelope")
    for part in env.key_parts:
        if env.dr_message_for(part.device_id) != part.dr_message:
            raise Finding("bad-result", "dr_message_for disagrees with key_parts")
    return "parsed"


def envelope_seeds() -> Iterator[bytes]:
    """Genuine envelopes (plain and deflated) to start mutating from."""
    from pylime.linphone.envelope import Envelope, KeyPart, build_envelope

    keys = tuple(KeyPart(f"sip:bob@example.org;gr=urn:uuid:{i}", os.urandom(40 + i))
                 for i in range(3))
    for deflate, mid in ((False, "id1"), (True, "id2"), (False, None)):
        env = Envelope(sender="sip:alice@example.org;gr=urn:uuid:a", message_id=mid,
                       key_parts=keys, cipher_message=os.urandom(300) if deflate else b"x" * 30)
        built = build_envelope(env, boundary="b", deflate=deflate)
        content_type = ENVELOPE_CONTENT_TYPES.index(built.content_type)
        encoding_index = ENCODINGS.index(built.content_encoding)
        selector = next(x for x in range(256) if x % len(ENVELOPE_CONTENT_TYPES) == content_type
                        and (x >> 3) % len(ENCODINGS) == encoding_index)
        yield bytes([selector]) + built.body


# --------------------------------------------------------------------------- the known lime crash

_SCALAR = {Curve.C25519: bytes([0x48] + [0x11] * 30 + [0x51]), Curve.C448: b"\xfc" + b"\x11" * 55}


def is_low_order(curve: Curve, x_public: bytes) -> bool:
    """True when an X25519/X448 exchange with this public key gives the all-zero secret.

    decaf reports exactly this case as a failure, and bctoolbox 5.1.64's
    bctbx_ECDHComputeSecret then frees the shared-secret buffer and writes 32/56 zero bytes
    into it (a use-after-free that corrupts the heap).
    """
    from pylime.reference.primitives import dh

    try:
        dh(curve, _SCALAR[curve], x_public)
    except ValueError:
        return True
    return False


def low_order_fields(dr: bytes, curve: Curve) -> list[str]:
    """The fields of a DR message's header that carry a low-order point, as lime would read them.

    The Ik counts after lime's Ed→X conversion. Empty when the header does not parse.
    """
    from pylime.reference.primitives import ed_to_x_public

    try:
        header, _ = encoding.parse_dr_header(dr, curve)
    except errors.LimeError:
        return []
    found = []
    if is_low_order(curve, header.dhs):
        found.append("dhs")
    init = header.x3dh_init
    if init is not None:
        if is_low_order(curve, init.ek):
            found.append("x3dh.ek")
        try:
            if is_low_order(curve, ed_to_x_public(curve, init.ik)):
                found.append("x3dh.ik")
        except ValueError:
            pass
    return found
