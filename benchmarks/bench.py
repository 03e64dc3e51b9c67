"""What every benchmark script shares: timing, peak memory, the machine's name, and writing the JSON result."""

from __future__ import annotations

import json
import platform
import time
import tracemalloc
from pathlib import Path

import click

RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(best wall time, value) of ``repeats`` calls of ``fn``."""
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def peak_bytes(fn) -> int:
    """Peak Python/numpy allocation (tracemalloc) during one call of ``fn``."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` as a table; each column is (header, key, format spec such as ">9.2f")."""
    widths = [max([len(header)] + [len(format(r[key], spec)) for r in rows]) + 2 for header, key, spec in columns]
    click.echo("".join(f"{header:>{w}}" for (header, _, _), w in zip(columns, widths)))
    for r in rows:
        click.echo("".join(f"{format(r[key], spec):>{w}}" for (_, key, spec), w in zip(columns, widths)))


def save(result: dict, out: Path | None, stem: str) -> Path:
    """Write ``result`` as JSON to ``out`` (default ``results/<stem>.json``) and say where."""
    out = out or RESULTS / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {out}")
    return out
