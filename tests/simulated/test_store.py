"""`simulated/store.py`: one reservation per key, undo once, tombstones, stock, old stores."""

import sqlite3
from pathlib import Path

import pytest

from shared import Leg
from simulated.store import BookingRejectedError, KeyReusedError, ProviderStore, RowStatus


@pytest.fixture
def hotel(tmp_path: Path) -> ProviderStore:
    return ProviderStore(Leg.HOTEL, tmp_path / "hotel.db")


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


def test_booking_twice_under_one_key_holds_one_reservation(hotel: ProviderStore) -> None:
    first = hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    again = hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    other = hotel.reserve("jane-smith-2/hotel", "jane-smith-2", "valid-hotel-id")

    assert first == again != other
    assert set(hotel.held()) == {"john-doe-1/hotel", "jane-smith-2/hotel"}


def test_undo_releases_once_and_repeats_its_answer(hotel: ProviderStore) -> None:
    hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")

    answers = [hotel.release("john-doe-1/hotel", "john-doe-1") for _ in range(2)]

    assert answers == [True, True]
    assert hotel.held() == {}
    assert [row.status for row in hotel.rows()] == [RowStatus.RELEASED]


def test_undo_of_nothing_is_a_no_op_that_refuses_a_late_booking(hotel: ProviderStore) -> None:
    assert hotel.release("john-doe-1/hotel", "john-doe-1") is False
    assert hotel.release("john-doe-1/hotel", "john-doe-1") is False

    with pytest.raises(BookingRejectedError, match="already undone"):
        hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    assert hotel.held() == {}


def test_invalid_item_is_rejected_and_holds_nothing(hotel: ProviderStore) -> None:
    with pytest.raises(BookingRejectedError, match="invalid-hotel-id"):
        hotel.reserve("john-doe-1/hotel", "john-doe-1", "invalid-hotel-id")
    assert hotel.rows() == []


def test_finite_stock_sells_out_and_a_release_frees_it(tmp_path: Path) -> None:
    car = ProviderStore(Leg.CAR, tmp_path / "car.db", stock=1)
    car.reserve("a/car", "a", "mini")

    with pytest.raises(BookingRejectedError, match="sold out"):
        car.reserve("b/car", "b", "mini")
    car.release("a/car", "a")
    car.reserve("b/car", "b", "mini")

    assert set(car.held()) == {"b/car"}


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    one = ProviderStore(Leg.FLIGHT, tmp_path / "flight.db")
    two = ProviderStore(Leg.FLIGHT, tmp_path / "flight.db")  # as a second worker opens it

    assert one.reserve("a/flight", "a", "LH1") == two.reserve("a/flight", "a", "LH1")
    assert len(two.held()) == 1


def test_a_key_sent_again_for_another_item_is_refused(hotel: ProviderStore) -> None:
    hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")

    with pytest.raises(KeyReusedError, match="holds 'valid-hotel-id'"):
        hotel.reserve("john-doe-1/hotel", "john-doe-1", "another-hotel-id")
    assert [row.item_id for row in hotel.rows()] == ["valid-hotel-id"]
