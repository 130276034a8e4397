"""One simulated provider's reservations: a durable store of its own.

Each provider keeps its reservations in a SQLite file of its own (WAL mode, so
several processes serving it can share it), keyed by an idempotency key that
the caller derives from the booking. Booking twice under one key holds one
reservation; undoing twice releases once; and an undo that finds nothing
leaves a tombstone, so a booking call that arrives after its own undo (a
request delayed in the network) is refused instead of holding a room forever.
"""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from shared import Leg, Reservation

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'released', 'voided')),
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


class RowStatus(StrEnum):
    """What a key's row says: held, released by an undo, or undone before booked."""

    HELD = "held"
    RELEASED = "released"
    VOIDED = "voided"


class BookingRejectedError(Exception):
    """The provider refuses the booking; asking again gets the same answer."""


class KeyReusedError(Exception):
    """A key that holds one item was sent again for another: the caller's mistake."""


@dataclass(frozen=True)
class Row:
    """One row of a provider's store, as the audit reads it."""

    key: str
    user_id: str
    item_id: str
    status: RowStatus
    reservation_id: str


class ProviderStore:
    """One provider's reservations, in its own SQLite database."""

    def __init__(self, leg: Leg, path: Path, stock: int | None = None) -> None:
        self.leg = leg
        self.path = path
        self.stock = stock
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as db:
            db.execute(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(reservations)")}
            if "booking_id" in columns:  # a store made when the column had another name
                db.execute("ALTER TABLE reservations RENAME COLUMN booking_id TO user_id")

    @classmethod
    def open_all(
        cls, directory: Path, stock: dict[Leg, int | None] | None = None
    ) -> dict[Leg, "ProviderStore"]:
        """Open (creating if need be) the three providers' stores in `directory`."""
        return {leg: cls(leg, directory / f"{leg}.db", (stock or {}).get(leg)) for leg in Leg}

    def reserve(self, key: str, user_id: str, item_id: str) -> Reservation:
        """Hold `item_id` under `key`; the same key again returns the same hold."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, item_id, status FROM reservations WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                number, held_item, status = row
                if status != RowStatus.HELD:
                    raise BookingRejectedError(f"this booking's {self.leg} was already undone")
                if held_item != item_id:
                    raise KeyReusedError(f"this key holds {held_item!r}, not {item_id!r}")
                return Reservation(self.leg, held_item, f"{self.leg}-{number}")
            if "invalid" in item_id:
                raise BookingRejectedError(f"Invalid {self.leg} booking: {item_id!r}")
            if self.stock is not None and self._held_of(db, item_id) >= self.stock:
                raise BookingRejectedError(f"{self.leg} {item_id!r} is sold out")
            cursor = db.execute(
                "INSERT INTO reservations (key, user_id, item_id, status) VALUES (?, ?, ?, ?)",
                (key, user_id, item_id, RowStatus.HELD),
            )
            return Reservation(self.leg, item_id, f"{self.leg}-{cursor.lastrowid}")

    def release(self, key: str, user_id: str) -> bool:
        """Undo the booking under `key`; return whether it had held anything.

        Safe to repeat: a second call gives the same answer as the first.
        """
        with self._transaction() as db:
            row = db.execute("SELECT status FROM reservations WHERE key = ?", (key,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO reservations (key, user_id, item_id, status) VALUES (?, ?, '', ?)",
                    (key, user_id, RowStatus.VOIDED),
                )
                return False
            if row[0] == RowStatus.HELD:
                db.execute(
                    "UPDATE reservations SET status = ?, updated_at = CURRENT_TIMESTAMP"
                    " WHERE key = ?",
                    (RowStatus.RELEASED, key),
                )
            return bool(row[0] != RowStatus.VOIDED)

    def held(self) -> dict[str, Reservation]:
        """Return every reservation held now, by idempotency key."""
        return {
            row.key: Reservation(self.leg, row.item_id, row.reservation_id)
            for row in self.rows()
            if row.status is RowStatus.HELD
        }

    def rows(self) -> list[Row]:
        """Return every row, held or not."""
        with self._transaction() as db:
            found = db.execute(
                "SELECT key, user_id, item_id, status, id FROM reservations ORDER BY id"
            ).fetchall()
        return [
            Row(key, booking, item, RowStatus(status), f"{self.leg}-{number}")
            for key, booking, item, status, number in found
        ]

    @staticmethod
    def _held_of(db: sqlite3.Connection, item_id: str) -> int:
        query = "SELECT count(*) FROM reservations WHERE item_id = ? AND status = ?"
        return int(db.execute(query, (item_id, RowStatus.HELD)).fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so a check and the
        # write that depends on it cannot interleave with another process.
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread, kept: opening one per call cost the worker
        # a tenth of its CPU (make bench BENCH_ARGS=--profile). Never shared between threads.
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db
