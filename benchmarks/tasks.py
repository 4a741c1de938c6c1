"""Benchmark tasks on the embedded world: forget/retain sets and val/test evaluation tasks.

A task is rendered once and cached (rendering the world's images is slow and is not any method's
cost), then loaded by every child process. The cache holds data only, never code: one
`.safetensors` file per task (the images as uint8 arrays; captions, labels and prompts as JSON in
its metadata), in a per-user folder (`$HF_SLUG_CACHE/benchmarks`, else
`~/.cache/hf_slug/benchmarks`), named by a hash of the task's parameters, written atomically. Identities follow the SLUG paper's CLIP
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
import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file

from hf_slug.evaluation import ZeroShotEvaluator, ZeroShotTask

FORMAT = "hf_slug-benchmark-task/1"


def default_cache_dir() -> Path:
    """The per-user task cache: `$HF_SLUG_CACHE/benchmarks`, else `~/.cache/hf_slug/benchmarks`
    (`$XDG_CACHE_HOME` replaces `~/.cache`)."""
    root = os.environ.get("HF_SLUG_CACHE")
    if root:
        return Path(root).expanduser() / "benchmarks"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hf_slug" / "benchmarks"


DEFAULT_CACHE = default_cache_dir()


@dataclass(frozen=True)
class TaskSpec:
    """What to render: the target, its kind and the sizes of each set."""

    target: str
    kind: str = "identity"  # "identity", "style" or "object"
    n_forget: int = 32
    n_retain: int | None = None  # None: the protocol's retain set (per_concept=4), shuffled
    per_identity: int = 8  # evaluation views per identity (identity tasks)
    per_concept: int = 3  # evaluation views per object/style/digit
    seed: int = 0  # the world's view draw: which views are forget, retain, val and test
    test_views: int | None = None  # test views per identity (None: per_identity); see test_scale

    def key(self) -> str:
        """A hash of the spec and of the world's and protocol's code (a changed world re-renders)."""
        from hf_slug.demo import protocol, world

        fields = asdict(self)
        if fields["test_views"] is None:  # specs written before the field keep their cache key
            del fields["test_views"]
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
        for module in (world, protocol):
            digest.update(Path(module.__file__).read_bytes())
        return digest.hexdigest()[:16]

    @property
    def slug(self) -> str:
        return self.target.lower().replace(" ", "_")

    @property
    def test_scale(self) -> float:
        """How many times the val split's views the test split holds (1 unless `test_views`).

        Every test view count grows by it: the target's and the other identities' views, the
        utility tasks' views, and a style/object target's scenes (2 per combination at scale 1).
        """
        return 1.0 if self.test_views is None else self.test_views / self.per_identity


@dataclass
class Task:
    """A rendered task: training pairs and the zero-shot tasks of each split."""

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

    @property
    def candidates(self) -> list[str]:
        """The names the target is classified among (the val forget task's labels)."""
        return next(list(t.label_names) for t in self.val_tasks if t.name == "forget")


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
        test = identity_evaluator(
            world,
            processor,
            spec.target,
            "test",
            per_identity=spec.test_views or spec.per_identity,
            per_concept=_scaled(spec.per_concept, spec.test_scale),
        )
    elif spec.kind in ("style", "object"):
        forget, retain = _concept_pairs(world, spec)
        val = concept_evaluator(world, processor, spec.kind, spec.target, "val", per_concept=2)
        test = concept_evaluator(
            world,
            processor,
            spec.kind,
            spec.target,
            "test",
            per_concept=_scaled(2, spec.test_scale),
        )
    else:
        raise ValueError(f"kind must be identity, style or object, got {spec.kind!r}.")
    random.Random(spec.seed).shuffle(retain)  # contrastive batches should mix concepts
    if spec.n_retain is not None:
        if len(retain) < spec.n_retain:
            raise ValueError(f"only {len(retain)} retain pairs for n_retain={spec.n_retain}.")
        retain = retain[: spec.n_retain]
    return Task(spec, forget, retain, val.tasks, test.tasks)


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def _digest(image: Any) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def view_counts(task: Task) -> dict[str, Any]:
    """Whether the world drew as many distinct held-out views as asked: per test task (distinct
    images, images), and how many test images also occur in the val split or the training pairs.

    Example:
        >>> view_counts(load_task(path))["tasks"]["forget"]  # doctest: +SKIP
        [24, 24]
    """
    seen = {_digest(i) for t in task.val_tasks for i in t.images}
    seen |= {_digest(image) for image, _ in task.forget + task.retain}
    counts, shared = {}, set()
    for t in task.test_tasks:
        digests = [_digest(image) for image in t.images]
        counts[t.name] = [len(set(digests)), len(digests)]
        shared |= set(digests) & seen
    return {"tasks": counts, "test_images_also_in_val_or_training": len(shared)}


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
    """The path of the task's cache file, rendering it first if it is not cached yet.

    `processor` only builds the evaluators while rendering; tasks do not depend on it.
    """
    path = Path(cache_dir) / f"task-{spec.slug}-{spec.key()}.safetensors"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_task(build_task(spec, processor), path)
    return path


def save_task(task: Task, path: str | Path) -> Path:
    """Write `task` as one safetensors file (uint8 images, a JSON record in its metadata),
    atomically: into a temp file beside `path`, then `os.replace`."""
    images: list[np.ndarray] = []
    modes: list[str] = []
    index: dict[int, int] = {}

    def ref(image: Image.Image) -> int:
        if id(image) not in index:
            index[id(image)] = len(images)
            images.append(np.asarray(image))
            modes.append(image.mode)
        return index[id(image)]

    def pairs(items: list[tuple[Any, str]]) -> list[list]:
        return [[ref(image), str(caption)] for image, caption in items]

    def zero_shot(tasks: list[ZeroShotTask]) -> list[dict]:
        return [
            {
                "name": t.name,
                "images": [ref(image) for image in t.images],
                "labels": list(t.labels),
                "label_names": list(t.label_names),
                "templates": list(t.templates),
                "prompts": {k: list(v) for k, v in t.prompts.items()} if t.prompts else None,
                "counts_for_utility": t.counts_for_utility,
            }
            for t in tasks
        ]

    record = {
        "format": FORMAT,
        "spec": asdict(task.spec),
        "forget": pairs(task.forget),
        "retain": pairs(task.retain),
        "val_tasks": zero_shot(task.val_tasks),
        "test_tasks": zero_shot(task.test_tasks),
        "modes": modes,
    }
    arrays = {f"image_{i}": np.ascontiguousarray(array) for i, array in enumerate(images)}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata={"hf_slug": FORMAT, "record": json.dumps(record)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_task(path: str | Path) -> Task:
    """Read a task written by `save_task` (arrays and JSON only)."""
    with safe_open(str(path), framework="np") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("hf_slug") != FORMAT:
            raise ValueError(
                f"{path} is not a {FORMAT} task cache: delete it, and it is rendered again."
            )
        record = json.loads(metadata["record"])
        images = [
            _image(handle.get_tensor(f"image_{i}"), mode) for i, mode in enumerate(record["modes"])
        ]

    def pairs(items: list[list]) -> list[tuple[Any, str]]:
        return [(images[i], caption) for i, caption in items]

    def zero_shot(tasks: list[dict]) -> list[ZeroShotTask]:
        return [
            ZeroShotTask(
                t["name"],
                [images[i] for i in t["images"]],
                t["labels"],
                t["label_names"],
                tuple(t["templates"]),
                t["prompts"],
                t["counts_for_utility"],
            )
            for t in tasks
        ]

    return Task(
        TaskSpec(**record["spec"]),
        pairs(record["forget"]),
        pairs(record["retain"]),
        zero_shot(record["val_tasks"]),
        zero_shot(record["test_tasks"]),
    )


def _image(array: np.ndarray, mode: str) -> Image.Image:
    image = Image.fromarray(array)
    return image if image.mode == mode else image.convert(mode)
