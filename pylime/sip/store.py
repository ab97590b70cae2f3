"""What a SIP agent must remember across a kill: its instance, its rooms, its inbox.

One SQLite file, created owner-only, WAL with ``synchronous=FULL``: a row is on disk when its
commit returns. The agent's rules, which this schema serves:

- A MESSAGE is answered only after its outcome is committed here (``inbox``, keyed by
  Call-ID, CSeq and From tag): a message answered 200 survives any kill, and a retransmission
  of one already handled gets the same answer again without a second decryption.
- The same (sender device, IMDN Message-ID) is accepted once: a client that re-sends a message
  under a new transaction gets 200, and the application does not see it twice.
- A message is marked handed over *before* the application gets it (``handed``), so a restart
  never hands it over again. Plaintexts stay at rest only until then unless the agent keeps
  history (``keep_history``): after that, only the ids needed for de-duplication remain.
- A delivery notification owed for an accepted message is kept (``imdn_due``) until it was
  sent, so a kill in between sends it after the restart.

The instance id (``+sip.instance``) is created once and kept, so the GRUU — the lime device
id — stays the same across restarts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pylime.sip.rooms import Room

__all__ = ["InboxEntry", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (address TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txn TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    sender TEXT,
    message_id TEXT,
    answer INTEGER NOT NULL,
    kind TEXT NOT NULL,
    content_type TEXT,
    cpim BLOB,
    received_at REAL NOT NULL,
    handed INTEGER NOT NULL DEFAULT 0,
    imdn_due TEXT,
    status INTEGER
);
CREATE INDEX IF NOT EXISTS inbox_sender_id ON inbox (sender, message_id);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (handed, seq);
"""


@dataclass(frozen=True)
class InboxEntry:
    """One accepted message or notification, as committed."""

    seq: int
    room: str
    sender: str
    message_id: str | None
    kind: str
    """``message`` (a chat message) or ``imdn`` (a notification)."""
    cpim: bytes
    received_at: float
    imdn_due: str | None = None
    status: int | None = None
    """The sender device's lime status when the message was decrypted."""


class Store:
    """The agent's SQLite file; every method commits before it returns. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], *, keep_history: bool = False) -> None:
        self.path = os.fspath(path)
        self.keep_history = keep_history
        if self.path != ":memory:" and not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._db.close()

    def _tx(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # -- identity ----------------------------------------------------------------------

    def instance(self) -> str:
        """Our ``urn:uuid:…`` instance id, created on first use and kept."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
            if row:
                return str(row[0])
            value = f"urn:uuid:{uuid.uuid4()}"
            self._db.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (value,))
            return value

    def get_meta(self, key: str) -> str | None:
        """A stored setting."""
        row = self._tx("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self._tx("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- rooms -------------------------------------------------------------------------

    def rooms(self) -> list[Room]:
        """Every room we are in."""
        rows = self._tx("SELECT data FROM rooms ORDER BY address").fetchall()
        return [Room.from_json(json.loads(r[0])) for r in rows]

    def save_room(self, room: Room) -> None:
        """Store (or replace) a room."""
        self._tx("INSERT OR REPLACE INTO rooms (address, data) VALUES (?, ?)",
                 (room.address, json.dumps(room.to_json())))

    def drop_room(self, address: str) -> None:
        """Forget a room we left."""
        self._tx("DELETE FROM rooms WHERE address = ?", (address,))

    # -- inbox -------------------------------------------------------------------------

    def answer_for(self, txn: str) -> int | None:
        """The answer already given to this transaction, if it was handled."""
        row = self._tx("SELECT answer FROM inbox WHERE txn = ?", (txn,)).fetchone()
        return None if row is None else int(row[0])

    def seen(self, sender: str, message_id: str) -> bool:
        """Whether a message with this IMDN id from this device was already accepted."""
        row = self._tx("SELECT 1 FROM inbox WHERE sender = ? AND message_id = ? AND answer = 200",
                       (sender, message_id)).fetchone()
        return row is not None

    def record(self, txn: str, room: str, answer: int, *, sender: str | None = None,
               message_id: str | None = None, kind: str = "refused", cpim: bytes | None = None,
               imdn_due: str | None = None, hand_over: bool = True, status: int | None = None) -> int:
        """Commit a transaction's outcome; returns the entry's sequence number."""
        cursor = self._tx(
            "INSERT OR IGNORE INTO inbox (txn, room, sender, message_id, answer, kind, cpim, received_at,"
            " handed, imdn_due, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (txn, room, sender, message_id, answer, kind, cpim, time.time(),
             0 if (hand_over and cpim is not None) else 1, imdn_due, status))
        return int(cursor.lastrowid or 0)

    def pending(self) -> list[InboxEntry]:
        """Accepted entries not yet handed to the application, oldest first."""
        rows = self._tx("SELECT seq, room, sender, message_id, kind, cpim, received_at, imdn_due, status"
                        " FROM inbox WHERE handed = 0 ORDER BY seq").fetchall()
        return [InboxEntry(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8]) for r in rows]

    def entry(self, seq: int) -> InboxEntry | None:
        """One entry by sequence number (its plaintext may have been wiped)."""
        r = self._tx("SELECT seq, room, sender, message_id, kind, cpim, received_at, imdn_due, status"
                     " FROM inbox WHERE seq = ?", (seq,)).fetchone()
        return None if r is None else InboxEntry(r[0], r[1], r[2], r[3], r[4], bytes(r[5] or b""), r[6], r[7],
                                                 r[8])

    def mark_handed(self, seq: int) -> None:
        """The application is about to get this entry: never again, and wipe it unless history is kept."""
        if self.keep_history:
            self._tx("UPDATE inbox SET handed = 1 WHERE seq = ?", (seq,))
        else:
            self._tx("UPDATE inbox SET handed = 1, cpim = NULL WHERE seq = ?", (seq,))

    def imdns_due(self) -> list[tuple[int, str, str, str, str]]:
        """(seq, room, sender, message_id, status) of notifications owed and not yet sent."""
        rows = self._tx("SELECT seq, room, sender, message_id, imdn_due FROM inbox"
                        " WHERE imdn_due IS NOT NULL ORDER BY seq").fetchall()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def imdn_sent(self, seq: int) -> None:
        """The owed notification went out."""
        self._tx("UPDATE inbox SET imdn_due = NULL WHERE seq = ?", (seq,))

    def counts(self) -> dict[str, int]:
        """How many entries per answer code (for tests and diagnostics)."""
        rows = self._tx("SELECT answer, COUNT(*) FROM inbox GROUP BY answer").fetchall()
        return {str(a): int(n) for a, n in rows}
