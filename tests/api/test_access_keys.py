"""`api/access.py`'s parts by themselves: the key file's lines, the Authorization header,
key lookup, and which bind addresses serve this machine alone."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from api.access import (
    ApiKeys,
    Caller,
    Unauthenticated,
    is_loopback,
    key_line,
    new_key,
    parse_keys,
    presented_key,
    read_keys,
)
from api.contract import Role
from config import ConfigError
from tests.support.keys import one_character_changed

ALICE_KEY = "alice-key-0123456789abcdefghijklmnopqrstuvw"
OPS_KEY = "ops-key-ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"
BOB_KEY = "bob-key-zyxwvutsrqponmlkjihgfedcba9876543210"


def sha256_hex(key: str) -> str:
    """The hex of a key's SHA-256, as a key file holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


ALICE_HASH, OPS_HASH, BOB_HASH = (sha256_hex(k) for k in (ALICE_KEY, OPS_KEY, BOB_KEY))

GOOD_FILE = f"""\
# API keys: <client name> <role> <sha256 hex>
alice client {ALICE_HASH}

   # an indented comment, then a blank line of spaces
\t
ops operator {OPS_HASH.upper()}  # uppercase hex, and a trailing comment
bob.smith@example.com   client\t{BOB_HASH}
"""


@pytest.mark.parametrize(
    ("key", "caller"),
    [
        pytest.param(ALICE_KEY, Caller("alice", Role.CLIENT), id="a_client_key"),
        pytest.param(OPS_KEY, Caller("ops", Role.OPERATOR), id="an_uppercase_hex_operator_key"),
        pytest.param(
            BOB_KEY, Caller("bob.smith@example.com", Role.CLIENT), id="a_tab_separated_line"
        ),
        pytest.param("nobody's key", None, id="a_key_in_no_line"),
    ],
)
def test_a_good_file_with_comments_and_blank_lines_finds_each_caller_by_key(
    key: str, caller: Caller | None
) -> None:
    keys = parse_keys(GOOD_FILE, "keys.txt")

    assert keys.caller(key) == caller
    assert (keys.count(Role.CLIENT), keys.count(Role.OPERATOR)) == (2, 1)


OTHER_HASH = "cd" * 32

BAD_LINES = [
    pytest.param(f"alice {ALICE_HASH}", 2, ALICE_HASH, id="two_fields"),
    pytest.param(f"alice client {ALICE_HASH} extra", 2, ALICE_HASH, id="four_fields"),
    pytest.param(f"alice admin {ALICE_HASH}", 2, ALICE_HASH, id="unknown_role_admin"),
    pytest.param(f"o'brien client {ALICE_HASH}", 2, ALICE_HASH, id="name_with_a_quote"),
    pytest.param(f'"alice" client {ALICE_HASH}', 2, ALICE_HASH, id="name_in_double_quotes"),
    pytest.param(f"alice client {ALICE_HASH[:63]}", 2, ALICE_HASH[:63], id="hash_of_63_hex"),
    pytest.param(f"alice client {ALICE_HASH[:-1]}g", 2, ALICE_HASH[:-1], id="non_hex_hash"),
    pytest.param(f"alice client {ALICE_KEY}", 2, ALICE_KEY, id="the_key_in_place_of_its_hash"),
    pytest.param(
        f"bob client {OTHER_HASH}\ncarol client {OTHER_HASH}",
        3,
        OTHER_HASH,
        id="the_same_hash_twice",
    ),
    pytest.param(
        f"bob client {OTHER_HASH}\n# a comment between\nbob operator {ALICE_HASH}",
        4,
        ALICE_HASH,
        id="the_same_name_with_two_roles",
    ),
    pytest.param(
        f"alice {ALICE_HASH} client",
        2,
        ALICE_HASH,
        id="hash_in_the_role_field",
    ),
]


@pytest.mark.parametrize(("lines", "number", "secret"), BAD_LINES)
def test_a_bad_line_refuses_to_start_naming_the_line_never_its_hash(
    lines: str, number: int, secret: str
) -> None:
    text = f"# keys\n{lines}\nzed client {'ef' * 32}\n"

    with pytest.raises(ConfigError) as refused:
        parse_keys(text, "/etc/api-keys.txt")

    message = str(refused.value)
    assert f"API_KEYS_FILE /etc/api-keys.txt, line {number}:" in message
    assert secret.lower() not in message.lower()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("# alice client <hash>\n\n   # more\n", id="comments_only"),
        pytest.param("\n \n\t\n", id="blank_lines_only"),
    ],
)
def test_a_file_without_a_key_refuses_to_start_saying_how_to_make_one(text: str) -> None:
    with pytest.raises(ConfigError, match="holds no key") as refused:
        parse_keys(text, "keys.txt")

    assert "make api-key" in str(refused.value)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda directory: directory / "missing.txt", id="missing_file"),
        pytest.param(lambda directory: directory, id="a_directory"),
    ],
)
def test_an_unreadable_key_file_refuses_to_start_naming_its_path(
    tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    path = make(tmp_path)

    with pytest.raises(ConfigError, match="cannot be read") as refused:
        read_keys(path)

    assert f"API_KEYS_FILE {path} " in str(refused.value)


def test_read_keys_reads_the_file_make_api_key_writes(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "keys.txt"
    path.write_text(key_line("alice", Role.CLIENT, key) + "\n", encoding="utf-8")

    assert read_keys(path).caller(key) == Caller("alice", Role.CLIENT)


KEY = "Abc123._~+/-xyz=="

HEADERS = [
    pytest.param(None, None, id="no_header"),
    pytest.param("Basic x", None, id="basic_scheme"),
    pytest.param("Bearer", None, id="bearer_without_a_key"),
    pytest.param("Bearer ", None, id="bearer_and_a_space"),
    pytest.param(f"Bearer {KEY}", KEY, id="bearer_and_a_key"),
    pytest.param(f"bearer {KEY}", KEY, id="lowercase_scheme_rfc_7235"),
    pytest.param(f"BEARER {KEY}", KEY, id="uppercase_scheme"),
    pytest.param(f"Bearer  {KEY}", KEY, id="two_spaces"),
    pytest.param(f"Bearer {'a' * 256}", "a" * 256, id="256_characters"),
    pytest.param(f"Bearer {'a' * 300}", None, id="over_long_300_characters"),
    pytest.param("Bearer abc def", None, id="a_space_inside_the_key"),
    pytest.param("Bearer abcé", None, id="a_non_ascii_character"),
    pytest.param(f"Bearer {KEY} ", None, id="a_trailing_space"),
    pytest.param("Bearer =abc", None, id="padding_first"),
    pytest.param(f"Token {KEY}", None, id="another_scheme"),
    pytest.param(KEY, None, id="a_key_without_a_scheme"),
]


@pytest.mark.parametrize(("header", "key"), HEADERS)
def test_presented_key_is_the_bearer_credential_or_unauthenticated(
    header: str | None, key: str | None
) -> None:
    if key is not None:
        assert presented_key(header) == key
        return
    with pytest.raises(Unauthenticated) as refused:
        presented_key(header)
    assert "Bearer <key>" in refused.value.detail
    assert refused.value.challenge.startswith("Bearer")


@pytest.fixture(scope="module")
def file_keys() -> tuple[ApiKeys, str, str]:
    """Keys of a client and an operator, as a key file made by `make api-key` holds them."""
    client, operator = new_key(), new_key()
    text = f"{key_line('alice', Role.CLIENT, client)}\n{key_line('ops', Role.OPERATOR, operator)}\n"
    return parse_keys(text, "keys.txt"), client, operator


@pytest.mark.parametrize("at", [pytest.param(0, id="first"), pytest.param(-1, id="last")])
def test_a_key_with_one_character_changed_is_nobodys(
    file_keys: tuple[ApiKeys, str, str], at: int
) -> None:
    keys, client, operator = file_keys
    position = at % len(client)

    assert keys.caller(one_character_changed(client, position)) is None
    assert keys.caller(one_character_changed(operator, position)) is None


def test_each_key_gives_its_own_caller(file_keys: tuple[ApiKeys, str, str]) -> None:
    keys, client, operator = file_keys

    assert keys.caller(client) == Caller("alice", Role.CLIENT)
    assert keys.caller(operator) == Caller("ops", Role.OPERATOR)
    assert keys.caller("") is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        pytest.param("127.0.0.1", True, id="ipv4_loopback"),
        pytest.param("127.0.0.2", True, id="ipv4_loopback_network"),
        pytest.param("::1", True, id="ipv6_loopback"),
        pytest.param("[::1]", True, id="ipv6_loopback_in_brackets"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("0.0.0.0", False, id="every_ipv4_interface"),
        pytest.param("::", False, id="every_ipv6_interface"),
        pytest.param("10.0.0.1", False, id="private_address"),
        pytest.param("example.com", False, id="a_name"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_loopback_only_for_addresses_that_serve_this_machine_alone(
    host: str, loopback: bool
) -> None:
    assert is_loopback(host) is loopback
