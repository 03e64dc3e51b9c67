"""The package as a user installs and imports it: one import root, a public API, no side effects at import, and a
layering in which the command line sits on the library and the library on the data, with no import back up."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PROBE = Path(sys.executable).parent / "probe"  # the console script of this environment's install


def _run(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _sources() -> list[str]:
    """The project's files as a clean clone has them (tracked, plus new files not ignored)."""
    out = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], REPO_ROOT)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in out.stdout.splitlines() if (REPO_ROOT / f).is_file()]


def test_the_wheel_holds_one_import_root(tmp_path):
    """The wheel puts exactly one top-level package, probe, into site-packages: cli/, analysis/ and data/ are its
    subpackages, so no other distribution can overwrite them."""
    src = tmp_path / "src"
    for f in _sources():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((REPO_ROOT / f).read_bytes())
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(tmp_path / "dist"), str(src)], tmp_path, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert roots == {"probe"}, roots
    for sub in ("probe/cli/main.py", "probe/analysis/report.py", "probe/data/datasets.py",
                "probe/analysis/reference_data/yosinski2014_imagenet_runs.csv"):
        assert sub in names, sub


@pytest.fixture
def users_project(tmp_path):
    """A researcher's own directory, with the module names every project has; importing any of them fails."""
    boom = "raise ImportError('the user\\'s own {} was imported instead of probe\\'s')\n"
    (tmp_path / "data.py").write_text(boom.format("data.py"))
    (tmp_path / "cli.py").write_text(boom.format("cli.py"))
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "__init__.py").write_text(boom.format("analysis/"))
    return tmp_path


def test_a_users_own_modules_never_shadow_probe(users_project):
    for args in ([str(PROBE), "--help"], [str(PROBE), "plan", "--dataset", "synthetic", "--cuts", "1"],
                 [sys.executable, "-c", "from probe import linear_cka, open_store, Study; print(Study)"]):
        out = _run(args, users_project)
        assert out.returncode == 0, (args, out.stderr)
        assert "instead of probe" not in out.stderr
    assert "networks" in _run([str(PROBE), "plan", "--dataset", "synthetic", "--cuts", "1"], users_project).stdout


def test_every_public_name_resolves_and_import_probe_is_cheap():
    import probe

    for name in probe.__all__:
        assert getattr(probe, name) is not None, name
    assert set(probe.__all__) <= set(dir(probe))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        probe.nonesuch  # noqa: B018
    code = "import sys, probe; print(sorted(m for m in ('torch', 'xarray', 'matplotlib', 'dask') if m in sys.modules))"
    assert _run([sys.executable, "-c", code], REPO_ROOT).stdout.strip() == "[]"


def test_drawing_the_figures_leaves_the_users_backend_alone(tmp_path):
    """The report's figures are drawn on Figures of their own: a user's chosen backend stays chosen, and pyplot
    (with its global state) is never imported."""
    code = ("import sys, matplotlib; matplotlib.use('pdf'); import numpy as np; "
            "from matplotlib.figure import Figure; import probe.analysis.report; "
            "from probe.analysis.figures import _save; fig = Figure(); fig.subplots().plot(np.arange(3)); "
            f"print(_save(fig, __import__('pathlib').Path({str(tmp_path)!r}), 'f')); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = _run([sys.executable, "-c", code], REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "pdf False"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "f.svg").exists()


# The rooms, bottom up: a module may import probe's own modules of its room and of the rooms below it, never of a
# room above. The foundation (errors, import paths, the frozen specs) imports nothing else of probe; the networks and
# the data read the foundation alone; storage lays out what training and extraction write (naming architectures, loading
# data); planning lays a study out as specs and reads its run directory; execution trains, sweeps and extracts what
# was planned; the analysis reads what execution wrote (through its executors); the command line sits on all of it,
# and this repository's studies of the paper on top.
ROOMS = (("probe.errors", "probe.plugins", "probe.specs"),
         ("probe.architectures", "probe.data"),
         ("probe.storage",),
         ("probe.planning",),
         ("probe.execution",),
         ("probe.analysis",),
         ("probe.cli",),
         ("probe.studies",))


def _layer(module: str) -> int:
    """The room of ``module``, counted from the foundation; an unplaced module of probe is an error of this test."""
    for layer, rooms in enumerate(ROOMS):
        if any(module == room or module.startswith(room + ".") for room in rooms):
            return layer
    raise AssertionError(f"{module} is in no room of the layering: place it in ROOMS")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "probe":
        parts.insert(0, "probe")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "probe" or m.startswith("probe.")}


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the modules of probe it imports (at any depth in the file)."""
    files = [p for d in ("probe", "cli", "analysis", "data", "studies") for p in (REPO_ROOT / d).rglob("*.py")]
    return {_module_name(p): _imports(p.read_text()) for p in files}


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The imports of a module from a room above its own; the package's lazy public API (probe/__init__.py) names
    modules without importing them, and sits outside the rooms."""
    layers = {m: _layer(m) for m in graph if m != "probe"}
    return sorted((m, i) for m, layer in layers.items() for i in graph[m] if i != "probe" and _layer(i) > layer)


def test_upward_imports_are_found():
    """An import inside a function counts as one at the top of the file: both read the room above."""
    source = "from probe.errors import ProbeError\n\ndef f():\n    from probe.planning.plan import Study\n"
    graph = {"probe.storage.synthetic": _imports(source), "probe.planning.plan": {"probe.storage.run"}}
    assert upward_imports(graph) == [("probe.storage.synthetic", "probe.planning.plan")]
    assert upward_imports({"probe.specs.spec": {"probe.architectures.registry"}}) == [
        ("probe.specs.spec", "probe.architectures.registry")]
    assert upward_imports({"probe.studies.x": {"probe.cli.main", "probe.specs.spec"}, "probe.data.y": {"probe"}}) == []
    with pytest.raises(AssertionError, match="probe.elsewhere is in no room"):
        upward_imports({"probe.elsewhere": set()})


def test_imports_only_point_down_the_layers():
    """Every module of probe/, cli/, analysis/, data/ and studies/ is in a room, and imports nothing from above it."""
    assert upward_imports(import_graph()) == []


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (and modules importing themselves): Tarjan's
    algorithm over the graph of probe's own modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_import_circles_are_found():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"a"}, "b": set()}) == [["a"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_anywhere_in_the_package():
    """Counting imports inside functions too: a circle means two modules that can only be read together."""
    assert import_circles(import_graph()) == []


def test_nothing_in_the_toolkit_imports_the_studies():
    """The paper's studies (reproduction, ladder, initialization) use the toolkit; no run's analysis goes through
    them."""
    into = [(m, i) for m, imported in import_graph().items() for i in imported
            if not m.startswith("probe.studies") and i.startswith("probe.studies")]
    assert not into, into


def test_each_subcommand_lives_in_a_module_of_its_own():
    """A subcommand's options and body are found in one place: ``probe NAME`` is cli/NAME.py."""
    from probe.cli.main import main

    assert {name: cmd.callback.__module__ for name, cmd in main.commands.items()} == {
        name: f"probe.cli.{name}" for name in main.commands}


def test_every_room_of_the_library_says_what_it_holds_and_may_import():
    for room in ("planning", "storage", "execution"):
        text = (REPO_ROOT / "probe" / room / "__init__.py").read_text()
        assert "May import" in text, room
