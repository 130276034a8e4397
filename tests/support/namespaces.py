"""Namespaces made for one test: without the saga's search attributes."""

import uuid

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from namespace import search_attribute_types
from tests.support.histories import eventually


async def bare_namespace(client: Client) -> str:
    """Register a namespace without the saga's search attributes; return it once it answers."""
    namespace = f"bare-{uuid.uuid4()}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400)
        )
    )
    bare = await Client.connect(client.service_client.config.target_host, namespace=namespace)

    async def answers() -> bool:
        try:
            return not await search_attribute_types(bare)
        except RPCError:  # not known to every part of the server yet
            return False

    await eventually(answers)
    return namespace
