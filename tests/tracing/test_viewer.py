"""The trace viewer as the docs have a user run it: `make traces`, then
`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<its port> make run`.

`make traces` (installing Phoenix first on a fresh clone) serves the viewer on
the port it is given; `make run`, told that port, sends every process's spans
there over OTLP/HTTP; Jane's booking, found by the `Trace-Id` its answer names,
is one trace in the viewer, from the API's request through the saga's
compensation to the providers' undo calls, no span twice; Ctrl-C stops both
and leaves no process and no port behind.

Both run on free ports, and the viewer keeps its traces in a folder of the
test's (`TRACES_DIR`), not in the developer's `.traces`.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.support.processes import spawn
from tests.support.spans import JANES_TRACE, Span, named, outline
from tests.support.stack import alive, descendants, make_run, on_free_ports
from tools.processes import ROOT, answers, free_port, port_in_use

DOCS = (ROOT / "docs" / "tracing.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
TRACE_ID_LINE = re.compile(r"Trace-Id: [0-9a-f]{32}\r?\n")

INSTALL_SECONDS = 360
"""How long `make traces` may take to answer: on a fresh clone it installs Phoenix first."""

SHOWN = (
    "POST /book",
    "RunWorkflow:BookingWorkflow",
    "compensation",
    "undo car",
    "RunActivity:undo_book_car",
    "POST /{leg}/undo",
)
"""Spans of Jane's trace from each process: the API's, the worker's, the providers'."""


class Viewer(NamedTuple):
    """`make traces`, serving: its ports."""

    port: int
    grpc_port: int

    @property
    def url(self) -> str:
        """Return where it answers, and where `make run` exports to."""
        return f"http://127.0.0.1:{self.port}"


def stop_with_ctrl_c(process: "subprocess.Popen[str]") -> None:
    """Send what Ctrl-C in a terminal sends to the group; SIGKILL it if it outlives a minute."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@contextmanager
def make_traces(traces_dir: Path) -> Iterator[Viewer]:
    """Run `make traces` on free ports until it answers, then Ctrl-C; check nothing is left."""
    viewer = Viewer(free_port(), free_port())
    command = ["make", "--no-print-directory", "traces"]
    command += [f"TRACES_PORT={viewer.port}", f"TRACES_GRPC_PORT={viewer.grpc_port}"]
    process, output = spawn([*command, f"TRACES_DIR={traces_dir}"], {})
    children: set[int] = set()
    try:
        deadline = time.monotonic() + INSTALL_SECONDS
        while not answers(f"{viewer.url}/healthz"):
            assert process.poll() is None, f"make traces exited:\n{output.text()}"
            assert time.monotonic() < deadline, f"not up in {INSTALL_SECONDS} s:\n{output.text()}"
            time.sleep(0.5)
        children = descendants(process.pid)
        yield viewer
    finally:
        stop_with_ctrl_c(process)
    assert children, "expected make's shell and Phoenix"
    assert not [pid for pid in children if alive(pid)], output.text()
    assert not [port for port in viewer if port_in_use(port)]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def documented(after: str, kind: str) -> str:
    """Return the first `kind` block of docs/tracing.md that comes after the text `after`."""
    found = re.search(f"{re.escape(after)}.*?```{kind}\n(.*?)```", DOCS, re.DOTALL)
    assert found is not None, f"no {kind} block after {after!r} in docs/tracing.md"
    return found.group(1)


def book_as_documented(port: str) -> str:
    """Run the docs' curl against `make run`'s port; return the Trace-Id it prints."""
    command = documented("Book Jane's trip", "bash").replace("localhost:3000", f"localhost:{port}")
    said = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True)
    shown = documented("Book Jane's trip", "text")
    assert TRACE_ID_LINE.fullmatch(shown), shown
    assert TRACE_ID_LINE.fullmatch(said.stdout), said.stdout
    return said.stdout.split()[1]


def from_viewer(span: dict[str, Any]) -> Span:
    """Return a span as Phoenix's REST API lists it."""
    started = datetime.fromisoformat(span["start_time"])
    return Span(
        span["context"]["trace_id"],
        span["context"]["span_id"],
        span["parent_id"],
        span["name"],
        int(started.timestamp() * 1_000_000_000),
        span["attributes"],
    )


def spans_in_viewer(viewer: Viewer, trace_id: str) -> list[Span]:
    """Return the spans of `trace_id` that the viewer lists in its default project, every page."""
    spans: list[Span] = []
    query: dict[str, str] = {"trace_id": trace_id, "limit": "1000"}
    while True:
        url = f"{viewer.url}/v1/projects/default/spans?{urllib.parse.urlencode(query)}"
        try:
            page = get_json(url)
        except urllib.error.HTTPError as error:
            if error.code == 404:  # no project yet: nothing received
                return []
            raise
        spans += [from_viewer(span) for span in page["data"]]
        if not page["next_cursor"]:
            return spans
        query["cursor"] = page["next_cursor"]


def trace_in_viewer(viewer: Viewer, trace_id: str, timeout: float = 60) -> list[Span]:
    """Poll the viewer until it shows Jane's whole trace, or `timeout` seconds pass; return it.

    Each process exports in batches, every few seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        spans = spans_in_viewer(viewer, trace_id)
        if outline(spans) == JANES_TRACE or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_the_docs_two_commands_are_make_traces_then_make_run_exporting_to_its_port() -> None:
    viewer, stack = documented("Two commands", "sh").splitlines()
    default_port = re.search(r"^TRACES_PORT \?= (\d+)$", MAKEFILE, re.MULTILINE)

    assert viewer == "make traces"
    assert default_port is not None
    assert stack == f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{default_port[1]} make run"


def test_make_traces_shows_the_trace_of_a_booking_made_on_make_run_as_documented(
    tmp_path: Path,
) -> None:
    with make_traces(tmp_path / "traces") as viewer:
        env = on_free_ports(
            tmp_path, SIM_LATENCY_SECONDS="0", OTEL_EXPORTER_OTLP_ENDPOINT=viewer.url
        )
        api = f"http://127.0.0.1:{env['PORT']}"
        with make_run(env) as output:
            trace_id = book_as_documented(env["PORT"])
            spans = trace_in_viewer(viewer, trace_id)
            (compensation,) = named(spans, "compensation")
            booking = get_json(f"{api}/bookings/{compensation.attributes['booking.id']}")

    assert booking["trace_id"] == trace_id
    logged = documented("each process logs one line at start", "text")
    assert logged.replace("6006", str(viewer.port)) in output.lines
    names = {span.name for span in spans}
    assert set(SHOWN) <= names, outline(spans)
    assert len({span.span_id for span in spans}) == len(spans), "a span was shown twice"
    assert len(named(spans, "RunWorkflow:BookingWorkflow")) == 1
    assert [span.name for span in spans if span.parent_id is None] == ["POST /book"]
    assert outline(spans) == JANES_TRACE
    ports = [int(env[name]) for name in ("PORT", "TEMPORAL_PORT", "TEMPORAL_UI_PORT")]
    ports += [int(env["PROVIDERS_PORT"]), int(env["WORKER_METRICS_ADDRESS"].rsplit(":", 1)[1])]
    assert not [port for port in ports if port_in_use(port)]
