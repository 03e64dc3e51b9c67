"""Options the ``probe`` subcommands share, and their parsing into specs: the study options, the executor
options, lists of cuts and seeds, and one-line errors in place of tracebacks."""


from __future__ import annotations

import errno
import functools
import json
import sys
from dataclasses import fields

import click

from probe.errors import ProbeError
from probe.planning.named_source import is_named_source, resolve_named_source
from probe.planning.plan import Study
from probe.planning.source import (
    NORMALIZATIONS,
    OWN_STATISTICS,
    check_source_early,
    describe_source,
    parse_key_map,
    parse_normalization,
)
from probe.specs.spec import INIT_SHARINGS, INITS, SCHEDULES, UNREADABLE, ArchSpec, DataSpec, Recipe, check_seed
from probe.specs.variants import CUT_NAMES, SOURCE_CUT_NAMES

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
    "match_scale": "Scale the initial weights of a cut network's new layer n+1 so that its pre-activations on the "
                   "training images start at the RMS a fresh network's do, whatever the scale of the copied layers "
                   "below (the positive control's remedy; not the paper's recipe).",
    "init_sharing": "independent: every network draws its own initial weights (of every layer it re-initializes), "
                    "data order and augmentation from a seed of its own, derived from the replicate's seed, task, "
                    "variant and cut, as the paper's networks were each drawn afresh; shared: every network of a "
                    "replicate starts from one initialization (BnB's new top from its base's initial top, baseA "
                    "from baseB's start), a control that probe used before 0.4.",
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
            elif field.name == "init_sharing":
                kind = click.Choice(INIT_SHARINGS)
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
    from probe.specs.spec import RESIZE_MODES

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
        click.option("--classes-per-task", type=int, default=None,
                     help="Keep this many classes of each task, a seeded draw (the replicate's split seed, or its "
                          "init seed on a fixed split) nested across sizes: at one seed, 10 classes a task lie inside "
                          "25. Balances unequal tasks (Tiny ImageNet's 72 natural and 128 man-made) and varies the "
                          "number of classes. Default: every class of the split."),
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
        click.option("--dose", "doses", multiple=True, default=(), metavar="FACTOR",
                     help="The positive control (repeatable, or comma-separated): beside each BnB, BnB+, AnB and AnB+, "
                          "one more network whose copied layer n has its output multiplied by FACTOR (its weights and "
                          "bias; e.g. 10, 1/10), or each channel's by its own factor log-uniform in [1/F, F] (~F), "
                          "named B5B×10 or B5B×~10. The base with layer n × F and layer n+1 ÷ F computes the same "
                          "function, so only the fresh top's optimization changes; cuts with LRN or BatchNorm there "
                          "are refused. A dosed network starts from its plain form's weights and data order."),
        click.option("--source", default=None, metavar="PATH|torchvision:WEIGHTS|timm:NAME",
                     help="Weights of a network trained elsewhere (a state_dict saved by torch.save, or a "
                          ".safetensors file) that donates layers 1..n: the plan trains task B only, with SnB and "
                          "SnB+ (copied from it, frozen and fine-tuned) in the places of AnB and AnB+. Pretrained "
                          "weights by name: torchvision:ResNet50_Weights.IMAGENET1K_V2 (a torchvision weights enum; "
                          "or resnet50.IMAGENET1K_V2) or timm:resnet50.a1_in1k (needs timm), read from the library's "
                          "cache (probe train --download fetches a missing file); their normalization and input size "
                          "become the defaults of --source-normalization and --image-size."),
        click.option("--source-key-map", multiple=True, default=(),
                     help="With --source: NETWORK_PREFIX=FILE_PREFIX (repeatable), or a .json file of such prefixes, "
                          "where the file names its tensors otherwise than the network does; =module. for a file "
                          "saved from nn.DataParallel."),
        click.option("--source-normalization", default=OWN_STATISTICS, show_default=True,
                     help=f"With --source: the input normalization its network was trained with, used by every "
                          f"network of the run: {OWN_STATISTICS} (the run's own statistics), "
                          f"{', '.join(NORMALIZATIONS)}, or MEAN,...:STD,... (0..1 scale)."),
        click.option("--check-convergence", is_flag=True, default=False,
                     help="Check that the bases converged: per replicate and task, train one more base with "
                          "--convergence-factor times the epochs (the schedule stretched to match, from its base's "
                          "initial weights); the report says 'not converged' when, mean over seeds, it gains more "
                          "than 0.01 test accuracy over the base."),
        click.option("--convergence-factor", type=int, default=2, show_default=True,
                     help="With --check-convergence: how many times as long the longer base trains."),
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


def study_from_options(kw: dict) -> Study:
    """The study the options describe. A ``--source`` file is checked here, before the data is decoded (minutes for
    a large image tree)."""
    recipe = Recipe(**{k[len("recipe_"):]: kw.pop(k) for k in list(kw) if k.startswith("recipe_")})
    _resolve_named_source(kw, recipe)
    study = Study(
        data=DataSpec(kw["dataset"], kw["data_root"], kw["image_size"], resize_mode=kw["resize_mode"],
                      train_per_class=kw["train_per_class"], test_per_class=kw["test_per_class"],
                      val_fraction=kw["val_fraction"], unreadable=kw["unreadable"]),
        arch=ArchSpec(kw["arch"], kw["init"], parse_arch_options(kw["arch_option"]), _cut_at(kw["cut_at"])),
        recipe=recipe, seeds=_seed_list(kw["seeds"], "seed"),
        init_seeds=_seed_list(kw["init_seeds"], "init seed") or None, cuts=_cut_list(kw["cuts"]),
        convergence_factor=_convergence_factor(kw), doses=_doses(kw["doses"]),
        classes_per_task=kw["classes_per_task"], **_source_choices(kw))
    if study.source is not None:
        # the file itself, and its tensors' names and shapes as far as they do not depend on the data's channels and
        # image size; the rest when the study is planned on the data
        check_source_early(study.source, study.arch, study.cuts, recipe.crop_size or study.data.image_size)
    return study


def _doses(given: tuple[str, ...]) -> tuple[str, ...]:
    """``--dose 10 --dose ~30`` or ``--dose 10,~30``: each dose's text, in order (checked by the study)."""
    return tuple(d.strip() for text in given for d in text.split(",") if d.strip())


def _resolve_named_source(kw: dict, recipe: Recipe) -> None:
    """``--source torchvision:WEIGHTS`` or ``timm:NAME``: in ``kw``, the weights file it names in the library's
    cache (fetched first only with ``probe train --download``), and its weights' input normalization and image size
    where --source-normalization and --image-size (or --crop-size) are not given; said in one line on stderr."""
    if kw["source"] is None or not is_named_source(kw["source"]):
        return
    named = resolve_named_source(kw["source"], download=_download_allowed())
    kw["source"] = str(named.path)
    offered, options = [], []
    if named.mean is not None and not _given(kw, "source_normalization", OWN_STATISTICS):
        kw["source_normalization"] = ",".join(map(repr, named.mean)) + ":" + ",".join(map(repr, named.std))
        offered.append(f"input normalization mean {list(named.mean)}, std {list(named.std)}")
        options.append("--source-normalization")
    if named.image_size and not _given(kw, "image_size", None) and recipe.crop_size is None:
        kw["image_size"] = named.image_size
        offered.append(f"image size {named.image_size}")
        options.append("--image-size")
    line = f"source {named.name} (weights of {named.network}): {named.path}"
    if offered:
        line += f"; from its weights: {' and '.join(offered)} (unless {' or '.join(options)} says otherwise)"
    click.echo(line, err=True)


def _download_allowed() -> bool:
    """Whether the command may download (probe train --download); probe plan never does."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("download"))


def _given(kw: dict, name: str, default: object) -> bool:
    """Whether an option was given, on the command line (at its default value too) or, outside one, off its default."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT):
        return True
    return kw[name] != default


def _convergence_factor(kw: dict) -> int | None:
    """The study's convergence factor: None unless the check is asked for."""
    if not kw["check_convergence"]:
        if kw["convergence_factor"] != 2:
            raise ProbeError(f"--convergence-factor {kw['convergence_factor']} sizes the convergence check; add "
                             "--check-convergence, or drop it")
        return None
    return kw["convergence_factor"]


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


def study_given(ctx: click.Context) -> bool:
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
    f = _executor_checked(f)
    for opt in reversed(opts):
        f = opt(f)
    return f


def _executor_checked(f):
    """Refuse, in one line, --scheduler or --workers where they would change nothing: without --executor dask,
    and --workers beside --scheduler (a scheduler's cluster has workers of its own)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()

        def given(name: str) -> bool:
            return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)

        if kwargs.get("executor") != "dask":
            for name in ("scheduler", "workers"):
                if given(name):
                    raise click.UsageError(f"--{name} {kwargs[name]} places tasks on dask workers, but the executor "
                                           "is local: add --executor dask, or drop it")
        elif kwargs.get("scheduler") and given("workers"):
            raise click.UsageError(f"--workers {kwargs['workers']} sizes the LocalCluster made without --scheduler; "
                                   f"the cluster of {kwargs['scheduler']} has its own workers: drop --workers")
        return f(*args, **kwargs)
    return wrapper


RESUMABLE = ("train", "extract")  # commands that keep finished work and resume it when run again


# What the file system refused, and what to do, for an error no step of probe's caught first (a run directory on a
# read-only mount refuses the first file any command writes, wherever that is)
FILE_SYSTEM_ERRORS = {
    errno.EROFS: "the file system is read-only: copy the run directory somewhere writable and run there",
    errno.EACCES: "permission denied: run as a user who may write there, or copy the run directory",
    errno.EPERM: "the operation is not permitted there: run as a user who may write there, or copy the run directory",
    errno.ENOSPC: "no space is left on the device: free space, or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space, or write elsewhere",
    errno.ELOOP: "a symbolic link on the path points back on itself: remove or fix the link",
}


def errors_as_messages(f):
    """Bad input prints one line, not a traceback; so does Ctrl-C (exit status 130)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ProbeError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            if e.errno not in FILE_SYSTEM_ERRORS:
                raise
            where = f" {str(e.filename)!r}" if e.filename else ""
            raise click.ClickException(f"cannot write{where}: {e.strerror or e}; "
                                       f"{FILE_SYSTEM_ERRORS[e.errno]}") from None
        except KeyboardInterrupt:
            click.echo("interrupted" + ("; what finished is saved, and the same command resumes from there"
                                        if f.__name__ in RESUMABLE else ""), err=True)
            sys.exit(130)
        finally:
            if "zarr" in sys.modules:  # zarr's loop closed here, while nothing else is exiting
                from probe.storage.activation_store import close_zarr_loop

                close_zarr_loop()
    return wrapper
