"""The ``pylime`` command.

Each command group lives beside the code it drives and is imported only when it is used
(so ``pylime --help`` starts fast and a missing optional dependency only breaks its own
group). To add a group, add one line to ``_GROUPS``: name → "module:attribute" of a click
group or command.
"""

from __future__ import annotations

import importlib
import logging

import click

__all__ = ["main"]

_GROUPS: dict[str, str] = {
    "keyserver": "pylime.keyserver.cli:keyserver",
    "device": "pylime.commands.device:device",
    "identity": "pylime.commands.identity:identity",
    "peer": "pylime.commands.peer:peer",
    "encrypt": "pylime.commands.messages:encrypt",
    "decrypt": "pylime.commands.messages:decrypt",
    "diagnose": "pylime.commands.messages:diagnose",
    "interop": "pylime.commands.interop:interop",
    "chat": "pylime.commands.chat:chat",
}


class _LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_GROUPS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _GROUPS:
            module_name, _, attr = _GROUPS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


def _version_text() -> str:
    """pylime's version, the backends this installation runs, and the liblime loaded."""
    import platform

    from pylime import __version__, backend

    lines = [f"pylime {__version__} (Python {platform.python_version()})"]
    library = backend.lime_library()
    if library is not None:
        lines.append(f"backend lime: available, liblime {library.version} loaded from "
                     f"{library.path}")
    else:
        lines.append(f"backend lime: not available: {backend.missing_binding_message()}")
    lines.append("backend reference: available (pure Python)")
    lines.append(f"default backend: {backend.resolve_backend('auto')}")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(cls=_LazyGroup)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version,
              help="Show the version, the available backends and the liblime loaded.")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """pylime: Linphone's lime end-to-end encryption (X3DH + Double Ratchet)."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
