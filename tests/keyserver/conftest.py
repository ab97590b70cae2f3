"""Fixtures for the key-server tests: a KeyServer on every storage backend, on both curves."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ks_wire, ks_pg helpers

from ks_servers import make_server

from pylime.keyserver import KeyServer
from pylime.types import Curve

BACKENDS = [
    "sqlite-memory",
    "sqlite-file",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def storage_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test."""
    return str(request.param)


@pytest.fixture
def server(storage_backend: str, tmp_path: Path) -> Iterator[KeyServer]:
    """A fresh KeyServer with default settings on each backend."""
    with make_server(storage_backend, tmp_path) as s:
        yield s


@pytest.fixture(params=[Curve.C25519, Curve.C448], ids=["c25519", "c448"])
def curve(request: pytest.FixtureRequest) -> Curve:
    """Each curve lime 5.1.64 supports."""
    return Curve(request.param)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 / localhost, made once per run."""
    from pylime.keyserver.tls import ensure_self_signed

    return ensure_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(
    params=["sqlite-file", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def served_backend(request: pytest.FixtureRequest) -> str:
    """The backends the HTTP tests run on (the in-memory one adds nothing over HTTP)."""
    return str(request.param)
