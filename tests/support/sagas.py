"""Copies of the project holding a changed saga, to deploy beside this checkout's."""

import shutil
from pathlib import Path

from deployment.versions import code_build_id
from tools.processes import ROOT

COPY_IGNORES = shutil.ignore_patterns(
    ".venv", ".git", ".temporal", ".providers", "docs", "__pycache__", ".*_cache"
)
"""What a copy of the project leaves out: the tools run from it with this checkout's venv."""


def changed_copy(destination: Path) -> Path:
    """Copy the project to `destination` with the hotel booked before the car; return it."""
    shutil.copytree(ROOT, destination, ignore=COPY_IGNORES)
    saga = destination / "workflows.py"
    lines = saga.read_text().splitlines(keepends=True)
    car = next(i for i, line in enumerate(lines) if line.startswith("    Step(Leg.CAR,"))
    hotel = next(i for i, line in enumerate(lines) if line.startswith("    Step(Leg.HOTEL,"))
    assert hotel == car + 1, "the saga's first two steps are no longer one line each"
    lines[car], lines[hotel] = lines[hotel], lines[car]
    saga.write_text("".join(lines))
    assert code_build_id(destination) != code_build_id()
    return destination


def broken_copy(destination: Path) -> Path:
    """Copy the project to `destination` with a saga whose every workflow task fails."""
    shutil.copytree(ROOT, destination, ignore=COPY_IGNORES)
    saga = destination / "workflows.py"
    checked = "        check_input(book_input)\n"
    assert checked in saga.read_text()
    saga.write_text(saga.read_text().replace(checked, '        raise RuntimeError("broken")\n', 1))
    return destination
