"""`make run` as the tests run it: on free ports, stopped with Ctrl-C, leaving nothing behind."""

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import spawn
from tools.children import Output
from tools.processes import free_port


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
    """Return whether `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def on_free_ports(tmp_path: Path, **more: str) -> dict[str, str]:
    """Return `make run`'s settings for a test: free ports, its files in `tmp_path`, and `more`."""
    return {
        "PORT": str(free_port()),
        "TEMPORAL_PORT": str(free_port()),
        "TEMPORAL_UI_PORT": str(free_port()),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "PROVIDERS_PORT": str(free_port()),
        "PROVIDERS_DIR": str(tmp_path / "providers"),
        "WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        **more,
    }


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
    assert len(children) >= 5, f"expected the supervisor and four children, saw {children}"
    assert not [pid for pid in children if alive(pid)]
