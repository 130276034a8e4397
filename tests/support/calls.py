"""What the API's Temporal client did: every call it made, and the thread each ran on."""

import threading
from typing import Any

from temporalio.client import (
    CancelWorkflowInput,
    Client,
    DescribeWorkflowInput,
    FetchWorkflowHistoryEventsInput,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    WorkflowExecutionDescription,
    WorkflowHandle,
    WorkflowHistoryEventAsyncIterator,
    WorkflowUpdateHandle,
)
from temporalio.service import RPCError, RPCStatusCode


class CallRecorder(Interceptor):
    """A client interceptor counting the calls the API makes, and recording their threads."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancels = 0
        self.updates = 0
        self.threads: set[str] = set()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Recording(next, self)

    def record(self) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)

    def watch_listings(self, client: Client) -> None:
        """Record `client`'s listings too: the API makes them on the raw service, past
        the interceptors."""
        service = client.workflow_service
        listing = service.list_workflow_executions

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self.record()
            return await listing(*args, **kwargs)

        service.list_workflow_executions = recorded  # type: ignore[method-assign]


class _Recording(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, recorder: CallRecorder) -> None:
        super().__init__(next)
        self.recorder = recorder

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self.recorder.record()
        return await super().start_workflow(input)

    async def describe_workflow(self, input: DescribeWorkflowInput) -> WorkflowExecutionDescription:
        self.recorder.record()
        return await super().describe_workflow(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        self.recorder.record()
        return await super().query_workflow(input)

    async def cancel_workflow(self, input: CancelWorkflowInput) -> None:
        self.recorder.record()
        self.recorder.cancels += 1
        return await super().cancel_workflow(input)

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        self.recorder.record()
        self.recorder.updates += 1
        return await super().start_workflow_update(input)

    def fetch_workflow_history_events(
        self, input: FetchWorkflowHistoryEventsInput
    ) -> WorkflowHistoryEventAsyncIterator:
        self.recorder.record()
        return super().fetch_workflow_history_events(input)


class LosesFirstStart(Interceptor):
    """A client interceptor losing the first start's answer, as a dropped connection does.

    `landed`: the start reached Temporal before its answer was lost (else it
    never left). Every later call goes through.
    """

    def __init__(self, *, landed: bool) -> None:
        self.landed = landed
        self.lost = False

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _LosingFirstStart(next, self)


class _LosingFirstStart(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, losing: LosesFirstStart) -> None:
        super().__init__(next)
        self.losing = losing

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        if self.losing.lost:
            return await super().start_workflow(input)
        self.losing.lost = True
        if self.losing.landed:
            await super().start_workflow(input)
        raise RPCError("connection lost", RPCStatusCode.UNAVAILABLE, b"")
