"""`api/errors.py`: each failure, one status, one problem+json shape; no traceback."""

from collections.abc import Iterator

import pytest
from flask import Flask

from api import errors
from api.inputs import InvalidRequest
from api.loop import ClientLoop, ClientLoopFlask
from api.temporal import (
    BookingEnded,
    BookingError,
    BookingNotFound,
    KeyReused,
    PageTokenRefused,
    Unavailable,
)

ERRORS = [
    pytest.param(BookingNotFound("no booking 'x'"), 404, {}, id="not_found"),
    pytest.param(BookingEnded("ended", "jane-1"), 409, {"user_id": "jane-1"}, id="ended"),
    pytest.param(KeyReused("reused", "trip-1"), 422, {"user_id": "trip-1"}, id="key_reused"),
    pytest.param(Unavailable("no worker"), 503, {}, id="not_now"),
    pytest.param(Unavailable("lost start", "jane-1"), 503, {"user_id": "jane-1"}, id="lost_start"),
    pytest.param(PageTokenRefused("unreadable"), 400, {}, id="page_token_refused"),
    pytest.param(
        InvalidRequest("bad", {"name": "bad"}), 400, {"fields": {"name": "bad"}}, id="bad"
    ),
    pytest.param(RuntimeError("boom"), 500, {}, id="anything_else"),
]


@pytest.fixture
def app() -> Iterator[Flask]:
    client_loop = ClientLoop.start()
    app = ClientLoopFlask(__name__, client_loop)
    app.register_blueprint(errors.blueprint)
    yield app
    client_loop.close()


@pytest.mark.parametrize(("error", "status", "extra"), ERRORS)
def test_each_error_is_one_status_as_problem_json(
    app: Flask, error: Exception, status: int, extra: dict[str, object]
) -> None:
    @app.get("/fail")
    async def fail() -> dict[str, str]:
        raise error

    response = app.test_client().get("/fail")

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    detail = error.detail if isinstance(error, BookingError | InvalidRequest) else "internal error"
    assert body == {
        "type": "about:blank",
        "title": body["title"],
        "status": status,
        "detail": detail,
        "instance": "/fail",
        **extra,
    }
    assert ("Retry-After" in response.headers) == (status == 503)
    assert "Traceback" not in response.get_data(as_text=True)
