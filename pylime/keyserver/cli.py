"""``pylime keyserver``: serve the key server and manage its digest accounts.

Registered by :mod:`pylime.cli`; heavy imports (uvicorn, psycopg) happen inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pylime.keyserver.state import (
    DEFAULT_MAX_NONCES_PER_ACCOUNT,
    DEFAULT_RATE_BURST,
    DEFAULT_RATE_LIMIT,
)

if TYPE_CHECKING:
    from pylime.keyserver import KeyServer

__all__ = ["keyserver"]

PASSWORD_ENV = "PYLIME_PASSWORD"

_db_option = click.option(
    "--db",
    default="keys.sqlite3",
    show_default=True,
    metavar="PATH|URL",
    help="SQLite file, or a postgresql:// URL shared by several servers.",
)


def _open(db: str) -> KeyServer:
    """Open the key database, turning a failure into a clean CLI error."""
    from pylime.keyserver import KeyServer, StorageError

    try:
        return KeyServer(db)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None


def _split_account(name: str, realm: str | None) -> tuple[str, str]:
    """``alice --realm example.org`` or ``alice@example.org``."""
    if realm is None and "@" in name:
        name, realm = name.rsplit("@", 1)
    if not realm:
        raise click.UsageError("give the realm (SIP domain): --realm DOMAIN or USER@DOMAIN")
    return name, realm


@click.group("keyserver")
def keyserver() -> None:
    """Run lime's X3DH key server, and manage its accounts."""


@keyserver.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=25519, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option(
    "--self-signed",
    is_flag=True,
    help="Use (and create if missing) a self-signed certificate in --tls-dir. "
    "This is the default when no certificate is given.",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where --self-signed keeps keyserver-cert.pem/keyserver-key.pem "
    "[default: beside the SQLite file, else the current directory].",
)
@click.option("--plain-http", is_flag=True, help="Serve plain HTTP (only behind a TLS proxy).")
@_db_option
@click.option("--realm", help="SIP domain: the digest realm and the domain of devices.")
@click.option("--open", "open_", is_flag=True, help="No authentication (test rigs only).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--lifetime",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds before a registered device is deleted (0 = never).",
)
@click.option(
    "--max-opks",
    default=200,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Most OPks stored per device.",
)
@click.option(
    "--max-body",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(3),
    help="Largest request body in bytes.",
)
@click.option(
    "--max-devices-per-account",
    default=32,
    show_default=True,
    type=click.IntRange(0),
    help="Most (curve, device) registrations per account; 0 = no limit.",
)
@click.option(
    "--max-device-id-length",
    default=256,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Longest device id registered, in UTF-8 bytes.",
)
@click.option(
    "--max-account-bytes",
    default=256 * 1024,
    show_default=True,
    type=click.IntRange(0),
    help="Most bytes of device ids and keys per account; 0 = no limit.",
)
@click.option(
    "--opk-budget",
    default=100,
    show_default=True,
    type=click.IntRange(0),
    help="OPks one account may take at once, refilled at this many per --opk-budget-window; "
    "past it bundles go out without OPk. 0 = no limit.",
)
@click.option(
    "--opk-budget-window",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds in which a spent OPk budget refills.",
)
@click.option("--nonce-lifetime", default=300.0, show_default=True, type=click.FloatRange(1))
@click.option(
    "--rate-limit",
    default=DEFAULT_RATE_LIMIT,
    show_default=True,
    type=click.FloatRange(0),
    help="Requests/s per account (or client address with --open); 0 = none.",
)
@click.option(
    "--rate-burst",
    default=DEFAULT_RATE_BURST,
    show_default=True,
    type=click.FloatRange(1),
    help="Requests an idle account may send at once.",
)
@click.option(
    "--shared-state",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "memory", "database"]),
    help="Where digest nonces and rate buckets live: the database lets every server on it "
    "accept any request (auto: PostgreSQL, or an SQLite file with --workers > 1).",
)
@click.option(
    "--max-nonces-per-account",
    default=DEFAULT_MAX_NONCES_PER_ACCOUNT,
    show_default=True,
    type=click.IntRange(1),
    help="Live digest nonces one account may hold.",
)
@click.option(
    "--nonce-secret-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File whose contents sign nonces (shared state) [default: $PYLIME_KEYSERVER_SECRET, "
    "else a secret kept in the database].",
)
@click.option(
    "--max-header-bytes",
    default=16 * 1024,
    show_default=True,
    type=click.IntRange(256),
    help="Largest request head (request line and headers); 431 past it.",
)
@click.option(
    "--request-line-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds from a request's first byte to the end of its request line; 408 past it.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds from a request's first byte to the end of its headers; 408 past it.",
)
@click.option(
    "--idle-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a new connection may stay silent before it is closed.",
)
@click.option(
    "--keep-alive-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds an idle connection is kept between requests.",
)
@click.option(
    "--max-connections-per-address",
    default=64,
    show_default=True,
    type=click.IntRange(0),
    help="Open connections per client address, per worker; 503 past it; 0 = no cap "
    "(behind a reverse proxy, every client has the proxy's address).",
)
@click.option(
    "--digest-algorithm",
    "algorithms",
    multiple=True,
    type=click.Choice(["SHA-256", "MD5"], case_sensitive=False),
    help="Challenge algorithms in order of preference [default: SHA-256, MD5].",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
# Operations (docs/deploy.md): logs as JSON lines, Prometheus metrics.
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one JSON object per line (credentials masked either way).")
@click.option("--metrics", is_flag=True, help="Serve Prometheus metrics on GET /metrics.")
@click.option("--metrics-allow", multiple=True, metavar="CIDR",
              help="Client networks /metrics answers [default: 127.0.0.0/8, ::1/128].")
@click.option("--metrics-dir", type=click.Path(file_okay=False), default=None,
              help="With --workers > 1: where workers keep their metrics "
              "[default: a private temporary directory].")
def serve(
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    self_signed: bool,
    tls_dir: str | None,
    plain_http: bool,
    db: str,
    realm: str | None,
    open_: bool,
    workers: int,
    lifetime: float,
    max_opks: int,
    max_body: int,
    max_devices_per_account: int,
    max_device_id_length: int,
    max_account_bytes: int,
    opk_budget: int,
    opk_budget_window: float,
    nonce_lifetime: float,
    rate_limit: float,
    max_header_bytes: int,
    request_line_timeout: float,
    header_timeout: float,
    idle_timeout: float,
    keep_alive_timeout: float,
    max_connections_per_address: int,
    rate_burst: float,
    shared_state: str,
    max_nonces_per_account: int,
    nonce_secret_file: str | None,
    algorithms: tuple[str, ...],
    log_level: str,
    log_format: str,
    metrics: bool,
    metrics_allow: tuple[str, ...],
    metrics_dir: str | None,
) -> None:
    """Serve the key server over HTTPS (POST x3dh/octet-stream on any path).

    Probes: GET /healthz (live), GET /readyz (database up, schema current); GET /metrics
    with --metrics.
    """
    from pylime.keyserver.app import HttpLimits, ServerConfig
    from pylime.keyserver.service import serve as run
    from pylime.keyserver.tls import certificate_fingerprint, ensure_self_signed

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    chosen = sum((tls_cert is not None, self_signed, plain_http))
    if chosen > 1:
        raise click.UsageError("choose one of --tls-cert/--tls-key, --self-signed, --plain-http")
    if not open_ and not realm:
        raise click.UsageError("--realm DOMAIN is required unless --open is given")
    if metrics:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--metrics needs prometheus-client: pip install 'pylime[server]'"
            ) from None
    is_pg = db.startswith(("postgresql://", "postgres://"))
    if workers > 1 and db in ("", ":memory:"):
        raise click.UsageError("--workers > 1 needs an SQLite file or PostgreSQL (--db)")
    try:
        config = ServerConfig(
            db=db if is_pg or db == ":memory:" else str(Path(db).resolve()),
            realm=realm,
            open=open_,
            max_body=max_body,
            max_opks_per_device=max_opks,
            max_devices_per_account=max_devices_per_account,
            max_device_id_length=max_device_id_length,
            max_account_bytes=max_account_bytes,
            opk_budget=opk_budget,
            opk_budget_window=opk_budget_window,
            lifetime=lifetime,
            nonce_lifetime=nonce_lifetime,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            shared_state=shared_state,
            max_nonces_per_account=max_nonces_per_account,
            nonce_secret_file=nonce_secret_file and str(Path(nonce_secret_file).resolve()),
            algorithms=tuple(a.upper() for a in algorithms) or ("SHA-256", "MD5"),
            metrics=metrics,
            metrics_allow=metrics_allow or ("127.0.0.0/8", "::1/128"),
            http=HttpLimits(
                max_header_bytes=max_header_bytes,
                request_line_timeout=request_line_timeout,
                header_timeout=header_timeout,
                idle_timeout=idle_timeout,
                keep_alive_timeout=keep_alive_timeout,
                max_connections_per_address=max_connections_per_address,
            ),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    # Open once here: creates the schema before workers race for it, and fails early.
    server = _open(config.db)
    try:
        if not open_ and not any(r == realm for _, r in server.storage.list_accounts()):
            click.echo(
                f"warning: no account in realm {realm!r} yet; add one with "
                f"`pylime keyserver account add USER --realm {realm} --db ...`",
                err=True,
            )
    finally:
        server.close()

    if not plain_http and tls_cert is None:
        if tls_dir is None:
            tls_dir = str(Path(db).resolve().parent) if not is_pg and db != ":memory:" else "."
        names = ["localhost", "127.0.0.1"] + (
            [host] if host not in ("localhost", "127.0.0.1", "0.0.0.0", "::") else []
        )
        cert, key = ensure_self_signed(tls_dir, names)
        tls_cert, tls_key = str(cert), str(key)
        click.echo(f"self-signed certificate: {cert}", err=True)
        click.echo(f"  SHA-256 fingerprint {certificate_fingerprint(cert)}", err=True)
    mode = "without authentication (--open)" if open_ else f"digest realm {realm!r}"
    scheme = "http" if plain_http else "https"
    click.echo(f"key server on {scheme}://{host}:{port}/ ({mode}, {workers} worker(s))", err=True)
    try:
        run(
            config,
            host,
            port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            workers=workers,
            log_level=log_level,
            log_format=log_format,
            metrics_dir=metrics_dir,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@keyserver.group()
def account() -> None:
    """Manage the digest accounts (the store keeps HA1 values, never passwords)."""


_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print one JSON object on stdout (docs/cli.md).")


def _report(as_json: bool, data: dict[str, object], human: str) -> None:
    """Print a success for people, or as the CLI's JSON shape {"ok": true, ...}."""
    click.echo(json.dumps({"ok": True, **data}) if as_json else human)


@account.command("add")
@click.argument("username")
@click.option("--realm", help="SIP domain (or give USER@DOMAIN).")
@_db_option
@_json_option
def account_add(username: str, realm: str | None, db: str, as_json: bool) -> None:
    """Create or update an account. The password comes from $PYLIME_PASSWORD or a prompt."""
    from pylime.keyserver.auth import make_account

    username, realm = _split_account(username, realm)
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise click.UsageError(f"no terminal to prompt on: set ${PASSWORD_ENV}")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("the password must not be empty")
    try:
        acct = make_account(username, realm, password)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    server = _open(db)
    try:
        created = server.storage.put_account(acct)
    finally:
        server.close()
    _report(as_json, {"account": f"{username}@{realm}", "created": created},
            f"{'added' if created else 'updated'} {username}@{realm}")


@account.command("remove")
@click.argument("username")
@click.option("--realm", help="SIP domain (or give USER@DOMAIN).")
@_db_option
@_json_option
def account_remove(username: str, realm: str | None, db: str, as_json: bool) -> None:
    """Delete an account (its devices' keys stay until they are deleted or expire)."""
    username, realm = _split_account(username, realm)
    server = _open(db)
    try:
        removed = server.storage.remove_account(username, realm)
    finally:
        server.close()
    if not removed:
        raise click.ClickException(f"no account {username}@{realm}")
    _report(as_json, {"account": f"{username}@{realm}", "removed": True},
            f"removed {username}@{realm}")


@account.command("list")
@_db_option
@_json_option
def account_list(db: str, as_json: bool) -> None:
    """List the accounts as USER@REALM, one per line."""
    server = _open(db)
    try:
        accounts = [f"{username}@{realm}" for username, realm in server.storage.list_accounts()]
    finally:
        server.close()
    if as_json or accounts:
        _report(as_json, {"accounts": accounts}, "\n".join(accounts))


# ---------------------------------------------------------------------------- operations


def _open_storage(db: str, *, migrate: bool = False):  # type: ignore[no-untyped-def]
    """The storage behind ``--db``, with failures (schema included) as clean CLI errors."""
    from pylime.keyserver import StorageError
    from pylime.keyserver.core import open_storage

    try:
        return open_storage(db, migrate=migrate)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None


@keyserver.command()
@_db_option
@click.option("--check", is_flag=True, help="Only say whether steps are pending (exit 1 if so).")
@_json_option
def migrate(db: str, check: bool, as_json: bool) -> None:
    """Bring the database's schema up to this version's, one transactional step at a time.

    Run it with the servers stopped (or before starting the new version): servers refuse a
    database whose schema is older or newer than theirs.
    """
    from pylime.keyserver import StorageError, schema
    from pylime.keyserver.core import open_storage

    latest = schema.SCHEMA_VERSION
    if check:
        try:
            storage = open_storage(db)
        except schema.SchemaTooOldError as exc:
            pending = [s.version for s in schema.STEPS if s.version > exc.found]
            _report(as_json, {"version": exc.found, "latest": latest, "pending": pending},
                    f"schema version {exc.found}; pending steps: "
                    + ", ".join(map(str, pending)))
            sys.exit(1)
        except StorageError as exc:
            raise click.ClickException(str(exc)) from None
        version = storage.schema_version()
        storage.close()
        _report(as_json, {"version": version, "latest": latest, "pending": []},
                f"schema version {version}: up to date")
        return
    storage = _open_storage(db, migrate=True)
    try:
        after = storage.schema_version()
    finally:
        storage.close()
    applied = storage.applied_steps
    before = applied[0] - 1 if applied else after
    _report(as_json, {"from": before, "to": after, "applied": applied},
            f"schema version {before} -> {after} (steps {', '.join(map(str, applied))})"
            if applied else f"schema version {after}: up to date")


@keyserver.command("export")
@_db_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="-",
              show_default=True, help="File to write (created owner-only), - for stdout.")
def export_cmd(db: str, output: str) -> None:
    """Write all accounts, devices and OPks as JSON lines (docs/deploy.md says the format)."""
    from pylime.keyserver import StorageError
    from pylime.keyserver.transfer import dump

    storage = _open_storage(db)
    try:
        if output == "-":
            counts = dump(storage, sys.stdout)
        else:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds HA1s
            with open(fd, "w", encoding="utf-8", newline="\n") as out:
                counts = dump(storage, out)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        storage.close()
    click.echo("exported " + ", ".join(f"{n} {t}" for t, n in counts.items()), err=True)


@keyserver.command("import")
@_db_option
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True))
def import_cmd(db: str, source: str) -> None:
    """Load an export file into an empty database (all or nothing)."""
    from pylime.keyserver import StorageError
    from pylime.keyserver.transfer import load

    storage = _open_storage(db)
    try:
        if source == "-":
            counts = load(storage, sys.stdin)
        else:
            with open(source, encoding="utf-8") as lines:
                counts = load(storage, lines)
    except (StorageError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"nothing imported: {exc}") from None
    finally:
        storage.close()
    click.echo("imported " + ", ".join(f"{n} {t}" for t, n in counts.items()), err=True)


@keyserver.command()
@_db_option
@click.option("--low-opk", "below", type=click.IntRange(0), default=None, metavar="N",
              help="Only devices holding fewer than N OPks.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many rows.")
@_json_option
def report(db: str, below: int | None, limit: int | None, as_json: bool) -> None:
    """Devices by OPk stock, fewest first: who will soon be fetched without an OPk."""
    from pylime.keyserver import StorageError

    storage = _open_storage(db)
    try:
        rows = storage.opk_stock(below=below, limit=limit)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        storage.close()
    curves = {1: "c25519", 2: "c448"}
    if as_json:
        devices = [
            {"device": r.device_id, "curve": curves.get(int(r.curve), int(r.curve)), "opks": r.opks}
            for r in rows
        ]
        _report(True, {"below": below, "devices": devices}, "")
        return
    if not rows:
        click.echo("no device" + (f" holds fewer than {below} OPks" if below is not None else ""))
        return
    width = max(len(r.device_id) for r in rows)
    click.echo(f"{'OPks':>5}  {'curve':<6}  device")
    for r in rows:
        click.echo(f"{r.opks:>5}  {curves.get(int(r.curve), str(int(r.curve))):<6}  "
                   f"{r.device_id:<{width}}".rstrip())
