"""The API process's settings, read from the environment."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from api.access import ApiKeys, is_loopback, read_keys
from config import ConfigError, number_from_env, port_from_env
from deployment.versions import name_from_env
from shared import (
    DEFAULT_DEADLINE_SECONDS,
    DEPLOYMENT_NAME,
    MAX_DEADLINE_SECONDS,
    TASK_QUEUE_NAME,
)

SPARE_THREADS = 2
"""Request threads per process that never wait on Temporal."""


ACCESS_VARIABLES = ("HOST", "API_KEYS_FILE", "ALLOW_ANONYMOUS")
"""What decides who may call the API (docs/access.md)."""


@dataclass(frozen=True)
class ApiSettings:
    """Where the HTTP API listens, where it sends bookings, and how it is served."""

    host: str = "127.0.0.1"
    port: int = 3000
    task_queue: str = TASK_QUEUE_NAME
    deployment_name: str = DEPLOYMENT_NAME
    """The workers' deployment, whose versions `/readyz` checks for stuck bookings."""
    book_wait_seconds: float = 30.0
    """How long `POST /book` waits for the saga's end before answering 202."""
    processes: int = 1
    """gunicorn worker processes, each with its own Temporal client."""
    threads: int = 256
    """Request threads per process: each waiting `POST /book` holds one (docs/operating.md)."""
    booking_deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    """A booking not fully booked this long after its start is undone, unless it says otherwise."""
    api_keys: ApiKeys | None = None
    """The keys callers must present (API_KEYS_FILE); None: the API is open."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ApiSettings":
        """Read the settings from the environment (docs/operating.md, "Configuration").

        HOST, PORT, TEMPORAL_TASK_QUEUE, WORKER_DEPLOYMENT_NAME, BOOK_WAIT_SECONDS, WEB_CONCURRENCY,
        API_THREADS, BOOKING_DEADLINE_SECONDS, API_KEYS_FILE and ALLOW_ANONYMOUS.
        """
        host = env.get("HOST", cls.host)
        return cls(
            host=host,
            port=port_from_env(env, "PORT", cls.port),
            task_queue=task_queue_from_env(env, cls.task_queue),
            deployment_name=name_from_env(env, "WORKER_DEPLOYMENT_NAME", cls.deployment_name),
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
            api_keys=api_keys_from_env(env, host),
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


def api_keys_from_env(env: Mapping[str, str], host: str) -> ApiKeys | None:
    """Read the keys API_KEYS_FILE names; None (open) only where that is safe, or meant.

    Open is the tutorial's way on a loopback HOST. On any other, other
    machines could book, read and cancel every booking: refused unless
    ALLOW_ANONYMOUS=1.
    """
    path = env.get("API_KEYS_FILE")
    allow_anonymous = env.get("ALLOW_ANONYMOUS", "0")
    if allow_anonymous not in ("0", "1"):
        raise ConfigError(f"ALLOW_ANONYMOUS must be 1 or 0, not {allow_anonymous!r}")
    if path == "":
        # A template whose value came out empty: meant to have keys, so never open.
        raise ConfigError("API_KEYS_FILE is set but empty: name the API keys file, or unset it")
    if path is not None:
        return read_keys(Path(path))
    if not is_loopback(host) and allow_anonymous != "1":
        raise ConfigError(
            f"HOST={host!r} is not a loopback address, and API_KEYS_FILE is not set: anyone "
            "who reaches it could book, read and cancel every booking. Set API_KEYS_FILE to "
            "a file of API keys (docs/access.md), or ALLOW_ANONYMOUS=1 if an open API is "
            "meant"
        )
    return None
