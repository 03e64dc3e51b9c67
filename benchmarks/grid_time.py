"""Wall time of a whole protocol grid, as a user runs it: ``probe train RUN_DIR <options>`` from start to finish.

    python benchmarks/grid_time.py RUN_DIR --tag cifar10 -- --dataset cifar10:../shared/data/cifar10 \
        --split random --split vehicles-animals --seeds 0

Everything after ``--`` goes to ``probe train`` unchanged (thread settings such as OMP_NUM_THREADS pass through
the environment). RUN_DIR should be new: networks already finished there are skipped and counted, and the table
says so. Prints the wall time and a breakdown by kind of network (from each network's metrics.json), and writes
JSON to benchmarks/results/<device>-<date>-grid-<tag>.json.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import torch
from bench import cpu_name, print_table, save

from probe.planning.plan import read_plan
from probe.storage.checkpoint import read_metrics
from probe.storage.run import Run

KINDS = {"base": lambda s: s["variant"] == "base", "frozen (BnB, AnB)": lambda s: s["variant"] != "base" and
         s["variant"] != "random" and not s["fine_tune"], "fine-tuned (BnB+, AnB+)": lambda s: s["fine_tune"],
         "random (RnB)": lambda s: s["variant"] == "random"}


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("train_options", nargs=-1, type=click.UNPROCESSED)
@click.option("--tag", default="grid", show_default=True, help="Name of this grid in the result file.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(run_dir: Path, train_options: tuple[str, ...], tag: str, out: Path | None) -> None:
    run_dir = run_dir.resolve()
    before = _finished(run_dir) if Run(run_dir).plan.exists() else set()
    command = [sys.executable, "-m", "probe.cli.main", "train", str(run_dir), "--quiet", *train_options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                       os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, env=env)
    wall = time.perf_counter() - start

    if not Run(run_dir).plan.exists():  # probe refused the options before planning
        sys.exit(done.returncode)
    _, plan = read_plan(run_dir)
    specs = {p.spec.id: p.spec.to_dict() for p in plan}
    metrics = [m for m in (read_metrics(Run(run_dir).network(nid).metrics) for nid in specs) if m is not None]
    trained = [m for m in metrics if m.get("status") == "done" and m["id"] not in before]
    if done.returncode != 0 and not trained:  # probe refused the options, or nothing could train: no timing
        sys.exit(done.returncode)
    rows = []
    for kind, match in KINDS.items():
        ms = [m for m in trained if match(specs[m["id"]])]
        if ms:
            rows.append({"kind": kind, "networks": len(ms), "seconds": sum(m["seconds"] for m in ms),
                         "mean_seconds": sum(m["seconds"] for m in ms) / len(ms),
                         "img_epochs_s": sum(m["n_train"] * len(m["epochs"]) for m in ms) /
                         sum(m["seconds"] for m in ms)})
    device = trained[0]["device"] if trained else "cpu"
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu_name()
    result = {"benchmark": "grid_time", "tag": tag, "date": datetime.date.today().isoformat(), "device": device,
              "device_name": name, "threads": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())),
              "torch": torch.__version__, "python": sys.version.split()[0], "train_options": list(train_options),
              "wall_seconds": wall, "networks_trained": len(trained), "networks_already_done": len(before),
              "networks_failed": sum(m.get("status") == "failed" for m in metrics), "rows": rows}
    print_table(rows, [("kind", "kind", ""), ("networks", "networks", "d"), ("seconds", "seconds", ".0f"),
                       ("s/network", "mean_seconds", ".1f"), ("img/s incl. eval", "img_epochs_s", ".0f")])
    click.echo(f"grid wall time: {wall / 60:.1f} min for {len(trained)} networks on {name}"
               + (f" ({len(before)} were already done)" if before else ""))
    save(result, out, f"{device.split(':')[0]}-{result['date']}-grid-{tag}")


def _finished(run_dir: Path) -> set[str]:
    """The networks of the run that have their final weights."""
    return {p.spec.id for p in read_plan(run_dir)[1] if Run(run_dir).network(p.spec.id).weights.exists()}


if __name__ == "__main__":
    main()
