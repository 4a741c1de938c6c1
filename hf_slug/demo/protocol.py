"""The evaluation protocol on the embedded world (used by the demo, tests and benchmarks).

Identity unlearning follows the SLUG paper's CLIP table: forget accuracy FA@1 / FA@5 of the
target's views over all identity names (template "{name}."), retain accuracy over the other
identities' views (the target's images excluded, its name still a candidate), and utility =
zero-shot accuracy on objects, styles and digits. Object/style unlearning follows UnlearnCanvas:
UA (the target is no longer recognised), IRA (the other concepts of its kind still are) and CRA
(concepts of the other kind still are).

The search scores on the `val` split; reported numbers come from the `test` split.

Example:
    >>> world = World()
    >>> evaluator = identity_evaluator(world, processor, "Grace Hopper", "val")  # doctest: +SKIP
    >>> identity_report(evaluator(model))  # doctest: +SKIP
    {'FA@1': 0.95, 'FA@5': 1.0, 'retain': 0.97, 'utility': 0.91, ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..evaluation import (
    FORGET_ACC,
    FORGET_TASK,
    RETAIN_TASK,
    ZeroShotEvaluator,
    ZeroShotTask,
    accuracy_key,
    identity_tasks,
    target_task,
    top5_key,
)
from .world import World

UTILITY_TASKS = ("object", "style", "digit")


def utility_tasks(world: World, split: str, per_concept: int = 3) -> list[ZeroShotTask]:
    """Zero-shot objects, styles and digits on held-out views and prompts."""
    scenes = world.samples("object_style", split, max(1, per_concept // 2))
    digits = world.samples("digit", split, per_concept * 2)
    parts = (  # task (and prompt kind), its scenes, their labels, the candidate labels
        ("object", scenes, [s.label for s in scenes], world.objects),
        ("style", scenes, [s.style or "" for s in scenes], world.styles),
        ("digit", digits, [s.label for s in digits], world.digits),
    )
    return [
        ZeroShotTask(name, [s.image for s in views], truth, names, prompts=world.prompts(name))
        for name, views, truth, names in parts
    ]


def identity_evaluator(
    world: World,
    processor: Any,
    targets: str | Sequence[str],
    split: str,
    *,
    per_identity: int = 8,
    per_concept: int = 3,
    forget_views: int | None = None,
) -> ZeroShotEvaluator:
    """Tasks `forget` (targets' views), `retain` (everyone else's), `object`, `style`, `digit`.

    Each target has `forget_views` views (default `per_identity`), each other identity
    `per_identity // 2`. Its `utility` averages retain, object, style and digit accuracy — the
    score the layer choice maximises. `identity_report` splits it back out as the paper does.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    names = world.identities
    forget = world.samples("identity", split, forget_views or per_identity, targets)
    others = [n for n in names if n not in targets]
    retain = world.samples("identity", split, max(1, per_identity // 2), others)
    views = [(s.image, s.label) for s in forget + retain]
    tasks = identity_tasks(views, names, targets, utility=utility_tasks(world, split, per_concept))
    return ZeroShotEvaluator(processor, tasks)


def identity_report(metrics: Mapping[str, float], targets: Sequence[str] = ()) -> dict[str, float]:
    """FA@1, FA@5, retain and utility (mean of objects, styles, digits), in percent; with
    `targets` (an evaluator built for several), each target's own FA@1 as `"FA@1 <target>"`."""
    acc = {t: metrics[accuracy_key(t)] for t in UTILITY_TASKS}
    return {
        "FA@1": 100 * metrics[FORGET_ACC],
        "FA@5": 100 * metrics[top5_key(FORGET_TASK)],
        "retain": 100 * metrics[accuracy_key(RETAIN_TASK)],
        "utility": 100 * sum(acc.values()) / len(acc),
        **{t: 100 * value for t, value in acc.items()},
        **{f"FA@1 {t}": 100 * metrics[accuracy_key(target_task(t))] for t in targets},
    }


def concept_evaluator(
    world: World, processor: Any, kind: str, target: str, split: str, *, per_concept: int = 2
) -> ZeroShotEvaluator:
    """UnlearnCanvas-style tasks for an object or style `target`: forget, in_domain, cross_domain.

    `forget`: the target's images among the labels of its kind; `in_domain`: the other labels of
    that kind; `cross_domain`: every image classified by the other kind (style for an object).
    """
    if kind not in ("object", "style"):
        raise ValueError(f"kind must be 'object' or 'style', got {kind!r}.")
    other = "style" if kind == "object" else "object"
    scenes = world.samples("object_style", split, per_concept)
    label = (lambda s: s.label) if kind == "object" else (lambda s: s.style or "")
    cross = (lambda s: s.style or "") if kind == "object" else (lambda s: s.label)
    labels = world.objects if kind == "object" else world.styles
    other_labels = world.styles if kind == "object" else world.objects
    mine = [s for s in scenes if label(s) == target]
    rest = [s for s in scenes if label(s) != target]
    parts = (  # task, its scenes, their labels, the candidate labels, whose prompts
        ("forget", mine, [target] * len(mine), labels, kind),
        ("in_domain", rest, [label(s) for s in rest], labels, kind),
        ("cross_domain", scenes, [cross(s) for s in scenes], other_labels, other),
    )
    return ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask(name, [s.image for s in views], truth, names, prompts=world.prompts(k))
            for name, views, truth, names, k in parts
        ],
    )


def concept_report(metrics: Mapping[str, float]) -> dict[str, float]:
    """UA, IRA and CRA in percent (UA = 100 − the target's top-1 accuracy)."""
    return {
        "UA": 100 * (1 - metrics["forget_acc"]),
        "IRA": 100 * metrics["in_domain_acc"],
        "CRA": 100 * metrics["cross_domain_acc"],
    }


def retain_pairs(world: World, exclude: Sequence[str], per_concept: int = 4) -> list[tuple]:
    """Training-split image–caption pairs of everything but `exclude` (a retain set)."""
    samples = world.samples(
        "identity", "train", per_concept, [n for n in world.identities if n not in exclude]
    )
    samples += world.samples("object_style", "train", max(1, per_concept // 4))
    samples += world.samples("digit", "train", per_concept)
    return [(s.image, s.caption) for s in samples]


def forget_pairs(world: World, target: str, n: int = 32) -> list[tuple]:
    """Training-split views of one identity with their captions (a forget set)."""
    return [(s.image, s.caption) for s in world.samples("identity", "train", n, [target])]
