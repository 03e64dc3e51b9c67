"""What happens inside each layer when a network is cut, transferred and fine-tuned, from a run's activation store.

Per replicate and target task T (source O, the other task), on T's test images:

- ``cka_target``: debiased linear CKA between layer k of every cut network (BnB, BnB+, AnB, AnB+, RnB at each n) and
  layer k of baseT — e.g. CKA(AnB_k, baseB_k);
- ``cka_source``: the same against the base network the layers were copied from (baseT for BnB/BnB+, baseO for
  AnB/AnB+) — e.g. CKA(AnB+_k, baseA_k), how far fine-tuning moved each copied layer; this needs the source base's
  activations on T's images, so a store extracted with ``--probe-set both``;
- ``cka_bases``: the cross-layer CKA of baseO against baseT (the heatmap);
- per layer of baseO scored for T: a linear probe's accuracy and the transferability estimators LogME, H-score, LEEP
  and NCE (:func:`analysis.transferability.layer_scores`), set beside the measured AnB accuracy at n = k, with their
  Spearman rank correlation over n.

CKA is the debiased estimator (Nguyen, Raghu & Kornblith 2021) on at most ``max_samples`` seeded images, in memory
and exact; :func:`analysis.similarity.streaming_cka` serves stores too large for that.

A one-directional run (layers donated by a source network trained elsewhere) has ``cka_target`` and, for BnB and
BnB+, ``cka_source``; the source network is in no store, and there is no baseA to compare or score, so the other
views stay NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from probe.analysis.accuracies import accuracy_dataset, replicate_label
from probe.analysis.similarity import UndefinedCKA, linear_cka
from probe.analysis.stores import list_networks, open_checked, open_networks, repair_command
from probe.analysis.transferability import DESCRIPTIONS, layer_scores, rank_correlation
from probe.errors import ProbeError
from probe.execution.executor import DaskExecutor, LocalExecutor
from probe.planning.plan import PlannedNetwork, read_plan
from probe.specs.spec import NetworkSpec
from probe.specs.variants import other_task


def layer_matrix(da: xr.DataArray) -> np.ndarray:
    """``(rows, features)`` of one layer: sampled positions (``<layer>_position``) become rows, every other
    non-sample dim is flattened into features."""
    pos = [d for d in da.dims if d.endswith("_position")]
    if pos:
        da = da.transpose("sample", pos[0], ...)
        return np.asarray(da.values).reshape(da.sizes["sample"] * da.sizes[pos[0]], -1)
    return np.asarray(da.values).reshape(da.sizes["sample"], -1)


def _common_samples(a: xr.Dataset, b: xr.Dataset, task: str, max_samples: int, seed: int) -> np.ndarray:
    """Test-set indices both groups hold for ``task``, at most ``max_samples`` of them (seeded), sorted."""
    def of_task(ds):
        return ds["sample"].values[ds["task"].values == task]

    common = np.intersect1d(of_task(a), of_task(b))
    if len(common) > max_samples:
        common = np.sort(np.random.default_rng(seed).choice(common, max_samples, replace=False))
    return common


def _cka(a: xr.Dataset, b: xr.Dataset, layers_a: list[str], layers_b: list[str], task: str, max_samples: int,
         seed: int) -> np.ndarray:
    """CKA of every pair (layers_a[i], layers_b[i]) on the shared images of ``task`` (NaN when under 4 shared)."""
    samples = _common_samples(a, b, task, max_samples, seed)
    if len(samples) < 4:
        return np.full(len(layers_a), np.nan)
    a, b = a.sel(sample=samples), b.sel(sample=samples)
    return np.array([_defined_cka(layer_matrix(a[la]), layer_matrix(b[lb])) for la, lb in zip(layers_a, layers_b)])


def _defined_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA, or NaN where a layer does not vary over the images: CKA is undefined there, and one such layer
    must not stop the analysis. A layer is constant when a frozen random layer below silenced it (zeros, or ReLU of
    its biases above that), or nearly so when a unit or two fire on one image, so that its debiased HSIC with itself
    is not positive."""
    try:
        return linear_cka(x, y, debiased=True)
    except UndefinedCKA:
        return np.nan


def _groups(source: xr.DataTree | str, network_ids: list[str]) -> xr.DataTree:
    """The groups ``network_ids``: of the tree itself in this process, or opened from the store's path (checked by
    the caller) on a dask worker, which shares storage rather than memory."""
    return source if isinstance(source, xr.DataTree) else open_networks(Path(source), network_ids)


def _pair_cka(source: xr.DataTree | str, a_id: str, b_id: str, layers_a: list[str], layers_b: list[str], task: str,
              max_samples: int, seed: int) -> np.ndarray:
    """:func:`_cka` of two networks of the store: the body of a comparison's task."""
    tree = _groups(source, [a_id, b_id])
    return _cka(tree[a_id].to_dataset(), tree[b_id].to_dataset(), layers_a, layers_b, task, max_samples, seed)


def _base_scores(source: xr.DataTree | str, network_id: str, task: str, layers: list[str], max_samples: int,
                 seed: int) -> xr.Dataset:
    """:func:`layer_scores` of a base network scored for ``task``: the body of its task."""
    tree = _groups(source, [network_id])
    return layer_scores(tree, network_id, task, layers=layers, max_samples=max_samples, seed=seed).load()


def representation_dataset(run_dir, store: str | Path | xr.DataTree, max_samples: int = 2000, seed: int = 0,
                           client=None) -> xr.Dataset:
    """All the views above for every replicate of the run that the store holds.

    ``store``: a path, whose planned networks are checked first (a ProbeError names a damaged one), or an opened
    tree. With a dask ``client`` (``store`` then a path that every worker can open), each network's comparisons and
    each base network's scores run as a task of their own. The layers are the plan's, never those the store holds."""
    executor = LocalExecutor() if client is None else DaskExecutor(client)
    if not executor.in_process and isinstance(store, xr.DataTree):
        raise ProbeError("with a dask client, pass the store's path so that each worker can open it")
    _, plan = read_plan(run_dir)
    if isinstance(store, xr.DataTree):
        tree = store
    else:
        store, tree = open_checked(store, run_dir, plan)
    complete = set(list_networks(tree))
    present = [p for p in plan if p.spec.id in complete]
    bases = {(p.spec.split, replicate_label(p.spec), p.spec.target): p for p in present if p.spec.variant == "base"}
    if not bases:
        raise ProbeError("the activation store holds no base network of this run; run 'probe extract RUN' first")
    layers = list(next(iter(bases.values())).cut_points)
    _check_layers(tree, present, run_dir)
    acc, _ = accuracy_dataset(run_dir)
    views = _empty_views(acc, layers)
    ckas, scored = _comparisons(tree, acc, [p.spec for p in present], {k: p.spec for k, p in bases.items()}, layers)
    source = tree if executor.in_process else str(store)
    cka_values = executor.gather([executor.submit(_pair_cka, source, *args, max_samples, seed, key=f"cka-{args[0]}")
                                  for _, args in ckas])
    score_values = executor.gather([executor.submit(_base_scores, source, *args, max_samples, seed,
                                                    key=f"scores-{args[0]}") for _, args in scored])
    for ((view, where, shape), _), value in zip(ckas, cka_values):
        views[view][where] = value.reshape(shape) if shape else value
    for (where, _), sc in zip(scored, score_values):
        for k in DESCRIPTIONS:
            views[k][where] = sc[k].values
        if "constant" in sc:
            views["constant"][where] = sc["constant"].values
    return _views_dataset(acc, layers, views)


def _empty_views(acc: xr.Dataset, layers: list[str]) -> dict[str, np.ndarray]:
    """Every view, NaN until computed, over the accuracy Dataset's splits, replicates, targets, variants and cuts."""
    shape = (acc.sizes["split"], acc.sizes["replicate"], acc.sizes["target"])
    per_cut = shape + (acc.sizes["variant"], acc.sizes["n"], len(layers))
    return {"cka_target": np.full(per_cut, np.nan), "cka_source": np.full(per_cut, np.nan),
            "cka_bases": np.full(shape + (len(layers), len(layers)), np.nan),
            **{k: np.full(shape + (len(layers),), np.nan) for k in DESCRIPTIONS},
            "constant": np.full(shape + (len(layers),), np.nan)}


def _comparisons(tree: xr.DataTree, acc: xr.Dataset, specs: list[NetworkSpec], bases: dict[tuple, NetworkSpec],
                 layers: list[str]) -> tuple[list, list]:
    """Every comparison as ((view, index in it, shape of the result there), arguments of :func:`_pair_cka`), and
    every base network to score as (index, arguments of :func:`_base_scores`)."""
    splits, reps = list(acc["split"].values), list(acc["replicate"].values)
    targets, variants = list(acc["target"].values), list(acc["variant"].values)
    cuts = [int(n) for n in acc["n"].values]
    ckas, scored = [], []
    for s in specs:
        if s.variant == "base":
            continue
        where = (splits.index(s.split), reps.index(replicate_label(s)), targets.index(s.target),
                 variants.index(s.variant_label), cuts.index(s.cut))
        own = bases.get((s.split, replicate_label(s), s.target))
        if own is not None:
            ckas.append((("cka_target", where, None), (s.id, own.id, layers, layers, s.target)))
        donor = bases.get((s.split, replicate_label(s), s.source)) if s.source else None
        if donor is not None:
            ckas.append((("cka_source", where, None), (s.id, donor.id, layers, layers, s.target)))
    grid_a, grid_b = (list(g.ravel()) for g in np.meshgrid(layers, layers, indexing="ij"))
    for (split, rep, target), own in bases.items():
        where = (splits.index(split), reps.index(rep), targets.index(target))
        other = bases.get((split, rep, other_task(target)))
        if other is None:
            continue
        ckas.append((("cka_bases", where, (len(layers), len(layers))), (other.id, own.id, grid_a, grid_b, target)))
        if (tree[other.id]["task"].values == target).sum() >= 10:
            scored.append((where, (other.id, target, layers)))
    return ckas, scored


def _views_dataset(acc: xr.Dataset, layers: list[str], views: dict[str, np.ndarray]) -> xr.Dataset:
    dims = ("split", "replicate", "target")
    out = xr.Dataset(
        {"cka_target": (dims + ("variant", "n", "layer"), views["cka_target"]),
         "cka_source": (dims + ("variant", "n", "layer"), views["cka_source"]),
         "cka_bases": (dims + ("source_layer", "layer"), views["cka_bases"]),
         **{k: (dims + ("layer",), views[k]) for k in DESCRIPTIONS},
         "constant": (dims + ("layer",), views["constant"])},
        coords={"split": acc["split"].values, "replicate": acc["replicate"].values, "target": acc["target"].values,
                "variant": acc["variant"].values, "n": [int(n) for n in acc["n"].values],
                "layer": np.array(layers, dtype=object), "source_layer": np.array(layers, dtype=object)})
    out["cka_target"].attrs["description"] = "debiased linear CKA of each cut network's layer with the same layer of " \
                                             "the base network of its target task, on target-task images"
    out["cka_source"].attrs["description"] = "debiased linear CKA of each cut network's layer with the same layer of " \
                                             "the base network it copied layers from, on target-task images"
    out["cka_bases"].attrs["description"] = "cross-layer debiased linear CKA: the other task's base (source_layer) " \
                                            "against the target task's base (layer), on target-task images"
    for k, text in DESCRIPTIONS.items():
        out[k].attrs["description"] = f"{text}, for layer k of the other task's base network scored on the target task"
    out["constant"].attrs["description"] = ("1 where layer k of the other task's base network is the same for every "
                                            "target image (its scores are undefined there), 0 where it varies, NaN "
                                            "where it was not scored")
    return out


def _check_layers(tree: xr.DataTree, planned: list[PlannedNetwork], run_dir) -> None:
    """Refuse a tree (one opened without the store's checks) where a network lacks a layer of its plan: every view
    is indexed by the plan's layers, and another layer in its place would be reported under the wrong name."""
    for p in planned:
        lost = [name for name in p.cut_points if name not in tree[p.spec.id].data_vars]
        if lost:
            raise ProbeError(f"network {p.spec.id} of the activation store has no layer {lost[0]}; "
                             f"{repair_command(None, run_dir, p.spec.id)} rewrites it")


def score_correlations(rep: xr.Dataset, acc: xr.Dataset) -> dict[str, tuple[float, float, int]]:
    """Spearman rank correlation over (replicate, target, n) between each per-layer score of the source base and
    the measured AnB accuracy at n = that layer: score name -> (rho, p, pairs)."""
    anb = acc["acc"].sel(variant="AnB")
    layer_names = list(acc["layer"].values) if "layer" in acc.coords else []
    out = {}
    for k in DESCRIPTIONS:
        xs, ys = [], []
        for n, name in zip(acc["n"].values, layer_names):
            if name in list(rep["layer"].values):
                xs.append(rep[k].sel(layer=name).values.ravel())
                ys.append(anb.sel(n=n).values.ravel())
        if xs:
            c = rank_correlation(np.concatenate(xs), np.concatenate(ys))
            out[k] = (c.rho, c.p, c.count)
    return out
