"""End-to-end demo on the embedded key server, on both curves.

Alice has two devices, Bob and Carol one each. Alice writes to the group, everyone replies,
and each device prints what it read and the statuses lime reports. Every device has its
own database, as each phone would. Exits non-zero if any message does not round-trip.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pylime import Curve, Manager, PeerStatus, Policy
from pylime.keyserver import KeyServer

GROUP = "sip:friends@conference.example.org"
SERVER_URL = "https://keys.example.org/lime"
DEVICES = [
    ("alice", "sip:alice@example.org;gr=urn:uuid:0a11ce00-0000-4000-8000-000000000001"),
    ("alice", "sip:alice@example.org;gr=urn:uuid:0a11ce00-0000-4000-8000-000000000002"),
    ("bob", "sip:bob@example.org;gr=urn:uuid:00000b0b-0000-4000-8000-000000000001"),
    ("carol", "sip:carol@example.org;gr=urn:uuid:0000ca01-0000-4000-8000-000000000001"),
]


def run(curve: Curve, workdir: Path, console: Console) -> bool:
    """Run the conversation on one curve; return True when every message round-tripped."""
    ok = True
    table = Table(title=f"{curve.name}: group {GROUP}")
    for column in ("sender", "policy", "recipient", "read", "sender status seen"):
        table.add_column(column)
    with KeyServer() as server:
        managers = {}
        try:
            for index, (_, device) in enumerate(DEVICES):
                managers[device] = Manager(workdir / f"{curve.name}-{index}.sqlite3", server)
                managers[device].create_user(device, SERVER_URL, curve)
            # Alice's first device opens; then each device replies under another policy.
            turns = [(DEVICES[0][1], Policy.OPTIMIZE_UPLOAD_SIZE, "Hi all, lunch at noon?"),
                     (DEVICES[2][1], Policy.DR_MESSAGE, "Bob: yes!"),
                     (DEVICES[3][1], Policy.CIPHER_MESSAGE, "Carol: count me in, " * 5),
                     (DEVICES[1][1], Policy.OPTIMIZE_GLOBAL_BANDWIDTH, "Alice (tablet): great")]
            for sender, policy, text in turns:
                others = [d for _, d in DEVICES if d != sender]
                out = managers[sender].encrypt(sender, GROUP, others, text.encode(), policy)
                for recipient in out.recipients:
                    status, plain = managers[recipient.device_id].decrypt(
                        recipient.device_id, GROUP, sender, recipient.dr_message,
                        out.cipher_message)
                    ok &= plain == text.encode()
                    table.add_row(_short(sender), policy.name, _short(recipient.device_id),
                                  plain.decode()[:28], status.name)
            console.print(table)
            status_table = Table(title=f"{curve.name}: peer statuses stored by each device")
            status_table.add_column("device")
            for _, device in DEVICES:
                status_table.add_column(_short(device))
            for _, device in DEVICES:
                row = [managers[device].peer_status(peer).name if peer != device else "-"
                       for _, peer in DEVICES]
                status_table.add_row(_short(device), *row)
            console.print(status_table)
            # Bob verifies Alice's phone out of band: lime then reports it TRUSTED.
            bob, alice1 = DEVICES[2][1], DEVICES[0][1]
            managers[bob].set_peer_status(alice1, PeerStatus.TRUSTED,
                                          managers[alice1].identity_key(alice1))
            console.print(f"bob trusts alice's phone: "
                          f"{managers[bob].peer_status(alice1).name}; "
                          f"OPks left on the server for bob: {server.opk_count(bob)}")
        finally:
            for manager in managers.values():
                manager.close()
    return ok


def _short(device_id: str) -> str:
    user = device_id.split(";")[0].removeprefix("sip:").split("@")[0]
    return f"{user}/{device_id[-1]}"


def main() -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="pylime-demo-") as tmp:
        results = [run(curve, Path(tmp), console) for curve in Curve]
    if all(results):
        console.print("[bold green]every message round-tripped on both curves[/]")
        return 0
    console.print("[bold red]some messages did not round-trip[/]")
    return 1


if __name__ == "__main__":
    sys.exit(main())
