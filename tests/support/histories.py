"""What a workflow's history says: its activities, their attempts, a cancel seen, its statuses."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from temporalio.api.enums.v1 import RetryState
from temporalio.client import WorkflowHandle
from temporalio.converter import DataConverter, decode_typed_search_attributes

from shared import BOOKING_STATUS


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check()` holds, polling, for at most 30 seconds."""
    async with asyncio.timeout(30):
        while not await check():  # noqa: ASYNC110 (a server-side state: no event to await)
            await asyncio.sleep(0.1)


async def cancel_seen(handle: WorkflowHandle[Any, Any]) -> bool:
    """Return whether the workflow has run a task since a cancel was requested."""
    requested = False
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_cancel_requested_event_attributes"):
            requested = True
        elif requested and event.HasField("workflow_task_completed_event_attributes"):
            return True
    return False


async def cancel_requested(handle: WorkflowHandle[Any, Any]) -> bool:
    """Return whether anyone has asked the workflow to cancel."""
    return any(
        [
            event.HasField("workflow_execution_cancel_requested_event_attributes")
            async for event in handle.fetch_history_events()
        ]
    )


PAYLOADS = DataConverter.default.payload_converter


async def step_cancel_requested(handle: WorkflowHandle[Any, Any]) -> bool:
    """Return whether the workflow has asked an activity in flight to cancel."""
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_cancel_requested_event_attributes"):
            return True
    return False


async def timers(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, str]]:
    """Return each timer the workflow started, by its summary, and how it ended."""
    started: dict[int, str] = {}
    ended: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("timer_started_event_attributes"):
            summary = PAYLOADS.from_payload(event.user_metadata.summary, str)
            started[event.event_id] = summary
        elif event.HasField("timer_fired_event_attributes"):
            ended[event.timer_fired_event_attributes.started_event_id] = "fired"
        elif event.HasField("timer_canceled_event_attributes"):
            ended[event.timer_canceled_event_attributes.started_event_id] = "canceled"
    return [(summary, ended.get(event_id, "pending")) for event_id, summary in started.items()]


async def booking_statuses(handle: WorkflowHandle[Any, Any]) -> list[str | None]:
    """Return each `BookingStatus` the workflow upserted, in order."""
    statuses = []
    async for event in handle.fetch_history_events():
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            upserted = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            statuses.append(decode_typed_search_attributes(upserted).get(BOOKING_STATUS))
    return statuses


class ActivityRun(NamedTuple):
    """One activity as the history records it: name, last attempt, how it ended."""

    name: str
    attempt: int
    outcome: str


async def why_not_retried(handle: WorkflowHandle[Any, Any]) -> dict[str, str]:
    """Return, for each activity that failed for good, the server's retry state."""
    scheduled: dict[int, str] = {}
    states: dict[str, str] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attributes.activity_type.name
        elif event.HasField("activity_task_failed_event_attributes"):
            failed = event.activity_task_failed_event_attributes
            states[scheduled[failed.scheduled_event_id]] = RetryState.Name(failed.retry_state)
    return states


OUTCOMES = {
    "activity_task_completed_event_attributes": "completed",
    "activity_task_failed_event_attributes": "failed",
    "activity_task_timed_out_event_attributes": "timed_out",
    "activity_task_canceled_event_attributes": "canceled",
}


async def activity_runs(handle: WorkflowHandle[Any, Any]) -> list[ActivityRun]:
    """Return the workflow's activities in the order they were scheduled."""
    names: dict[int, str] = {}
    attempts: dict[int, int] = {}
    outcomes: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        kind = event.WhichOneof("attributes") or ""
        attributes: Any = getattr(event, kind, None)
        if kind == "activity_task_scheduled_event_attributes":
            names[event.event_id] = attributes.activity_type.name
        elif kind == "activity_task_started_event_attributes":
            attempts[attributes.scheduled_event_id] = attributes.attempt
        elif kind in OUTCOMES:
            outcomes[attributes.scheduled_event_id] = OUTCOMES[kind]
    return [
        ActivityRun(name, attempts.get(event_id, 0), outcomes.get(event_id, "pending"))
        for event_id, name in sorted(names.items())
    ]
