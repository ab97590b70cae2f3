"""Hand-built X3DH wire messages for the key-server tests.

Built with plain byte concatenation from lime-wire.md §4.3, deliberately not with
pylime.keyserver.protocol, so the tests check the implementation against the spec.
Keys are recognisable filler (the server does not validate points or signatures).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pylime.types import Curve

# (X public, Ed public, signature) sizes per curve, lime-wire.md §4.3.
SIZES = {Curve.C25519: (32, 32, 64), Curve.C448: (56, 57, 114)}
CURVES = [Curve.C25519, Curve.C448]


def u16(n: int) -> bytes:
    return struct.pack(">H", n)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def hdr(msg_type: int, curve: int) -> bytes:
    return bytes((0x01, msg_type, curve))


@dataclass
class Device:
    """A fake device: its id and filler keys whose bytes depend on a seed."""

    device_id: str
    curve: Curve
    seed: int = 1

    @property
    def x(self) -> int:
        return SIZES[self.curve][0]

    @property
    def ik(self) -> bytes:
        return bytes([0x10 + self.seed]) * SIZES[self.curve][1]

    def spk(self, n: int = 0) -> bytes:
        return bytes([0x20 + self.seed + n]) * self.x

    def sig(self, n: int = 0) -> bytes:
        return bytes([0x30 + self.seed + n]) * SIZES[self.curve][2]

    def opk(self, opk_id: int) -> bytes:
        return (opk_id.to_bytes(4, "big") * 15)[: self.x]

    def opks(self, ids: range | list[int]) -> bytes:
        return u16(len(ids)) + b"".join(self.opk(i) + u32(i) for i in ids)

    def register(self, ids: range | list[int] = range(1, 6), spk_id: int = 7) -> bytes:
        return (
            hdr(0x09, self.curve) + self.ik + self.spk() + self.sig() + u32(spk_id) + self.opks(ids)
        )

    def post_spk(self, n: int, spk_id: int) -> bytes:
        return hdr(0x03, self.curve) + self.spk(n) + self.sig(n) + u32(spk_id)

    def post_opks(self, ids: range | list[int]) -> bytes:
        return hdr(0x04, self.curve) + self.opks(ids)

    def bundle(self, opk_id: int | None, spk_n: int = 0, spk_id: int = 7) -> bytes:
        """This device's expected peerBundle entry (SPk id before the signature)."""
        raw = self.device_id.encode()
        entry = u16(len(raw)) + raw
        if opk_id is None:
            entry += b"\x00"
        else:
            entry += b"\x01"
        entry += self.ik + self.spk(spk_n) + u32(spk_id) + self.sig(spk_n)
        if opk_id is not None:
            entry += self.opk(opk_id) + u32(opk_id)
        return entry


def get_bundles(curve: int, *device_ids: str) -> bytes:
    out = hdr(0x05, curve) + u16(len(device_ids))
    for d in device_ids:
        raw = d.encode()
        out += u16(len(raw)) + raw
    return out


def unknown_entry(device_id: str) -> bytes:
    raw = device_id.encode()
    return u16(len(raw)) + raw + b"\x02"


def error(curve: int, code: int) -> bytes:
    """The first four bytes of an error answer; the text after them is free."""
    return bytes((0x01, 0xFF, curve, code))
