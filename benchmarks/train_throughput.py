"""Training images/s of probe's trainer against a plain loop, for the same network, data, recipe and device.

The plain loop is what one writes first: a torchvision-style Dataset with per-sample transforms (RandomCrop with
padding, RandomHorizontalFlip, ToDtype, Normalize) behind a DataLoader, one network at a time. probe's trainer
(``train_network``) keeps the task's images on the device as uint8 and crops, flips and normalizes whole batches.
Both run the same epochs of the same recipe from the same initial network, and report test accuracy too.

A third row runs probe's trainer again in a child process with glibc's allocator tuned through the environment
(mmap threshold 32 MiB, no trimming, a 64 MiB heap-top pad): freed activation buffers then stay in the heap instead
of going back to the OS and faulting in again on the next step. The row measures whether that pays in probe's loop.

    python benchmarks/train_throughput.py [--dataset fashion-mnist] [--width 0.25] [--epochs 1] [--device auto]
    python benchmarks/train_throughput.py --dataset cifar10:../shared/data/cifar10 --width 0.125 \
        --arch-option dropout=0 --crop-padding 4 --train-per-class 500 --epochs 3

Prints a table and writes JSON to benchmarks/results/<device>-<date>-train.json.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from bench import best_of, cpu_name, print_table, save

from probe.cli.options import parse_arch_options
from probe.data.datasets import load_dataset
from probe.data.tasks import task_data
from probe.execution.batches import channel_stats
from probe.execution.train import (
    TaskTensors,
    evaluate,
    lr_factor,
    make_optimizer,
    prepare_model,
    resolve_device,
    train_network,
)
from probe.planning.plan import Study, make_plan
from probe.specs.spec import ArchSpec, DataSpec, Recipe


class PerSampleImages(torch.utils.data.Dataset):
    """uint8 ``(N, H, W, C)`` images with a per-sample transform, as torchvision datasets serve them."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)), self.labels[i]


def plain_loop(spec, task, mean, std, device, workers: int) -> float:
    """Train ``spec`` with a DataLoader of per-sample transforms; returns its test accuracy."""
    r = spec.recipe
    transform = T.Compose([T.RandomCrop(spec.input_size, padding=r.crop_padding), T.RandomHorizontalFlip(),
                           T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PerSampleImages(task.train_x, task.train_y, transform),
                                         batch_size=r.batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    model = prepare_model(spec, Path()).to(device)
    optimizer = make_optimizer(model, spec)
    total = r.epochs * math.ceil(len(task.train_y) / r.batch_size)
    step = 0
    for _ in range(r.epochs):
        model.train()
        for x, y in loader:
            for g in optimizer.param_groups:
                g["lr"] = r.lr * g["lr_scale"] * lr_factor(r, step, total)
            loss = F.cross_entropy(model(x.to(device)), torch.as_tensor(y).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    tensors = TaskTensors.from_task(task, mean, std, device)
    return evaluate(model, tensors.test_x, tensors.test_y, tensors.normalize, spec.input_size)


# glibc's allocator kept from returning freed memory to the OS (see the module docstring); read at process start
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
                "MALLOC_TOP_PAD_": str(64 << 20)}


def tuned_malloc_row(argv: list[str]) -> dict:
    """probe's row, measured again by this script in a child process started with :data:`TUNED_MALLOC`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        subprocess.run([sys.executable, __file__, *argv, "--probe-only", "--out", str(out)], check=True,
                       env={**os.environ, **TUNED_MALLOC}, stdout=subprocess.DEVNULL)
        row = json.loads(out.read_text())["rows"][0]
    return {**row, "loop": "probe, glibc malloc tuned"}


def timed(fn, repeats: int) -> tuple[float, object, int]:
    """(best seconds, value, minor page faults per repeat) of ``repeats`` calls of ``fn``."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds, value = best_of(fn, repeats)
    return seconds, value, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // repeats


@click.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Dataset (its random split's task B).")
@click.option("--arch", default="caffenet-small", show_default=True, help="Architecture.")
@click.option("--width", type=float, default=0.25, show_default=True, help="Width multiplier.")
@click.option("--arch-option", "arch_option", multiple=True, default=(),
              help="Further architecture option KEY=VALUE (repeatable), e.g. dropout=0.")
@click.option("--train-per-class", type=int, default=None, help="Training images per class. Default: all.")
@click.option("--crop-padding", type=int, default=2, show_default=True, help="Random-crop padding in pixels.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Epochs per timed run.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per step.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers of the plain loop.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Timed repeats; the best is reported.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--malloc-row/--no-malloc-row", default=True, show_default=True,
              help="Also time probe's loop in a child process with glibc's allocator tuned (CPU only).")
@click.option("--probe-only", is_flag=True, hidden=True, help="Time probe's loop alone (the tuned-malloc child).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(dataset, arch, width, arch_option, train_per_class, crop_padding, epochs, batch_size, workers, repeats,
         device, malloc_row, probe_only, out) -> None:
    dev = resolve_device(device)
    data = DataSpec(dataset, train_per_class=train_per_class)
    arrays = load_dataset(data)
    recipe = Recipe(epochs=epochs, batch_size=batch_size, crop_padding=crop_padding, schedule="cosine")
    options = {"width": width, **parse_arch_options(arch_option)}
    study = Study(data, ArchSpec(arch, "kaiming", options), recipe, cuts=(1,), variants=("RnB",))
    spec = make_plan(study, arrays.classes, arrays.train_x.shape[-1], arrays.train_x.shape[1])[1].spec  # baseB
    task = task_data(arrays, list(spec.target_classes), spec.data)
    mean, std = channel_stats(arrays.train_x)
    images = len(task.train_y) * epochs

    def fast() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            tensors = TaskTensors.from_task(task, mean, std, dev)
            return train_network(spec, tensors, Path(tmp), dev, progress=False)["test_acc"]

    t_fast, acc_fast, faults_fast = timed(fast, repeats)
    rows = [{"loop": "probe", "seconds": t_fast, "img_s": images / t_fast, "test_acc": acc_fast,
             "minor_faults": faults_fast}]
    if not probe_only:
        t_plain, acc_plain, faults_plain = timed(lambda: plain_loop(spec, task, mean, std, dev, workers), repeats)
        rows.append({"loop": f"plain (DataLoader, {workers} workers)", "seconds": t_plain, "img_s": images / t_plain,
                     "test_acc": acc_plain, "minor_faults": faults_plain})
        if malloc_row and dev.type == "cpu":
            rows.append(tuned_malloc_row(sys.argv[1:]))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    result = {"benchmark": "train_throughput", "date": datetime.date.today().isoformat(), "device": str(dev),
              "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "python": sys.version.split()[0], "dataset": dataset, "arch": arch, "arch_options": options,
              "crop_padding": crop_padding, "epochs": epochs, "batch_size": batch_size,
              "train_images": len(task.train_y), "repeats": repeats, "malloc_env": TUNED_MALLOC, "rows": rows}
    print_table(rows, [("loop", "loop", ""), ("seconds", "seconds", ".1f"), ("img/s", "img_s", ".0f"),
                       ("test acc", "test_acc", ".4f"), ("minor faults", "minor_faults", "d")])
    if not probe_only:
        result["speedup"] = t_plain / t_fast
        click.echo(f"speed-up of probe's loop: {result['speedup']:.2f}x")
        if len(rows) > 2:
            result["malloc_speedup"] = t_fast / rows[2]["seconds"]
            click.echo(f"tuned malloc against probe's loop with glibc's defaults: {result['malloc_speedup']:.2f}x")
    save(result, out, f"{dev.type}-{result['date']}-train")


if __name__ == "__main__":
    main()
