"""The planner: from a study's description to the dependency-ordered list of networks to train.

For every split and replicate, both directions are planned, as in Yosinski et al. (2014), Sec. 3: baseA and baseB,
then for each cut n the selffers BnB/AnA, the transfers AnB/BnA, their fine-tuned "+" forms and the random-weights
baselines RnB/RnA. Every network appears after the base network it copies from.
"""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path

from probe.architectures.registry import check_arch_spec, get_architecture
from probe.atomic import read_json_file, write_json
from probe.data.splits import check_split_name, resolve_split, split_is_seeded
from probe.errors import ProbeError
from probe.run import Run
from probe.spec import ArchSpec, DataSpec, NetworkSpec, Recipe
from probe.variants import CUT_NAMES, TASKS, Variant

PLAN_VERSION = 1


@dataclass(frozen=True)
class Study:
    """What a user asks for: one dataset and architecture, any splits, cuts, variants and seeds."""

    data: DataSpec
    arch: ArchSpec
    recipe: Recipe = field(default_factory=Recipe)
    splits: tuple[str, ...] = ("random",)
    seeds: tuple[int, ...] = (0,)  # one replicate per seed: split seed (random splits) and init seed
    init_seeds: tuple[int, ...] | None = None  # init seed per replicate, when it should differ from the seed
    cuts: tuple[int, ...] | None = None  # None: every cut point of the architecture
    variants: tuple[str, ...] = CUT_NAMES
    # False for a study read back from a run's plan.json: it was checked when it was planned, and reading a run
    # (status, analyze) must not need the architecture's code, which this installation may lack.
    check_arch: InitVar[bool] = True

    def __post_init__(self, check_arch: bool) -> None:
        for name in ("splits", "seeds", "variants"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("init_seeds", "cuts"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for split in self.splits:
            check_split_name(split)
        for v in self.variants:
            if v not in CUT_NAMES:
                raise ProbeError(f"unknown variant {v!r}; expected some of {', '.join(CUT_NAMES)} "
                                 "(base networks are always planned)")
        if not self.seeds:
            raise ProbeError("a study needs at least one seed")
        for name in ("splits", "seeds", "cuts", "variants"):
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
        if check_arch:
            check_arch_spec(self.arch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arch"]["options"] = dict(self.arch.options)
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

    @property
    def cut_points(self) -> tuple[str, ...]:
        """Layers 1..L-1: where the network can be cut, and what its activation group holds besides the logits."""
        return self.layers[:-1]


def make_plan(study: Study, classes: list[str], in_channels: int, image_size: int) -> list[PlannedNetwork]:
    """The networks of ``study`` on a dataset with these ``classes`` and images of this shape, bases first."""
    input_size = study.recipe.crop_size or image_size
    if input_size > image_size + 2 * study.recipe.crop_padding:
        raise ProbeError(f"crop size {input_size} is larger than the {image_size}-pixel images padded by "
                         f"{study.recipe.crop_padding}")
    arch = check_arch_spec(study.arch)  # a study read back from a plan.json was not checked when it was made
    arch.check(study.arch, in_channels, input_size)
    n_cuts = len(arch.cut_points)
    cuts = study.cuts if study.cuts is not None else tuple(range(1, n_cuts + 1))
    for n in cuts:
        if not 1 <= n <= n_cuts:
            raise ProbeError(f"cut {n} is out of range: {study.arch.name} has cut points 1..{n_cuts} "
                             f"({', '.join(arch.cut_points)})")
    init_seeds = study.init_seeds or study.seeds
    bases, others = [], []
    for split in study.splits:
        seeded = split_is_seeded(split)
        replicates = list(zip(study.seeds, init_seeds)) if seeded else [(None, s) for s in init_seeds]
        for split_seed, init_seed in replicates:
            tasks = resolve_split(split, classes, split_seed)
            common = dict(data=study.data, split=split, split_seed=split_seed, init_seed=init_seed, arch=study.arch,
                          recipe=study.recipe, classes_a=tasks["A"], classes_b=tasks["B"], in_channels=in_channels,
                          input_size=input_size)
            for target in TASKS:
                bases.append(NetworkSpec(target=target, **common))
            for n in cuts:
                for target in TASKS:
                    for v in map(Variant.named, study.variants):
                        others.append(NetworkSpec(target=target, variant=v.family, source=v.source_task(target),
                                                  cut=n, fine_tune=v.fine_tune, **common))
    return [PlannedNetwork(s, (s.parent.id,) if s.parent else (), arch.layers) for s in bases + others]


def plan_to_dict(study: Study, plan: list[PlannedNetwork]) -> dict:
    return {"version": PLAN_VERSION, "study": study.to_dict(),
            "networks": [{"id": p.spec.id, "depends_on": list(p.depends_on), "layers": list(p.layers),
                          "spec": p.spec.to_dict()} for p in plan]}


def study_from_dict(d: dict) -> Study:
    """The study a plan.json records, not checked against this installation's architectures (see Study)."""
    d = dict(d)
    d["data"] = DataSpec(**d["data"])
    d["arch"] = ArchSpec(**d["arch"])
    d["recipe"] = Recipe(**d["recipe"])
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
    if d["version"] != PLAN_VERSION:
        raise ProbeError(f"{path} has plan version {d['version']}, this probe reads version {PLAN_VERSION}; read it "
                         "with the probe that wrote it")
    try:
        study = study_from_dict(d["study"])
        plan = [PlannedNetwork(NetworkSpec.from_dict(n["spec"]), tuple(n["depends_on"]),
                               tuple(n["layers"]) if "layers" in n else _declared_layers(path, study))
                for n in d["networks"]]
        return d, study, plan
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ProbeError is a ValueError
        raise ProbeError(f"{path} does not describe a plan ({type(e).__name__}: {e}); {fix}") from None


def _declared_layers(path: Path, study: Study) -> tuple[str, ...]:
    """The layers of a plan.json written before plans recorded them: the registry's, when it has the architecture."""
    try:
        return get_architecture(study.arch.name).layers
    except ProbeError:
        raise ProbeError(f"{path} records no layer names (an earlier probe wrote it), and this installation has no "
                         f"architecture {study.arch.name!r} to take them from") from None
