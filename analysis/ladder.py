"""The co-adaptation ladder: the selffer's drop below its base (baseB - BnB, Yosinski et al. 2014's co-adaptation
drop) at rungs of growing scale.

Each rung is a run directory of a selffer-only study (``--variants BnB``: the base networks, and at each cut the
selffers BnB and AnA) on one split, at three or more seeds. A selffer at cut n is trained exactly as its base: the
same recipe (epochs, schedule, learning rate, batch size, augmentation) over the same training images, from the
same init seed for its re-initialized layers (a study has one recipe for all its networks), so the two differ only
in where layers 1..n come from (copied and frozen). ``collect`` writes ``docs/reproduction/ladder/``:

- ``ladder.csv``: one row per rung and cut n: the rung's scale (training images per class and in all, width,
  epochs, trainable parameters of the base, images seen in training), its base accuracy with the interval over
  seeds, whether the bases' validation accuracy reached a plateau, and the co-adaptation drop with its interval over
  seeds (each seed the mean of its two directions: :mod:`analysis.decomposition`), and where the rung's bases were
  tested with ``probe robustness``, their accuracy relative to the base with layer k = n reset to its initial and to
  random weights (mean over seeds);
- ``ladder.json``: per rung, its study, the command that trains it, and its bases' convergence;
- ``figures/ladder.png``: the drop against n per rung, and against the images seen per n.

    python -m probe.analysis.reproduction ladder runs/ladder/cifar10-*
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from probe.analysis.accuracies import accuracy_dataset
from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates, summarize, variant_means
from probe.analysis.render import (
    Block,
    Code,
    Image,
    Paragraph,
    Table,
    estimate,
    markdown,
    number,
    read_table,
    write_table,
)
from probe.analysis.robustness import robustness_dataset
from probe.analysis.sanity import PLATEAU, convergence
from probe.atomic import read_json, write_atomic, write_json
from probe.checkpoint import read_metrics
from probe.errors import ProbeError
from probe.plan import read_plan
from probe.robustness import RESETS
from probe.run import Run
from probe.variants import BASE

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLDER = "ladder"


def _trainable_parameters(spec) -> int:
    """Parameters of a base network of the rung (every layer trains), built from its spec."""
    from probe.architectures.build import build_model

    return sum(p.numel() for p in build_model(spec).parameters())


def rung(run_dir: Path, split: str = SIMILAR_SPLIT) -> tuple[dict, list[dict]]:
    """One rung's description and its rows of ladder.csv (one per cut n)."""
    run = Run(run_dir)
    study, plan = read_plan(run)
    specs = [p.spec for p in plan if p.spec.split == split]
    if not specs:
        raise ProbeError(f"{run_dir} plans no network on split {split!r}")
    metrics = [m for p in plan if (m := read_metrics(run.network(p.spec.id).metrics)) and m.get("status") == "done"]
    spec_dicts = {p.spec.id: p.spec.to_dict() for p in plan}
    converged = convergence(metrics, spec_dicts).get(split)
    ds, missing = accuracy_dataset(run)
    ds = ds.sel(split=[split])
    base = variant_means(ds)[(split, BASE.name, 0)]
    drops = summarize(decompose(ds)["coadaptation"])
    resets = _resets(run_dir, split)
    n_train = [m["n_train"] for m in metrics if spec_dicts[m["id"]]["variant"] == "base"]
    base_spec = next(s for s in specs if s.variant == "base")
    recipe = base_spec.recipe
    options = dict(study.arch.options)
    per_class = study.data.train_per_class
    classes = len(base_spec.classes_b)
    images = int(np.mean(n_train)) if n_train else None
    info = {"name": Path(run_dir).name, "run": str(run_dir), "split": split, "study": study.to_dict(),
            "train_per_class": per_class, "train_images": images, "classes": classes,
            "width": options.get("width"), "epochs": recipe.epochs,
            "parameters": _trainable_parameters(base_spec), "images_seen": images * recipe.epochs if images else None,
            "convergence": converged, "networks_done": len(metrics), "networks_planned": len(plan),
            "missing": missing}
    rows = []
    for n in ds["n"].values:
        e = drops[(split, int(n))]
        rows.append({"rung": info["name"], "train_images_per_class": images // classes if images else "",
                     "train_images": images or "", "width": info["width"], "epochs": recipe.epochs,
                     "parameters": info["parameters"], "images_seen": info["images_seen"] or "",
                     "base_mean": base.mean, "base_low": base.low, "base_high": base.high,
                     "base_seeds": base.replicates,
                     "plateau": (converged or {}).get("plateau") or "", "n": int(n),
                     "mean": e.mean, "low": e.low, "high": e.high, "seeds": e.replicates, "p": e.p,
                     **{f"reset_{kind}": resets.get((kind, int(n)), "") for kind in RESETS}})
    return info, rows


def _resets(run_dir: Path, split: str) -> dict[tuple[str, int], float]:
    """(reset kind, layer k) -> the bases' mean accuracy relative to their own with layer k reset, over seeds (each
    the mean of its directions); empty where the rung's bases have no robustness records."""
    rob = robustness_dataset(run_dir)
    if rob is None or split not in rob["split"].values:
        return {}
    per_seed = replicates((rob["acc"] / rob["base"]).sel(split=split))
    return {(str(kind), int(k)): float(per_seed.sel(reset=kind, layer=layer).mean())
            for kind in rob["reset"].values for k, layer in zip(rob["k"].values, rob["layer"].values)}


def collect(run_dirs: list[Path], docs: Path = DOCS) -> Path:
    """Write ladder.csv, ladder.json and the figure of the rungs ``run_dirs`` (ordered by images seen) into
    ``docs/reproduction/ladder/``."""
    rungs = [rung(Path(r)) for r in run_dirs]
    if not rungs:
        raise ProbeError("no rung to collect: name the run directories of the ladder")
    rungs.sort(key=lambda r: (r[0]["images_seen"] or 0, r[0]["parameters"]))
    dest = docs / "reproduction" / FOLDER
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "figures").mkdir(parents=True)
    rows = [row for _, rs in rungs for row in rs]
    write_table(dest / "ladder.csv", rows)
    infos = [info for info, _ in rungs]
    write_json(dest / "ladder.json", {"rungs": infos, "plateau": PLATEAU})
    figure(rows, dest / "figures" / "ladder.png")
    return dest


def figure(rows: list[dict], path: Path) -> None:
    """Left: the co-adaptation drop against the cut n, one line per rung, with its interval over seeds; right: the
    drop at each n against the images seen in training (log scale)."""
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    names = list(dict.fromkeys(r["rung"] for r in rows))
    for i, name in enumerate(names):
        rs = [r for r in rows if r["rung"] == name]
        n = np.array([r["n"] for r in rs]) + 0.06 * (i - (len(names) - 1) / 2)
        mean = np.array([float(r["mean"]) for r in rs])
        err = np.array([[float(r["mean"]) - float(r["low"]), float(r["high"]) - float(r["mean"])] for r in rs]).T
        left.errorbar(n, mean, yerr=np.nan_to_num(err), marker="o", capsize=3,
                      label=f"{name} (base {float(rs[0]['base_mean']):.3f})")
    left.axhline(0, color="black", lw=1, ls=":")
    left.set_xlabel("layer n at which the selffer is cut")
    left.set_ylabel("co-adaptation drop: baseB - BnB")
    left.set_title("co-adaptation drop per rung (95% interval over seeds)", fontsize=10)
    left.legend(fontsize=7)
    cuts = sorted({r["n"] for r in rows})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(cuts)))  # not the rungs' colours on the left
    for n, color in zip(cuts, colors):
        rs = [r for r in rows if r["n"] == n and r["images_seen"] != ""]
        right.plot([float(r["images_seen"]) for r in rs], [float(r["mean"]) for r in rs], marker="s", color=color,
                   label=f"n = {n}")
    right.axhline(0, color="black", lw=1, ls=":")
    right.set_xscale("log")
    right.set_xlabel("images seen in training (images x epochs)")
    right.set_ylabel("co-adaptation drop: baseB - BnB")
    right.set_title("the drop against scale", fontsize=10)
    right.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def _drop(row: dict) -> str:
    """A ladder.csv row's co-adaptation drop, as the report prints an estimate."""
    return estimate({**row, "replicates": row["seeds"]})


def _base(row: dict) -> str:
    """A ladder.csv row's base accuracy, as the report prints an estimate."""
    return estimate({"mean": row["base_mean"], "low": row["base_low"], "high": row["base_high"],
                     "replicates": row["base_seeds"]})


class Ladder:
    """The committed ladder tables, as the reproduction report renders them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.info = read_json(folder / "ladder.json")
        self.rows = read_table(folder / "ladder.csv")

    def value(self, kind: str, *keys: str) -> str:
        """``drop:RUNG:N`` (the co-adaptation drop and its interval), ``base:RUNG``, ``rungs``,
        ``reset:RUNG:N:initial|random`` (the bases with layer k = n reset, relative to their own)."""
        try:
            if kind == "drop":
                name, n = keys
                row = next(r for r in self.rows if r["rung"] == name and r["n"] == n)
                return _drop(row)
            if kind == "base":
                (name,) = keys
                row = next(r for r in self.rows if r["rung"] == name)
                return _base(row)
            if kind == "rungs":
                return str(len(self.info["rungs"]))
            if kind == "reset":
                name, n, which = keys
                row = next(r for r in self.rows if r["rung"] == name and r["n"] == n)
                return number(row[f"reset_{which}"])
        except (StopIteration, ValueError, KeyError):
            pass
        raise ProbeError(f"no ladder result {':'.join((kind, *keys))!r} in {self.folder} (placeholders: "
                         "drop:RUNG:N, base:RUNG, rungs, reset:RUNG:N:initial|random)")

    def section(self) -> str:
        return markdown(self.blocks())

    def blocks(self) -> list[Block]:
        rungs = self.info["rungs"]
        cuts = sorted({int(r["n"]) for r in self.rows})
        table = []
        for info in rungs:
            rs = {int(r["n"]): r for r in self.rows if r["rung"] == info["name"]}
            first = next(iter(rs.values()))
            c = info.get("convergence") or {}
            plateau = f"from epoch {c['plateau']}" if c.get("plateau") else "not reached"
            table.append([f"`{info['name']}`", first["train_images_per_class"], info["width"], info["epochs"],
                          f"{info['parameters']:,}", f"{info['images_seen']:,}" if info["images_seen"] else "",
                          _base(first), plateau, *[_drop(rs[n]) if n in rs else "-" for n in cuts]])
        return [Table(["rung", "train images per class", "width", "epochs", "parameters", "images seen", "baseB",
                       f"plateau (gain < {self.info['plateau']})", *[f"drop n={n}" for n in cuts]], table),
                *self._reset_blocks(rungs, cuts),
                Paragraph("Commands (each rung resumes; the last line collects them and renders this report):"),
                Code([*(f"make ladder LADDER_RUNGS={r['train_per_class'] or 5000}:{r['epochs']} "
                        f"LADDER_WIDTH={r['width']}" for r in rungs),
                      "python -m probe.analysis.reproduction ladder runs/ladder/cifar10-*"]),
                Image(f"reproduction/{FOLDER}/figures/ladder.png", "co-adaptation ladder")]


    def _reset_blocks(self, rungs: list[dict], cuts: list[int]) -> list[Block]:
        """The bases' accuracy with layer k = n reset, relative to their own, where the rungs have it."""
        if not any(r.get("reset_initial") for r in self.rows):
            return []
        table = []
        for info in rungs:
            rs = {int(r["n"]): r for r in self.rows if r["rung"] == info["name"]}
            table.append([f"`{info['name']}`", *[" / ".join(number(rs[n][f"reset_{kind}"] or "nan")
                                                            for kind in RESETS) if n in rs else "-" for n in cuts]])
        return [Paragraph("The same rungs' base networks with layer k reset to its initial / to random weights, "
                          "nothing trained again (`probe robustness`), accuracy relative to the base, mean over "
                          "seeds:"),
                Table(["rung", *[f"k={n}" for n in cuts]], table)]
