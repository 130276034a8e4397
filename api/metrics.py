"""The API's request metrics at /metrics, summed over every process of one server.

With one process, each app counts in memory, in a registry of its own. With
several (`WEB_CONCURRENCY` > 1), prometheus_client's multiprocess mode: each
process writes its counts to files in `PROMETHEUS_MULTIPROC_DIR`, and
/metrics, whichever process answers it, reads them all. The library picks
memory or files once, when it is first imported, from that variable; so
gunicorn's master sets it before forking, and only the forked processes,
which build the app, import the library (the imports below are in the
functions for that reason alone).
"""

import logging
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from flask import Flask

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The variable naming the directory where each process keeps its counts."""

log = logging.getLogger(__name__)


def count_requests(app: Flask) -> None:
    """Count the app's requests and their latencies at /metrics, by route and status.

    Labelled by route (`/bookings/<user_id>`), never by a booking id. Refuses
    (RuntimeError) when PROMETHEUS_MULTIPROC_DIR is set but prometheus_client
    was imported before it was, and so counts in memory: /metrics would
    report one process's share.
    """
    from prometheus_client import CollectorRegistry, values
    from prometheus_flask_exporter import PrometheusMetrics

    if MULTIPROC_DIR in os.environ and values.ValueClass is values.MutexValue:
        raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_DIR} was set")
    # A registry of the app's own, so tests can build many apps in one process;
    # in multiprocess mode /metrics reads the directory instead.
    PrometheusMetrics(app, registry=CollectorRegistry(), group_by="url_rule")


class MetricsDirectory:
    """Where the processes of one server keep their counts, fresh for each run.

    The user's PROMETHEUS_MULTIPROC_DIR if set (emptied of the library's
    files, so no count of a previous run remains); otherwise, with several
    processes, a directory of the server's own, removed when it stops.
    """

    def __init__(self, processes: int, env: MutableMapping[str, str] = os.environ) -> None:
        self.processes = processes
        self.env = env
        self.owned: Path | None = None

    def prepare(self) -> None:
        """Empty or create the directory, in gunicorn's master before it forks."""
        given = self.env.get(MULTIPROC_DIR)
        if given:
            path = Path(given)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):  # only what prometheus_client writes there
                stale.unlink()
        elif self.processes > 1:
            path = self.owned = Path(tempfile.mkdtemp(prefix="saga-api-metrics-"))
            self.env[MULTIPROC_DIR] = str(path)
        else:
            return
        log.info("metrics of every API process counted in %s", path)

    def forget(self, pid: int) -> None:
        """Drop an exited process's live gauges (its counts stay: they happened)."""
        if MULTIPROC_DIR in self.env:
            from prometheus_client import multiprocess

            # The library leaves this one function without annotations.
            multiprocess.mark_process_dead(pid, self.env[MULTIPROC_DIR])  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        """Remove the directory if the server created it; the user's stays."""
        if self.owned is not None:
            shutil.rmtree(self.owned, ignore_errors=True)
            self.env.pop(MULTIPROC_DIR, None)
            self.owned = None
