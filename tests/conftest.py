"""Shared fixtures for the probe test suite.

The suite runs on small CPU machines (two cores, often shared with other work). Torch's OpenMP thread pool spins
badly when its cores are busy (a 16-pixel CaffeNet step can go from 10 ms to 700 ms), so every test process, and
every subprocess a test starts, uses one intra-op thread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# The options of a tiny study on the synthetic dataset: a CaffeNet at 1/8 width, one short epoch, 30 images a class.
TINY_STUDY = ["--dataset", "synthetic", "--arch", "caffenet-small", "--arch-option", "width=0.125",
              "--epochs", "1", "--batch-size", "32", "--train-per-class", "30"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: decodes a whole real dataset; runs only with PROBE_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PROBE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set PROBE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_arrays():
    """The synthetic dataset as ImageArrays (generated in code, no cache)."""
    from probe.data.datasets import load_dataset
    from probe.specs.spec import DataSpec

    return load_dataset(DataSpec("synthetic"))


@pytest.fixture(scope="session")
def synthetic_classes(synthetic_arrays):
    return list(synthetic_arrays.classes)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A dataset cache shared by the whole session (kept out of ~/.cache)."""
    return tmp_path_factory.mktemp("probe-cache")


@pytest.fixture
def split_file(tmp_path):
    """Write a file: split and return its ``file:PATH`` name."""
    def make(obj, name="split.json"):
        path = tmp_path / name
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return f"file:{path}"
    return make


def invoke(cache_dir, *args):
    """Run ``probe`` in this process: ``invoke(cache_dir, "train", run_dir, *options)`` -> click's Result.

    ``train`` gets ``--quiet --device cpu --cache-dir CACHE_DIR`` where not given."""
    from click.testing import CliRunner

    from probe.cli.main import main

    args = [str(a) for a in args]
    if args and args[0] == "train":
        defaults = {"--quiet": [], "--device": ["cpu"], "--cache-dir": [str(cache_dir)]}
        for flag, value in defaults.items():
            if flag not in args:
                args += [flag, *value]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="session")
def anb_run(tmp_path_factory, cache_dir):
    """A small trained run shared by the extraction tests (which never change it): the two bases and AnB at cut
    1."""
    run_dir = tmp_path_factory.mktemp("anb-run")
    result = invoke(cache_dir, "train", run_dir, *TINY_STUDY, "--cuts", "1", "--variants", "AnB")
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture
def cli(cache_dir):
    """``cli("train", run_dir, *options)``: :func:`invoke` with the session's cache."""
    return lambda *args: invoke(cache_dir, *args)


def assert_one_line_error(result, *culprits):
    """A CLI failure reported as click's one-line ``Error: ...`` with no traceback, naming every culprit."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}")
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for culprit in culprits:
        assert str(culprit) in errors[0], f"{culprit!r} not named in {errors[0]!r}"


def assert_same_up_to_rounding(a, b, rtol: float = 1e-4, atol: float = 1e-5):
    """Two xarray objects with the same structure (dims, coords, names, attrs: exactly) and the same values up to
    floating-point rounding.

    Activations and the similarities computed from them are float sums whose kernels oneDNN and MKL choose by CPU,
    batch size, thread count and process, so the same network on the same images differs in the last bits between
    batch sizes or between a dask worker and this process (AVX-512 machines against AVX2 ones). The tolerances are
    orders of magnitude above that rounding and far below what a wrong network, image or order gives (O(1))."""
    import xarray as xr

    xr.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert a.attrs == b.attrs
    if isinstance(a, xr.Dataset):
        for name in a.variables:
            assert a[name].attrs == b[name].attrs, name
            assert a[name].dtype == b[name].dtype, name
    xr.testing.assert_identical(a.coords.to_dataset(), b.coords.to_dataset())


@pytest.fixture
def entry_point(monkeypatch):
    """``entry_point(name, "module:function", group)``: an installed distribution's entry point, as
    importlib.metadata reports it. Only the groups given here are faked: torch and others read their own entry
    points through the same function."""
    import importlib.metadata

    real, fake = importlib.metadata.entry_points, {}

    def entry_points(**selection):
        group = selection.get("group")
        return fake[group] if group in fake else real(**selection)

    def add(name: str, value: str, group: str) -> None:
        fake.setdefault(group, []).append(importlib.metadata.EntryPoint(name, value, group))

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return add
