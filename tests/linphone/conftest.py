"""Fixtures for pylime.linphone: phones on the stand-in lime (see helpers.py)."""

from __future__ import annotations

import pytest

from tests.linphone.helpers import ALICE_PHONE, BOB_PHONE, FakeLime


@pytest.fixture
def fake_alice() -> FakeLime:
    """Alice's phone on the stand-in lime."""
    return FakeLime(ALICE_PHONE)


@pytest.fixture
def fake_bob() -> FakeLime:
    """Bob's phone on the stand-in lime."""
    return FakeLime(BOB_PHONE)
