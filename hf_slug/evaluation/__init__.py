"""Evaluators for the step search and for reports: zero-shot classification on CLIP.

An evaluator is called with the model and returns named metrics. Modules:

- `base`: `Evaluator`, `CallableEvaluator`, `as_evaluator`, `Metrics` and the metric keys
  (`accuracy_key`, `top5_key`, `UTILITY`, `PROMPT_DRIFT`, `FORGET_TASK`, `FORGET_ACC`);
- `tasks`: `ZeroShotTask` and how its images are scored;
- `zero_shot`: `ZeroShotEvaluator`, cheap for the search (kept features, early exit);
- `prefix_cache`: the blocks below an edit, recorded once and replayed through views of the
  model (`recording`, `from_block`), never patching it;
- `stacked`: `StackedEvaluator`, one concept's metrics with other concepts' deltas added;
- `identity`: `identity_tasks`, the identity table's tasks (forget, retain, one per target).

Example:
    >>> evaluator = ZeroShotEvaluator(processor, identity_tasks(views, names, "Ada"))  # doctest: +SKIP
    >>> evaluator(model)[accuracy_key(FORGET_TASK)]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

from .base import (
    FORGET_ACC,
    FORGET_TASK,
    PROMPT_DRIFT,
    RETAIN_TASK,
    UTILITY,
    CallableEvaluator,
    Evaluator,
    Metrics,
    accuracy_key,
    as_evaluator,
    top5_key,
)
from .identity import identity_tasks, target_task
from .prefix_cache import _rows as _rows
from .prefix_cache import from_block, recording, with_blocks
from .stacked import StackedEvaluator
from .tasks import SCORINGS, ZeroShotTask
from .tasks import _accuracy as _accuracy
from .tasks import _boosted as _boosted
from .tasks import _logits as _logits
from .tasks import _rate as _rate
from .tasks import _view_hits as _view_hits
from .zero_shot import ZeroShotEvaluator

__all__ = [
    "FORGET_ACC",
    "FORGET_TASK",
    "PROMPT_DRIFT",
    "RETAIN_TASK",
    "SCORINGS",
    "UTILITY",
    "CallableEvaluator",
    "Evaluator",
    "Metrics",
    "StackedEvaluator",
    "ZeroShotEvaluator",
    "ZeroShotTask",
    "accuracy_key",
    "as_evaluator",
    "from_block",
    "identity_tasks",
    "recording",
    "target_task",
    "top5_key",
    "with_blocks",
]
