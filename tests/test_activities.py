"""`activities.py`: the provider calls over HTTP, and how each answer decides the retry."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path

import pytest
from aiohttp import web
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import CALL_TIMEOUT, REJECTED, UNAVAILABLE, BookingActivities, ProviderClient
from providers import url_of
from shared import Leg, Reservation, UndoReport
from simulated.faults import ProviderFaults, Simulation
from tests.support.providers import client as providers_client
from tests.support.providers import stores_of
from tests.support.trips import trip
from tests.support.workers import quick_activities
from tools.processes import free_port


def attempt(number: int, workflow_id: str = "john-doe-1") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number, workflow_id=workflow_id)
    return env


@pytest.fixture
async def activities(tmp_path: Path) -> AsyncIterator[BookingActivities]:
    running = quick_activities(tmp_path)
    yield running
    await running.providers.close()


async def test_hotel_is_down_the_first_time_a_booking_asks_only(
    activities: BookingActivities,
) -> None:
    with pytest.raises(ApplicationError) as outage:
        await attempt(1).run(activities.book_hotel, trip())
    room = await attempt(2).run(activities.book_hotel, trip())

    assert (outage.value.message, outage.value.type) == ("Hotel service is down", UNAVAILABLE)
    assert not outage.value.non_retryable
    assert room == Reservation(Leg.HOTEL, "valid-hotel-id", "hotel-1")


async def test_refusal_is_a_non_retryable_application_error(
    activities: BookingActivities,
) -> None:
    with pytest.raises(ApplicationError) as rejected:
        await attempt(1).run(activities.book_car, trip(car="invalid-car-id"))

    assert (rejected.value.type, rejected.value.non_retryable) == (REJECTED, True)
    assert rejected.value.message == "Invalid car booking: 'invalid-car-id'"


async def test_a_repeated_booking_step_holds_one_reservation_and_one_undo_frees_it(
    activities: BookingActivities,
) -> None:
    booking = trip()

    first = await attempt(1).run(activities.book_car, booking)
    second = await attempt(2).run(activities.book_car, booking)
    undo = await attempt(1).run(activities.undo_book_car, booking)
    undo_again = await attempt(2).run(activities.undo_book_car, booking)

    assert first == second
    assert (undo, undo_again) == (UndoReport(Leg.CAR, True), UndoReport(Leg.CAR, True))
    assert stores_of(activities.providers)[Leg.CAR].held() == {}


async def test_an_answer_lost_after_the_commit_is_retried_and_gets_the_same_reservation(
    tmp_path: Path,
) -> None:
    losing = Simulation(hotel_outage=False, faults={Leg.CAR: ProviderFaults(lost_reply_rate=1)})
    lossy = BookingActivities(providers_client(tmp_path, losing))
    answering = BookingActivities(providers_client(tmp_path, Simulation(hotel_outage=False)))
    booking = trip()

    with pytest.raises(ApplicationError) as lost:
        await attempt(1).run(lossy.book_car, booking)
    held = stores_of(lossy.providers)[Leg.CAR].held()
    retried = await attempt(2).run(answering.book_car, booking)

    assert (lost.value.type, lost.value.non_retryable) == (UNAVAILABLE, False)
    assert "did not answer" in lost.value.message
    assert list(held.values()) == [retried]
    assert stores_of(answering.providers)[Leg.CAR].held() == held
    for used in (lossy, answering):
        await used.providers.close()


async def test_a_booking_id_beyond_ascii_keeps_its_key(activities: BookingActivities) -> None:
    longest_name = "José 日本" + "語" * 93  # the API's longest name, of 100 characters
    user_id = longest_name.lower().replace(" ", "-") + "-184942"
    booking = dataclasses.replace(trip(), book_user_id=user_id)

    await attempt(1, booking.book_user_id).run(activities.book_car, booking)

    assert list(stores_of(activities.providers)[Leg.CAR].held()) == [f"{booking.book_user_id}/car"]


class FakeProvider:
    """A provider that answers every call with one status, and notes the keys it is sent."""

    def __init__(self, status: int, delay: float = 0, page: str = "") -> None:
        self.status = status
        self.delay = delay
        self.page = page
        """An HTML page to answer instead of a problem (a proxy's, say)."""
        self.keys: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.keys.append(request.headers.get("Idempotency-Key", ""))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.page:
            return web.Response(text=self.page, status=self.status, content_type="text/html")
        body = {"title": "t", "status": self.status, "detail": f"said {self.status}"}
        return web.json_response(body, status=self.status, content_type="application/problem+json")


async def served(provider: FakeProvider) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/{leg}/{action}", provider.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, url_of(runner)


async def car_booking_fails(
    provider: FakeProvider, call_timeout: timedelta = CALL_TIMEOUT
) -> ApplicationError:
    """Return the error a first attempt of book_car raises, against `provider`."""
    runner, url = await served(provider)
    providers = ProviderClient(url, call_timeout)
    try:
        with pytest.raises(ApplicationError) as failed:
            await attempt(1).run(BookingActivities(providers).book_car, trip())
    finally:
        await providers.close()
        await runner.cleanup()
    return failed.value


ANSWERS = [
    pytest.param(HTTPStatus.BAD_REQUEST, REJECTED, True, id="400-refused"),
    pytest.param(HTTPStatus.NOT_FOUND, REJECTED, True, id="404-refused"),
    pytest.param(HTTPStatus.CONFLICT, UNAVAILABLE, False, id="409-in-flight-later"),
    pytest.param(HTTPStatus.UNPROCESSABLE_ENTITY, REJECTED, True, id="422-refused"),
    pytest.param(HTTPStatus.REQUEST_TIMEOUT, UNAVAILABLE, False, id="408-later"),
    pytest.param(HTTPStatus.TOO_MANY_REQUESTS, UNAVAILABLE, False, id="429-later"),
    pytest.param(HTTPStatus.INTERNAL_SERVER_ERROR, UNAVAILABLE, False, id="500-later"),
    pytest.param(HTTPStatus.BAD_GATEWAY, UNAVAILABLE, False, id="502-later"),
    pytest.param(HTTPStatus.SERVICE_UNAVAILABLE, UNAVAILABLE, False, id="503-later"),
]


@pytest.mark.parametrize(("status", "kind", "final"), ANSWERS)
async def test_a_providers_answer_decides_whether_the_attempt_is_retried(
    status: int, kind: str, final: bool
) -> None:
    failed = await car_booking_fails(FakeProvider(status))

    assert (failed.type, failed.non_retryable) == (kind, final)
    assert failed.message == f"said {status}"


async def test_an_answer_that_cannot_be_read_is_retried() -> None:
    failed = await car_booking_fails(FakeProvider(HTTPStatus.OK, page="<h1>Booked!</h1>"))

    assert (failed.type, failed.non_retryable) == (UNAVAILABLE, False)
    assert failed.message == "the car provider's answer cannot be read"


async def test_an_answer_that_is_no_problem_says_the_status() -> None:
    gateway = FakeProvider(HTTPStatus.BAD_GATEWAY, page="<h1>Bad Gateway</h1>")
    failed = await car_booking_fails(gateway)

    assert (failed.type, failed.non_retryable) == (UNAVAILABLE, False)
    assert failed.message == "the car provider answered 502 Bad Gateway"


async def test_a_provider_that_hangs_fails_the_attempt_at_the_call_timeout() -> None:
    hanging = FakeProvider(HTTPStatus.OK, delay=5)
    failed = await car_booking_fails(hanging, call_timeout=timedelta(seconds=0.2))

    assert (failed.type, failed.non_retryable) == (UNAVAILABLE, False)
    assert failed.message == "the car provider did not answer within 0.2 s"


async def test_a_provider_that_is_not_there_is_retried() -> None:
    providers = ProviderClient(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ApplicationError) as failed:
            await attempt(1).run(BookingActivities(providers).undo_book_car, trip())
    finally:
        await providers.close()

    assert (failed.value.type, failed.value.non_retryable) == (UNAVAILABLE, False)
    assert failed.value.message.startswith("the car provider did not answer (Cannot connect")


async def test_every_attempt_of_a_step_and_its_undo_sends_the_bookings_key() -> None:
    provider = FakeProvider(HTTPStatus.SERVICE_UNAVAILABLE)
    runner, url = await served(provider)
    activities = BookingActivities(ProviderClient(url))
    booking = trip()
    try:
        steps = [(1, activities.book_car), (2, activities.book_car), (1, activities.undo_book_car)]
        for number, step in steps:
            with pytest.raises(ApplicationError):
                await attempt(number, booking.book_user_id).run(step, booking)
    finally:
        await activities.providers.close()
        await runner.cleanup()

    assert provider.keys == [f'"{booking.book_user_id}/car"'] * 3
