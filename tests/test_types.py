"""The public surface: enum values match lime's header, exports are sorted and complete."""

from __future__ import annotations

import importlib

import pytest

import pylime
from pylime import Curve, PeerStatus, Policy
from tests.conftest import LIME_MISSING

C_NAMES = {
    Curve: "lime_ffi_CurveId_{}",
    PeerStatus: "lime_ffi_PeerDeviceStatus_{}",
    Policy: "lime_ffi_EncryptionPolicy_{}",
}
C_MEMBER = {
    "C25519": "c25519", "C448": "c448",
    "UNTRUSTED": "untrusted", "TRUSTED": "trusted", "UNSAFE": "unsafe", "FAIL": "fail",
    "UNKNOWN": "unknown",
    "DR_MESSAGE": "DRMessage", "CIPHER_MESSAGE": "cipherMessage",
    "OPTIMIZE_UPLOAD_SIZE": "optimizeUploadSize",
    "OPTIMIZE_GLOBAL_BANDWIDTH": "optimizeGlobalBandwidth",
}


@pytest.mark.skipif(bool(LIME_MISSING), reason=LIME_MISSING or "lime present")
@pytest.mark.parametrize("enum", [Curve, PeerStatus, Policy], ids=lambda e: e.__name__)
def test_enum_values_equal_the_compiled_ones(enum):
    """types.py's literal values are the values the C compiler gives lime's enums."""
    from pylime._lime import lib

    for member in enum:
        if enum is Curve and member.is_post_quantum:  # lime 5.4 ids, not in liblime 5.1.64
            continue
        assert getattr(lib, C_NAMES[enum].format(C_MEMBER[member.name])) == member.value


@pytest.mark.parametrize("module", ["pylime", "pylime.errors", "pylime.types", "pylime.results",
                                    "pylime.deviceid"])
def test_all_is_sorted_and_complete(module):
    """__all__ is sorted (constants first, as isort and ruff do) and every name it lists exists."""
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__, key=lambda n: (not n.isupper(), n))
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_every_error_derives_from_lime_error():
    """One exception tree: everything pylime raises is a LimeError."""
    from pylime import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.LimeError)
    assert pylime.LimeError is errors.LimeError
