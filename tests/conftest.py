"""One real Temporal dev server per test session (or an existing one)."""

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from flask.testing import FlaskClient
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import BookingActivities
from config import ApiSettings
from helpers import (
    EXTRA_NAMESPACE,
    CountingGateway,
    ThreadRecorder,
    quick_activities,
    worker_thread,
)
from run_stack import SERVER_TUNING, free_port, temporal_binary
from starter import create_app


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
            dev_server_extra_args=[*SERVER_TUNING, "--namespace", EXTRA_NAMESPACE],
        )
    yield environment
    await environment.shutdown()


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
def recorder() -> ThreadRecorder:
    return ThreadRecorder()


@pytest.fixture(scope="module")
def gateway(address: str, recorder: ThreadRecorder) -> Iterator[CountingGateway]:
    """The API's gateway to the test server, counting calls and recording threads."""
    gateway = CountingGateway.start(lambda: Client.connect(address, interceptors=[recorder]))
    yield gateway
    gateway.close()


@pytest.fixture
def http(
    gateway: CountingGateway, api_settings: ApiSettings, activities: BookingActivities
) -> FlaskClient:
    """A test client of the app, with a worker running behind it."""
    return create_app(gateway, api_settings).test_client()
