"""API keys for tests: two clients and an operator, and the headers that present them."""

import uuid

from api.access import Caller, key_line, parse_keys
from api.contract import Role

KEYS = {name: f"test-key-of-{name}-{uuid.uuid4()}" for name in ("alice", "bob", "ops")}
"""Each test caller's key: alice and bob are clients, ops an operator."""

ROLES = {"alice": Role.CLIENT, "bob": Role.CLIENT, "ops": Role.OPERATOR}

API_KEYS = parse_keys(
    "\n".join(key_line(name, ROLES[name], key) for name, key in KEYS.items()), "test keys"
)
"""The keys as the API holds them (hashes), as if read from API_KEYS_FILE."""


def as_(name: str | None) -> dict[str, str]:
    """Return the headers of a request made with `name`'s key (None: no key)."""
    return {"Authorization": f"Bearer {KEYS[name]}"} if name else {}


def one_character_changed(key: str, at: int = -1) -> str:
    """Return the key with its character at `at` swapped for another of the key alphabet."""
    at %= len(key)
    return key[:at] + ("A" if key[at] != "A" else "B") + key[at + 1 :]


def caller(name: str) -> Caller:
    """Return the caller `name`'s key stands for, as the API finds it."""
    found = API_KEYS.caller(KEYS[name])
    assert found is not None
    return found
