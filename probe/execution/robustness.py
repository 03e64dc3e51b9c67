"""Layer re-initialization robustness of the base networks (Zhang, Bengio & Singer, "Are all layers created equal?",
JMLR 2022): a direct probe of how much each layer's trained weights matter, beside the selffer's co-adaptation drop.

For every finished base network and every layer k, the test accuracy after resetting layer k alone, with every other
layer trained and nothing trained again: to its **initial** weights (those it started from, rebuilt from its spec's
init seed: re-initialization in Zhang et al.'s sense), and to **random** weights of the same scheme from another seed
(re-randomization). A layer whose reset costs little is *robust*: training moved it little, or the layers around it
do not depend on what it learned; one whose reset collapses the network is *critical*. Forward passes only.

``probe robustness RUN`` writes ``networks/<id>/robustness.json`` per base network (atomically; a rerun skips those
written for the current weights) and ``probe analyze`` reads them (:mod:`analysis.robustness`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from probe.architectures.build import build_model
from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError
from probe.execution.sweep import read_run_data, task_tensors
from probe.execution.train import TaskTensors, evaluate_classes
from probe.planning.plan import read_plan
from probe.specs.spec import SEED_LIMIT, NetworkSpec
from probe.storage.atomic import read_json_file, write_json
from probe.storage.checkpoint import load_state, load_weights, weights_fingerprint
from probe.storage.run import Run
from probe.storage.state import network_state

RESETS = ("initial", "random")


def fresh_seed(spec: NetworkSpec) -> int:
    """The init seed of the random weights a layer is reset to: derived from the network's own init seed, never
    equal to it."""
    seed = int(np.random.SeedSequence([spec.init_seed, 0x5EED]).generate_state(1)[0]) % SEED_LIMIT
    return seed if seed != spec.init_seed else (seed + 1) % SEED_LIMIT


def layer_resets(trained: LayeredNet, sources: dict[str, LayeredNet], data: TaskTensors,
                 input_size: int) -> dict[str, list[dict]]:
    """Per reset kind (``sources``: kind -> a network of the same architecture whose layer k is copied in), per layer
    k, the test accuracy of ``trained`` with layer k reset to that network's, the other layers as trained."""
    out: dict[str, list[dict]] = {kind: [] for kind in sources}
    for k in range(1, len(trained.layer_names) + 1):
        layer = trained.layer(k)
        kept = {name: t.clone() for name, t in layer.state_dict().items()}
        for kind, source in sources.items():
            layer.load_state_dict(source.layer(k).state_dict())
            e = evaluate_classes(trained, data.test_x, data.test_y, data.normalize, input_size)
            out[kind].append({"top1": e.top1, "balanced": e.balanced})
        layer.load_state_dict(kept)
    return out


def network_robustness(spec: NetworkSpec, weights: Path, data: TaskTensors, device: torch.device) -> dict:
    """The robustness record of one trained network (``weights``): its own accuracy and every layer's resets."""
    trained = build_model(spec)
    load_state(trained, load_weights(weights, spec)[0], weights)
    trained = trained.to(device, memory_format=torch.channels_last)
    sources = {"initial": build_model(spec),  # the weights it started from: build_model seeds from the spec
               "random": build_model(dataclasses.replace(spec, init_seed=fresh_seed(spec)))}
    sources = {k: m.to(device, memory_format=torch.channels_last) for k, m in sources.items()}
    own = evaluate_classes(trained, data.test_x, data.test_y, data.normalize, spec.input_size)
    resets = layer_resets(trained, sources, data, spec.input_size)
    return {"id": spec.id, "layers": list(trained.layer_names), "test_acc": own.top1,
            "test_balanced_acc": own.balanced, "random_init_seed": fresh_seed(spec),
            "weights_fingerprint": weights_fingerprint(weights), **resets}


def read_robustness(path: Path) -> dict | None:
    """A network's robustness.json, None where it has none; a damaged one is a one-line ProbeError naming it."""
    if not path.exists():
        return None
    d = read_json_file(path, "delete it and rerun 'probe robustness RUN', which writes it again")
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("layers", *RESETS)):
        raise ProbeError(f"{path} does not hold a network's layer resets; delete it and rerun 'probe robustness RUN'")
    return d


def robustness_run(run_dir: Path, device: torch.device, cache_dir: Path | None = None,
                   progress: bool = True) -> dict[str, list[str]]:
    """Write the robustness record of every finished base network of ``run_dir`` that has none for its current
    weights; returns the ids ``written``, ``skipped`` (current already) and ``untrained``."""
    run = Run(run_dir)
    _, plan = read_plan(run)
    stats = read_run_data(run) if run.data.exists() else None
    result: dict[str, list[str]] = {"written": [], "skipped": [], "untrained": []}
    bases = [p.spec for p in plan if p.spec.variant == "base"]
    for spec in tqdm(bases, desc="robustness", unit="net", disable=not progress, dynamic_ncols=True):
        files = run.network(spec.id)
        if network_state(run, spec)[0] != "done" or stats is None:
            result["untrained"].append(spec.id)
            continue
        path = files.robustness
        done = read_robustness(path)
        if done is not None and done.get("weights_fingerprint") == weights_fingerprint(files.weights):
            result["skipped"].append(spec.id)
            continue
        data = task_tensors(spec.data, spec.target_classes, tuple(stats["mean"]), tuple(stats["std"]),
                            str(cache_dir) if cache_dir else None, str(device))
        write_json(path, network_robustness(spec, files.weights, data, device))
        result["written"].append(spec.id)
    task_tensors.cache_clear()  # this process is done with the run's tasks
    return result

