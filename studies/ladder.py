"""The co-adaptation ladder: the selffer's drop below its base (baseB - BnB, Yosinski et al. 2014's co-adaptation
drop) at rungs of growing scale.

Each rung is a run directory of a selffer-only study (``--variants BnB``: the base networks, and at each cut the
selffers BnB and AnA) on one split, at three or more seeds. A selffer at cut n is trained exactly as its base: the
same recipe (epochs, schedule, learning rate, batch size, augmentation) over the same training images (a study has
one recipe for all its networks), so the two differ only in where layers 1..n come from (copied and frozen) and, under
independent initial weights, in the draw of its re-initialized layers; rungs trained by earlier versions shared one
initialization, which ``init_sharing`` records per rung (a trend takes the independent rung of a scale where both
exist). ``collect`` writes ``docs/reproduction/ladder/``:

- ``ladder.csv``: one row per rung and cut n: the rung's scale (training images per class and in all, width,
  epochs, its initial weights: ``init_sharing``, trainable parameters of the base, images seen in training), its
  base accuracy with the interval over seeds, whether the bases' validation accuracy reached a plateau, and the
  co-adaptation drop with its interval over seeds (each seed the mean of its two directions:
  :mod:`analysis.decomposition`), and where the rung's bases were tested with ``probe robustness``, their accuracy
  relative to the base with layer k = n reset to its initial and to random weights (mean over seeds);
- ``ladder_seeds.csv``: the same per seed (the mean of its two directions), the unit the trend is fitted over;
- ``trend.csv``: per axis of scale (training images at one width, width at one number of images per class) and cut
  n, the slope of the drop against log scale over the converged rungs of that axis, fitted per seed, with its
  interval over seeds; and what the two slopes predict at the paper's scale (:func:`trend_rows`);
- ``cka_profile.csv``: for a rung whose analysis holds a representations store, per cut n and layer k the CKA of
  BnB's, RnB's and AnB's layer k with baseB's (mean over seeds);
- ``ladder.json``: per rung, its study, the command that trains it, its bases' convergence and whether they
  converged (the report's convergence measure: a plateau reached), and the rungs of each axis;
- ``figures/ladder.png``: the drop against n per rung, and against the images seen per n;
- ``figures/trend.png``: the drop against each axis of scale, one line per n, beside the paper's.

A rung whose bases did not converge is shown in the tables, marked, and never enters a trend: a drop measured
against a base still improving is extra training, not co-adaptation.

    python -m probe.studies.reproduction ladder runs/ladder/cifar10-*
    python -m probe.studies.reproduction ladder --add RUN      # one more rung beside the committed ones
    python -m probe.studies.reproduction ladder --recompute   # trend and figures from the committed tables
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from probe.analysis.accuracies import accuracy_dataset
from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates, summarize, variant_means
from probe.analysis.reference import reference_runs
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
from probe.analysis.stats import detection_limit, line_fits, spread_of_interval
from probe.analysis.stats import estimate as interval
from probe.errors import ProbeError
from probe.execution.robustness import RESETS
from probe.planning.plan import read_plan
from probe.specs.variants import BASE, Variant
from probe.storage.atomic import read_json, write_atomic, write_json
from probe.storage.checkpoint import read_metrics
from probe.storage.run import Run

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLDER = "ladder"


def _trainable_parameters(spec) -> int:
    """Parameters of a base network of the rung (every layer trains), built from its spec."""
    from probe.architectures.build import build_model

    return sum(p.numel() for p in build_model(spec).parameters())


def rung(run_dir: Path, split: str = SIMILAR_SPLIT) -> tuple[dict, list[dict], list[dict]]:
    """One rung's description, its rows of ladder.csv (one per cut n) and of ladder_seeds.csv (one per seed and
    cut)."""
    run = Run(run_dir)
    study, plan = read_plan(run)
    specs = [p.spec for p in plan if p.spec.split == split]
    if not specs:
        raise ProbeError(f"{run_dir} plans no network on split {split!r}")
    # a rung's own networks: its bases and selffers (the largest rung's run holds more, trained for the stitching
    # and the CKA profile, which the report collects as a study of its own)
    plan = [p for p in plan if Variant.of(p.spec) in (BASE, Variant.named("BnB"))]
    metrics = [m for p in plan if (m := read_metrics(run.network(p.spec.id).metrics)) and m.get("status") == "done"]
    spec_dicts = {p.spec.id: p.spec.to_dict() for p in plan}
    converged = convergence(metrics, spec_dicts).get(split)
    ds, missing = accuracy_dataset(run)
    missing = [i for i in missing if i in spec_dicts]  # the stitching study's networks are not the rung's to train
    ds = ds.sel(split=[split])
    base = variant_means(ds)[(split, BASE.name, 0)]
    coadaptation = decompose(ds)["coadaptation"]
    drops = summarize(coadaptation)
    resets = _resets(run_dir, split)
    n_train = [m["n_train"] for m in metrics if spec_dicts[m["id"]]["variant"] == "base"]
    base_spec = next(s for s in specs if s.variant == "base")
    recipe = base_spec.recipe
    options = dict(study.arch.options)
    per_class = study.data.train_per_class
    classes = len(base_spec.classes_b)
    images = int(np.mean(n_train)) if n_train else None
    done = bool(converged and converged.get("plateau"))
    info = {"name": Path(run_dir).name, "run": str(run_dir), "split": split, "study": study.to_dict(),
            "train_per_class": per_class, "train_images": images, "classes": classes,
            "width": options.get("width"), "epochs": recipe.epochs, "init_sharing": recipe.init_sharing,
            "parameters": _trainable_parameters(base_spec), "images_seen": images * recipe.epochs if images else None,
            "convergence": converged, "converged": done, "networks_done": len(metrics),
            "networks_planned": len(plan), "missing": missing}
    scale = {"rung": info["name"], "train_images_per_class": images // classes if images else "",
             "train_images": images or "", "width": info["width"], "epochs": recipe.epochs,
             "init_sharing": recipe.init_sharing}
    rows = []
    for n in ds["n"].values:
        e = drops[(split, int(n))]
        rows.append({**scale, "parameters": info["parameters"], "images_seen": info["images_seen"] or "",
                     "base_mean": base.mean, "base_low": base.low, "base_high": base.high,
                     "base_seeds": base.replicates, "plateau": (converged or {}).get("plateau") or "",
                     "converged": "yes" if done else "no", "n": int(n),
                     "mean": e.mean, "low": e.low, "high": e.high, "seeds": e.replicates, "p": e.p,
                     **{f"reset_{kind}": resets.get((kind, int(n)), "") for kind in RESETS}})
    per_seed = replicates(coadaptation.sel(split=split))
    seed_base = replicates(ds["base"].sel(split=split))
    seed_rows = [{**scale, "converged": "yes" if done else "no", "seed": str(rep), "n": int(n),
                  "base": float(seed_base.sel(rep=rep)), "drop": float(per_seed.sel(rep=rep, n=n))}
                 for rep in per_seed["rep"].values for n in per_seed["n"].values]
    return info, rows, seed_rows


def _resets(run_dir: Path, split: str) -> dict[tuple[str, int], float]:
    """(reset kind, layer k) -> the bases' mean accuracy relative to their own with layer k reset, over seeds (each
    the mean of its directions); empty where the rung's bases have no robustness records."""
    rob = robustness_dataset(run_dir)
    if rob is None or split not in rob["split"].values:
        return {}
    per_seed = replicates((rob["acc"] / rob["base"]).sel(split=split))
    return {(str(kind), int(k)): float(per_seed.sel(reset=kind, layer=layer).mean())
            for kind in rob["reset"].values for k, layer in zip(rob["k"].values, rob["layer"].values)}


# The views of the CKA profile: the selffer's layers against its base's (copies up to the cut, retrained above
# it: how far retraining the top recovers the base's representation), the floor of random frozen layers, and the
# transfer network
PROFILE = {"BnB": "cka_bnb_baseb", "RnB": "cka_rnb_baseb", "AnB": "cka_anb_baseb"}


def cka_profile(run_dir: Path, split: str = SIMILAR_SPLIT) -> list[dict]:
    """Rows of cka_profile.csv for a rung whose analysis holds a representations store (``probe extract``, then
    ``probe analyze``): per cut n and layer k, the mean over seeds of CKA(V_k, baseB_k) for each variant V of
    PROFILE that the rung trained; none where the rung has no store."""
    path = Run(run_dir).analysis / "representations.zarr"
    if not path.exists():
        return []
    cka = xr.open_zarr(path)["cka_target"].sel(split=split).load()
    present = [v for v in PROFILE if v in cka["variant"].values and bool(cka.sel(variant=v).notnull().any())]
    per_seed = replicates(cka.sel(variant=present))
    mean, seeds = per_seed.mean("rep"), per_seed.notnull().sum("rep")
    return [{"rung": Path(run_dir).name, "n": int(n), "k": k + 1, "layer": str(layer),
             **{PROFILE[v]: float(mean.sel(variant=v, n=n, layer=layer)) for v in present},
             "seeds": int(seeds.sel(variant=present[0], n=n, layer=layer))}
            for n in cka["n"].values for k, layer in enumerate(cka["layer"].values)]


def collect(run_dirs: list[Path], docs: Path = DOCS, add: bool = False) -> Path:
    """Write ladder.csv, ladder_seeds.csv, ladder.json, trend.csv and the figures of the rungs ``run_dirs``
    (ordered by images seen) into ``docs/reproduction/ladder/``. With ``add``, the committed rungs are kept beside
    them as committed (a rung of the same name is replaced): a rung trained later, or elsewhere, joins a ladder whose
    other run directories are gone."""
    rungs = [rung(Path(r)) for r in run_dirs]
    if not rungs:
        raise ProbeError("no rung to collect: name the run directories of the ladder")
    dest = docs / "reproduction" / FOLDER
    profile = [row for info, _, _ in rungs for row in cka_profile(Path(info["run"]))]
    if add:
        kept, kept_profile = committed_rungs(dest, {info["name"] for info, _, _ in rungs})
        rungs += kept
        profile += kept_profile
    rungs.sort(key=_place)
    order = [info["name"] for info, _, _ in rungs]
    profile.sort(key=lambda row: order.index(row["rung"]))
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "figures").mkdir(parents=True)
    write_table(dest / "ladder.csv", [row for _, rows, _ in rungs for row in rows])
    write_table(dest / "ladder_seeds.csv", [row for _, _, seeds in rungs for row in seeds])
    write_json(dest / "ladder.json", {"rungs": [info for info, _, _ in rungs], "plateau": PLATEAU})
    if profile:
        write_table(dest / "cka_profile.csv", profile)
    derive(dest)
    return dest


def _place(r: tuple[dict, list[dict], list[dict]]) -> tuple:
    """A rung's place in the tables: by images seen, then size; rungs of one scale (both initializations of the
    full-data rung) by initial weights, the paper's design first, then name, so that collecting a rung again
    (``--add``) never moves it."""
    info = r[0]
    return (info["images_seen"] or 0, info["parameters"], info.get("init_sharing", "shared") != "independent",
            info["name"])


def committed_rungs(folder: Path, replaced: set[str]) -> tuple[list[tuple[dict, list[dict], list[dict]]], list[dict]]:
    """The rungs committed in ``folder`` other than ``replaced``, as :func:`rung` gives them (their rows as the
    tables hold them), and their rows of cka_profile.csv."""
    path = folder / "ladder.json"
    if not path.exists():
        raise ProbeError(f"{folder} holds no collected ladder to add to: collect its rungs without --add")
    infos = [info for info in read_json(path)["rungs"] if info["name"] not in replaced]
    rows, seeds = read_table(folder / "ladder.csv"), read_table(folder / "ladder_seeds.csv")
    kept = [(info, [r for r in rows if r["rung"] == info["name"]], [r for r in seeds if r["rung"] == info["name"]])
            for info in infos]
    names = {info["name"] for info in infos}
    return kept, [r for r in read_table(folder / "cka_profile.csv") if r["rung"] in names]


def derive(folder: Path) -> None:
    """The trend and the figures from the committed tables alone (``ladder --recompute``): collect ends here too,
    reading back what it wrote, so that both give the same bytes."""
    seeds = read_table(folder / "ladder_seeds.csv")
    write_table(folder / "trend.csv", trend_rows(seeds))
    figure(read_table(folder / "ladder.csv"), folder / "figures" / "ladder.png")
    trend_figure(seeds, read_table(folder / "trend.csv"), folder / "figures" / "trend.png")


# ------------------------------------------------------------------------------------------------ the trend

# The paper's scale: ILSVRC-2012's training images per class (1,281,167 over 1,000 classes; a task of a random split
# has 500 of them), at the paper's own channel widths (width 1). The data axis is fitted against images per class,
# which the ladder's rungs span (225 to 4,500): what sets the paper's tasks apart in data is their number of classes,
# 500 against 5, which no rung varies, so it is stated as untested rather than extrapolated
PAPER_CLASSES = 500
PAPER_IMAGES_PER_CLASS = 1_281_167 // 1000
PAPER_WIDTH = 1.0
# The axes of scale: the x each is fitted against (log10 training images per class, log2 width) and what the
# rungs of one axis share
AXES = {"data": ("train_images_per_class", np.log10, "log10 training images per class", "width"),
        "width": ("width", np.log2, "log2 width (a doubling of every layer's channels)", "train_images_per_class")}
# Which of two rungs of one scale a trend rests on: independent initial weights (the paper's design) over the shared
# initialization of earlier versions, then the longer schedule
SHARING_ORDER = ("shared", "independent")


def _scale(row: dict) -> tuple[int, float, int, int]:
    return (int(row["train_images_per_class"]), float(row["width"]), SHARING_ORDER.index(row["init_sharing"]),
            int(row["epochs"]))


def axes(seed_rows: list[dict]) -> dict[str, dict]:
    """The converged rungs of each axis of scale: along ``data``, the rungs at the width with the most different
    numbers of training images; along ``width``, those at the number of images per class with the most different
    widths. Where two converged rungs differ only in their initial weights or epochs, the independent one counts,
    then the longer. An axis with fewer than two rungs has none (no line to fit)."""
    scales = {r["rung"]: _scale(r) for r in seed_rows if r["converged"] == "yes"}
    out = {}
    for axis, (_, _, _, fixed) in AXES.items():
        keep = 1 if axis == "data" else 0  # the index in _scale() of the field the axis holds fixed
        moves = 1 - keep
        groups: dict = {}
        for name, scale in scales.items():
            group = groups.setdefault(scale[keep], {})
            if scale[moves] not in group or scale[2:] > scales[group[scale[moves]]][2:]:
                group[scale[moves]] = name
        best = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if best and len(best[0][1]) >= 2:
            value, group = best[0]
            out[axis] = {"fixed": fixed, "value": value, "rungs": [group[k] for k in sorted(group)]}
        else:
            out[axis] = {"fixed": fixed, "value": "", "rungs": []}
    return out


def paper_drops() -> dict[int, np.ndarray]:
    """n -> the paper's selffer drops below the base of their own split (baseB - BnB, one per network)."""
    runs = reference_runs()
    base = {(r["split"], r["target"]): r["top1"] for r in runs if r["kind"] == "base"}
    out: dict[int, list[float]] = {}
    for r in runs:
        if r["kind"] == "selffer_frozen":
            out.setdefault(r["n"], []).append(base[(r["split"], r["target"])] - r["top1"])
    return {n: np.array(v) for n, v in sorted(out.items())}


def _fits(seed_rows: list[dict], axis: str, rungs: list[str], seeds: list[str], n: int):
    """(x of the rungs, per-seed intercepts, per-seed slopes) of the drop at cut n along ``axis``."""
    field, transform = AXES[axis][:2]
    first = {r["rung"]: r for r in seed_rows}
    x = transform(np.array([float(first[name][field]) for name in rungs]))
    drop = {(r["rung"], r["seed"]): float(r["drop"]) for r in seed_rows if int(r["n"]) == n}
    y = np.array([[drop.get((name, s), np.nan) for name in rungs] for s in seeds])
    return (x, *line_fits(x, y))


def trend_rows(seed_rows: list[dict]) -> list[dict]:
    """Per axis and cut n, the slope of the co-adaptation drop against log scale over that axis's converged rungs,
    fitted per seed (the seeds' class halves are the same at every rung, so each seed's line is a paired
    comparison) with its t interval over seeds; then per n the drop the two lines predict at the paper's scale,
    again per seed: the data line at its own width carried to the paper's images, plus the width slope times the
    doublings from that width to the paper's (adding the two assumes no interaction between them)."""
    found = axes(seed_rows)
    seeds = sorted({r["seed"] for r in seed_rows})
    cuts = sorted({int(r["n"]) for r in seed_rows})
    paper = paper_drops()
    first = {r["rung"]: r for r in seed_rows}
    empty = {"mean": "", "low": "", "high": "", "seeds": 0, "p": "", "beyond": "", "paper_mean": "",
             "paper_low": "", "paper_high": ""}
    rows, fits = [], {}
    for axis, info in found.items():
        for n in cuts:
            row = {"quantity": "slope", "axis": axis, "fixed": f"{info['fixed']} {info['value']}", "n": n,
                   "rungs": " ".join(info["rungs"]), "x": AXES[axis][2], **empty}
            if info["rungs"]:
                fits[(axis, n)] = x, a, b = _fits(seed_rows, axis, info["rungs"], seeds, n)
                row |= _estimate(interval(b))
                # how far the paper lies beyond the axis's largest converged rung, in the units of its x (negative:
                # within the rungs)
                target = np.log10(PAPER_IMAGES_PER_CLASS) if axis == "data" else np.log2(PAPER_WIDTH)
                row["beyond"] = float(target - x.max())
            rows.append(row)
    for n in cuts:
        row = {"quantity": "prediction", "axis": "paper",
               "fixed": f"train_images_per_class {PAPER_IMAGES_PER_CLASS} width {PAPER_WIDTH}", "n": n,
               "rungs": " ".join(dict.fromkeys(found["data"]["rungs"] + found["width"]["rungs"])),
               "x": "both", **empty}
        if (("data", n) in fits) and (("width", n) in fits):
            _, a, b = fits[("data", n)]
            _, _, c = fits[("width", n)]
            width = float(first[found["data"]["rungs"][0]]["width"])
            predicted = a + b * np.log10(PAPER_IMAGES_PER_CLASS) + c * (np.log2(PAPER_WIDTH) - np.log2(width))
            row |= _estimate(interval(predicted))
        if n in paper:
            row |= {"paper_mean": float(paper[n].mean()), "paper_low": float(paper[n].min()),
                    "paper_high": float(paper[n].max())}
        rows.append(row)
    return rows


def _estimate(e) -> dict:
    return {"mean": e.mean, "low": e.low, "high": e.high, "seeds": e.replicates, "p": e.p}


# ------------------------------------------------------------------------------------------------ figures


def figure(rows: list[dict], path: Path) -> None:
    """Left: the co-adaptation drop against the cut n, one line per rung, with its interval over seeds; right: the
    drop at each n against the images seen in training (log scale)."""
    fig = Figure(figsize=(12, 4.5), layout="constrained")  # the right panel's y label clears the left panel
    left, right = fig.subplots(1, 2)
    names = list(dict.fromkeys(r["rung"] for r in rows))
    for i, name in enumerate(names):
        rs = [r for r in rows if r["rung"] == name]
        n = np.array([int(r["n"]) for r in rs]) + 0.06 * (i - (len(names) - 1) / 2)
        mean = np.array([float(r["mean"]) for r in rs])
        err = np.array([[float(r["mean"]) - float(r["low"]), float(r["high"]) - float(r["mean"])] for r in rs]).T
        mark = "" if rs[0]["converged"] == "yes" else ", not converged"
        left.errorbar(n, mean, yerr=np.nan_to_num(err), marker="o", capsize=3,
                      ls="-" if not mark else ":", label=f"{name} (base {float(rs[0]['base_mean']):.3f}{mark})")
    left.axhline(0, color="black", lw=1, ls=":")
    left.set_xlabel("layer n at which the selffer is cut")
    left.set_ylabel("co-adaptation drop: baseB - BnB")
    left.set_title("co-adaptation drop per rung (95% interval over seeds)", fontsize=10)
    left.legend(fontsize=7)
    cuts = sorted({int(r["n"]) for r in rows})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(cuts)))  # not the rungs' colours on the left
    for n, color in zip(cuts, colors):
        rs = sorted((r for r in rows if int(r["n"]) == n and r["images_seen"] != ""),
                    key=lambda r: float(r["images_seen"]))
        right.plot([float(r["images_seen"]) for r in rs], [float(r["mean"]) for r in rs], marker="s", color=color,
                   ls="none", label=f"n = {n}")
    right.axhline(0, color="black", lw=1, ls=":")
    right.set_xscale("log")
    right.set_xlabel("images seen in training (images x epochs)")
    right.set_ylabel("co-adaptation drop: baseB - BnB")
    right.set_title("the drop against scale, every rung", fontsize=10)
    right.legend(fontsize=7)
    _save(fig, path)


def trend_figure(seed_rows: list[dict], trend: list[dict], path: Path) -> None:
    """The drop against each axis of scale, one line per n over the converged rungs (95% interval over seeds), the
    fitted mean line carried to the paper's scale, and the paper's drops at n = 5 as a band."""
    found = axes(seed_rows)
    cuts = sorted({int(r["n"]) for r in seed_rows})
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(cuts)))
    band = paper_drops().get(5)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, axis in zip(fig.subplots(1, 2), AXES):
        field, transform, label, _ = AXES[axis]
        info = found[axis]
        first = {r["rung"]: r for r in seed_rows}
        for n, color in zip(cuts, colors):
            xs, means, errs = [], [], []
            for name in info["rungs"]:
                e = interval([float(r["drop"]) for r in seed_rows if r["rung"] == name and int(r["n"]) == n])
                xs.append(float(first[name][field]))
                means.append(e.mean)
                errs.append([e.mean - e.low, e.high - e.mean])
            if not xs:
                continue
            ax.errorbar(xs, means, yerr=np.nan_to_num(np.array(errs).T), marker="o", capsize=3, color=color,
                        label=f"n = {n}")
            slope = next((r for r in trend if r["axis"] == axis and int(r["n"]) == n and r["mean"] != ""), None)
            if slope is not None:
                x = transform(np.array(xs))
                target = transform(PAPER_IMAGES_PER_CLASS if axis == "data" else PAPER_WIDTH)
                grid = np.linspace(x.min(), max(x.max(), target), 50)
                line = np.mean(means) + float(slope["mean"]) * (grid - x.mean())
                ax.plot(10 ** grid if axis == "data" else 2 ** grid, line, color=color, ls="--", lw=1)
        if band is not None:
            ax.axhspan(band.min(), band.max(), color="tab:red", alpha=0.2,
                       label=f"paper, n = 5 (ImageNet, {len(band)} selffers)")
        ax.axhline(0, color="black", lw=1, ls=":")
        ax.set_xscale("log", base=10 if axis == "data" else 2)
        held = f"width {info['value']}" if axis == "data" else f"{info['value']} training images per class"
        ax.set_xlabel(("training images per class" if axis == "data" else "width")
                      + f", at {held}\n(dashed: the fitted line, carried to the paper's scale)")
        ax.set_ylabel("co-adaptation drop: baseB - BnB")
        ax.set_title(f"along {axis}: converged rungs only (95% interval over seeds)", fontsize=10)
        # below the paper's band, which "best" does not avoid, and right of the rungs
        ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 0.86))
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
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
        self.trend = read_table(folder / "trend.csv")
        self.profile = read_table(folder / "cka_profile.csv")

    def value(self, kind: str, *keys: str) -> str:
        """``drop:RUNG:N`` (the co-adaptation drop and its interval), ``base:RUNG``, ``rungs``, ``converged``
        (how many rungs converged), ``reset:RUNG:N:initial|random`` (the bases with layer k = n reset, relative to
        their own), ``slope:AXIS:N`` (the drop's slope along ``data`` or ``width``), ``beyond:AXIS`` (how far the
        paper's scale lies beyond the axis's largest converged rung), ``predict:N`` (the drop the trend predicts at
        the paper's scale), ``paper:N`` (the paper's own drop, mean and range over its selffers),
        ``cka:RUNG:VARIANT:N:K`` (CKA of layer k of VARIANT cut at n with baseB's, VARIANT one of BnB, RnB, AnB)."""
        try:
            if kind in ("drop", "reset"):
                name, n, *which = keys
                row = next(r for r in self.rows if r["rung"] == name and r["n"] == n)
                return _drop(row) if kind == "drop" else number(row[f"reset_{which[0]}"])
            if kind == "base":
                (name,) = keys
                return _base(next(r for r in self.rows if r["rung"] == name))
            if kind == "rungs":
                return str(len(self.info["rungs"]))
            if kind == "converged":
                return str(sum(r["converged"] for r in self.info["rungs"]))
            if kind == "slope":
                axis, n = keys
                return _drop(next(r for r in self.trend if r["axis"] == axis and r["n"] == n and r["mean"]))
            if kind == "beyond":
                (axis,) = keys
                return number(next(r for r in self.trend if r["axis"] == axis and r["beyond"])["beyond"], 2)
            if kind == "predict":
                (n,) = keys
                return _drop(next(r for r in self.trend if r["quantity"] == "prediction" and r["n"] == n
                                  and r["mean"]))
            if kind == "cka":
                name, variant, n, k = keys
                row = next(r for r in self.profile if r["rung"] == name and r["n"] == n and r["k"] == k)
                return number(row[PROFILE[variant]])
            if kind == "paper":
                (n,) = keys
                r = next(r for r in self.trend if r["quantity"] == "prediction" and r["n"] == n)
                return f"{number(r['paper_mean'])} ({number(r['paper_low'])} to {number(r['paper_high'])})"
        except (StopIteration, ValueError, KeyError, IndexError):
            pass
        raise ProbeError(f"no ladder result {':'.join((kind, *keys))!r} in {self.folder} (placeholders: "
                         "drop:RUNG:N, base:RUNG, rungs, converged, reset:RUNG:N:initial|random, slope:AXIS:N, "
                         "beyond:AXIS, predict:N, paper:N, cka:RUNG:VARIANT:N:K)")

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
            done = "" if info["networks_done"] == info["networks_planned"] else \
                f" ({info['networks_done']} of {info['networks_planned']} networks trained)"
            table.append([f"`{info['name']}`{done}", first["train_images_per_class"], info["width"], info["epochs"],
                          info.get("init_sharing", "shared"),
                          f"{info['parameters']:,}", f"{info['images_seen']:,}" if info["images_seen"] else "",
                          _base(first), plateau, "yes" if info["converged"] else "**no**",
                          *[_drop(rs[n]) if n in rs else "-" for n in cuts]])
        return [Table(["rung", "train images per class", "width", "epochs", "initial weights", "parameters",
                       "images seen", "baseB",
                       f"plateau (gain < {self.info['plateau']})", "converged", *[f"drop n={n}" for n in cuts]],
                      table),
                *self._sensitivity_blocks(rungs, cuts),
                *self._reset_blocks(rungs, cuts),
                *self._trend_blocks(cuts),
                *self._profile_blocks(),
                Paragraph("Commands (each rung resumes; the last lines collect them all, or one rung beside the "
                          "committed ones whose run directories are gone, and recompute the trend and figures from "
                          "the committed tables alone):"),
                Code([*(f"make ladder LADDER_RUNGS={r['train_per_class'] or 5000}:{r['epochs']}:{r['width']}"
                        + (" LADDER_INIT=shared" if r.get("init_sharing", "shared") == "shared" else "")
                        for r in rungs),
                      "python -m probe.studies.reproduction ladder runs/ladder/cifar10-*",
                      "python -m probe.studies.reproduction ladder --add runs/ladder/RUNG",
                      "python -m probe.studies.reproduction ladder --recompute"]),
                Image(f"reproduction/{FOLDER}/figures/ladder.png", "co-adaptation ladder"),
                Image(f"reproduction/{FOLDER}/figures/trend.png", "co-adaptation drop against scale")]

    def _sensitivity_blocks(self, rungs: list[dict], cuts: list[int]) -> list[Block]:
        """Per rung and cut, the smallest drop its seeds would detect (80% power) at the spread of its per-seed drops,
        at its own seeds and at 5: what each null could have seen."""
        table = []
        for info in rungs:
            rs = {int(r["n"]): r for r in self.rows if r["rung"] == info["name"]}
            cells = []
            for n in cuts:
                r = rs.get(n)
                k = int(float(r["seeds"])) if r and r["seeds"] else 0
                scatter = spread_of_interval(float(r["low"] or "nan"), float(r["high"] or "nan"), k) if r else math.nan
                limits = (detection_limit(scatter, k), detection_limit(scatter, 5))
                cells.append(" / ".join(number(x) for x in limits) if all(map(math.isfinite, limits)) else "-")
            table.append([f"`{info['name']}`", *cells])
        return [Paragraph("What each rung's null could have seen: the smallest drop its seeds detect (interval above "
                          "zero) four times in five at the seed-to-seed spread of its own drops, at its seeds / at 5 "
                          "seeds. No rung ran the longer-base check, so none bounds its bases' bias, and none excludes "
                          "a drop by itself (the recipe experiment's table states what its arms exclude)."),
                Table(["rung", *[f"n={n}" for n in cuts]], table)]

    def _reset_blocks(self, rungs: list[dict], cuts: list[int]) -> list[Block]:
        """The bases' accuracy with layer k = n reset, relative to their own, where the rungs have it."""
        if not any(r.get("reset_initial") for r in self.rows):
            return []
        table = []
        for info in rungs:
            rs = {int(r["n"]): r for r in self.rows if r["rung"] == info["name"]}
            if not any(rs[n]["reset_initial"] for n in rs):
                continue
            table.append([f"`{info['name']}`", *[" / ".join(number(rs[n][f"reset_{kind}"] or "nan")
                                                            for kind in RESETS) if n in rs else "-" for n in cuts]])
        return [Paragraph("The same rungs' base networks with layer k reset to its initial / to random weights, "
                          "nothing trained again (`probe robustness`), accuracy relative to the base, mean over "
                          "seeds:"),
                Table(["rung", *[f"k={n}" for n in cuts]], table)]

    def _trend_blocks(self, cuts: list[int]) -> list[Block]:
        """The slopes along each axis and the prediction at the paper's scale, or one line saying what is missing."""
        slopes = [r for r in self.trend if r["quantity"] == "slope"]
        if not any(r["mean"] for r in slopes):
            return [Paragraph("No trend: no axis of scale has two converged rungs yet.")]
        axis_rows = []
        for axis in AXES:
            rs = {int(r["n"]): r for r in slopes if r["axis"] == axis}
            first = next(iter(rs.values()), None)
            if first is None or not first["mean"]:
                axis_rows.append([axis, "fewer than two converged rungs", "", *["-" for _ in cuts]])
                continue
            axis_rows.append([axis, f"{first['fixed'].replace('_', ' ')}; x = {first['x']}",
                              " ".join(f"`{name}`" for name in first["rungs"].split()),
                              *[_drop(rs[n]) if n in rs and rs[n]["mean"] else "-" for n in cuts]])
        predicted = {int(r["n"]): r for r in self.trend if r["quantity"] == "prediction"}
        paper = [f"{number(predicted[n]['paper_mean'])} ({number(predicted[n]['paper_low'])} to "
                 f"{number(predicted[n]['paper_high'])})" if n in predicted and predicted[n]["paper_mean"] else "-"
                 for n in cuts]
        prediction = [_drop(predicted[n]) if n in predicted and predicted[n]["mean"] else "-" for n in cuts]
        return [Paragraph("The trend: per seed, a least-squares line of the drop against log scale through the "
                          "converged rungs of each axis; the slope's mean [95% interval] (seeds) over the seeds' "
                          "lines, per unit of x:"),
                Table(["axis", "held fixed; x", "rungs", *[f"slope n={n}" for n in cuts]], axis_rows),
                Paragraph(f"What the two lines predict at the paper's images per class ({PAPER_IMAGES_PER_CLASS:,}, "
                          f"within the rungs) and width ({PAPER_WIDTH:g}), per seed, beside the paper's drops (mean, "
                          f"and range over its selffers); its {PAPER_CLASSES} classes a task, against 5 here, are "
                          "untested, not extrapolated:"),
                Table(["", *[f"n={n}" for n in cuts]], [["predicted drop", *prediction],
                                                         ["the paper's drop", *paper]])]

    def _profile_blocks(self) -> list[Block]:
        """Per rung with a store, the CKA of each cut network's layer k with baseB's layer k: rows by variant and n."""
        out = []
        for name in dict.fromkeys(r["rung"] for r in self.profile):
            rs = [r for r in self.profile if r["rung"] == name]
            layers = list(dict.fromkeys(r["layer"] for r in rs))
            cell = {(r["n"], r["layer"]): r for r in rs}
            table = [[f"{variant} cut at n = {n}", *[number(cell[(n, layer)][column] or "nan") if (n, layer) in cell
                                                     else "" for layer in layers]]
                     for variant, column in PROFILE.items() if column in rs[0]
                     for n in dict.fromkeys(r["n"] for r in rs)]
            out += [Paragraph(f"The CKA profile of `{name}`: debiased linear CKA between layer k of each cut "
                              "network and layer k of baseB on B's test images, mean over seeds "
                              f"({rs[0]['seeds']}) and directions. BnB's layers up to its cut are baseB's own "
                              "(CKA 1); above it they are retrained, and RnB's layers up to its cut are random "
                              "(the floor):"),
                    Table(["network", *[f"k={i + 1} ({layer})" for i, layer in enumerate(layers)]], table)]
        return out
