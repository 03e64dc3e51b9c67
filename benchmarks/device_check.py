"""One run that says what a machine does with probe: GPU or CPU, every figure in one JSON file and one table.

    python benchmarks/device_check.py                 # what `make gpu-check` runs
    python benchmarks/device_check.py --quick --device cpu --out /tmp/check.json     # seconds, on any CPU

First it makes sure probe can run here, with no package registry: every requirement of probe's that this Python
lacks is installed from the wheels carried in the working tree (``--wheels``, default ``wheels/``, filled by
``make gpu-wheels`` on a machine that reaches PyPI) with ``pip install --no-index``, and probe itself with ``pip
install --no-deps -e .``; what is missing and not among the wheels stops the check in one line saying so. The
device machines of this project's workplace have torch, torchvision, numpy, xarray, scikit-learn and matplotlib but
no zarr and no dask (:data:`DEVICE_WHEELS`).

Then, on ``--device`` (auto: CUDA when torch sees it), it measures:

- training throughput, images/s, of caffenet-small on 32-pixel RGB images at each ``--width`` and
  ``--batch-size``: probe's own training loop (``_train_epoch``: batch crops and mirroring on the device,
  channels-last, bf16 autocast on CUDA, the loss read back every step), after a warm-up;
- evaluation throughput, images/s, of the same networks (``evaluate_classes``, in probe's evaluation batches);
- one tiny protocol run end to end: ``probe train RUN --device auto`` on the synthetic dataset (bases, BnB and AnB
  at two cuts: ten networks), its wall time and what each network reports.

Prints a table and writes JSON to benchmarks/results/<device>-<date>-device-check.json (``--out`` elsewhere), with
the device, torch's version and every figure. ``--quick`` (one small network, two steps, four networks in the
protocol run) is what the test suite runs on the CPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DISTRIBUTION = "probe-transfer"
# The wheels `make gpu-wheels` fetches: probe's requirements (and theirs) that the device machines' image lacks, read
# off that image's package list (zarr and dask with what they need beyond it; setuptools builds probe's editable
# install in pip's isolated environment). Pinned to this checkout's .venv by `make gpu-wheels`.
DEVICE_WHEELS = ("zarr", "numcodecs", "donfig", "google-crc32c", "dask", "distributed", "partd", "locket", "tblib",
                 "zict", "tornado", "setuptools")
REEXEC = "PROBE_DEVICE_CHECK_INSTALLED"  # set when the check restarted itself after installing: what it installed
# Sizes per device: a GPU's full table; on a CPU (no --quick) fewer and smaller, to finish in a few minutes on two cores
FULL = {"cuda": {"widths": [0.25, 0.5, 1.0], "batch_sizes": [64, 256, 1024], "steps": 30, "warmup_steps": 5,
                 "eval_images": 20_000},
        "cpu": {"widths": [0.25, 0.5], "batch_sizes": [64, 256], "steps": 8, "warmup_steps": 2, "eval_images": 2_000}}
QUICK = {"widths": [0.125], "batch_sizes": [16], "steps": 2, "warmup_steps": 1, "eval_images": 64}
PROTOCOL = ["--dataset", "synthetic", "--image-size", "32", "--split", "random", "--seeds", "0", "--arch",
            "caffenet-small", "--schedule", "cosine", "--lr", "0.02", "--warmup", "0.2", "--crop-padding", "2"]
PROTOCOL_FULL = ["--cuts", "1,7", "--variants", "BnB,AnB", "--arch-option", "width=0.5", "--epochs", "3",
                 "--batch-size", "64"]
PROTOCOL_QUICK = ["--cuts", "1", "--variants", "BnB", "--arch-option", "width=0.125", "--epochs", "1",
                  "--batch-size", "16", "--train-per-class", "10"]


class CheckError(SystemExit):
    """Stops the check with one line (exit status 2)."""

    def __init__(self, message: str):
        print(f"device_check: {message}", file=sys.stderr)
        super().__init__(2)


# ---- what this Python lacks, and installing it from the carried wheels (standard library only) ----

def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """probe's requirement strings, as pyproject.toml's [project] dependencies list them."""
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # 3.10: the list as pyproject.toml writes it, closed by a ']' that starts a line
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", pyproject.read_text(), re.S | re.M)
        return re.findall(r"\"([^\"]+)\"", block.group(1)) if block else []
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def distributions(requirement: str) -> list[str]:
    """The distributions a requirement string needs present: its own, and dask's ``distributed`` extra."""
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(\[([^\]]*)\])?", requirement)
    name, extras = m.group(1), [e.strip() for e in (m.group(3) or "").split(",") if e.strip()]
    return [name, *(e for e in extras if name.lower() == "dask" and e == "distributed")]


def installed(name: str) -> bool:
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def missing_requirements(reqs: list[str]) -> list[str]:
    """The requirement strings some distribution of which is not installed in this Python."""
    return [r for r in reqs if not all(installed(d) for d in distributions(r))]


def probe_is_this_checkout() -> bool:
    """Whether ``import probe`` here gives this working tree's package."""
    if not installed(DISTRIBUTION):
        return False
    try:
        spec = importlib.util.find_spec("probe")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None and Path(spec.origin).resolve().parent == REPO / "probe"


def wheels_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.whl")) if folder.is_dir() else []


def install_commands(missing: list[str], probe_missing: bool, wheels: Path) -> list[list[str]]:
    """The pip commands that install ``missing`` requirements from ``wheels`` (no index) and, when
    ``probe_missing``, this checkout without its dependencies (editable)."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
           "--find-links", str(wheels)]
    commands = [[*pip, *missing]] if missing else []
    if probe_missing:
        # setuptools for pip's isolated build comes from the wheels; without one there, the installed setuptools
        isolation = [] if any(w.name.startswith("setuptools-") for w in wheels_in(wheels)) else ["--no-build-isolation"]
        commands.append([*pip, "--no-deps", *isolation, "-e", str(REPO)])
    return commands


def ensure_packages(wheels: Path, reqs: list[str] | None = None) -> list[str]:
    """Install what probe needs and this Python lacks from ``wheels``; returns what was installed (empty when
    nothing was missing). Stops with one line when something is missing and no wheels are there, or when pip
    cannot install it from them."""
    missing = missing_requirements(requirements() if reqs is None else reqs)
    probe_missing = reqs is None and not probe_is_this_checkout()
    if not missing and not probe_missing:
        return []
    names = ", ".join([*missing, *(["probe (this checkout)"] if probe_missing else [])])
    if missing and not wheels_in(wheels):
        raise CheckError(f"{names} missing in {sys.executable} and no wheels in {wheels}/: run 'make gpu-wheels' "
                         f"on a machine that reaches PyPI (it fills {wheels.name}/), bring {wheels.name}/ here with "
                         "the working tree, and run this again")
    print(f"device_check: installing {names} from {wheels}/ (no index)", file=sys.stderr)
    for command in install_commands(missing, probe_missing, wheels):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise CheckError(f"pip could not install {' '.join(command[command.index(str(wheels)) + 1:])} from "
                             f"{wheels}/ ({why}); 'make gpu-wheels GPU_PYTHON={sys.version_info.major}."
                             f"{sys.version_info.minor}' fetches them for this Python")
    return [*missing, *(["probe"] if probe_missing else [])]


def pins(names: tuple[str, ...] = DEVICE_WHEELS) -> list[str]:
    """``NAME==VERSION`` of each of ``names`` as installed here (a name not installed here: unpinned)."""
    return [f"{n}=={metadata.version(n)}" if installed(n) else n for n in names]


# ---- the measurements ----

def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_spec(width: float, batch_size: int, classes: int = 5):
    from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec, Recipe

    names = [f"class{i}" for i in range(2 * classes)]
    return NetworkSpec(data=DataSpec("synthetic", image_size=32), split="random", split_seed=0, target="B",
                       arch=ArchSpec("caffenet-small", "kaiming", {"width": width}), classes_a=names[:classes],
                       classes_b=names[classes:], in_channels=3, input_size=32,
                       # random labels: a small step (the speed does not depend on it) keeps the loss finite
                       recipe=Recipe(epochs=1, batch_size=batch_size, lr=1e-3, schedule="constant", crop_padding=4,
                                     diverge_loss=1e30))


def random_task(n: int, classes: int, device, seed: int = 0):
    """``n`` random 32-pixel RGB uint8 images with labels, as probe's training keeps them on the device."""
    import torch

    from probe.execution.batches import Normalize
    from probe.execution.train import TaskTensors

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, classes, (n,), generator=g).to(device)
    return TaskTensors(x, y, x[:0], y[:0], x, y, Normalize([0.5] * 3, [0.25] * 3, device))


def train_throughput(width: float, batch_size: int, steps: int, warmup_steps: int, device) -> dict:
    """Images/s of probe's training loop for one width and batch size (after ``warmup_steps`` untimed steps)."""
    import torch
    from tqdm import tqdm

    from probe.execution.train import _train_epoch, make_optimizer, prepare_model

    spec = network_spec(width, batch_size)
    model = prepare_model(spec, REPO).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(0)
    bar = tqdm(disable=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _train_epoch(spec, random_task(batch_size * warmup_steps, 5, device, 1), model, optimizer, generator, 0,
                 warmup_steps, device, bar)
    data = random_task(batch_size * steps, 5, device)
    synchronize(device)
    start = time.perf_counter()
    _train_epoch(spec, data, model, optimizer, generator, 0, steps, device, bar)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"width": width, "batch_size": batch_size, "steps": steps, "images": batch_size * steps,
            "seconds": seconds, "img_s": batch_size * steps / seconds,
            "parameters": sum(p.numel() for p in model.parameters()), "peak_mib": peak}


def eval_throughput(width: float, images: int, device) -> dict:
    """Images/s of probe's evaluation (center crops, eval mode, its evaluation batches) for one width."""
    import torch

    from probe.execution.train import EVAL_BATCH, evaluate_classes, prepare_model

    spec = network_spec(width, 64)
    model = prepare_model(spec, REPO).to(device, memory_format=torch.channels_last)
    data = random_task(images, 5, device)
    evaluate_classes(model, data.test_x[:256], data.test_y[:256], data.normalize, 32)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    evaluate_classes(model, data.test_x, data.test_y, data.normalize, 32)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"width": width, "images": images, "batch_size": EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"]),
            "seconds": seconds, "img_s": images / seconds}


def protocol_run(options: list[str], device_name: str) -> dict:
    """``probe train`` of a tiny study with ``--device`` ``device_name`` in a child process: wall time and what
    every network reports."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "probe.cli.main", "train", str(run), *PROTOCOL, *options,
                   "--device", device_name, "--cache-dir", str(Path(tmp) / "cache"), "--quiet"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise CheckError(f"the protocol run failed (exit {done.returncode}):\n{tail}")
        metrics = [json.loads(p.read_text()) for p in sorted(run.glob("networks/**/metrics.json"))]
    networks = [{"name": m["name"], "id": m["id"], "status": m["status"], "device": m.get("device"),
                 "seconds": m.get("seconds"), "test_acc": m.get("test_acc"), "epochs": len(m.get("epochs", []))}
                for m in metrics]
    trained = [n for n in networks if n["status"] == "done"]
    return {"command": ["probe", "train", "RUN", *PROTOCOL, *options, "--device", device_name],
            "wall_seconds": wall, "networks": len(networks), "networks_done": len(trained),
            "devices": sorted({n["device"] for n in trained}),
            "network_seconds": sum(n["seconds"] or 0.0 for n in trained), "per_network": networks,
            "summary": done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""}


def versions(names: list[str]) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--wheels", type=Path, default=REPO / "wheels",
                   help="folder of wheels to install missing packages from (default: wheels/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds on a CPU (the test suite's mode)")
    p.add_argument("--width", dest="widths", type=float, action="append", help="caffenet-small width (repeatable)")
    p.add_argument("--batch-size", dest="batch_sizes", type=int, action="append", help="batch size (repeatable)")
    p.add_argument("--steps", type=int, help="timed training steps per width and batch size")
    p.add_argument("--eval-images", type=int, help="images per evaluation measurement")
    p.add_argument("--no-protocol", action="store_true", help="leave out the protocol run")
    p.add_argument("--no-install", action="store_true", help="install nothing, even where packages are missing")
    p.add_argument("--pins", action="store_true",
                   help="print the wheels 'make gpu-wheels' fetches, pinned to this Python's versions, and stop")
    p.add_argument("--out", type=Path, help="JSON path (default: benchmarks/results/<device>-<date>-device-check.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.pins:
        print(" ".join(pins()))
        return {}
    if not args.no_install:
        just = ensure_packages(args.wheels)
        if just:  # a fresh interpreter sees the editable install's path hook and the new packages
            env = {**os.environ, REEXEC: ",".join(filter(None, [os.environ.get(REEXEC, ""), *just]))}
            if os.environ.get(REEXEC) is None:
                os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench import cpu_name, print_table

    from probe.execution.train import resolve_device

    device = resolve_device(args.device)
    sizes = dict(QUICK if args.quick else FULL.get(device.type, FULL["cpu"]))
    for key in ("widths", "batch_sizes", "steps", "eval_images"):
        if getattr(args, key):
            sizes[key] = getattr(args, key)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device_check: {name} ({device}), torch {torch.__version__}, Python {platform.python_version()}",
          file=sys.stderr)
    started = time.perf_counter()
    train = [train_throughput(w, b, sizes["steps"], sizes["warmup_steps"], device)
             for w in sizes["widths"] for b in sizes["batch_sizes"]]
    evaluation = [eval_throughput(w, sizes["eval_images"], device) for w in sizes["widths"]]
    protocol = None if args.no_protocol else protocol_run(PROTOCOL_QUICK if args.quick else PROTOCOL_FULL,
                                                          args.device)
    result = {
        "benchmark": "device_check", "mode": "quick" if args.quick else "full",
        "date": datetime.date.today().isoformat(), "device": str(device), "device_name": name,
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "gpu_count": torch.cuda.device_count(), "threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
        "cores": os.cpu_count(), "packages": versions([DISTRIBUTION, "torchvision", "numpy", "zarr", "numcodecs",
                                                       "xarray", "dask", "distributed"]),
        "installed_from_wheels": [p for p in os.environ.get(REEXEC, "").split(",") if p],
        "arch": "caffenet-small", "input": "32x32x3 uint8, random", "train": train, "eval": evaluation,
        "protocol": protocol, "seconds": time.perf_counter() - started}
    print_table(train, [("width", "width", "g"), ("batch", "batch_size", "d"), ("train img/s", "img_s", ".0f"),
                        ("seconds", "seconds", ".2f"), ("params", "parameters", "d")])
    print_table(evaluation, [("width", "width", "g"), ("eval batch", "batch_size", "d"),
                             ("eval img/s", "img_s", ".0f"), ("seconds", "seconds", ".2f")])
    if protocol:
        print(f"protocol run: {protocol['networks_done']} of {protocol['networks']} networks on "
              f"{', '.join(protocol['devices'])} in {protocol['wall_seconds']:.1f} s wall "
              f"({protocol['network_seconds']:.1f} s training them)")
    out = args.out or RESULTS / f"{device.type}-{result['date']}-device-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
