"""Child processes: the one way the tools and the tests start a program and stop it.

Each child runs in a process group of its own, so a Ctrl-C at the terminal
reaches only its parent, which stops it in its turn; it gets SIGTERM if its
parent dies outright, so nothing is left orphaned; its output is kept, relayed
line by line, or dropped. Stopping it signals its whole group (anything it
started too), waits with a deadline, then kills the group.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

Relay = Callable[[str], None]
"""Takes each line of a child's output as it comes (the line ends with its newline)."""

LAST_LINES_SECONDS = 2.0
"""How long a stop waits for the rest of a child's output, after it has exited."""


def die_with_parent(command: Sequence[str]) -> list[str]:
    """Prefix `command` so that it gets SIGTERM if its parent is killed outright.

    util-linux's setpriv sets the parent-death signal and then execs the
    command; where it is missing (not Linux), the command runs as it is.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else list(command)


class Output:
    """A child's output lines, read by a thread as they come, so a full pipe never blocks it.

    Kept in `lines`, or handed to a relay (and not kept: `make run` runs for days).
    """

    def __init__(self, stream: IO[str] | None, relay: Relay | None = None) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(stream, relay), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None, relay: Relay | None) -> None:
        for line in stream or ():
            if relay is None:
                self.lines.append(line)
            else:
                relay(line)

    def wait_for(self, text: str, timeout: float = 60, count: int = 1) -> None:
        """Wait until `count` lines contain `text`.

        Raises RuntimeError if the output ends first (the child exited), and
        TimeoutError once `timeout` seconds have passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            ended = not self._reader.is_alive()  # before counting: no line comes after it
            if sum(text in line for line in self.lines) >= count:
                return
            if ended:
                raise RuntimeError(f"output ended without {count} x {text!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {count} x {text!r} within {timeout} s in:\n{self.text()}")
            time.sleep(0.1)

    def text(self) -> str:
        """Return the lines kept so far, as one text."""
        return "".join(self.lines)

    def join(self, timeout: float = LAST_LINES_SECONDS) -> None:
        """Wait up to `timeout` seconds for the output to end (a grandchild may hold it open)."""
        self._reader.join(timeout)


def signal_group(process: "subprocess.Popen[str]", sig: int) -> None:
    """Send `sig` to the process group `process` leads, unless the group has ended."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def stop_group(process: "subprocess.Popen[str]", timeout: float, sig: int = signal.SIGTERM) -> int:
    """Stop a child's group: `sig` unless it has exited, a wait, then SIGKILL; return its status.

    If it outlives `timeout` seconds, its group is killed and TimeoutExpired raised.
    """
    if process.poll() is None:
        signal_group(process, sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait()
        raise


class Child:
    """A program started as a child process of its own.

    `env` is added to `inherit` (this process's environment unless told).
    `output`: "keep" its lines (stderr with stdout), "drop" them, or a relay.
    A child that is read runs with PYTHONUNBUFFERED, so its lines come as
    they are written.

    The parent-death signal comes when the thread that started the child
    ends: start it from a thread that outlives it (the main thread, or a
    pool's, which lives as long as its pool).
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        inherit: Mapping[str, str] = os.environ,
        output: Literal["keep", "drop"] | Relay = "keep",
    ) -> None:
        read = output != "drop"
        unbuffered = {"PYTHONUNBUFFERED": "1"} if read else {}
        self.process = subprocess.Popen(
            die_with_parent(command),
            cwd=cwd,
            env={**inherit, **unbuffered, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if read else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if read else subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",  # an odd byte must not end the reading, and so block the child
            start_new_session=True,
        )
        self.output = Output(self.process.stdout, output if callable(output) else None)

    @property
    def running(self) -> bool:
        """Return whether it has not exited yet."""
        return self.process.poll() is None

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int:
        """Stop its group (`stop_group`), then read the rest of its output; return its status."""
        try:
            return stop_group(self.process, timeout, sig)
        finally:
            self.output.join()

    def kill(self) -> None:
        """SIGKILL its group: no drain, no goodbye, as a crash would."""
        if self.running:
            signal_group(self.process, signal.SIGKILL)
        self.process.wait()
