"""The benchmark's results drawn: throughput and p50 of each scenario, as a PNG."""

from pathlib import Path
from typing import Any


def plot(data: dict[str, Any], path: Path) -> None:
    """Draw throughput and p50 of each scenario: the quick saga above, the demo below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    quick = [r for r in rows if r["baseline"] == "floor"]
    demo = [r for r in rows if r["baseline"].startswith("demo")]
    figure, axes = plt.subplots(
        2, 2, figsize=(13, 8), gridspec_kw={"height_ratios": [3, 1]}, squeeze=False
    )
    settings = data["settings"]
    for axes_row, found, levels, what in (
        (axes[0], quick, (1, settings["concurrency"]), "quick saga"),
        (axes[1], demo, (settings["demo_concurrency"],), "demo saga"),
    ):
        if len(levels) == 1:
            what += f", {levels[0]} at a time"
        for axis, key, title in (
            (axes_row[0], "throughput", "bookings per second"),
            (axes_row[1], "p50_ms", "p50 latency, ms"),
        ):
            bars(axis, found, levels, key)
            axis.set_title(f"{what}: {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def bars(axis: Any, rows: list[dict[str, Any]], levels: tuple[int, ...], key: str) -> None:
    """Draw `key` of each scenario in `rows` as horizontal bars, one per concurrency."""
    names = list(dict.fromkeys(row["scenario"] for row in rows))
    height = 0.8 / len(levels)
    for n, concurrency in enumerate(levels):
        offset = (n - (len(levels) - 1) / 2) * height
        values = [
            next(r[key] for r in rows if r["scenario"] == name and r["concurrency"] == concurrency)
            for name in names
        ]
        axis.barh(
            [i + offset for i in range(len(names))],
            values,
            height=height,
            label=f"concurrency {concurrency}",
        )
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    if len(levels) > 1:  # one level is in the title
        axis.legend()
