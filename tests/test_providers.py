"""`providers.py`: a store made before its column was named `user_id` opens as it is."""

import sqlite3
from pathlib import Path

from providers import ProviderStore
from shared import Leg

OLD_SCHEMA = """
CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    booking_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('held', 'released', 'voided')),
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
)
"""


def test_a_store_of_before_keeps_its_reservations_under_user_id(tmp_path: Path) -> None:
    path = tmp_path / "hotel.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_SCHEMA)
        db.execute(
            "INSERT INTO reservations (key, booking_id, item_id, status)"
            " VALUES ('john-doe-1/hotel', 'john-doe-1', 'valid-hotel-id', 'held')"
        )
    db.close()

    store = ProviderStore(Leg.HOTEL, path)
    store.reserve("jane-smith-2/hotel", "jane-smith-2", "valid-hotel-id")

    assert [(row.key, row.user_id) for row in store.rows()] == [
        ("john-doe-1/hotel", "john-doe-1"),
        ("jane-smith-2/hotel", "jane-smith-2"),
    ]
