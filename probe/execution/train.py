"""Training one network of the protocol: copy, freeze, re-initialize, train, checkpoint every epoch, test.

Per Yosinski et al. (2014), Sec. 2: a selffer (BnB) or transfer (AnB) network copies layers 1..n from a base
network and re-initializes layers n+1..L; the copied layers are frozen, or fine-tuned ("+") at the same learning
rate as the new layers. The random-weights baseline (RnB) keeps layers 1..n at their random initialization, frozen.
A source-transfer network (SnB, SnB+) copies layers 1..n from a source network file instead
(:mod:`probe.planning.source`).
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from probe.architectures.build import build_model
from probe.architectures.layered import LayeredNet
from probe.architectures.rescale import apply_dose, match_scale
from probe.data.tasks import TaskData
from probe.errors import ProbeError
from probe.execution.batches import Normalize, center_crop, random_crop_flip, to_device
from probe.planning.source import load_source_layers
from probe.specs.spec import NetworkSpec, Recipe
from probe.storage.atomic import remove_leftover_temporaries, write_json
from probe.storage.checkpoint import (
    UnusableResume,
    checkpoint_error,
    load_state,
    load_tensors,
    load_weights,
    resume_epoch,
    save_tensors,
)
from probe.storage.lock import NetworkBusy, note_holder, training_lock
from probe.storage.run import NetworkFiles, Run
from probe.storage.state import is_finished

# Images per forward pass in evaluation. On a CPU a batch of 256 keeps a small network's activations in cache and
# evaluates about a quarter faster than 1024 (two cores, caffenet-small); a GPU wants the larger batch
EVAL_BATCH = {"cpu": 256, "cuda": 1024}


class TrainingDiverged(ProbeError):
    """The loss became NaN/infinite or exceeded the recipe's divergence threshold."""


class FinishedElsewhere(ProbeError):
    """The network turned out finished once its lock was taken: another process trained it since the caller
    looked."""


@dataclass
class TaskTensors:
    """A task's splits on the training device, and the normalization shared by every network of the run."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    normalize: Normalize

    @classmethod
    def from_task(cls, task: TaskData, mean: list[float], std: list[float], device: torch.device) -> TaskTensors:
        def y(a):
            return torch.as_tensor(a, dtype=torch.long).to(device)

        return cls(to_device(task.train_x, device), y(task.train_y), to_device(task.val_x, device), y(task.val_y),
                   to_device(task.test_x, device), y(task.test_y), Normalize(mean, std, device))


def check_device_name(name: str) -> None:
    """A device name's spelling (whether the device exists is up to the machine that runs the network)."""
    if name not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise ProbeError(f"device {name!r} is not one of auto, cpu, cuda (or cuda:N)")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeError(f"device {name!r} was asked for but torch sees no CUDA device here; use --device cpu")
    return torch.device(name)


def prepare_model(spec: NetworkSpec, run_dir: Path, batch: torch.Tensor | None = None) -> LayeredNet:
    """The network at the start of training: fresh from its init seed, with layers 1..cut copied from its parent
    base network (selffer, transfer) or its source network file (source), and frozen unless fine-tuned (random:
    frozen at their random values). A stitched network copies layers 1..cut from its parent and layers cut+1..L from
    its target task's base, and freezes them all: only its stitch trains. A dosed network's copied layer n is
    rescaled (:mod:`probe.architectures.rescale`). Under a recipe that matches the scale, a network that copies its
    layers 1..n and trains a fresh top has layer n+1's initial weights scaled on ``batch`` (:func:`boundary_batch`
    of its task), which it then needs."""
    model = build_model(spec)
    if spec.source_network is not None:
        load_source_layers(model, spec.source_network, spec.cut)
    bottom = list(model.prefix_state(spec.cut))
    if spec.parent is not None:
        _copy_from(model, spec, spec.parent, run_dir, bottom)
    if spec.dose is not None:  # the positive control: the copied layer n at another scale, before it is frozen
        apply_dose(model, spec.cut, spec.dose, spec.weight_seed)
    if spec.recipe.match_scale and spec.top_parent is None and (spec.parent or spec.source_network) is not None:
        if batch is None:
            raise ProbeError(f"{spec.id} matches its new layer's initial scale on its training images, but none "
                             "were given")
        # a network fresh throughout, from the same seed: where a base's layer n+1 started
        match_scale(model, build_model(spec), batch.detach().to("cpu", memory_format=torch.contiguous_format),
                    spec.cut)
    if spec.top_parent is not None:
        top = [k for k in model.prefix_state(len(model.layer_names)) if k not in set(bottom)]
        _copy_from(model, spec, spec.top_parent, run_dir, top)
        model.freeze_all_layers()
    elif spec.variant == "random" or (spec.cut and not spec.fine_tune):
        model.freeze(spec.cut)
    return model


def _copy_from(model: LayeredNet, spec: NetworkSpec, parent: NetworkSpec, run_dir: Path, keys: list[str]) -> None:
    """Copy the tensors ``keys`` of the trained base network ``parent`` into ``model`` (the network ``spec``)."""
    path = Run(run_dir).network(parent.id).weights
    if not path.exists():
        raise checkpoint_error(path, f"{spec.id} needs the trained weights of {parent.id}, which are missing ({path})")
    state, _, _ = load_weights(path, parent)
    load_state(model, state, path, keys)


def make_optimizer(model: LayeredNet, spec: NetworkSpec) -> torch.optim.SGD:
    """SGD over the trainable parameters, with Caffe's per-parameter multipliers and the fine-tuning scale."""
    r = spec.recipe
    copied, upper = model.parameter_groups(spec.cut)
    biases = {id(p) for name, p in model.named_parameters() if name.endswith(".bias")}
    groups = []
    for params, scale in ((copied, r.finetune_lr_scale), (upper, 1.0)):
        for is_bias in (False, True):
            ps = [p for p in params if p.requires_grad and (id(p) in biases) == is_bias]
            if ps:
                lr_scale = scale * (r.bias_lr_scale if is_bias else 1.0)
                decay = 0.0 if is_bias and not r.bias_weight_decay else r.weight_decay
                groups.append({"params": ps, "lr": r.lr * lr_scale, "lr_scale": lr_scale, "weight_decay": decay})
    return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum)


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning-rate multiplier at ``step`` of ``total_steps``: the schedule, times the linear warm-up."""
    warm = min(1.0, (step + 1) / (recipe.warmup * total_steps)) if recipe.warmup > 0 else 1.0
    if recipe.schedule == "constant":
        return warm
    if recipe.schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return warm * recipe.lr_gamma ** math.floor(step / (recipe.lr_step_every * total_steps) + 1e-9)


@dataclass(frozen=True)
class Evaluation:
    """Per class (label order): the images classified correctly and the images there are; and the mean
    cross-entropy over them. Top-1 counts every image alike, so on an imbalanced test set it mostly measures the large
    classes; the class-balanced accuracy (the mean per-class recall over the classes present) weighs every class
    alike."""

    correct: list[int]
    count: list[int]
    loss: float = math.nan

    @property
    def top1(self) -> float:
        total = sum(self.count)
        return sum(self.correct) / total if total else float("nan")

    @property
    def balanced(self) -> float:
        recalls = [c / n for c, n in zip(self.correct, self.count) if n]
        return sum(recalls) / len(recalls) if recalls else float("nan")


@torch.inference_mode()
def evaluate_classes(model: LayeredNet, x: torch.Tensor, y: torch.Tensor, normalize: Normalize,
                     input_size: int) -> Evaluation:
    """Per-class correct and total counts and the mean loss on center crops, in eval mode, without autograd: one pass
    gives top-1, the class-balanced and the per-class accuracy. Classes are the model's outputs."""
    was_training = model.training
    model.eval()
    correct = count = None
    loss = torch.zeros((), device=x.device)
    step = EVAL_BATCH.get(x.device.type, EVAL_BATCH["cpu"])
    for i in range(0, len(y), step):
        batch = normalize(center_crop(x[i: i + step], input_size))
        logits = model(batch.contiguous(memory_format=torch.channels_last))
        labels = y[i: i + step]
        # counted on the device and read back once, not once per batch
        hit = torch.bincount(labels[logits.argmax(1) == labels], minlength=logits.shape[1])
        seen = torch.bincount(labels, minlength=logits.shape[1])
        correct, count = (hit, seen) if correct is None else (correct + hit, count + seen)
        loss += F.cross_entropy(logits.float(), labels, reduction="sum")
    model.train(was_training)
    if correct is None:
        return Evaluation([], [])
    return Evaluation(correct.tolist(), count.tolist(), loss.item() / len(y))


# The images of the fixed batch the cut's records are measured on: the same for every network of a task (drawn from
# a constant seed, not the network's), so a cut network's values sit beside its base's on the same images
BOUNDARY_IMAGES = 256


def boundary_batch(data: TaskTensors, input_size: int) -> torch.Tensor:
    """The fixed batch of training images (center crops, normalized) the cut's records are measured on."""
    n = len(data.train_y)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:BOUNDARY_IMAGES].to(data.train_x.device)
    return data.normalize(center_crop(data.train_x[idx], input_size)).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def boundary(model: LayeredNet, batch: torch.Tensor) -> dict[str, dict[str, float]]:
    """What each layer hands the layer above, on ``batch`` in eval mode, at every cut point: ``scale``, the RMS of
    the layer's output, and ``dead``, the fraction of its units (channels; a token layer's features) never positive on
    the batch, which after a ReLU are units that pass nothing on. A cut network whose new layer receives inputs of
    another scale than its base's, or whose units died, shows here where its optimization differs."""
    was_training = model.training
    model.eval()
    _, outputs = model.forward_intermediates(batch)
    model.train(was_training)
    out = {}
    for name, a in outputs.items():
        a = a.float()
        unit_dim = a.dim() - 1 if a.dim() == 3 else 1  # (N, T, D) tokens: the features; (N, C, ...): the channels
        active = (a > 0).movedim(unit_dim, 0).reshape(a.shape[unit_dim], -1).any(1)
        out[name] = {"scale": a.pow(2).mean().sqrt().item(), "dead": 1.0 - active.float().mean().item()}
    return out


def evaluate(model: LayeredNet, x: torch.Tensor, y: torch.Tensor, normalize: Normalize, input_size: int) -> float:
    """Top-1 accuracy on center crops (NaN on no images): :func:`evaluate_classes` for a caller that needs only
    that."""
    return evaluate_classes(model, x, y, normalize, input_size).top1


def train_network(spec: NetworkSpec, data: TaskTensors, run_dir: Path, device: torch.device,
                  progress: bool = True) -> dict:
    """Train ``spec`` on ``data`` (its target task), resuming from its last finished epoch if one was saved.

    Writes the network's weights (with the spec and the input normalization in their metadata), spec.json and
    metrics.json into its folder and returns the metrics. Holds the network's lock throughout, so that no two
    processes ever train one network: raises :class:`probe.storage.lock.NetworkBusy` when another process holds it, and
    :class:`FinishedElsewhere` when, once it is taken, the network is found finished. Raises
    :class:`TrainingDiverged` when the loss blows up."""
    files = Run(run_dir).network(spec.id)
    with training_lock(files, spec.id):
        # Whoever checked the network's state before calling did so without the lock; its holder may have
        # finished the network since.
        if is_finished(files, spec):
            raise FinishedElsewhere(f"{spec.id} was finished by another process meanwhile")
        return _train_locked(spec, data, files, run_dir, device, progress)


def _train_locked(spec: NetworkSpec, data: TaskTensors, files: NetworkFiles, run_dir: Path, device: torch.device,
                  progress: bool) -> dict:
    """The body of :func:`train_network`, once it holds the network's lock."""
    # a process killed while writing one of these files left its temporary beside it; nothing else writes them now
    for path in files.written_in_training:
        remove_leftover_temporaries(path)
    write_json(files.spec, spec.to_dict())
    note_holder(files)
    try:
        started, started_at = time.perf_counter(), time.time()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            _seed_global_rng(spec)
            model, history, resumed_at, earlier, spans = _train_epochs(spec, data, files, run_dir, device, progress,
                                                                       started, started_at)

        test = evaluate_classes(model, data.test_x, data.test_y, data.normalize, spec.input_size)
        # the loss on the training set as the network sees it at test time (no augmentation, no dropout): whether it
        # fits its training set, apart from the epochs' running mean under augmentation
        fit = evaluate_classes(model, data.train_x, data.train_y, data.normalize, spec.input_size)
        # where it started, rebuilt (the same weights, copied and drawn) rather than carried through a resume
        fixed = boundary_batch(data, spec.input_size)
        initial = boundary(prepare_model(spec, run_dir, fixed).to(device, memory_format=torch.channels_last), fixed)
        save_tensors(files.weights, model.state_dict(), spec, normalization=data.normalize.stats)
        finished = time.time()
        classes = list(spec.target_classes)
        train_counts = torch.bincount(data.train_y, minlength=len(classes)).tolist()
        metrics = {"id": spec.id, "name": spec.name, "status": "done",
                   # test_acc is top-1, the paper's measure; the balanced accuracy weighs every class alike
                   "test_acc": test.top1, "test_balanced_acc": test.balanced, "test_loss": test.loss,
                   "train_eval_loss": fit.loss, "train_eval_acc": fit.top1, "boundary_initial": initial,
                   "val_acc": history[-1]["val_acc"] if history else None,
                   "val_balanced_acc": history[-1].get("val_balanced_acc") if history else None,
                   "test_per_class": {"classes": classes, "correct": test.correct, "count": test.count},
                   "train_class_counts": dict(zip(classes, train_counts)), "epochs": history,
                   "n_train": len(data.train_y), "n_val": len(data.val_y), "n_test": len(data.test_y),
                   "device": str(device),
                   # seconds: training time over every session, and sessions: their wall-clock [start, end] spans;
                   # started_at: this session's start, which resumed after epoch ``resumed_at_epoch`` (0: fresh)
                   "seconds": earlier + time.perf_counter() - started, "started_at": started_at,
                   "finished_at": finished, "resumed_at_epoch": resumed_at,
                   "sessions": [*spans, [started_at, finished]]}
        write_json(files.metrics, metrics)
        files.resume.unlink(missing_ok=True)
    finally:
        files.running.unlink(missing_ok=True)
    return metrics


def _seed_global_rng(spec: NetworkSpec) -> None:
    """Dropout draws from torch's global generators: train_network forks them, seeds them from the spec, and saves
    them with every epoch, so a network's weights depend on its spec alone, resumed or not."""
    torch.manual_seed(spec.weight_seed * 1_000_003 + 29)


def _fresh_start(spec: NetworkSpec, run_dir: Path, device: torch.device,
                 batch: torch.Tensor) -> tuple[LayeredNet, torch.optim.SGD, torch.Generator]:
    """The model, optimizer and data-order generator before the first epoch."""
    # Channels-last lets oneDNN (CPU) and cuDNN (tensor cores) skip layout conversions in every convolution.
    model = prepare_model(spec, run_dir, batch).to(device, memory_format=torch.channels_last)
    return model, make_optimizer(model, spec), torch.Generator().manual_seed(spec.weight_seed * 1_000_003 + 17)


def _train_epochs(spec: NetworkSpec, data: TaskTensors, files: NetworkFiles, run_dir: Path, device: torch.device,
                  progress: bool, started: float,
                  started_at: float) -> tuple[LayeredNet, list[dict], int, float, list[list[float]]]:
    """The epochs still to run (all, or those after the last saved one), saving resume state after each; returns
    the model, the history of every epoch, the epoch it resumed after (0 when it started fresh), and the seconds
    and wall-clock spans of the earlier sessions that trained it."""
    r = spec.recipe
    fixed = boundary_batch(data, spec.input_size)
    model, optimizer, generator, start_epoch, history, earlier, spans = _start(spec, files, run_dir, device, fixed)
    steps_per_epoch = max(1, math.ceil(len(data.train_y) / r.batch_size))
    bar = tqdm(total=r.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc=spec.id, unit="step",
               leave=False, disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, r.epochs):
            loss, acc = _train_epoch(spec, data, model, optimizer, generator, epoch, steps_per_epoch, device, bar)
            val = evaluate_classes(model, data.val_x, data.val_y, data.normalize, spec.input_size)
            # the base learning rate of the epoch's last step: the parameter groups' own are scaled (biases by
            # bias_lr_scale, copied layers by finetune_lr_scale)
            lr = r.lr * lr_factor(r, (epoch + 1) * steps_per_epoch - 1, r.epochs * steps_per_epoch)
            history.append({"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "val_acc": val.top1,
                            "val_balanced_acc": val.balanced, "val_loss": val.loss, "lr": lr,
                            "boundary": boundary(model, fixed)})
            bar.set_postfix(val=f"{history[-1]['val_acc']:.3f}")
            _save_resume(files.resume, spec, model, optimizer, generator, epoch + 1, history,
                         earlier + time.perf_counter() - started, [*spans, [started_at, time.time()]])
    finally:
        bar.close()
    return model, history, start_epoch, earlier, spans


def _start(spec: NetworkSpec, files: NetworkFiles, run_dir: Path, device: torch.device, batch: torch.Tensor):
    """The model, optimizer and generator to train with, fresh or as the resume file left them, with the epochs
    done, their history, and the seconds and sessions spent on them."""
    model, optimizer, generator = _fresh_start(spec, run_dir, device, batch)
    if not files.resume.exists():
        return model, optimizer, generator, 0, [], 0.0, []
    try:
        return (model, optimizer, generator, *_resume(files.resume, spec, model, optimizer, generator))
    except UnusableResume as e:
        # Such a file holds nothing that could be kept; a refusal would only leave the user to delete it. Start
        # over from fresh objects and seeds: _resume may have loaded part of the file before it failed.
        tqdm.write(str(e), file=sys.stderr)
        files.resume.unlink()
        _seed_global_rng(spec)
        return (*_fresh_start(spec, run_dir, device, batch), 0, [], 0.0, [])


def _train_epoch(spec: NetworkSpec, data: TaskTensors, model: LayeredNet, optimizer: torch.optim.SGD,
                 generator: torch.Generator, epoch: int, steps_per_epoch: int, device: torch.device,
                 bar: tqdm) -> tuple[float, float]:
    """One epoch of SGD over the task's training images in a seeded order: its mean loss and accuracy."""
    r = spec.recipe
    n, total = len(data.train_y), r.epochs * steps_per_epoch
    model.train()
    order = torch.randperm(n, generator=generator).to(device)
    # BatchNorm cannot normalize a batch of one image (a stitch's, or a torchvision network's): such a last batch
    # is left out, and the epoch's loss and accuracy are over the images trained on
    batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
    loss_sum = correct = 0.0
    seen = 0
    for i in range(steps_per_epoch):
        step = epoch * steps_per_epoch + i
        for g in optimizer.param_groups:
            g["lr"] = r.lr * g["lr_scale"] * lr_factor(r, step, total)
        idx = order[i * r.batch_size: (i + 1) * r.batch_size]
        if batchnorm and len(idx) < 2:
            bar.update()
            continue
        x = random_crop_flip(data.train_x[idx], spec.input_size, r.crop_padding, r.flip, generator)
        x = data.normalize(x).contiguous(memory_format=torch.channels_last)
        y = data.train_y[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        value = loss.item()
        if not math.isfinite(value) or value > r.diverge_loss:
            raise TrainingDiverged(
                f"{spec.id} diverged at epoch {epoch + 1}, step {i + 1}: loss {value:.4g} "
                f"(lr {r.lr}; train a new run directory with a smaller --lr, a --warmup or another --init)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += value * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.update()
    return loss_sum / seen, correct / seen


def record_failure(run_dir: Path, spec: NetworkSpec, error: str) -> None:
    """Mark a network failed (it is retried on the next run, from scratch or its last epoch), under its lock: the
    failed attempt released the lock when it raised, and another process may hold it by now, training the network
    again with its own running.json; then that attempt decides, and nothing is written or removed here. Nor is a
    network that finished in the meantime marked failed."""
    files = Run(run_dir).network(spec.id)
    try:
        with training_lock(files, spec.id):
            if is_finished(files, spec):
                return
            write_json(files.metrics, {"id": spec.id, "name": spec.name, "status": "failed", "error": error})
            files.running.unlink(missing_ok=True)
    except NetworkBusy:
        return


def model_device(model: LayeredNet) -> torch.device:
    return next(model.parameters()).device


def _save_resume(path: Path, spec: NetworkSpec, model: LayeredNet, optimizer: torch.optim.SGD,
                 generator: torch.Generator, epoch: int, history: list[dict], seconds: float,
                 sessions: list[list[float]]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): k for k, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{names[id(p)]}"] = buf
    tensors["generator"] = generator.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    if model_device(model).type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(model_device(model))
    save_tensors(path, tensors, spec, epoch=epoch, history=history, seconds=seconds, sessions=sessions)


def _resume(path: Path, spec: NetworkSpec, model: LayeredNet, optimizer: torch.optim.SGD,
            generator: torch.Generator) -> tuple[int, list[dict], float, list[list[float]]]:
    """Load the resume file into the model, the optimizer and the generators: returns the epoch, the history, and
    the seconds and sessions so far. Raises UnusableResume for a file that cannot be used, and ProbeError for one
    saved for other settings (kept: the plan changed, not the file, and a fitting plan may resume it)."""
    try:
        tensors, saved, meta = load_tensors(path)
    except ProbeError as e:
        raise UnusableResume(str(e)) from None
    if saved != spec:
        raise ProbeError(f"{path} was saved for other settings than the planned {spec.id}; delete it to retrain")
    try:
        epoch = resume_epoch(path, meta)
        history = list(meta["history"])
        seconds, sessions = float(meta.get("seconds", 0.0)), [list(span) for span in meta.get("sessions", [])]
        load_state(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, path)
        _load_momentum(optimizer, model, tensors)
        generator.set_state(tensors["generator"])
        torch.set_rng_state(tensors["torch_rng"])
        if "cuda_rng" in tensors and model_device(model).type == "cuda":
            torch.cuda.set_rng_state(tensors["cuda_rng"], model_device(model))
    except ProbeError as e:  # says what is wrong with the file and what happens
        raise UnusableResume(str(e)) from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # an entry missing, or of the wrong kind
        why = f"it has no {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        raise checkpoint_error(path, f"resume file {str(path)!r} cannot be used ({why})", UnusableResume) from None
    return epoch, history, seconds, sessions


def _load_momentum(optimizer: torch.optim.SGD, model: LayeredNet, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for k, v in tensors.items():
        if k.startswith("momentum."):
            param = params[k[len("momentum."):]]
            if v.shape != param.shape:
                raise ValueError(f"{k} has shape {list(v.shape)}, its parameter {list(param.shape)}")
            optimizer.state[param]["momentum_buffer"] = v.to(param.device)
