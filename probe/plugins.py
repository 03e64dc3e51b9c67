"""Code named by import path (``module:function``), and the entry points through which installed distributions add
architectures and datasets.

A run records the import path of every function it was made with, so that any process (a later command, a dask
worker) imports the function from there; nothing is imported until it is asked for.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from probe.errors import ProbeError

_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_SCRIPTS = ("__main__", "__mp_main__")  # a script run as a program (multiprocessing's spawn names it __mp_main__)

# The functions registered in this process by import path: the process that registered one never imports it again
# (a script's functions would otherwise run its module a second time under its file's name).
_FUNCTIONS: dict[str, Callable] = {}


def is_import_path(text: str) -> bool:
    """Whether ``text`` reads as ``module.path:function`` (``cifar10:/data`` does not)."""
    return _IMPORT_PATH.fullmatch(text) is not None


def function_path(function: Callable, what: str) -> str:
    """The ``module:qualname`` any process can import ``function`` by, remembered for this process.

    A function of a script run as a program is named by the script's module (its ``python -m`` name, or its file's
    name), which another process imports when the script's folder is on its path."""
    qualname = getattr(function, "__qualname__", "")
    if not callable(function) or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ProbeError(f"{what} must be a function defined at the top level of a module, so that other processes "
                         f"can import it; {qualname or function!r} is not")
    module = function.__module__
    if module in _SCRIPTS:
        main = sys.modules[module]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name not in _SCRIPTS:
            module = spec.name
        elif getattr(main, "__file__", None):
            module = Path(main.__file__).stem
    path = f"{module}:{qualname}"
    _FUNCTIONS[path] = function
    return path


def import_function(path: str, what: str) -> Callable:
    """The function at import path ``path`` (``module:qualname``); ``what`` says what it is for, in errors."""
    if path in _FUNCTIONS:
        return _FUNCTIONS[path]
    label = what if repr(path) in what else f"{what} ({path})"
    if not is_import_path(path):
        raise ProbeError(f"{label} is not an import path MODULE:FUNCTION")
    module_name, _, qualname = path.partition(":")
    if module_name in _SCRIPTS:
        raise ProbeError(f"{label} was defined in an interactive session, which no other process can import; define "
                         "it in a module on PYTHONPATH")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ProbeError(f"cannot import {module_name!r} for {label} ({e}); put its folder on PYTHONPATH (on every "
                         "dask worker too) or install its package") from None
    for attr in qualname.split("."):
        obj = getattr(obj, attr, None)
    if not callable(obj):
        raise ProbeError(f"module {module_name!r} has no function {qualname!r} for {label}")
    return obj


def reason(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def load_plugins_into(registry: dict, group: str, register: Callable[[str], Callable], name: str | None) -> None:
    """Load the entry points of ``group`` (those called ``name``, or all) into ``registry``: each names a module
    that registers entries as it is imported, or a function, then registered under the entry point's name with
    ``register(name)``. What they add is marked as found by name wherever the distribution is installed."""
    import dataclasses

    before = set(registry)
    for ep_name, obj in load_entry_points(group, name).items():
        if ep_name not in registry and callable(obj):
            register(ep_name)(obj)
    for added in set(registry) - before:
        registry[added] = dataclasses.replace(registry[added], origin="entry point")


def load_entry_points(group: str, name: str | None = None) -> dict[str, object]:
    """Load the entry points of ``group`` (those called ``name``, or all): entry point name -> the object it names.

    An entry point names a module whose import registers what it adds, or a function (see the registries)."""
    from importlib.metadata import entry_points

    loaded = {}
    for ep in entry_points(group=group):
        if name is not None and ep.name != name:
            continue
        try:
            loaded[ep.name] = ep.load()
        except Exception as e:  # a broken plugin raises anything at import; say which one it is
            dist = getattr(ep.dist, "name", "?")
            raise ProbeError(f"entry point {ep.name!r} of group {group} ({ep.value}, distribution {dist}) cannot be "
                             f"loaded: {reason(e)}") from e
    return loaded
