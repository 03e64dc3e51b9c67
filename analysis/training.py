"""How every network trained, beside its accuracy: how well it fit its training set, and what the layer above its cut
received.

The paper reads the co-adaptation drop (baseB - BnB) as fragile co-adaptation of neighbouring layers that gradient
descent cannot find again once layers 1..n are frozen: an optimization difficulty. If it is one, the selffer BnB should
end training at a higher training loss than its base (it cannot fit its training set as well); if BnB fits as well
and still tests worse, the drop is one of generalization. :func:`fit_rows` tells which, at every cut with a drop.
Its layer n+1 starts afresh on inputs that layers 1..n hand it; :func:`boundary_rows` shows where those inputs (their
scale, and the units that never fire) differ from what the base's layer n+1 received.

Everything here is a pure function of the networks' metrics dicts and of arrays: :func:`loss_dataset`,
:func:`curve_dataset` and :func:`boundary_dataset` arrange what the networks' metrics.json hold
(:class:`analysis.accuracies.RunMetrics`) on the accuracy Dataset's dims (:mod:`analysis.accuracies`), NaN where a
network is unfinished or its metrics.json predates a record (``train_eval_loss`` and the boundary records are newer
than ``train_loss``). Networks of variants the decomposition does not know (the convergence check's longer bases) are
left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import xarray as xr

from probe.analysis.accuracies import RunMetrics, replicate_label
from probe.analysis.decomposition import replicates, summarize
from probe.analysis.stats import Estimate, estimate
from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec
from probe.specs.variants import BASE, CUT_VARIANTS, SOURCE_VARIANTS, STITCH_VARIANTS, Variant

# The variants arranged here: the base networks and those the accuracy Dataset has cut at n
KNOWN = (BASE, *CUT_VARIANTS, *SOURCE_VARIANTS, *STITCH_VARIANTS)
BASE_DIMS = ("split", "replicate", "target")
CUT_DIMS = (*BASE_DIMS, "n", "variant")
LAYER = "boundary_layer"  # the boundary records' dim, a cut point's layer (the accuracy Dataset's ``layer`` is n's)

# A layer's output RMS outside [1 / SCALE_RATIO, SCALE_RATIO] times its base's: the weight gradients of the layer above
# scale with its inputs, so inputs 25% larger or smaller train it at an effective learning rate about that far from
# the one the recipe was chosen for on the base (1.25 = 1 / 0.8: growth and shrinkage count alike, on a log scale)
SCALE_RATIO = 1.25
# Dead fractions further apart than this: more than a twentieth of a layer's units pass nothing on in one network and
# not in the other, capacity the layer above cannot use (at width 1/8, one of caffenet-small's 12 conv1 channels)
DEAD_GAP = 0.05

UNDERFIT, FITS, UNDECIDED = "underfit", "not underfit", "undecided"


def _number(value) -> float:
    """A metrics.json number, NaN where it is absent (older files) or not a number."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def final_train_loss(m: dict) -> float:
    """The last epoch's ``train_loss``: the mean cross-entropy over its training batches (training mode,
    augmented)."""
    epochs = m.get("epochs") or [{}]
    return _number(epochs[-1].get("train_loss"))


def train_eval_loss(m: dict) -> float:
    """The loss on the whole training set after training, in eval mode on center crops (NaN: an older file)."""
    return _number(m.get("train_eval_loss"))


def loss_curve(m: dict) -> np.ndarray:
    """Every epoch's ``train_loss``, in order."""
    return np.array([_number(e.get("train_loss")) for e in m.get("epochs") or []], dtype=np.float64)


# name -> (what a network's metrics.json gives, what it means)
LOSSES: dict[str, tuple[Callable[[dict], float], str]] = {
    "train_loss": (final_train_loss, "final training loss: the mean cross-entropy over the last epoch's training "
                                     "batches (training mode, augmented)"),
    "train_eval_loss": (train_eval_loss, "training loss after training: the mean cross-entropy over the whole "
                                         "training set in eval mode, on center crops, without augmentation")}


def known_variant(spec: NetworkSpec) -> Variant | None:
    """The variant of ``spec`` when it is one of :data:`KNOWN`, else None (never an error)."""
    try:
        variant = Variant.of(spec)
    except ProbeError:
        return None
    return variant if variant in KNOWN else None


def arrange(specs: list[NetworkSpec], values: dict[str, np.ndarray | float], like: xr.Dataset,
            trailing: tuple[int, ...] = (), labels: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (network id -> a number, or an array of shape ``trailing``) on the dims of ``like``'s ``base`` and
    ``acc`` (the accuracy Dataset), each with ``trailing`` appended; NaN where a network has no value, and networks
    whose cell ``like`` lacks (a variant it does not hold, one not in :data:`KNOWN`) left out. A value shorter than
    ``trailing`` (a curve of fewer epochs) is padded with NaN. ``labels``: the split names ``like`` shows in place of
    its splits (:func:`analysis.accuracies.label_splits`)."""
    index = {dim: {str(v): i for i, v in enumerate(like[dim].values)} for dim in CUT_DIMS}
    base = np.full((*like["base"].shape, *trailing), np.nan)
    acc = np.full((*like["acc"].shape, *trailing), np.nan)
    for s in specs:
        variant = known_variant(s)
        if s.id not in values or variant is None:
            continue
        split = (labels or {}).get(s.split, s.split)
        cell = [index["split"].get(split), index["replicate"].get(replicate_label(s)), index["target"].get(s.target)]
        if variant != BASE:
            cell += [index["n"].get(str(s.cut)), index["variant"].get(s.variant_label)]
        if None in cell:
            continue
        value = np.asarray(values[s.id], dtype=np.float64)
        (base if variant == BASE else acc)[(*cell, *(slice(0, k) for k in value.shape))] = value
    return base, acc


def _finished(run: RunMetrics) -> dict[str, dict]:
    """The metrics of the finished networks of :data:`KNOWN` variants."""
    return {s.id: run.metrics[s.id] for s in run.specs
            if run.metrics.get(s.id, {}).get("status") == "done" and known_variant(s) is not None}


def predating(run: RunMetrics, recorded: Callable[[dict], bool]) -> tuple[int, int]:
    """How many finished networks lack a record (``recorded`` is false for their metrics.json), of how many."""
    done = _finished(run).values()
    return sum(not recorded(m) for m in done), len(done)


def has_boundary_record(m: dict) -> bool:
    """Whether a network's metrics.json holds the last epoch's boundary records."""
    return bool((m.get("epochs") or [{}])[-1].get("boundary"))


def _coords(like: xr.Dataset) -> dict:
    """The coords of ``like`` on the dims arranged here (its ``layer`` of each n among them)."""
    return {k: v for k, v in like.coords.items() if set(v.dims) <= set(CUT_DIMS)}


def loss_dataset(run: RunMetrics, like: xr.Dataset) -> xr.Dataset:
    """Per finished network, each of :data:`LOSSES`: ``base_NAME`` on the dims of ``like``'s ``base`` (baseA/baseB),
    ``NAME`` on those of its ``acc`` (the cut networks)."""
    done = _finished(run)
    data = {}
    for name, (read, text) in LOSSES.items():
        base, acc = arrange(run.specs, {i: read(m) for i, m in done.items()}, like, labels=run.split_labels)
        data[f"base_{name}"] = xr.Variable(BASE_DIMS, base, {"description": f"{text}, of baseA/baseB"})
        data[name] = xr.Variable(CUT_DIMS, acc, {"description": f"{text}, of the network cut at n"})
    return xr.Dataset(data, coords=_coords(like))


def loss_columns(rows: list[dict], losses: xr.Dataset) -> list[dict]:
    """accuracies.csv's rows (:func:`analysis.accuracies.rows`) with one column per loss of :data:`LOSSES`; NaN in
    the rows of variants ``losses`` does not hold (the convergence check's longer bases)."""
    out = []
    for r in rows:
        cell = {k: r[k] for k in BASE_DIMS}
        values = dict.fromkeys(LOSSES, math.nan)  # a variant losses does not hold
        if r["variant"] == BASE.name:
            values = {k: float(losses[f"base_{k}"].sel(cell)) for k in LOSSES}
        elif r["variant"] in losses["variant"].values:
            values = {k: float(losses[k].sel(**cell, n=r["n"], variant=r["variant"])) for k in LOSSES}
        out.append({**r, **values})
    return out


def has_losses(losses: xr.Dataset, name: str = "train_loss") -> bool:
    """Whether any finished network recorded the loss ``name``."""
    return bool(np.isfinite(losses[name]).any() or np.isfinite(losses[f"base_{name}"]).any())


def curve_dataset(run: RunMetrics, like: xr.Dataset) -> xr.Dataset:
    """Every finished network's training loss per epoch: ``base_train_loss`` and ``train_loss`` as in
    :func:`loss_dataset`, with an ``epoch`` dim (1, 2, ...; NaN past a network's last epoch)."""
    curves = {i: loss_curve(m) for i, m in _finished(run).items()}
    epochs = max((len(c) for c in curves.values()), default=0)
    base, acc = arrange(run.specs, curves, like, (epochs,), labels=run.split_labels)
    return xr.Dataset({"base_train_loss": ((*BASE_DIMS, "epoch"), base), "train_loss": ((*CUT_DIMS, "epoch"), acc)},
                      coords={**_coords(like), "epoch": np.arange(1, epochs + 1)})


def final_boundary(m: dict, layers: tuple[str, ...]) -> np.ndarray:
    """The last epoch's boundary records at ``layers``: shape (2, layers), ``scale`` then ``dead``; NaN where the
    file has none."""
    record = ((m.get("epochs") or [{}])[-1].get("boundary")) or {}
    return np.array([[_number((record.get(layer) or {}).get(key)) for layer in layers] for key in ("scale", "dead")])


def boundary_dataset(run: RunMetrics, like: xr.Dataset) -> xr.Dataset:
    """The last epoch's ``scale`` (RMS of a layer's output) and ``dead`` (fraction of its units never positive) at
    every cut point (layers 1..L-1): ``base_scale``, ``base_dead`` and ``scale``, ``dead`` on the dims of ``like``'s
    ``base`` and ``acc``, with a :data:`LAYER` dim."""
    layers = tuple(run.layers[:-1]) if run.layers else ()
    records = {i: final_boundary(m, layers) for i, m in _finished(run).items()}
    base, acc = arrange(run.specs, records, like, (2, len(layers)), labels=run.split_labels)
    data = {}
    for k, key in enumerate(("scale", "dead")):
        data[f"base_{key}"] = ((*BASE_DIMS, LAYER), base[..., k, :])
        data[key] = ((*CUT_DIMS, LAYER), acc[..., k, :])
    return xr.Dataset(data, coords={**_coords(like), LAYER: np.array(layers, dtype=object)})


def boundary_curves(m: dict, layers: tuple[str, ...]) -> np.ndarray:
    """Every epoch's boundary records at ``layers``, from before the first step (epoch 0, ``boundary_initial``) to
    the last: shape (2, layers, epochs + 1), ``scale`` then ``dead``; NaN where the file has none."""
    records = [m.get("boundary_initial") or {}] + [e.get("boundary") or {} for e in m.get("epochs") or []]
    return np.array([[[_number((r.get(layer) or {}).get(key)) for r in records] for layer in layers]
                     for key in ("scale", "dead")])


def boundary_curve_dataset(run: RunMetrics, like: xr.Dataset) -> xr.Dataset:
    """:func:`boundary_dataset` at every epoch: ``base_scale``, ``base_dead``, ``scale`` and ``dead`` with an
    ``epoch`` dim (0: before training; NaN past a network's last epoch)."""
    layers = tuple(run.layers[:-1]) if run.layers else ()
    curves = {i: boundary_curves(m, layers) for i, m in _finished(run).items()}
    epochs = max((c.shape[-1] for c in curves.values()), default=0)
    base, acc = arrange(run.specs, curves, like, (2, len(layers), epochs), labels=run.split_labels)
    data = {}
    for k, key in enumerate(("scale", "dead")):
        data[f"base_{key}"] = ((*BASE_DIMS, LAYER, "epoch"), base[..., k, :, :])
        data[key] = ((*CUT_DIMS, LAYER, "epoch"), acc[..., k, :, :])
    return xr.Dataset(data, coords={**_coords(like), LAYER: np.array(layers, dtype=object),
                                    "epoch": np.arange(epochs)})


def has_boundary(b: xr.Dataset) -> bool:
    """Whether any finished network recorded the boundary at its last epoch (:func:`boundary_dataset`'s ``b``)."""
    return bool(np.isfinite(b["scale"]).any() or np.isfinite(b["base_scale"]).any())


# --------------------------------------------------------------------------------------------------- the summaries


def _mean(values: xr.DataArray, pooled: bool) -> float:
    """The mean over seeds (each the mean of its directions; ``pooled``: over seeds and directions), NaN for none."""
    per = replicates(values, pooled).values
    per = per[np.isfinite(per)]
    return float(per.mean()) if len(per) else math.nan


def loss_means(losses: xr.Dataset, name: str = "train_loss", pooled: bool = False) -> dict[tuple, Estimate]:
    """(split, variant, n) -> the mean loss ``name`` over seeds with its interval; the bases under (split, "base",
    0)."""
    out = {}
    for v in losses["variant"].values:
        for (split, n), e in summarize(losses[name].sel(variant=v, drop=True), pooled).items():
            out[(split, str(v), n)] = e
    for split in losses["split"].values:
        base = replicates(losses[f"base_{name}"].sel(split=split), pooled).values
        out[(str(split), BASE.name, 0)] = estimate(base)
    return out


def _verdict(e: Estimate) -> str:
    """Whether the selffer's training loss is above its base's: the whole interval above 0 (``underfit``), none of it
    (``not underfit``: equal, or below), or spanning 0, or no interval at all (one seed), ``undecided``."""
    if not e.has_interval:
        return UNDECIDED
    if e.low > 0:
        return UNDERFIT
    return FITS if e.high <= 0 else UNDECIDED


def fit_rows(losses: xr.Dataset, drops: dict[tuple[str, int], Estimate], pooled: bool = False) -> list[dict]:
    """Per split and cut n whose mean co-adaptation drop (``drops``: (split, n) -> baseB - BnB over seeds) is
    positive: BnB's final training loss minus its base's, paired per seed and direction and then averaged as the
    decomposition averages (:func:`analysis.decomposition.replicates`), with its interval over seeds; the same for
    the eval-mode loss after training; and the verdict (``underfit``, ``not underfit``, ``undecided``)."""
    diff = {name: summarize(losses[name].sel(variant="BnB", drop=True) - losses[f"base_{name}"], pooled)
            for name in LOSSES}
    layers = dict(zip(losses["n"].values.tolist(), map(str, losses["layer"].values))) if "layer" in losses.coords \
        else {}
    out = []
    for (split, n), drop in drops.items():
        if not drop.mean > 0 or (split, n) not in diff["train_loss"]:
            continue
        e = diff["train_loss"][(split, n)]
        out.append({"split": split, "n": n, "layer": layers.get(n, ""), "drop": drop, "train_loss": e,
                    "train_eval_loss": diff["train_eval_loss"][(split, n)], "verdict": _verdict(e)})
    return out


def fit_sentence(row: dict) -> str:
    """One sentence on one row of :func:`fit_rows`."""
    at = f"At n = {row['n']}" + (f" ({row['layer']})" if row["layer"] else "")
    e, drop = row["train_loss"], row["drop"]
    head = (f"{at} BnB loses {drop} accuracy to its base (baseB - BnB), and its final training loss minus its "
            f"base's is {e}")
    if row["train_eval_loss"].replicates:
        head += f" ({row['train_eval_loss']} in eval mode on the whole training set after training)"
    if row["verdict"] == UNDERFIT:
        return (f"{head}: **{UNDERFIT}**, the selffer cannot fit its training set as well as its base, so the "
                "co-adaptation drop here is an optimization difficulty.")
    if row["verdict"] == FITS:
        return (f"{head}: **{FITS}**, it fits its training set at least as well as its base but generalizes "
                "worse.")
    reason = "one seed gives no interval" if e.replicates < 2 else "the interval spans 0"
    return f"{head}: **{UNDECIDED}** whether it underfits ({reason})."


def boundary_rows(b: xr.Dataset, pooled: bool = False) -> list[dict]:
    """Per split, cut n and variant: the last epoch's ``scale`` at layer n and ``dead`` at layer n and at layer n+1
    (when n+1 is a cut point), each beside its base's at the same layer, and the ratio of the scales; means over
    seeds (each the mean of its directions; ``pooled``: over seeds and directions) of the networks that have the
    record, their bases paired with them; and whether they ``differ`` (:data:`SCALE_RATIO`, :data:`DEAD_GAP`).
    Cells without a record are left out."""
    layers = [str(v) for v in b[LAYER].values]
    out = []
    for split in b["split"].values:
        base = b.sel(split=split)
        for n in b["n"].values:
            n = int(n)
            if n > len(layers):
                continue
            here, above = layers[n - 1], layers[n] if n < len(layers) else None
            for v in b["variant"].values:
                cell = {"split": split, "n": n, "variant": v}
                scale = b["scale"].sel(cell)
                has = scale.sel({LAYER: here}).notnull()
                if not has.any():
                    continue
                row = {"split": str(split), "n": n, "variant": str(v), "layer": here,
                       "scale": _mean(scale.sel({LAYER: here}), pooled),
                       # the bases of the seeds and directions that have the cut network: paired with it
                       "base_scale": _mean(base["base_scale"].sel({LAYER: here}).where(has), pooled),
                       "dead": _mean(b["dead"].sel(cell).sel({LAYER: here}), pooled),
                       "base_dead": _mean(base["base_dead"].sel({LAYER: here}).where(has), pooled),
                       "next_layer": above or "",
                       "dead_next": math.nan, "base_dead_next": math.nan}
                if above:
                    row["dead_next"] = _mean(b["dead"].sel(cell).sel({LAYER: above}), pooled)
                    row["base_dead_next"] = _mean(base["base_dead"].sel({LAYER: above}).where(has), pooled)
                with np.errstate(divide="ignore", invalid="ignore"):  # a base whose layer n passes nothing on
                    row["ratio"] = float(np.float64(row["scale"]) / np.float64(row["base_scale"]))
                row["differs"] = differs(row)
                out.append(row)
    return out


def differs(row: dict) -> bool:
    """Whether a row of :func:`boundary_rows` differs from its base: scale ratio outside [1 / SCALE_RATIO,
    SCALE_RATIO], or a dead fraction further than DEAD_GAP from the base's (NaN compares as no difference)."""
    if not np.isnan(row["ratio"]) and not 1 / SCALE_RATIO <= row["ratio"] <= SCALE_RATIO:  # inf: a silent base
        return True
    return any(abs(row[a] - row[f"base_{a}"]) > DEAD_GAP for a in ("dead", "dead_next")
               if np.isfinite(row[a]) and np.isfinite(row[f"base_{a}"]))
