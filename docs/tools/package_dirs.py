"""A griffe extension: the subpackages that pyproject.toml maps from folders of their own.

``probe.cli``, ``probe.analysis``, ``probe.data`` and ``probe.studies`` live in the top-level folders ``cli/``,
``analysis/``, ``data/`` and ``studies/`` (``[tool.setuptools.package-dir]``), where griffe, which finds a
package's submodules in the package's own folder, does not look. Once ``probe`` is loaded, each mapped folder is
loaded from the repository root and attached under its dotted name, so the API reference reaches them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import griffe

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def package_dirs() -> dict[str, str]:
    """Dotted package name -> its folder, relative to the repository root, as pyproject.toml maps them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["package-dir"]


class PackageDirs(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        for name, folder in package_dirs().items():
            parent, _, child = name.rpartition(".")
            if parent == pkg.name and child not in pkg.members:
                module = loader.load(folder, find_stubs_package=False)
                pkg.set_member(child, module)
