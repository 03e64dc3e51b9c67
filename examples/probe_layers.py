"""Along the layers of one network, how well a linear probe reads the target task, beside the transferability
estimators probe scores with it.

    python examples/probe_layers.py runs/demo
    python examples/probe_layers.py runs/demo --network random-s1/init1/baseB --task A

By default the first replicate's baseA scored for task B, the setting of the paper's AnB networks: a layer whose
probe reads task B well is one that transfers. LEEP and NCE need the network's activations on its own task's images
too ('probe extract RUN --probe-set both'); without them they are NaN.
"""

from __future__ import annotations

import argparse

from probe import list_networks, open_store
from probe.analysis.transferability import layer_scores


def default_network(tree) -> str:
    """The first replicate's baseA."""
    bases = [nid for nid in list_networks(tree) if nid.endswith("/baseA")]
    if not bases:
        raise SystemExit("the store holds no baseA; name a network with --network")
    return bases[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run directory")
    parser.add_argument("--store", help="the activation store (default: RUN/activations.zarr)")
    parser.add_argument("--network", help="a network id (default: the first replicate's baseA)")
    parser.add_argument("--task", default="B", choices=["A", "B"], help="the task to score for (default: B)")
    args = parser.parse_args()

    tree = open_store(args.store or args.run)
    network = args.network or default_network(tree)
    scores = layer_scores(tree, network, args.task)  # dim `layer`, in the network's order; one variable a score
    print(f"{network}, scored for task {args.task}")
    table = scores.to_dataframe()
    table = table[["probe_accuracy", *[column for column in table.columns if column != "probe_accuracy"]]]
    print(table.to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
