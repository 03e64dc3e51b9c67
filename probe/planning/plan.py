"""The planner: from a study's description to the dependency-ordered list of networks to train.

For every split and replicate, both directions are planned, as in Yosinski et al. (2014), Sec. 3: baseA and baseB,
then for each cut n the selffers BnB/AnA, the transfers AnB/BnA, their fine-tuned "+" forms and the random-weights
baselines RnB/RnA. Every network appears after the base network it copies from.

A study with a source network (a weights file of a network trained elsewhere) is planned in one direction: on task B
(split ``target``: the study's target classes, default every class; or a split's task B) it trains baseB and, per
cut, BnB, BnB+, the source-transfer networks SnB and SnB+ (layers 1..n copied from the file) and RnB. The file is
checked when the study is planned, before anything trains.

A study with a convergence factor k (``--check-convergence``) also plans, per replicate and task, the base trained k
times as long (``baseB-long``), after every network of the protocol: a check of the bases' budget, which no network
copies from.
"""

from __future__ import annotations

import json
from dataclasses import InitVar, asdict, dataclass, field, replace
from pathlib import Path

from probe.architectures.registry import complete_arch_spec, get_architecture
from probe.data.custom import complete_data_spec
from probe.data.splits import TARGET_SPLIT, check_split_name, draw_classes, resolve_split, split_is_seeded
from probe.errors import ProbeError
from probe.specs.dose import Dose, parse_doses
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec, Recipe, SourceSpec, legacy_recipe
from probe.specs.variants import (
    CUT_NAMES,
    DOSED_FAMILIES,
    LONG_BASE,
    ONE_DIRECTION,
    SOURCE_CUT_NAMES,
    STITCH_NAMES,
    TASKS,
    Variant,
)
from probe.storage.atomic import read_json_file, write_json
from probe.storage.run import Run

PLAN_VERSION = 1


def probe_version() -> str:
    """The installed probe's version (``unknown`` for a source tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("probe-transfer")
    except PackageNotFoundError:
        return "unknown"


def _newer(theirs: object, ours: str) -> bool:
    """Whether version ``theirs`` is later than ``ours`` (both dotted numbers; anything else is not newer)."""
    try:
        return tuple(int(x) for x in str(theirs).split(".")) > tuple(int(x) for x in ours.split("."))
    except ValueError:
        return False


@dataclass(frozen=True)
class Study:
    """What a user asks for: one dataset and architecture, any splits, cuts, variants and seeds; optionally a source
    network that donates layers 1..n (a one-directional study, on task B only) and its target classes (split
    ``target``; None: every class)."""

    data: DataSpec
    arch: ArchSpec
    recipe: Recipe = field(default_factory=Recipe)
    splits: tuple[str, ...] | None = None  # None: random, or with a source network target
    seeds: tuple[int, ...] = (0,)  # one replicate per seed: split seed (random splits) and init seed
    init_seeds: tuple[int, ...] | None = None  # init seed per replicate, when it should differ from the seed
    cuts: tuple[int, ...] | None = None  # None: every cut point of the architecture
    variants: tuple[str, ...] | None = None  # None: every cut variant (CUT_NAMES, or SOURCE_CUT_NAMES with a source)
    source: SourceSpec | None = None
    target_classes: tuple[str, ...] | None = None
    # The convergence check: per replicate and task, one more base trained this many times as long (None: unchecked)
    convergence_factor: int | None = None
    # The positive control (probe.specs.dose): beside each network that copies layers from a base (BnB, BnB+, AnB,
    # AnB+), one more per dose, its copied layer n rescaled; as texts, e.g. ("10", "1/10", "~30")
    doses: tuple[str, ...] = ()
    # At most this many classes of each task, a seeded draw nested across sizes (None: every class of the split)
    classes_per_task: int | None = None
    # False for a study read back from a run's plan.json: it was checked when it was planned, and reading a run
    # (status, analyze) must not need the architecture's code, which this installation may lack.
    check_arch: InitVar[bool] = True

    def __post_init__(self, check_arch: bool) -> None:
        if self.splits is None:
            object.__setattr__(self, "splits", (TARGET_SPLIT,) if self.source else ("random",))
        if self.variants is None:
            object.__setattr__(self, "variants", SOURCE_CUT_NAMES if self.source else CUT_NAMES)
        for name in ("splits", "seeds", "variants"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "doses", parse_doses(self.doses))
        for name in ("init_seeds", "cuts", "target_classes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for split in self.splits:
            check_split_name(split)
        self._check_variants()
        self._check_target()
        if not self.seeds:
            raise ProbeError("a study needs at least one seed")
        for name in ("splits", "seeds", "cuts", "variants", "target_classes", "doses"):
            values = getattr(self, name) or ()
            if (twice := _first_repeat(values)) is not None:
                raise ProbeError(f"{name} {list(values)} name {twice!r} twice")
        if self.init_seeds is not None:
            if len(self.init_seeds) != len(self.seeds):
                raise ProbeError(f"init seeds {list(self.init_seeds)} must pair one-to-one with seeds "
                                 f"{list(self.seeds)}")
            twice = _first_repeat(self.init_seeds)
            if twice is not None and not all(split_is_seeded(s) for s in self.splits):
                raise ProbeError(f"init seeds {list(self.init_seeds)} name {twice} twice: the replicates of a "
                                 "fixed split differ only by their init seed")
        if self.convergence_factor is not None and (
                isinstance(self.convergence_factor, bool) or not isinstance(self.convergence_factor, int)
                or self.convergence_factor < 2):
            raise ProbeError(f"convergence factor {self.convergence_factor!r} must be an integer of at least 2: the "
                             "check trains a base that many times as long")
        if self.classes_per_task is not None and (isinstance(self.classes_per_task, bool) or not isinstance(
                self.classes_per_task, int) or self.classes_per_task < 2):
            raise ProbeError(f"classes per task {self.classes_per_task!r} must be an integer of at least 2")
        if self.doses and not any(Variant.named(v).family in DOSED_FAMILIES for v in self.variants):
            raise ProbeError(f"doses {', '.join(self.doses)} rescale what BnB, BnB+, AnB or AnB+ copy from a base, and "
                             f"variants {', '.join(self.variants)} name none of them")
        if check_arch:  # checked, and what it records of its code filled in, for every process that builds or loads
            object.__setattr__(self, "arch", complete_arch_spec(self.arch))
            object.__setattr__(self, "data", complete_data_spec(self.data))

    def _check_variants(self) -> None:
        allowed = SOURCE_CUT_NAMES if self.source else (*CUT_NAMES, *STITCH_NAMES)
        for v in self.variants:
            if v in allowed:
                continue
            if v in CUT_NAMES:
                raise ProbeError(f"a study with a source network trains only task B, so it has no {v}; its transfer "
                                 f"networks are SnB and SnB+ (variants: some of {', '.join(allowed)})")
            if v in SOURCE_CUT_NAMES:
                raise ProbeError(f"variant {v} copies its layers from a source network file; name one (--source)")
            if v in STITCH_NAMES:
                raise ProbeError(f"variant {v} stitches two base networks of the study; a study with a source "
                                 "network trains only task B's")
            raise ProbeError(f"unknown variant {v!r}; expected some of {', '.join(allowed)} "
                             "(base networks are always planned)")

    def _check_target(self) -> None:
        if self.source is None and TARGET_SPLIT in self.splits:
            raise ProbeError(f"split {TARGET_SPLIT!r} plans only task B, whose layers come from a source network "
                             "file; name one (--source)")
        if self.target_classes is not None and (self.source is None or self.splits != (TARGET_SPLIT,)):
            raise ProbeError(f"target classes choose the one task of a study with a source network, on split "
                             f"{TARGET_SPLIT!r} alone (the default with --source)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch"]["options"] = dict(self.arch.options)
        # absent unless used: a paper study's plan.json reads as before
        for name in ("source", "target_classes", "convergence_factor"):
            if d[name] is None:
                del d[name]
        if not self.doses:
            del d["doses"]
        if self.classes_per_task is None:
            del d["classes_per_task"]
        return d


def _first_repeat(values) -> object | None:
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


@dataclass(frozen=True)
class PlannedNetwork:
    spec: NetworkSpec
    depends_on: tuple[str, ...]
    layers: tuple[str, ...]  # the architecture's layers, bottom up, as its networks name them
    # A split file's name and note (plan.json's "split_files"), for reports: labels only, so no spec or id has them
    split_name: str | None = None
    split_note: str | None = None

    @property
    def split_labels(self) -> dict[str, str]:
        """Its split file's name and note, those the file gives."""
        return {k: v for k, v in (("name", self.split_name), ("note", self.split_note)) if v is not None}

    @property
    def cut_points(self) -> tuple[str, ...]:
        """Layers 1..L-1: where the network can be cut, and what its activation group holds besides the logits."""
        return self.layers[:-1]


def make_plan(study: Study, classes: list[str], in_channels: int, image_size: int,
              recorded: dict[str, dict] | None = None) -> list[PlannedNetwork]:
    """The networks of ``study`` on a dataset with these ``classes`` and images of this shape, bases first.
    ``recorded``: what the ``file:`` splits of the run's existing plan resolved to (:func:`recorded_splits`), used in
    place of reading their files again."""
    input_size = study.recipe.crop_size or image_size
    if input_size > image_size + 2 * study.recipe.crop_padding:
        raise ProbeError(f"crop size {input_size} is larger than the {image_size}-pixel images padded by "
                         f"{study.recipe.crop_padding}")
    # checked here too: a study read back from a plan.json was not checked when it was made; the layers are declared,
    # or (an import path's, say) learnt by building one network
    from probe.architectures.build import planned_architecture  # torch, imported where a study is planned

    arch = planned_architecture(study.arch, in_channels, len(classes), input_size)
    n_cuts = len(arch.cut_points)
    cuts = study.cuts if study.cuts is not None else tuple(range(1, n_cuts + 1))
    for n in cuts:
        if not 1 <= n <= n_cuts:
            raise ProbeError(f"cut {n} is out of range: {study.arch.name} has cut points 1..{n_cuts} "
                             f"({', '.join(arch.cut_points)})")
    init_seeds = study.init_seeds or study.seeds
    targets = ONE_DIRECTION if study.source else TASKS
    bases, others, longer, labels = [], [], [], {}
    for split in study.splits:
        seeded = split_is_seeded(split)
        replicates = list(zip(study.seeds, init_seeds)) if seeded else [(None, s) for s in init_seeds]
        for split_seed, init_seed in replicates:
            tasks = _tasks(study, split, classes, split_seed, (recorded or {}).get(split))
            if study.classes_per_task is not None:  # the replicate's draw: its split seed, or its init seed
                tasks = draw_classes(tasks, study.classes_per_task,
                                     split_seed if split_seed is not None else init_seed, split)
            labels[split] = (tasks.get("name"), tasks.get("note"))
            common = dict(data=study.data, split=split, split_seed=split_seed, init_seed=init_seed, arch=study.arch,
                          recipe=study.recipe, classes_a=tasks["A"], classes_b=tasks["B"], in_channels=in_channels,
                          input_size=input_size)
            for target in targets:
                bases.append(NetworkSpec(target=target, **common))
                if study.convergence_factor:
                    # warm-up and step points are fractions of training, so the whole schedule stretches with it
                    long_recipe = replace(study.recipe, epochs=study.recipe.epochs * study.convergence_factor)
                    longer.append(NetworkSpec(target=target, variant=LONG_BASE.family,
                                              **{**common, "recipe": long_recipe}))
            for n in cuts:
                for target in targets:
                    for v in map(Variant.named, study.variants):
                        donor = study.source if v.source == "external" else None
                        plain = NetworkSpec(target=target, variant=v.family, source=v.source_task(target), cut=n,
                                            fine_tune=v.fine_tune, source_network=donor, **common)
                        others.append(plain)
                        if v.family in DOSED_FAMILIES:
                            others += [replace(plain, dose=Dose.parse(d)) for d in study.doses]
    _check_split_names(labels)
    if study.source is not None and bases:
        _check_source(study.source, bases[0], max(cuts, default=0))
    if bases and any(v in STITCH_NAMES for v in study.variants):
        _check_stitchable(bases[0], cuts)
    if bases and study.doses:
        _check_dosable(bases[0], cuts)
    return [PlannedNetwork(s, tuple(p.id for p in s.parents), arch.layers, *labels[s.split])
            for s in bases + others + longer]


def recorded_splits(plan: list[PlannedNetwork]) -> dict[str, dict]:
    """What each ``file:`` split of ``plan`` resolved to, as :func:`resolve_split` returns it (its tasks, name and
    note): a run reads its split files once, when it is planned (see :func:`make_plan`)."""
    out = {}
    for p in plan:
        if p.spec.split.startswith("file:"):
            out[p.spec.split] = {"A": list(p.spec.classes_a), "B": list(p.spec.classes_b), **p.split_labels}
    return out


def _check_split_names(labels: dict[str, tuple[str | None, str | None]]) -> None:
    """Reports show a split file's name in place of its path, so two splits of a study may not share one."""
    named = {}
    for split, (name, _) in labels.items():
        if name is None:
            continue
        if name in named:
            raise ProbeError(f"split files {named[name][len('file:'):]!r} and {split[len('file:'):]!r} are both "
                             f"named {name!r}; give each split of a study its own name")
        named[name] = split


def _tasks(study: Study, split: str, classes: list[str], split_seed: int | None,
           recorded: dict | None = None) -> dict:
    """The split's tasks (with a split file's name and note); on split ``target``, task B is narrowed to the
    study's target classes, if it names any."""
    tasks = resolve_split(split, classes, split_seed, recorded)
    if study.target_classes is None:
        return tasks
    unknown = [c for c in study.target_classes if c not in classes]
    if unknown:
        raise ProbeError(f"target class {unknown[0]!r} is not in the dataset (its classes: "
                         f"{', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''})")
    if len(study.target_classes) < 2:
        raise ProbeError(f"the target task needs at least 2 classes, not {len(study.target_classes)}")
    return {"A": [], "B": [c for c in classes if c in study.target_classes]}  # in the dataset's order, as splits


def _check_source(source: SourceSpec, spec: NetworkSpec, cut: int) -> None:
    """Refuse a source file that cannot donate layers 1..``cut`` to networks like ``spec``, before anything trains.
    It builds a network (torch), as planning otherwise never does."""
    from probe.architectures.build import build_model
    from probe.planning.source import check_source

    check_source(source, build_model(spec), cut, spec.in_channels)


def _check_stitchable(spec: NetworkSpec, cuts: tuple[int, ...]) -> None:
    """Refuse stitched variants at cuts a stitch cannot follow before anything trains; it builds a network (torch),
    as planning otherwise never does."""
    from probe.architectures.build import build_model
    from probe.architectures.stitch import check_stitchable

    check_stitchable(build_model(spec), list(cuts), spec.in_channels, spec.input_size)


def _check_dosable(spec: NetworkSpec, cuts: tuple[int, ...]) -> None:
    """Refuse doses at cuts where a rescale would change the network's function (an LRN, a BatchNorm, a stage that is
    not a plain sequence between layer n and n+1), before anything trains; it builds a network (torch)."""
    from probe.architectures.build import build_model
    from probe.architectures.rescale import dose_sites

    model = build_model(spec)
    for n in cuts:
        dose_sites(model, n)


def plan_to_dict(study: Study, plan: list[PlannedNetwork]) -> dict:
    """plan.json: the study, the networks and, when a split file names itself or carries a note, ``split_files``:
    ``{"file:PATH": {"name": ..., "note": ...}}`` keyed by the split as the networks' specs give it (absent otherwise,
    so a plan without them reads as before)."""
    # the probe that wrote it: a plan of a later probe may hold fields this one has never heard of, and reading it
    # then says to upgrade rather than that the file is damaged
    d = {"version": PLAN_VERSION, "probe": probe_version(), "study": study.to_dict(),
         "networks": [{"id": p.spec.id, "depends_on": list(p.depends_on), "layers": list(p.layers),
                       "spec": p.spec.to_dict()} for p in plan]}
    labels = {p.spec.split: p.split_labels for p in plan if p.split_labels}
    if labels:
        d["split_files"] = labels
    return d


def study_from_dict(d: dict) -> Study:
    """The study a plan.json records, not checked against this installation's architectures (see Study)."""
    d = dict(d)
    d["data"] = DataSpec(**d["data"])
    d["arch"] = ArchSpec(**d["arch"])
    d["recipe"] = legacy_recipe(d["recipe"])
    if d.get("source") is not None:
        d["source"] = SourceSpec(**d["source"])
    return Study(**d, check_arch=False)


def write_plan(run_dir: Path, study: Study, plan: list[PlannedNetwork]) -> Path:
    path = Run(run_dir).plan
    write_json(path, plan_to_dict(study, plan))
    return path


def read_plan(run_dir: Path) -> tuple[Study, list[PlannedNetwork]]:
    path = Run(run_dir).plan
    if not path.exists():
        raise ProbeError(f"{str(run_dir)!r} holds no {path.name}: not a run directory (start one with 'probe train')")
    _, study, plan = read_plan_file(path)
    return study, plan


def read_plan_file(path: Path) -> tuple[dict, Study, list[PlannedNetwork]]:
    """A plan.json as stored, and as the study and networks it describes. A file that cannot be read, or does not
    describe a plan, is a one-line ProbeError naming it."""
    fix = (f"restore it, or delete it and rerun 'probe train {path.parent}' with the run's study options to write it "
           "again (finished networks are kept)")
    d = read_json_file(path, fix)
    if not isinstance(d, dict) or "version" not in d:
        raise ProbeError(f"{path} does not describe a plan (it has no version); {fix}")
    ours, version = probe_version(), d["version"]
    if _newer(d.get("probe"), ours):
        upgrade = (f"{path} was written by probe {d['probe']} (plan format {_shown(version)}); this is probe {ours}, "
                   f"which reads plan format {PLAN_VERSION}: upgrade probe (pip install -U probe-transfer) to read it")
    else:
        upgrade = None
    if not _is_int(version):  # "1", 1.0 or true: an edited file, which no probe wrote
        raise ProbeError(upgrade or f"{path} has plan version {_shown(version)}, not an integer; this probe reads "
                         f"version {PLAN_VERSION} (the integer {PLAN_VERSION}): write \"version\": {PLAN_VERSION} "
                         "if that is what the file was")
    if version != PLAN_VERSION:
        raise ProbeError(upgrade or f"{path} has plan version {version}, this probe reads version "
                         f"{PLAN_VERSION}; read it with the probe that wrote it")
    try:
        study = study_from_dict(d["study"])
        labels = d.get("split_files", {})
        plan = []
        for n in d["networks"]:
            spec = NetworkSpec.from_dict(n["spec"])
            label = labels.get(spec.split, {})
            plan.append(PlannedNetwork(spec, tuple(n["depends_on"]),
                                       tuple(n["layers"]) if "layers" in n else _declared_layers(path, study),
                                       label.get("name"), label.get("note")))
        return d, study, plan
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ProbeError is a ValueError
        raise ProbeError(upgrade or f"{path} does not describe a plan ({type(e).__name__}: {e}); {fix}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A plan's version as found: an integer as itself, anything else as JSON with its type (the string "1")."""
    if _is_int(value):
        return str(value)
    kinds = {str: "the string", bool: "the boolean", float: "the number", type(None): "", list: "the list",
             dict: "the object"}
    return f"{kinds.get(type(value), 'the value')} {json.dumps(value)}".strip()


def _declared_layers(path: Path, study: Study) -> tuple[str, ...]:
    """The layers of a plan.json written before plans recorded them: the registry's, when it has the architecture."""
    try:
        return get_architecture(study.arch.name).layers
    except ProbeError:
        raise ProbeError(f"{path} records no layer names (an earlier probe wrote it), and this installation has no "
                         f"architecture {study.arch.name!r} to take them from") from None
