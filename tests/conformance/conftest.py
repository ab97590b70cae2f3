"""Fixtures for the conformance suite: devices on liblime (the oracle) or on the reference.

Every pairing of backends is built on one in-memory key server. Without the compiled
``pylime._lime`` the whole suite skips with the reason.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pylime.keyserver import KeyServer
from pylime.reference import ReferenceManager
from pylime.types import Curve, Policy

try:
    from pylime.manager import Manager
except ImportError as exc:  # pragma: no cover - only where _lime was never built
    Manager = None  # type: ignore[assignment,misc]
    LIME_MISSING = f"pylime._lime cannot be imported ({exc}); conformance needs liblime"
else:
    LIME_MISSING = ""

if LIME_MISSING:  # pragma: no cover
    pytest.skip(LIME_MISSING, allow_module_level=True)

URL = "https://keys.example.org:25519/lime-server"
FACTORIES: dict[str, Callable[..., Any]] = {"lime": Manager, "ref": ReferenceManager}
PAIRINGS = [("lime", "ref"), ("ref", "lime"), ("ref", "ref"), ("lime", "lime")]
_ids = itertools.count(1)


@dataclass
class Dev:
    """A device: its GRUU, its user's URI, its backend name and Manager."""

    device_id: str
    user: str
    kind: str
    manager: Any
    path: pathlib.Path

    def send(self, to: str, devices: Sequence[Dev], plaintext: bytes,
             policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> Any:
        """Encrypt to ``devices`` under recipient user id ``to``."""
        return self.manager.encrypt(self.device_id, to, [d.device_id for d in devices],
                                    plaintext, policy=policy)

    def open(self, to: str, sender: Dev, out: Any) -> Any:
        """Decrypt this device's part of an EncryptResult."""
        (mine,) = [r for r in out.recipients if r.device_id == self.device_id]
        return self.manager.decrypt(self.device_id, to, sender.device_id, mine.dr_message,
                                    out.cipher_message)

    def reopen(self, kind: str, transport: Any) -> None:
        """Close this device's manager and continue on the same database with ``kind``."""
        self.manager.close()
        self.kind = kind
        self.manager = FACTORIES[kind](self.path, transport=transport)


@dataclass
class Net:
    """Devices on one key server, each with its own database file."""

    directory: pathlib.Path
    server: KeyServer
    curve: Curve
    devices: list[Dev] = field(default_factory=list)

    def dev(self, name: str, kind: str, opk_batch: int = 100) -> Dev:
        """A registered device of user ``name`` on backend ``kind`` ("lime" or "ref")."""
        user = f"sip:{name}@example.org"
        device_id = f"{user};gr=urn:uuid:{next(_ids):08d}-0000-4000-8000-000000000000"
        path = self.directory / f"{name}-{len(self.devices)}-{kind}.sqlite3"
        manager = FACTORIES[kind](path, transport=self.server)
        manager.create_user(device_id, URL, self.curve, opk_batch=opk_batch)
        d = Dev(device_id, user, kind, manager, path)
        self.devices.append(d)
        return d

    def close(self) -> None:
        for d in self.devices:
            d.manager.close()


_SHM = pathlib.Path("/dev/shm")


@pytest.fixture
def fast_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A directory for databases, on tmpfs when there is one (liblime syncs every commit)."""
    if _SHM.is_dir() and os.access(_SHM, os.W_OK):
        with tempfile.TemporaryDirectory(dir=_SHM, prefix="pylime-conformance-") as d:
            yield pathlib.Path(d)
    else:
        yield tmp_path


@pytest.fixture
def net(fast_dir: pathlib.Path, curve: Curve) -> Iterator[Net]:
    """A fresh key server and a place for device databases, on each curve."""
    with KeyServer() as server:
        n = Net(fast_dir, server, curve)
        yield n
        n.close()


@pytest.fixture(params=PAIRINGS, ids=[f"{a}-{b}" for a, b in PAIRINGS])
def pairing(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(first, second) backend names: every pairing of liblime and the reference."""
    return request.param  # type: ignore[no-any-return]
