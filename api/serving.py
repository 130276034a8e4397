"""Serving the API with gunicorn: threads, one app per worker process, a graceful drain.

With several worker processes, their request metrics are summed through a
directory that the master prepares before forking (`api/metrics.py`).
"""

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from api.loop import ClientLoopFlask
from api.metrics import MetricsDirectory
from api.settings import ApiSettings

if TYPE_CHECKING:
    from gunicorn._types import _WSGIAppType


class GracefulOnInterrupt(Arbiter):
    """gunicorn's arbiter, draining on Ctrl-C as on SIGTERM (its own SIGINT is abrupt)."""

    def handle_int(self) -> None:
        """Stop gracefully: let requests in flight finish."""
        self.handle_term()


class DrainingWorker(ThreadWorker):
    """gunicorn's threaded worker, refusing new connections from the start of a drain.

    gunicorn 27's stops accepting on SIGTERM but keeps its listening socket
    open until its last request ends: meanwhile the kernel still queues new
    connections, which wait unanswered and are reset at exit, instead of
    being refused at once (and retried elsewhere by a client or balancer).
    """

    def set_accept_enabled(self, enabled: bool | None) -> None:
        """Start or stop accepting; when draining, also close the listening sockets."""
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()


class Server(BaseApplication):
    """gunicorn, configured from ApiSettings, serving one app per worker process."""

    def __init__(self, settings: ApiSettings, make_app: Callable[[ApiSettings], Flask]) -> None:
        self.settings = settings
        self.make_app = make_app
        # Made once: gunicorn calls load_config again on a reload (SIGHUP).
        self.metrics = MetricsDirectory(settings.processes)
        super().__init__()

    def load_config(self) -> None:
        """Apply the settings."""
        s = self.settings
        self.cfg.set("bind", [bind_address(s.host, s.port)])
        self.cfg.set("worker_class", DrainingWorker)
        self.cfg.set("workers", s.processes)
        self.cfg.set("threads", s.threads)
        # A request may wait BOOK_WAIT_SECONDS for a saga; give it room.
        self.cfg.set("timeout", int(s.request_timeout))
        # Room for a request's wait, plus a start that Temporal is slow to take.
        self.cfg.set("graceful_timeout", int(s.book_wait_seconds) + 20)
        # gunicorn 27's control socket lives in $HOME, shared by every API
        # process on the machine; nothing here uses it.
        self.cfg.set("control_socket_disable", True)
        # After the worker's own signal handlers are in place (post_fork is too early).
        self.cfg.set("post_worker_init", _ignore_interrupt)
        self.cfg.set("worker_exit", _stop_client_loop)
        metrics = self.metrics
        # In the master: before the first fork, as each worker exits, at the end.
        self.cfg.set("on_starting", lambda arbiter: metrics.prepare())
        self.cfg.set("child_exit", lambda arbiter, worker: metrics.forget(worker.pid))
        self.cfg.set("on_exit", lambda arbiter: metrics.remove())

    def load(self) -> "_WSGIAppType":
        """Build the app in the worker process, after the fork.

        The SDK's runtime and client do not survive a fork.
        """
        # Flask types its environ as dict, gunicorn's stubs as MutableMapping.
        return cast("_WSGIAppType", self.make_app(self.settings))

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then drain."""
        GracefulOnInterrupt(self).run()


def bind_address(host: str, port: int) -> str:
    """Return gunicorn's bind for HOST and PORT: an IPv6 address goes in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _ignore_interrupt(worker: Any) -> None:
    # Ctrl-C reaches every process of the terminal's group; workers leave it
    # to the arbiter, which then stops them gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_client_loop(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if isinstance(app, ClientLoopFlask):
        app.client_loop.close()
