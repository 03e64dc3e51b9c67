"""Minibatch CKA throughput: streaming a zarr-backed layer batch by batch against the same estimator on arrays in
memory, and full-data linear CKA, on the same random activations, in one run.

Two float32 "layers" of n samples x d units share a 64-dim signal. They are written as one store the way
``probe extract`` writes them (chunks of 256 samples) and opened lazily; then, for each d:

- ``stream``: :func:`analysis.similarity.streaming_cka`, loading ``--batch-size`` samples at a time;
- ``memory``: :func:`analysis.similarity.minibatch_cka` on the arrays in memory, the same batches;
- ``full``: :func:`analysis.similarity.linear_cka` (debiased) over all n samples at once.

Throughput is n x d^2 per second (the work of the feature-space products); peak memory is tracemalloc's peak of
Python and numpy allocations during the call, in a separate run from the timed ones (the inputs in memory are
allocated before, so they are not counted; the stream's are never all loaded).

    python benchmarks/cka_throughput.py [--samples 10000] [--features 512 --features 4096] [--batch-size 1000]

Prints a table and writes JSON to benchmarks/results/cpu-<date>-cka.json.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import scipy
import xarray as xr
import zarr
from bench import best_of, cpu_name, peak_bytes, print_table, save
from threadpoolctl import threadpool_info

from probe.analysis.similarity import linear_cka, minibatch_cka, streaming_cka

STORE_CHUNK = 256  # probe extract's default batch size, hence its chunk along samples


def layers(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 64)).astype(np.float32)
    a = z @ rng.normal(size=(64, d)).astype(np.float32) + rng.normal(scale=4.0, size=(n, d)).astype(np.float32)
    b = z @ rng.normal(size=(64, d)).astype(np.float32) + rng.normal(scale=4.0, size=(n, d)).astype(np.float32)
    return a, b


@click.command()
@click.option("--samples", type=int, default=10_000, show_default=True, help="Samples (probe images).")
@click.option("--features", "features", multiple=True, type=int, default=(512, 2048, 4096), show_default=True,
              help="Units per layer to measure (repeatable).")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Samples per minibatch.")
@click.option("--repeats", type=int, default=2, show_default=True, help="Timed repeats; the best is reported.")
@click.option("--full/--no-full", default=True, show_default=True, help="Also time full-data linear CKA.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random activations.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON path. Default: benchmarks/results/.")
def main(samples, features, batch_size, repeats, full, seed, out) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in features:
            a, b = layers(samples, d, seed)
            store = Path(tmp) / f"d{d}.zarr"
            xr.Dataset({"a": (("sample", "a_unit"), a), "b": (("sample", "b_unit"), b)},
                       coords={"sample": np.arange(samples)}).to_zarr(
                store, consolidated=False, encoding={v: {"chunks": (STORE_CHUNK, d)} for v in "ab"})
            lazy = xr.open_zarr(store, consolidated=False)
            cases = {"stream": lambda: streaming_cka(lazy["a"], lazy["b"], batch_size),
                     "memory": lambda: minibatch_cka(a, b, batch_size)}
            if full:
                cases["full"] = lambda: linear_cka(a, b, debiased=True)
            for case, fn in cases.items():
                seconds, value = best_of(fn, repeats)
                rows.append({"case": case, "samples": samples, "features": d,
                             "batch_size": batch_size if case != "full" else samples, "seconds": seconds,
                             "throughput": samples * d * d / seconds, "peak_mib": peak_bytes(fn) / 2**20,
                             "input_mib": (a.nbytes + b.nbytes) / 2**20, "cka": value})
    blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    result = {"benchmark": "cka_throughput", "date": datetime.date.today().isoformat(), "device": "cpu",
              "device_name": cpu_name(), "blas": blas, "python": sys.version.split()[0], "numpy": np.__version__,
              "scipy": scipy.__version__, "xarray": xr.__version__, "zarr": zarr.__version__,
              "store_chunk": STORE_CHUNK, "repeats": repeats, "seed": seed,
              "throughput_unit": "samples x features^2 per second", "rows": rows}
    print_table([{**r, "g_throughput": r["throughput"] / 1e9} for r in rows],
                [("case", "case", ""), ("samples", "samples", "d"), ("units", "features", "d"),
                 ("batch", "batch_size", "d"), ("seconds", "seconds", ".2f"), ("G n*d^2/s", "g_throughput", ".1f"),
                 ("peak MiB", "peak_mib", ".1f"), ("input MiB", "input_mib", ".1f"), ("CKA", "cka", ".4f")])
    save(result, out, f"cpu-{result['date']}-cka")


if __name__ == "__main__":
    main()
