"""probe: how transferable are the features of a deep network, layer by layer (Yosinski et al. 2014).

What a script needs, importable from here::

    from probe import Study, DataSpec, ArchSpec, Recipe, run_study, extract_run, analyze_run, open_store
    from probe import linear_cka, logme, linear_probe_accuracy
    from probe import register_architecture, register_dataset   # your own networks and data
    from probe import describe_source   # a network trained elsewhere: Study(..., source=describe_source(path))

Names are resolved on first use, so ``import probe`` (and ``probe --help``) stays cheap: torch, xarray, dask and
matplotlib are imported only by what needs them.
"""

from __future__ import annotations

from importlib import import_module

# public name -> the module that defines it
_EXPORTS = {
    "ProbeError": "probe.errors",
    **dict.fromkeys(("ArchSpec", "DataSpec", "NetworkSpec", "Recipe"), "probe.specs.spec"),
    "Study": "probe.planning.plan",
    "SourceSpec": "probe.specs.spec",  # a source network trained elsewhere, as describe_source reads it
    "describe_source": "probe.planning.source",
    "register_architecture": "probe.architectures.registry",
    "register_dataset": "probe.data.custom",
    "run_study": "probe.execution.sweep",
    "extract_run": "probe.execution.extract",
    "analyze_run": "probe.analysis.report",
    **dict.fromkeys(("open_store", "layer_arrays", "list_networks"), "probe.analysis.stores"),
    **dict.fromkeys(("linear_cka", "rbf_cka", "minibatch_cka", "streaming_cka", "cca", "svcca", "pwcca",
                     "procrustes", "rsa"), "probe.analysis.similarity"),
    **dict.fromkeys(("logme", "leep", "nce", "h_score"), "probe.analysis.transferability"),
    "linear_probe_accuracy": "probe.analysis.probes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'probe' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
