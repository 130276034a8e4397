"""`make api-key NAME=... ROLE=...`, run as a user runs it: the key printed once, alone on
standard output, and only its hash kept, in a file others may not read."""

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tools.processes import ROOT

KEY = re.compile(r"[A-Za-z0-9_-]{43}")
"""What `new_key` makes: 32 random bytes, URL-safe base64 without padding."""


def make_api_key(keys_file: Path, name: str, role: str) -> "subprocess.CompletedProcess[str]":
    """Run `make api-key` in the project's folder with API_KEYS_FILE set, as the README does."""
    return subprocess.run(
        ["make", "--no-print-directory", "-s", "api-key", f"NAME={name}", f"ROLE={role}"],
        cwd=ROOT,
        env={**os.environ, "API_KEYS_FILE": str(keys_file)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def printed_key(done: "subprocess.CompletedProcess[str]") -> str:
    """Return the key a successful run printed, checking it printed nothing else on stdout."""
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout is not one line: {done.stdout!r}"
    assert done.stdout == lines[0] + "\n"
    assert KEY.fullmatch(lines[0]), f"not a key: {lines[0]!r}"
    return lines[0]


def test_a_key_is_printed_alone_and_only_its_hash_is_kept_owner_only(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys.txt"

    done = make_api_key(keys_file, "alice", "client")

    key = printed_key(done)
    assert keys_file.read_text(encoding="utf-8") == f"alice client {sha256(key)}\n"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert "alice" in done.stderr
    assert str(keys_file) in done.stderr
    assert key not in done.stderr


def test_a_second_key_is_appended_and_neither_key_is_in_the_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "api-keys.txt"

    first = printed_key(make_api_key(keys_file, "alice", "client"))
    second = printed_key(make_api_key(keys_file, "ops", "operator"))

    text = keys_file.read_text(encoding="utf-8")
    assert text.splitlines() == [f"alice client {sha256(first)}", f"ops operator {sha256(second)}"]
    assert first != second
    assert first not in text
    assert second not in text
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600


def test_a_file_without_a_final_newline_gets_the_new_line_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "api-keys.txt"
    keys_file.write_text(f"# written by hand\nbob client {'ab' * 32}", encoding="utf-8")

    key = printed_key(make_api_key(keys_file, "alice", "client"))

    assert keys_file.read_text(encoding="utf-8").splitlines() == [
        "# written by hand",
        f"bob client {'ab' * 32}",
        f"alice client {sha256(key)}",
    ]


REFUSALS = [
    pytest.param("", "alice", "admin", "role", id="unknown_role_admin"),
    pytest.param("", "", "client", "NAME", id="empty_name"),
    pytest.param("", "o'brien", "client", "NAME", id="name_with_a_quote"),
    pytest.param("", "al ice", "client", "NAME", id="name_with_a_space"),
    pytest.param(
        f"alice operator {'ab' * 32}\n",
        "alice",
        "client",
        "line 2: alice is given another role",
        id="name_already_given_another_role",
    ),
    pytest.param(
        f"bob client {'ab' * 32}\nbob client {'cd' * 32} extra\n",
        "alice",
        "client",
        "line 2",
        id="file_with_a_bad_line",
    ),
    pytest.param("# no keys yet\n", "alice", "nobody", "role", id="unknown_role_on_a_file"),
]


@pytest.mark.parametrize(("before", "name", "role", "said"), REFUSALS)
def test_a_refused_key_fails_saying_why_and_leaves_the_file_as_it_was(
    tmp_path: Path, before: str, name: str, role: str, said: str
) -> None:
    keys_file = tmp_path / "api-keys.txt"
    if before:
        keys_file.write_text(before, encoding="utf-8")
    mode = keys_file.stat().st_mode if before else None

    done = make_api_key(keys_file, name, role)

    assert done.returncode != 0
    assert done.stdout == ""
    assert said in done.stderr
    if before:
        assert keys_file.read_text(encoding="utf-8") == before
        assert keys_file.stat().st_mode == mode, "its mode as it was"
    else:
        assert not keys_file.exists()


@pytest.mark.parametrize(
    ("mode", "after"),
    [
        pytest.param(0o644, 0o640, id="readable_by_others"),
        pytest.param(0o666, 0o660, id="writable_by_others"),
        pytest.param(0o640, 0o640, id="its_groups_to_read"),
        pytest.param(0o600, 0o600, id="its_owners_alone"),
    ],
)
def test_adding_to_a_file_takes_away_what_others_may_do_and_keeps_its_groups_rights(
    tmp_path: Path, mode: int, after: int
) -> None:
    keys_file = tmp_path / "api-keys.txt"
    keys_file.write_text("# keys\n", encoding="utf-8")
    keys_file.chmod(mode)

    printed_key(make_api_key(keys_file, "alice", "client"))

    assert stat.S_IMODE(keys_file.stat().st_mode) == after
