"""`api/inputs.py`: what a request may carry; the rest is a 400 that changes nothing."""

import pytest
from flask.testing import FlaskClient

from tests.support.trips import JOHN


@pytest.mark.parametrize("key", ["", "ünïcode", "x" * 256, "with space"])
def test_malformed_idempotency_key_is_400(http: FlaskClient, key: str) -> None:
    response = http.post("/bookings", json=JOHN, headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["detail"]


def test_service_stays_healthy_after_hostile_input(http: FlaskClient) -> None:
    for body in (b"\xff\xfe", b"{" * 10_000, b'{"name": "\\ud800"}', b"[" + b"1," * 4000 + b"1]"):
        assert (
            400 <= http.post("/book", data=body, content_type="application/json").status_code < 500
        )
    assert http.get("/healthz").status_code == 200
    assert http.post("/book", json=JOHN).status_code == 200
