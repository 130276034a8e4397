"""What the benchmark's processes use, read from /proc: CPU seconds and peak memory."""

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process and its live descendants so far.

    gunicorn's master does no work itself: its worker processes do, and
    /proc adds a child's CPU to its parent's only once the child has exited.
    """
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since we looked
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def descendants(pid: int) -> list[int]:
    """Return the ids of a process's live descendants."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        kids = [int(k) for k in children.read_text().split()] if children.exists() else []
        found += kids
        todo += kids
    return found


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident memory of a process and its descendants, MiB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024
