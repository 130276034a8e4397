"""The event loop that owns the Temporal client, and a Flask whose async views run on it.

The SDK's client is not safe to use from several threads or event loops at
once (sdk-python #147), and Flask, left to itself, runs each `async def`
view in a new event loop of its own (asgiref's `async_to_sync`): the
tutorial's shared client, used that way, breaks. So the process runs one
loop in a background thread, the client connects on it, and
`ClientLoopFlask.ensure_sync` (Flask's documented hook for how async views
run) hands every async view to that loop as a task; the request's thread
waits for the answer.
"""

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Self, TypeVar

from flask import Flask, has_request_context, request

T = TypeVar("T")


class ClientLoop:
    """One event loop, running in a thread of its own, for the Temporal client."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.loop = loop
        self._thread = thread

    @classmethod
    def start(cls) -> Self:
        """Start the loop's thread."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="temporal-loop", daemon=True)
        thread.start()
        return cls(loop, thread)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coroutine` on the loop from any other thread; wait up to `timeout` s.

        The task is created from this thread, so it runs in a copy of this
        thread's context variables (asyncio copies them on each hand-off):
        Flask's request and app contexts come along. Past `timeout`, the
        task is cancelled and `TimeoutError` raised.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("ClientLoop.run called on its own loop: await instead")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, not ours
                raise
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None

    def close(self) -> None:
        """Cancel what still runs on the loop, then stop and close it."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.loop.close()


async def _cancel_all() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Busy(Exception):
    """Every request thread that may wait on the client's loop is waiting."""


class ClientLoopFlask(Flask):
    """Flask, running every async view as a task on the client's loop.

    `ASYNC_VIEW_TIMEOUT` in its config bounds how long a request waits for
    its view (60 s unless set). At most `max_waiting` requests wait at once;
    one more raises `Busy` at once. Set it below the server's thread count,
    and the threads above it always serve what needs no Temporal (`/healthz`)
    and quick refusals, however many bookings wait.
    """

    def __init__(
        self,
        import_name: str,
        client_loop: ClientLoop,
        *,
        max_waiting: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(import_name, **options)
        self.client_loop = client_loop
        self.config.setdefault("ASYNC_VIEW_TIMEOUT", 60.0)
        self._waiting = threading.BoundedSemaphore(max_waiting) if max_waiting else None

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Return `func` as it is if synchronous; else a function running it on the loop."""
        if not inspect.iscoroutinefunction(func):
            return func

        @wraps(func)
        def on_client_loop(*args: Any, **kwargs: Any) -> Any:
            if has_request_context():
                # Read the body here, on the request's thread (it is cached for
                # the view): the loop must never wait on a client's socket.
                request.get_data()
            if self._waiting is not None and not self._waiting.acquire(blocking=False):
                raise Busy("every request slot is waiting on Temporal")
            try:
                return self.client_loop.run(
                    func(*args, **kwargs), self.config["ASYNC_VIEW_TIMEOUT"]
                )
            finally:
                if self._waiting is not None:
                    self._waiting.release()

        return on_client_loop
