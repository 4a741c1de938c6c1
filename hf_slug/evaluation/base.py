"""What an evaluator is, and the metric keys the built-in evaluators return.

An evaluator is called with the model and returns named metrics (`Metrics`: name -> float).
The zero-shot evaluators' keys are made by functions and never parsed back: a task named `t`
gives `accuracy_key(t)` (top-1, `"{t}_acc"`) and `top5_key(t)` (`"{t}_acc@5"`), and `UTILITY`
is the mean top-1 of the tasks that count for utility; `PROMPT_DRIFT` is how far a text edit moves
the other labels' prompts during a search. `FORGET_TASK` names the forget set's
task (the default criterion reads `FORGET_ACC`); it never counts for utility.

Example:
    >>> accuracy_key(FORGET_TASK), top5_key(FORGET_TASK), FORGET_ACC
    ('forget_acc', 'forget_acc@5', 'forget_acc')
    >>> as_evaluator(lambda model: {"forget_acc": 1})(None)
    {'forget_acc': 1.0}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from torch import nn

from ..errors import ConfigError

Metrics = dict[str, float]

FORGET_TASK = "forget"
"""The name of the forget set's zero-shot task; it never counts for `UTILITY`."""
RETAIN_TASK = "retain"
"""The name of the retain set's zero-shot task in the default and identity evaluators."""
UTILITY = "utility"
"""The mean top-1 accuracy of the tasks that count for utility (every task evaluated)."""
PROMPT_DRIFT = "prompt_drift"
"""During a text-tower search (between `begin` and `end`): how far the edit moves the prompts of
the labels that no image of a drift-tracking task has — mean cosine distance of their text
features from where the unit's search began. A retain null space hides an edit from the retain
captions; this sees what it does to phrasings they do not hold. Lower is less collateral."""


def accuracy_key(task: str) -> str:
    """The key of a zero-shot task's top-1 accuracy.

    Example:
        >>> accuracy_key("retain")
        'retain_acc'
    """
    return f"{task}_acc"


def top5_key(task: str) -> str:
    """The key of a zero-shot task's top-5 accuracy.

    Example:
        >>> top5_key("retain")
        'retain_acc@5'
    """
    return f"{task}_acc@5"


FORGET_ACC = accuracy_key(FORGET_TASK)
"""The default forget metric: the forget task's top-1 accuracy."""


class Evaluator:
    """Base class: `__call__(model) -> metrics`. `begin`/`end` bracket trials on one unit.

    Example:
        >>> class Constant(Evaluator):
        ...     def __call__(self, model):
        ...         return {"forget_acc": 0.0}
        >>> Constant().evaluate_forget(None, "forget_acc", 0.0)
        ({'forget_acc': 0.0}, True)
    """

    def __call__(self, model: nn.Module) -> Metrics:
        raise NotImplementedError

    @property
    def tracks_drift(self) -> bool:
        """True when a text-tower search reports `PROMPT_DRIFT` (then `unlearn` also searches
        every text block's `fc2`, chosen among by the least drift)."""
        return False

    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        """Called at the original weights before trials that edit only `names`."""

    def end(self) -> None:
        """Called after the trials of one unit."""

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """At least the named `metrics`; the search asks only for the forget metric on most
        trials. The default computes everything; evaluators that can compute less override it."""
        return self(model)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """(metrics, exact) for a trial that asks only whether `metric <= ceiling`: it may stop once
        `metric` must exceed `ceiling`, returning a lower bound (same decision) and False."""
        return self.evaluate_only(model, (metric,)), True


class CallableEvaluator(Evaluator):
    """Wrap any `fn(model) -> dict[str, float]` as an evaluator.

    Example:
        >>> CallableEvaluator(lambda model: {"utility": 1})(None)
        {'utility': 1.0}
    """

    def __init__(self, fn: Callable[[nn.Module], Mapping[str, float]]):
        self.fn = fn

    def __call__(self, model: nn.Module) -> Metrics:
        metrics = self.fn(model)
        if not isinstance(metrics, Mapping):
            raise ConfigError(
                f"the evaluator returned a {type(metrics).__name__}, not a dict of metrics: make "
                "it return e.g. {'forget_acc': 0.9, 'utility': 0.8}."
            )
        out = {}
        for key, value in metrics.items():
            try:
                out[str(key)] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"the evaluator's metric {key!r} is {value!r}, not a number: return floats."
                ) from None
        return out


def as_evaluator(evaluator: Evaluator | Callable[[nn.Module], Mapping[str, float]]) -> Evaluator:
    """An `Evaluator` as is, or a plain callable wrapped in `CallableEvaluator`.

    Example:
        >>> type(as_evaluator(lambda model: {})).__name__
        'CallableEvaluator'
    """
    if isinstance(evaluator, Evaluator):
        return evaluator
    if callable(evaluator):
        return CallableEvaluator(evaluator)
    raise TypeError(
        f"an evaluator must be an hf_slug Evaluator or a callable model -> dict, got "
        f"{type(evaluator).__name__}."
    )
