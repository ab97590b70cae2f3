"""Shared fixtures: curves, backends, an in-memory key server and a world of devices.

A test asks for ``world`` and builds the devices it needs with ``world.device("alice")``;
each device has its own database, as each phone would. The ``backend`` fixture runs a test
on every Manager implementation available (liblime's binding; the reference registers
itself in BACKENDS).
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from pylime import Curve, Policy
from pylime.keyserver import KeyServer

try:
    from pylime.manager import Manager
except ImportError as exc:  # pragma: no cover - only where _lime was never built
    Manager = None  # type: ignore[assignment,misc]
    LIME_MISSING = f"pylime._lime is not built ({exc}); run scripts/setup"
else:
    LIME_MISSING = ""

requires_lime = pytest.mark.skipif(bool(LIME_MISSING), reason=LIME_MISSING or "lime present")

#: name -> factory(path, transport) of a manager; the reference adds itself here.
BACKENDS: dict[str, Callable[..., Any]] = {}
if Manager is not None:
    BACKENDS["lime"] = Manager
try:  # the pure-Python backend, where it exists
    from pylime.reference import ReferenceManager  # type: ignore[attr-defined]
except ImportError:
    pass
else:
    BACKENDS["reference"] = ReferenceManager

SERVER_URL = "https://keys.example.org:25519/lime-server"
_uuids = itertools.count(1)


@pytest.fixture(params=[Curve.C25519, Curve.C448], ids=["c25519", "c448"])
def curve(request: pytest.FixtureRequest) -> Curve:
    """Each test that asks for a curve runs on both."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=sorted(BACKENDS) or ["lime"])
def backend(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A manager factory: each test that asks for a backend runs on every implementation."""
    if request.param not in BACKENDS:
        pytest.skip(LIME_MISSING)
    return BACKENDS[request.param]


@pytest.fixture
def server() -> Iterator[KeyServer]:
    """A fresh in-memory key server."""
    with KeyServer() as ks:
        yield ks


@dataclass
class Device:
    """One device of a user: its GRUU, its user's sip URI and its own Manager."""

    device_id: str
    user: str
    manager: Any

    def encrypt(self, to: str, devices: Sequence[Device], plaintext: bytes,
                policy: Policy = Policy.OPTIMIZE_UPLOAD_SIZE) -> Any:
        """Encrypt to ``devices`` under recipient user id ``to``."""
        return self.manager.encrypt(self.device_id, to, [d.device_id for d in devices],
                                    plaintext, policy=policy)

    def decrypt(self, to: str, sender: Device, dr_message: bytes,
                cipher_message: bytes = b"") -> Any:
        """Decrypt a message ``sender`` addressed to ``to``."""
        return self.manager.decrypt(self.device_id, to, sender.device_id, dr_message,
                                    cipher_message)

    def receive(self, to: str, sender: Device, out: Any) -> Any:
        """Decrypt this device's part of an EncryptResult."""
        (mine,) = [r for r in out.recipients if r.device_id == self.device_id]
        return self.decrypt(to, sender, mine.dr_message, out.cipher_message)


class World:
    """Devices sharing one key server (h11's ConnectionPair, grown to groups)."""

    def __init__(self, directory: pathlib.Path, transport: Any, curve: Curve,
                 factory: Callable[..., Any]) -> None:
        self.directory = directory
        self.transport = transport
        self.curve = curve
        self.factory = factory
        self.devices: list[Device] = []

    def device(self, name: str, domain: str = "example.org", create: bool = True,
               transport: Any = None) -> Device:
        """A new device of user ``name`` with its own database, registered unless told not to."""
        user = f"sip:{name}@{domain}"
        device_id = f"{user};gr=urn:uuid:00000000-0000-4000-8000-{next(_uuids):012d}"
        path = self.directory / f"{name}-{len(self.devices)}.sqlite3"
        manager = self.factory(path, transport=transport or self.transport)
        dev = Device(device_id, user, manager)
        self.devices.append(dev)
        if create:
            manager.create_user(device_id, SERVER_URL, self.curve)
        return dev

    def close(self) -> None:
        for dev in self.devices:
            dev.manager.close()


@pytest.fixture
def world(tmp_path: pathlib.Path, server: KeyServer, curve: Curve,
          backend: Callable[..., Any]) -> Iterator[World]:
    """Devices on one in-memory key server, on each curve and each backend."""
    w = World(tmp_path, server, curve, backend)
    yield w
    w.close()


@pytest.fixture
def lime_world(tmp_path: pathlib.Path, server: KeyServer, curve: Curve) -> Iterator[World]:
    """Like ``world``, on liblime's binding only: for tests of the binding's own machinery."""
    if Manager is None:
        pytest.skip(LIME_MISSING)
    w = World(tmp_path, server, curve, Manager)
    yield w
    w.close()
