"""Extraction throughput against forward-only throughput of the same network, on the same device, in one run.

Forward-only is what extraction cannot beat: the same images in the same batches, moved to the device, normalized
and center-cropped, through ``model(x)`` under inference mode. Extraction adds every cut layer's output, the spatial
reduction, the copy back to the host and the compressed zarr writes (overlapped with the next forward pass).

    python benchmarks/extract_throughput.py [--dataset fashion-mnist] [--width 1.0] [--device auto]

Prints a table and writes JSON to benchmarks/results/<device>-<date>-extract.json.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch
from bench import best_of, cpu_name, print_table, save

from probe.architectures import build_model
from probe.data.datasets import load_dataset
from probe.data.splits import resolve_split
from probe.execution.batches import Normalize, center_crop, channel_stats, to_device
from probe.execution.extract import ExtractionImages, Reduction, extract_network
from probe.execution.train import resolve_device
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec


def forward_only(model, arrays, samples, normalize, input_size, device, batch_size) -> None:
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            x = to_device(np.asarray(arrays.test_x[samples[start: start + batch_size]]), device)
            model(normalize(center_crop(x, input_size)))
    if device.type == "cuda":
        torch.cuda.synchronize()


@click.command()
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Dataset whose test split is probed.")
@click.option("--arch", default="caffenet-small", show_default=True, help="Architecture.")
@click.option("--width", "widths", multiple=True, type=float, default=(0.5, 1.0), show_default=True,
              help="Width multipliers to measure (repeatable).")
@click.option("--spatial", "reductions", multiple=True, default=("mean", "sample:4"), show_default=True,
              help="Spatial reductions to measure (repeatable).")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Images per batch.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed repeats; the best is reported.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(dataset, arch, widths, reductions, batch_size, repeats, device, out) -> None:
    dev = resolve_device(device)
    data = DataSpec(dataset)
    arrays = load_dataset(data)
    tasks = resolve_split("random", arrays.classes, 0)
    mean, std = channel_stats(arrays.train_x[:10_000])
    normalize = Normalize(mean, std, dev)
    rows = []
    for width in widths:
        spec = NetworkSpec(data=data, split="random", split_seed=0, target="B",
                           arch=ArchSpec(arch, "kaiming", {"width": width}), classes_a=tasks["A"],
                           classes_b=tasks["B"], in_channels=arrays.train_x.shape[-1],
                           input_size=arrays.train_x.shape[1])
        model = build_model(spec).to(dev).eval()
        images = ExtractionImages("both")
        samples = images.indices(arrays, images.classes(spec))
        forward_only(model, arrays, samples[:batch_size], normalize, spec.input_size, dev, batch_size)  # warm-up
        t_fwd, _ = best_of(lambda: forward_only(model, arrays, samples, normalize, spec.input_size, dev, batch_size),
                        repeats)
        for spatial in reductions:
            with tempfile.TemporaryDirectory() as tmp:
                counter = iter(range(10**6))
                t_ext, _ = best_of(lambda: extract_network(Path(tmp) / f"s{next(counter)}.zarr", spec, model, arrays,
                                                        normalize, images, Reduction(spatial), dev, batch_size,
                                                        progress=False), repeats)
            rows.append({"arch": arch, "width": width, "spatial": spatial, "images": len(samples),
                         "forward_img_s": len(samples) / t_fwd, "extract_img_s": len(samples) / t_ext,
                         "ratio": t_fwd / t_ext})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    result = {"benchmark": "extract_throughput", "date": datetime.date.today().isoformat(), "device": str(dev),
              "device_name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "python": sys.version.split()[0], "dataset": dataset, "batch_size": batch_size, "repeats": repeats,
              "rows": rows}
    print_table(rows, [("arch", "arch", ""), ("width", "width", ""), ("spatial", "spatial", ""),
                       ("images", "images", "d"), ("forward img/s", "forward_img_s", ".0f"),
                       ("extract img/s", "extract_img_s", ".0f"), ("ratio", "ratio", ".2f")])
    save(result, out, f"{dev.type}-{result['date']}-extract")


if __name__ == "__main__":
    main()
