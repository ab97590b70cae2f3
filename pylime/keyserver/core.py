"""The key server's sans-IO core: X3DH request bytes in, answer bytes out.

:class:`KeyServer` implements lime 5.1.64's key-server protocol over a :class:`Storage`.
It never raises on bad input and never blocks on anything but its database: every malformed
request gets an X3DH error message (``01 ff <curve> <code> <text>``). It is also a transport
(``post``), so a Manager can talk to it in-process without HTTP.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from pylime.deviceid import is_canonical_device_id
from pylime.keyserver.protocol import (
    CONTENT_TYPE,
    Ack,
    Bundle,
    DeleteUser,
    DeprecatedRegisterUser,
    ErrorCode,
    ErrorMessage,
    GetPeerBundle,
    GetSelfOPks,
    MessageType,
    PeerBundle,
    PostOPks,
    PostSPk,
    RegisterUser,
    Request,
    Response,
    SelfOPks,
    X3DHParseError,
    parse_request,
)
from pylime.keyserver.storage import (
    AccountQuotas,
    AddOutcome,
    OPkBudget,
    RegisterOutcome,
    SQLiteStorage,
    Storage,
    StorageError,
    UserKeys,
    is_storable_device_id,
    owner_key,
)
from pylime.types import Curve

__all__ = [
    "DEFAULT_MAX_ACCOUNT_BYTES",
    "DEFAULT_MAX_DEVICES_PER_ACCOUNT",
    "DEFAULT_MAX_DEVICE_ID_LENGTH",
    "DEFAULT_MAX_OPKS_PER_DEVICE",
    "DEFAULT_OPK_BUDGET",
    "DEFAULT_OPK_BUDGET_WINDOW",
    "KeyServer",
    "open_storage",
]

log = logging.getLogger("pylime.keyserver")

# Upstream's cap; it must stay at or above lime's default low limit plus batch (100 + 25).
DEFAULT_MAX_OPKS_PER_DEVICE = 200
# Quotas per account (docs/deploy.md, "Abuse limits"). A Linphone GRUU is
# sip:<user>@<domain>;gr=urn:uuid:<36> = 54 bytes + user + domain: 256 leaves 202 bytes for
# user and domain, about twice what real accounts use.
DEFAULT_MAX_DEVICE_ID_LENGTH = 256
# (curve, device) registrations: a person's phones, tablets and desktops on both curves.
DEFAULT_MAX_DEVICES_PER_ACCOUNT = 32
# Key material and ids: ~20 curve448 devices with a full stock of 200 OPks (12.3 KB each),
# 35 on curve25519 (7.4 KB); lime keeps ~100-125 OPks per device, half that.
DEFAULT_MAX_ACCOUNT_BYTES = 256 * 1024
# OPks one requester (an account) may take: 100 at once, 100 more an hour. Past it bundles
# go out without OPk, as lime allows; its default low limit is 100 OPks per device.
DEFAULT_OPK_BUDGET = 100
DEFAULT_OPK_BUDGET_WINDOW = 3600.0


def open_storage(db: str | os.PathLike[str], *, migrate: bool = False) -> Storage:
    """The backend for a database name: a ``postgresql://`` URL, or an SQLite path / ``:memory:``.

    ``migrate``: bring an older schema up to date instead of refusing it
    (:class:`pylime.keyserver.schema.SchemaTooOldError`).
    """
    name = os.fspath(db)
    if name.startswith(("postgresql://", "postgres://")):
        from pylime.keyserver.postgres import PostgresStorage  # psycopg is optional

        return PostgresStorage(name, migrate=migrate)
    return SQLiteStorage(name, migrate=migrate)


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


class KeyServer:
    """lime's X3DH key server, without the HTTP: answers request bodies with response bodies.

    Args:
        db: an SQLite path (default ``":memory:"``), a ``postgresql://`` URL, or a Storage.
        max_opks_per_device: the most OPks stored for one device; more is refused with
            resource_limit_reached.
        max_devices_per_account: the most (curve, device) registrations of one account
            (the ``user@domain`` of the device ids); 0 = no limit.
        max_device_id_length: the longest device id registered, in UTF-8 bytes.
        max_account_bytes: the most bytes of ids and keys one account stores; 0 = no limit.
        opk_budget: the OPks one requester may take at once, refilled at this many per
            ``opk_budget_window`` seconds; past it bundles go out without OPk. 0 = no limit.
        lifetime: seconds after registration before a device is deleted, as upstream's test
            server does (0 = never).
        clock: the time source, replaceable in tests.

    Device ids must be canonical (:mod:`pylime.deviceid`). Every quota refusal is
    resource_limit_reached and stores nothing. Thread-safe: the storage serialises or
    isolates concurrent requests; quotas and budgets live in the storage, so they hold
    across every server sharing one database.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Storage = ":memory:",
        *,
        max_opks_per_device: int = DEFAULT_MAX_OPKS_PER_DEVICE,
        max_devices_per_account: int = DEFAULT_MAX_DEVICES_PER_ACCOUNT,
        max_device_id_length: int = DEFAULT_MAX_DEVICE_ID_LENGTH,
        max_account_bytes: int = DEFAULT_MAX_ACCOUNT_BYTES,
        opk_budget: int = DEFAULT_OPK_BUDGET,
        opk_budget_window: float = DEFAULT_OPK_BUDGET_WINDOW,
        lifetime: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_opks_per_device < 0 or max_opks_per_device > 0xFFFF:
            raise ValueError("max_opks_per_device must be within 0..65535")
        if not 1 <= max_device_id_length <= 0xFFFF:
            raise ValueError("max_device_id_length must be within 1..65535")
        if max_devices_per_account < 0 or max_account_bytes < 0 or opk_budget < 0:
            raise ValueError("quotas and the OPk budget must be >= 0 (0 = no limit)")
        if opk_budget_window <= 0:
            raise ValueError("opk_budget_window must be > 0")
        if lifetime < 0:
            raise ValueError("lifetime must be >= 0")
        self.storage: Storage = db if isinstance(db, Storage) else open_storage(db)
        self.max_opks_per_device = max_opks_per_device
        self.max_device_id_length = max_device_id_length
        self.quotas = AccountQuotas(max_devices_per_account, max_account_bytes)
        self.opk_budget = OPkBudget(opk_budget, opk_budget_window) if opk_budget else None
        self._next_budget_sweep = 0.0
        self.lifetime = lifetime
        self._clock = clock
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0

    def __repr__(self) -> str:
        return f"KeyServer({self.storage!r})"

    # ------------------------------------------------------------------ public interface

    def post(self, url: str, sender: str, body: bytes) -> tuple[int, bytes]:
        """The transport interface: every X3DH answer, error or not, travels as HTTP 200."""
        return 200, self.handle(sender, body)

    def handle(
        self, sender: str | None, body: bytes, content_type: str | None = CONTENT_TYPE
    ) -> bytes:
        """Answer one request body sent by device ``sender``; never raises."""
        curve_byte = body[2] if len(body) >= 3 else 0
        try:
            if _media_type(content_type) != CONTENT_TYPE:
                return ErrorMessage(
                    curve_byte, ErrorCode.BAD_CONTENT_TYPE, f"content type must be {CONTENT_TYPE}"
                ).to_bytes()
            try:
                request = parse_request(body)
            except X3DHParseError as exc:
                return ErrorMessage(exc.curve, exc.code, str(exc)).to_bytes()
            return self.handle_request(sender, request).to_bytes()
        except Exception:  # last resort: a bug must not take the server down
            log.exception("internal error while answering a key-server request")
            return ErrorMessage(curve_byte, ErrorCode.SERVER_FAILURE, "internal error").to_bytes()

    def handle_request(
        self, sender: str | None, request: Request, *, requester: str | None = None
    ) -> Response:
        """Answer a parsed request; storage failures become db_error.

        ``requester`` names whoever is charged for the OPks a getPeerBundle takes (the HTTP
        layer passes the authenticated account); by default, the owner of ``sender``.
        """
        curve = request.curve
        if not sender or not is_canonical_device_id(sender):
            # The door: only sip[s]:user@host[;gr=...] ids are stored, and act.
            return ErrorMessage(curve, ErrorCode.MISSING_SENDER_ID, "no valid sender device id")
        self._maybe_expire()
        try:
            return self._dispatch(sender, request, requester or owner_key(sender) or sender)
        except StorageError as exc:
            log.error("storage failure on %s: %s", type(request).__name__, exc)
            return ErrorMessage(curve, ErrorCode.DB_ERROR, "database error")

    def opk_count(self, device_id: str) -> int:
        """How many OPks are stored for ``device_id`` on any curve; 0 if unknown."""
        if not is_storable_device_id(device_id):
            return 0
        return self.storage.opk_count(device_id)

    def expire(self) -> int:
        """Delete the devices whose lifetime has passed; return how many."""
        if self.lifetime <= 0:
            return 0
        removed = self.storage.expire_users(self._clock())
        if removed:
            log.info("expired %d device(s)", removed)
        return removed

    def close(self) -> None:
        """Close the storage; idempotent."""
        self.storage.close()

    def __enter__(self) -> KeyServer:  # noqa: PYI034 (typing.Self needs 3.11)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _maybe_expire(self) -> None:
        """Sweep expired devices now and then, so no timer thread is needed."""
        if self.lifetime <= 0:
            return
        now = self._clock()
        with self._sweep_lock:
            if now < self._next_sweep:
                return
            # At most one sweep a second: expired devices vanish within a second, and a
            # busy server does not pay a write transaction per request for it.
            self._next_sweep = now + min(self.lifetime / 10, 1.0)
        self.expire()

    def _dispatch(self, sender: str, request: Request, requester: str) -> Response:
        curve = request.curve
        if isinstance(request, RegisterUser):
            return self._register(sender, request)
        if isinstance(request, DeleteUser):
            existed = self.storage.delete_user(curve, sender)
            log.info(
                "deleteUser %s (curve %d): %s", sender, curve, "deleted" if existed else "absent"
            )
            return Ack(curve, MessageType.DELETE_USER)
        if isinstance(request, PostSPk):
            if not self.storage.set_spk(
                curve, sender, request.spk, request.spk_sig, request.spk_id
            ):
                return _not_found(curve, sender)
            log.info("postSPk %s (curve %d): SPk id %d", sender, curve, request.spk_id)
            return Ack(curve, MessageType.POST_SPK)
        if isinstance(request, PostOPks):
            outcome = self.storage.add_opks(
                curve,
                sender,
                request.opks,
                self.max_opks_per_device,
                max_account_bytes=self.quotas.max_bytes,
            )
            if outcome is AddOutcome.NOT_FOUND:
                return _not_found(curve, sender)
            if outcome is AddOutcome.LIMIT:
                return _limit(curve)
            if outcome is AddOutcome.BYTES_QUOTA:
                return _limit(curve, "this account stores its most bytes of keys")
            log.info("postOPks %s (curve %d): %d OPks", sender, curve, len(request.opks))
            return Ack(curve, MessageType.POST_OPKS)
        if isinstance(request, GetPeerBundle):
            return self._bundles(request, requester)
        if isinstance(request, GetSelfOPks):
            ids = self.storage.opk_ids(curve, sender)
            if ids is None:
                return _not_found(curve, sender)
            return SelfOPks(curve, tuple(ids))
        if isinstance(request, DeprecatedRegisterUser):
            return ErrorMessage(
                curve,
                ErrorCode.BAD_REQUEST,
                "the deprecated registerUser (0x01) is not supported; send registerUser (0x09)",
            )
        raise AssertionError(f"unhandled request {type(request).__name__}")

    def _register(self, sender: str, request: RegisterUser) -> Response:
        curve = request.curve
        if len(request.opks) > self.max_opks_per_device:
            return _limit(curve)
        if len(sender.encode("utf-8")) > self.max_device_id_length:
            return _limit(curve, f"device id longer than {self.max_device_id_length} bytes")
        expires_at = self._clock() + self.lifetime if self.lifetime > 0 else None
        keys = UserKeys(request.ik, request.spk, request.spk_sig, request.spk_id)
        outcome = self.storage.register_user(
            curve,
            sender,
            keys,
            request.opks,
            expires_at,
            owner=owner_key(sender),
            quotas=self.quotas if self.quotas.max_devices or self.quotas.max_bytes else None,
        )
        if outcome is RegisterOutcome.CONFLICT:
            return ErrorMessage(
                curve, ErrorCode.USER_ALREADY_IN, "device already registered with other keys"
            )
        if outcome is RegisterOutcome.DEVICE_QUOTA:
            return _limit(curve, "this account has its most devices")
        if outcome is RegisterOutcome.BYTES_QUOTA:
            return _limit(curve, "this account stores its most bytes of keys")
        log.info(
            "registerUser %s (curve %d): %s, %d OPks",
            sender,
            curve,
            outcome.value,
            len(request.opks) if outcome is RegisterOutcome.CREATED else 0,
        )
        return Ack(curve, MessageType.REGISTER_USER)

    def _bundles(self, request: GetPeerBundle, requester: str) -> Response:
        curve = request.curve
        # Each distinct device once, in the order first asked: a repeat would take one more
        # OPk of the same device. lime matches bundles to devices by id, so its own requests
        # with a repeated recipient still get the one session they need.
        distinct = list(dict.fromkeys(request.device_ids))
        # Ids that cannot have been registered are answered as unknown without asking the
        # database (flag 2: lime would ask again for a device left out).
        lookup = [i for i in distinct if is_canonical_device_id(i)]
        now = self._clock()
        found = iter(
            self.storage.take_bundles(
                curve, lookup, requester=requester, budget=self.opk_budget, now=now
            )
            if lookup
            else []
        )
        self._maybe_forget_budgets(now)
        bundles = []
        for device_id in distinct:
            stored = next(found) if is_canonical_device_id(device_id) else None
            if stored is None:
                bundles.append(Bundle(device_id))
            else:
                k = stored.keys
                bundles.append(Bundle(device_id, k.ik, k.spk, k.spk_id, k.spk_sig, stored.opk))
        log.debug(
            "getPeerBundle (curve %d): %d id(s), %d distinct",
            curve,
            len(request.device_ids),
            len(bundles),
        )
        return PeerBundle(curve, tuple(bundles))

    def _maybe_forget_budgets(self, now: float) -> None:
        """Drop budget rows full again, at most once a minute per server (bounds the table)."""
        if self.opk_budget is None or now < self._next_budget_sweep:
            return
        with self._sweep_lock:
            if now < self._next_budget_sweep:
                return
            self._next_budget_sweep = now + 60.0
        self.storage.forget_budgets(now - self.opk_budget.window)


def _not_found(curve: Curve, sender: str) -> ErrorMessage:
    return ErrorMessage(curve, ErrorCode.USER_NOT_FOUND, "device not registered")


def _limit(curve: Curve, why: str = "too many OPks for this device") -> ErrorMessage:
    return ErrorMessage(curve, ErrorCode.RESOURCE_LIMIT_REACHED, why)
