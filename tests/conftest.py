"""One real Temporal dev server per test session (or an existing one), and the API on it."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import BookingActivities
from api.loop import ClientLoop
from api.settings import ACCESS_VARIABLES, ApiSettings
from starter import create_app
from tests.support.calls import CallRecorder
from tests.support.providers import (  # start_providers: a fixture for every test module
    CLIENTS,
    RUNNING,
    start_providers,  # noqa: F401
    stop_all,
)
from tests.support.workers import EXTRA_NAMESPACE, quick_activities, worker_thread
from tools.processes import (
    DEPLOYMENT_FLAGS,
    SEARCH_ATTRIBUTE_FLAGS,
    SERVER_TUNING,
    free_port,
    temporal_binary,
)


def pytest_configure(config: pytest.Config) -> None:
    # Every API the tests start is open on loopback unless a test says otherwise,
    # whatever the developer's shell exports (an API_KEYS_FILE would mean 401s).
    for variable in ACCESS_VARIABLES:
        os.environ.pop(variable, None)
    # Nor traced: a test that traces says where to (tests/tracing).
    for variable in [name for name in os.environ if name.startswith("OTEL_")]:
        os.environ.pop(variable)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--temporal-address",
        default=None,
        help="run against this Temporal server instead of starting a dev server "
        f"(it needs a namespace named {EXTRA_NAMESPACE!r})",
    )


@pytest.fixture(scope="session")
async def env(request: pytest.FixtureRequest) -> AsyncIterator[WorkflowEnvironment]:
    address = request.config.getoption("--temporal-address")
    if address:
        environment = WorkflowEnvironment.from_client(await Client.connect(address))
    else:
        environment = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            ip="127.0.0.1",
            port=free_port(),  # never 7233: a `make run` may be going
            ui=False,
            dev_server_extra_args=[
                *SERVER_TUNING,
                *SEARCH_ATTRIBUTE_FLAGS,
                *DEPLOYMENT_FLAGS,
                "--namespace",
                EXTRA_NAMESPACE,
            ],
        )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="session", autouse=True)
def providers_stop() -> Iterator[None]:
    """Stop, as the session ends, every provider service the tests started in threads."""
    yield
    stop_all()


@pytest.fixture(autouse=True)
async def providers_closed() -> AsyncIterator[None]:
    """Close, on the test's loop, the provider clients the test made, then stop its providers.

    A module's fixtures keep theirs (made before the test): closed by their worker thread,
    stopped as the session ends.
    """
    clients, services = len(CLIENTS), set(RUNNING)
    yield
    for made in CLIENTS[clients:]:
        await made.close()
    del CLIENTS[clients:]
    for url in set(RUNNING) - services:
        await asyncio.to_thread(RUNNING.pop(url).stop)


@pytest.fixture(scope="session")
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture(scope="session")
def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture(scope="module")
def api_settings() -> ApiSettings:
    """The API's settings, with a task queue of this test module's own.

    Bookings a module leaves unfinished (a fuzzer's, say) must not be picked
    up by the next module's worker and counted in its providers.
    """
    return ApiSettings(task_queue=f"api-{uuid.uuid4()}")


@pytest.fixture(scope="module")
def activities(
    address: str, api_settings: ApiSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BookingActivities]:
    """The real activities, run by a worker thread on the module's task queue."""
    running = quick_activities(tmp_path_factory.mktemp("providers"))
    with worker_thread(address, running, api_settings.task_queue):
        yield running


@pytest.fixture(scope="module")
def recorder() -> CallRecorder:
    return CallRecorder()


@pytest.fixture(scope="module")
def client_loop() -> Iterator[ClientLoop]:
    """The API's event loop, in a thread of its own, as `starter.py` runs it."""
    loop = ClientLoop.start()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def api_client(address: str, client_loop: ClientLoop, recorder: CallRecorder) -> Client:
    """The API's Temporal client, connected on its loop, recording every call (listings too)."""
    client = client_loop.run(Client.connect(address, interceptors=[recorder]))
    recorder.watch_listings(client)
    return client


@pytest.fixture
def make_app(
    api_client: Client, client_loop: ClientLoop, api_settings: ApiSettings
) -> Callable[..., Flask]:
    """Build the app around the API's client; the module's settings unless told otherwise."""

    def make(settings: ApiSettings | None = None) -> Flask:
        return create_app(api_client, client_loop, settings or api_settings)

    return make


@pytest.fixture
def http(make_app: Callable[..., Flask], activities: BookingActivities) -> FlaskClient:
    """A test client of the app, with a worker running behind it."""
    return make_app().test_client()
