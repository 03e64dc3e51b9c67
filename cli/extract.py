"""``probe extract``: its options and its body. The options that set what is stored (the probe set, the test images'
cap, the spatial and token reductions, the seed, the dtype; and the batch and chunk sizes) default to the store's
settings, those it was first extracted with, so that a rerun or a repair writes what the store holds; a new store
gets the defaults shown (the test images the run's networks were tested on: its --test-per-class cap)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from probe.cli.options import errors_as_messages, executor_options
from probe.storage.run import Run


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The zarr store to write. Default: RUN_DIR/activations.zarr.")
@click.option("--networks", default="", help="Only these networks (ids or names, comma-separated). Default: all "
                                             "finished ones.")
@click.option("--probe-set", type=click.Choice(["target", "source", "both"]), default=None,
              help="Test images of the network's target task, of its source task, or of both tasks. Default: the "
                   "store's; target for a new store.")
@click.option("--test-per-class", type=int, default=None,
              help="Take at most this many test images of each class, the seeded subset training takes with "
                   "--test-per-class (a larger cap than the run's takes more images than its networks were tested "
                   "on). Default: the store's; the run's own cap for a new store (every test image if it has none).")
@click.option("--all-test-images", is_flag=True, default=False,
              help="Every test image of the probe set, whatever the run's --test-per-class cap (a new store only, "
                   "or one extracted so).")
@click.option("--per-class", type=int, default=None,
              help="A seeded subset of this many test images per class of those taken (see --per-class-mode; under "
                   "the run's test cap, a class has at most that many: --all-test-images takes more). Default: the "
                   "store's; every image taken for a new store.")
@click.option("--per-class-mode", type=click.Choice(["exactly", "at-most"]), default=None,
              help="--per-class: exactly that many of every class (balanced; a class with fewer is an error), or at "
                   "most that many (a class with fewer gives all of its own). Default: the store's; exactly for a "
                   "new store.")
@click.option("--spatial", default=None,
              help="Convolutional maps: mean (per channel), full (whole map) or sample:K (K random positions). "
                   "Default: the store's; mean for a new store.")
@click.option("--tokens", default=None,
              help="Token sequences (N, T, D), a vision transformer's layers: cls (the class token), mean (over the "
                   "tokens), all (every token) or sample:K (the same K seeded tokens of every image); auto: cls "
                   "where the network has a class token, else mean. Default: the store's; auto for a new store.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Seed of the subset and of the sampled positions and tokens. Default: the store's; 0 for a new "
                   "store.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Stored dtype of activations. Default: the store's; float32 for a new store.")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass. Default: the store's (the same "
                                                           "computation again); 256 for a new store.")
@click.option("--chunk-size", type=int, default=None, help="Samples per zarr chunk (and per write). Default: the "
                                                           "store's; four batches for a new store.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--quiet", is_flag=True, default=False,
              help="No progress bars: a line saying what it will process, then one line per network.")
@executor_options
@errors_as_messages
def extract(run_dir: Path, out: Path | None, networks: str, probe_set: str | None, test_per_class: int | None,
            all_test_images: bool, per_class: int | None, per_class_mode: str | None, spatial: str | None,
            tokens: str | None, seed: int | None, dtype: str | None, batch_size: int | None, chunk_size: int | None,
            device: str, cache_dir: Path | None, quiet: bool, executor: str, scheduler: str | None,
            workers: int) -> None:
    """Write every trained network's per-layer activations into one zarr store; rerun to resume. By default the
    networks are probed on the test images they were tested on (the run's --test-per-class cap)."""
    from probe.errors import ProbeError
    from probe.execution.extract import LINES, extract_run
    from probe.execution.extraction.settings import resolve_settings, run_defaults, settings_objects
    from probe.execution.train import resolve_device

    if all_test_images and test_per_class is not None:
        raise ProbeError(f"--all-test-images takes every test image and --test-per-class {test_per_class} at most "
                         f"{test_per_class} a class; give one of them")
    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    given = {"probe_set": probe_set, "test_per_class": test_per_class, "per_class": per_class,
             "per_class_mode": per_class_mode, "spatial": spatial, "tokens": tokens, "seed": seed, "dtype": dtype,
             "batch_size": batch_size, "chunk_size": chunk_size}
    asked = {k: v for k, v in given.items() if v is not None} | ({"test_per_class": None} if all_test_images else {})
    # what is not given is the store's: resolved here (reading only), so that both executors get whole settings
    *settings, batch_size, chunk_size = settings_objects(
        resolve_settings(out or Run(run_dir).store, asked, run_defaults(run_dir)))
    progress = LINES if quiet else True
    if executor == "dask":
        from probe.execution.distributed import dask_client, extract_run_dask

        if not scheduler:
            resolve_device(device)
        with dask_client(scheduler, workers) as client:
            result = extract_run_dask(client, run_dir, out, only, *settings, device, batch_size, cache_dir,
                                      progress, chunk_size)
    else:
        result = extract_run(run_dir, out, only, *settings, resolve_device(device), batch_size, cache_dir,
                             progress=progress, chunk_size=chunk_size)
    for name, problem in result["damaged"].items():
        click.echo(f"rewrote {name}: {problem}", err=True)
    for nid, why in result["failed"].items():
        click.echo(f"not extracted {nid}: {why}", err=True)
    click.echo(f"wrote {len(result['written'])}, already complete {len(result['skipped'])}, "
               f"not trained yet {len(result['untrained'])}, failed {len(result['failed'])} "
               f"-> {out or Run(run_dir).store}")
    if result["failed"]:
        sys.exit(1)
