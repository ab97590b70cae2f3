"""lime 5.1.64's SQLite schema and the row-level operations the reference needs (§5).

The DDL is the exact text liblime 5.1.64 stores in ``sqlite_master`` (dumped from a
database the binary created), so a database moves between backends unchanged. Every
public manager operation runs in one transaction (:meth:`Db.transaction`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pylime import database, errors
from pylime.database import Durability
from pylime.reference import kem
from pylime.reference.hybrid import HybridSession
from pylime.reference.primitives import SIZES, XKey, random_id, wipe
from pylime.reference.ratchet import MAX_MESSAGES_RECEIVED_AFTER_SKIP, Session
from pylime.types import Curve, PeerStatus

__all__ = ["DB_USER_VERSION", "SCHEMA", "Db", "LocalUser"]

DB_USER_VERSION = 0x000001
INACTIVE_USER_BIT = 0x0100
CURVE_ID_BYTE = 0x00FF
INVALID_IK = b"\x00"
DR_SESSION_LIMBO_DAYS = 30
SPK_LIFETIME_DAYS = 7
SPK_LIMBO_DAYS = 30
OPK_LIMBO_DAYS = 37
_ED_PUB_SIZE = {int(c): SIZES[c].ed_pub for c in SIZES}
#: sessions whose current ratchet key (curve448) stays loaded between operations
RATCHET_KEY_CACHE = 256

_T = " \t\t\t\t"
# In the order lime creates them (db_module_version first, then lime's tables).
SCHEMA = [
    (
        "CREATE TABLE IF NOT EXISTS db_module_version(name VARCHAR(16) PRIMARY KEY,"
        "version UNSIGNED INTEGER NOT NULL)"
    ),
    "CREATE TABLE DR_sessions(" + _T + "Did INTEGER NOT NULL DEFAULT 0," + _T
    + "Uid INTEGER NOT NULL DEFAULT 0," + _T
    + "sessionId INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL," + _T
    + "Ns UNSIGNED INTEGER NOT NULL," + _T + "Nr UNSIGNED INTEGER NOT NULL," + _T
    + "PN UNSIGNED INTEGER NOT NULL," + _T + "DHr BLOB NOT NULL," + _T + "DHs BLOB NOT NULL,"
    + _T + "RK BLOB NOT NULL," + _T + "CKs BLOB NOT NULL," + _T + "CKr BLOB NOT NULL," + _T
    + "AD BLOB NOT NULL," + _T + "Status INTEGER NOT NULL DEFAULT 1," + _T
    + "timeStamp DATETIME DEFAULT CURRENT_TIMESTAMP," + _T + "X3DHInit BLOB DEFAULT NULL,"
    + _T + "FOREIGN KEY(Did) REFERENCES lime_PeerDevices(Did) ON UPDATE CASCADE ON DELETE "
    "CASCADE," + _T + "FOREIGN KEY(Uid) REFERENCES lime_LocalUsers(Uid) ON UPDATE CASCADE ON "
    "DELETE CASCADE);",
    "CREATE TABLE DR_MSk_DHr(" + _T + "DHid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL," + _T
    + "sessionId INTEGER NOT NULL DEFAULT 0," + _T + "DHr BLOB NOT NULL," + _T
    + "received UNSIGNED INTEGER NOT NULL DEFAULT 0," + _T
    + "FOREIGN KEY(sessionId) REFERENCES DR_sessions(sessionId) ON UPDATE CASCADE ON DELETE "
    "CASCADE);",
    "CREATE TABLE DR_MSk_MK(" + _T + "DHid INTEGER NOT NULL," + _T + "Nr INTEGER NOT NULL,"
    + _T + "MK BLOB NOT NULL," + _T + "PRIMARY KEY( DHid , Nr )," + _T
    + "FOREIGN KEY(DHid) REFERENCES DR_MSk_DHr(DHid) ON UPDATE CASCADE ON DELETE CASCADE);",
    "CREATE TABLE lime_LocalUsers(" + _T + "Uid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
    + _T + "UserId TEXT NOT NULL," + _T + "Ik BLOB NOT NULL," + _T + "server TEXT NOT NULL,"
    + _T + "curveId INTEGER NOT NULL DEFAULT 0);",
    "CREATE TABLE lime_PeerDevices(" + _T + "Did INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
    + _T + "DeviceId TEXT NOT NULL," + _T + "Ik BLOB NOT NULL," + _T
    + "Status UNSIGNED INTEGER DEFAULT 0);",
    "CREATE TABLE X3DH_SPK(" + _T + "SPKid UNSIGNED INTEGER PRIMARY KEY NOT NULL," + _T
    + "SPK BLOB NOT NULL," + _T + "timeStamp DATETIME DEFAULT CURRENT_TIMESTAMP," + _T
    + "Status INTEGER NOT NULL DEFAULT 1," + _T + "Uid INTEGER NOT NULL," + _T
    + "FOREIGN KEY(Uid) REFERENCES lime_LocalUsers(Uid) ON UPDATE CASCADE ON DELETE CASCADE);",
    "CREATE TABLE X3DH_OPK(" + _T + "OPKid UNSIGNED INTEGER PRIMARY KEY NOT NULL," + _T
    + "OPK BLOB NOT NULL," + _T + "Uid INTEGER NOT NULL," + _T
    + "Status INTEGER NOT NULL DEFAULT 1," + _T + "timeStamp DATETIME DEFAULT CURRENT_TIMESTAMP,"
    + _T + "FOREIGN KEY(Uid) REFERENCES lime_LocalUsers(Uid) ON UPDATE CASCADE ON DELETE "
    "CASCADE);",
]


# lime 5.4 keeps a hybrid session's KEM state in DR_sessions.DHrStatus and its timeStamp; the
# reference keeps lime 5.1.64's DR_sessions as it is (liblime opens the file) and puts that
# state beside it, in a table of its own created with the first hybrid session.
KEM_SESSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS pylime_KEM_sessions(sessionId INTEGER PRIMARY KEY NOT NULL,"
    " DHrStatus INTEGER NOT NULL DEFAULT 0, lastKEM INTEGER NOT NULL DEFAULT 0,"
    " FOREIGN KEY(sessionId) REFERENCES DR_sessions(sessionId) ON UPDATE CASCADE"
    " ON DELETE CASCADE);"
)


def published_prekey(curve: Curve, blob: bytes) -> bytes:
    """The public key a stored SPk/OPk blob publishes: the X key, or EC key ‖ KEM key.

    Stored blobs are lime's: public ‖ private (5.1), EC public ‖ EC private ‖ KEM public ‖
    KEM private (5.4 hybrids).
    """
    x = SIZES[curve].x_pub
    if not curve.is_post_quantum:
        return bytes(blob[:x])
    pk = kem.SIZES[kem.KEM_OF[curve]].pk
    return bytes(blob[:x]) + bytes(blob[2 * x:2 * x + pk])


AnySession = Session | HybridSession


@dataclass
class LocalUser:
    """A ``lime_LocalUsers`` row with its identity key split into public and seed."""

    uid: int
    device_id: str
    curve: Curve
    url: str
    active: bool
    ik_pub: bytes = field(repr=False)
    ik_priv: bytearray = field(repr=False)


class Db:
    """One connection to a lime database, with the schema created or checked on open.

    On curve448 it keeps, for the :data:`RATCHET_KEY_CACHE` sessions used last, the loaded
    OpenSSL key of their current ratchet key (DHs): loading a raw X448 key costs a scalar
    multiplication, and a DH ratchet step needs the key saved by the previous one. The
    secret is the one the session's row holds; an entry is used only for the row whose
    DHs public key it matches, replaced at each ratchet step and dropped by
    :meth:`forget_keys` (deletions, close). OpenSSL clears a key when it frees it.
    """

    def __init__(self, path: str, conn: sqlite3.Connection | None = None,
                 durability: Durability = "wal") -> None:
        if conn is None:
            database.prepare(path, durability)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn = conn
        self.lock = threading.RLock()
        self.conn.execute("PRAGMA foreign_keys = ON;")
        self.conn.execute(f"PRAGMA synchronous = {database.synchronous(durability)};")
        self._depth = 0
        self._ratchet_keys: OrderedDict[int, tuple[bytes, XKey]] = OrderedDict()
        # device id -> (Uid, curveId, server, public Ik): never a secret (see load_user)
        self._users: dict[str, tuple[int, int, str, bytes]] = {}
        with self.transaction():
            self.conn.execute(SCHEMA[0])
            row = self.conn.execute(
                "SELECT version FROM db_module_version WHERE name='lime'"
            ).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO db_module_version(name,version) VALUES('lime',?)",
                    (DB_USER_VERSION,),
                )
                for ddl in SCHEMA[1:]:
                    self.conn.execute(ddl)
            elif row[0] < DB_USER_VERSION:
                self.conn.execute(
                    "UPDATE db_module_version SET version = ? WHERE name='lime'",
                    (DB_USER_VERSION,),
                )

    @classmethod
    def snapshot(cls, path: str) -> Db:
        """An in-memory copy of the database at ``path``: reads it, never writes it."""
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            source.backup(copy)
        finally:
            source.close()
        return cls(":memory:", copy)

    def close(self) -> None:
        """Close the connection (and drop the loaded keys)."""
        self.forget_keys()
        self.conn.close()

    def forget_keys(self) -> None:
        """Drop every loaded ratchet key (after sessions were deleted, on close)."""
        self._ratchet_keys.clear()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one); rolled back on any exception."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self._depth = 0
                self._users.clear()  # it may have read what the rollback undoes
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ local users

    def users_changed(self) -> None:
        """Forget what :meth:`load_user` remembers: call after writing ``lime_LocalUsers``."""
        self._users.clear()

    def load_user(self, device_id: str, all_status: bool = False,
                  secret: bool = True) -> LocalUser:
        """The local user, active only unless ``all_status``; its Ik seed only if ``secret``.

        The public columns are remembered between calls (one manager per database, and
        every write to the table calls :meth:`users_changed`); the seed is read from the
        database each time it is asked for (:meth:`load_seed`), and never kept.

        Raises:
            UserNotFoundError: no such (active) user.
        """
        cached = self._users.get(device_id)
        if cached is None:
            row = self.conn.execute(
                "SELECT Uid,curveId,server,Ik FROM lime_LocalUsers WHERE UserId = ? LIMIT 1;",
                (device_id,),
            ).fetchone()
            if row is None:
                raise errors.UserNotFoundError(f"no local user {device_id!r}")
            uid, curve_id, url, ik = row
            size = _ED_PUB_SIZE.get(curve_id & CURVE_ID_BYTE, 0)
            cached = (int(uid), int(curve_id), str(url), bytes(ik[:size]))
            self._users[device_id] = cached
        uid, curve_id, url, ik_pub = cached
        active = not curve_id & INACTIVE_USER_BIT
        if not active and not all_status:
            raise errors.UserNotFoundError(f"local user {device_id!r} is not active")
        try:
            curve = Curve(curve_id & CURVE_ID_BYTE)
        except ValueError:
            raise errors.InternalError(
                f"local user {device_id!r} has an unknown curve id in the database"
            ) from None
        user = LocalUser(uid, device_id, curve, url, active, ik_pub, bytearray())
        if secret:
            self.load_seed(user)
        return user

    def load_seed(self, user: LocalUser) -> None:
        """Read the user's Ik seed into ``user.ik_priv`` (the caller wipes it)."""
        if user.ik_priv:
            return
        row = self.conn.execute(
            "SELECT Ik FROM lime_LocalUsers WHERE Uid = ? LIMIT 1;", (user.uid,)).fetchone()
        e = SIZES[user.curve].ed_pub
        if row is None or bytes(row[0][:e]) != user.ik_pub:
            raise errors.InternalError(f"local user {user.device_id!r} changed underneath")
        user.ik_priv[:] = row[0][e:]

    def all_local_devices(self) -> list[str]:
        """Every local user's device id."""
        return [r[0] for r in self.conn.execute("SELECT UserId FROM lime_LocalUsers;")]

    # ------------------------------------------------------------------ peer devices

    def peer_status(self, device_id: str) -> PeerStatus:
        """Stored status, or UNKNOWN."""
        row = self.conn.execute(
            "SELECT Status FROM Lime_PeerDevices WHERE DeviceId = ? LIMIT 1;", (device_id,)
        ).fetchone()
        return _status(device_id, None if row is None else row[0])

    def check_peer_device(self, device_id: str, ik: bytes, update_invalid: bool = False) -> int:
        """Did of a known device with this Ik, 0 if unknown (or placeholder Ik and not updating).

        Raises:
            IdentityKeyChangedError: the device is known with another Ik.
        """
        row = self.conn.execute(
            "SELECT Ik,Did FROM lime_PeerDevices WHERE DeviceId = ? LIMIT 1;", (device_id,)
        ).fetchone()
        if row is None:
            return 0
        stored, did = bytes(row[0]), row[1]
        if stored == INVALID_IK:
            if update_invalid:
                self.conn.execute(
                    "UPDATE Lime_PeerDevices SET Ik = ? WHERE Did = ?;", (ik, did)
                )
                return int(did)
            return 0
        if stored != ik:
            raise errors.IdentityKeyChangedError(f"peer device {device_id!r} changed its Ik")
        return int(did)

    def store_peer_device(self, device_id: str, ik: bytes) -> int:
        """Did of the device, inserted (untrusted) if new."""
        did = self.check_peer_device(device_id, ik, update_invalid=True)
        if did:
            return did
        cur = self.conn.execute(
            "INSERT INTO lime_PeerDevices(DeviceId,Ik) VALUES (?,?) ", (device_id, ik)
        )
        return int(cur.lastrowid or 0)

    # ------------------------------------------------------------------ SPk / OPk

    def _used_ids(self, table: str, column: str) -> set[int]:
        return {int(r[0]) for r in self.conn.execute(f"SELECT {column} FROM {table}")}

    def new_id(self, table: str, column: str, taken: set[int] | None = None) -> int:
        """A random 31-bit id unused in the whole table (all users)."""
        used = taken if taken is not None else self._used_ids(table, column)
        while True:
            candidate = random_id()
            if candidate not in used:
                used.add(candidate)
                return candidate

    def insert_spk(self, uid: int, pub: bytes, priv: bytes) -> int:
        """Stale the active SPk and insert a new active one; return its id."""
        spk_id = self.new_id("X3DH_SPK", "SPKid")
        self.conn.execute(
            "UPDATE X3DH_SPK SET Status = 0, timeStamp = CURRENT_TIMESTAMP "
            "WHERE Uid = ? AND Status = 1;",
            (uid,),
        )
        self.conn.execute(
            "INSERT INTO X3DH_SPK(SPKid,SPK,Uid) VALUES (?,?,?) ", (spk_id, pub + priv, uid)
        )
        return spk_id

    def active_spk(self, uid: int, curve: Curve) -> tuple[int, bytes] | None:
        """(id, public key) of the user's active SPk."""
        row = self.conn.execute(
            "SELECT SPk, SPKid FROM X3DH_SPk WHERE Uid = ? AND Status = 1 LIMIT 1;", (uid,)
        ).fetchone()
        if row is None:
            return None
        return int(row[1]), published_prekey(curve, row[0])

    def spk_blob(self, uid: int, spk_id: int) -> bytes | None:
        """A stored SPk blob by id, whatever its status (hybrids split it with PreKey)."""
        row = self.conn.execute(
            "SELECT SPk FROM X3DH_SPk WHERE Uid = ? AND SPKid = ? LIMIT 1;", (uid, spk_id)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def opk_blob(self, uid: int, opk_id: int) -> bytes | None:
        """A stored OPk blob by id."""
        row = self.conn.execute(
            "SELECT OPk FROM X3DH_OPK WHERE Uid = ? AND OPKid = ? LIMIT 1;", (uid, opk_id)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def get_spk(self, uid: int, spk_id: int, curve: Curve) -> tuple[bytes, bytearray] | None:
        """An SPk pair by id, whatever its status."""
        row = self.conn.execute(
            "SELECT SPk FROM X3DH_SPk WHERE Uid = ? AND SPKid = ? LIMIT 1;", (uid, spk_id)
        ).fetchone()
        if row is None:
            return None
        x = SIZES[curve].x_pub
        return bytes(row[0][:x]), bytearray(row[0][x:])

    def get_opk(self, uid: int, opk_id: int, curve: Curve) -> tuple[bytes, bytearray] | None:
        """An OPk pair by id."""
        row = self.conn.execute(
            "SELECT OPk FROM X3DH_OPK WHERE Uid = ? AND OPKid = ? LIMIT 1;", (uid, opk_id)
        ).fetchone()
        if row is None:
            return None
        x = SIZES[curve].x_pub
        return bytes(row[0][:x]), bytearray(row[0][x:])

    def active_opks(self, uid: int, curve: Curve) -> list[tuple[int, bytes]]:
        """(id, public) of the user's OPks believed on the server, in id order."""
        rows = self.conn.execute(
            "SELECT OPKid, OPK FROM X3DH_OPK WHERE Uid = ? AND Status = 1 ORDER BY OPKid",
            (uid,),
        )
        return [(int(i), published_prekey(curve, k)) for i, k in rows]

    def insert_opks(self, uid: int, keys: list[tuple[bytes, bytearray]]) -> list[int]:
        """Insert OPk pairs with fresh unique ids; return the ids in order."""
        taken = self._used_ids("X3DH_OPK", "OPKid")
        ids = []
        for pub, priv in keys:
            opk_id = self.new_id("X3DH_OPK", "OPKid", taken)
            self.conn.execute(
                "INSERT INTO X3DH_OPK(OPKid, OPK,Uid) VALUES(?,?,?)", (opk_id, pub + priv, uid)
            )
            wipe(priv)
            ids.append(opk_id)
        return ids

    def update_opk_status(self, uid: int, server_ids: list[int]) -> None:
        """Mark OPks the server no longer holds as dispatched; drop old dispatched ones."""
        if server_ids:
            marks = ",".join("?" for _ in server_ids)
            self.conn.execute(
                "UPDATE X3DH_OPK SET Status = 0, timeStamp=CURRENT_TIMESTAMP WHERE Status = 1 "
                f"AND Uid = ? AND OPKid NOT IN ({marks});",
                (uid, *server_ids),
            )
        else:
            self.conn.execute(
                "UPDATE X3DH_OPK SET Status = 0, timeStamp=CURRENT_TIMESTAMP "
                "WHERE Status = 1 AND Uid = ?;",
                (uid,),
            )
        self.conn.execute(
            "DELETE FROM X3DH_OPK WHERE Uid = ? AND Status = 0 AND "
            f"timeStamp < date('now', '-{OPK_LIMBO_DAYS} day');",
            (uid,),
        )

    def current_spk_valid(self, uid: int) -> bool:
        """True if the active SPk is younger than 7 days (day granularity, as lime)."""
        row = self.conn.execute(
            "SELECT SPKid FROM X3DH_SPk WHERE Uid = ? AND Status = 1 AND "
            f"timeStamp > date('now', '-{SPK_LIFETIME_DAYS} day') LIMIT 1;",
            (uid,),
        ).fetchone()
        return row is not None

    def clean(self) -> None:
        """update()'s cleanup: old stale sessions, over-received skipped chains, old SPks."""
        self.conn.execute(
            "DELETE FROM DR_sessions WHERE Status=0 AND "
            f"timeStamp < date('now', '-{DR_SESSION_LIMBO_DAYS} day');"
        )
        self.conn.execute(
            f"DELETE FROM DR_MSk_DHr WHERE received > {MAX_MESSAGES_RECEIVED_AFTER_SKIP};"
        )
        self.conn.execute(
            "DELETE FROM X3DH_SPK WHERE Status=0 AND "
            f"timeStamp < date('now', '-{SPK_LIMBO_DAYS} day');"
        )

    # ------------------------------------------------------------------ sessions

    def _session_from_row(self, curve: Curve, row: tuple) -> AnySession:  # type: ignore[type-arg]
        sid, did, uid, ns, nr, pn, dhr, dhs, rk, cks, ckr, ad, status, x3dh = row
        if curve.is_post_quantum:
            kem_row = self._kem_state(int(sid))
            return HybridSession.from_row(
                curve, int(uid), int(did), rk, cks, ckr, bytes(dhs), bytes(dhr), bytes(ad),
                int(ns), int(nr), int(pn), status == 1, bytes(x3dh) if x3dh else None,
                int(sid), *kem_row)
        x = SIZES[curve].x_pub
        session = Session(
            curve, int(uid), int(did), bytearray(rk), bytearray(cks), bytearray(ckr),
            bytes(dhs[:x]), bytearray(dhs[x:]), bytes(dhr), bytes(ad), int(ns), int(nr),
            int(pn), status == 1, bytes(x3dh) if x3dh else None, int(sid), dirty="clean",
        )
        loaded = self._ratchet_keys.get(session.session_id)
        if loaded is not None and loaded[0] == session.dhs_pub:
            self._ratchet_keys.move_to_end(session.session_id)
            session.dhs_key = XKey(curve, session.dhs_priv, loaded[0], loaded[1].key_object)
        return session

    def _kem_state(self, session_id: int) -> tuple[int, int]:
        """(DHrStatus, last KEM step epoch) of a hybrid session."""
        try:
            row = self.conn.execute(
                "SELECT DHrStatus, lastKEM FROM pylime_KEM_sessions WHERE sessionId = ?",
                (session_id,)).fetchone()
        except sqlite3.OperationalError:  # no hybrid session was ever saved here
            row = None
        if row is None:
            raise errors.InternalError("a hybrid session lost its KEM state")
        return int(row[0]), int(row[1])

    def _keep_key(self, s: AnySession) -> None:
        """Remember a saved session's loaded ratchet key (curve448 only: see the class)."""
        if s.dhs_key is None or s.dhs_key.key_object is None:
            return
        keys = self._ratchet_keys
        keys[s.session_id] = (s.dhs_pub, XKey(s.curve, bytearray(), s.dhs_pub,
                                              s.dhs_key.key_object))
        keys.move_to_end(s.session_id)
        while len(keys) > RATCHET_KEY_CACHE:
            keys.popitem(last=False)

    _SESSION_COLUMNS = "s.sessionId,s.Did,s.Uid,Ns,Nr,PN,DHr,DHs,RK,CKs,CKr,AD,s.Status,X3DHInit"

    # The peer's status rides along as a constant first column (lime's own query follows),
    # saving a round trip; asked separately only when there is no session.
    _STATUS_COLUMN = "(SELECT Status FROM Lime_PeerDevices WHERE DeviceId = ?1 LIMIT 1)"

    def active_session(self, uid: int, device_id: str, curve: Curve) -> AnySession | None:
        """The active session of a local user with a peer device."""
        return self.active_session_and_status(uid, device_id, curve)[1]

    def active_session_and_status(self, uid: int, device_id: str,
                                  curve: Curve) -> tuple[PeerStatus, AnySession | None]:
        """The peer device's status and the active session with it, in one query."""
        row = self.conn.execute(
            f"SELECT {self._STATUS_COLUMN}, {self._SESSION_COLUMNS} FROM DR_sessions as s "
            "INNER JOIN lime_PeerDevices as d ON s.Did=d.Did WHERE s.Uid= ?2 AND s.Status=1 "
            "AND d.DeviceId = ?1 ORDER BY s.sessionId LIMIT 1",
            (device_id, uid),
        ).fetchone()
        if row is None:
            return self.peer_status(device_id), None
        return _status(device_id, row[0]), self._session_from_row(curve, row[1:])

    def active_sessions_and_statuses(
        self, uid: int, device_ids: list[str], curve: Curve,
    ) -> dict[str, tuple[PeerStatus, AnySession | None]]:
        """:meth:`active_session_and_status` for many devices, in two queries per 500."""
        if len(device_ids) == 1:
            return {device_ids[0]: self.active_session_and_status(uid, device_ids[0], curve)}
        out: dict[str, tuple[PeerStatus, AnySession | None]] = {}
        for start in range(0, len(device_ids), 500):
            chunk = device_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            statuses: dict[str, object] = {}
            # ordered by Did: the row a "LIMIT 1" scan of the table finds first
            for device, status in self.conn.execute(
                    f"SELECT DeviceId, Status FROM Lime_PeerDevices WHERE DeviceId IN ({marks}) "
                    "ORDER BY Did", chunk):
                statuses.setdefault(device, status)
            rows: dict[str, tuple] = {}  # type: ignore[type-arg]
            for row in self.conn.execute(
                    f"SELECT d.DeviceId, {self._SESSION_COLUMNS} FROM DR_sessions as s "
                    "INNER JOIN lime_PeerDevices as d ON s.Did=d.Did WHERE s.Uid= ? AND "
                    f"s.Status=1 AND d.DeviceId IN ({marks}) ORDER BY s.sessionId",
                    (uid, *chunk)):
                rows.setdefault(row[0], row[1:])
            for device in chunk:
                row = rows.get(device)
                out[device] = (_status(device, statuses.get(device)),
                               self._session_from_row(curve, row) if row else None)
        return out

    def sessions_with(self, uid: int, device_id: str, curve: Curve) -> list[AnySession]:
        """Every session with a peer device, active first then oldest first (lime's order)."""
        return self.sessions_and_status(uid, device_id, curve)[1]

    def sessions_and_status(self, uid: int, device_id: str,
                            curve: Curve) -> tuple[PeerStatus, list[AnySession]]:
        """The peer device's status and every session with it (:meth:`sessions_with`).

        Each session also learns whether any skipped-key chain is stored for it.
        """
        rows = self.conn.execute(
            f"SELECT {self._STATUS_COLUMN}, {self._SESSION_COLUMNS}, EXISTS(SELECT 1 FROM "
            "DR_MSk_DHr WHERE DR_MSk_DHr.sessionId = s.sessionId) FROM DR_sessions as s "
            "INNER JOIN lime_PeerDevices as d ON s.Did=d.Did WHERE d.DeviceId = ?1 AND "
            "s.Uid = ?2 ORDER BY s.Status DESC, timeStamp ASC;",
            (device_id, uid),
        ).fetchall()
        if not rows:
            return self.peer_status(device_id), []
        out = []
        for row in rows:
            session = self._session_from_row(curve, row[1:-1])
            session.skipped_chains = bool(row[-1])
            out.append(session)
        return _status(device_id, rows[0][0]), out

    def skipped_state(self, session_id: int, dhr: bytes,
                      nr: int) -> tuple[bool, bool, tuple[int, bytes] | None]:
        """What the skipped-key tables hold for a session, in one query.

        Returns (any chain for the session, a chain for ``dhr``, the stored (DHid, MK) for
        (``dhr``, ``nr``) as :meth:`skipped_key` gives it).
        """
        row = self.conn.execute(
            "SELECT d.DHr = ?1, d.DHid, m.MK FROM DR_MSk_DHr as d LEFT JOIN DR_MSk_MK as m "
            "ON m.DHid = d.DHid AND m.Nr = ?2 WHERE d.sessionId = ?3 "
            "ORDER BY d.DHr = ?1 DESC, m.MK IS NOT NULL DESC LIMIT 1",
            (dhr, nr, session_id),
        ).fetchone()
        if row is None:
            return False, False, None
        if not row[0]:
            return True, False, None
        mk = row[2]
        return True, True, (int(row[1]), bytes(mk)) if mk is not None and len(mk) == 48 else None

    def skipped_key(self, session_id: int, dhr: bytes, nr: int) -> tuple[int, bytes] | None:
        """(DHid, MK) of a stored skipped message key."""
        row = self.conn.execute(
            "SELECT m.MK, m.DHid FROM DR_MSk_MK as m INNER JOIN DR_MSk_DHr as d ON "
            "d.DHid=m.DHid WHERE d.sessionId = ? AND d.DHr = ? AND m.Nr = ? LIMIT 1",
            (session_id, dhr, nr),
        ).fetchone()
        if row is None or len(row[0]) != 48:
            return None
        return int(row[1]), bytes(row[0])

    def has_chain(self, session_id: int, dhr: bytes) -> bool:
        """True if skipped keys are stored for this peer ratchet key."""
        return (
            self.conn.execute(
                "SELECT 1 FROM DR_MSk_DHr WHERE sessionId = ? AND DHr = ? LIMIT 1",
                (session_id, dhr),
            ).fetchone()
            is not None
        )

    def save(self, s: AnySession) -> None:
        """Save a session in a transaction of its own, or in the caller's.

        A save that is a single UPDATE runs without BEGIN and COMMIT: SQLite makes one
        statement atomic and durable by itself (the commonest case: a message on an
        established session with no skipped keys).
        """
        if self._depth == 0 and _one_statement(s):
            with self.lock:
                self.save_session(s)
            return
        with self.transaction():
            self.save_session(s)

    def save_many(self, sessions: list[AnySession]) -> None:
        """Save sessions in one transaction; plain encryptions in one executemany."""
        if len(sessions) == 1:
            self.save(sessions[0])
            return
        simple = [s for s in sessions if s.dirty == "encrypt" and _one_statement(s)]
        with self.transaction() as c:
            c.executemany(
                "UPDATE DR_sessions SET Ns= ?, CKs= ?, Status = ? WHERE sessionId = ?;",
                [(s.ns, bytes(s.cks), 1 if s.active else 0, s.session_id) for s in simple])
            for s in simple:
                s.dirty = "clean"
                self._keep_key(s)
            for s in sessions:
                if s.dirty != "clean" or s.session_id == 0:
                    self.save_session(s)

    def save_session(self, s: AnySession) -> None:
        """Write a session the way lime's ``session_save`` does (inside the caller's transaction)."""
        c = self.conn
        if s.session_id == 0:
            if s.did == 0:
                s.did = self.store_peer_device(s.peer_device_id, s.peer_ik)
            else:
                c.execute(
                    "UPDATE DR_sessions SET Status = 0, timeStamp = CURRENT_TIMESTAMP "
                    "WHERE Did = ? AND Uid = ?",
                    (s.did, s.uid),
                )
            cols = "Ns,Nr,PN,DHr,DHs,RK,CKs,CKr,AD,Did,Uid"
            values: list[object] = [
                s.ns, s.nr, s.pn, s.dhr, s.dhs_pub + bytes(s.dhs_priv), bytes(s.rk),
                bytes(s.cks), bytes(s.ckr), s.ad, s.did, s.uid,
            ]
            if s.x3dh_init:
                cols += ",X3DHInit"
                values.append(s.x3dh_init)
            cur = c.execute(
                f"INSERT INTO DR_sessions({cols}) VALUES({','.join('?' * len(values))});", values
            )
            s.session_id = int(cur.lastrowid or 0)
            if s.used_opk_id:
                c.execute(
                    "DELETE FROM X3DH_OPK WHERE Uid = ? AND OPKid = ?;", (s.uid, s.used_opk_id)
                )
                s.used_opk_id = 0
            if not s.active:  # a new session already at its sending limit
                c.execute(
                    "UPDATE DR_sessions SET Status = 0 WHERE sessionId = ?", (s.session_id,)
                )
        else:
            if s.dirty in ("ratchet", "decrypt") and not s.active:
                c.execute(
                    "UPDATE DR_sessions SET Status = 0, timeStamp = CURRENT_TIMESTAMP "
                    "WHERE Did = ? AND Uid = ?",
                    (s.did, s.uid),
                )
                s.active = True
            if s.dirty == "ratchet":
                c.execute(
                    "UPDATE DR_sessions SET Ns= ?, Nr= ?, PN= ?, DHr= ?,DHs= ?, RK= ?, CKs= ?, "
                    "CKr= ?, Status = 1,  X3DHInit = NULL WHERE sessionId = ?;",
                    (s.ns, s.nr, s.pn, s.dhr, s.dhs_pub + bytes(s.dhs_priv), bytes(s.rk),
                     bytes(s.cks), bytes(s.ckr), s.session_id),
                )
            elif s.dirty == "decrypt":
                c.execute(
                    "UPDATE DR_sessions SET Nr= ?, CKr= ?, Status = 1, X3DHInit = NULL "
                    "WHERE sessionId = ?;",
                    (s.nr, bytes(s.ckr), s.session_id),
                )
            elif s.dirty == "encrypt":
                c.execute(
                    "UPDATE DR_sessions SET Ns= ?, CKs= ?, Status = ? WHERE sessionId = ?;",
                    (s.ns, bytes(s.cks), 1 if s.active else 0, s.session_id),
                )
            if s.used_skipped is not None:
                c.execute("DELETE from DR_MSk_MK WHERE DHid = ? AND Nr = ?;", s.used_skipped)
            elif s.dirty in ("ratchet", "decrypt") and s.skipped_chains:
                c.execute(
                    "UPDATE DR_MSk_DHr SET received = received + 1 WHERE sessionId = ?",
                    (s.session_id,),
                )
        for dhr, keys in s.new_skipped:
            row = c.execute(
                "SELECT DHid FROM DR_MSk_DHr WHERE sessionId = ? AND DHr = ? LIMIT 1;",
                (s.session_id, dhr),
            ).fetchone()
            if row is None:
                dhid = c.execute(
                    "INSERT INTO DR_MSk_DHr(sessionId, DHr) VALUES(?, ?)", (s.session_id, dhr)
                ).lastrowid
            else:
                dhid = row[0]
                c.execute("UPDATE DR_MSk_DHr SET received = 0 WHERE DHid = ?", (dhid,))
            c.executemany(
                "INSERT INTO DR_MSk_MK(DHid,Nr,MK) VALUES(?,?,?)",
                [(dhid, nr, mk) for nr, mk in keys.items()],
            )
        if s.used_skipped is not None:
            dhid = s.used_skipped[0]
            if c.execute("SELECT Nr from DR_MSk_MK WHERE DHid = ? LIMIT 1;", (dhid,)).fetchone() is None:
                c.execute("DELETE from DR_MSk_DHr WHERE DHid = ?;", (dhid,))
        if isinstance(s, HybridSession):
            c.execute(KEM_SESSIONS_DDL)
            c.execute(
                "INSERT OR REPLACE INTO pylime_KEM_sessions(sessionId, DHrStatus, lastKEM) "
                "VALUES (?, ?, ?)", (s.session_id, s.status, s.last_kem))
        s.used_skipped = None
        s.new_skipped = []
        s.dirty = "clean"
        self._keep_key(s)


def _status(device_id: str, value: object) -> PeerStatus:
    """A stored peer status (None: no such device), checked as lime checks it."""
    if value is None:
        return PeerStatus.UNKNOWN
    if value not in (0, 1, 2):
        raise errors.InternalError(f"peer device {device_id!r} has a bad stored status")
    return _STATUSES[value]


_STATUSES = {int(p): p for p in (PeerStatus.UNTRUSTED, PeerStatus.TRUSTED, PeerStatus.UNSAFE)}


def _one_statement(s: AnySession) -> bool:
    """True when :meth:`Db.save_session` will run exactly one statement for ``s``."""
    if isinstance(s, HybridSession) or s.session_id == 0 or s.used_skipped is not None or s.new_skipped:
        return False
    if s.dirty == "encrypt":
        return True
    return s.dirty in ("ratchet", "decrypt") and s.active and not s.skipped_chains
