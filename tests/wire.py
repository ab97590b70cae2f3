"""Just enough of lime's DR header layout for tests to look inside messages."""

from __future__ import annotations

from pylime import Curve, Policy

X_SIZE = {Curve.C25519: 32, Curve.C448: 56}
ED_SIZE = {Curve.C25519: 32, Curve.C448: 57}


def has_x3dh_init(dr_message: bytes) -> bool:
    """True when the DR header carries an X3DH init (type bit 0)."""
    return bool(dr_message[1] & 0x01)


def header_size(dr_message: bytes, curve: Curve) -> int:
    """Length of the DR header, X3DH init included."""
    size = 7 + X_SIZE[curve]
    if has_x3dh_init(dr_message):
        size += 1 + ED_SIZE[curve] + X_SIZE[curve] + 4 + (4 if dr_message[3] == 1 else 0)
    return size


def ratchet_key(dr_message: bytes, curve: Curve) -> bytes:
    """The sender's current ratchet public key (DHs), the last field of the header."""
    end = header_size(dr_message, curve)
    return dr_message[end - X_SIZE[curve]:end]


def counters(dr_message: bytes, curve: Curve) -> tuple[int, int]:
    """(Ns, PN) from the header."""
    start = header_size(dr_message, curve) - X_SIZE[curve] - 4
    return (int.from_bytes(dr_message[start:start + 2], "big"),
            int.from_bytes(dr_message[start + 2:start + 4], "big"))


def expects_cipher_message(policy: Policy, recipients: int, size: int) -> bool:
    """lime 5.1.64's rule: does this policy use a shared cipher message?"""
    n, p = recipients, size
    if policy is Policy.DR_MESSAGE:
        return False
    if policy is Policy.CIPHER_MESSAGE:
        return True
    if policy is Policy.OPTIMIZE_UPLOAD_SIZE:
        return not n * p <= p + 16 + 32 * n
    return not 2 * n * p <= p + 16 + (2 * 32 + p + 16) * n
