"""`api/contract.py`: the OpenAPI document, made from the routes, and every route held to it."""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from activities import BookingActivities
from api.settings import ApiSettings
from tests.support.keys import API_KEYS, as_


def test_openapi_document_is_3_1_and_lists_every_operation(http: FlaskClient) -> None:
    document = http.get("/openapi.json").get_json()

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/book",
        "/bookings",
        "/bookings/{user_id}",
        "/bookings/{user_id}/cancel",
        "/bookings/{user_id}/legs/{leg}/retry-undo",
        "/bookings/{user_id}/legs/{leg}/resolve",
        "/healthz",
        "/readyz",
        "/openapi.json",
    }
    listing = document["paths"]["/bookings"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in listing["parameters"]] == [
        ("status", "query", False),
        ("customer", "query", False),
        ("page_size", "query", False),
        ("page_token", "query", False),
    ]
    assert listing["parameters"][2]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    request_schema = document["components"]["schemas"]["BookingRequest"]
    assert request_schema["required"] == ["name", "attempts", "car", "hotel", "flight"]
    fields = request_schema["properties"]
    assert (fields["attempts"]["minimum"], fields["attempts"]["maximum"]) == (1, 10)
    assert fields["deadline_seconds"]["anyOf"] == [  # null or left out: the default
        {"type": "integer", "minimum": 1, "maximum": 3600},
        {"type": "null"},
    ]
    assert request_schema["additionalProperties"] is False


PUBLIC = {("/healthz", "get"), ("/readyz", "get"), ("/openapi.json", "get")}
CLIENTS_ONLY = {("/book", "post"), ("/bookings", "post")}


def test_with_keys_the_document_declares_the_bearer_scheme_and_each_refusal(
    make_app: Callable[..., Flask], api_settings: ApiSettings
) -> None:
    app = make_app(replace(api_settings, api_keys=API_KEYS))

    document = app.test_client().get("/openapi.json").get_json()

    assert document["components"]["securitySchemes"]["apiKey"]["type"] == "http"
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]
    for path, methods in document["paths"].items():
        for method, declared in methods.items():
            responses = declared["responses"]
            if (path, method) in PUBLIC:
                assert declared["security"] == [], path
                assert "401" not in responses
                continue
            assert "security" not in declared  # the document's own
            assert "WWW-Authenticate" in responses["401"]["headers"], path
            assert ("403" in responses) is ((path, method) in CLIENTS_ONLY), path


def test_without_keys_the_document_declares_no_scheme(http: FlaskClient) -> None:
    document = http.get("/openapi.json").get_json()

    assert "securitySchemes" not in document["components"]
    assert "security" not in document
    assert not any(
        {"401", "403"} & set(declared["responses"])
        for methods in document["paths"].values()
        for declared in methods.values()
    )


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("caller", [None, "alice"], ids=["open", "with_a_client_key"])
def test_every_operation_holds_to_its_schema_under_fuzzing(
    make_app: Callable[..., Flask],
    api_settings: ApiSettings,
    activities: BookingActivities,
    caller: str | None,
) -> None:
    """schemathesis: no 5xx, and every answer conforms to the OpenAPI document.

    With keys, it also checks that every operation the document secures
    refuses a request without a key, or with a wrong one (`ignored_auth`).
    """
    keys = API_KEYS if caller else None
    app = make_app(replace(api_settings, book_wait_seconds=5, api_keys=keys))
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    @FUZZ
    @given(case=schema.as_strategy())
    def fuzz(case: Any) -> None:
        # Every check but one: the server is knowingly stricter than the schema
        # on Unicode format characters, which no portable JSON Schema regex names.
        case.call_and_validate(headers=as_(caller), excluded_checks=[positive_data_acceptance])

    fuzz()
