"""``pylime identity show``: a local device's identity key, fingerprint and QR code.

The fingerprint and the QR payload are :mod:`pylime.linphone.fingerprint`'s: a peer scans the
QR code (or compares the sixty digits read aloud) and runs ``pylime peer trust``.
"""

from __future__ import annotations

import click
from rich.console import Console

from pylime.commands.common import (
    EXIT_USAGE,
    CliFailure,
    Offline,
    Settings,
    b64,
    curve_name,
    curve_of_key,
    emit,
    lime_command,
    open_manager,
)

__all__ = ["identity"]


@click.group("identity")
def identity() -> None:
    """A local device's identity: key, fingerprint, QR code."""


@lime_command(identity, "show", server_help="Unused (works offline).")
@click.argument("device_id")
@click.option("--qr", is_flag=True, help="Draw the identity QR code in the terminal.")
@click.option("--fingerprint", "only_fingerprint", is_flag=True,
              help="Print only the sixty-digit fingerprint.")
@click.option("--qr-file", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also save the QR code to this .png or .svg file.")
def show(settings: Settings, device_id: str, qr: bool, only_fingerprint: bool,
         qr_file: str | None) -> None:
    """Show DEVICE_ID's public identity key, its fingerprint and (--qr) its QR code."""
    from pylime.linphone import (
        InvalidDeviceIdError,
        fingerprint,
        format_fingerprint,
        qr_payload,
        qr_terminal,
        save_qr,
    )

    with open_manager(settings, Offline()) as manager:
        key = manager.identity_key(device_id)
        server = manager.server_url(device_id)
    curve = curve_of_key(key)
    try:
        payload: str | None = qr_payload(device_id, key, curve)
    except InvalidDeviceIdError:  # the QR format names a GRUU: other ids have no QR code
        payload = None
        if qr or qr_file is not None:
            raise CliFailure(f"{device_id} is not a GRUU (sip:...;gr=urn:uuid:...): "
                             "no identity QR code for it", EXIT_USAGE) from None
    if qr_file is not None and payload is not None:
        save_qr(payload, qr_file, kind="svg" if qr_file.lower().endswith(".svg") else "png")
    data = {"device_id": device_id, "curve": curve_name(curve), "server": server,
            "identity_key": b64(key), "fingerprint": fingerprint(key, curve),
            "qr_payload": payload}

    def human(out: Console) -> None:
        if only_fingerprint:
            click.echo(fingerprint(key, curve))
        else:
            click.echo(f"device        {device_id}")
            click.echo(f"curve         {curve_name(curve)}")
            click.echo(f"key server    {server}")
            click.echo(f"identity key  {key.hex()}")
            click.echo("fingerprint")
            for line in format_fingerprint(key, curve).splitlines():
                click.echo(f"  {line}")
        if qr and payload is not None:
            click.echo(qr_terminal(payload))
            click.echo(payload)
        if qr_file is not None:
            click.echo(f"QR code saved to {qr_file}", err=True)

    emit(settings, data, human)
