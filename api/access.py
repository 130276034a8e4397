"""Who may call the API: API keys read from a file, and the check every request passes.

`API_KEYS_FILE` holds one key per line, `<client name> <role> <sha256 hex of
the key>`; only the hashes are kept. A request presents its key as
`Authorization: Bearer <key>` and is let through by its route's declared
roles (`api.contract.operation`). Without a key file the API is open: every
caller is `ANONYMOUS` and may do everything (`api/settings.py` allows that on
a loopback address only, unless ALLOW_ANONYMOUS says it is meant).
"""

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from flask import Flask, current_app, g, request
from werkzeug.exceptions import NotFound

from api.contract import Role, declared
from config import ConfigError

log = logging.getLogger("api.access")

CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
"""A client's name: recorded with its bookings (`BookingClient`), so plain and short."""

SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

BEARER_KEY = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""What an `Authorization: Bearer` credential may be (RFC 6750's b64token)."""

MAX_KEY_LENGTH = 256
"""Keys made by `make api-key` are 43 characters; anything far longer is malformed."""

OPERATORS_ONLY = frozenset({Role.OPERATOR})
"""Who may call a route that declares no operation (`/metrics`)."""


class AccessError(Exception):
    """A request that may not go on; `detail` says why, never echoing a key."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthenticated(AccessError):
    """No usable API key: none, a malformed header, or a key nobody holds."""

    def __init__(self, detail: str, challenge: str = "Bearer") -> None:
        super().__init__(detail)
        self.challenge = challenge
        """The WWW-Authenticate header to answer with (RFC 6750)."""


class Forbidden(AccessError):
    """A known key whose role may not do this."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: a client or an operator by its key, or anyone while the API is open."""

    name: str | None = None
    role: Role | None = None

    @property
    def owner(self) -> str | None:
        """The client recorded with the bookings this caller makes (None: the API is open)."""
        return self.name if self.role is Role.CLIENT else None

    def may_see(self, owner: str | None) -> bool:
        """Whether this caller may see a booking made by `owner` (None: made while open)."""
        return self.role is not Role.CLIENT or owner == self.name


ANONYMOUS = Caller()
"""Every caller of an API without keys."""


@dataclass(frozen=True)
class ApiKeys:
    """The hashes of the known keys, each with the caller it stands for."""

    entries: tuple[tuple[bytes, Caller], ...]

    def caller(self, key: str) -> Caller | None:
        """Return whose key this is, if anyone's.

        Every stored hash is compared, each in constant time, so the time
        taken tells nothing of how close a guess came, nor which line matched.
        """
        digest = key_hash(key)
        found = None
        for stored, caller in self.entries:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found

    def count(self, role: Role) -> int:
        """Return how many keys have this role."""
        return sum(caller.role is role for _, caller in self.entries)


def key_hash(key: str) -> bytes:
    """Return the SHA-256 of a key: what the key file keeps of it."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """Return a new random key: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def key_line(name: str, role: Role, key: str) -> str:
    """Return the key file's line for a key (its hash, never the key)."""
    return f"{name} {role.value} {key_hash(key).hex()}"


def read_keys(path: Path) -> ApiKeys:
    """Read an API keys file; ConfigError naming the file, and the line, if it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(f"API_KEYS_FILE {path} cannot be read: {reason}") from None
    return parse_keys(text, str(path))


def parse_keys(text: str, source: str) -> ApiKeys:
    """Return the keys of a key file's text; ConfigError naming the first bad line.

    Every line is `<client name> <role> <sha256 hex>`; `#` starts a comment.
    A message never quotes a hash: a key pasted in its place would be leaked.
    """
    entries: list[tuple[bytes, Caller]] = []
    first_line: dict[bytes, int] = {}
    roles: dict[str, Role] = {}
    # Lines as an editor counts them: \n alone (splitlines would also break at \v, \x1c...).
    for number, line in enumerate(text.split("\n"), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            name, role, digest = parse_line(fields)
            if digest in first_line:
                raise ValueError(f"the same key as line {first_line[digest]}")
            if roles.setdefault(name, role) is not role:
                raise ValueError(f"{name} is given another role on an earlier line")
        except ValueError as err:
            raise ConfigError(f"API_KEYS_FILE {source}, line {number}: {err}") from None
        first_line[digest] = number
        entries.append((digest, Caller(name, role)))
    if not entries:
        raise ConfigError(
            f"API_KEYS_FILE {source} holds no key: "
            "add one with make api-key NAME=<name> ROLE=client"
        )
    return ApiKeys(tuple(entries))


def parse_line(fields: list[str]) -> tuple[str, Role, bytes]:
    """Return one line's client name, role and key hash; ValueError saying what is wrong."""
    if len(fields) != 3:
        raise ValueError(f"expected <client name> <role> <sha256 hex>, found {len(fields)} fields")
    name, role, digest = fields
    if not CLIENT_NAME.fullmatch(name):
        raise ValueError(
            "a client name is 1 to 64 letters, digits and . _ @ -, from a letter or digit"
        )
    if role not in set(Role):
        raise ValueError("the second field, the role, must be client or operator")
    if not SHA256_HEX.fullmatch(digest):
        raise ValueError("the third field must be a SHA-256 hash: 64 hexadecimal digits")
    return name, Role(role), bytes.fromhex(digest)


def presented_key(header: str | None) -> str:
    """Return the key of an `Authorization: Bearer <key>` header; Unauthenticated if none."""
    if header is None:
        raise Unauthenticated("this needs an API key: send Authorization: Bearer <key>")
    malformed = "the Authorization header must be: Bearer <key>"
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated(malformed)  # another scheme: RFC 6750 gives no error code
    key = key.lstrip(" ")
    if len(key) > MAX_KEY_LENGTH or not BEARER_KEY.fullmatch(key):
        raise Unauthenticated(malformed, 'Bearer error="invalid_request"')
    return key


def guard(app: Flask, keys: ApiKeys | None) -> None:
    """Let each request of `app` through by its route's roles; open to all when `keys` is None."""
    app.extensions["api_keys"] = keys
    app.before_request(admit)


def keys_in_force() -> bool:
    """Whether the current app takes API keys."""
    return current_app.extensions["api_keys"] is not None


def admit() -> None:
    """Identify the caller of this request and check its role (run before every view).

    Raises:
        Unauthenticated: the route needs a key, and the request has none that is known.
        Forbidden: the key's role may not call the route.
        NotFound: a client's key on a route about one booking that clients may not use.

    """
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return  # no such route: Flask answers 404 or 405
    keys: ApiKeys | None = current_app.extensions["api_keys"]
    if keys is None:
        g.caller = ANONYMOUS
        return
    operation = declared(view)
    if operation is not None and operation.public:
        return  # no caller at all: a public route that asked for one would fail, not see all
    caller = keys.caller(presented_key(request.headers.get("Authorization")))
    if caller is None:
        raise Unauthenticated("this API key is not known", 'Bearer error="invalid_token"')
    roles = operation.roles if operation is not None else OPERATORS_ONLY
    if caller.role not in roles and caller.role is Role.CLIENT and request.view_args:
        # A route about one booking that clients may not use tells a client
        # nothing, not even that the booking exists: as for another's booking.
        raise NotFound(f"no booking {request.view_args.get('user_id')!r}")
    if caller.role not in roles:
        allowed = " or ".join(sorted(roles))
        raise Forbidden(f"a key of role {caller.role} may not do this; it takes {allowed}")
    g.caller = caller


def current_caller() -> Caller:
    """Return the caller of this request, as `admit` found it."""
    # Never a default: a request not admitted, or a public route's, has no caller.
    return cast(Caller, g.caller)


def is_loopback(host: str) -> bool:
    """Whether a bind address (HOST) serves this machine alone."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def access_summary(keys: ApiKeys | None, host: str) -> str:
    """Return the start-up log's line on who may call the API (never a key)."""
    if keys is not None:
        return (
            f"API keys required (API_KEYS_FILE): keys of clients {keys.count(Role.CLIENT)}, "
            f"of operators {keys.count(Role.OPERATOR)}"
        )
    if is_loopback(host):
        return (
            f"open: no API_KEYS_FILE, so every caller may book, read and cancel every "
            f"booking; serving {host} only"
        )
    return (
        f"open on {host} (ALLOW_ANONYMOUS=1): anyone who reaches it may book, read and "
        f"cancel every booking"
    )
