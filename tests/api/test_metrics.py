"""`api/metrics.py`: where the processes of one server keep their counts, and the
refusal to count in memory when they should be in files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.metrics import MULTIPROC_DIR, MetricsDirectory
from tools.processes import ROOT


@pytest.mark.parametrize("processes", [1, 4])
def test_the_users_directory_is_emptied_of_counts_and_kept(tmp_path: Path, processes: int) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "README").write_text("not ours")
    env = {MULTIPROC_DIR: str(given)}
    directory = MetricsDirectory(processes, env)

    directory.prepare()
    assert sorted(f.name for f in given.iterdir()) == ["README"]
    directory.remove()
    assert given.is_dir()
    assert env == {MULTIPROC_DIR: str(given)}


def test_a_missing_users_directory_is_created(tmp_path: Path) -> None:
    given = tmp_path / "not" / "yet"
    MetricsDirectory(2, {MULTIPROC_DIR: str(given)}).prepare()
    assert given.is_dir()


def test_several_processes_get_a_directory_of_the_servers_own_until_it_stops() -> None:
    env: dict[str, str] = {}
    directory = MetricsDirectory(2, env)

    directory.prepare()
    own = Path(env[MULTIPROC_DIR])
    assert own.is_dir()
    assert not any(own.iterdir())
    directory.remove()
    assert not own.exists()
    assert env == {}


def test_one_process_without_a_directory_touches_nothing() -> None:
    env: dict[str, str] = {}
    directory = MetricsDirectory(1, env)
    directory.prepare()
    directory.forget(12345)
    directory.remove()
    assert env == {}


def test_an_app_refuses_to_count_in_memory_when_its_processes_count_in_files(
    tmp_path: Path,
) -> None:
    # A fresh interpreter: prometheus_client imported before the variable is set.
    script = (
        "import os, prometheus_client; from flask import Flask; "
        "from api.metrics import count_requests; "
        f"os.environ[{MULTIPROC_DIR!r}] = {str(tmp_path)!r}; count_requests(Flask('x'))"
    )
    env = {name: value for name, value in os.environ.items() if name != MULTIPROC_DIR}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert f"prometheus_client was imported before {MULTIPROC_DIR} was set" in run.stderr
