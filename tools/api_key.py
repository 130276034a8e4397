"""`make api-key NAME=alice ROLE=client`: make an API key, print it once, keep its hash.

The key goes to standard output alone (`KEY=$(make -s api-key ...)` takes it);
its line, `<client name> <role> <sha256 hex>`, is appended to the key file,
which is never readable by others (made 0600; a file made before keeps its
group's rights). The API reads the file when it
starts (docs/access.md).
"""

import argparse
import fcntl
import os
import sys
from pathlib import Path

from api.access import CLIENT_NAME, key_line, new_key, parse_keys
from api.contract import Role
from config import ConfigError


def add_key(path: Path, name: str, role: Role) -> str:
    """Append a new key's line to the file at `path` and return the key.

    Raises:
        ConfigError: the name is not a client name, or the file as it would
            be after the line is added could not be used by the API.

    """
    if not CLIENT_NAME.fullmatch(name):
        raise ConfigError(
            f"NAME must be 1 to 64 letters, digits and . _ @ -, from a letter or digit, "
            f"not {name!r}"
        )
    key = new_key()
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a+", encoding="utf-8") as keys:
            # One `make api-key` at a time: two at once could give a name two roles.
            fcntl.flock(keys, fcntl.LOCK_EX)
            keys.seek(0)
            before = keys.read()
            line = key_line(name, role, key)
            if before and not before.endswith("\n"):
                line = "\n" + line
            # Refuse to add to a file the API would refuse.
            parse_keys(before + line + "\n", str(path))
            keys.write(line + "\n")
            private(descriptor)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} cannot be read or written: {err}") from None
    return key


def private(descriptor: int) -> None:
    """Take away what others may do with the keys file (made 0600; one made by hand may not be).

    Its group keeps its rights: an API run as another user of the group reads it.
    """
    mode = os.fstat(descriptor).st_mode & 0o777
    if mode & 0o007:
        os.fchmod(descriptor, mode & ~0o007)


def main() -> None:
    """Make the key NAME and ROLE ask for; print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the client's name, as its bookings record")
    parser.add_argument("--role", required=True, choices=[role.value for role in Role])
    parser.add_argument("--file", type=Path, required=True, help="the API keys file")
    args = parser.parse_args()
    try:
        key = add_key(args.file, args.name, Role(args.role))
    except ConfigError as err:
        sys.exit(f"api-key: {err}")
    print(key)
    print(
        f"api-key: {args.name} ({args.role}) added to {args.file}; the key above is shown "
        "only now. Restart the API to use it.",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
