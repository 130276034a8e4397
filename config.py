"""Every setting the processes read from the environment, in one place.

The Temporal connection comes from `temporalio.envconfig`, so the same
variables and config-file profiles as the `temporal` CLI apply
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS, profiles).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from temporalio.envconfig import ClientConfig, ClientConnectConfig

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"

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
    """Where the HTTP API listens."""

    host: str = "127.0.0.1"
    port: int = 3000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ApiSettings":
        """Read HOST and PORT."""
        return cls(
            host=env.get("HOST", cls.host),
            port=_number(env, "PORT", int, cls.port, low=1, high=65535),
        )


@dataclass(frozen=True)
class Simulation:
    """How the simulated providers misbehave (read by the worker)."""

    latency_seconds: float = 0.0
    hotel_outage: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Simulation":
        """Read SIM_LATENCY_SECONDS and SIM_HOTEL_OUTAGE."""
        outage = env.get("SIM_HOTEL_OUTAGE", "1")
        if outage not in ("0", "1"):
            raise ConfigError(f"SIM_HOTEL_OUTAGE must be 0 or 1, not {outage!r}")
        return cls(
            latency_seconds=_number(
                env, "SIM_LATENCY_SECONDS", float, cls.latency_seconds, low=0, high=5
            ),
            hotel_outage=outage == "1",
        )


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
