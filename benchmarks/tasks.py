"""Benchmark tasks on the embedded world: forget/retain sets and val/test evaluation tasks.

A task is rendered once and cached as a pickle (rendering the world's images is slow and is not
any method's cost), then loaded by every child process. Identities follow the SLUG paper's CLIP
protocol (`hf_slug.demo.protocol.identity_evaluator`); styles and objects follow UnlearnCanvas
(`concept_evaluator`). The search and the stopping checks read the `val` split; every reported
number comes from the `test` split.

Every task reports the same four numbers, in percent:
FA@1 / FA@5 (the target's images classified among its kind's names), `retain` (identities: the
other identities; styles/objects: the other concepts of the kind, UnlearnCanvas' IRA) and
`utility` (identities: mean zero-shot accuracy on objects, styles and digits; styles/objects:
the other kind's accuracy, UnlearnCanvas' CRA).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_slug.evaluation import ZeroShotEvaluator, ZeroShotTask

DEFAULT_CACHE = Path("/tmp/hf_slug_benchmark_cache")


@dataclass(frozen=True)
class TaskSpec:
    """What to render: the target, its kind and the sizes of each set."""

    target: str
    kind: str = "identity"  # "identity", "style" or "object"
    n_forget: int = 32
    n_retain: int | None = None  # None: the protocol's retain set (per_concept=4), shuffled
    per_identity: int = 8  # evaluation views per identity (identity tasks)
    per_concept: int = 3  # evaluation views per object/style/digit
    seed: int = 0

    def key(self) -> str:
        """A hash of the spec and of the world's and protocol's code (a changed world re-renders)."""
        from hf_slug.demo import protocol, world

        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        for module in (world, protocol):
            digest.update(Path(module.__file__).read_bytes())
        return digest.hexdigest()[:16]

    @property
    def slug(self) -> str:
        return self.target.lower().replace(" ", "_")


@dataclass
class Task:
    """A rendered task: training pairs and the (picklable) zero-shot tasks of each split."""

    spec: TaskSpec
    forget: list[tuple[Any, str]]
    retain: list[tuple[Any, str]]
    val_tasks: list[ZeroShotTask]
    test_tasks: list[ZeroShotTask]

    def evaluator(self, processor: Any, split: str) -> ZeroShotEvaluator:
        """All of a split's tasks (the search's evaluator on `val`; reports on `test`)."""
        tasks = self.val_tasks if split == "val" else self.test_tasks
        return ZeroShotEvaluator(processor, tasks)

    def stop_evaluator(self, processor: Any) -> ZeroShotEvaluator:
        """Only the `val` forget task: what the iterative baselines check to stop."""
        return ZeroShotEvaluator(processor, [t for t in self.val_tasks if t.name == "forget"])

    def report(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """FA@1, FA@5, retain and utility in percent (see the module docstring)."""
        return report(self.spec.kind, metrics)


def report(kind: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """FA@1, FA@5, retain and utility in percent for a task of `kind`."""
    from hf_slug.demo.protocol import identity_report

    if kind == "identity":
        full = identity_report(metrics)
        return {k: full[k] for k in ("FA@1", "FA@5", "retain", "utility")}
    return {
        "FA@1": 100 * metrics["forget_acc"],
        "FA@5": 100 * metrics["forget_acc@5"],
        "retain": 100 * metrics["in_domain_acc"],
        "utility": 100 * metrics["cross_domain_acc"],
    }


def build_task(spec: TaskSpec, processor: Any) -> Task:
    """Render a task's images and evaluation tasks (slow: tens of seconds)."""
    from hf_slug.demo.protocol import (
        concept_evaluator,
        forget_pairs,
        identity_evaluator,
        retain_pairs,
    )
    from hf_slug.demo.world import World

    world = World(seed=spec.seed)
    if spec.kind == "identity":
        forget = forget_pairs(world, spec.target, spec.n_forget)
        retain = retain_pairs(world, exclude=[spec.target], per_concept=_per_concept(spec))
        size = dict(per_identity=spec.per_identity, per_concept=spec.per_concept)
        val = identity_evaluator(world, processor, spec.target, "val", **size)
        test = identity_evaluator(world, processor, spec.target, "test", **size)
    elif spec.kind in ("style", "object"):
        forget, retain = _concept_pairs(world, spec)
        val = concept_evaluator(world, processor, spec.kind, spec.target, "val", per_concept=2)
        test = concept_evaluator(world, processor, spec.kind, spec.target, "test", per_concept=2)
    else:
        raise ValueError(f"kind must be identity, style or object, got {spec.kind!r}.")
    random.Random(spec.seed).shuffle(retain)  # contrastive batches should mix concepts
    if spec.n_retain is not None:
        if len(retain) < spec.n_retain:
            raise ValueError(f"only {len(retain)} retain pairs for n_retain={spec.n_retain}.")
        retain = retain[: spec.n_retain]
    return Task(spec, forget, retain, val.tasks, test.tasks)


def _per_concept(spec: TaskSpec) -> int:
    """Retain views per concept: the protocol's 4, or enough for `n_retain` pairs."""
    if spec.n_retain is None:
        return 4
    per = 4
    while 25 * per + 96 * max(1, per // 4) + 10 * per < spec.n_retain:
        per *= 2
    return per


def _concept_pairs(world: Any, spec: TaskSpec) -> tuple[list, list]:
    """Forget: training scenes of the target style/object; retain: everything else."""
    per = -(-spec.n_forget // (12 if spec.kind == "style" else 8))
    scenes = world.samples("object_style", "train", per, [spec.target])
    forget = [(s.image, s.caption) for s in scenes][: spec.n_forget]
    per_identity = 4 if spec.n_retain is None else max(4, spec.n_retain // 100)
    samples = world.samples("identity", "train", per_identity)
    others = [
        s
        for s in world.samples("object_style", "train", max(1, per_identity // 4))
        if spec.target not in (s.label, s.style)
    ]
    samples += others + world.samples("digit", "train", per_identity)
    return forget, [(s.image, s.caption) for s in samples]


def cached_task(spec: TaskSpec, processor: Any, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The path of the task's pickle, rendering it first if it is not cached yet.

    `processor` only builds the evaluators while rendering; tasks do not depend on it.
    """
    path = Path(cache_dir) / f"task-{spec.slug}-{spec.key()}.pkl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        task = build_task(spec, processor)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(task, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return path


def load_task(path: str | Path) -> Task:
    with Path(path).open("rb") as handle:
        return pickle.load(handle)
