"""A figure of your own from a run's outputs: along the layers, how alike baseA and baseB are (CKA) and how well
baseA's features read task B (a linear probe), beside the decomposition's drops per cut.

    python examples/plot_layers.py runs/demo --out layers.png

It reuses the other examples (run it from anywhere: Python puts this script's folder on the path), so the numbers
are those they print. Needs a store extracted with '--probe-set both' and 'probe analyze RUN' run after it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402
from cka_layers import cka_by_layer, default_pair  # noqa: E402

from probe import open_store  # noqa: E402
from probe.analysis.decomposition import quantities, summary_rows  # noqa: E402
from probe.analysis.transferability import layer_scores  # noqa: E402

DROPS = ("coadaptation", "specialization", "lingering")


def plot_layers(ax, tree, task: str = "B") -> None:
    """CKA(baseA_k, baseB_k) and baseA's linear-probe accuracy for ``task``, per layer k."""
    base_a, base_b = default_pair(tree)
    cka = cka_by_layer(tree, base_a, base_b, task)
    probe = layer_scores(tree, base_a, task, layers=list(cka))["probe_accuracy"]
    ax.plot(list(cka), list(cka.values()), "o-", label="CKA(baseA, baseB)")
    ax.plot(list(cka), probe.values, "s--", label=f"baseA's linear probe for task {task}")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_title(f"{base_a.removesuffix('/baseA')}, task {task}'s images")
    ax.legend(fontsize="small")


def plot_drops(ax, accuracies: xr.Dataset) -> None:
    """The three drops of the paper per cut n, means over seeds with their 95% intervals, one split each."""
    meaning = {name: text.split(":")[0] for name, (_, text) in quantities(accuracies).items()}
    rows = summary_rows(accuracies)
    for split in dict.fromkeys(row["split"] for row in rows):
        for name in DROPS:
            mine = [r for r in rows if r["split"] == split and r["quantity"] == name]
            means = [r["mean"] for r in mine]
            errors = [[r["mean"] - r["low"] for r in mine], [r["high"] - r["mean"] for r in mine]]
            ax.errorbar([r["n"] for r in mine], means, yerr=errors, marker="o", capsize=3,
                        label=f"{meaning[name]} ({split})")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xticks(sorted({row["n"] for row in rows}))
    ax.set_xlabel("cut n")
    ax.set_ylabel(f"accuracy ({accuracies.attrs['metric']})")
    ax.set_title("the decomposition, over seeds")
    ax.legend(fontsize="small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run directory")
    parser.add_argument("--store", help="the activation store (default: RUN/activations.zarr)")
    parser.add_argument("--analysis", help="the analysis folder (default: RUN/analysis)")
    parser.add_argument("--out", default="layers.png", help="the figure's file (default: layers.png)")
    args = parser.parse_args()

    tree = open_store(args.store or args.run)
    accuracies = xr.open_zarr(Path(args.analysis or Path(args.run) / "analysis") / "accuracies.zarr").load()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    plot_layers(left, tree)
    plot_drops(right, accuracies)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
