"""timm as a user meets it: ``--arch timm:NAME`` with timm's own cut points, a ViT whose forward takes optional
arguments, plan, train, extract and analyze on tiny models, and ``--source timm:NAME`` from a Hugging Face cache
planted in the test (nothing is downloaded). timm is installed with the test extra, so CI runs these for real."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_one_line_error

timm = pytest.importorskip("timm")

TINY = ["--dataset", "synthetic", "--epochs", "1", "--batch-size", "32", "--train-per-class", "20",
        "--test-per-class", "6", "--schedule", "cosine", "--lr", "0.02"]
RESNET = ["--arch", "timm:resnet18"]
VIT = ["--arch", "timm:vit_tiny_patch16_224", "--arch-option", "patch_size=4", "--arch-option", "depth=2",
       "--arch-option", "embed_dim=32", "--arch-option", "num_heads=2"]


@pytest.mark.parametrize("arch, layers", [(RESNET, ["act1", "layer1", "layer2", "layer3", "layer4"]),
                                          (VIT, ["blocks_0", "blocks_1"])])
def test_timm_models_plan_at_their_own_cut_points(cli, arch, layers):
    result = cli("plan", *TINY, *arch, "--variants", "BnB")
    assert result.exit_code == 0, result.output
    for n, layer in enumerate(layers, start=1):
        assert f"cut {n}: after {layer}" in result.output


def test_a_timm_vit_forward_with_optional_arguments_is_cut_and_computes_the_same(cli):
    from probe.architectures.adapter import layered_from_module

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=16, patch_size=4,
                              depth=2, embed_dim=32, num_heads=2).eval()
    net = layered_from_module(model, ["blocks.0", "blocks.1"]).eval()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-6)


def test_unknown_timm_models_and_missing_timm_are_one_line(cli, monkeypatch):
    assert_one_line_error(cli("plan", *TINY, "--arch", "timm:nosuchnet"), "nosuchnet", "timm.list_models")
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    assert_one_line_error(cli("plan", *TINY, "--arch", "timm:resnet18"), "timm is not installed",
                          "probe-transfer[timm]")


@pytest.mark.parametrize("arch", [RESNET, VIT], ids=["resnet", "vit"])
def test_timm_models_train_extract_and_analyze(tmp_path, cli, arch):
    run = tmp_path / "run"
    result = cli("train", run, *TINY, *arch, "--cuts", "1", "--variants", "BnB,AnB")
    assert result.exit_code == 0, result.output
    assert "failed 0, blocked 0" in result.output
    result = cli("extract", run, "--probe-set", "both", "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "failed 0" in result.output, result.output
    result = cli("analyze", run, "--max-samples", "30")
    assert result.exit_code == 0, result.output
    assert (run / "analysis" / "report.md").exists()


def test_source_timm_reads_weights_planted_in_a_hugging_face_cache(tmp_path, cli, monkeypatch):
    """--source timm:NAME finds the weights where huggingface_hub keeps them (HF_HOME), offline, and the frozen
    layers of SnB are the file's tensors, bit for bit."""
    from safetensors.torch import save_file

    from probe.planning.plan import read_plan
    from probe.storage.checkpoint import load_weights
    from probe.storage.run import Run

    name = "resnet18.a1_in1k"
    cfg = timm.models.get_pretrained_cfg(name)
    repo = cfg.hf_hub_id.partition("@")[0]
    home = tmp_path / "hf"
    snapshot = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (home / "hub" / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (home / "hub" / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    model = timm.create_model("resnet18", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(home))  # for a process that imports huggingface_hub afresh
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))  # for this one, already
    run = tmp_path / "run"
    result = cli("train", run, *TINY, *RESNET, "--source", f"timm:{name}", "--cuts", "2", "--variants", "SnB",
                 "--image-size", "32")
    assert result.exit_code == 0, result.output
    _, plan = read_plan(run)
    snb = next(p.spec for p in plan if p.spec.variant == "source")
    weights, _, _ = load_weights(Run(run).network(snb.id).weights, snb)
    from probe.architectures import build_model

    keys = build_model(snb).source_keys
    copied = [k for k in weights if k.startswith(("stages.act1.", "stages.layer1."))]
    assert copied and all(keys.get(k) in state for k in copied)
    assert all(torch.equal(weights[k], state[keys[k]]) for k in copied)  # the file's tensors, bit for bit
    assert snb.source_network.path.endswith("model.safetensors")
