"""The ``probe`` command: thin wrappers that parse options into specs and call the library."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields
from pathlib import Path

import click

from probe.errors import ProbeError
from probe.planning.plan import Study, read_plan
from probe.planning.source import NORMALIZATIONS, OWN_STATISTICS, describe_source, parse_key_map, parse_normalization
from probe.planning.spec import INITS, SCHEDULES, UNREADABLE, ArchSpec, DataSpec, Recipe, check_seed
from probe.planning.variants import CUT_NAMES, SOURCE_CUT_NAMES
from probe.storage.run import Run

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
    from probe.planning.spec import RESIZE_MODES

    opts = [
        click.option("--dataset", default="fashion-mnist", show_default=True,
                     help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic (NAME:ROOT also works); "
                          "or your own: a registered dataset, or MODULE:FUNCTION returning the images. Image-folder "
                          "trees are decoded to RGB (grayscale images give 3 equal channels); Fashion-MNIST keeps "
                          "its 1 channel."),
        click.option("--data-root", default=None, help="Where the dataset lives (torchvision root or image-folder "
                                                       "tree); Fashion-MNIST defaults to Debian's package."),
        click.option("--image-size", type=int, default=None,
                     help="Resize every image to a square of this side, as --resize-mode says (image-folder trees "
                          "of mixed or non-square sizes); channels are kept. Default: the images' own size."),
        click.option("--resize-mode", type=click.Choice(RESIZE_MODES), default="crop", show_default=True,
                     help="With --image-size: crop resizes the shorter side and center-crops the longer; pad resizes "
                          "the longer side and pads the shorter with zeros (nothing is cut off); squash resizes both "
                          "sides (the aspect ratio changes)."),
        click.option("--train-per-class", type=int, default=None,
                     help="Keep at most this many training images per class (seeded, before the validation "
                          "hold-out); a class with fewer keeps all of its own, so the training set is balanced only "
                          "when every class has at least this many. Default: all."),
        click.option("--test-per-class", type=int, default=None,
                     help="Test on at most this many test images per class (seeded; a class with fewer keeps all "
                          "of its own). Default: every test image."),
        click.option("--val-fraction", type=float, default=0.1, show_default=True,
                     help="Fraction of train held out for validation."),
        click.option("--unreadable", type=click.Choice(UNREADABLE), default="error", show_default=True,
                     help="Image files of an image-folder tree that cannot be decoded: error stops at the first "
                          "and names it; skip leaves them out and says how many."),
        click.option("--split", "splits", multiple=True, default=(),
                     help="Class split (repeatable): random, vehicles-animals, clothing-accessories, "
                          "man-made-natural, natural-man-made or file:PATH. Default: random; with --source, target "
                          "(the target classes are the one task), or a split whose task B is the target."),
        click.option("--seeds", default="0", show_default=True,
                     help="Replicate seeds, comma-separated: each sets the random split and the init seed."),
        click.option("--init-seeds", default="", help="Init seeds, one per replicate seed, when they should differ."),
        click.option("--arch", default="caffenet-small", show_default=True,
                     help="Architecture: a registered one (see 'probe archs'), or MODULE:FUNCTION returning an "
                          "nn.Module, e.g. torchvision.models:resnet18."),
        click.option("--arch-option", "arch_option", multiple=True, default=(),
                     help="Architecture option KEY=VALUE (repeatable), e.g. width=0.25."),
        click.option("--cut-at", default=None,
                     help="Cut the built module after these modules (dotted paths, comma-separated, e.g. "
                          "features.2,features.5) instead of at its default cut points."),
        click.option("--init", type=click.Choice(INITS), default=None,
                     help="Initialization: gaussian (the paper's), kaiming, or none (the builder's own, weights it "
                          "loads included). Default: the architecture's (none for MODULE:FUNCTION)."),
        click.option("--cuts", default="all", show_default=True, help="Cut layers n, comma-separated, or all."),
        click.option("--variants", default=None,
                     help=f"Variants besides the base networks, comma-separated. Default: {','.join(CUT_NAMES)}; "
                          f"with --source: {','.join(SOURCE_CUT_NAMES)}."),
        click.option("--source", default=None, metavar="PATH",
                     help="Weights of a network trained elsewhere (a state_dict saved by torch.save, or a "
                          ".safetensors file) that donates layers 1..n: the plan trains task B only, with SnB and "
                          "SnB+ (copied from it, frozen and fine-tuned) in the places of AnB and AnB+."),
        click.option("--source-key-map", multiple=True, default=(),
                     help="With --source: NETWORK_PREFIX=FILE_PREFIX (repeatable), or a .json file of such prefixes, "
                          "where the file names its tensors otherwise than the network does."),
        click.option("--source-normalization", default=OWN_STATISTICS, show_default=True,
                     help=f"With --source: the input normalization its network was trained with, used by every "
                          f"network of the run: {OWN_STATISTICS} (the run's own statistics), "
                          f"{', '.join(NORMALIZATIONS)}, or MEAN,...:STD,... (0..1 scale)."),
        click.option("--target-classes", default=None,
                     help="With --source on split target: the target task's classes, comma-separated. Default: every "
                          "class of the dataset."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return _recipe_options(f)


def _cut_at(text: str | None) -> tuple[str, ...]:
    """``--cut-at features.2,features.5`` as module paths; none given: the architecture's own cut points."""
    if text is None:
        return ()
    paths = tuple(p.strip() for p in text.split(","))
    if not all(paths):
        raise click.BadParameter(f"cut points {text!r} must be dotted module paths, comma-separated, e.g. "
                                 "features.2,features.5")
    return paths


def _study(kw: dict) -> Study:
    recipe = Recipe(**{k[len("recipe_"):]: kw.pop(k) for k in list(kw) if k.startswith("recipe_")})
    return Study(
        data=DataSpec(kw["dataset"], kw["data_root"], kw["image_size"], resize_mode=kw["resize_mode"],
                      train_per_class=kw["train_per_class"], test_per_class=kw["test_per_class"],
                      val_fraction=kw["val_fraction"], unreadable=kw["unreadable"]),
        arch=ArchSpec(kw["arch"], kw["init"], parse_arch_options(kw["arch_option"]), _cut_at(kw["cut_at"])),
        recipe=recipe, seeds=_seed_list(kw["seeds"], "seed"),
        init_seeds=_seed_list(kw["init_seeds"], "init seed") or None, cuts=_cut_list(kw["cuts"]),
        **_source_choices(kw))


def _source_choices(kw: dict) -> dict:
    """The study's source network and target classes, and its splits and variants (None: the study's defaults,
    which depend on whether it has a source network)."""
    source = None
    if kw["source"] is not None:
        source = describe_source(kw["source"], parse_key_map(kw["source_key_map"]),
                                 parse_normalization(kw["source_normalization"]))
    elif kw["source_key_map"] or kw["source_normalization"] != OWN_STATISTICS:
        raise ProbeError("--source-key-map and --source-normalization describe a source network; name it with "
                         "--source")
    variants = None if kw["variants"] is None else tuple(v.strip() for v in kw["variants"].split(",") if v.strip())
    target = None if kw["target_classes"] is None else tuple(c.strip() for c in kw["target_classes"].split(","))
    return {"source": source, "target_classes": target, "variants": variants, "splits": kw["splits"] or None}


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
    from probe.analysis.accuracies import format_table, read_run_metrics
    from probe.analysis.sanity import run_findings, warning_lines
    from probe.execution.sweep import run_study
    from probe.execution.train import resolve_device

    if Run(run_dir).plan.exists() and not _study_given(ctx):
        study, _ = read_plan(run_dir)
    else:
        study = _study(kw)
    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    if executor == "dask":
        from probe.execution.distributed import dask_client, run_study_dask

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
    accuracies = read_run_metrics(run_dir)
    click.echo(format_table(accuracies.dataset()))
    for line in warning_lines(run_findings(accuracies)):  # bases at chance, not converged, ...: before any analysis
        click.echo(line)
    if result.failed or result.blocked:
        sys.exit(1)


@main.command()
@study_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print plan.json instead of a table.")
@errors_as_messages
def plan(cache_dir: Path | None, as_json: bool, **kw) -> None:
    """Print the networks a study would train, in dependency order, without training, then each split's tasks: their
    classes and how many images each trains, validates and tests on."""
    from probe.execution.sweep import plan_study
    from probe.planning.plan import format_task_summaries, plan_to_dict, task_summaries

    study = _study(kw)
    networks, arrays = plan_study(None, study, cache_dir)
    if as_json:
        click.echo(json.dumps(plan_to_dict(study, networks), indent=2))
        return
    for p in networks:
        click.echo(f"{p.spec.id:<40} {'<- ' + ', '.join(p.depends_on) if p.depends_on else ''}")
    click.echo(f"{len(networks)} networks")
    click.echo("\n".join(format_task_summaries(task_summaries(networks, arrays))))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@errors_as_messages
def status(run_dir: Path) -> None:
    """Say which networks of RUN_DIR are done, running, interrupted, failed, missing or corrupt (a file of the
    network cannot be used; 'probe train' trains it again)."""
    from collections import Counter

    from probe.storage.state import STATES, run_status

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
@click.option("--per-class", type=int, default=None, help="A seeded subset of this many test images per class (see "
                                                          "--per-class-mode). Default: every test image.")
@click.option("--per-class-mode", type=click.Choice(["exactly", "at-most"]), default="exactly", show_default=True,
              help="--per-class: exactly that many of every class (balanced; a class with fewer is an error), or at "
                   "most that many (a class with fewer gives all of its own).")
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
def extract(run_dir: Path, out: Path | None, networks: str, probe_set: str, per_class: int | None,
            per_class_mode: str, spatial: str, seed: int, dtype: str, batch_size: int, chunk_size: int | None,
            device: str, cache_dir: Path | None, quiet: bool, executor: str, scheduler: str | None,
            workers: int) -> None:
    """Write every trained network's per-layer activations into one zarr store; rerun to resume."""
    from probe.execution.extract import ExtractionImages, Reduction, extract_run
    from probe.execution.train import resolve_device

    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    settings = (ExtractionImages(probe_set, per_class, seed, per_class_mode), Reduction(spatial, seed, dtype))
    if executor == "dask":
        from probe.execution.distributed import dask_client, extract_run_dask

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
@click.option("--metric", type=click.Choice(("top1", "balanced")), default="top1", show_default=True,
              help="Accuracy the decomposition and the claims read: top1 (the paper's) or balanced (the mean "
                   "per-class recall, which a test set of unequal classes cannot inflate).")
@click.option("--pool-directions", is_flag=True, default=False,
              help="Count the two directions of every seed as independent replicates (the optimistic intervals of "
                   "reports before 0.3). Default: intervals over seeds, each the mean of its directions.")
@executor_options
@errors_as_messages
def analyze(run_dir: Path, store: Path | None, max_samples: int, metric: str, pool_directions: bool, executor: str,
            scheduler: str | None, workers: int) -> None:
    """Decompose RUN_DIR's accuracies into co-adaptation and specialization, check the paper's claims, and write
    the report, figures and tables into RUN_DIR/analysis (works on a partial run). With an activation store
    ('probe extract'), the report adds CKA views, per-layer probes and transferability estimators."""
    from probe.analysis.report import analyze_run
    from probe.analysis.sanity import warning_lines

    if store is not None and not store.exists():
        raise click.ClickException(f"no activation store at {store}")
    if executor == "dask":
        from probe.execution.distributed import dask_client

        with dask_client(scheduler, workers) as client:
            result = analyze_run(run_dir, store, max_samples, client, metric=metric, pooled=pool_directions)
    else:
        result = analyze_run(run_dir, store, max_samples, metric=metric, pooled=pool_directions)
    click.echo(result["table"])
    for line in warning_lines(result["warnings"]):
        click.echo(line)
    if result["missing"]:
        click.echo(f"partial run: {len(result['missing'])} planned networks not finished "
                   f"(e.g. {result['missing'][0]}); they are left out")
    for c in result["claims"]:
        click.echo(f"claim {c.number}: {c.verdict:<14} {c.text}")
    click.echo(result["intervals"].replace("**", "").replace("`", "'"))
    click.echo(f"report: {result['out'] / 'report.md'} (and report.html, figures/, accuracies.zarr, *.csv)")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
@errors_as_messages
def robustness(run_dir: Path, device: str, cache_dir: Path | None, quiet: bool) -> None:
    """Reset each layer of every trained base network of RUN_DIR, one at a time, to its initial weights and to
    random ones, and test it without training (Zhang, Bengio & Singer 2022); 'probe analyze' reports it beside the
    co-adaptation drop. Forward passes only; rerun to resume."""
    from probe.execution.robustness import robustness_run
    from probe.execution.train import resolve_device

    result = robustness_run(run_dir, resolve_device(device), cache_dir, progress=not quiet)
    click.echo(f"wrote {len(result['written'])}, already current {len(result['skipped'])}, "
               f"not trained yet {len(result['untrained'])} base networks' layer resets")


OWN_NETWORK = """\
Your own network: --arch MODULE:FUNCTION names any importable function (or class) that returns an nn.Module; it
gets those of in_channels, num_classes and input_size it takes, and --arch-option KEY=VALUE. torchvision's ResNet,
VGG, MobileNet-V3, EfficientNet, ConvNeXt and ViT are cut at their stages (--arch torchvision.models:resnet18);
another module needs --cut-at PATH,PATH,... (the dotted paths of the modules to cut after), a LayeredNet nothing.
Or register a builder with @probe.register_architecture(NAME), or in entry point group probe.architectures."""


@main.command()
@errors_as_messages
def archs() -> None:
    """List the registered architectures (those of installed packages' entry points too), their layers and
    options, and how to use a network of your own."""
    from probe.architectures.registry import REGISTRY, describe_options, load_plugins

    load_plugins()
    for name, a in REGISTRY.items():
        where = "" if a.origin == "probe" else f" ({a.origin}, {a.builder})"
        if a.layers:
            layers = f"cut points: {', '.join(a.cut_points)}; classifier: {a.layers[-1]}"
        else:
            layers = "layers: those of the built network, learnt when a study is planned"
        cuts = f"; cut after {', '.join(a.cut_at)}" if a.cut_at else ""
        click.echo(f"{name}{where}: {a.description}\n  {layers}{cuts}\n"
                   f"  default init: {a.default_init}; options: {describe_options(a.options)}")
    click.echo(f"\n{OWN_NETWORK}")


if __name__ == "__main__":
    main()
