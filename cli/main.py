"""The ``probe`` command: thin wrappers that parse options into specs and call the library."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields
from pathlib import Path

import click

from probe.errors import ProbeError
from probe.plan import Study, read_plan
from probe.run import Run
from probe.spec import INITS, SCHEDULES, UNREADABLE, ArchSpec, DataSpec, Recipe, check_seed
from probe.variants import CUT_NAMES

RECIPE_HELP = {
    "epochs": "Training epochs per network.",
    "batch_size": "Images per SGD step.",
    "lr": "Base learning rate.",
    "momentum": "SGD momentum.",
    "weight_decay": "L2 weight decay on weights.",
    "schedule": f"Learning-rate schedule: {', '.join(SCHEDULES)}.",
    "lr_step_every": "Step schedule: decay the learning rate after each such fraction of training.",
    "lr_gamma": "Step schedule: factor applied at each step.",
    "warmup": "Fraction of training over which the learning rate ramps up linearly from zero (0: none, as the paper).",
    "finetune_lr_scale": "Learning-rate factor for the copied layers of '+' networks (1 = same as new layers).",
    "bias_lr_scale": "Learning-rate factor for biases (Caffe's lr_mult 2).",
    "bias_weight_decay": "Apply weight decay to biases too (Caffe does not).",
    "crop_padding": "Random crops are taken from images zero-padded by this many pixels.",
    "crop_size": "Network input side (random crops in training, center crop in testing); default: image size.",
    "flip": "Mirror training images at random.",
    "diverge_loss": "A batch loss above this (or NaN) stops that network as diverged.",
}


def _recipe_options(f):
    """One option per Recipe field, with the Recipe's own default."""
    for field in reversed(fields(Recipe)):
        name = "--" + field.name.replace("_", "-")
        default = field.default
        if field.type in ("bool", bool):
            opt = click.option(f"{name}/--no-{field.name.replace('_', '-')}", f"recipe_{field.name}",
                               default=default, show_default=True, help=RECIPE_HELP[field.name])
        else:
            kind = {"int": int, "float": float, "str": str, "int | None": int}[field.type]
            if field.name == "schedule":
                kind = click.Choice(SCHEDULES)
            opt = click.option(name, f"recipe_{field.name}", type=kind, default=default,
                               show_default=default is not None, help=RECIPE_HELP[field.name])
        f = opt(f)
    return f


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(f"{what} {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def _seed_list(text: str, what: str) -> tuple[int, ...]:
    """Seeds checked here as well as in the specs: the seeds of a fixed split with --init-seeds go into no spec."""
    seeds = _int_list(text, f"{what}s")
    for seed in seeds:
        check_seed(what, seed)
    return seeds


def _cut_list(text: str) -> tuple[int, ...] | None:
    """``all`` (None: every cut point) or cut layers; an empty list would plan only the base networks."""
    if text == "all":
        return None
    cuts = _int_list(text, "cuts")
    if not cuts:
        raise click.BadParameter(f"cuts {text!r} must be comma-separated integers, e.g. 1,3,5, or all")
    return cuts


def parse_arch_options(pairs: tuple[str, ...]) -> dict:
    """``--arch-option KEY=VALUE`` pairs as a dict, each value read as JSON when it parses (``width=0.5``)."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise click.BadParameter(f"architecture option {pair!r} must look like KEY=VALUE, e.g. width=0.5")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def study_options(f):
    """The options that describe a study (shared by ``plan`` and ``train``)."""
    opts = [
        click.option("--dataset", default="fashion-mnist", show_default=True,
                     help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic (NAME:ROOT also works)."),
        click.option("--data-root", default=None, help="Where the dataset lives (torchvision root or image-folder "
                                                       "tree); Fashion-MNIST defaults to Debian's package."),
        click.option("--image-size", type=int, default=None, help="Resize and center-crop images to this side "
                                                                  "(image-folder trees of mixed sizes)."),
        click.option("--train-per-class", type=int, default=None, help="Use only this many training images per "
                                                                       "class (smoke runs). Default: all."),
        click.option("--val-fraction", type=float, default=0.1, show_default=True,
                     help="Fraction of train held out for validation."),
        click.option("--unreadable", type=click.Choice(UNREADABLE), default="error", show_default=True,
                     help="Image files of an image-folder tree that cannot be decoded: error stops at the first "
                          "and names it; skip leaves them out and says how many."),
        click.option("--split", "splits", multiple=True, default=("random",), show_default=True,
                     help="Class split (repeatable): random, vehicles-animals, clothing-accessories, "
                          "man-made-natural, natural-man-made or file:PATH."),
        click.option("--seeds", default="0", show_default=True,
                     help="Replicate seeds, comma-separated: each sets the random split and the init seed."),
        click.option("--init-seeds", default="", help="Init seeds, one per replicate seed, when they should differ."),
        click.option("--arch", default="caffenet-small", show_default=True, help="Architecture (see 'probe archs')."),
        click.option("--arch-option", "arch_option", multiple=True, default=(),
                     help="Architecture option KEY=VALUE (repeatable), e.g. width=0.25."),
        click.option("--init", type=click.Choice(INITS), default=None,
                     help="Initialization scheme. Default: the architecture's own."),
        click.option("--cuts", default="all", show_default=True, help="Cut layers n, comma-separated, or all."),
        click.option("--variants", default=",".join(CUT_NAMES), show_default=True,
                     help="Variants besides the base networks, comma-separated."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return _recipe_options(f)


def _study(kw: dict) -> Study:
    from probe.architectures import get_architecture

    recipe = Recipe(**{k[len("recipe_"):]: kw.pop(k) for k in list(kw) if k.startswith("recipe_")})
    arch = get_architecture(kw["arch"])
    return Study(
        data=DataSpec(kw["dataset"], kw["data_root"], kw["image_size"], kw["train_per_class"], kw["val_fraction"],
                      kw["unreadable"]),
        arch=ArchSpec(kw["arch"], kw["init"] or arch.default_init, parse_arch_options(kw["arch_option"])),
        recipe=recipe, splits=kw["splits"], seeds=_seed_list(kw["seeds"], "seed"),
        init_seeds=_seed_list(kw["init_seeds"], "init seed") or None, cuts=_cut_list(kw["cuts"]),
        variants=tuple(v.strip() for v in kw["variants"].split(",") if v.strip()))


def _study_given(ctx: click.Context) -> bool:
    """Whether any study option was given on the command line (rather than left at its default)."""
    return any(ctx.get_parameter_source(p.name) not in (click.core.ParameterSource.DEFAULT, None)
               for p in ctx.command.params if p.name not in NON_STUDY)


NON_STUDY = {"run_dir", "device", "cache_dir", "download", "networks", "extend", "quiet", "as_json", "executor",
             "scheduler", "workers"}


def executor_options(f):
    """--executor, --scheduler and --workers: where the networks' tasks run."""
    opts = [
        click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                     help="local: one network after another in this process; dask: one dask task per network."),
        click.option("--scheduler", default=None,
                     help="dask: scheduler address (tcp://host:8786) or scheduler file. Default: a LocalCluster "
                          "on this machine."),
        click.option("--workers", type=int, default=2, show_default=True,
                     help="dask without --scheduler: worker processes of the LocalCluster."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


RESUMABLE = ("train", "extract")  # commands that keep finished work and resume it when run again


def errors_as_messages(f):
    """Bad input prints one line, not a traceback; so does Ctrl-C (exit status 130)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ProbeError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted" + ("; what finished is saved, and the same command resumes from there"
                                        if f.__name__ in RESUMABLE else ""), err=True)
            sys.exit(130)
    return wrapper


@click.group()
@click.version_option(package_name="probe-transfer")
def main() -> None:
    """Layer-by-layer transferability of deep features (Yosinski et al. 2014): train, extract, analyze."""


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@study_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Let torchvision download a missing dataset (needs network access).")
@click.option("--networks", default="", help="Train only these networks (ids or names, comma-separated).")
@click.option("--extend", is_flag=True, default=False,
              help="Let an existing RUN_DIR's plan grow by the given seeds, splits, cuts or variants.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bars.")
@executor_options
@click.pass_context
@errors_as_messages
def train(ctx: click.Context, run_dir: Path, device: str, cache_dir: Path | None, download: bool, networks: str,
          extend: bool, quiet: bool, executor: str, scheduler: str | None, workers: int, **kw) -> None:
    """Train every network of a study into RUN_DIR; rerun to resume.

    With no study options, an existing RUN_DIR's own plan is resumed."""
    from probe.analysis.accuracies import accuracy_dataset, format_table
    from probe.sweep import run_study
    from probe.train import resolve_device

    if Run(run_dir).plan.exists() and not _study_given(ctx):
        study, _ = read_plan(run_dir)
    else:
        study = _study(kw)
    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    if executor == "dask":
        from probe.distributed import dask_client, run_study_dask

        if not scheduler:
            resolve_device(device)  # the LocalCluster's workers are this machine: check the device here
        with dask_client(scheduler, workers) as client:
            result = run_study_dask(client, run_dir, study, device, cache_dir, not quiet, only, extend,
                                    download=download)
        where = f"dask: {scheduler or f'LocalCluster of {workers} workers'}"
    else:
        dev = resolve_device(device)
        result = run_study(run_dir, study, dev, cache_dir, download, progress=not quiet, only=only, extend=extend)
        where = f"device {dev}"
    click.echo(f"trained {len(result.trained)}, already done {len(result.skipped)}, failed {len(result.failed)}, "
               f"blocked {len(result.blocked)} ({where})")
    for nid, err in result.failed.items():
        click.echo(f"failed  {nid}: {err}", err=True)
    for nid, dep in result.blocked.items():
        click.echo(f"blocked {nid}: needs {dep}", err=True)
    click.echo(format_table(accuracy_dataset(run_dir)[0]))
    if result.failed or result.blocked:
        sys.exit(1)


@main.command()
@study_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print plan.json instead of a table.")
@errors_as_messages
def plan(cache_dir: Path | None, as_json: bool, **kw) -> None:
    """Print the networks a study would train, in dependency order, without training."""
    from probe.plan import plan_to_dict
    from probe.sweep import plan_study

    study = _study(kw)
    networks, _ = plan_study(None, study, cache_dir)
    if as_json:
        click.echo(json.dumps(plan_to_dict(study, networks), indent=2))
        return
    for p in networks:
        click.echo(f"{p.spec.id:<40} {'<- ' + ', '.join(p.depends_on) if p.depends_on else ''}")
    click.echo(f"{len(networks)} networks")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@errors_as_messages
def status(run_dir: Path) -> None:
    """Say which networks of RUN_DIR are done, running, interrupted, failed, missing or corrupt (a file of the
    network cannot be used; 'probe train' trains it again)."""
    from collections import Counter

    from probe.state import STATES, run_status

    rows = run_status(run_dir)
    for spec, state, detail in rows:
        click.echo(f"{spec.id:<40} {state:<12} {detail}")
    counts = Counter(state for _, state, _ in rows)
    click.echo(", ".join(f"{counts[s]} {s}" for s in STATES))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The zarr store to write. Default: RUN_DIR/activations.zarr.")
@click.option("--networks", default="", help="Only these networks (ids or names, comma-separated). Default: all "
                                             "finished ones.")
@click.option("--probe-set", type=click.Choice(["target", "source", "both"]), default="target", show_default=True,
              help="Test images of the network's target task, of its source task, or of both tasks.")
@click.option("--per-class", type=int, default=None, help="A seeded class-balanced subset of this many test images "
                                                          "per class. Default: every test image.")
@click.option("--spatial", default="mean", show_default=True,
              help="Convolutional maps: mean (per channel), full (whole map) or sample:K (K random positions).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subset and the sampled positions.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Stored dtype of activations.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Images per forward pass.")
@click.option("--chunk-size", type=int, default=None, help="Samples per zarr chunk (and per write). Default: four "
                                                           "batches.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bars.")
@executor_options
@errors_as_messages
def extract(run_dir: Path, out: Path | None, networks: str, probe_set: str, per_class: int | None, spatial: str,
            seed: int, dtype: str, batch_size: int, chunk_size: int | None, device: str, cache_dir: Path | None,
            quiet: bool, executor: str, scheduler: str | None, workers: int) -> None:
    """Write every trained network's per-layer activations into one zarr store; rerun to resume."""
    from probe.extract import ExtractionImages, Reduction, extract_run
    from probe.train import resolve_device

    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    settings = (ExtractionImages(probe_set, per_class, seed), Reduction(spatial, seed, dtype))
    if executor == "dask":
        from probe.distributed import dask_client, extract_run_dask

        if not scheduler:
            resolve_device(device)
        with dask_client(scheduler, workers) as client:
            result = extract_run_dask(client, run_dir, out, only, *settings, device, batch_size, cache_dir,
                                      not quiet, chunk_size)
    else:
        result = extract_run(run_dir, out, only, *settings, resolve_device(device), batch_size, cache_dir,
                             progress=not quiet, chunk_size=chunk_size)
    for name, problem in result["damaged"].items():
        click.echo(f"rewrote {name}: {problem}", err=True)
    for nid, why in result["failed"].items():
        click.echo(f"not extracted {nid}: {why}", err=True)
    click.echo(f"wrote {len(result['written'])}, already complete {len(result['skipped'])}, "
               f"not trained yet {len(result['untrained'])}, failed {len(result['failed'])} "
               f"-> {out or Run(run_dir).store}")
    if result["failed"]:
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Activation store for the representation views. Default: RUN_DIR/activations.zarr when present.")
@click.option("--max-samples", type=int, default=2000, show_default=True,
              help="Images per CKA comparison and per task for the probes and estimators (seeded subsample).")
@executor_options
@errors_as_messages
def analyze(run_dir: Path, store: Path | None, max_samples: int, executor: str, scheduler: str | None,
            workers: int) -> None:
    """Decompose RUN_DIR's accuracies into co-adaptation and specialization, check the paper's claims, and write
    the report, figures and tables into RUN_DIR/analysis (works on a partial run). With an activation store
    ('probe extract'), the report adds CKA views, per-layer probes and transferability estimators."""
    from probe.analysis.report import analyze_run

    if store is not None and not store.exists():
        raise click.ClickException(f"no activation store at {store}")
    if executor == "dask":
        from probe.distributed import dask_client

        with dask_client(scheduler, workers) as client:
            result = analyze_run(run_dir, store, max_samples, client)
    else:
        result = analyze_run(run_dir, store, max_samples)
    click.echo(result["table"])
    if result["missing"]:
        click.echo(f"partial run: {len(result['missing'])} planned networks not finished "
                   f"(e.g. {result['missing'][0]}); they are left out")
    for c in result["claims"]:
        click.echo(f"claim {c.number}: {c.verdict:<14} {c.text}")
    click.echo(f"report: {result['out'] / 'report.md'} (and report.html, figures/, accuracies.zarr, *.csv)")


@main.command()
def archs() -> None:
    """List the registered architectures, their cut points and options."""
    from probe.architectures import REGISTRY

    for name, a in REGISTRY.items():
        opts = ", ".join(f"{k}={v}" for k, v in a.options.items()) or "none"
        click.echo(f"{name}: {a.description}\n  cut points: {', '.join(a.cut_points)}\n"
                   f"  default init: {a.default_init}; options: {opts}")


if __name__ == "__main__":
    main()
