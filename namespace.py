"""What the saga needs of its Temporal namespace: the search attributes every booking sets.

The worker makes sure of them before it polls (`prepare`): it adds the
missing ones where the server lets it (the dev server; a self-hosted
cluster whose credentials allow it) and stops, saying how to create them,
where it may not (Temporal Cloud). The API tells a booking refused for
their lack from any other refusal (`missing_for_api`).
"""

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

from shared import SEARCH_ATTRIBUTES, type_name

log = logging.getLogger("namespace")

CALL_TIMEOUT = timedelta(seconds=10)
"""How long each try of a call to the operator service may take."""

VISIBLE_WITHIN = timedelta(seconds=30)
"""How long search attributes just added may take to show in the namespace."""

NOT_ALLOWED = {
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNIMPLEMENTED,
    RPCStatusCode.UNAUTHENTICATED,
}
"""How a server says these credentials may not use its operator service (Temporal Cloud)."""


class NamespaceProblem(Exception):
    """The namespace cannot hold the saga's bookings, and the worker may not fix it."""


async def search_attribute_types(
    client: Client, within: timedelta = CALL_TIMEOUT, *, retry: bool = True
) -> dict[str, int]:
    """Return the custom search attributes of the client's namespace, with their types.

    The types are the API's `IndexedValueType` numbers, kept as they come: a
    type this SDK does not know is just not the one the saga needs.
    """
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace), retry=retry, timeout=within
    )
    return dict(response.custom_attributes)


def missing(types: Mapping[str, int]) -> list[SearchAttributeKey[str]]:
    """Return the saga's search attributes that a namespace with these lacks."""
    return [key for key in SEARCH_ATTRIBUTES if key.name not in types]


def namespace_problem(namespace: str, types: Mapping[str, int]) -> str | None:
    """Return why a namespace with these search attributes cannot serve the saga, if it cannot.

    Every booking sets the saga's search attributes, so a worker serving a
    namespace without them would fail every booking; the message says how
    to create them.
    """
    if lacking := missing(types):
        kinds = {key.name: type_name(key.indexed_value_type) for key in lacking}
        cluster = " ".join(f"--name {name} --type {kind}" for name, kind in kinds.items())
        cloud = " ".join(f'--sa "{name}={kind}"' for name, kind in kinds.items())
        return (
            f"namespace {namespace!r} lacks the search attributes {', '.join(kinds)}, which "
            f'every booking sets; create them (docs/operating.md, "Search attributes"), then '
            f"start the worker again. On a cluster:\n"
            f"  temporal operator search-attribute create --namespace {namespace} {cluster}\n"
            f"On Temporal Cloud:\n"
            f"  tcld namespace search-attributes add -n {namespace} {cloud}"
        )
    for key in SEARCH_ATTRIBUTES:
        if types[key.name] != key.indexed_value_type:
            return (
                f"namespace {namespace!r} has the search attribute {key.name} as "
                f"{type_name(types[key.name])}, but the saga needs "
                f"{type_name(key.indexed_value_type)}: a search attribute's type cannot "
                "change, so remove it if nothing else uses it and create it again, or use "
                "another namespace"
            )
    return None


async def prepare(client: Client) -> None:
    """Make sure the client's namespace has the saga's search attributes, adding what lacks.

    Raises:
        NamespaceProblem: An attribute has another type, or lacks and the
            server refused to add it; the message says what to do.

    """
    try:
        types = await search_attribute_types(client)
    except RPCError as err:
        if err.status not in NOT_ALLOWED:
            raise NamespaceProblem(f"cannot list the search attributes: {err.message}") from None
        # Some deployments do not let a worker's credentials list them: go on.
        log.warning("Could not check the namespace's search attributes: %s", err.message)
        return
    lacking = missing(types)
    if lacking:
        try:
            await _add(client, lacking)
        except RPCError as err:
            problem = namespace_problem(client.namespace, types)
            raise NamespaceProblem(f"{problem}\n(adding them was refused: {err.message})") from None
        log.info(
            "Added the search attributes %s to namespace %r, which lacked them",
            ", ".join(key.name for key in lacking),
            client.namespace,
        )
        try:
            types = await _visible(client)
        except TimeoutError:
            raise NamespaceProblem(
                f"the search attributes added were not visible within {VISIBLE_WITHIN}"
            ) from None
    if problem := namespace_problem(client.namespace, types):
        raise NamespaceProblem(problem)


async def _add(client: Client, keys: list[SearchAttributeKey[str]]) -> None:
    request = AddSearchAttributesRequest(
        namespace=client.namespace,
        search_attributes={
            key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in keys
        },
    )
    await client.operator_service.add_search_attributes(request, retry=True, timeout=CALL_TIMEOUT)


async def _visible(client: Client) -> dict[str, int]:
    # A server may take a moment to show attributes it has just added.
    async with asyncio.timeout(VISIBLE_WITHIN.total_seconds()):
        while True:
            types = await search_attribute_types(client)
            if not missing(types):
                return types
            await asyncio.sleep(0.2)


async def missing_for_api(client: Client, within: timedelta) -> str | None:
    """Return, for a caller of the API, why bookings cannot start if it is the attributes' lack.

    None if the namespace has them, or if the API's credentials may not tell.
    """
    try:
        types = await search_attribute_types(client, within, retry=False)
    except RPCError:
        return None
    lacking = missing(types)
    if not lacking:
        return None
    names = ", ".join(key.name for key in lacking)
    return (
        f"namespace {client.namespace!r} lacks the search attributes {names}, which every "
        "booking sets: start the worker (python run_worker.py), which adds them where the "
        'server allows it, or create them (docs/operating.md, "Search attributes")'
    )
