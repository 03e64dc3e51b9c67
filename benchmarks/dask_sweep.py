"""Wall time of one sweep on a dask LocalCluster of 1 worker and of N workers, in the same run on this machine.

Each worker runs one network at a time with torch on its share of the cores (1 worker: all of them), so the
comparison is between parallelism inside a network (torch's threads) and across networks (dask's workers).

    python benchmarks/dask_sweep.py [--dataset fashion-mnist] [--workers 2] [--cuts 1,5]

Prints a table and writes JSON to benchmarks/results/<device>-<date>-dask.json.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
from bench import cpu_name, print_table, save

from probe.execution.distributed import dask_client, run_study_dask
from probe.planning.plan import Study
from probe.specs.spec import ArchSpec, DataSpec, Recipe


@click.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Dataset of the sweep.")
@click.option("--width", type=float, default=0.25, show_default=True, help="caffenet-small width multiplier.")
@click.option("--train-per-class", type=int, default=200, show_default=True, help="Training images per class.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Epochs per network.")
@click.option("--cuts", default="1,5", show_default=True, help="Cut points, comma-separated.")
@click.option("--workers", type=int, default=2, show_default=True, help="Workers of the larger cluster.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(dataset, width, train_per_class, epochs, cuts, workers, out) -> None:
    study = Study(DataSpec(dataset, train_per_class=train_per_class), ArchSpec("caffenet-small", "kaiming",
                  {"width": width}), Recipe(epochs=epochs, batch_size=64, crop_padding=2, schedule="cosine",
                  lr=0.02, warmup=0.2), cuts=tuple(int(c) for c in cuts.split(",")))
    cores = os.cpu_count() or 1
    rows = []
    for n in (1, workers):
        with tempfile.TemporaryDirectory() as tmp, dask_client(None, workers=n, threads=max(1, cores // n)) as client:
            start = time.perf_counter()
            result = run_study_dask(client, Path(tmp) / "run", study, "cpu", progress=False)
            wall = time.perf_counter() - start
        if result.failed or result.blocked:
            raise click.ClickException(f"the sweep did not finish: {result.failed or result.blocked}")
        rows.append({"workers": n, "threads_per_worker": max(1, cores // n), "networks": len(result.trained),
                     "seconds": wall, "networks_per_min": 60 * len(result.trained) / wall})
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    result = {"benchmark": "dask_sweep", "date": datetime.date.today().isoformat(), "device": "cpu",
              "device_name": cpu_name(), "cores": cores, "torch": torch.__version__,
              "python": sys.version.split()[0], "study": study.to_dict(), "rows": rows, "speedup": speedup}
    print_table(rows, [("workers", "workers", "d"), ("threads each", "threads_per_worker", "d"),
                       ("networks", "networks", "d"), ("seconds", "seconds", ".1f"),
                       ("networks/min", "networks_per_min", ".1f")])
    click.echo(f"{workers} workers vs 1: {speedup:.2f}x")
    save(result, out, f"cpu-{result['date']}-dask")


if __name__ == "__main__":
    main()
