"""Every setting the processes read from the environment, in one place.

The Temporal connection comes from `temporalio.envconfig`, so the same
variables and config-file profiles as the `temporal` CLI apply
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS, profiles).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from temporalio.envconfig import ClientConfig, ClientConnectConfig

from shared import TASK_QUEUE_NAME, Leg

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
PROJECT_DIR = Path(__file__).resolve().parent

N = TypeVar("N", int, float)


class ConfigError(ValueError):
    """An environment variable holds a value the program cannot use."""


def temporal_connect_config(
    env: Mapping[str, str] | None = None,
) -> ClientConnectConfig:
    """Return `Client.connect` keyword arguments from envconfig's sources."""
    config = ClientConfig.load_client_connect_config(override_env_vars=env)
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    return config


@dataclass(frozen=True)
class ApiSettings:
    """Where the HTTP API listens, and where it sends bookings."""

    host: str = "127.0.0.1"
    port: int = 3000
    task_queue: str = TASK_QUEUE_NAME
    book_wait_seconds: float = 30.0
    """How long `POST /book` waits for the saga's end before answering 202."""
    processes: int = 1
    """gunicorn worker processes, each with its own Temporal client."""
    threads: int = 16
    """Request threads per process."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ApiSettings":
        """Read HOST, PORT, TEMPORAL_TASK_QUEUE, BOOK_WAIT_SECONDS, WEB_CONCURRENCY, API_THREADS."""
        return cls(
            host=env.get("HOST", cls.host),
            port=port_from_env(env, "PORT", cls.port),
            task_queue=env.get("TEMPORAL_TASK_QUEUE", cls.task_queue),
            book_wait_seconds=_number(
                env, "BOOK_WAIT_SECONDS", float, cls.book_wait_seconds, low=0.1, high=3600
            ),
            processes=_number(env, "WEB_CONCURRENCY", int, cls.processes, low=1, high=64),
            threads=_number(env, "API_THREADS", int, cls.threads, low=1, high=256),
        )


@dataclass(frozen=True)
class ProviderFaults:
    """How one provider misbehaves; every rate is a probability per call."""

    outage_rate: float = 0.0
    """Down before doing anything: a retry may succeed."""
    reject_rate: float = 0.0
    """Refuses the booking: not retried, so the saga rolls back."""
    lost_reply_rate: float = 0.0
    """Does the work, then the answer is lost: the case that double-books naive code."""
    latency_seconds: float = 0.0
    """Added to this provider's calls, on top of SIM_LATENCY_SECONDS."""
    stock: int | None = None
    """Reservations one item can hold at once ("sold out" past it); None: no limit."""

    @classmethod
    def from_env(cls, leg: Leg, env: Mapping[str, str]) -> "ProviderFaults":
        """Read SIM_<LEG>_OUTAGE_RATE, _REJECT_RATE, _LOST_REPLY_RATE, _LATENCY_SECONDS, _STOCK."""
        prefix = f"SIM_{leg.upper()}_"

        def rate(name: str) -> float:
            return _number(env, prefix + name, float, 0.0, low=0.0, high=1.0)

        stock = env.get(prefix + "STOCK")
        return cls(
            outage_rate=rate("OUTAGE_RATE"),
            reject_rate=rate("REJECT_RATE"),
            lost_reply_rate=rate("LOST_REPLY_RATE"),
            latency_seconds=_number(env, prefix + "LATENCY_SECONDS", float, 0.0, low=0, high=5),
            stock=None
            if stock is None
            else _number(env, prefix + "STOCK", int, 0, low=0, high=10**9),
        )


@dataclass(frozen=True)
class Simulation:
    """How the simulated providers behave (read by the worker)."""

    latency_seconds: float = 0.0
    hotel_outage: bool = True
    faults: Mapping[Leg, ProviderFaults] = field(default_factory=dict)
    seed: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Simulation":
        """Read SIM_LATENCY_SECONDS, SIM_HOTEL_OUTAGE, SIM_SEED and each provider's faults."""
        outage = env.get("SIM_HOTEL_OUTAGE", "1")
        if outage not in ("0", "1"):
            raise ConfigError(f"SIM_HOTEL_OUTAGE must be 0 or 1, not {outage!r}")
        seed = env.get("SIM_SEED")
        return cls(
            latency_seconds=_number(
                env, "SIM_LATENCY_SECONDS", float, cls.latency_seconds, low=0, high=5
            ),
            hotel_outage=outage == "1",
            faults={
                leg: faults
                for leg in Leg
                if (faults := ProviderFaults.from_env(leg, env)) != ProviderFaults()
            },
            seed=None if seed is None else _number(env, "SIM_SEED", int, 0, low=0, high=2**63),
        )

    def of(self, leg: Leg) -> ProviderFaults:
        """Return one provider's faults (none unless configured)."""
        return self.faults.get(leg, ProviderFaults())


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker process serves, and where the providers keep their data."""

    task_queue: str = TASK_QUEUE_NAME
    providers_dir: Path = PROJECT_DIR / ".providers"
    simulation: Simulation = field(default_factory=Simulation)
    metrics_address: str = ""
    """host:port of the Prometheus endpoint; empty: none."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "WorkerSettings":
        """Read TEMPORAL_TASK_QUEUE, PROVIDERS_DIR, WORKER_METRICS_ADDRESS and SIM_*."""
        return cls(
            task_queue=env.get("TEMPORAL_TASK_QUEUE", cls.task_queue),
            providers_dir=Path(env.get("PROVIDERS_DIR", cls.providers_dir)),
            simulation=Simulation.from_env(env),
            metrics_address=env.get("WORKER_METRICS_ADDRESS", cls.metrics_address),
        )


def port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    """Read a TCP port number."""
    return _number(env, name, int, default, low=1, high=65535)


def _number(env: Mapping[str, str], name: str, kind: type[N], default: N, *, low: N, high: N) -> N:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {raw!r}")
    return value
