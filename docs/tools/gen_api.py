"""The Python API reference, one page per module, found by walking the package's folders (mkdocs-gen-files).

The pages are generated at build time from the files that exist, so a module that is added, split or moved appears
where it now lives without any page of the manual naming it. ``api/SUMMARY.md`` is their navigation
(mkdocs-literate-nav).
"""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))  # gen-files runs this file by its path, not as a module of a package
from package_dirs import ROOT, package_dirs  # noqa: E402


def package_roots() -> dict[str, Path]:
    """Dotted package name -> its folder: ``probe`` itself and the subpackages mapped from folders of their own."""
    return {"probe": ROOT / "probe", **{name: ROOT / folder for name, folder in package_dirs().items()}}


def modules() -> dict[tuple[str, ...], Path]:
    """Every public module's dotted name, as its parts, -> its page: ``api/probe/cli/main.md`` for a module,
    ``api/probe/cli/index.md`` for a package. Private modules (``_name.py``) and folders that are no package (data
    files) are left out."""
    found = {}
    for package, folder in package_roots().items():
        for path in folder.rglob("*.py"):
            parts = (*package.split("."), *path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            if any(part.startswith("_") for part in parts) or not (path.parent / "__init__.py").exists():
                continue
            found[parts] = Path("api", *parts, "index.md") if is_package else Path("api", *parts).with_suffix(".md")
    return dict(sorted(found.items()))


nav = mkdocs_gen_files.Nav()
for parts, page in modules().items():
    name = ".".join(parts)
    nav[parts] = page.relative_to("api").as_posix()
    with mkdocs_gen_files.open(page, "w") as f:
        f.write(f"# `{name}`\n\n::: {name}\n")
with mkdocs_gen_files.open("api/SUMMARY.md", "w") as f:
    f.writelines(nav.build_literate_nav())
