"""``pylime device``: create, delete, list and maintain the local devices (lime users) of a database."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from pylime.commands.common import (
    EXIT_USAGE,
    CliFailure,
    Offline,
    Settings,
    b64,
    console,
    curve_name,
    curve_of_key,
    emit,
    lime_command,
    local_devices,
    open_manager,
    parse_curve,
    transport_for,
)

__all__ = ["device"]


@click.group("device")
def device() -> None:
    """Local devices (lime users): create, delete, list, update, set-server."""


@lime_command(device, "create", server_help="The key server URL the device registers with "
                                            "(required).")
@click.argument("device_id")
@click.option("--curve", default="c25519", show_default=True,
              type=click.Choice(["c25519", "c448"]), help="The device's curve.")
@click.option("--opk-batch", default=100, show_default=True, type=click.IntRange(0, 65535),
              help="One-time prekeys published at creation.")
def create(settings: Settings, device_id: str, curve: str, opk_batch: int) -> None:
    """Create DEVICE_ID (a GRUU) in the database and publish its keys on the key server."""
    from pylime.linphone import fingerprint

    if not settings.server:
        raise CliFailure("device create needs --server URL (or PYLIME_SERVER)", EXIT_USAGE)
    chosen = parse_curve(curve)
    with open_manager(settings, transport_for(settings, device_id, redirect=False),
                      must_exist=False) as manager:
        manager.create_user(device_id, settings.server, chosen, opk_batch=opk_batch)
        key = manager.identity_key(device_id)
    data = {"device": {"device_id": device_id, "curve": curve_name(chosen),
                       "server": settings.server, "active": True,
                       "identity_key": b64(key), "fingerprint": fingerprint(key, chosen)}}
    emit(settings, data, f"created {device_id} ({curve_name(chosen)}) on {settings.server}")


@lime_command(device, "delete")
@click.argument("device_id")
def delete(settings: Settings, device_id: str) -> None:
    """Delete DEVICE_ID with its keys and sessions, locally and on the key server."""
    with open_manager(settings, transport_for(settings, device_id)) as manager:
        manager.delete_user(device_id)
    emit(settings, {"deleted": device_id}, f"deleted {device_id}")


@lime_command(device, "list")
def list_(settings: Settings) -> None:
    """List the database's devices (read-only: works while another process uses it)."""
    devices = local_devices(settings.db)

    def table(out: Console) -> None:
        if not devices:
            out.print(f"no device in {settings.db}")
            return
        t = Table(title=f"devices in {settings.db}")
        for column in ("device id", "curve", "key server", "active"):
            t.add_column(column, overflow="fold")
        for d in devices:
            t.add_row(d.device_id, d.curve, d.server, "yes" if d.active else "no")
        out.print(t)

    emit(settings, {"db": settings.db, "devices": [d.to_json() for d in devices]}, table)


@lime_command(device, "update")
@click.option("--opk-low-limit", default=100, show_default=True, type=click.IntRange(0, 65535),
              help="Top up when the key server holds fewer one-time prekeys than this.")
@click.option("--opk-batch", default=25, show_default=True, type=click.IntRange(0, 65535),
              help="Fewest one-time prekeys uploaded in a top-up.")
def update(settings: Settings, opk_low_limit: int, opk_batch: int) -> None:
    """Daily maintenance of every device: prekey top-up, signed prekey rotation, cleanup."""
    devices = [d.device_id for d in local_devices(settings.db) if d.active]
    with open_manager(settings, transport_for(settings, devices[0] if devices else None)) \
            as manager:
        if settings.json:
            manager.update(opk_low_limit, opk_batch)
        else:
            with console(stderr=True).status(f"updating {len(devices)} device(s)..."):
                manager.update(opk_low_limit, opk_batch)
    emit(settings, {"updated": devices}, f"updated {len(devices)} device(s)")


@lime_command(device, "set-server", server_help="Unused here: give the URL as an argument.")
@click.argument("device_id")
@click.argument("url")
def set_server(settings: Settings, device_id: str, url: str) -> None:
    """Point DEVICE_ID at another key server URL (its keys are not re-published)."""
    with open_manager(settings, Offline()) as manager:
        before = manager.server_url(device_id)
        manager.set_server_url(device_id, url)
        key = manager.identity_key(device_id)
    emit(settings, {"device_id": device_id, "server": url, "previous_server": before,
                    "curve": curve_name(curve_of_key(key))},
         f"{device_id}: key server {before} -> {url}")
