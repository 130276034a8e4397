"""`namespace.py`: the worker adds the saga's search attributes where the server lets it,
and stops, saying how to create them, where it may not."""

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from namespace import NamespaceProblem, namespace_problem, prepare, search_attribute_types
from tests.support.namespaces import bare_namespace
from tests.support.processes import spawn

KEYWORD, TEXT = (
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
)
UNKNOWN_TYPE = IndexedValueType.ValueType(99)
ALL_THREE = {"BookingStatus": KEYWORD, "BookingCustomer": KEYWORD, "BookingClient": KEYWORD}


async def test_worker_adds_the_missing_search_attributes_says_so_then_polls(
    client: Client, address: str, tmp_path: Path
) -> None:
    namespace = await bare_namespace(client)
    env = {"TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": namespace}
    worker, output = spawn(
        [sys.executable, "run_worker.py"],
        {**env, "PROVIDERS_PORT": "0", "PROVIDERS_DIR": str(tmp_path)},
    )
    try:
        output.wait_for("Worker polling")
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)
    lines = "".join(output.lines)

    added = (
        "Added the search attributes BookingStatus, BookingCustomer, BookingClient to "
        f"namespace '{namespace}', which lacked them"
    )
    assert lines.count(added) == 1, lines
    assert lines.index(added) < lines.index("Worker polling"), "it polls once they are there"
    types = await search_attribute_types(await Client.connect(address, namespace=namespace))
    assert namespace_problem(namespace, types) is None


@dataclass
class RefusingOperator:
    """A server's operator service whose credentials may list but not add (Temporal Cloud)."""

    types: dict[str, IndexedValueType.ValueType]
    refusal: RPCStatusCode
    added: list[Any] = field(default_factory=list)

    async def list_search_attributes(self, request: Any, **_: Any) -> ListSearchAttributesResponse:
        return ListSearchAttributesResponse(custom_attributes=self.types)

    async def add_search_attributes(self, request: Any, **_: Any) -> None:
        self.added.append(request)
        raise RPCError("Request unauthorized.", self.refusal, b"")


@dataclass
class FakeClient:
    operator_service: RefusingOperator
    namespace: str = "bookings.a1b2c"


@pytest.mark.parametrize(
    "refusal", [RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED], ids=str
)
async def test_a_server_that_refuses_to_add_them_stops_the_worker_saying_how(
    refusal: RPCStatusCode,
) -> None:
    operator = RefusingOperator({"BookingStatus": KEYWORD}, refusal)

    with pytest.raises(NamespaceProblem) as stopped:
        await prepare(FakeClient(operator))  # type: ignore[arg-type]

    assert [dict(request.search_attributes) for request in operator.added] == [
        {"BookingCustomer": KEYWORD, "BookingClient": KEYWORD}
    ], "it asked for the missing two"
    message = str(stopped.value)
    assert message.startswith(
        "namespace 'bookings.a1b2c' lacks the search attributes BookingCustomer, BookingClient,"
    )
    assert (
        "temporal operator search-attribute create --namespace bookings.a1b2c "
        "--name BookingCustomer --type Keyword --name BookingClient --type Keyword" in message
    )
    assert (
        'tcld namespace search-attributes add -n bookings.a1b2c --sa "BookingCustomer=Keyword" '
        '--sa "BookingClient=Keyword"' in message
    )
    assert message.endswith("(adding them was refused: Request unauthorized.)")


async def test_a_worker_that_may_not_add_them_exits_1_with_the_message(
    client: Client, address: str, tmp_path: Path
) -> None:
    """The worker process as a user runs it, on a server whose operator service says no."""
    namespace = await bare_namespace(client)
    # The refusal as Temporal Cloud gives it, from a server that otherwise is real.
    refusing = (
        "import asyncio, namespace, run_worker\n"
        "from temporalio.service import RPCError, RPCStatusCode\n"
        "async def refuse(*args, **kwargs):\n"
        "    raise RPCError('Request unauthorized.', RPCStatusCode.PERMISSION_DENIED, b'')\n"
        "namespace._add = refuse\n"
        "asyncio.run(run_worker.main())\n"
    )
    env = {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": namespace,
        "PROVIDERS_PORT": "0",
        "PROVIDERS_DIR": str(tmp_path),
    }
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", refusing],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode == 1
    assert "Worker polling" not in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    assert (
        f"namespace '{namespace}' lacks the search attributes BookingStatus, BookingCustomer, "
        "BookingClient, which every booking sets" in refused.stderr
    )
    assert "(adding them was refused: Request unauthorized.)" in refused.stderr


# The namespace's custom search attributes → what the worker says as it stops (None: it starts).
NAMESPACE_TABLE = [
    pytest.param(
        {}, "lacks the search attributes BookingStatus, BookingCustomer, BookingClient", id="none"
    ),
    pytest.param(
        {"BookingStatus": KEYWORD, "BookingCustomer": KEYWORD, "Other": TEXT},
        "lacks the search attributes BookingClient,",
        id="two_of_three",
    ),
    pytest.param(
        {**ALL_THREE, "BookingStatus": TEXT},
        "has the search attribute BookingStatus as Text, but the saga needs Keyword",
        id="one_of_another_type",
    ),
    pytest.param(
        {**ALL_THREE, "BookingStatus": UNKNOWN_TYPE},
        "has the search attribute BookingStatus as type 99, but the saga needs Keyword",
        id="one_of_a_type_this_sdk_does_not_know",
    ),
    pytest.param(ALL_THREE, None, id="all_three"),
]


@pytest.mark.parametrize(("types", "says"), NAMESPACE_TABLE)
def test_the_worker_serves_a_namespace_only_with_every_search_attribute_as_a_keyword(
    types: dict[str, int], says: str | None
) -> None:
    problem = namespace_problem("bookings", types)

    if says is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith("namespace 'bookings' ")
        assert says in problem


async def test_an_attribute_of_another_type_stops_the_worker_without_adding_anything() -> None:
    operator = RefusingOperator({**ALL_THREE, "BookingClient": TEXT}, RPCStatusCode.OK)

    with pytest.raises(NamespaceProblem, match="has the search attribute BookingClient as Text"):
        await prepare(FakeClient(operator))  # type: ignore[arg-type]

    assert operator.added == []
