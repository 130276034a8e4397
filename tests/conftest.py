"""One real Temporal dev server per test session (or an existing one)."""

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from helpers import EXTRA_NAMESPACE
from run_stack import SERVER_TUNING, free_port, temporal_binary


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
