"""`api/temporal.py`: on a namespace without the saga's search attributes, every call that
needs them is a 503 naming the fix, never a 502; once added, the API serves."""

import pytest
from flask.testing import FlaskClient
from temporalio.client import Client

from api.loop import ClientLoop
from api.settings import ApiSettings
from namespace import prepare
from starter import create_app
from tests.support.namespaces import bare_namespace
from tests.support.trips import JOHN


@pytest.fixture
def bare(client: Client, address: str, client_loop: ClientLoop) -> Client:
    """The API's client, on a namespace of its own that lacks the search attributes."""
    namespace = client_loop.run(bare_namespace(client))
    return client_loop.run(Client.connect(address, namespace=namespace))


@pytest.fixture
def http(bare: Client, client_loop: ClientLoop, api_settings: ApiSettings) -> FlaskClient:
    return create_app(bare, client_loop, api_settings).test_client()


def lacking(namespace: str) -> str:
    return (
        f"namespace '{namespace}' lacks the search attributes BookingStatus, BookingCustomer, "
        "BookingClient, which every booking sets: start the worker (python run_worker.py), "
        "which adds them where the server allows it, or create them"
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("post", "/book", JOHN, id="book"),
        pytest.param("post", "/bookings", JOHN, id="start"),
        pytest.param("get", "/bookings?status=cancelled", None, id="list_by_status"),
        pytest.param("get", "/readyz", None, id="ready"),
    ],
)
def test_without_the_search_attributes_each_call_is_a_503_naming_the_fix(
    http: FlaskClient, bare: Client, client_loop: ClientLoop, method: str, path: str, body: object
) -> None:
    response = getattr(http, method)(path, json=body)

    assert response.status_code == 503, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["detail"].startswith(lacking(bare.namespace))
    listed = client_loop.run(bare.count_workflows())
    assert listed.count == 0, "nothing was started"


def test_once_a_worker_adds_them_the_api_needs_only_the_worker(
    http: FlaskClient, bare: Client, client_loop: ClientLoop
) -> None:
    assert lacking(bare.namespace) in http.get("/readyz").get_json()["detail"]

    client_loop.run(prepare(bare))  # what a worker does as it starts

    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["detail"] == "no worker polls task queue " + repr(
        http.application.extensions["following"].task_queue
    )
