"""The real processes: the worker draining on SIGTERM, and `make run` as a user runs it."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from audit import AuditReport, run_audit
from helpers import EXTRA_NAMESPACE, JOHN, ROOT, activity_runs, eventually, trip
from providers import ProviderStore
from run_stack import WorkerProcess, free_port, port_in_use, wait_until
from shared import TASK_QUEUE_NAME
from workflows import BookingWorkflow

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
JSON_HEADERS = {"Content-Type": "application/json"}


class Output:
    """A child's output lines, collected by a thread as they come."""

    def __init__(self, process: "subprocess.Popen[str]") -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: self.lines.extend(stream), daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, f"no {text!r} in:\n{''.join(self.lines)}"
            time.sleep(0.1)


def spawn(command: list[str], env: dict[str, str]) -> tuple["subprocess.Popen[str]", Output]:
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    return process, Output(process)


async def test_worker_finishes_the_activity_in_flight_on_sigterm_and_exits_0(
    address: str, tmp_path: Path
) -> None:
    worker, output = spawn(
        [sys.executable, "run_worker.py"],
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": EXTRA_NAMESPACE,
            "PROVIDERS_DIR": str(tmp_path),
            "SIM_LATENCY_SECONDS": "2",
        },
    )
    client = await Client.connect(address, namespace=EXTRA_NAMESPACE)
    try:
        output.wait_for("Worker polling")
        handle = await client.start_workflow(
            BookingWorkflow.run, trip(), id=trip().book_user_id, task_queue=TASK_QUEUE_NAME
        )

        async def book_car_started() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(a.state == STARTED for a in pending)

        await eventually(book_car_started)
        worker.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(worker.wait, 30)
    finally:
        worker.kill()
    await handle.terminate("test over: no worker left")

    assert status == 0, "".join(output.lines)
    assert (await activity_runs(handle))[0] == ("book_car", 1, "completed")
    assert "Worker stopped" in "".join(output.lines)


README = (ROOT / "README.md").read_text()
EXAMPLE = re.compile(r"```bash\n(curl [^`]*?)```\s*\n(?:[^`]*?\n)?```json\n(.*?)```", re.DOTALL)
BOOKING_ID = re.compile(r"^([a-z-]+-\d{6}|trip-[0-9a-f]{16})$")


def readme_examples() -> list[tuple[str, str]]:
    """Return each curl command of the README with the JSON text shown after it."""
    examples = EXAMPLE.findall(README)
    assert len(examples) == 4, "the tutorial's two requests, then /bookings and its status"
    return examples


def same_shape(documented: Any, answer: Any) -> bool:
    """Compare JSON; a reservation id only needs the documented shape, as ids grow."""
    if isinstance(documented, dict) and isinstance(answer, dict):
        return documented.keys() == answer.keys() and all(
            re.fullmatch(r"[a-z]+-\d+", str(answer[k])) is not None
            if k == "reservation_id"
            else same_shape(documented[k], answer[k])
            for k in documented
        )
    return bool(documented == answer)


def run_example(command: str, documented: str, port: int, ids: dict[str, str]) -> None:
    """Run a README command until it answers the JSON shown (a status may take a moment)."""
    for shown, actual in ids.items():
        command = command.replace(shown, actual)
    command = command.replace("localhost:3000", f"localhost:{port}")
    deadline = time.monotonic() + 30
    while True:
        run = subprocess.run(["bash", "-c", command], capture_output=True, check=True)
        answer = json.loads(run.stdout)
        shown_id = json.loads(documented)["user_id"]
        if shown_id not in ids:
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


def descendants(pid: int) -> set[int]:
    """Return the process ids below `pid`."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextmanager
def make_run(env: dict[str, str]) -> Iterator[Output]:
    """Run `make run`, then press Ctrl-C; check that nothing is left behind."""
    process, output = spawn(["make", "--no-print-directory", "run"], env)
    children: set[int] = set()
    try:
        output.wait_for("ready: API")
        children = descendants(process.pid)
        yield output
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        output.wait_for("stack | stopped", timeout=5)
    assert len(children) >= 4, f"expected run_stack and three children, saw {children}"
    assert not [pid for pid in children if alive(pid)]


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.load(response))


@pytest.mark.timeout(240)
def test_make_run_answers_the_readme_curls_and_leaves_nothing_behind(tmp_path: Path) -> None:
    api, grpc, ui = free_port(), free_port(), free_port()
    env = {
        "PORT": str(api),
        "TEMPORAL_PORT": str(grpc),
        "TEMPORAL_UI_PORT": str(ui),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "PROVIDERS_DIR": str(tmp_path / "providers"),
        "WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    ids: dict[str, str] = {}
    with make_run(env):
        for command, documented in readme_examples():
            run_example(command, documented, api, ids)
    user_ids = list(ids.values())

    assert not [port for port in (api, grpc, ui) if port_in_use(port)]

    # The runs are kept in the SQLite file, and the Web UI shows them after a restart.
    with make_run(env):
        listing = get_json(f"http://127.0.0.1:{ui}/api/v1/namespaces/default/workflows")
    shown = {run["execution"]["workflowId"]: run for run in listing["executions"]}  # type: ignore[attr-defined]
    assert set(user_ids) <= set(shown)
    assert {shown[user_id]["type"]["name"] for user_id in user_ids} == {"BookingWorkflow"}


@pytest.mark.timeout(240)
def test_burst_of_300_bookings_to_one_api_process_loses_none(address: str, tmp_path: Path) -> None:
    task_queue, port = f"burst-{uuid.uuid4()}", free_port()
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue}
    worker = WorkerProcess({**common, "PROVIDERS_DIR": str(tmp_path), "SIM_HOTEL_OUTAGE": "0"})
    worker.start()
    api, output = spawn([sys.executable, "starter.py"], {**common, "PORT": str(port)})
    try:
        output.wait_for("Booting worker")
        wait_until(lambda: port_in_use(port), api, "the API")

        def post(n: int) -> tuple[int, dict[str, str], dict[str, Any]]:
            body = json.dumps({**JOHN, "name": f"Burst {n}"}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/bookings", body, JSON_HEADERS, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    return response.status, dict(response.headers), json.load(response)
            except urllib.error.HTTPError as err:
                return err.code, dict(err.headers), json.load(err)

        with ThreadPoolExecutor(300) as pool:
            answers = list(pool.map(post, range(300)))
        accepted = [body["user_id"] for status, _, body in answers if status == 202]
        report = asyncio.run(finish_and_audit(address, accepted, tmp_path, task_queue))
        api.send_signal(signal.SIGTERM)
        api_status = api.wait(30)
    finally:
        api.kill()
        worker.stop()

    assert {status for status, _, _ in answers} <= {202, 429, 503}
    assert all("Retry-After" in headers for status, headers, _ in answers if status != 202)
    assert len(set(accepted)) == len(accepted) > 0
    assert report.clean, report.summary()
    assert report.outcomes.total() == len(accepted), "a booking was lost or is unfinished"
    assert report.outcomes["running"] == 0
    assert api_status == 0, "".join(output.lines)


async def finish_and_audit(
    address: str, user_ids: list[str], providers: Path, task_queue: str
) -> AuditReport:
    client = await Client.connect(address)
    await asyncio.gather(*(client.get_workflow_handle(uid).result() for uid in user_ids))
    return await run_audit(client, ProviderStore.open_all(providers), task_queue)
