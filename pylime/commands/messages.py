"""``pylime encrypt``, ``pylime decrypt`` and ``pylime diagnose``.

Two message forms travel between them (docs/cli.md has both):

- **raw** (default): lime's own parts in one JSON document, the *message bundle*::

      {"format": "pylime-message/1", "sender": DEVICE, "recipient_user_id": RUID,
       "cipher_message": BASE64, "recipients": [{"device_id": D, "status": S,
       "dr_message": BASE64}, ...]}

  ``decrypt`` also takes the parts as binary files (``--dr FILE [--cipher FILE]``).
- **envelope** (``--envelope``): what Linphone sends in a SIP MESSAGE, written as its body
  headers (``Content-Type``, ``Content-Encoding`` when deflated, and ``From``: the conversation
  address, as the conference server delivers it), a blank line, then the body bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from pylime.commands.common import (
    EXIT_DECRYPTION,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CliFailure,
    Offline,
    Settings,
    b64,
    emit,
    lime_command,
    open_manager,
    read_input,
    transport_for,
    unb64,
    write_output,
)
from pylime.types import Policy

__all__ = [
    "BUNDLE_FORMAT",
    "RawMessage",
    "bundle_of",
    "decrypt",
    "diagnose",
    "encrypt",
    "envelope_file",
    "parse_envelope_file",
]

BUNDLE_FORMAT = "pylime-message/1"
_POLICIES = {p.name.lower().replace("_", "-"): p for p in Policy}


# ------------------------------------------------------------------ the two message forms


def bundle_of(sender: str, ruid: str, result: Any) -> dict[str, Any]:
    """The raw form of an EncryptResult (see the module docstring)."""
    return {"format": BUNDLE_FORMAT, "sender": sender, "recipient_user_id": ruid,
            "cipher_message": b64(result.cipher_message),
            "recipients": [{"device_id": r.device_id, "status": r.status.name,
                            "dr_message": b64(r.dr_message)} for r in result.recipients]}


def envelope_file(headers: Mapping[str, str], body: bytes) -> bytes:
    """Headers, a blank line, the body: what ``decrypt --envelope`` reads back."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("utf-8") + b"\r\n" + body


def parse_envelope_file(data: bytes) -> tuple[dict[str, str], bytes]:
    """Split an envelope file into its headers and body."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, sep, body = data.partition(separator)
        if sep:
            break
    else:
        raise click.UsageError("the envelope has no blank line between headers and body")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise click.UsageError(f"not a header line in the envelope: {line[:40]!r}")
        headers[name.strip()] = value.strip()
    return headers, body


@dataclass(frozen=True)
class RawMessage:
    """What decrypt needs of a raw message for one device."""

    sender: str
    recipient_user_id: str
    dr_message: bytes
    cipher_message: bytes


def _raw_message(device_id: str, source: str, dr_file: str | None, cipher_file: str | None,
                 sender: str | None, ruid: str | None) -> RawMessage:
    """The raw parts for ``device_id``: from binary files, or from a message bundle."""
    if dr_file is not None:
        if sender is None or ruid is None:
            raise click.UsageError("--dr needs --from SENDER and --to RECIPIENT_USER_ID")
        cipher = read_input(cipher_file) if cipher_file is not None else b""
        return RawMessage(sender, ruid, read_input(dr_file), cipher)
    try:
        bundle = json.loads(read_input(source))
        if not isinstance(bundle, dict):
            raise TypeError
        if "message" in bundle and "format" not in bundle:  # `encrypt --json` output
            bundle = bundle["message"]
        if bundle.get("format") != BUNDLE_FORMAT:
            raise click.UsageError(f"not a {BUNDLE_FORMAT} message bundle")
        mine = [r for r in bundle["recipients"] if r["device_id"] == device_id]
        if not mine:
            raise CliFailure(f"the message has no part for {device_id}", EXIT_NOT_FOUND)
        return RawMessage(sender or str(bundle["sender"]),
                          ruid or str(bundle["recipient_user_id"]),
                          unb64(mine[0]["dr_message"], "dr_message"),
                          unb64(bundle["cipher_message"], "cipher_message"))
    except (ValueError, KeyError, TypeError):
        raise click.UsageError(f"the input is not a {BUNDLE_FORMAT} message bundle "
                               "(use --envelope for a Linphone envelope)") from None


def _message_options(func: Any) -> Any:
    """The input options decrypt and diagnose share."""
    for option in reversed([
        click.option("--device", "device_id", required=True, metavar="DEVICE",
                     help="The local device the message is for."),
        click.option("--input", "-i", "source", default="-", show_default=True,
                     metavar="FILE", help="The message (bundle or envelope); - is stdin."),
        click.option("--envelope", is_flag=True, help="The input is a Linphone envelope."),
        click.option("--room", default=None, metavar="ADDRESS",
                     help="Envelope: the conversation address, if not the From header."),
        click.option("--dr", "dr_file", default=None, metavar="FILE",
                     help="Raw: the DR message as a binary file (instead of a bundle)."),
        click.option("--cipher", "cipher_file", default=None, metavar="FILE",
                     help="Raw: the cipher message as a binary file (with --dr)."),
        click.option("--from", "sender", default=None, metavar="DEVICE",
                     help="Raw: the sender device (with --dr; overrides the bundle)."),
        click.option("--to", "ruid", default=None, metavar="RUID",
                     help="Raw: the recipient user id (with --dr; overrides the bundle)."),
    ]):
        func = option(func)
    return func


# ------------------------------------------------------------------ encrypt


@lime_command(None, "encrypt")
@click.option("--from", "sender", required=True, metavar="DEVICE",
              help="The local device that sends.")
@click.option("--to", "to", required=True, metavar="RUID|ROOM",
              help="The recipient user id (raw) or conversation address (--envelope).")
@click.option("--device", "-d", "devices", multiple=True, required=True, metavar="DEVICE",
              help="A recipient device (repeat; include your own other devices).")
@click.option("--policy", type=click.Choice(sorted(_POLICIES)), default="optimize-upload-size",
              show_default=True, help="Raw: where lime puts the plaintext.")
@click.option("--envelope", is_flag=True, help="Write a Linphone envelope instead of a bundle.")
@click.option("--allow-unsafe", is_flag=True, help="Envelope: send even to unsafe devices.")
@click.option("--input", "-i", "source", default="-", show_default=True, metavar="FILE",
              help="The plaintext; - is stdin (text: UTF-8 for --envelope).")
@click.option("--output", "-o", "target", default="-", show_default=True, metavar="FILE",
              help="Where the message goes; - is stdout (with --json: inside the JSON).")
def encrypt(settings: Settings, sender: str, to: str, devices: tuple[str, ...], policy: str,
            envelope: bool, allow_unsafe: bool, source: str, target: str) -> None:
    """Encrypt a plaintext from a local device to peer devices."""
    plaintext = read_input(source)
    with open_manager(settings, transport_for(settings, sender)) as manager:
        if envelope:
            from pylime.linphone import encrypt_message
            from pylime.linphone.address import uri_only

            try:
                text = plaintext.decode("utf-8")
            except UnicodeDecodeError:
                raise CliFailure("--envelope sends text: the input is not UTF-8",
                                 EXIT_USAGE) from None
            out = encrypt_message(manager, sender, to, list(devices), text,
                                  allow_unsafe=allow_unsafe)
            headers = {**out.headers, "From": f"<{uri_only(to)}>"}
            data = envelope_file(headers, out.body.body)
            result: dict[str, Any] = {"envelope": {
                "headers": headers, "body": b64(out.body.body), "message_id": out.message_id,
                "recipients": [{"device_id": d, "status": s.name} for d, s in out.statuses],
                "skipped": list(out.skipped)}}
            statuses = [(d, s.name) for d, s in out.statuses] + [(d, "FAIL")
                                                                 for d in out.skipped]
        else:
            enc = manager.encrypt(sender, to, list(devices), plaintext, _POLICIES[policy])
            bundle = bundle_of(sender, to, enc)
            data = (json.dumps(bundle, indent=1) + "\n").encode()
            result = {"message": bundle}
            statuses = [(r.device_id, r.status.name) for r in enc.recipients]
    if not settings.json or target != "-":
        write_output(target, data)
    if not settings.json:
        for device_id, status in statuses:
            click.echo(f"encrypted for {device_id} ({status})", err=True)
        return
    emit(settings, result, "")


# ------------------------------------------------------------------ decrypt


@lime_command(None, "decrypt", server_help="Unused (decryption works offline).")
@_message_options
@click.option("--output", "-o", "target", default="-", show_default=True, metavar="FILE",
              help="Where the plaintext goes; - is stdout (with --json: inside the JSON).")
@click.option("--allow-unsafe", is_flag=True, help="Envelope: accept unsafe senders.")
def decrypt(settings: Settings, device_id: str, source: str, envelope: bool, room: str | None,
            dr_file: str | None, cipher_file: str | None, sender: str | None,
            ruid: str | None, target: str, allow_unsafe: bool) -> None:
    """Decrypt a message for a local device; prints the plaintext."""
    message_id: str | None = None
    content_type: str | None = None
    with open_manager(settings, Offline()) as manager:
        if envelope:
            from pylime.linphone import decrypt_message

            headers, body = parse_envelope_file(read_input(source))
            msg = decrypt_message(manager, device_id, body, headers, room=room,
                                  allow_unsafe=allow_unsafe)
            plaintext, who, status = msg.cpim.content, msg.sender, msg.status
            message_id, content_type = msg.message_id, msg.content_type
        else:
            raw = _raw_message(device_id, source, dr_file, cipher_file, sender, ruid)
            status, plaintext = manager.decrypt(device_id, raw.recipient_user_id, raw.sender,
                                                raw.dr_message, raw.cipher_message)
            who = raw.sender
    if not settings.json or target != "-":
        write_output(target, plaintext)
    if not settings.json:
        click.echo(f"from {who} ({status.name})", err=True)
        return
    try:
        text: str | None = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    emit(settings, {"device_id": device_id, "sender": who, "status": status.name,
                    "text": text, "plaintext": b64(plaintext), "message_id": message_id,
                    "content_type": content_type}, "")


# ------------------------------------------------------------------ diagnose


@lime_command(None, "diagnose", server_help="Unused (works offline).")
@_message_options
def diagnose(settings: Settings, device_id: str, source: str, envelope: bool, room: str | None,
             dr_file: str | None, cipher_file: str | None, sender: str | None,
             ruid: str | None) -> None:
    """Say why a message does not decrypt, without changing the database (exit 4 if it would not)."""
    from pylime import diagnose as analyse

    if envelope:
        from pylime.linphone import parse_envelope, recipient_user_id
        from pylime.linphone.envelope import header_value

        headers, body = parse_envelope_file(read_input(source))
        conversation = room or header_value(headers, "From")
        if conversation is None:
            raise click.UsageError("the envelope has no From header: give --room")
        parsed = parse_envelope(header_value(headers, "Content-Type") or "", body,
                                header_value(headers, "Content-Encoding"))
        raw = RawMessage(parsed.sender, recipient_user_id(conversation),
                         parsed.dr_message_for(device_id), parsed.cipher_message)
    else:
        raw = _raw_message(device_id, source, dr_file, cipher_file, sender, ruid)
    if not os.path.exists(settings.db):
        raise FileNotFoundError(2, "no such database", settings.db)
    problem = analyse(settings.db, device_id, raw.recipient_user_id, raw.sender,
                      raw.dr_message, raw.cipher_message)
    reason = None if problem is None else type(problem).__name__
    explanation = ("the message decrypts from this database's current state" if problem is None
                   else (type(problem).__doc__ or reason or "").strip().splitlines()[0])
    emit(settings, {"device_id": device_id, "sender": raw.sender, "decrypts": problem is None,
                    "reason": reason, "explanation": explanation},
         f"{'decrypts' if problem is None else reason}: {explanation}")
    if problem is not None:
        raise click.exceptions.Exit(EXIT_DECRYPTION)
