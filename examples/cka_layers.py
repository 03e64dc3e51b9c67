"""Layer by layer, how alike two networks of a run are: debiased linear CKA on the images they both saw.

    python examples/cka_layers.py runs/demo
    python examples/cka_layers.py runs/demo --store runs/demo/acts-both.zarr \
        --networks random-s0/init0/A4B random-s0/init0/baseB --task B

By default the first replicate's baseA against its baseB, on task B's images: the store must hold baseA's
activations on them, as 'probe extract RUN --probe-set both' writes. Prints one line per cut layer the two share.
"""

from __future__ import annotations

import argparse
import json

from probe import layer_arrays, linear_cka, list_networks, open_store
from probe.analysis.representations import layer_matrix
from probe.analysis.similarity import UndefinedCKA


def layer_order(tree, network: str) -> list[str]:
    """The network's cut layers in its own order (the group's ``layers`` attr). The logits are left out: two
    networks of different tasks have different classes there."""
    return json.loads(tree[network].attrs["layers"])


def default_pair(tree) -> list[str]:
    """The first replicate's two bases, baseA and baseB."""
    bases = [nid for nid in list_networks(tree) if nid.endswith("/baseA")]
    if not bases:
        raise SystemExit("the store holds no baseA; name two networks with --networks")
    return [bases[0], bases[0].removesuffix("baseA") + "baseB"]


def cka_by_layer(tree, a: str, b: str, task: str) -> dict[str, float]:
    """Layer name -> CKA(a_k, b_k) on ``task``'s images, for the layers both networks have (NaN for a layer that
    does not vary over the images, where CKA is undefined)."""
    shared = [layer for layer in layer_order(tree, a) if layer in layer_order(tree, b)]
    out = {}
    for layer in shared:
        x, y = layer_arrays(tree, layer, [a, b]).values()  # aligned on the samples, or an error if they differ
        of_task = (x["task"] == task).values
        try:
            out[layer] = linear_cka(layer_matrix(x[of_task]), layer_matrix(y[of_task]), debiased=True)
        except UndefinedCKA:
            out[layer] = float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run directory")
    parser.add_argument("--store", help="the activation store (default: RUN/activations.zarr)")
    parser.add_argument("--networks", nargs=2, metavar="ID", help="two network ids (default: baseA and baseB)")
    parser.add_argument("--task", default="B", choices=["A", "B"], help="whose test images (default: B)")
    args = parser.parse_args()

    tree = open_store(args.store or args.run)
    a, b = args.networks or default_pair(tree)
    print(f"debiased linear CKA, {a} against {b}, on task {args.task}'s images")
    for layer, value in cka_by_layer(tree, a, b, args.task).items():
        print(f"{layer:>12}  {value:.3f}")


if __name__ == "__main__":
    main()
