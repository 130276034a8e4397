"""The benchmark's results as text: the table, the demo's sagas in flight, the targets."""

from typing import Any


def table(data: dict[str, Any]) -> str:
    """Return the results as a text table, the demo's sagas in flight, and the targets."""
    head = (
        f"{'scenario':<24}{'conc':>5}{'n':>5}{'per s':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'x floor':>8}{'Δp50':>8}  cpu ms/booking (server, worker, providers, api)"
    )
    lines = [head, "-" * len(head)]
    for row in data["results"]:
        cpu = row["cpu_ms_per_booking"]
        cpus = ", ".join(
            f"{cpu[k]:.1f}" if k in cpu else "-" for k in ("server", "worker", "providers", "api")
        )
        lines.append(
            f"{row['scenario']:<24}{row['concurrency']:>5}{row['bookings']:>5}"
            f"{row['throughput']:>8.1f}{row['p50_ms']:>8.1f}{row['p95_ms']:>8.1f}"
            f"{row['p99_ms']:>8.1f}{row['throughput_vs_floor']:>8.3f}"
            f"{row['p50_minus_floor_ms']:>+8.1f}  {cpus}"
        )
    lines.append(
        "(demo rows: against the demo floor, a traced one against the same row untraced;"
        " the others: against the floor)"
    )
    lines.append(f"demo POST /book: {data['demo_in_flight']['text']}")
    lines.append(spans_line(data["tracing"]))
    lines.append(collector_line(data["tracing"]))
    for stack, found in data["peak_rss_mib"].items():
        rss = ", ".join(f"{name} {mib:.0f}" for name, mib in found.items())
        lines.append(f"peak resident memory, MiB, {stack} stack: {rss}")
    lines += ["", targets_table(data["targets"])]
    return "\n".join(lines)


def targets_table(found: list[dict[str, Any]]) -> str:
    """Return the targets block: target, measured, margin, holds."""
    head = f"{'target':<54}{'limit':>10}{'measured':>10}{'margin':>9}  holds"
    lines = [head, "-" * len(head)]
    for t in found:
        limit = f"{'<=' if t['at_most'] else '>='} {t['limit']:g}"
        lines.append(
            f"{t['target']:<54}{limit:>10}{t['measured']:>10.3f}{t['margin']:>+9.3f}  "
            f"{'yes' if t['holds'] else 'NO'}"
        )
    return "\n".join(lines)


def spans_line(tracing: dict[str, Any]) -> str:
    """Return what the collector received from the traced stack, per booking of each row."""
    rows = "; ".join(
        f"{row['scenario']} {row['spans_per_booking']:.1f}"
        f" ({row['traces']} traces for {row['bookings']} bookings)"
        for row in tracing["rows"]
    )
    return (
        f"spans per booking, warm-up included: {rows}; in all {tracing['spans']} spans"
        f" in {tracing['traces']} traces, {tracing['requests']} exports"
    )


def collector_line(tracing: dict[str, Any]) -> str:
    """Return the collector's CPU per booking of each traced row, its last exports included."""
    rows = "; ".join(
        f"{row['scenario']} {row['collector_cpu_ms_per_booking']:.2f}" for row in tracing["rows"]
    )
    return f"the collector's cpu ms/booking (on the same cores, in no column): {rows}"
