"""scripts/reference_device: two reference devices in their own processes, driven by JSON
lines, talk through the served HTTPS key server on a post-quantum algorithm (the tool the
live exchange with lime 5.4 uses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pylime.keyserver import KeyServer
from pylime.keyserver.app import ServerConfig
from pylime.keyserver.auth import make_account
from pylime.keyserver.service import ServerThread

TOOL = Path(__file__).resolve().parents[2] / "scripts" / "reference_device"
REALM = "example.org"


class Proc:
    """One reference_device process and its line protocol."""

    def __init__(self, tmp: Path, name: str, url: str, cert: Path) -> None:
        self.device_id = f"sip:{name}@{REALM};gr=urn:uuid:{name}"
        self.p = subprocess.Popen(
            [sys.executable, str(TOOL), "--db", str(tmp / f"{name}.sqlite3"), "--device-id",
             self.device_id, "--server", url, "--ca", str(cert), "--account", name,
             "--password", f"{name}-pw"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.ask(op="quit")["ok"]
        self.p.wait(timeout=30)


def test_two_processes_converse_on_c448mlk1024(tmp_path: Path,
                                                tls_files_pq: tuple[Path, Path]) -> None:
    """create, encrypt both ways (DR-message and cipher-message policies), decrypt, and a
    typed error answer for a bad request that leaves the device running."""
    server = KeyServer()
    for user in ("alice", "bob"):
        server.storage.put_account(make_account(user, REALM, f"{user}-pw"))
    cert, key = tls_files_pq
    with ServerThread(ServerConfig(realm=REALM), server=server, cert=cert, key=key) as thread:
        alice, bob = Proc(tmp_path, "alice", thread.url, cert), Proc(tmp_path, "bob", thread.url, cert)
        try:
            for d in (alice, bob):
                assert d.ask(op="create", curve="c448mlk1024", opk_batch=3, id=1) == {"ok": True, "id": 1}
            out = alice.ask(op="encrypt", recipient_user_id=f"sip:bob@{REALM}",
                            recipients=[bob.device_id], plaintext=b"hello".hex(), policy="DRMessage")
            assert out["ok"] and out["messages"][0]["status"] == "unknown"
            got = bob.ask(op="decrypt", recipient_user_id=f"sip:bob@{REALM}", sender=alice.device_id,
                          dr=out["messages"][0]["dr"], cipher=out["cipher"])
            assert got == {"ok": True, "status": "unknown", "plaintext": b"hello".hex()}
            back = bob.ask(op="encrypt", recipient_user_id=f"sip:alice@{REALM}",
                           recipients=[alice.device_id], plaintext=b"hi".hex(), policy="cipherMessage")
            got = alice.ask(op="decrypt", recipient_user_id=f"sip:alice@{REALM}", sender=bob.device_id,
                            dr=back["messages"][0]["dr"], cipher=back["cipher"])
            assert got["plaintext"] == b"hi".hex() and got["status"] == "untrusted"
            bad = alice.ask(op="decrypt", recipient_user_id="x", sender=bob.device_id, dr="00", cipher="")
            assert bad["ok"] is False and bad["error"] == "MalformedMessageError"
            assert len(bytes.fromhex(alice.ask(op="identity")["ik"])) == 57
        finally:
            alice.close()
            bob.close()
    server.close()


@pytest.fixture(scope="module")
def tls_files_pq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    from pylime.keyserver.tls import ensure_self_signed

    return ensure_self_signed(tmp_path_factory.mktemp("tls"))
