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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from probe.analysis.accuracies import VARIANTS, accuracy_dataset, replicate_label, variant_label
from probe.analysis.similarity import UndefinedCKA, linear_cka
from probe.analysis.stores import list_networks, open_checked, open_networks, repair_command
from probe.analysis.transferability import DESCRIPTIONS, layer_scores, rank_correlation
from probe.errors import ProbeError
from probe.extract import extracted_layers
from probe.plan import read_plan


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


def _store_cka(store: str, a_id: str, b_id: str, layers_a: list[str], layers_b: list[str], task: str,
               max_samples: int, seed: int) -> np.ndarray:
    """:func:`_cka` of two networks of the store at ``store`` (checked by the client), opened here: the body of a
    dask task, so workers share storage rather than memory."""
    tree = open_networks(Path(store), [a_id, b_id])
    return _cka(tree[a_id].to_dataset(), tree[b_id].to_dataset(), layers_a, layers_b, task, max_samples, seed)


def _store_scores(store: str, network_id: str, task: str, layers: list[str], max_samples: int,
                  seed: int) -> xr.Dataset:
    tree = open_networks(Path(store), [network_id])
    return layer_scores(tree, network_id, task, layers=layers, max_samples=max_samples, seed=seed).load()


def representation_dataset(run_dir, store: str | Path | xr.DataTree, max_samples: int = 2000, seed: int = 0,
                           client=None) -> xr.Dataset:
    """All the views above for every replicate of the run that the store holds.

    ``store``: a path, whose planned networks are checked first (a ProbeError names a damaged one), or an opened
    tree. With a dask ``client`` (``store`` then a path that every worker can open), each network's comparisons and
    each base network's scores run as a task of their own. The layers are the plan's, never those the store holds."""
    if client is not None and isinstance(store, xr.DataTree):
        raise ProbeError("with a dask client, pass the store's path so that each worker can open it")
    _, plan = read_plan(run_dir)
    if isinstance(store, xr.DataTree):
        tree = store
    else:
        store, tree = open_checked(store, run_dir, [p.spec for p in plan])
    acc, _ = accuracy_dataset(run_dir)
    complete = set(list_networks(tree))
    specs = [p.spec for p in plan if p.spec.id in complete]
    bases = {(s.split, replicate_label(s), s.target): s for s in specs if s.variant == "base"}
    if not bases:
        raise ProbeError("the activation store holds no base network of this run; run 'probe extract RUN' first")
    layers = extracted_layers(next(iter(bases.values())))
    _check_layers(tree, specs, run_dir)
    splits, reps = list(acc["split"].values), list(acc["replicate"].values)
    cuts = [int(n) for n in acc["n"].values]
    shape = (len(splits), len(reps), 2)
    cka_target = np.full(shape + (len(VARIANTS), len(cuts), len(layers)), np.nan)
    cka_source = np.full_like(cka_target, np.nan)
    cka_bases = np.full(shape + (len(layers), len(layers)), np.nan)
    scores = {k: np.full(shape + (len(layers),), np.nan) for k in DESCRIPTIONS}

    # Every comparison as (where its result goes, its arguments), computed below locally or on the cluster.
    ckas, scored = [], []
    for s in specs:
        if s.variant == "base":
            continue
        where = (splits.index(s.split), reps.index(replicate_label(s)), "AB".index(s.target),
                 VARIANTS.index(variant_label(s)), cuts.index(s.cut))
        own = bases.get((s.split, replicate_label(s), s.target))
        if own is not None:
            ckas.append(((cka_target, where, None), (s.id, own.id, layers, layers, s.target)))
        donor = bases.get((s.split, replicate_label(s), s.source)) if s.source else None
        if donor is not None:
            ckas.append(((cka_source, where, None), (s.id, donor.id, layers, layers, s.target)))
    grid_a, grid_b = (list(g.ravel()) for g in np.meshgrid(layers, layers, indexing="ij"))
    for (split, rep, target), own in bases.items():
        where = (splits.index(split), reps.index(rep), "AB".index(target))
        other = bases.get((split, rep, "B" if target == "A" else "A"))
        if other is None:
            continue
        ckas.append(((cka_bases, where, (len(layers), len(layers))), (other.id, own.id, grid_a, grid_b, target)))
        if (tree[other.id]["task"].values == target).sum() >= 10:
            scored.append((where, (other.id, target, layers)))

    if client is None:
        groups = {}

        def group(network_id):
            if network_id not in groups:
                groups[network_id] = tree[network_id].to_dataset()
            return groups[network_id]

        cka_values = [_cka(group(a), group(b), la, lb, t, max_samples, seed) for _, (a, b, la, lb, t) in ckas]
        score_values = [layer_scores(tree, n, t, layers=ls, max_samples=max_samples, seed=seed)
                        for _, (n, t, ls) in scored]
    else:
        path = str(store)
        cka_values = client.gather([client.submit(_store_cka, path, *args, max_samples, seed, pure=False)
                                    for _, args in ckas])
        score_values = client.gather([client.submit(_store_scores, path, *args, max_samples, seed, pure=False)
                                      for _, args in scored])
    for ((target_array, where, reshape), _), value in zip(ckas, cka_values):
        target_array[where] = value.reshape(reshape) if reshape else value
    for (where, _), sc in zip(scored, score_values):
        for k in DESCRIPTIONS:
            scores[k][where] = sc[k].values
    dims = ("split", "replicate", "target")
    out = xr.Dataset(
        {"cka_target": (dims + ("variant", "n", "layer"), cka_target),
         "cka_source": (dims + ("variant", "n", "layer"), cka_source),
         "cka_bases": (dims + ("source_layer", "layer"), cka_bases),
         **{k: (dims + ("layer",), scores[k]) for k in DESCRIPTIONS}},
        coords={"split": acc["split"].values, "replicate": acc["replicate"].values, "target": acc["target"].values,
                "variant": acc["variant"].values, "n": cuts, "layer": np.array(layers, dtype=object),
                "source_layer": np.array(layers, dtype=object)})
    out["cka_target"].attrs["description"] = "debiased linear CKA of each cut network's layer with the same layer of " \
                                             "the base network of its target task, on target-task images"
    out["cka_source"].attrs["description"] = "debiased linear CKA of each cut network's layer with the same layer of " \
                                             "the base network it copied layers from, on target-task images"
    out["cka_bases"].attrs["description"] = "cross-layer debiased linear CKA: the other task's base (source_layer) " \
                                            "against the target task's base (layer), on target-task images"
    for k, text in DESCRIPTIONS.items():
        out[k].attrs["description"] = f"{text}, for layer k of the other task's base network scored on the target task"
    return out


def _check_layers(tree: xr.DataTree, specs: list, run_dir) -> None:
    """Refuse a tree (one opened without the store's checks) where a network lacks a layer of its spec: every view
    is indexed by the plan's layers, and another layer in its place would be reported under the wrong name."""
    for s in specs:
        lost = [name for name in extracted_layers(s) if name not in tree[s.id].data_vars]
        if lost:
            raise ProbeError(f"network {s.id} of the activation store has no layer {lost[0]}; "
                             f"{repair_command(None, run_dir, s.id)} rewrites it")


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
