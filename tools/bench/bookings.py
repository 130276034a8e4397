"""The ways of booking the benchmark times: straight from a client, or through the API."""

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection, RemoteDisconnected
from typing import Any

from temporalio.client import Client

from shared import BookVacationInput
from workflows import BookingWorkflow

BODY = {
    "name": "Bench",
    "attempts": 3,
    "car": "valid-car-id",
    "hotel": "valid-hotel-id",
    "flight": "valid-flight-id",
}
POLL_SECONDS = 0.05
"""How often a client following POST /bookings asks for the status."""

Booking = Callable[[], Awaitable[None]]


def trip() -> BookVacationInput:
    """Return a booking that books."""
    user_id = f"bench-{uuid.uuid4().hex[:12]}"
    return BookVacationInput(3, user_id, "valid-car-id", "valid-hotel-id", "valid-flight-id")


def floor(client: Client) -> Booking:
    """Book straight from the Python client: no HTTP."""

    async def book() -> None:
        booking = trip()
        await client.execute_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue="saga-task-queue"
        )

    return book


def connect_per_request(address: str) -> Booking:
    """Connect a new client for every booking, as the tutorial's earlier variant does."""

    async def book() -> None:
        await floor(await Client.connect(address))()

    return book


class Refused(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def http(port: int, pool: ThreadPoolExecutor, *, poll: bool) -> Booking:
    """Book through the API: POST /book, or POST /bookings then poll the status.

    Each client thread keeps its connection open between requests, as an
    HTTP client with a connection pool does.
    """
    local = threading.local()

    def exchange(method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        reused = getattr(local, "connection", None)
        connection = reused or HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection = connection
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            connection.request(method, path, data, headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (RemoteDisconnected, BrokenPipeError):
            connection.close()
            local.connection = None
            if reused is None:
                raise
            # The server had closed the idle connection (no answer at all, or a
            # send refused): it never acted on this request.
            return exchange(method, path, data)

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        status, payload = exchange(method, path, data)
        if status >= 400:
            raise Refused(status)
        answer: dict[str, Any] = json.loads(payload)
        return answer

    def book_sync() -> None:
        if not poll:
            assert send("POST", "/book", BODY)["cancelled"] is False
            return
        url = send("POST", "/bookings", BODY)["status_url"]
        while True:
            time.sleep(POLL_SECONDS)
            try:
                if send("GET", url)["status"] == "confirmed":
                    return
            except Refused as err:
                if err.status != 503:  # a busy worker: ask again, as a client would
                    raise

    async def book() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, book_sync)

    return book
