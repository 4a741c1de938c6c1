"""One identity evaluator: the targets' views must be forgotten, everyone else's kept.

The tasks of SLUG's CLIP identity table, built from (image, name) views whatever their source
(the demo's embedded world, photo folders, generated images), so the demo protocol and the
notebooks score identities the same way.

Example:
    >>> from PIL import Image
    >>> views = [(Image.new("RGB", (4, 4)), name) for name in ("Ada", "Bob", "Cy", "Ada")]
    >>> tasks = identity_tasks(views, ["Ada", "Bob", "Cy"], ["Ada", "Cy"])
    >>> [(t.name, len(t.images), t.in_utility) for t in tasks]
    [('forget', 3, False), ('retain', 1, True), ('forget Ada', 2, False), ('forget Cy', 1, False)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import FORGET_TASK, RETAIN_TASK
from .tasks import ZeroShotTask


def target_task(target: str) -> str:
    """The task of one target's own views when several are forgotten together.

    Example:
        >>> target_task("Grace Hopper")
        'forget Grace Hopper'
    """
    return f"{FORGET_TASK} {target}"


def identity_tasks(
    views: Sequence[tuple[Any, str]],
    names: Sequence[str],
    targets: str | Sequence[str],
    *,
    prompts: Mapping[str, Sequence[str]] | None = None,
    utility: Sequence[ZeroShotTask] = (),
) -> list[ZeroShotTask]:
    """`FORGET_TASK` (the targets' views), `RETAIN_TASK` (everyone else's), then the `utility`
    tasks, then with several targets one `target_task(t)` per target (not in utility).

    Every view is classified among all `names`, each named by `prompts` (default `"{name}."`);
    views keep their order within each task.

    Example:
        >>> evaluator = ZeroShotEvaluator(processor, identity_tasks(views, names, "Ada"))  # doctest: +SKIP
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    prompts = {n: [f"{n}."] for n in names} if prompts is None else prompts

    def task(name: str, keep: Callable[[str], bool], in_utility: bool = True) -> ZeroShotTask:
        chosen = [(image, label) for image, label in views if keep(label)]
        return ZeroShotTask(
            name,
            [image for image, _ in chosen],
            [label for _, label in chosen],
            names,
            prompts=prompts,
            counts_for_utility=in_utility,
        )

    tasks = [
        task(FORGET_TASK, lambda label: label in targets),
        task(RETAIN_TASK, lambda label: label not in targets),
        *utility,
    ]
    if len(targets) > 1:
        tasks += [task(target_task(t), lambda label, t=t: label == t, False) for t in targets]
    return tasks
