"""benchmarks/device_check.py (`make gpu-check`): its tiny CPU mode end to end, and how it installs what is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run_writes_every_figure(tmp_path):
    out = tmp_path / "check.json"
    # --no-install: a test leaves the environment as it found it (installing is tested below, piece by piece)
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out),
                           "--no-install"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    r = json.loads(out.read_text())
    assert r["benchmark"] == "device_check" and r["mode"] == "quick"
    assert r["device"] == "cpu" and r["device_name"] and r["gpu_count"] == torch.cuda.device_count()
    assert r["torch"] == torch.__version__ and r["python"] == ".".join(map(str, sys.version_info[:3]))
    assert r["packages"]["probe-transfer"] and r["packages"]["zarr"] and r["installed_from_wheels"] == []
    assert [(t["width"], t["batch_size"]) for t in r["train"]] == [(0.125, 16)]
    assert all(t["img_s"] > 0 and t["images"] == 32 and t["parameters"] > 0 for t in r["train"])
    assert [e["width"] for e in r["eval"]] == [0.125] and r["eval"][0]["img_s"] > 0 and r["eval"][0]["images"] == 64
    p = r["protocol"]
    assert p["networks"] == p["networks_done"] == 4 and p["devices"] == ["cpu"]  # baseA, baseB, B1B, A1A
    assert sorted(n["name"] for n in p["per_network"]) == ["A1A", "B1B", "baseA", "baseB"]
    assert all(0 <= n["test_acc"] <= 1 and n["epochs"] == 1 for n in p["per_network"])
    assert p["wall_seconds"] > 0 and p["command"][:2] == ["probe", "train"] and "--device" in p["command"]
    assert "train img/s" in done.stdout and "eval img/s" in done.stdout and "protocol run: 4 of 4" in done.stdout


def test_requirements_come_from_pyproject(check):
    reqs = check.requirements()
    assert any(r.startswith("zarr") for r in reqs) and any(r.startswith("torch") for r in reqs)
    assert any(r.startswith("dask[distributed]") for r in reqs)
    assert check.distributions("dask[distributed]>=2024.8") == ["dask", "distributed"]
    assert check.distributions("zarr>=3") == ["zarr"]
    assert check.missing_requirements(reqs) == []  # this test environment has them all
    assert all("==" in p for p in check.pins(("zarr", "dask"))) and check.pins(("surely-absent-xyz",)) == [
        "surely-absent-xyz"]


def test_missing_package_without_wheels_stops_in_one_line(check, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        check.ensure_packages(tmp_path / "wheels", ["surely-absent-xyz>=1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "surely-absent-xyz>=1 missing" in err and "make gpu-wheels" in err


def test_missing_package_not_among_the_wheels_says_which(check, tmp_path, capsys):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "other-1.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        check.ensure_packages(wheels, ["surely-absent-xyz>=1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "pip could not install surely-absent-xyz>=1" in err and "make gpu-wheels GPU_PYTHON=" in err


def test_install_commands_use_the_wheels_alone(check, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    deps, probe = check.install_commands(["zarr>=3", "dask[distributed]>=2024.8"], True, wheels)
    assert deps[:3] == [sys.executable, "-m", "pip"] and "--no-index" in deps and deps[-2:] == [
        "zarr>=3", "dask[distributed]>=2024.8"]
    assert deps[deps.index("--find-links") + 1] == str(wheels)
    assert "--no-index" in probe and "--no-deps" in probe and probe[-2:] == ["-e", str(REPO_ROOT)]
    assert "--no-build-isolation" in probe  # no setuptools wheel: the installed setuptools builds it
    (wheels / "setuptools-80.0.0-py3-none-any.whl").write_bytes(b"")
    (probe,) = check.install_commands([], True, wheels)
    assert "--no-build-isolation" not in probe
    assert check.install_commands([], False, wheels) == []
