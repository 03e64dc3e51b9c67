"""Any nn.Module whose forward is a chain of named pieces, as a :class:`LayeredNet` cut after those pieces.

The pieces are dotted module paths (``features.7``, ``layer2``, ``encoder.layers.encoder_layer_3``). Layer 1 is
everything the model's forward computes up to and including the first piece, layer i everything after piece i-1 up
to and including piece i, and the last layer (the head) everything after the last piece. torch.fx traces the forward,
keeping whole every module that holds no piece, and checks that the output of each piece is the only thing that
crosses its cut; each layer then runs its part of the traced graph (a GraphModule) on the model's own modules and
parameters, shared, not copied.

Names and keys: ModuleDict keys cannot hold dots, so by default a layer is named after its piece with dots made
underscores (``features.7`` -> ``features_7``) and the head is ``head``. A layer holds the model's modules under
their own paths, so the model's ``features.7.0.weight`` is the adapted network's
``stages.features_7.features.7.0.weight``; ``LayeredNet.source_keys`` maps each state_dict key back to the model's.
"""

from __future__ import annotations

import inspect
import operator
from collections import Counter
from collections.abc import Sequence

import torch
from torch import fx, nn

from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError

HEAD = "head"
_BUILDER_HINT = "give the cut points of a supported family or write a builder that returns LayeredNet"


def layer_name(path: str) -> str:
    """The default layer name of the piece at a dotted module path."""
    return path.replace(".", "_")


def layered_from_module(model: nn.Module, cut_after: Sequence[str],
                        layer_names: Sequence[str] | None = None) -> LayeredNet:
    """``model`` as a LayeredNet cut after each piece in ``cut_after`` (dotted module paths, in forward order).

    ``layer_names`` names all len(cut_after) + 1 layers (default: the pieces' paths with dots made underscores, then
    ``head``). A model whose forward is not such a chain is refused with a ProbeError naming it.
    """
    label = type(model).__name__
    cuts = list(cut_after)
    names = [*map(layer_name, cuts), HEAD] if layer_names is None else list(layer_names)
    _check_pieces(model, label, cuts)
    _check_names(label, cuts, names)
    graph = _trace(model, label, cuts)
    stages = [(name, _stage_module(model, label, *part)) for name, part in zip(names, _split(graph, label, cuts))]
    return LayeredNet(stages, source_keys=_source_keys(model, label, stages))


def layered_at(model: nn.Module, cuts: Sequence[tuple[str, str]]) -> LayeredNet:
    """``model`` cut after each (dotted module path, layer name) of ``cuts``, its last layer the ``head``."""
    return layered_from_module(model, [path for path, _ in cuts], [name for _, name in cuts] + [HEAD])


def _check_pieces(model: nn.Module, label: str, cuts: list[str]) -> None:
    if not cuts:
        raise ProbeError(f"cannot cut {label} at no pieces; name at least one module to cut after")
    modules = dict(model.named_modules())
    for cut in cuts:
        if not cut or cut not in modules:
            raise ProbeError(f"{label} has no module {cut!r} to cut after; its children are "
                             f"{', '.join(name for name, _ in model.named_children())}")
    if len(set(cuts)) != len(cuts):
        raise ProbeError(f"{label} is cut twice after the same module in {', '.join(cuts)}")
    for outer in cuts:
        for inner in cuts:
            if inner.startswith(outer + "."):
                raise ProbeError(f"cannot cut {label} after both {outer!r} and {inner!r}, which is inside it")


def _check_names(label: str, cuts: list[str], names: list[str]) -> None:
    if len(names) != len(cuts) + 1:
        raise ProbeError(f"{len(cuts)} cut points of {label} make {len(cuts) + 1} layers, "
                         f"but {len(names)} layer names were given")
    reserved = set(dir(nn.ModuleDict()))  # a stage key may not shadow a ModuleDict attribute
    for name in names:
        if not name or "." in name or name in reserved:
            raise ProbeError(f"{name!r} cannot name a layer of {label}: use a non-empty name without dots")
    if len(set(names)) != len(names):
        raise ProbeError(f"layer names of {label} repeat: {', '.join(names)}")


class _PieceTracer(fx.Tracer):
    """Traces into the model and into the modules that contain a piece; every other module is one graph node."""

    def __init__(self, opened: set[str]):
        super().__init__()
        self.opened = opened

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name not in self.opened

    def path_of_module(self, mod: nn.Module) -> str:
        try:
            return super().path_of_module(mod)
        except NameError:  # fx: "module is not installed as a submodule", which does not say which, or why
            sliced = _sliced_from(self.root, mod)
            if sliced is None:
                raise
            raise _SlicedSequential(*sliced) from None


class _SlicedSequential(Exception):
    """The forward called a slice of a Sequential: ``owner`` (its path), the slice's ``names`` of children."""

    def __init__(self, owner: str, names: list[str]):
        super().__init__(owner)
        self.owner, self.names = owner, names


def _sliced_from(root: nn.Module, mod: nn.Module) -> tuple[str, list[str]] | None:
    """The Sequential of ``root`` that ``mod`` (a module that is no submodule of it) is a slice of, as its path
    and the names of the children the slice holds; None when it is no such slice."""
    if not isinstance(mod, nn.Sequential) or not len(mod):
        return None
    for path, owner in root.named_modules():
        if isinstance(owner, nn.Sequential) and owner is not mod:
            names = {id(child): name for name, child in owner.named_children()}
            if all(id(child) in names for child in mod.children()):
                return path, [names[id(child)] for child in mod.children()]
    return None


def _sliced_error(label: str, sliced: _SlicedSequential) -> ProbeError:
    """One line for a forward that slices a Sequential: it says what it sliced and what to write instead."""
    owner, names = sliced.owner, sliced.names
    indices = [int(n) for n in names] if all(n.isdigit() for n in names) else []
    contiguous = indices and indices == list(range(indices[0], indices[-1] + 1))
    shown = f"{owner}[{indices[0]}:{indices[-1] + 1}]" if contiguous else f"a slice of {owner}"
    return ProbeError(f"{label}'s forward slices the module {owner!r} ({shown}): a Sequential slice builds a new "
                      f"module at every call, which cannot be traced and cut; call {owner} whole and cut with "
                      f"--cut-at at module paths instead ({owner}.{names[-1]} cuts after the slice's last module), or "
                      "write the forward without slicing")


def _trace(model: nn.Module, label: str, cuts: list[str]) -> fx.Graph:
    """The forward's graph, the same in training and in eval mode.

    Python branches on ``self.training`` in a traced forward are fixed at trace time; tracing both modes and
    comparing refuses a model whose layers would silently keep one mode's computation.
    """
    opened = {cut.rsplit(".", i)[0] for cut in cuts for i in range(1, cut.count(".") + 1)}
    modes = {m: m.training for m in model.modules()}
    graphs = []
    optional = _optional_arguments(model)
    try:
        for mode in (True, False):
            model.train(mode)
            graphs.append(_without_optional(_PieceTracer(opened).trace(model, concrete_args=optional or None),
                                            len(optional)))
    except _SlicedSequential as e:
        raise _sliced_error(label, e) from None
    except Exception as e:  # fx reports untraceable code with many exception types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProbeError(f"torch.fx cannot trace {label}'s forward ({reason}); {_BUILDER_HINT}") from e
    finally:
        for m, mode in modes.items():
            m.training = mode
    if str(graphs[0]) != str(graphs[1]):
        raise ProbeError(f"{label}'s forward computes differently in training and eval mode outside its "
                         f"modules; {_BUILDER_HINT}")
    return graphs[0]


def _optional_arguments(model: nn.Module) -> dict[str, object]:
    """The forward's arguments after the image that have defaults (timm's ViT: ``attn_mask=None``,
    ``is_causal=False``), traced at their defaults: a network is run on one tensor."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _without_optional(graph: fx.Graph, optional: int) -> fx.Graph:
    """``graph`` less the placeholders of the ``optional`` arguments traced at their defaults and the checks fx adds
    on them (``_assert_is_none``, an equality asserted): nothing of the image's computation reads them."""
    if not optional:
        return graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    fixed = set(placeholders[1:])
    for node in graph.nodes:
        if node.op not in ("placeholder", "output") and node.all_input_nodes and \
                all(i in fixed for i in node.all_input_nodes):
            fixed.add(node)
    if any(user not in fixed for node in fixed for user in node.users):
        return graph  # a default the computation reads: left for _split to refuse
    for node in reversed(list(graph.nodes)):
        if node in fixed:
            graph.erase_node(node)
    return graph


def _split(graph: fx.Graph, label: str, cuts: list[str]) -> list[tuple[list[fx.Node], fx.Node, fx.Node]]:
    """For each layer: its nodes in order, the node it takes as input, and the node it returns."""
    *nodes, output = graph.nodes  # an fx graph ends with its output node
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1 or not isinstance(output.args[0], fx.Node):
        raise ProbeError(f"{label}'s forward must take one tensor and return one tensor to be cut into layers")
    cut_nodes = [_cut_node(nodes, label, cut) for cut in cuts]
    if [nodes.index(n) for n in cut_nodes] != sorted(nodes.index(n) for n in cut_nodes):
        raise ProbeError(f"{label}'s forward runs its pieces in another order than {', '.join(cuts)}")
    layer_of = _layer_of(nodes, cut_nodes)
    result = output.args[0]
    if layer_of[result] != len(cuts):
        raise ProbeError(f"{label}'s forward computes nothing after its last cut {cuts[-1]!r}; "
                         f"leave the classifier after the last cut")
    inputs = [placeholders[0], *cut_nodes]
    _check_chain(nodes, label, cuts, layer_of, inputs)
    parts = [[n for n in nodes if layer_of[n] == i and n.op != "placeholder"] for i in range(len(inputs))]
    for i, part in enumerate(parts[1:], start=1):
        _check_leading_work(part, label, cuts[i - 1])
    return [(part, inputs[i], (cut_nodes + [result])[i]) for i, part in enumerate(parts)]


def _cut_node(nodes: list[fx.Node], label: str, cut: str) -> fx.Node:
    calls = [n for n in nodes if n.op == "call_module" and n.target == cut]
    if len(calls) != 1:
        raise ProbeError(f"{label}'s forward calls {cut!r} {len(calls)} times; cut after a module it calls once")
    return calls[0]


def _layer_of(nodes: list[fx.Node], cut_nodes: list[fx.Node]) -> dict[fx.Node, int]:
    """The 0-based layer of each node: by position between the cuts, except that a read of a parameter or buffer
    (fx places it anywhere before its first use) goes with the layer that uses it."""
    layer_of, layer = {}, 0
    for node in nodes:
        layer_of[node] = layer
        if layer < len(cut_nodes) and node is cut_nodes[layer]:
            layer += 1
    for node in nodes:
        if node.op == "get_attr" and node.users:
            layer_of[node] = layer_of[next(iter(node.users))]  # users are in graph order
    return layer_of


def _check_chain(nodes: list[fx.Node], label: str, cuts: list[str], layer_of: dict[fx.Node, int],
                 inputs: list[fx.Node]) -> None:
    """Refuse a value that crosses a cut other than that cut's own output (a skip connection, a shared tensor)."""
    for node in nodes:
        for source in node.all_input_nodes:
            if layer_of[source] != layer_of[node] and source is not inputs[layer_of[node]]:
                raise ProbeError(f"{label} is not a chain at cut {cuts[layer_of[source]]!r}: its forward uses "
                                 f"{source.name} on both sides; cut elsewhere, or {_BUILDER_HINT}")


def _check_leading_work(part: list[fx.Node], label: str, cut: str) -> None:
    """Refuse functional work on a cut's output before the next module: the layer's activations would then be
    ambiguous (is a ReLU written as a function part of the layer below or above?). Reshapes such as a flatten before
    the classifier only change the shape, so they stay at the start of the layer above."""
    for node in part:
        if node.op == "call_module":
            return
        if node.op != "get_attr" and not _keeps_values(node):  # reading a parameter is no work; using it is
            work = getattr(node.target, "__name__", node.target)
            raise ProbeError(f"{label}'s forward does functional work ({work}) on the output of {cut!r} before its "
                             f"next module; cut after a module whose output the next module takes as is, or "
                             f"{_BUILDER_HINT}")


_SHAPE_ONLY_FUNCTIONS = (torch.flatten, torch.reshape, torch._assert)
_RESHAPE_METHODS = ("flatten", "view", "reshape", "contiguous")
_SHAPE_METHODS = ("size", "dim")


def _keeps_values(node: fx.Node) -> bool:
    """Whether a node only reshapes a tensor, reads its shape or checks it."""
    if node.op == "call_method":
        return node.target in _RESHAPE_METHODS + _SHAPE_METHODS
    return node.op == "call_function" and (node.target in _SHAPE_ONLY_FUNCTIONS or _reads_shape(node))


def _reads_shape(node: fx.Node) -> bool:
    """``x.shape``, ``x.size()`` or an item of either: shape, not values."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return node.args[1] == "shape"
    return node.target is operator.getitem and isinstance(node.args[0], fx.Node) and _reads_shape(node.args[0])


def _stage_module(model: nn.Module, label: str, nodes: list[fx.Node], source: fx.Node,
                  result: fx.Node) -> fx.GraphModule:
    """A module computing ``result`` from ``source`` by ``nodes``; it holds the model's modules and parameters under
    their paths in the model."""
    graph = fx.Graph()
    env = {source: graph.placeholder("x")}
    for node in nodes:
        env[node] = graph.node_copy(node, env.__getitem__)
    graph.output(env[result])
    return fx.GraphModule(model, graph, class_name=f"{label}Layer")


def _source_keys(model: nn.Module, label: str, stages: list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Each of the layered network's state_dict keys, mapped to the model's; one to one, or refused."""
    keys = {f"stages.{name}.{key}": key for name, stage in stages for key in stage.state_dict()}
    shared = [key for key, count in Counter(keys.values()).items() if count > 1]
    if shared:
        raise ProbeError(f"{label}'s {shared[0]} is used by more than one layer; cut so that it lies in one layer, "
                         f"or {_BUILDER_HINT}")
    unplaced = sorted(set(model.state_dict()) ^ set(keys.values()))
    if unplaced:
        raise ProbeError(f"{label}'s state {unplaced[0]} is not in exactly one layer (unused by its forward?); "
                         f"{_BUILDER_HINT}")
    return keys
