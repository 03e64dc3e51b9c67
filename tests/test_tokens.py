"""Token layers: a vision transformer's (N, T, D) outputs extracted with a token policy (--tokens), stored with named
dims, recorded with the store's settings, and analysed as (sample, token x unit) features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import assert_one_line_error, invoke
from torch import nn

from probe.analysis.representations import layer_matrix
from probe.architectures import build_model
from probe.architectures.layered import LayeredNet
from probe.data.datasets import load_dataset
from probe.errors import ProbeError
from probe.execution.batches import Normalize, center_crop, to_device
from probe.execution.extract import ExtractionImages, Reduction, extract_network, extract_run
from probe.execution.extraction.reduction import has_class_token
from probe.planning.plan import read_plan
from probe.storage.atomic import read_json
from probe.storage.checkpoint import load_weights
from probe.storage.run import Run

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning", "ignore::UserWarning",
                                        "ignore::RuntimeWarning")

VIT = ["--arch", "torchvision.models.vision_transformer:VisionTransformer", "--arch-option", "patch_size=4",
       "--arch-option", "num_layers=2", "--arch-option", "num_heads=2", "--arch-option", "hidden_dim=16",
       "--arch-option", "mlp_dim=32"]
# synthetic images are 16 pixels: 4x4 patches of 4 pixels and the class token
TOKENS, UNITS, LAYERS = 17, 16, ["embedding", "encoder1", "encoder2"]
BASE_A, BASE_B = "random-s0/init0/baseA", "random-s0/init0/baseB"
CAP = 8  # test images per class: 40 of a task's 5 classes


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, cache_dir):
    """A tiny ViT trained one epoch on synthetic data: the two bases and AnB at cut 1."""
    run_dir = tmp_path_factory.mktemp("vit")
    result = invoke(cache_dir, "train", run_dir, "--dataset", "synthetic", *VIT, "--epochs", "1", "--batch-size",
                    "32", "--train-per-class", "10", "--test-per-class", str(CAP), "--cuts", "1", "--variants", "AnB")
    assert result.exit_code == 0, result.output
    return run_dir


def _spec(run_dir, network_id):
    return next(p.spec for p in read_plan(run_dir)[1] if p.spec.id == network_id)


def _direct(run_dir, network_id, samples):
    """The network's layer outputs, whole, for the given test images: a plain forward pass."""
    spec = _spec(run_dir, network_id)
    model = build_model(spec)
    model.load_state_dict(load_weights(Run(run_dir).network(network_id).weights, spec)[0])
    stats = read_json(Run(run_dir).data)
    x = to_device(np.asarray(load_dataset(spec.data).test_x[samples]), torch.device("cpu"))
    x = Normalize(stats["mean"], stats["std"], torch.device("cpu"))(center_crop(x, spec.input_size))
    with torch.no_grad():
        return model.eval().forward_intermediates(x)[1]


def _group(store, network_id):
    return xr.open_zarr(store, group=network_id, consolidated=False).load()


def test_a_vit_run_is_extracted_with_its_class_token_by_default(vit_run, tmp_path, cli):
    store = tmp_path / "cls.zarr"
    result = cli("extract", vit_run, "--out", store, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 4" in result.output, result.output
    assert "tokens auto" in result.output.splitlines()[0]
    ds = _group(store, BASE_A)
    assert ds.sizes["sample"] == 5 * CAP  # the run's test cap
    acts = _direct(vit_run, BASE_A, ds["sample"].values)
    # the embedding's class token is the same for every image (nothing has mixed it with the image yet): auto takes
    # the mean of the tokens there, and the class token after every encoder block
    policy = {"embedding": "mean", "encoder1": "cls", "encoder2": "cls"}
    assert float((acts["embedding"][:, 0] - acts["embedding"][:1, 0]).abs().max()) < 1e-6
    for name in LAYERS:
        assert ds[name].dims == ("sample", f"{name}_unit") and ds[name].attrs["tokens"] == policy[name]
        assert ds[name].attrs["n_tokens"] == TOKENS
        assert acts[name].shape[1:] == (TOKENS, UNITS)
        want = acts[name].mean(dim=1) if policy[name] == "mean" else acts[name][:, 0]
        np.testing.assert_allclose(ds[name].values, want.numpy(), rtol=1e-5, atol=1e-5)
        assert float(np.ptp(ds[name].values, axis=0).max()) > 1e-4  # every stored layer varies over the images
    assert json.loads(ds.attrs["tokens"]) == policy
    assert json.loads(ds.attrs["reduction"])["tokens"] == "auto"
    assert json.loads((store / ".probe" / "settings.json").read_text())["tokens"] == "auto"


@pytest.mark.parametrize("tokens", ["all", "mean", "sample:3"])
def test_every_token_policy_stores_named_dims(vit_run, tmp_path, tokens):
    store = tmp_path / "acts.zarr"
    extract_run(vit_run, store, networks=["baseA", "baseB"], reduction=Reduction(tokens=tokens), progress=False)
    assert json.loads((store / ".probe" / "settings.json").read_text())["tokens"] == tokens
    a, b = _group(store, BASE_A), _group(store, BASE_B)
    assert json.loads(a.attrs["tokens"]) == dict.fromkeys(LAYERS, tokens)
    acts = _direct(vit_run, BASE_A, a["sample"].values)
    for name in LAYERS:
        full = acts[name].numpy()
        if tokens == "mean":
            assert a[name].dims == ("sample", f"{name}_unit")
            want = full.mean(axis=1)
        else:
            assert a[name].dims == ("sample", f"{name}_token", f"{name}_unit")
            kept = a[f"{name}_token"].values
            assert len(kept) == (TOKENS if tokens == "all" else 3) and np.all(np.diff(kept) > 0)
            # the same tokens of every image, of every layer of one length, and of every network
            np.testing.assert_array_equal(kept, a[f"{LAYERS[0]}_token"].values)
            np.testing.assert_array_equal(kept, b[f"{name}_token"].values)
            want = full[:, kept]
            # what every analysis reads: the kept tokens flattened into features
            assert layer_matrix(a[name]).shape == (a.sizes["sample"], len(kept) * UNITS)
        np.testing.assert_allclose(a[name].values, want, rtol=1e-5, atol=1e-5)


class _Patches(nn.Module):
    """4x4-pixel patches as tokens (N, T, D), with no class token."""

    def __init__(self, in_channels, units):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, units, 4, stride=4)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _MeanHead(nn.Module):
    def __init__(self, units, classes):
        super().__init__()
        self.fc = nn.Linear(units, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=1))


def test_a_network_without_a_class_token_gets_the_mean_and_cls_is_refused(vit_run, tmp_path):
    spec = _spec(vit_run, BASE_A)
    net = LayeredNet([("patches", _Patches(spec.in_channels, 8)), ("mix", nn.Sequential(nn.Linear(8, 8), nn.GELU())),
                      ("head", _MeanHead(8, len(spec.target_classes)))])
    assert not has_class_token(net) and has_class_token(build_model(spec))
    arrays, stats = load_dataset(spec.data), read_json(Run(vit_run).data)
    normalize = Normalize(stats["mean"], stats["std"], torch.device("cpu"))

    def extract(store, tokens):
        extract_network(store, spec, net, arrays, normalize, ExtractionImages(), Reduction(tokens=tokens),
                        torch.device("cpu"), progress=False)

    extract(tmp_path / "auto.zarr", "auto")
    ds = _group(tmp_path / "auto.zarr", BASE_A)
    assert json.loads(ds.attrs["tokens"]) == {"patches": "mean", "mix": "mean"}
    x = center_crop(to_device(np.asarray(arrays.test_x[ds["sample"].values]), torch.device("cpu")), spec.input_size)
    with torch.no_grad():
        want = net.eval().forward_intermediates(normalize(x))[1]["mix"].mean(dim=1).numpy()
    np.testing.assert_allclose(ds["mix"].values, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ProbeError) as e:
        extract(tmp_path / "cls.zarr", "cls")
    assert "class token" in str(e.value) and "--tokens" in str(e.value) and "\n" not in str(e.value)


def test_a_bad_token_policy_is_one_line(vit_run, tmp_path, cli):
    with pytest.raises(ProbeError, match="token policy 'first'"):
        Reduction(tokens="first")
    assert_one_line_error(cli("extract", vit_run, "--out", tmp_path / "x.zarr", "--tokens", "sample:0", "--quiet"),
                          "sample:0")


def test_analyze_runs_on_a_vit_store_and_the_store_keeps_its_token_policy(vit_run, cli):
    result = cli("extract", vit_run, "--probe-set", "both", "--tokens", "all", "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 4" in result.output, result.output
    result = cli("analyze", vit_run, "--max-samples", "60")
    assert result.exit_code == 0, result.output
    rep = xr.open_zarr(vit_run / "analysis" / "representations.zarr").load()
    assert list(rep["layer"].values) == LAYERS
    assert np.isfinite(rep["cka_bases"]).all() and np.isfinite(rep["logme"]).all()
    assert np.isfinite(rep["probe_accuracy"]).all()
    # another policy is another store
    assert_one_line_error(cli("extract", vit_run, "--tokens", "cls", "--quiet", "--device", "cpu"),
                          "--tokens all", "--tokens cls", "--out")


def test_a_stitch_after_a_token_layer_is_refused_in_one_line_when_planned(cli):
    result = cli("plan", "--dataset", "synthetic", *VIT, "--cuts", "1", "--variants", "BnB-stitch")
    assert_one_line_error(result, "a stitch cannot follow layer 1 (embedding)", "(N, C, H, W)")


def test_tokens_cls_on_a_network_without_a_class_token_is_refused_in_one_line(anb_run, cli, tmp_path):
    """A CNN has no class token: --tokens cls would be recorded as the store's policy and keep nothing."""
    store = tmp_path / "cls.zarr"
    assert_one_line_error(cli("extract", anb_run, "--out", store, "--tokens", "cls", "--quiet", "--device", "cpu"),
                          "--tokens cls", "caffenet-small", "--tokens auto")
    assert not (store / ".probe" / "settings.json").exists()  # nothing recorded


def test_a_vit_study_under_auto_measures_its_first_cut_and_the_report_names_the_policy(vit_run, cli, tmp_path):
    """The class token at the embedding is the same for every image, so CKA there was undefined and left blank:
    under auto the embedding's tokens are averaged, CKA at cut 1 is a number, and the report says which tokens."""
    store = tmp_path / "auto.zarr"
    result = cli("extract", vit_run, "--out", store, "--probe-set", "both", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = tmp_path / "analysis"
    result = cli("analyze", vit_run, "--store", store, "--out", out, "--max-samples", "60")
    assert result.exit_code == 0, result.output
    rep = xr.open_zarr(out / "representations.zarr").load()
    # CKA(AnB_1, baseB_1) at the embedding, the comparison that was blank, and every base-to-base cell there
    anb = rep["cka_target"].sel(variant="AnB", n=1, layer="embedding")
    assert np.isfinite(anb).all() and np.isfinite(rep["cka_bases"].sel(layer="embedding")).all()
    assert rep["probe_accuracy"].sel(layer="embedding").min() > 1 / 5  # a probe of features that vary
    report = (out / "report.md").read_text()
    assert "Token layers, as extracted: embedding: the mean over tokens; encoder1: the class token" in report


def test_features_that_do_not_vary_are_said_undefined_never_scored_as_measured(vit_run, cli, tmp_path):
    """--tokens cls asked for explicitly keeps the embedding's class token, the same for every image: its probe is
    not 'at chance' nor its H-score 0, but undefined, and the report's cell says why."""
    from probe.analysis.transferability import constant_features

    assert constant_features(np.ones((5, 3))) and not constant_features(np.eye(3))
    store = tmp_path / "cls.zarr"
    result = cli("extract", vit_run, "--out", store, "--probe-set", "both", "--tokens", "cls", "--quiet", "--device",
                 "cpu")
    assert result.exit_code == 0, result.output
    out = tmp_path / "analysis"
    result = cli("analyze", vit_run, "--store", store, "--out", out, "--max-samples", "60")
    assert result.exit_code == 0, result.output
    rep = xr.open_zarr(out / "representations.zarr").load()
    assert (rep["constant"].sel(layer="embedding") == 1).all() and (rep["constant"].sel(layer="encoder1") == 0).all()
    assert rep["probe_accuracy"].sel(layer="embedding").isnull().all()
    assert rep["h_score"].sel(layer="embedding").isnull().all()
    assert "undefined: constant features" in (out / "report.md").read_text()
