"""`api/serving.py`: the API served by gunicorn as in production: under a burst, with
several processes counted at /metrics, and drained by Ctrl-C or SIGTERM."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from api.serving import bind_address
from simulated.store import ProviderStore
from tests.support.processes import (
    children,
    group,
    port_free,
    spawn,
    terminate,
    wait_for_condition,
)
from tests.support.providers import rows_of
from tests.support.trips import JOHN, JOHN_BOOKED
from tools.audit import AuditReport, run_audit
from tools.children import Output
from tools.processes import WorkerProcess, answers, free_port, port_in_use, wait_until

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.mark.timeout(240)
def test_burst_of_300_bookings_to_one_api_process_loses_none(address: str, tmp_path: Path) -> None:
    task_queue, port = f"burst-{uuid.uuid4()}", free_port()
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue}
    worker = WorkerProcess(
        {**common, "PROVIDERS_PORT": "0", "PROVIDERS_DIR": str(tmp_path), "SIM_HOTEL_OUTAGE": "0"}
    )
    worker.start()
    api, output = spawn([sys.executable, "starter.py"], {**common, "PORT": str(port)})
    try:
        output.wait_for("Booting worker")
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")

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
            replies = list(pool.map(post, range(300)))
        accepted = [body["user_id"] for status, _, body in replies if status == 202]
        report = asyncio.run(finish_and_audit(address, accepted, tmp_path, task_queue))
        api.send_signal(signal.SIGTERM)
        api_status = api.wait(30)
    finally:
        api.kill()
        worker.stop()

    assert {status for status, _, _ in replies} <= {202, 429, 503}
    assert all("Retry-After" in headers for status, headers, _ in replies if status != 202)
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
    return await run_audit(client, rows_of(ProviderStore.open_all(providers)), task_queue)


START_PROBES = 5
"""At most this many GET /healthz by which `serving` saw the API up (its first
may have timed out on our side and still been served)."""


@contextmanager
def serving(
    env: dict[str, str], processes: int
) -> Iterator[tuple["subprocess.Popen[str]", Output, int]]:
    """Serve `starter.py` with `processes` workers; yield the master, its output and port.

    Stops it with SIGTERM at the end unless it has stopped (even when the test
    fails, so the server removes its metrics directory), and checks it exited 0.
    """
    port = free_port()
    env = {**env, "PORT": str(port), "WEB_CONCURRENCY": str(processes)}
    api, output = spawn([sys.executable, "starter.py"], env)
    try:
        output.wait_for("Booting worker", count=processes)
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")
        yield api, output, port
    finally:
        status = terminate(api)
    assert status == 0, "".join(output.lines)


def get_many(port: int, path: str, n: int) -> None:
    """GET `path` `n` times, 16 at a time (so that every process answers some)."""

    def get(_: int) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return int(response.status)

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(get, range(n))) == {200}


def requests_counted(port: int, rule: str) -> float:
    """Return /metrics's count of requests to `rule`, summed over methods and statuses."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    pattern = rf'flask_http_request_duration_seconds_count\{{[^}}]*url_rule="{re.escape(rule)}"'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(pattern, line)
    )


def processes_that_counted(directory: Path) -> set[int]:
    """Return the pids whose request histograms are in a multiprocess directory."""
    return {int(f.stem.rsplit("_", 1)[1]) for f in directory.glob("histogram_*.db")}


def counted_in(output: Output) -> Path:
    """Return the metrics directory the server said it counts in."""
    (line,) = [line for line in output.lines if "counted in" in line]
    return Path(line.rsplit(" ", 1)[1].strip())


@pytest.mark.timeout(120)
def test_metrics_count_every_process_in_a_directory_of_the_servers_own(address: str) -> None:
    with serving({"TEMPORAL_ADDRESS": address}, processes=2) as (api, output, port):
        directory, sent = counted_in(output), 0
        before = requests_counted(port, "/healthz")
        # Until each process has answered some (the kernel picks which accepts).
        while processes_that_counted(directory) != children(api.pid):
            assert sent < 2000, "one process answered every request"
            get_many(port, "/healthz", 100)
            sent += 100
        assert requests_counted(port, "/healthz") == before + sent
    assert not directory.exists(), "the server left its metrics directory behind"


@pytest.mark.timeout(120)
def test_metrics_of_a_previous_run_do_not_survive_a_restart(address: str, tmp_path: Path) -> None:
    directory = tmp_path / "metrics"  # the user's, through PROMETHEUS_MULTIPROC_DIR
    env = {"TEMPORAL_ADDRESS": address, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with serving(env, processes=2) as (_, output, port):
        assert counted_in(output) == directory
        before = requests_counted(port, "/healthz")
        get_many(port, "/healthz", 50)
        assert requests_counted(port, "/healthz") == before + 50
    first_run = set(directory.glob("*.db"))
    with serving(env, processes=2) as (_, _, port):
        assert not any(f.exists() for f in first_run), "the first run's counts are still there"
        before = requests_counted(port, "/healthz")
        get_many(port, "/healthz", 30)
        assert requests_counted(port, "/healthz") == before + 30
    assert before <= START_PROBES, "a count of the first run (50) survived the restart"
    assert first_run, "the first run counted nothing in the directory"
    assert directory.is_dir(), "the user's directory was removed"


@pytest.mark.timeout(120)
def test_one_process_counts_in_memory(address: str) -> None:
    with serving({"TEMPORAL_ADDRESS": address}, processes=1) as (_, output, port):
        before = requests_counted(port, "/healthz")
        get_many(port, "/healthz", 20)
        assert requests_counted(port, "/healthz") == before + 20
    assert not any("counted in" in line for line in output.lines)


def book(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/book", json.dumps(body).encode(), JSON_HEADERS, method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return int(response.status), json.load(response)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [
        pytest.param(signal.SIGINT, True, id="ctrl-c-to-the-process-group"),
        pytest.param(signal.SIGINT, False, id="sigint-to-the-master"),
        pytest.param(signal.SIGTERM, False, id="sigterm-to-the-master"),
    ],
)
def test_a_signal_drains_the_booking_in_flight_and_leaves_nothing(
    address: str, tmp_path: Path, signum: signal.Signals, to_group: bool
) -> None:
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": f"drain-{uuid.uuid4()}"}
    # Three provider calls of 1 s: room to signal the API while /book waits on the saga.
    slow = {
        "PROVIDERS_PORT": "0",
        "PROVIDERS_DIR": str(tmp_path),
        "SIM_HOTEL_OUTAGE": "0",
        "SIM_LATENCY_SECONDS": "1",
    }
    worker, worker_output = spawn([sys.executable, "run_worker.py"], {**common, **slow})
    try:
        worker_output.wait_for("Worker polling")
        with serving(common, processes=2) as (api, _, port), ThreadPoolExecutor(1) as pool:
            booking = pool.submit(book, port, JOHN)
            worker_output.wait_for("event=booking")  # the saga runs: /book waits on it
            (os.killpg if to_group else os.kill)(api.pid, signum)
            wait_for_condition(lambda: not port_in_use(port), "new connections refused")
            assert not booking.done(), "the saga ended before the drain began: lengthen it"
            status, body = booking.result(timeout=60)
    finally:
        worker.terminate()
        worker.wait(30)

    assert status == 200
    assert re.fullmatch(r"john-doe-\d{6}", body.pop("user_id"))
    assert body == JOHN_BOOKED
    assert not group(api.pid), "a process of the API outlived its master"
    assert port_free(port)


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        pytest.param("127.0.0.1", "127.0.0.1:3000", id="ipv4"),
        pytest.param("localhost", "localhost:3000", id="name"),
        pytest.param("::1", "[::1]:3000", id="ipv6_in_brackets"),
        pytest.param("[::1]", "[::1]:3000", id="ipv6_already_in_brackets"),
        pytest.param("::", "[::]:3000", id="every_ipv6_interface"),
    ],
)
def test_host_and_port_make_a_bind_gunicorn_reads(host: str, bind: str) -> None:
    assert bind_address(host, 3000) == bind
