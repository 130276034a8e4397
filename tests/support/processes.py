"""Programs run as a user runs them: a child process and its output, read as it comes;
the processes it leaves, and its port."""

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tools.children import Child, Output, stop_group
from tools.processes import ROOT


def spawn(command: list[str], env: dict[str, str]) -> tuple["subprocess.Popen[str]", Output]:
    """Start `command` as `tools.children` starts every child; return it and its output."""
    child = Child(command, cwd=ROOT, env=env)
    return child.process, child.output


def terminate(process: "subprocess.Popen[str]", timeout: float = 60) -> int:
    """Stop a child's group with SIGTERM unless it has exited; return its exit status.

    SIGKILL only if it outlives `timeout` (then TimeoutExpired is raised).
    """
    return stop_group(process, timeout)


def _stat_fields(pid: str) -> list[str]:
    # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def processes_where(field: int, value: int) -> set[int]:
    """Return the live processes whose /proc stat `field` (after comm) is `value`."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            fields = _stat_fields(entry.name) if entry.name.isdigit() else []
        except OSError:  # it ended meanwhile
            continue
        if fields and int(fields[field]) == value and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def children(pid: int) -> set[int]:
    """Return the live child processes of `pid`."""
    return processes_where(1, pid)


def group(pgid: int) -> set[int]:
    """Return the live processes of process group `pgid`."""
    return processes_where(2, pgid)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether a server could listen on `port` now, as gunicorn binds (SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen()
        except OSError:
            return False
        return True


def wait_for_condition(holds: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll `holds` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)
