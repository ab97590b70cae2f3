"""What every ``pylime`` command shares: options, credentials, managers, output, exit codes.

A command is declared with :func:`lime_command`, which adds the common options
(``--db``, ``--server``, ``--backend``, ``--json``, ``--credentials``, ``--ca-file``,
``--timeout``; each also read from a ``PYLIME_*`` environment variable), hands the command a
:class:`Settings`, and turns any pylime error into one line (or one JSON object) and a
documented exit code (:data:`EXIT_CODES`). Passwords come from the environment or a file,
never from the command line, and never appear in output.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import sqlite3
import stat
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click
from rich.console import Console

from pylime import errors
from pylime.types import Curve

if TYPE_CHECKING:
    from pylime.backend import AnyManager, Backend

__all__ = [
    "BACKENDS",
    "ENV",
    "EXIT_CODES",
    "EXIT_DECRYPTION",
    "EXIT_FAILURE",
    "EXIT_KEYSERVER",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_SECURITY",
    "EXIT_USAGE",
    "CliFailure",
    "JsonAwareCommand",
    "LocalDevice",
    "Offline",
    "Settings",
    "b64",
    "console",
    "curve_name",
    "curve_of_key",
    "emit",
    "exit_code_for",
    "lime_command",
    "load_credentials",
    "local_devices",
    "open_manager",
    "parse_curve",
    "read_input",
    "report_failure",
    "transport_for",
    "unb64",
    "write_output",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_KEYSERVER = 3
EXIT_DECRYPTION = 4
EXIT_NOT_FOUND = 5
EXIT_SECURITY = 6

#: The exit codes of every command (docs/cli.md shows the same table).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the operation failed (lime error; for interop: a scenario failed)",
    EXIT_USAGE: "usage: bad option, argument, input file or credentials",
    EXIT_KEYSERVER: "the key server was unreachable, refused the request or answered garbage",
    EXIT_DECRYPTION: "the message does not decrypt (or, for diagnose: would not decrypt)",
    EXIT_NOT_FOUND: "no such database, local device or message part for this device",
    EXIT_SECURITY: "refused for safety: identity key mismatch, unsafe peer or conversation",
}

#: Environment variables read by the common options and the credentials.
ENV = {
    "db": "PYLIME_DB",
    "server": "PYLIME_SERVER",
    "backend": "PYLIME_BACKEND",
    "ca_file": "PYLIME_CA_FILE",
    "credentials": "PYLIME_CREDENTIALS",
    "username": "PYLIME_USERNAME",
    "password": "PYLIME_PASSWORD",
}

#: --backend's choices (pylime.backend): "auto" is the binding where it is built.
BACKENDS = ("auto", "lime", "reference")
DEFAULT_DB = "pylime.sqlite3"
# lime's own spellings (lime 5.4's CurveId names for the post-quantum hybrids)
_CURVES = {"c25519": Curve.C25519, "c448": Curve.C448, "c25519k512": Curve.C25519K512,
           "c25519mlk512": Curve.C25519MLK512, "c448mlk1024": Curve.C448MLK1024}


@dataclass(frozen=True)
class Settings:
    """The common options of one invocation."""

    db: str
    server: str | None
    backend: str
    json: bool
    ca_file: str | None
    credentials: str | None
    timeout: float


class CliFailure(Exception):
    """A failure the command reports itself, with its exit code (never holds a secret)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------ errors → exit codes


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code of an exception raised by pylime (or by the CLI itself)."""
    from pylime.linphone import errors as lerr

    if isinstance(exc, CliFailure):
        return exc.code
    if isinstance(exc, click.UsageError):
        return EXIT_USAGE
    if isinstance(exc, (errors.IdentityKeyMismatchError, lerr.UnsafeConversationError,
                        lerr.UnsafeSenderError)):
        return EXIT_SECURITY
    if isinstance(exc, lerr.DeviceNotInEnvelopeError):
        return EXIT_NOT_FOUND
    if isinstance(exc, (errors.DecryptionError, lerr.EnvelopeError)):
        return EXIT_DECRYPTION
    if isinstance(exc, errors.KeyServerError):
        return EXIT_KEYSERVER
    if isinstance(exc, (errors.UserNotFoundError, FileNotFoundError)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (lerr.InvalidDeviceIdError, lerr.NoRecipientsError,
                        lerr.InvalidFingerprintError, errors.InvalidCurveError)):
        return EXIT_USAGE
    if isinstance(exc, ValueError) and not isinstance(exc, errors.LimeError):
        return EXIT_USAGE  # an argument the API refused (e.g. a NUL byte in a device id)
    return EXIT_FAILURE


_HINTS: tuple[tuple[type[BaseException], str], ...] = (
    (errors.TransportError, "is the key server running, and is --ca-file its certificate?"),
    (errors.KeyServerHTTPError, ("check the credentials (PYLIME_USERNAME/PYLIME_PASSWORD "
                                 "or --credentials) and the server URL")),
    (errors.DecryptionError, "`pylime diagnose` with the same arguments says why"),
)


def _message(exc: BaseException) -> str:
    """One line saying what failed: the exception's own message (pylime keeps them secret-free)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"no such file: {exc.filename}"
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return f"{text} ({hint})"
    return text


def report_failure(settings: Settings | None, exc: BaseException) -> NoReturn:
    """Report ``exc`` (JSON on stdout with --json, else one line on stderr) and exit."""
    code = exit_code_for(exc)
    message = _message(exc)
    if (settings is not None and settings.server and isinstance(exc, errors.KeyServerError)
            and settings.server not in message):
        message += f" [requests were sent to --server {settings.server}]"
    kind = type(exc).__name__
    if isinstance(exc, CliFailure):
        kind = "CliFailure"
    if settings is not None and settings.json:
        click.echo(json.dumps({"ok": False, "error": {"type": kind, "message": message,
                                                      "exit_code": code}}))
    else:
        click.echo(f"pylime: error: {message}", err=True)
    raise click.exceptions.Exit(code)


# ------------------------------------------------------------------ the command decorator


class JsonAwareCommand(click.Command):
    """A command whose own usage errors (missing option, bad value) are JSON with --json too,
    so a script gets one JSON object whatever went wrong."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; with --json among the arguments, report usage errors as JSON."""
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not wants_json:
                raise
            message = exc.format_message()
            click.echo(json.dumps({"ok": False, "error": {
                "type": "UsageError", "message": message, "exit_code": EXIT_USAGE}}))
            raise click.exceptions.Exit(EXIT_USAGE) from None


def lime_command(group: click.Group | None, name: str | None = None, *,
                 server_help: str = "Send lime's key-server requests to this URL instead of "
                                    "the one stored for the device.") -> Callable[
        [Callable[..., None]], click.Command]:
    """Register ``func(settings, **params)`` in ``group`` (None: a top-level command) with the
    common options.

    Any pylime error (and OSError, ValueError from input handling) becomes a clean report and
    its exit code; ``--json`` makes the report a JSON object on stdout.
    """

    def decorate(func: Callable[..., None]) -> click.Command:
        @functools.wraps(func)
        def run(**params: Any) -> None:
            settings = Settings(
                db=params.pop("db"),
                server=params.pop("server"),
                backend=params.pop("backend"),
                json=params.pop("as_json"),
                ca_file=params.pop("ca_file"),
                credentials=params.pop("credentials"),
                timeout=params.pop("timeout"),
            )
            if logging.getLogger().getEffectiveLevel() >= logging.WARNING:
                # lime logs the failures we report ourselves (exit code and message);
                # `pylime -v ...` shows its log.
                logging.getLogger("pylime.lime").setLevel(logging.CRITICAL)
            try:
                func(settings, **params)
            except click.exceptions.Exit:
                raise
            except (errors.LimeError, CliFailure, click.UsageError, OSError, ValueError) as exc:
                report_failure(settings, exc)

        options = [
            click.option("--db", envvar=ENV["db"], default=DEFAULT_DB, show_default=True,
                         metavar="PATH", help=f"The lime database (SQLite) [env {ENV['db']}]."),
            click.option("--server", envvar=ENV["server"], default=None, metavar="URL",
                         help=f"{server_help} [env {ENV['server']}]"),
            click.option("--backend", envvar=ENV["backend"], type=click.Choice(BACKENDS),
                         default="auto", show_default=True,
                         help=f"liblime's binding, the pure-Python reference, or auto: the "
                              f"binding where it is built [env {ENV['backend']}]."),
            click.option("--json", "as_json", is_flag=True,
                         help="One JSON object on stdout (shapes in docs/cli.md)."),
            click.option("--credentials", envvar=ENV["credentials"], default=None,
                         type=click.Path(dir_okay=False), metavar="FILE",
                         help="Key-server account: a file of `username = ...` and "
                              "`password = ...` lines [env PYLIME_CREDENTIALS; else "
                              "PYLIME_USERNAME/PYLIME_PASSWORD]."),
            click.option("--ca-file", envvar=ENV["ca_file"], default=None,
                         type=click.Path(dir_okay=False), metavar="PEM",
                         help=f"Trust this certificate for the key server "
                              f"[env {ENV['ca_file']}; else the system store]."),
            click.option("--timeout", default=10.0, show_default=True,
                         type=click.FloatRange(0.1, 600),
                         help="Seconds to wait for the key server."),
        ]
        for option in reversed(options):
            run = option(run)
        if group is None:
            return click.command(name, cls=JsonAwareCommand)(run)
        return group.command(name, cls=JsonAwareCommand)(run)

    return decorate


# ------------------------------------------------------------------ credentials and transports


def _parse_credentials_file(path: str) -> dict[str, str]:
    """``key = value`` (or ``key: value``) lines; ``#`` comments; keys username and password."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"pylime: warning: {path} is readable by others (chmod 600 it)", err=True)
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                key, sep, value = line.partition(":")
            key = key.strip().lower()
            if not sep or key not in ("username", "password"):
                raise click.UsageError(f"{path} line {number}: expected "
                                       "`username = ...` or `password = ...`")
            values[key] = value.strip()
    return values


def load_credentials(settings: Settings, device_id: str | None = None,
                     environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The key-server account (username, password), or None to go unauthenticated.

    ``--credentials FILE`` wins over ``PYLIME_USERNAME`` / ``PYLIME_PASSWORD``. Without a
    username, the user part of ``device_id`` is used (the key server only lets an account act
    on its own devices).
    """
    env = os.environ if environ is None else environ
    if settings.credentials is not None:
        values = _parse_credentials_file(settings.credentials)
        username, password = values.get("username"), values.get("password")
    else:
        username, password = env.get(ENV["username"]) or None, env.get(ENV["password"]) or None
    if password is None:
        if username is not None:
            raise click.UsageError(f"a username without a password: set {ENV['password']} "
                                   "or put `password = ...` in the credentials file")
        return None
    if username is None and device_id is not None:
        from pylime.keyserver.auth import device_owner

        owner = device_owner(device_id)
        username = owner[0] if owner else None
    if username is None:
        raise click.UsageError(f"no username: set {ENV['username']} or put `username = ...` "
                               "in the credentials file")
    return username, password


class Offline:
    """The transport of commands that never need the key server: any request is an error."""

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Refuse: this command works offline."""
        raise errors.TransportError("this command does not contact the key server")


class _Redirect:
    """Send every request to one URL (``--server``), whatever URL lime stored for the device."""

    def __init__(self, inner: Any, url: str) -> None:
        self.inner, self.url = inner, url

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """Forward to the fixed URL."""
        status, answer = self.inner.post(self.url, sender, body)
        return int(status), bytes(answer)


def transport_for(settings: Settings, device_id: str | None, *,
                  redirect: bool = True) -> Any:
    """An HTTPS transport with the account's digest credentials and the pinned CA file.

    With ``redirect`` and ``--server``, requests go to ``--server`` instead of the stored URL.
    """
    from pylime.transport.https import HttpsTransport

    account = load_credentials(settings, device_id)
    username, password = account if account else (None, None)
    if settings.ca_file is not None and not os.path.exists(settings.ca_file):
        raise click.UsageError(f"no such CA file: {settings.ca_file}")
    transport = HttpsTransport(ca_file=settings.ca_file, username=username, password=password,
                               timeout=settings.timeout)
    if redirect and settings.server:
        return _Redirect(transport, settings.server)
    return transport


# ------------------------------------------------------------------ managers and databases


@contextmanager
def open_manager(settings: Settings, transport: Any, *,
                 must_exist: bool = True) -> Iterator[AnyManager]:
    """The chosen backend's manager on ``--db``, closed (and its transport too) on exit."""
    if must_exist and not os.path.exists(settings.db):
        raise CliFailure(f"no database {settings.db} (create a device first, or give --db)",
                         EXIT_NOT_FOUND)
    from pylime.backend import open_manager as open_backend

    manager = open_backend(settings.db, transport, backend=cast("Backend", settings.backend))
    try:
        yield manager
    finally:
        manager.close()
        close = getattr(getattr(transport, "inner", transport), "close", None)
        if callable(close):
            close()


@dataclass(frozen=True)
class LocalDevice:
    """One row of lime's ``lime_LocalUsers`` table, without the keys."""

    device_id: str
    curve: str
    server: str
    active: bool

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of a device (docs/cli.md)."""
        return {"device_id": self.device_id, "curve": self.curve, "server": self.server,
                "active": self.active}


_INACTIVE_USER_BIT = 0x0100  # lime sets it until the key server confirmed the user


def local_devices(path: str) -> list[LocalDevice]:
    """The local users of a lime database, read-only (lime's C API cannot list them).

    Reads ``lime_LocalUsers`` (UserId, server, curveId; bit 0x0100 of curveId = inactive),
    the same schema for liblime and the reference.
    """
    if not os.path.exists(path):
        raise CliFailure(f"no database {path}", EXIT_NOT_FOUND)
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute(
            "SELECT UserId, server, curveId FROM lime_LocalUsers ORDER BY Uid").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CliFailure(f"{path} is not a lime database ({exc})") from None
    finally:
        conn.close()
    return [LocalDevice(str(user), curve_name(int(curve) & 0xFF), str(server),
                        not int(curve) & _INACTIVE_USER_BIT) for user, server, curve in rows]


def curve_name(curve: int) -> str:
    """``c25519`` / ``c448`` / ``c25519mlk512``... (the CLI's spelling), or ``unknown(N)``."""
    for name, value in _CURVES.items():
        if int(value) == curve:
            return name
    return f"unknown({curve})"


def parse_curve(name: str) -> Curve:
    """``c25519``/``25519``/``c448``/``448`` → Curve."""
    key = name.lower()
    key = key if key.startswith("c") else f"c{key}"
    if key not in _CURVES:
        raise click.UsageError(f"unknown curve {name!r}: c25519 or c448")
    return _CURVES[key]


def curve_of_key(key: bytes) -> Curve:
    """The curve of a public identity key, from its length (32 → c25519, 57 → c448)."""
    return Curve.C448 if len(key) == 57 else Curve.C25519


# ------------------------------------------------------------------ input, output


def b64(data: bytes) -> str:
    """Binary data in JSON: standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Decode base64 (standard or URL-safe, padding optional), or raise a usage error."""
    cleaned = "".join(text.split())
    try:
        return base64.b64decode(cleaned.replace("-", "+").replace("_", "/")
                                + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise click.UsageError(f"{what} is not base64") from None


def read_input(path: str) -> bytes:
    """The bytes of a file, or of stdin for ``-``."""
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def write_output(path: str, data: bytes) -> None:
    """Write bytes to a file (owner-only: it may hold a plaintext), or to stdout for ``-``."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def console(*, stderr: bool = False) -> Console:
    """A rich console: plain text when not on a terminal, wide enough for device ids."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(file=stream, width=width, soft_wrap=False, highlight=False)


def emit(settings: Settings, data: Mapping[str, Any],
         human: Callable[[Console], None] | str) -> None:
    """Report a success: ``{"ok": true, ...data}`` with --json, else ``human`` for people."""
    if settings.json:
        click.echo(json.dumps({"ok": True, **data}))
        return
    if isinstance(human, str):
        click.echo(human)
    else:
        human(console())
