"""A run directory's layout: every path of a run is computed here, and nowhere else.

    RUN/plan.json                 every planned network, dependency-ordered, with its architecture's layer names
    RUN/data.json                 the input normalization every network shares
    RUN/networks/<network id>/    one folder per network (ids look like random-s0/init0/A3B+), with its weights,
                                  metrics.json and, for a base network, robustness.json ('probe robustness')
    RUN/activations.zarr          the activation store 'probe extract' writes unless told otherwise
    RUN/analysis/                 what 'probe analyze' writes (analysis-balanced/ with --metric balanced, ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PLAN, DATA, NETWORKS, STORE, ANALYSIS = "plan.json", "data.json", "networks", "activations.zarr", "analysis"
WEIGHTS, RESUME, METRICS, SPEC = "weights.safetensors", "resume.safetensors", "metrics.json", "spec.json"
RUNNING, LOCK, ROBUSTNESS = "running.json", "training.lock", "robustness.json"


@dataclass(frozen=True)
class NetworkFiles:
    """The folder of one network and its files."""

    folder: Path

    @property
    def weights(self) -> Path:
        """The final weights, with the spec and the input normalization in the file's metadata."""
        return self.folder / WEIGHTS

    @property
    def resume(self) -> Path:
        """The state after the last finished epoch, while the network is unfinished."""
        return self.folder / RESUME

    @property
    def metrics(self) -> Path:
        """Written last: status done (with the accuracies) or failed (with the error)."""
        return self.folder / METRICS

    @property
    def spec(self) -> Path:
        return self.folder / SPEC

    @property
    def running(self) -> Path:
        """Who trains the network (pid, host, start): for people; the lock is what counts."""
        return self.folder / RUNNING

    @property
    def lock(self) -> Path:
        return self.folder / LOCK

    @property
    def written_in_training(self) -> tuple[Path, ...]:
        """The files training writes, all of them under the network's lock (robustness.json is not one)."""
        return self.weights, self.resume, self.metrics, self.spec, self.running

    @property
    def robustness(self) -> Path:
        """A base network's layer re-initialization accuracies ('probe robustness')."""
        return self.folder / ROBUSTNESS


@dataclass(frozen=True)
class Run:
    """A run directory. It is path-like (``os.fspath(run)``), so it goes wherever a run directory's path does, and
    it reads as its path in messages."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:  # in messages, as its path
        return str(self.path)

    @property
    def plan(self) -> Path:
        return self.path / PLAN

    @property
    def data(self) -> Path:
        return self.path / DATA

    @property
    def networks(self) -> Path:
        """The folder of every network's folder."""
        return self.path / NETWORKS

    def network(self, network_id: str) -> NetworkFiles:
        """The files of the network ``network_id`` (a spec's ``id``)."""
        return NetworkFiles(self.networks / network_id)

    @property
    def store(self) -> Path:
        return self.path / STORE

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS

    def analysis_for(self, metric: str = "top1", pooled: bool = False) -> Path:
        """Where 'probe analyze' writes the report that reads ``metric`` (``pooled``: with pooled directions):
        ``analysis/`` for the default, ``analysis-balanced/``, ``analysis-pooled/``, ``analysis-balanced-pooled/``
        beside it, so that one report never overwrites another's."""
        parts = [*(["balanced"] if metric == "balanced" else []), *(["pooled"] if pooled else [])]
        return self.path / "-".join([ANALYSIS, *parts])
