"""Reading settings from the environment, and where Temporal is.

Each process keeps its own settings beside it (`api/settings.py`,
`run_worker.py`; the simulated providers' in `providers.py`), read through
the helpers here so that every bad value is refused the same way, naming
its variable. The Temporal connection comes from `temporalio.envconfig`, so
the same variables and config-file profiles as the `temporal` CLI apply
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS, profiles).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from temporalio.envconfig import ClientConfig, ClientConnectConfig

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


def port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    """Read a TCP port number."""
    return number_from_env(env, name, int, default, low=1, high=65535)


def number_from_env(
    env: Mapping[str, str], name: str, kind: type[N], default: N, *, low: N, high: N
) -> N:
    """Read a number between `low` and `high`; `default` if the variable is unset."""
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
