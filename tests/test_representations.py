"""The representation views of probe analyze, checked by what must hold: frozen copied layers are their source."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_STUDY

from probe.analysis.representations import layer_matrix, representation_dataset
from probe.analysis.stores import open_store
from probe.execution.extract import ExtractionImages, extract_run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    from click.testing import CliRunner

    from probe.cli.main import main

    run_dir = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", str(run_dir), *TINY_STUDY, "--cuts", "1,3", "--quiet", "--device",
                                       "cpu", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    extract_run(run_dir, images=ExtractionImages("both"), progress=False)
    extract_run(run_dir, run_dir / "target.zarr", progress=False)
    return run_dir


def test_frozen_copied_layers_have_cka_one_with_their_source(run):
    rep = representation_dataset(run, open_store(run))
    src = rep["cka_source"].sel(split="random")
    layers = list(rep["layer"].values)
    for variant in ("AnB", "BnB"):
        for n in rep["n"].values:
            copied = src.sel(variant=variant, n=n, layer=layers[:n]).values
            np.testing.assert_allclose(copied, 1.0, atol=1e-6)
            above = src.sel(variant=variant, n=n, layer=layers[n:]).values
            assert np.all(above < 1 - 1e-6)  # re-initialized and retrained layers are not their source's
    assert np.isnan(src.sel(variant="RnB").values).all()  # random layers have no donor
    np.testing.assert_allclose(rep["cka_target"].sel(split="random", variant="BnB", n=3, layer=layers[:3]), 1.0,
                               atol=1e-6)
    # the cross-layer matrix of the two bases: A's conv1 vs B's conv1 is on the diagonal
    assert rep["cka_bases"].sizes["source_layer"] == rep["cka_bases"].sizes["layer"] == len(layers)
    assert np.isfinite(rep["cka_bases"]).all()
    assert np.isfinite(rep["logme"]).all() and np.isfinite(rep["leep"]).all()


def test_target_only_store_leaves_source_views_empty(run):
    rep = representation_dataset(run, open_store(run / "target.zarr"))
    assert np.isnan(rep["cka_source"].sel(variant="AnB").values).all()
    assert np.isfinite(rep["cka_target"].sel(variant="AnB").values).all()
    assert np.isfinite(rep["cka_source"].sel(variant="BnB").values).all()  # baseB saw its own task's images


def test_layer_matrix_folds_positions_into_rows():
    import xarray as xr

    da = xr.DataArray(np.arange(2 * 3 * 4).reshape(2, 3, 4), dims=("sample", "conv1_position", "conv1_unit"))
    assert layer_matrix(da).shape == (6, 4)
    full = xr.DataArray(np.zeros((2, 4, 3, 3)), dims=("sample", "conv1_unit", "conv1_y", "conv1_x"))
    assert layer_matrix(full).shape == (2, 36)


def test_analyze_adds_the_representation_section(run, cli):
    result = cli("analyze", run)
    assert result.exit_code == 0, result.output
    md = (run / "analysis" / "report.md").read_text()
    assert "## Representations" in md and "CKA(AnB+_k, baseA_k)" in md and "figure_cka_random.png" in md
    assert (run / "analysis" / "representations.zarr").exists()
    result = cli("analyze", run, "--store", run / "missing.zarr")
    assert result.exit_code != 0 and "no activation store" in result.output


def test_a_dead_layer_gives_nan_not_an_error():
    from probe.analysis.representations import _defined_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    assert np.isnan(_defined_cka(np.zeros((50, 8)), x)) and np.isnan(_defined_cka(x, np.ones((50, 3))))
    # constant but not a round number (ReLU of biases above a dead layer): centering leaves rounding residue only
    assert np.isnan(_defined_cka(np.full((50, 3), 0.1), x)) and np.isnan(_defined_cka(x, np.full((1000, 3), 0.3)[:50]))
    assert _defined_cka(x, x) == pytest.approx(1.0)
    # nearly dead: one unit fires on one image; it varies, but its debiased HSIC with itself is negative
    almost = np.zeros((50, 8))
    almost[0, 0] = 1.0
    assert np.ptp(almost, axis=0).any() and np.isnan(_defined_cka(almost, x))
