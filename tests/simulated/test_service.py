"""`simulated/service.py`: the providers' HTTP API, as any caller meets it."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.access import key_line, new_key, parse_keys
from api.contract import Role
from providers import url_of
from shared import Leg
from simulated.faults import Simulation
from simulated.service import MAX_BODY, create_app
from simulated.store import ProviderStore

KEY = {"Idempotency-Key": '"jane-smith-1/car"'}
BOOKING = {"user_id": "jane-smith-1", "item_id": "valid-car-id"}


class Providers:
    """The service on a loopback port, its stores, and a session to call it with."""

    def __init__(self, url: str, stores: dict[Leg, ProviderStore], session: Any) -> None:
        self.url, self.stores, self.session = url, stores, session

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, data: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        """Return a call's status, headers and JSON body."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        body = json.dumps(data) if data is not None and not isinstance(data, bytes) else data
        async with self.session.request(
            method, self.url + path, headers=headers, data=body
        ) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)

    def rows(self) -> list[object]:
        return [row for store in self.stores.values() for row in store.rows()]


async def serving(tmp_path: Path, keys_text: str | None = None) -> AsyncIterator[Providers]:
    stores = ProviderStore.open_all(tmp_path)
    keys = parse_keys(keys_text, "test") if keys_text is not None else None
    runner = web.AppRunner(create_app(Simulation(hotel_outage=False), stores, keys))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    async with aiohttp.ClientSession() as session:
        yield Providers(url_of(runner), stores, session)
    await runner.cleanup()


@pytest.fixture
async def providers(tmp_path: Path) -> AsyncIterator[Providers]:
    async for running in serving(tmp_path):
        yield running


async def test_a_booking_answers_its_reservation_and_again_the_same(providers: Providers) -> None:
    first = await providers.call("POST", "/car/book", headers=KEY, data=BOOKING)
    again = await providers.call("POST", "/car/book", headers=KEY, data=BOOKING)

    assert first[0] == again[0] == 200
    assert (
        first[2] == again[2] == {"leg": "car", "item_id": "valid-car-id", "reservation_id": "car-1"}
    )


async def test_an_undo_releases_once_and_a_late_booking_is_refused(providers: Providers) -> None:
    undo = {"user_id": "jane-smith-1"}
    nothing = await providers.call("POST", "/car/undo", headers=KEY, data=undo)
    late = await providers.call("POST", "/car/book", headers=KEY, data=BOOKING)

    assert (nothing[0], nothing[2]) == (200, {"leg": "car", "released": False})
    assert (late[0], late[2]["detail"]) == (422, "this booking's car was already undone")
    assert providers.stores[Leg.CAR].held() == {}


NOT_JSON = {"Content-Type": "text/plain"}

BAD_INPUT = [
    pytest.param("POST", "/car/book", {}, BOOKING, 400, "Idempotency-Key", id="missing-key"),
    pytest.param(
        "POST", "/car/book", {"Idempotency-Key": "bare"}, BOOKING, 400, "quoted", id="bare-key"
    ),
    pytest.param(
        "POST", "/car/book", {"Idempotency-Key": '""'}, BOOKING, 400, "Idempotency", id="empty-key"
    ),
    pytest.param(
        "POST",
        "/car/book",
        KEY,
        {"user_id": 7, "item_id": "valid-car-id"},
        400,
        "user_id: Input should be a valid string",
        id="wrong-type",
    ),
    pytest.param(
        "POST",
        "/car/book",
        KEY,
        {"user_id": "jane-smith-1"},
        400,
        "item_id: Field required",
        id="missing-field",
    ),
    pytest.param(
        "POST",
        "/car/book",
        KEY,
        {**BOOKING, "price": 1},
        400,
        "price: Extra inputs are not permitted",
        id="extra-field",
    ),
    pytest.param(
        "POST", "/car/book", {"Idempotency-Key": '"%FF/car"'}, BOOKING, 400, "UTF-8", id="not-utf8"
    ),
    pytest.param(
        "POST", "/car/book", {"Idempotency-Key": '"a%2Fb/car"'}, BOOKING, 400, "quote", id="alias"
    ),
    pytest.param(
        "POST",
        "/car/book",
        {"Idempotency-Key": '"' + "k" * 4097 + '"'},
        BOOKING,
        400,
        "over 4096 characters",
        id="long-key",
    ),
    pytest.param("POST", "/car/book", KEY, b"{not json", 400, "Invalid JSON", id="not-json"),
    pytest.param("POST", "/car/book", KEY, [BOOKING], 400, "body", id="json-array"),
    pytest.param(
        "POST", "/car/book", {**KEY, **NOT_JSON}, BOOKING, 415, "application/json", id="text"
    ),
    pytest.param("POST", "/boat/book", KEY, BOOKING, 404, "no provider named 'boat'", id="leg"),
    pytest.param("POST", "/car/steal", KEY, BOOKING, 404, "Not Found", id="action"),
    pytest.param("GET", "/car/book", KEY, None, 405, "Method Not Allowed", id="method"),
    pytest.param(
        "POST",
        "/car/book",
        KEY,
        {**BOOKING, "item_id": "x" * (MAX_BODY + 1)},
        413,
        "",
        id="oversize",
    ),
    pytest.param(
        "POST",
        "/car/book",
        KEY,
        {**BOOKING, "item_id": "x" * 257},
        400,
        "item_id: String should have at most 256 characters",
        id="long-item",
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "data", "status", "says"), BAD_INPUT)
async def test_bad_input_gets_a_4xx_problem_and_changes_nothing(
    providers: Providers,
    method: str,
    path: str,
    headers: dict[str, str],
    data: Any,
    status: int,
    says: str,
) -> None:
    code, answered, body = await providers.call(method, path, headers=headers, data=data)

    assert code == status
    assert answered["Content-Type"] == "application/problem+json"
    if status == 405:
        assert answered["Allow"] == "POST"
    assert body["status"] == status
    assert says in body["detail"]
    assert providers.rows() == []


async def test_a_key_sent_again_for_another_item_is_unprocessable(providers: Providers) -> None:
    await providers.call("POST", "/car/book", headers=KEY, data=BOOKING)
    other = await providers.call(
        "POST", "/car/book", headers=KEY, data={**BOOKING, "item_id": "another-car-id"}
    )

    assert (other[0], other[2]["detail"]) == (
        422,
        "this key holds 'valid-car-id', not 'another-car-id'",
    )


async def test_reservations_are_listed_with_their_status(providers: Providers) -> None:
    await providers.call("POST", "/car/book", headers=KEY, data=BOOKING)

    status, _, body = await providers.call("GET", "/car/reservations")

    assert status == 200
    assert body == {
        "reservations": [
            {
                "key": "jane-smith-1/car",
                "user_id": "jane-smith-1",
                "item_id": "valid-car-id",
                "status": "held",
                "reservation_id": "car-1",
            }
        ]
    }


async def test_with_keys_only_an_operator_reads_every_reservation(tmp_path: Path) -> None:
    operator, client = new_key(), new_key()
    keys = f"{key_line('ops', Role.OPERATOR, operator)}\n{key_line('acme', Role.CLIENT, client)}\n"
    async for providers in serving(tmp_path, keys):
        path = "/flight/reservations"
        anonymous = await providers.call("GET", path)
        unknown = await providers.call(
            "GET", path, headers={"Authorization": f"Bearer {new_key()}"}
        )
        a_client = await providers.call("GET", path, headers={"Authorization": f"Bearer {client}"})
        ops = await providers.call("GET", path, headers={"Authorization": f"Bearer {operator}"})

    assert [anonymous[0], unknown[0], a_client[0], ops[0]] == [401, 401, 403, 200]
    assert anonymous[1]["WWW-Authenticate"] == "Bearer"
    assert a_client[2]["detail"] == "reading every reservation is for operators"
