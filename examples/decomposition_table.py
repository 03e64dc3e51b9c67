"""The paper's decomposition, per split and cut: co-adaptation, specialization and the lingering boost of transfer,
each a mean over seeds with its 95% interval, read from the accuracies 'probe analyze' saved.

    python examples/decomposition_table.py runs/demo
    python examples/decomposition_table.py runs/demo --analysis runs/demo/analysis-balanced --all

co-adaptation = baseB - BnB, specialization = BnB - AnB, lingering boost = AnB+ - baseB (SnB and SnB+ in place of
AnB and AnB+ for a run whose layers come from a source network). --all adds every other quantity the run has.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import xarray as xr

from probe.analysis.decomposition import quantities, summary_rows

MAIN = ("coadaptation", "specialization", "lingering")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run directory")
    parser.add_argument("--analysis", help="the analysis folder (default: RUN/analysis)")
    parser.add_argument("--all", action="store_true", help="every quantity, not only the three of the paper")
    args = parser.parse_args()

    accuracies = xr.open_zarr(Path(args.analysis or Path(args.run) / "analysis") / "accuracies.zarr").load()
    meaning = {name: text for name, (_, text) in quantities(accuracies).items()}
    rows = [row for row in summary_rows(accuracies) if args.all or row["quantity"] in MAIN]
    print(f"accuracy: {accuracies.attrs['metric']}; intervals over {rows[0]['over'] if rows else 'seeds'}")
    for name in dict.fromkeys(row["quantity"] for row in rows):
        print(f"\n{meaning[name]}")
        print(f"{'split':>20} {'n':>3} {'mean':>8} {'95% interval':>20} {'seeds':>6}")
        for row in (r for r in rows if r["quantity"] == name):
            interval = f"[{row['low']:+.4f}, {row['high']:+.4f}]"
            print(f"{row['split']:>20} {row['n']:>3} {row['mean']:>+8.4f} {interval:>20} {row['replicates']:>6}")


if __name__ == "__main__":
    main()
