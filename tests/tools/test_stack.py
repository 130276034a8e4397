"""`make run` (`tools/stack.py`) as a user runs it: ready means every URL answers;
the README's curls give the JSON shown; Ctrl-C leaves nothing behind."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.sagas import changed_copy
from tests.support.stack import make_run, on_free_ports
from tests.support.trips import JOHN
from tools.children import Child
from tools.processes import (
    ROOT,
    free_port,
    port_in_use,
    server_serving,
    temporal_binary,
    wait_until,
)
from tools.stack import Stack, StackSettings

README = (ROOT / "README.md").read_text()
API_PAGE = (ROOT / "docs" / "api.md").read_text()
ACCESS = (ROOT / "docs" / "access.md").read_text()
"""The page on API keys: its examples run against `make run` with keys."""
PROVIDERS_PAGE = (ROOT / "docs" / "providers.md").read_text()
"""The page on the providers: its examples run against `make run`'s provider service."""
OPERATING = (ROOT / "docs" / "operating.md").read_text()
REPAIR = OPERATING.split("\n## An undo that keeps failing\n")[1].split("\n## ")[0]
"""The section on repairing a booking: its examples run against `make run`, its car
rental refusing every undo."""
EXAMPLE = re.compile(r"```bash\n(curl [^`]*?)```\s*\n(?:[^`]*?\n)?```json\n(.*?)```", re.DOTALL)
BOOKING_ID = re.compile(r"^([a-z-]+-\d{6}|trip-[0-9a-f]{16})$")
MAKE_KEY = re.compile(r"^(make -s api-key NAME=(\w+) ROLE=\w+)", re.MULTILINE)


def readme_examples() -> list[tuple[str, str]]:
    """Return each curl command of the README, then of docs/api.md, with the JSON shown after it."""
    examples = EXAMPLE.findall(README) + EXAMPLE.findall(API_PAGE)
    assert len(examples) == 6, "the tutorial's two; /bookings, its status, the list, by status"
    return examples


def provider_examples() -> list[tuple[str, str]]:
    """Return each curl command of docs/providers.md with the JSON shown after it."""
    examples = EXAMPLE.findall(PROVIDERS_PAGE)
    assert len(examples) == 3, "a booking, its undo, the booking again: refused"
    return examples


def access_examples() -> list[tuple[str, str]]:
    """Return each curl command of docs/access.md with the JSON shown after it."""
    examples = EXAMPLE.findall(ACCESS)
    assert len(examples) == 5, "book, list, another's, an operator's cancel, no key"
    return examples


def repair_examples() -> list[tuple[str, str]]:
    """Return each curl command of docs/operating.md's repair, with the JSON shown after it."""
    examples = EXAMPLE.findall(REPAIR)
    assert len(examples) == 5, "Jane's booking, its status, the list, a retry, a resolve"
    return examples


CLI = re.search(r"```bash\n(\.venv/bin/temporal workflow update execute .*?)```", REPAIR, re.DOTALL)
CLI_REFUSED = re.search(r"exits 1 with the saga's reason: `(Error: [^`]*)`", REPAIR)
CLI_ANSWER = re.search(r"```text\n(\{\n  \"name\": \"resolve\".*?)```", REPAIR, re.DOTALL)


def make_keys(keys_file: Path) -> dict[str, str]:
    """Run the Access section's `make api-key` commands; return each key by its variable."""
    keys = {}
    for command, name in MAKE_KEY.findall(ACCESS):
        made = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env={**os.environ, "API_KEYS_FILE": str(keys_file)},
            capture_output=True,
            text=True,
            check=True,
        )
        keys[f"{name.upper()}_KEY"] = made.stdout.strip()
    assert set(keys) == {"ALICE_KEY", "BOB_KEY", "SUPPORT_KEY"}
    return keys


SHAPES = {
    "reservation_id": r"[a-z]+-\d+",  # ids grow
    "started_at": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",  # time moves
    "needs_attention_since": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z",
    "since": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00",  # as the CLI shows it
    "updateId": r"[0-9a-f-]{36}",
}
"""Fields whose documented value only shows their shape."""


def same_shape(documented: Any, answer: Any) -> bool:
    """Compare JSON; a field in SHAPES only needs the documented shape."""
    if isinstance(documented, dict) and isinstance(answer, dict):
        return documented.keys() == answer.keys() and all(
            re.fullmatch(SHAPES[k], str(answer[k])) is not None
            if k in SHAPES
            else same_shape(documented[k], answer[k])
            for k in documented
        )
    if isinstance(documented, list) and isinstance(answer, list):
        return len(documented) == len(answer) and all(map(same_shape, documented, answer))
    return bool(documented == answer)


def run_example(
    command: str,
    documented: str,
    port: int,
    ids: dict[str, str],
    keys: dict[str, str] | None = None,
    providers: int = 3001,
) -> None:
    """Run a README command until it answers the JSON shown (a status may take a moment).

    `keys`: the variables the command's `$NAME_KEY`s read; `providers`: the providers' port.
    """
    for shown, actual in ids.items():
        command = command.replace(shown, actual)
    command = command.replace("localhost:3000", f"localhost:{port}")
    command = command.replace("localhost:3001", f"localhost:{providers}")
    deadline = time.monotonic() + 30
    while True:
        run = subprocess.run(
            ["bash", "-c", command],
            env={**os.environ, **(keys or {})},
            capture_output=True,
            check=True,
        )
        answer = json.loads(run.stdout)
        shown_id = json.loads(documented).get("user_id")  # none on a list
        if shown_id is not None and shown_id not in ids:
            assert BOOKING_ID.match(answer["user_id"])
            prefix = shown_id.rsplit("-", 1)[0]
            assert answer["user_id"].startswith(prefix)
            ids[shown_id] = answer["user_id"]
        expected = documented
        for shown, actual in ids.items():
            expected = expected.replace(shown, actual)
        if same_shape(json.loads(expected), answer):
            return
        assert time.monotonic() < deadline, f"{command}\nanswered {answer}"
        time.sleep(0.2)


@pytest.mark.timeout(240)
def test_make_run_repairs_a_booking_that_waits_for_a_person_as_documented(
    tmp_path: Path,
) -> None:
    env = on_free_ports(tmp_path, SIM_CAR_UNDO_REJECT_RATE="1")
    api, grpc = int(env["PORT"]), int(env["TEMPORAL_PORT"])
    assert CLI is not None
    assert CLI_ANSWER is not None
    examples = repair_examples()
    ids: dict[str, str] = {}
    with make_run(env):
        for command, documented in examples:
            run_example(command, documented, api, ids)
        # A second booking, decided at a terminal.
        second: dict[str, str] = {}
        for command, documented in examples[:2]:
            run_example(
                command.replace("138367", "849512"),
                documented.replace("138367", "849512"),
                api,
                second,
            )
        temporal = f"{temporal_binary()} --address 127.0.0.1:{grpc}"
        on_the_hotel = f"--workflow-id {second['jane-smith-849512']} --name retry_undo"
        hotel = """'{"leg": "hotel", "by": "alice"}'"""
        refused = subprocess.run(
            f"{temporal} workflow update execute {on_the_hotel} --input {hotel}",
            shell=True,
            capture_output=True,
            text=True,
            check=False,
        )
        commands = CLI.group(1).replace(".venv/bin/temporal", temporal)
        commands = commands.replace("jane-smith-849512", second["jane-smith-849512"])
        cli = subprocess.run(["bash", "-c", commands], capture_output=True, text=True, check=True)
    answered = json.loads(cli.stdout[cli.stdout.rindex('{\n  "name": "resolve"') :])
    documented = json.loads(
        CLI_ANSWER.group(1).replace("jane-smith-849512", second["jane-smith-849512"])
    )
    assert same_shape(documented, answered), answered
    assert CLI_REFUSED is not None
    assert refused.returncode == 1
    assert " ".join(refused.stderr.split()) == " ".join(CLI_REFUSED.group(1).split())


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


@pytest.mark.timeout(240)
def test_make_run_answers_the_readme_curls_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = on_free_ports(tmp_path)
    api, grpc, ui = (int(env[name]) for name in ("PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT"))
    ids: dict[str, str] = {}
    with make_run(env):
        for command, documented in readme_examples():
            run_example(command, documented, api, ids)
        for command, documented in provider_examples():
            run_example(command, documented, api, {}, providers=int(env["PROVIDERS_PORT"]))
    user_ids = list(ids.values())

    providers = int(env["PROVIDERS_PORT"])
    assert not [port for port in (api, grpc, ui, providers) if port_in_use(port)]

    # The runs are kept in the SQLite file, and the Web UI shows them after a restart,
    # this time with API keys, as the README's Access section serves: its examples hold,
    # among the bookings made while the API was open.
    keys_file = tmp_path / "api-keys.txt"
    keys = make_keys(keys_file)
    with make_run({**env, "API_KEYS_FILE": str(keys_file)}) as output:
        listing = get_json(f"http://127.0.0.1:{ui}/api/v1/namespaces/default/workflows")
        access_ids: dict[str, str] = {}
        for command, documented in access_examples():
            run_example(command, documented, api, access_ids, keys)
    assert not [key for key in keys.values() if key in "".join(output.lines)]
    shown = {run["execution"]["workflowId"]: run for run in listing["executions"]}  # type: ignore[attr-defined]
    assert set(user_ids) <= set(shown)
    assert {shown[user_id]["type"]["name"] for user_id in user_ids} == {"BookingWorkflow"}


@pytest.mark.timeout(240)
def test_make_run_adds_the_search_attributes_to_a_file_made_before_them(tmp_path: Path) -> None:
    db_file, grpc = tmp_path / "temporal.db", free_port()
    before = [temporal_binary(), "server", "start-dev", "--ip=127.0.0.1", f"--port={grpc}"]
    old = Child([*before, "--headless", f"--db-filename={db_file}"], cwd=ROOT, output="drop")
    try:
        wait_until(lambda: server_serving(f"127.0.0.1:{grpc}"), old.process, "a server of before")
    finally:
        old.stop(30)
    env = on_free_ports(tmp_path, TEMPORAL_DB_FILE=str(db_file))

    # Ready means a worker polls: one that found the namespace lacking them would have stopped.
    with make_run(env) as output:
        output.wait_for("Worker polling")


def post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def ended(api: str, user_id: str) -> dict[str, object]:
    """Poll a booking's status until it has ended; return it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            status = get_json(f"{api}/bookings/{user_id}")
        except urllib.error.HTTPError:  # a 503 while a worker restarts
            status = {}
        if status.get("status") in ("confirmed", "cancelled"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


@pytest.mark.timeout(240)
def test_make_deploy_beside_make_run_retires_its_worker_and_the_stack_goes_on(
    tmp_path: Path,
) -> None:
    # The bookings are still running when the deploy switches.
    env = on_free_ports(tmp_path, WORKER_METRICS_ADDRESS="", SIM_LATENCY_SECONDS="4")
    api, grpc = f"http://127.0.0.1:{env['PORT']}", int(env["TEMPORAL_PORT"])
    changed = changed_copy(tmp_path / "changed")
    with make_run(env) as output:
        before = [str(post_json(f"{api}/bookings", JOHN)["user_id"]) for _ in range(3)]
        providers = f"http://127.0.0.1:{env['PROVIDERS_PORT']}"
        # As `make deploy` runs it: its workers call make run's providers.
        deploy_env = {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{grpc}", "PROVIDERS_URL": providers}
        deploy = Child(
            [sys.executable, "-m", "tools.deploy", "--canary-for", "2"], cwd=changed, env=deploy_env
        )
        try:
            deploy.output.wait_for("is current: new bookings start on it")
            after = str(post_json(f"{api}/bookings", JOHN)["user_id"])
            output.wait_for("stack | worker retired: its version has drained", timeout=120)
            deploy.output.wait_for("serves; its worker(s) run here until Ctrl-C", timeout=60)
            statuses = [ended(api, user_id)["status"] for user_id in [*before, after]]
            ready = get_json(f"{api}/readyz")  # served by the new version's worker
        finally:
            stopped = deploy.stop(30)
    deployed = deploy.output.text()
    assert stopped == 0, deployed
    assert statuses == ["confirmed"] * 4
    assert ready["status"] == "ready"
    # The first three were in flight on make run's version when the deploy began.
    assert re.search(r"deploy \| open bookings: \S+ [1-3], ", deployed), deployed
    text = "".join(output.lines)
    assert "stack | worker exited" not in text
    assert "has drained: no booking is left on it" in text


@pytest.mark.parametrize(
    ("last_words", "exited"),
    [
        ("INFO run_worker: Version d:b has drained: no booking is left on it", None),
        ("INFO run_worker: Worker stopped", "worker"),
    ],
    ids=["retired", "stopped"],
)
def test_a_worker_that_exits_retires_only_once_it_said_its_version_drained(
    last_words: str, exited: str | None
) -> None:
    stack = Stack(StackSettings())
    stack.start("worker", [sys.executable, "-c", f"print({last_words!r})"])
    worker = stack.children["worker"]
    worker.process.wait(30)
    worker.output.join()
    assert stack.exited() == exited
    assert ("worker" in stack.children) == (exited is not None)
