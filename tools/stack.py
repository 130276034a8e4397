"""The local stack behind `make run`: dev server, providers, worker and API in one terminal.

Starts the Temporal dev server (persisted to a SQLite file), waits until it
and its Web UI answer, then the provider service (`providers.py`), then the
worker calling it (`PROVIDERS_URL`) and the API, with labelled output, and
says "ready" once every URL it prints answers. Ctrl-C or SIGTERM stops them
in the order that loses nothing: the API first, then the worker (which
drains its activities), then the providers (which answer their calls in
flight), then the server.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from api.settings import ApiSettings
from config import ConfigError, port_from_env
from providers import DEFAULT_PORT
from tools.children import Child
from tools.processes import (
    ROOT,
    ServerSettings,
    answers,
    create_search_attributes,
    port_in_use,
    server_serving,
    wait_until,
)

RETIRING = "has drained: no booking is left on it"
"""What a worker says as it stops for good (`run_worker.look_after_version`)."""

STOP_TIMEOUTS = {"api": 10.0, "worker": 20.0, "providers": 15.0, "server": 10.0}
"""Seconds each process gets after SIGTERM before SIGKILL, in stopping order."""


@dataclass(frozen=True)
class StackSettings:
    """The dev server's ports and file, and where the providers and the API listen."""

    server: ServerSettings = field(default_factory=ServerSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    providers_port: int = DEFAULT_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "StackSettings":
        """Read TEMPORAL_PORT, TEMPORAL_UI_PORT, TEMPORAL_DB_FILE, PROVIDERS_PORT, the API's."""
        default = ServerSettings()
        server = ServerSettings(
            grpc_port=port_from_env(env, "TEMPORAL_PORT", default.grpc_port),
            ui_port=port_from_env(env, "TEMPORAL_UI_PORT", default.ui_port),
            db_file=Path(env.get("TEMPORAL_DB_FILE", default.db_file)),
        )
        providers_port = port_from_env(env, "PROVIDERS_PORT", cls.providers_port)
        return cls(server, ApiSettings.from_env(env), providers_port)

    @property
    def providers_url(self) -> str:
        """Return where the provider service answers."""
        return f"http://127.0.0.1:{self.providers_port}"

    @property
    def api_url(self) -> str:
        """Return where the API answers locally (a wildcard bind answers on loopback)."""
        host = "127.0.0.1" if self.api.host in ("0.0.0.0", "", "::") else self.api.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.api.port}"


class Stack:
    """The four child processes and their labelled output."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.children: dict[str, Child] = {}
        self.retiring = False
        self.env = {
            "TEMPORAL_ADDRESS": settings.server.address,
            "PORT": str(settings.api.port),
            "PROVIDERS_PORT": str(settings.providers_port),
            "PROVIDERS_URL": settings.providers_url,
            # A restart after an edit of the saga deploys the edit (docs/operating.md).
            "WORKER_SET_CURRENT": "always",
        }

    def start(self, name: str, command: list[str]) -> None:
        """Start a child in its own process group, so Ctrl-C reaches only us."""
        relay = partial(labelled, name)
        if name == "worker":
            relay = partial(self.watch_worker, relay)
        # SIM_* is the providers' to read; the worker, calling them, would only say it ignores it.
        inherit = {
            k: v for k, v in os.environ.items() if name != "worker" or not k.startswith("SIM_")
        }
        self.children[name] = Child(command, cwd=ROOT, env=self.env, inherit=inherit, output=relay)

    def watch_worker(self, relay: Callable[[str], None], line: str) -> None:
        """Relay a worker's line, noting whether it says its version has drained."""
        self.retiring = self.retiring or RETIRING in line
        relay(line)

    def exited(self) -> str | None:
        """Return the name of a child that has exited, if any.

        A worker that exits after saying that its version has drained (after
        `make deploy` made another one current) has retired: the stack goes on
        without it.
        """
        worker = self.children.get("worker")
        retired = worker is not None and self.retiring and worker.process.poll() == 0
        if retired:
            print("    stack | worker retired: its version has drained", flush=True)
            del self.children["worker"]
        return next((n for n, c in self.children.items() if not c.running), None)

    def stop(self) -> None:
        """Stop the children in order: API, worker, providers, server; each with its last lines."""
        for name, timeout in STOP_TIMEOUTS.items():
            child = self.children.get(name)
            if child is None:
                continue
            try:
                child.stop(timeout)
            except subprocess.TimeoutExpired:
                print(f"{name:>9} | did not stop in {timeout:.0f} s; killing it", flush=True)


def labelled(name: str, line: str) -> None:
    """Print a child's output line behind its name."""
    print(f"{name:>9} | {line}", end="", flush=True)


def start_all(stack: Stack, stop: threading.Event) -> None:
    """Start the server, providers, worker and API; return once each answers as it will be used."""
    server = stack.settings.server
    stack.start("server", server.command())
    process = stack.children["server"].process
    wait_until(partial(server_serving, server.address), process, "the server", stop)
    create_search_attributes(server.address)  # a .temporal file from before they existed
    # The Web UI serves its page before its API can reach the server: wait for the API.
    wait_until(partial(answers, server.ui_api), process, "the Web UI", stop)
    stack.start("providers", [sys.executable, "providers.py"])
    healthz = f"{stack.settings.providers_url}/healthz"
    wait_until(
        partial(answers, healthz), stack.children["providers"].process, "the providers", stop
    )
    stack.start("worker", [sys.executable, "run_worker.py"])
    stack.start("api", [sys.executable, "starter.py"])
    # Ready: Temporal reachable through the API and a worker polling the task queue;
    # or bookings stuck on an old version, which new bookings do not meet.
    ready = partial(serves_new_bookings, f"{stack.settings.api_url}/readyz")
    wait_until(ready, stack.children["api"].process, "the API", stop)


def serves_new_bookings(readyz: str) -> bool:
    """Return whether `/readyz` says ready, or names stuck bookings (printed: new ones run)."""
    try:
        with urllib.request.urlopen(readyz, timeout=5) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as err:
        try:
            problem = json.loads(err.read())
        except ValueError:  # not the API's problem+json: not ready
            return False
        if not isinstance(problem, dict) or not problem.get("stuck"):
            return False
        print(f"    stack | not ready: {problem.get('detail')}", flush=True)
        return True
    except OSError:  # refused, reset or timed out
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the stack until Ctrl-C or SIGTERM; return the exit status."""
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Settings come from the environment: README, Configuration.",
    ).parse_args(argv)
    try:
        settings = StackSettings.from_env()
    except ConfigError as err:
        print(f"make run: {err}", file=sys.stderr)
        return 2
    server = settings.server
    ports = (server.grpc_port, server.ui_port, settings.providers_port, settings.api.port)
    if busy := [port for port in ports if port_in_use(port)]:
        print(f"port(s) {busy} already in use: is another `make run` going?", file=sys.stderr)
        return 1
    settings.server.db_file.parent.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    stack = Stack(settings)
    status = 0
    try:
        start_all(stack, stop)
        print(
            f"    stack | ready: API {settings.api_url}/book, "
            f"Web UI http://localhost:{settings.server.ui_port}; Ctrl-C stops all",
            flush=True,
        )
        while not stop.wait(0.5):
            if failed := stack.exited():
                print(f"    stack | {failed} exited; stopping the rest", flush=True)
                status = 1
                break
    except SystemExit as err:
        print(f"    stack | {err}", file=sys.stderr, flush=True)
        status = 0 if stop.is_set() else 1
    finally:
        stack.stop()
    print("    stack | stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
