"""The tutorial's three terminals, exactly as it writes them: `temporal server start-dev`
with no flags, `python run_worker.py`, `python starter.py`; then its two curls."""

import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.tools.test_stack import readme_examples, run_example
from tools.children import Child
from tools.processes import ROOT, answers, port_in_use, server_serving, temporal_binary, wait_until

TUTORIAL_PORTS = {
    3000: "the API",
    3001: "the providers, served by the worker",
    7233: "Temporal",
    8233: "the Web UI",
}


def ports_free_or_skip() -> None:
    """The tutorial's ports are fixed: skip while something holds one, but fail on CI."""
    busy = [f"{port} ({what})" for port, what in TUTORIAL_PORTS.items() if port_in_use(port)]
    if busy:
        message = f"the tutorial's ports are in use: {', '.join(busy)}; is a `make run` going?"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def terminal(command: list[str], env: dict[str, str]) -> Iterator[Child]:
    """Run one of the tutorial's terminals; Ctrl-C it at the end, as its reader does."""
    child = Child(command, cwd=ROOT, env=env)
    try:
        yield child
    finally:
        child.stop(60, signal.SIGINT)


def web_ui_runs() -> dict[str, str]:
    """Return the runs the Web UI's own API lists, by workflow id, with their type."""
    url = "http://localhost:8233/api/v1/namespaces/default/workflows"
    with urllib.request.urlopen(url, timeout=10) as response:
        listing = json.load(response)
    return {run["execution"]["workflowId"]: run["type"]["name"] for run in listing["executions"]}


@pytest.mark.timeout(180)
def test_the_tutorials_three_terminals_answer_its_two_curls(tmp_path: Path) -> None:
    ports_free_or_skip()
    # The providers' stores in a folder of the test's own, not the checkout's.
    env = {"PROVIDERS_DIR": str(tmp_path)}
    ids: dict[str, str] = {}
    with ExitStack() as terminals:
        start_dev = [temporal_binary(), "server", "start-dev"]  # no flags, as the tutorial
        server = terminals.enter_context(terminal(start_dev, {}))
        wait_until(lambda: server_serving("localhost:7233"), server.process, "the server")
        worker = terminals.enter_context(terminal([sys.executable, "run_worker.py"], env))
        worker.output.wait_for("Worker polling")
        api = terminals.enter_context(terminal([sys.executable, "starter.py"], env))
        wait_until(lambda: answers("http://localhost:3000/readyz"), api.process, "the API")
        for command, documented in readme_examples()[:2]:
            run_example(command, documented, 3000, ids)
        runs = web_ui_runs()

    added = "Added the search attributes BookingStatus, BookingCustomer, BookingClient"
    assert added in worker.output.text()
    assert len(ids) == 2, "John's booking and Jane's"
    assert {runs.get(user_id) for user_id in ids.values()} == {"BookingWorkflow"}
    # Free again, for the next test that takes them (a server may take a moment to let go).
    deadline = time.monotonic() + 30
    while busy := [port for port in TUTORIAL_PORTS if port_in_use(port)]:
        assert time.monotonic() < deadline, f"still in use after Ctrl-C: {busy}"
        time.sleep(0.2)
