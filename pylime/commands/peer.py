"""``pylime peer``: what a database knows of a peer device, and the user's verdict on it.

``trust`` needs proof of the peer's identity key, checked out of band: the key itself, the
peer's identity QR payload (``pylime identity show --qr`` on its side), or its sixty-digit
fingerprint read aloud (compared with the key lime stored when the devices first talked).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

import click

from pylime.commands.common import (
    EXIT_NOT_FOUND,
    EXIT_SECURITY,
    CliFailure,
    Offline,
    Settings,
    b64,
    curve_name,
    curve_of_key,
    emit,
    lime_command,
    open_manager,
    unb64,
)
from pylime.types import PeerStatus

__all__ = ["peer"]


@click.group("peer")
def peer() -> None:
    """Peer devices: status, trust, untrust, unsafe, forget."""


def _stored_key(path: str, peer_device_id: str) -> bytes | None:
    """The identity key lime stored for a peer device (lime_PeerDevices.Ik), read-only."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        row = conn.execute("SELECT Ik FROM lime_PeerDevices WHERE DeviceId = ? LIMIT 1",
                           (peer_device_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None or len(row[0]) < 32 else bytes(row[0])


def _key_argument(text: str) -> bytes:
    """An identity key given as hex or base64 (32 bytes on curve25519, 57 on curve448)."""
    cleaned = text.strip()
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        key = unb64(cleaned, "--key")
    if len(key) not in (32, 57):
        raise click.UsageError("--key: an identity key has 32 (c25519) or 57 (c448) bytes")
    return key


def _report(settings: Settings, peer_device_id: str, before: PeerStatus,
            after: PeerStatus, verb: str) -> None:
    emit(settings, {"peer": peer_device_id, "status": after.name,
                    "previous_status": before.name},
         f"{peer_device_id}: {before.name} -> {after.name}" if verb else
         f"{peer_device_id}: {after.name}")


@lime_command(peer, "status", server_help="Unused (works offline).")
@click.argument("peer_device_id")
def status(settings: Settings, peer_device_id: str) -> None:
    """Show PEER_DEVICE_ID's stored status (UNKNOWN if this database never met it)."""
    with open_manager(settings, Offline()) as manager:
        now = manager.peer_status(peer_device_id)
    key = _stored_key(settings.db, peer_device_id)
    data = {"peer": peer_device_id, "status": now.name,
            "identity_key": None if key is None else b64(key),
            "curve": None if key is None else curve_name(curve_of_key(key))}
    emit(settings, data, f"{peer_device_id}: {now.name}")


@lime_command(peer, "trust", server_help="Unused (works offline).")
@click.argument("peer_device_id", required=False)
@click.option("--key", "key_text", default=None, metavar="HEX|BASE64",
              help="The peer's identity key, verified out of band.")
@click.option("--qr-payload", default=None, metavar="TEXT",
              help="The peer's identity QR payload (pylime:ik:1:...).")
@click.option("--fingerprint", "fingerprint_text", default=None, metavar="DIGITS",
              help="The peer's sixty-digit fingerprint, compared with the stored key.")
@click.option("--replace", is_flag=True,
              help="If lime stores another key for the device, forget it and trust this one.")
def trust(settings: Settings, peer_device_id: str | None, key_text: str | None,
          qr_payload: str | None, fingerprint_text: str | None, replace: bool) -> None:
    """Trust PEER_DEVICE_ID after checking its identity key out of band."""
    from pylime.errors import IdentityKeyMismatchError
    from pylime.linphone import fingerprint, fingerprints_match, parse_qr_payload

    given = [x for x in (key_text, qr_payload, fingerprint_text) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --key, --qr-payload, --fingerprint")
    if qr_payload is not None:
        scanned = parse_qr_payload(qr_payload)
        if peer_device_id is not None and peer_device_id != scanned.device_id:
            raise CliFailure(f"the QR code is for {scanned.device_id}, not {peer_device_id}",
                             EXIT_SECURITY)
        peer_device_id, key = scanned.device_id, scanned.key
    elif peer_device_id is None:
        raise click.UsageError("give PEER_DEVICE_ID (only --qr-payload names the device)")
    elif key_text is not None:
        key = _key_argument(key_text)
    else:
        assert fingerprint_text is not None
        if not os.path.exists(settings.db):
            raise CliFailure(f"no database {settings.db}", EXIT_NOT_FOUND)
        stored = _stored_key(settings.db, peer_device_id)
        if stored is None:
            raise CliFailure(f"no identity key stored for {peer_device_id}: exchange a "
                             "message first, or use --key / --qr-payload", EXIT_NOT_FOUND)
        if not fingerprints_match(fingerprint_text, fingerprint(stored, curve_of_key(stored))):
            raise CliFailure(f"the fingerprint does not match the key stored for "
                             f"{peer_device_id}: do not trust it", EXIT_SECURITY)
        key = stored
    with open_manager(settings, Offline()) as manager:
        before = manager.peer_status(peer_device_id)
        try:
            manager.set_peer_status(peer_device_id, PeerStatus.TRUSTED, key)
        except IdentityKeyMismatchError:
            if not replace:
                raise
            manager.delete_peer(peer_device_id)
            manager.set_peer_status(peer_device_id, PeerStatus.TRUSTED, key)
        after = manager.peer_status(peer_device_id)
    _report(settings, peer_device_id, before, after, "trust")


def _set(settings: Settings, peer_device_id: str, target: PeerStatus) -> None:
    with open_manager(settings, Offline()) as manager:
        before = manager.peer_status(peer_device_id)
        manager.set_peer_status(peer_device_id, target)
        after = manager.peer_status(peer_device_id)
    _report(settings, peer_device_id, before, after, target.name)


@lime_command(peer, "untrust", server_help="Unused (works offline).")
@click.argument("peer_device_id")
def untrust(settings: Settings, peer_device_id: str) -> None:
    """Withdraw trust: TRUSTED becomes UNTRUSTED (UNSAFE stays UNSAFE, as in lime)."""
    _set(settings, peer_device_id, PeerStatus.UNTRUSTED)


@lime_command(peer, "unsafe", server_help="Unused (works offline).")
@click.argument("peer_device_id")
def unsafe(settings: Settings, peer_device_id: str) -> None:
    """Mark PEER_DEVICE_ID unsafe (a man in the middle is suspected); Linphone then refuses it."""
    _set(settings, peer_device_id, PeerStatus.UNSAFE)


@lime_command(peer, "forget", server_help="Unused (works offline).")
@click.argument("peer_device_id")
def forget(settings: Settings, peer_device_id: str) -> None:
    """Forget PEER_DEVICE_ID and every session with it (it becomes UNKNOWN)."""
    with open_manager(settings, Offline()) as manager:
        before = manager.peer_status(peer_device_id)
        manager.delete_peer(peer_device_id)
        after = manager.peer_status(peer_device_id)
    _report(settings, peer_device_id, before, after, "forget")
