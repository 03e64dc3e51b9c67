"""The paper's Figures 2 and 3, redrawn from a run, with the original ImageNet results beside them.

Figure 2 (Yosinski et al. 2014): top, every network as a dot per cut n; bottom, the means with the co-adaptation
drop (baseB - BnB) and the specialization drop (BnB - AnB) shaded. A third panel sets our means beside the paper's on
the relative scale (accuracy / base). Figure 3: the dissimilar split and the random-weights baseline, relative to
base, beside the paper's natural/man-made and random-weight runs. In a one-directional run (layers donated by a
source network trained elsewhere) SnB and SnB+ are drawn where AnB and AnB+ are, and the paper's lines keep their
names. Every panel draws the chance level (1 / the target task's classes; on the relative scale chance / base): a
network near it has learned nothing that could transfer.

Beside them, the training-loss curves of every variant at each cut with its base's (:func:`figure_training_loss`).

Files are named after the split (``figure2_random.png``), in a stem of letters, digits and ``-_.`` only: a split
file's name ``file:PATH`` would otherwise put a colon, or folders, into the file name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from probe.analysis.accuracies import chance_levels, one_directional
from probe.analysis.decomposition import SIMILAR_SPLIT, replicates, transfer_names
from probe.analysis.reference import CITATION, reference_relative
from probe.analysis.training import LAYER
from probe.specs.variants import BASE
from probe.storage.atomic import write_atomic

STYLE = {"base": ("white", "o"), "BnB": ("tab:blue", "o"), "BnB+": ("lightskyblue", "P"),
         "AnB": ("tab:red", "D"), "AnB+": ("lightsalmon", "P"), "RnB": ("tab:gray", "s"),
         "SnB": ("tab:green", "D"), "SnB+": ("yellowgreen", "P"), "dissimilar AnB": ("tab:purple", "D")}
PAPER = ("BnB", "BnB+", "AnB", "AnB+")  # the variants of the paper's reference lines


def _per_n(values: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """n values and the mean over replicates at each n (NaN where nothing finished)."""
    reps = replicates(values).transpose("n", "rep").values
    with np.errstate(all="ignore"):
        means = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in reps])
    return values["n"].values, means


def safe_stem(text: str) -> str:
    """``text`` as a file name's stem: every run of other characters than letters, digits and ``-_.`` becomes one
    ``-``, and a stem so changed ends in six hex digits of ``text``'s hash, so that two splits which differ only in
    those characters (``file:a/b.json``, ``file:a-b.json``) never write one file (``figure2_file:split.json`` ->
    ``figure2_file-split.json-1b2c3d``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``out/STEM.png`` and ``.svg``, ``stem`` made safe (:func:`safe_stem`)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(stem)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:  # a Figure of its own, not pyplot's: drawing sets no backend for the user's process
        write_atomic(p, lambda tmp, fmt=p.suffix[1:]: fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight"))
    return paths


def _chance_lines(ax: Axes, ds: xr.Dataset, split: str) -> None:
    """The chance level of ``split``'s target tasks, one line per distinct class count."""
    levels = chance_levels(ds, split)
    for chance, k, targets in levels:
        which = f", target {'/'.join(targets)}" if len(levels) > 1 else ""
        ax.axhline(chance, color="tab:gray", lw=1, ls="--", label=f"chance (1/{k}{which})")


def relative_chance(ds: xr.Dataset, split: str) -> float:
    """Where a network at chance lies on the relative scale of ``split``: chance / base, the mean over its finished
    base networks (NaN when none is finished or the classes are unknown)."""
    if "chance" not in ds:
        return np.nan
    ratio = (ds["chance"].sel(split=split) / ds["base"].sel(split=split)).values
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.mean()) if len(ratio) else np.nan


def figure2(ds: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """Figure 2 for ``split``; returns the PNG and SVG paths."""
    return _save(draw_figure2(ds, split), out, f"figure2_{split}")


def draw_figure2(ds: xr.Dataset, split: str = SIMILAR_SPLIT) -> Figure:
    """Figure 2 for ``split``: every network, the means with the drops shaded, and the relative scale beside the
    paper's; the chance level in each."""
    d = ds.sel(split=split)
    t, t_plus = transfer_names(ds)
    ours = ("BnB", "BnB+", t, t_plus)
    # the legends outside the panels, right of them: inside they covered points, lines or the y label, whatever
    # the cuts; a constrained layout makes room for them
    fig = Figure(figsize=(9.5, 11), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    top, bottom, rel = axes
    rng = np.random.default_rng(0)
    base = d["base"].values.ravel()
    base = base[np.isfinite(base)]
    top.scatter(rng.uniform(-0.1, 0.1, len(base)), base, facecolor="white", edgecolor="black", zorder=3,
                label="baseB" if one_directional(ds) else "baseA/baseB")
    for v, dx in zip(ours, (-0.24, -0.08, 0.08, 0.24)):
        reps = replicates(d["acc"].sel(variant=v)).transpose("n", "rep").values
        for n, r in zip(d["n"].values, reps):
            r = r[np.isfinite(r)]
            color, marker = STYLE[v]
            top.scatter(np.full(len(r), n + dx) + rng.uniform(-0.04, 0.04, len(r)), r, color=color, marker=marker,
                        edgecolor="black", linewidth=0.4, zorder=3, label=v if n == d["n"].values[0] else None)
    _chance_lines(top, ds, split)
    top.set_ylabel(f"{_metric(ds)} accuracy (target task)")
    top.set_title(f"{split} split: every network")
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    base_mean = float(np.mean(base)) if len(base) else np.nan
    n, bnb = _per_n(d["acc"].sel(variant="BnB"))
    _, anb = _per_n(d["acc"].sel(variant=t))
    xs = np.concatenate([[0], n])
    bottom.axhline(base_mean, color="black", lw=1, ls=":", label="baseB")
    for v in ours:
        _, m = _per_n(d["acc"].sel(variant=v))
        bottom.plot(xs, np.concatenate([[base_mean], m]), marker=STYLE[v][1], color=STYLE[v][0], label=v)
    bottom.fill_between(n, np.full(len(n), base_mean), bnb, where=bnb < base_mean, color="tab:blue", alpha=0.2,
                        label="co-adaptation drop")
    bottom.fill_between(n, bnb, anb, where=anb < bnb, color="tab:red", alpha=0.2, label="specialization drop")
    _chance_lines(bottom, ds, split)
    bottom.set_ylabel(f"mean {_metric(ds)} accuracy")
    bottom.set_title("means over replicates" + ("" if one_directional(ds) else " and both directions"))
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    ref = reference_relative()
    for v, paper in zip(ours, PAPER):
        _, m = _per_n(d["acc"].sel(variant=v) / d["base"])
        rel.plot(xs, np.concatenate([[1.0], m]), marker=STYLE[v][1], color=STYLE[v][0], label=f"{v} (ours)")
        rn = sorted(ref[paper])
        rel.plot([0, *rn], [1.0, *[ref[paper][k].mean() for k in rn]], ls="--", color=STYLE[paper][0], alpha=0.8,
                 label=f"{paper} (paper, ImageNet)")
    rel.axhline(1.0, color="black", lw=1, ls=":")
    if np.isfinite(relative_chance(ds, split)):
        rel.axhline(relative_chance(ds, split), color="tab:gray", lw=1, ls="--", label="chance / base")
    rel.set_ylabel("accuracy / base")
    rel.set_xlabel("layer n at which the network is cut")
    rel.set_title("relative to base: ours beside the paper", fontsize=10)
    rel.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    rel.text(0, -0.22, CITATION, transform=rel.transAxes, fontsize=6, va="top")
    _label_layers(rel, d)
    return fig


def _metric(ds: xr.Dataset) -> str:
    """The y axes' name of ``ds``'s accuracy (:data:`analysis.accuracies.METRICS`)."""
    return "balanced" if ds.attrs.get("metric") == "balanced" else "top-1"


def figure3(ds: xr.Dataset, out: Path) -> list[Path]:
    """Figure 3; returns the PNG and SVG paths."""
    return _save(draw_figure3(ds), out, "figure3")


def draw_figure3(ds: xr.Dataset) -> Figure:
    """Figure 3: every split's AnB (SnB) and the random-weights RnB relative to base, beside the paper's, with each
    split's chance level on that scale."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ref = reference_relative()
    colors = matplotlib.colormaps["tab10"](np.linspace(0, 1, 10))
    t, _ = transfer_names(ds)
    for i, split in enumerate(ds["split"].values):
        d = ds.sel(split=split)
        n, m = _per_n(d["acc"].sel(variant=t) / d["base"])
        ax.plot([0, *n], [1.0, *m], marker="D", color=colors[i % 10], label=f"{t}, {split} split (ours)")
        _, r = _per_n(d["acc"].sel(variant="RnB") / d["base"])
        if np.isfinite(r).any():
            ax.plot([0, *n], [1.0, *r], marker="s", ls="-.", color=colors[i % 10], alpha=0.7,
                    label=f"RnB, {split} split (ours)")
        if np.isfinite(relative_chance(ds, split)):
            ax.axhline(relative_chance(ds, split), color=colors[i % 10], lw=1, ls="--",
                       label=f"chance / base, {split} split")
    for label, paper in (("AnB", "AnB, random halves (paper)"), ("dissimilar AnB", "AnB, natural/man-made (paper)"),
                         ("RnB", "random weights (paper)")):
        rn = sorted(ref[label])
        ax.plot([0, *rn], [1.0, *[ref[label][k].mean() for k in rn]], ls="--", color=STYLE[label][0], label=paper)
    ax.axhline(1.0, color="black", lw=1, ls=":")
    ax.set_xlabel("layer n at which the network is cut")
    ax.set_ylabel("accuracy / base")
    ax.set_title(("source transfer" if one_directional(ds) else "dissimilar tasks") + " and random frozen layers, "
                 "relative to base")
    ax.legend(fontsize=7, loc="lower left")
    ax.text(0, -0.18, CITATION, transform=ax.transAxes, fontsize=6, va="top")
    return fig


def _label_layers(ax: Axes, d: xr.Dataset) -> None:
    if "layer" in d.coords:
        ticks = [0, *d["n"].values.tolist()]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["base", *[f"{n}\n{name}" for n, name in zip(d["n"].values, d["layer"].values)]],
                           fontsize=8)


def figure_cka(rep: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """Left: per layer k, the CKA views of the networks cut at n = k, means over replicates; right: the cross-layer
    CKA of the two base networks (not in a one-directional run, which has only baseB)."""
    d = rep.sel(split=split)
    one_way = one_directional(rep)
    # constrained: the heat map's y label clears its tick labels, which long layer names widen
    fig = Figure(figsize=(6, 4.5) if one_way else (12, 4.5), layout="constrained")
    axes = fig.subplots(1, 1 if one_way else 2, squeeze=False)[0]
    left = axes[0]
    if one_way:  # the source network is in no store: SnB is compared with baseB only
        views = (("CKA(SnB_k, baseB_k)", diagonal(d["cka_target"].sel(variant="SnB")), "tab:green"),
                 ("CKA(BnB+_k, baseB_k)", diagonal(d["cka_source"].sel(variant="BnB+")), "lightskyblue"))
    else:
        views = (("CKA(AnB_k, baseB_k)", diagonal(d["cka_target"].sel(variant="AnB")), "tab:red"),
                 ("CKA(AnB+_k, baseA_k)", diagonal(d["cka_source"].sel(variant="AnB+")), "lightsalmon"),
                 ("CKA(BnB+_k, baseB_k)", diagonal(d["cka_source"].sel(variant="BnB+")), "lightskyblue"))
    for label, values, color in views:
        n, m = _per_n(values)
        left.plot(n, m, marker="o", color=color, label=label)
    if "RnB" in d["variant"].values:  # the floor: what a layer fed by random frozen layers 1..k shares with baseB_k
        n, m = _per_n(diagonal(d["cka_target"].sel(variant="RnB")))
        if np.isfinite(m).any():
            left.plot(n, m, ls="--", color="tab:gray", marker="s", label="floor: CKA(RnB_k, baseB_k)")
    layer_names = list(d["layer"].values)
    for k in _constant_cuts(d):  # a layer that does not vary has no CKA: marked, not silently left out
        left.axvspan(k - 0.3, k + 0.3, color="0.9", zorder=0)
        left.text(k, 0.5, "undefined:\nconstant\nfeatures", ha="center", va="center", fontsize=7, color="0.35")
    left.set_xticks(d["n"].values, [f"{n}\n{layer_names[int(n) - 1]}" for n in d["n"].values], fontsize=8)
    left.set_xlabel("layer k (network cut at n = k)")
    left.set_ylabel("debiased linear CKA")
    left.set_ylim(-0.05, 1.05)
    left.legend(fontsize=8)
    left.set_title(f"{split} split: copied layers against the base networks", fontsize=10)
    if not one_way:
        _cross_layer_cka(fig, axes[1], d)
    return _save(fig, out, f"figure_cka_{split}")


def _constant_cuts(d: xr.Dataset) -> list[int]:
    """The cuts n whose layer was found constant over the images (representations' ``constant`` flag)."""
    if "constant" not in d:
        return []
    layers = list(d["layer"].values)
    flags = d["constant"].max([dim for dim in d["constant"].dims if dim != "layer"], skipna=True)
    return [int(n) for n in d["n"].values if float(flags.sel(layer=layers[int(n) - 1])) > 0]


def _cross_layer_cka(fig: Figure, ax: Axes, d: xr.Dataset) -> None:
    bases = d["cka_bases"]  # xarray's NaN-skipping mean leaves an all-NaN cell NaN (blank) without a warning
    heat = bases.mean([dim for dim in bases.dims if dim not in ("source_layer", "layer")]).transpose(
        "source_layer", "layer").values
    if not np.isfinite(heat).any():  # a store of target-task images only: say so rather than draw a blank square
        ax.axis("off")
        ax.text(0.5, 0.5, "cross-layer CKA of baseA and baseB needs a store\nextracted with --probe-set both",
                ha="center", va="center", fontsize=9, transform=ax.transAxes)
        return
    im = ax.imshow(heat, vmin=0, vmax=1, cmap="viridis", origin="lower")
    for i, j in zip(*np.nonzero(~np.isfinite(heat))):  # a blank cell says why: a layer without variation
        ax.text(j, i, "undef.", ha="center", va="center", fontsize=6, color="0.4")
    ax.set_xticks(range(d.sizes["layer"]), d["layer"].values, rotation=45, fontsize=8)
    ax.set_yticks(range(d.sizes["source_layer"]), d["source_layer"].values, fontsize=8)
    ax.set_xlabel("layer of the target task's base")
    ax.set_ylabel("layer of the other task's base")
    ax.set_title("cross-layer CKA, baseA vs baseB", fontsize=10)
    fig.colorbar(im, ax=ax)


def diagonal(values: xr.DataArray) -> xr.DataArray:
    """Layer k of the network cut at n = k: (..., n, layer) -> (..., n)."""
    names = list(values["layer"].values)
    return xr.concat([values.sel(n=n, layer=names[int(n) - 1], drop=True) for n in values["n"].values], dim="n",
                     coords="minimal", compat="override").assign_coords(n=values["n"].values)


def figure_directions(ds: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """The co-adaptation and specialization drops of each direction on its own (A->B and B->A), means over seeds:
    an asymmetric split (one task harder, or its features more general) draws two different pairs of curves."""
    from probe.analysis.decomposition import DIRECTIONS, decompose

    d = decompose(ds.sel(split=[split]))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for target, ls in zip(ds["target"].values, ("-", "--")):
        for quantity, color in (("coadaptation", "tab:blue"), ("specialization", "tab:red")):
            n, m = _per_n(d[quantity].sel(split=split, target=[target]))  # one direction: its mean over seeds
            ax.plot(n, m, ls=ls, marker="o", color=color, label=f"{quantity} {DIRECTIONS[str(target)]}")
    ax.axhline(0, color="black", lw=1, ls=":")
    ax.set_xlabel("layer n at which the network is cut")
    ax.set_ylabel(f"accuracy drop ({_metric(ds)})")
    ax.set_title(f"{split} split: each direction on its own, means over seeds", fontsize=10)
    ax.legend(fontsize=8)
    _label_layers(ax, ds.sel(split=split))
    return _save(fig, out, f"figure_directions_{split}")


def figure_robustness(rob: xr.Dataset, ds: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """Per layer k: the base network's accuracy with layer k reset to its initial and to random weights, relative to
    the base (Zhang, Bengio & Singer 2022), beside the selffer BnB cut at n = k relative to its base."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    relative = (rob["acc"] / rob["base"]).sel(split=split)
    for kind, color in (("initial", "tab:orange"), ("random", "tab:brown")):
        per_seed = replicates(relative.sel(reset=kind))
        with np.errstate(all="ignore"):
            m = np.nanmean(per_seed.transpose("layer", "rep").values, axis=1)
        ax.plot(rob["k"].values, m, marker="o", color=color, label=f"layer k reset to {kind} weights")
    if "BnB" in ds["variant"].values and split in ds["split"].values:
        n, m = _per_n((ds["acc"].sel(variant="BnB") / ds["base"]).sel(split=split))
        ax.plot(n, m, marker="o", color=STYLE["BnB"][0], ls="--", label="BnB cut at n = k (trained)")
    ax.axhline(1.0, color="black", lw=1, ls=":")
    ax.set_xticks(rob["k"].values, [f"{k}\n{name}" for k, name in zip(rob["k"].values, rob["layer"].values)],
                  fontsize=8)
    ax.set_xlabel("layer k")
    ax.set_ylabel("accuracy / base")
    ax.set_ylim(-0.05, 1.25)
    ax.set_title(f"{split} split: critical and robust layers of the base networks", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out, f"figure_robustness_{split}")


def figure_training_loss(curves: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """The training loss per epoch of every variant, one panel per cut n, with the base networks' curve in every
    panel (one panel of it alone for a run of bases only); means over seeds and directions. ``curves``:
    :func:`analysis.training.curve_dataset`'s."""
    d = curves.sel(split=split)
    layers = [str(v) for v in d["layer"].values] if "layer" in d.coords else [""] * d.sizes["n"]
    panels = list(zip(d["n"].values.tolist(), layers)) or [(None, "")]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    epochs = d["epoch"].values
    base = _per_epoch(d["base_train_loss"])
    for ax, (n, layer) in zip(axes, panels):
        ax.plot(epochs, base, color="black", ls=":", lw=1.5, label=BASE.name)
        if n is None:
            ax.set_title("base networks", fontsize=9)
            continue
        for v in d["variant"].values:
            m = _per_epoch(d["train_loss"].sel(n=n, variant=v))
            if np.isfinite(m).any():
                color, marker = STYLE.get(str(v), (None, "o"))
                ax.plot(epochs, m, color=color, marker=marker, ms=3, lw=1, label=str(v))
        ax.set_title(f"n = {n}" + (f" ({layer})" if layer else ""), fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax in axes[::cols]:
        ax.set_ylabel("training loss")
    for ax in axes[max(0, len(panels) - cols):len(panels)]:  # the lowest panel of each column
        ax.set_xlabel("epoch")
        ax.xaxis.set_tick_params(labelbottom=True)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # shared by every panel: epochs are whole
    _shared_legend(fig, axes)
    fig.suptitle(f"{split} split: training loss (mean cross-entropy over each epoch's batches), means over seeds "
                 "and directions", fontsize=10)
    return _save(fig, out, f"training_loss_{split}")


def figure_boundary(curves: xr.Dataset, out: Path, split: str = SIMILAR_SPLIT) -> list[Path]:
    """What crosses each cut during training, one column per cut n: above, the scale (RMS) of layer n's output,
    which the first re-initialized layer receives; below, the fraction of layer n+1's units never positive on the
    fixed batch (dead); every variant beside its base at the same layers (dotted); epoch 0 is before the first step;
    means over seeds and directions. ``curves``: :func:`analysis.training.boundary_curve_dataset`'s."""
    d = curves.sel(split=split)
    layers = [str(v) for v in d[LAYER].values]
    cuts = [int(n) for n in d["n"].values if int(n) <= len(layers)]
    fig = Figure(figsize=(2.8 * max(1, len(cuts)), 5.0), layout="constrained")
    axes = fig.subplots(2, max(1, len(cuts)), sharex=True, squeeze=False)
    epochs = d["epoch"].values
    for col, n in enumerate(cuts):
        panels = ((axes[0, col], "scale", layers[n - 1], f"scale of {layers[n - 1]}'s output"),
                  (axes[1, col], "dead", layers[n] if n < len(layers) else None, "dead units of layer n+1"))
        for ax, key, layer, label in panels:
            if layer is None:  # layer n+1 is the classifier, which is no cut point and has no record
                ax.axis("off")
                continue
            ax.plot(epochs, _per_epoch(d[f"base_{key}"].sel({LAYER: layer})), color="black", ls=":", lw=1.5,
                    label=BASE.name)
            for v in d["variant"].values:
                m = _per_epoch(d[key].sel({"n": n, "variant": v, LAYER: layer}))
                if np.isfinite(m).any():
                    color, marker = STYLE.get(str(v), (None, "o"))
                    ax.plot(epochs, m, color=color, marker=marker, ms=3, lw=1, label=str(v))
            ax.set_title(f"n = {n}: {layer}", fontsize=9)
            if col == 0:
                ax.set_ylabel(label if key == "dead" else "scale (RMS) of layer n's output", fontsize=8)
        axes[1, col].set_xlabel("epoch")
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    _shared_legend(fig, axes.ravel())
    fig.suptitle(f"{split} split: what the layer above each cut receives (epoch 0: before training), means over "
                 "seeds and directions", fontsize=10)
    return _save(fig, out, f"boundary_{split}")


def _shared_legend(fig: Figure, axes) -> None:
    """One legend below the panels, every label drawn in some panel once."""
    legend = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncol=len(legend), fontsize=8)


def _per_epoch(values: xr.DataArray) -> np.ndarray:
    """The mean per epoch over seeds and directions (NaN where no network trained that long)."""
    per = replicates(values).transpose("epoch", "rep").values
    with np.errstate(all="ignore"):
        return np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in per])
