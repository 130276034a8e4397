"""`starter.py` run as a process, as a user runs it: who may call the API, settled at start-up.

A setting that is unsafe or unusable stops it before it binds its port; a
served API logs whether it is open or needs keys, and never logs a key.
"""

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from api.contract import Role
from tests.support.keys import one_character_changed
from tests.support.processes import (
    group,
    port_free,
    spawn,
    terminate,
    wait_for_condition,
)
from tests.support.trips import JOHN
from tools.api_key import add_key
from tools.children import Output
from tools.processes import answers, free_port, port_in_use, wait_until


@contextmanager
def started_api(
    env: dict[str, str], host: str = "127.0.0.1"
) -> Iterator[tuple["subprocess.Popen[str]", Output, int]]:
    """Start `starter.py` on a free port; yield it, its output and its port.

    At the end, however the test went: SIGTERM unless it has exited, then
    check that none of its processes is left and that its port is free.
    """
    port = free_port()
    api, output = spawn([sys.executable, "starter.py"], {**env, "PORT": str(port)})
    try:
        yield api, output, port
    finally:
        terminate(api)
        wait_for_condition(lambda: not group(api.pid), "every process of the API ended")
        wait_for_condition(lambda: port_free(port, host), f"port {port} free again")


def healthy(api: "subprocess.Popen[str]", port: int) -> None:
    """Wait until the API answers GET /healthz (it fails if the API exits first)."""
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")


def closed_temporal() -> str:
    """A Temporal address nobody listens on: the API connects lazily, so it starts anyway."""
    return f"127.0.0.1:{free_port()}"


def http_call(
    port: int,
    method: str,
    path: str,
    key: str | None = None,
    body: dict[str, Any] | None = None,
    authorization: str | None = None,
) -> tuple[int, str]:
    """Call the API over real HTTP, with `key` as a bearer key (or an `authorization` header
    as given); return the status and body."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        authorization = f"Bearer {key}"
    if authorization is not None:
        headers["Authorization"] = authorization
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


BAD_HASH = "ab" * 31
"""Two hex digits short: the hash of the refused key file's bad second line."""

REFUSED_STARTS = [
    pytest.param(
        {"HOST": "0.0.0.0"},
        None,
        ["HOST='0.0.0.0' is not a loopback address", "API_KEYS_FILE", "ALLOW_ANONYMOUS=1"],
        id="every_interface_without_keys",
    ),
    pytest.param(
        {"HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "yes"},
        None,
        ["ALLOW_ANONYMOUS must be 1 or 0"],
        id="allow_anonymous_yes",
    ),
    pytest.param(
        {"API_KEYS_FILE": "{dir}/api-keys.txt"},
        [f"alice client {'cd' * 32}", f"ops operator {BAD_HASH}"],
        ["API_KEYS_FILE {dir}/api-keys.txt, line 2:"],
        id="key_file_whose_line_2_is_bad",
    ),
    pytest.param(
        {"HOST": "0.0.0.0", "API_KEYS_FILE": "{dir}/api-keys.txt"},
        ["# nothing but a comment"],
        ["API_KEYS_FILE {dir}/api-keys.txt holds no key", "make api-key"],
        id="key_file_without_a_key",
    ),
    pytest.param(
        {"API_KEYS_FILE": "{dir}/missing.txt"},
        None,
        ["API_KEYS_FILE {dir}/missing.txt cannot be read"],
        id="missing_key_file",
    ),
    pytest.param(
        {"HOST": "0.0.0.0", "API_KEYS_FILE": "{dir}"},
        None,
        ["API_KEYS_FILE {dir} cannot be read"],
        id="key_file_that_is_a_directory",
    ),
]


@pytest.mark.parametrize(("access", "key_lines", "said"), REFUSED_STARTS)
def test_an_unsafe_or_unusable_access_setting_stops_the_api_before_it_binds_its_port(
    tmp_path: Path, access: dict[str, str], key_lines: list[str] | None, said: list[str]
) -> None:
    if key_lines is not None:
        (tmp_path / "api-keys.txt").write_text("\n".join(key_lines) + "\n", encoding="utf-8")
    env = {name: value.format(dir=tmp_path) for name, value in access.items()}
    host = env.get("HOST", "127.0.0.1")

    with started_api({**env, "TEMPORAL_ADDRESS": closed_temporal()}, host) as (api, output, port):
        deadline = time.monotonic() + 30
        while api.poll() is None:
            assert not port_in_use(port), "the API took connections"
            assert time.monotonic() < deadline, "the API did not exit within 30 s"
            time.sleep(0.05)
        output.wait_for("starter: ")  # sys.exit's message, its last words

    log = "".join(output.lines)
    assert api.returncode != 0
    for text in said:
        assert text.format(dir=tmp_path) in log
    assert "Listening at" not in log, "it bound its port"
    assert BAD_HASH not in log
    assert "Traceback" not in log


SERVED_OPEN = [
    pytest.param(
        {"HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "1"},
        "open on 0.0.0.0 (ALLOW_ANONYMOUS=1)",
        id="every_interface_with_allow_anonymous",
    ),
    pytest.param({}, "open: no API_KEYS_FILE", id="default_loopback_host"),
]


@pytest.mark.parametrize(("access", "said"), SERVED_OPEN)
def test_without_keys_the_api_serves_where_that_is_safe_or_meant_and_logs_that_it_is_open(
    access: dict[str, str], said: str
) -> None:
    env = {**access, "TEMPORAL_ADDRESS": closed_temporal()}
    with started_api(env, access.get("HOST", "127.0.0.1")) as (api, output, port):
        healthy(api, port)
        status, _ = http_call(port, "GET", "/metrics")  # anyone's, while open

    assert status == 200
    assert f"WARNING starter: {said}" in "".join(output.lines)


def test_with_a_key_file_the_api_serves_logs_that_keys_are_required_and_never_a_key(
    tmp_path: Path,
) -> None:
    keys_file = tmp_path / "api-keys.txt"
    client_key = add_key(keys_file, "alice", Role.CLIENT)
    operator_key = add_key(keys_file, "ops", Role.OPERATOR)
    env = {"API_KEYS_FILE": str(keys_file), "TEMPORAL_ADDRESS": closed_temporal()}

    with started_api(env) as (api, output, port):
        healthy(api, port)
        anonymous, _ = http_call(port, "GET", "/metrics")
        operator, _ = http_call(port, "GET", "/metrics", operator_key)
        client, _ = http_call(port, "GET", "/metrics", client_key)
        api.send_signal(signal.SIGTERM)
        api.wait(60)
    output.wait_for("Shutting down: Master")  # its last words: the whole log was read

    log = "".join(output.lines)
    assert (anonymous, operator, client) == (401, 200, 403)
    assert "API keys required (API_KEYS_FILE): keys of clients 1, of operators 1" in log
    assert client_key not in log
    assert operator_key not in log
    assert api.returncode == 0, log


@pytest.mark.timeout(180)
def test_no_key_appears_in_the_logs_of_a_whole_run_nor_in_metrics(
    address: str, tmp_path: Path
) -> None:
    keys_file = tmp_path / "api-keys.txt"
    client_key = add_key(keys_file, "alice", Role.CLIENT)
    operator_key = add_key(keys_file, "ops", Role.OPERATOR)
    wrong_key = one_character_changed(client_key, len(client_key) // 2)
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": f"keys-{uuid.uuid4()}"}
    quick = {
        "PROVIDERS_PORT": "0",
        "PROVIDERS_DIR": str(tmp_path / "providers"),
        "SIM_HOTEL_OUTAGE": "0",
    }
    worker, worker_output = spawn([sys.executable, "run_worker.py"], {**common, **quick})
    statuses: dict[str, int] = {}
    try:
        worker_output.wait_for("Worker polling")
        with started_api({**common, "API_KEYS_FILE": str(keys_file)}) as (api, output, port):
            healthy(api, port)
            statuses["book"], booking = http_call(port, "POST", "/book", client_key, JOHN)
            user_id = json.loads(booking)["user_id"]
            path = f"/bookings/{user_id}"
            statuses["status"], status = http_call(port, "GET", path, client_key)
            statuses["listing"], _ = http_call(port, "GET", "/bookings", client_key)
            statuses["wrong key"], _ = http_call(port, "GET", path, wrong_key)
            statuses["metrics"], metrics = http_call(port, "GET", "/metrics", operator_key)
            statuses["operator books"], _ = http_call(port, "POST", "/bookings", operator_key, JOHN)
            # The key itself in headers the API cannot use: none may be echoed anywhere.
            malformed = {
                http_call(port, "GET", path, authorization=header)[0]
                for header in (
                    f"Basic {client_key}",
                    client_key,
                    f"Bearer {client_key} extra",
                    f"Bearer {client_key}{'x' * 300}",
                )
            }
            api.send_signal(signal.SIGTERM)
            api.wait(60)
            output.wait_for("Shutting down: Master")  # its last words: the whole log was read
    finally:
        terminate(worker, 30)
    worker_output.wait_for("Worker stopped")

    log = "".join(output.lines) + "".join(worker_output.lines)
    assert statuses == {
        "book": 200,
        "status": 200,
        "listing": 200,
        "wrong key": 401,
        "metrics": 200,
        "operator books": 403,
    }, log
    assert malformed == {401}
    assert json.loads(status)["status"] == "confirmed"
    assert "API keys required (API_KEYS_FILE): keys of clients 1, of operators 1" in log
    assert "event=booking" in log  # the worker's log was read, not just its first line
    for key in (client_key, operator_key, wrong_key):
        assert key not in log
        assert key not in metrics
    assert api.returncode == 0, log
