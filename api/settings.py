"""The API process's settings, read from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from config import ConfigError, number_from_env, port_from_env
from shared import DEFAULT_DEADLINE_SECONDS, MAX_DEADLINE_SECONDS, TASK_QUEUE_NAME

SPARE_THREADS = 2
"""Request threads per process that never wait on Temporal."""


@dataclass(frozen=True)
class ApiSettings:
    """Where the HTTP API listens, where it sends bookings, and how it is served."""

    host: str = "127.0.0.1"
    port: int = 3000
    task_queue: str = TASK_QUEUE_NAME
    book_wait_seconds: float = 30.0
    """How long `POST /book` waits for the saga's end before answering 202."""
    processes: int = 1
    """gunicorn worker processes, each with its own Temporal client."""
    threads: int = 256
    """Request threads per process: each waiting `POST /book` holds one (README, "Serving")."""
    booking_deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    """A booking not fully booked this long after its start is undone, unless it says otherwise."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ApiSettings":
        """Read the settings from the environment (README, "Configuration").

        HOST, PORT, TEMPORAL_TASK_QUEUE, BOOK_WAIT_SECONDS, WEB_CONCURRENCY,
        API_THREADS and BOOKING_DEADLINE_SECONDS.
        """
        return cls(
            host=env.get("HOST", cls.host),
            port=port_from_env(env, "PORT", cls.port),
            task_queue=task_queue_from_env(env, cls.task_queue),
            book_wait_seconds=number_from_env(
                env, "BOOK_WAIT_SECONDS", float, cls.book_wait_seconds, low=0.1, high=3600
            ),
            processes=number_from_env(env, "WEB_CONCURRENCY", int, cls.processes, low=1, high=64),
            threads=number_from_env(
                env, "API_THREADS", int, cls.threads, low=SPARE_THREADS + 1, high=256
            ),
            booking_deadline_seconds=number_from_env(
                env,
                "BOOKING_DEADLINE_SECONDS",
                int,
                cls.booking_deadline_seconds,
                low=1,
                high=MAX_DEADLINE_SECONDS,
            ),
        )

    @property
    def max_waiting(self) -> int:
        """Requests per process that may wait on Temporal at once.

        The rest of the threads (`SPARE_THREADS`) stay free for `/healthz`
        and quick answers, however many bookings wait.
        """
        return max(1, self.threads - SPARE_THREADS)

    @property
    def request_timeout(self) -> float:
        """Seconds a request may take at most: `POST /book`'s wait, and room to start."""
        return self.book_wait_seconds + 30


def task_queue_from_env(env: Mapping[str, str], default: str) -> str:
    """Read TEMPORAL_TASK_QUEUE: a name `GET /bookings` can quote in a visibility query."""
    task_queue = env.get("TEMPORAL_TASK_QUEUE", default)
    if not task_queue or '"' in task_queue or "\\" in task_queue:
        raise ConfigError(f'TEMPORAL_TASK_QUEUE must be a name without " or \\, not {task_queue!r}')
    return task_queue
