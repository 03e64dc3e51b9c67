"""The planner: from a study's description to the dependency-ordered list of networks to train.

For every split and replicate, both directions are planned, as in Yosinski et al. (2014), Sec. 3: baseA and baseB,
then for each cut n the selffers BnB/AnA, the transfers AnB/BnA, their fine-tuned "+" forms and the random-weights
baselines RnB/RnA. Every network appears after the base network it copies from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from probe.data.splits import check_split_name, resolve_split, split_is_seeded
from probe.architectures import build_network
from probe.architectures.registry import check_arch_spec
from probe.atomic import read_json_file, write_json
from probe.errors import ProbeError
from probe.spec import ArchSpec, DataSpec, NetworkSpec, Recipe

PLAN = "plan.json"
PLAN_VERSION = 1

# The paper's names of the non-base variants, with (variant, fine_tune).
VARIANT_NAMES = {"BnB": ("selffer", False), "BnB+": ("selffer", True), "AnB": ("transfer", False),
                 "AnB+": ("transfer", True), "RnB": ("random", False)}


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
    variants: tuple[str, ...] = tuple(VARIANT_NAMES)

    def __post_init__(self) -> None:
        for name in ("splits", "seeds", "variants"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("init_seeds", "cuts"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for split in self.splits:
            check_split_name(split)
        for v in self.variants:
            if v not in VARIANT_NAMES:
                raise ProbeError(f"unknown variant {v!r}; expected some of {', '.join(VARIANT_NAMES)} "
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


def make_plan(study: Study, classes: list[str], in_channels: int, image_size: int) -> list[PlannedNetwork]:
    """The networks of ``study`` on a dataset with these ``classes`` and images of this shape, bases first."""
    input_size = study.recipe.crop_size or image_size
    if input_size > image_size + 2 * study.recipe.crop_padding:
        raise ProbeError(f"crop size {input_size} is larger than the {image_size}-pixel images padded by "
                         f"{study.recipe.crop_padding}")
    probe_net = build_network(study.arch, in_channels, 2, input_size, seed=0)
    n_cuts = len(probe_net.cut_points)
    cuts = study.cuts if study.cuts is not None else tuple(range(1, n_cuts + 1))
    for n in cuts:
        if not 1 <= n <= n_cuts:
            raise ProbeError(f"cut {n} is out of range: {study.arch.name} has cut points 1..{n_cuts} "
                             f"({', '.join(probe_net.cut_points)})")
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
            for target in ("A", "B"):
                bases.append(NetworkSpec(target=target, **common))
            for n in cuts:
                for target in ("A", "B"):
                    other = "B" if target == "A" else "A"
                    for v in study.variants:
                        variant, fine_tune = VARIANT_NAMES[v]
                        source = {"selffer": target, "transfer": other, "random": None}[variant]
                        others.append(NetworkSpec(target=target, variant=variant, source=source, cut=n,
                                                  fine_tune=fine_tune, **common))
    return [PlannedNetwork(s, (s.parent.id,) if s.parent else ()) for s in bases + others]


def plan_to_dict(study: Study, plan: list[PlannedNetwork]) -> dict:
    return {"version": PLAN_VERSION, "study": study.to_dict(),
            "networks": [{"id": p.spec.id, "depends_on": list(p.depends_on), "spec": p.spec.to_dict()}
                         for p in plan]}


def study_from_dict(d: dict) -> Study:
    d = dict(d)
    d["data"] = DataSpec(**d["data"])
    d["arch"] = ArchSpec(**d["arch"])
    d["recipe"] = Recipe(**d["recipe"])
    return Study(**d)


def write_plan(run_dir: Path, study: Study, plan: list[PlannedNetwork]) -> Path:
    path = Path(run_dir) / PLAN
    write_json(path, plan_to_dict(study, plan))
    return path


def read_plan(run_dir: Path) -> tuple[Study, list[PlannedNetwork]]:
    path = Path(run_dir) / PLAN
    if not path.exists():
        raise ProbeError(f"{str(run_dir)!r} holds no {PLAN}: not a run directory (start one with 'probe train')")
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
        plan = [PlannedNetwork(NetworkSpec.from_dict(n["spec"]), tuple(n["depends_on"])) for n in d["networks"]]
        return d, study_from_dict(d["study"]), plan
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ProbeError is a ValueError
        raise ProbeError(f"{path} does not describe a plan ({type(e).__name__}: {e}); {fix}") from None
