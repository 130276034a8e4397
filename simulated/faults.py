"""How the simulated providers misbehave, read from the `SIM_*` variables.

Latency, outages, refusals, answers lost after the work was done, and stock:
whatever serves the providers (`providers.py`) reads them into `Simulation`.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from config import ConfigError, number_from_env
from shared import Leg


@dataclass(frozen=True)
class ProviderFaults:
    """How one provider misbehaves; every rate is a probability per call."""

    outage_rate: float = 0.0
    """Down before doing anything: a retry may succeed."""
    reject_rate: float = 0.0
    """Refuses the booking: not retried, so the saga rolls back."""
    undo_reject_rate: float = 0.0
    """Refuses to undo: not retried, so the leg waits for a person at once."""
    lost_reply_rate: float = 0.0
    """Does the work, then the answer is lost: the case that double-books naive code."""
    latency_seconds: float = 0.0
    """Added to this provider's calls, on top of SIM_LATENCY_SECONDS."""
    stock: int | None = None
    """Reservations one item can hold at once ("sold out" past it); None: no limit."""

    @classmethod
    def from_env(cls, leg: Leg, env: Mapping[str, str]) -> "ProviderFaults":
        """Read the provider's SIM_<LEG>_* variables (docs/operating.md, "Configuration")."""
        prefix = f"SIM_{leg.upper()}_"

        def rate(name: str) -> float:
            return number_from_env(env, prefix + name, float, 0.0, low=0.0, high=1.0)

        stock = env.get(prefix + "STOCK")
        return cls(
            outage_rate=rate("OUTAGE_RATE"),
            reject_rate=rate("REJECT_RATE"),
            undo_reject_rate=rate("UNDO_REJECT_RATE"),
            lost_reply_rate=rate("LOST_REPLY_RATE"),
            latency_seconds=number_from_env(
                env, prefix + "LATENCY_SECONDS", float, 0.0, low=0, high=5
            ),
            stock=None
            if stock is None
            else number_from_env(env, prefix + "STOCK", int, 0, low=0, high=10**9),
        )


@dataclass(frozen=True)
class Simulation:
    """How the simulated providers behave (read by whatever serves them)."""

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
            latency_seconds=number_from_env(
                env, "SIM_LATENCY_SECONDS", float, cls.latency_seconds, low=0, high=5
            ),
            hotel_outage=outage == "1",
            faults={
                leg: faults
                for leg in Leg
                if (faults := ProviderFaults.from_env(leg, env)) != ProviderFaults()
            },
            seed=None
            if seed is None
            else number_from_env(env, "SIM_SEED", int, 0, low=0, high=2**63),
        )

    def of(self, leg: Leg) -> ProviderFaults:
        """Return one provider's faults (none unless configured)."""
        return self.faults.get(leg, ProviderFaults())

    def stock(self) -> dict[Leg, int | None]:
        """Return each provider's stock limit, for its store."""
        return {leg: self.of(leg).stock for leg in Leg}
