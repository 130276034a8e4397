"""`api/loop.py`: async views run on the client's one loop, with their request; the
request's thread reads the body and waits, up to a deadline."""

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, request

from api import errors
from api.loop import ClientLoop, ClientLoopFlask


class RecordingInput(io.BytesIO):
    """A request body that records which threads read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[str] = set()

    def read(self, size: int | None = -1) -> bytes:
        self.threads.add(threading.current_thread().name)
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self.threads.add(threading.current_thread().name)
        return super().readinto(buffer)


@pytest.fixture
def app() -> Iterator[Flask]:
    client_loop = ClientLoop.start()
    app = ClientLoopFlask(__name__, client_loop)
    app.register_blueprint(errors.blueprint)
    app.extensions["cancelled"] = threading.Event()

    @app.post("/echo")
    async def echo() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"thread": threading.current_thread().name, "body": request.get_json()}

    @app.get("/sync")
    def sync() -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @app.get("/slow")
    async def slow() -> dict[str, Any]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            app.extensions["cancelled"].set()
            raise
        return {}

    yield app
    client_loop.close()


def test_an_async_view_runs_on_the_client_loop_with_its_own_request(app: Flask) -> None:
    http = app.test_client()

    answers = [http.post("/echo", json={"n": n}).get_json() for n in range(3)]

    assert answers == [{"thread": "temporal-loop", "body": {"n": n}} for n in range(3)]


def test_a_sync_view_stays_on_the_request_thread(app: Flask) -> None:
    assert app.test_client().get("/sync").get_json() == {"thread": "MainThread"}


def test_the_body_is_read_on_the_request_thread_never_on_the_loop(app: Flask) -> None:
    body = RecordingInput(b'{"n": 1}')

    response = app.test_client().post(
        "/echo",
        data=b'{"n": 1}',
        content_type="application/json",
        environ_overrides={"wsgi.input": body},
    )

    assert response.get_json() == {"thread": "temporal-loop", "body": {"n": 1}}
    assert body.threads == {"MainThread"}


def test_a_view_past_its_deadline_is_cancelled_and_answers_503(app: Flask) -> None:
    app.config["ASYNC_VIEW_TIMEOUT"] = 0.2

    response = app.test_client().get("/slow")

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    deadline = time.monotonic() + 5
    while not app.extensions["cancelled"].is_set():
        assert time.monotonic() < deadline, "the view's task was left running"
        time.sleep(0.02)


def test_run_hands_a_coroutine_to_the_loop_from_any_thread() -> None:
    client_loop = ClientLoop.start()
    try:

        async def where() -> str:
            return threading.current_thread().name

        assert client_loop.run(where()) == "temporal-loop"
        with pytest.raises(TimeoutError, match=r"no answer within 0\.1 s"):
            client_loop.run(asyncio.sleep(5), timeout=0.1)
    finally:
        client_loop.close()


def test_a_timeout_raised_by_the_coroutine_itself_is_passed_on_as_it_is() -> None:
    client_loop = ClientLoop.start()
    try:

        async def times_out() -> None:
            raise TimeoutError("the view's own")

        with pytest.raises(TimeoutError, match="the view's own"):
            client_loop.run(times_out(), timeout=5)
    finally:
        client_loop.close()


def test_close_cancels_what_still_runs_and_closes_the_loop() -> None:
    client_loop = ClientLoop.start()
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.run_coroutine_threadsafe(forever(), client_loop.loop)
    assert started.wait(5)

    client_loop.close()

    assert cancelled.is_set()
    assert client_loop.loop.is_closed()


def test_past_max_waiting_an_async_view_answers_503_at_once_and_sync_views_still_answer() -> None:
    client_loop = ClientLoop.start()
    app = ClientLoopFlask(__name__, client_loop, max_waiting=2)
    app.register_blueprint(errors.blueprint)
    release, entered = asyncio.Event(), threading.Semaphore(0)

    @app.get("/held")
    async def held() -> dict[str, Any]:
        entered.release()
        await release.wait()
        return {"held": True}

    @app.get("/sync")
    def sync() -> dict[str, Any]:
        return {"sync": True}

    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(app.test_client().get, "/held") for _ in range(2)]
            for _ in waiting:
                assert entered.acquire(timeout=5), "a held request never reached its view"

            refused = app.test_client().get("/held")
            alive = app.test_client().get("/sync")
            client_loop.loop.call_soon_threadsafe(release.set)
            held_answers = [future.result(timeout=5).get_json() for future in waiting]
        again = app.test_client().get("/held")
    finally:
        client_loop.close()

    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.get_json()["detail"] == "the API is at capacity; try again shortly"
    assert alive.get_json() == {"sync": True}
    assert held_answers == [{"held": True}] * 2
    assert again.get_json() == {"held": True}, "a slot must be given back"
