"""set_peer_status / peer_status / delete_peer follow liblime's rules on both backends (§7)."""

from __future__ import annotations

import pathlib
from typing import Any

from pylime import errors
from pylime.keyserver import KeyServer
from pylime.types import PeerStatus

from .conftest import FACTORIES

P = "sip:peer@example.org;gr=urn:uuid:7"
IK1, IK2 = b"\x11" * 32, b"\x22" * 32
T, U, X = PeerStatus.TRUSTED, PeerStatus.UNTRUSTED, PeerStatus.UNSAFE

SCRIPT: list[tuple[str, Any, Any]] = [
    ("set", U, None), ("get", None, None),          # untrusted on an unknown device: ignored
    ("set", X, None), ("get", None, None),          # unsafe inserts with the placeholder Ik
    ("set", U, None), ("get", None, None),          # unsafe is sticky against untrusted
    ("set", T, IK1), ("get", None, None),           # trusted replaces the placeholder Ik
    ("set", T, IK2), ("get", None, None),           # another Ik: refused, status kept
    ("set", U, None), ("get", None, None),
    ("set", T, IK1), ("get", None, None),
    ("set", X, None), ("get", None, None),
    ("delete", None, None), ("get", None, None),
    ("set", T, IK2), ("get", None, None),           # after delete the new Ik is accepted
]


def _run(manager: Any) -> list[str]:
    trace = []
    for op, status, ik in SCRIPT:
        try:
            if op == "set":
                manager.set_peer_status(P, status, ik)
                trace.append("ok")
            elif op == "get":
                trace.append(manager.peer_status(P).name)
            else:
                manager.delete_peer(P)
                trace.append("deleted")
        except errors.LimeError as exc:
            trace.append(type(exc).__name__)
    return trace


def test_peer_status_rules_match(tmp_path: pathlib.Path) -> None:
    """The same sequence of status changes gives the same results and errors on both backends."""
    traces = {}
    with KeyServer() as server:
        for kind, factory in FACTORIES.items():
            with factory(tmp_path / f"{kind}.sqlite3", transport=server) as m:
                traces[kind] = _run(m)
    assert traces["ref"] == traces["lime"]
    assert traces["lime"][1] == "UNKNOWN" and traces["lime"][3] == "UNSAFE"
    assert "IdentityKeyMismatchError" in traces["lime"]
