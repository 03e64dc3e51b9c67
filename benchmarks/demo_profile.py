"""Where a sweep's time goes, in CPU seconds (user and system apart) per phase of every network's training task.

Runs ``probe train RUN <options>`` in this process with probe's training functions wrapped in timers (on a dask
LocalCluster, in every worker too) and charges each phase its own CPU time, exclusive of the phases inside it:

- ``forward`` (and loss): a training step less its augmentation, backward and optimizer step;
- ``backward``, ``optimizer step``, ``augmentation`` (random crops, mirroring);
- ``eval: validation`` (every epoch), ``eval: test``, ``eval: training set`` (the fit, once at the end);
- ``boundary records`` (the cut's scale and dead units, every epoch and at the start);
- ``build model`` (and copy the parent's layers), ``checkpoints`` (resume file every epoch, final weights);
- ``task tensors`` (a task's images to tensors, cached per process), ``task other`` (locks, state checks, metrics);
- ``outside tasks``: the rest of the process (imports, planning, the dataset, dask's own threads and unpickling).

    python benchmarks/demo_profile.py --tag local -- --dataset fashion-mnist --seeds 0 ... --executor local
    python benchmarks/demo_profile.py --tag dask --dask-malloc glibc -- ... --executor dask --workers 2

``--dask-malloc glibc`` starts the LocalCluster's workers without distributed's ``MALLOC_TRIM_THRESHOLD_=65536``
(set by ``distributed.nanny.pre-spawn-environ``), so glibc keeps its dynamic thresholds as in a plain process.
CPU seconds hold on a loaded machine; the wall time does not. Prints a table and writes JSON to
benchmarks/results/cpu-<date>-profile-<tag>.json.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import click
from bench import cpu_name, print_table, save

PHASES = ["forward", "backward", "optimizer step", "augmentation", "eval: validation", "eval: test",
          "eval: training set", "boundary records", "build model", "checkpoints", "task tensors", "task other"]


def _usage() -> tuple[float, float, int, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt, time.perf_counter()


def instrument() -> dict:
    """Wrap probe's training functions in this process with exclusive CPU timers; returns the process's usage so
    far. Idempotent. The totals live on the module ``probe.execution.train`` (so that a dask worker keeps them)."""
    import torch

    import probe.execution.sweep as sweep
    import probe.execution.train as train

    if getattr(train, "_PROFILE", None) is not None:
        return dict(zip(("user", "sys", "minflt", "wall"), _usage()))
    totals = {name: [0.0, 0.0, 0, 0] for name in PHASES}  # user, sys, minor faults, calls
    stack: list[list] = []  # [phase, usage at its (re)start]
    state = {"in_epochs": False, "after": 0}
    train._PROFILE = totals

    def charge(entry, now):
        t = totals[entry[0]]
        t[0] += now[0] - entry[1][0]
        t[1] += now[1] - entry[1][1]
        t[2] += now[2] - entry[1][2]

    def timed(phase_of, fn):
        def wrapper(*args, **kwargs):
            phase = phase_of() if callable(phase_of) else phase_of
            now = _usage()
            if stack:
                charge(stack[-1], now)
            stack.append([phase, now])
            totals[phase][3] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                now = _usage()
                charge(stack.pop(), now)
                if stack:
                    stack[-1][1] = now
        # named as the function it wraps, so that dask pickles it by reference: each worker then runs its own
        wrapper = functools.wraps(fn)(wrapper)
        return wrapper

    def eval_phase():
        if state["in_epochs"]:
            return "eval: validation"
        state["after"] += 1
        return "eval: test" if state["after"] % 2 == 1 else "eval: training set"

    train_epochs = train._train_epochs

    def epochs(*args, **kwargs):
        state["in_epochs"], state["after"] = True, 0
        try:
            return train_epochs(*args, **kwargs)
        finally:
            state["in_epochs"] = False

    train._train_epochs = functools.wraps(train_epochs)(epochs)
    train._train_epoch = timed("forward", train._train_epoch)
    train.random_crop_flip = timed("augmentation", train.random_crop_flip)
    train.evaluate_classes = timed(eval_phase, train.evaluate_classes)
    train.boundary = timed("boundary records", train.boundary)
    train.prepare_model = timed("build model", train.prepare_model)
    train._save_resume = timed("checkpoints", train._save_resume)
    train.save_tensors = timed("checkpoints", train.save_tensors)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.optim.SGD.step = timed("optimizer step", torch.optim.SGD.step)
    cached = sweep.task_tensors
    sweep.task_tensors = timed("task tensors", cached)
    sweep.task_tensors.cache_clear = cached.cache_clear
    sweep.train_task = timed("task other", sweep.train_task)
    return dict(zip(("user", "sys", "minflt", "wall"), _usage()))


def collect() -> dict:
    """This process's phase totals and its whole usage."""
    import probe.execution.train as train

    user, sys_, minflt, _ = _usage()
    phases = {k: {"user": v[0], "sys": v[1], "minflt": v[2], "calls": v[3]} for k, v in train._PROFILE.items()}
    return {"phases": phases, "user": user, "sys": sys_, "minflt": minflt, "pid": os.getpid()}


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("train_options", nargs=-1, type=click.UNPROCESSED)
@click.option("--tag", default="sweep", show_default=True, help="Name of this profile in the result file.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: a new temporary one).")
@click.option("--dask-malloc", type=click.Choice(["dask", "glibc"]), default="dask", show_default=True,
              help="dask: the workers get distributed's MALLOC_TRIM_THRESHOLD_=65536; glibc: they do not.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(train_options: tuple[str, ...], tag: str, run_dir: Path | None, dask_malloc: str, out: Path | None) -> None:
    start = instrument()
    import dask
    import torch
    from distributed.nanny import _get_env_variables  # (importing distributed loads its configuration into dask's)

    import probe.execution.distributed as probe_dask
    from probe.cli.main import main as probe

    if dask_malloc == "glibc":  # None unsets a variable of distributed's (its nanny drops it)
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    workers: list[dict] = []
    cluster = {}
    run_study_dask = probe_dask.run_study_dask

    def profiled_dask(client, *args, **kwargs):
        cluster["up"] = time.perf_counter() - cluster["asked"]
        before = client.run(instrument)
        try:
            return run_study_dask(client, *args, **kwargs)
        finally:
            after = client.run(collect)
            workers.extend({**after[w], "before_tasks": before[w]} for w in after)

    dask_client = probe_dask.dask_client

    def timed_client(*args, **kwargs):
        cluster["asked"] = time.perf_counter()
        return dask_client(*args, **kwargs)

    probe_dask.run_study_dask, probe_dask.dask_client = profiled_dask, timed_client
    with tempfile.TemporaryDirectory() as tmp:
        run = run_dir or Path(tmp) / "run"
        t0 = time.perf_counter()
        code = probe.main(["train", str(run), "--quiet", *train_options], standalone_mode=False)
        wall = time.perf_counter() - t0
        if code:
            sys.exit(code)
        seconds = [json.loads(p.read_text()).get("seconds", 0.0) for p in run.glob("networks/**/metrics.json")]
    main_proc = collect()
    processes = [{"process": "main", **main_proc, "before_tasks": start}] + [
        {"process": f"worker {i + 1}", **w} for i, w in enumerate(workers)]
    rows = []
    for name in [*PHASES, "outside tasks"]:
        if name == "outside tasks":
            user = sum(p["user"] - sum(v["user"] for v in p["phases"].values()) for p in processes)
            sys_ = sum(p["sys"] - sum(v["sys"] for v in p["phases"].values()) for p in processes)
            calls = 0
        else:
            user = sum(p["phases"][name]["user"] for p in processes)
            sys_ = sum(p["phases"][name]["sys"] for p in processes)
            calls = sum(p["phases"][name]["calls"] for p in processes)
        rows.append({"phase": name, "user": user, "sys": sys_, "cpu": user + sys_, "calls": calls})
    total = sum(r["cpu"] for r in rows)
    for r in rows:
        r["share"] = r["cpu"] / total if total else 0.0
    per_process = [{"process": p["process"], "user": p["user"], "sys": p["sys"], "minflt": p["minflt"],
                    "sys_share": p["sys"] / max(1e-9, p["user"] + p["sys"])} for p in processes]
    result = {"benchmark": "demo_profile", "tag": tag, "date": datetime.date.today().isoformat(), "device": "cpu",
              "device_name": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
              "train_options": list(train_options), "dask_malloc": dask_malloc,
              "worker_environ": _get_env_variables("distributed.nanny.pre-spawn-environ") if workers else None,
              "load_average": os.getloadavg(), "wall_seconds": wall, "cpu_seconds": total,
              "networks": len(seconds), "network_seconds": sum(seconds),
              "cluster_start_seconds": cluster.get("up"), "phases": rows, "processes": per_process}
    print_table(rows, [("phase", "phase", ""), ("user s", "user", ".1f"), ("sys s", "sys", ".1f"),
                       ("CPU s", "cpu", ".1f"), ("share", "share", ".1%"), ("calls", "calls", "d")])
    print_table(per_process, [("process", "process", ""), ("user s", "user", ".1f"), ("sys s", "sys", ".1f"),
                              ("sys share", "sys_share", ".1%"), ("minor faults", "minflt", "d")])
    click.echo(f"{len(seconds)} networks; {total:.0f} CPU s in all; wall {wall:.0f} s "
               f"(load average {os.getloadavg()[0]:.1f} at the end: wall times on a busy machine are inflated)")
    save(result, out, f"cpu-{result['date']}-profile-{tag}")


if __name__ == "__main__":
    main()
