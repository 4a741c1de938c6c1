"""The one-step update, its step-size search, and the choice of layer (SLUG.md §4).

`θ_l = θ_l⁰ + s · (‖θ_l⁰‖ / ‖G_f,l‖) · G_f,l`: ascent on the forget loss with `‖Δθ_l‖ = s‖θ_l⁰‖`.
The search starts at `s₀`, doubles `s` until the forget criterion is met, then bisects, keeping
the smallest `s` that meets it. Every trial starts from θ⁰. Trials ask the evaluator only
whether the forget metric meets the criterion (`Evaluator.evaluate_forget`), which may stop as
soon as it cannot (`hf_slug.evaluation.early_exit`: the same decision, a lower bound, `Trial.partial`); the kept
step alone is evaluated in full.

Example:
    >>> deltas = update(model, ("vision_model.encoder.layers.0.mlp.fc1.weight",),  # doctest: +SKIP
    ...                 forget_grads, step=0.5)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .checks import finite_real
from .errors import ConfigError, NonFiniteGradientError, NonFiniteOutputError
from .evaluation import FORGET_ACC, UTILITY, Evaluator, Metrics
from .options import SearchSettings
from .towers import short_name
from .weights import edited

NON_FINITE = "non_finite"  # a trial's only metric when the edited model gave NaN/inf features


@dataclass(frozen=True)
class Criterion:
    """When a trial has forgotten enough, and (optionally) how much utility it may cost."""

    forget_metric: str = FORGET_ACC
    forget_target: float = 0.0
    utility_metric: str = UTILITY
    utility_tolerance: float | None = None  # reject steps losing more than this (absolute)

    def __post_init__(self) -> None:
        for field_name in ("forget_metric", "utility_metric"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value:
                raise ConfigError(
                    f"{field_name} must be a metric name (a non-empty str), got {value!r}: pass "
                    "the key your evaluator returns, e.g. 'forget_acc'."
                )
        if not _is_number(self.forget_target):
            raise ConfigError(
                f"forget_target must be a finite number, got {self.forget_target!r}: pass e.g. "
                "forget_target=0.0 (the largest forget metric that counts as forgotten)."
            )
        if self.utility_tolerance is not None and not (
            _is_number(self.utility_tolerance) and self.utility_tolerance >= 0
        ):
            raise ConfigError(
                f"utility_tolerance must be None or a finite number >= 0, got "
                f"{self.utility_tolerance!r}: pass e.g. utility_tolerance=0.02, or None."
            )

    @property
    def ceiling(self) -> float:
        """The largest forget metric that counts as forgotten."""
        return self.forget_target + 1e-9

    def forgets(self, metrics: Metrics) -> bool:
        return self.forget_value(metrics) <= self.ceiling

    def forget_value(self, metrics: Mapping[str, Any]) -> float:
        """The forget metric of `metrics`; a typed error if it is missing or not finite."""
        if not isinstance(metrics, Mapping) or self.forget_metric not in metrics:
            found = sorted(metrics) if isinstance(metrics, Mapping) else type(metrics).__name__
            raise ConfigError(
                f"the evaluator returned no {self.forget_metric!r} metric (it returned {found}): "
                f"make it return {self.forget_metric!r}, or set SLUGConfig(forget_metric=...) "
                "to one of the keys it returns."
            )
        value = metrics[self.forget_metric]
        if not _is_number(value):
            raise NonFiniteGradientError(
                f"the evaluator returned {self.forget_metric!r} = {value!r}, not a finite number: "
                "check the evaluator and that the model's weights and inputs are finite."
            )
        return float(value)

    def guarding(self, before: Metrics) -> Criterion:
        """This criterion; with its guard off, and a warning, when `before` (the evaluator's
        metrics) has no utility metric to guard."""
        if self.utility_tolerance is None or self.utility_metric in before:
            return self
        warnings.warn(
            f"the evaluator returns no {self.utility_metric!r}, so the utility guard "
            f"(utility_tolerance={self.utility_tolerance}) cannot run and is off: return that "
            "metric, or name yours with SLUGConfig(utility_metric=...).",
            stacklevel=3,
        )
        return dataclasses.replace(self, utility_tolerance=None)

    def keeps_utility(self, metrics: Metrics, before: Metrics) -> bool:
        if self.utility_tolerance is None or self.utility_metric not in before:
            return True
        return metrics[self.utility_metric] >= before[self.utility_metric] - self.utility_tolerance


@dataclass
class Trial:
    """One evaluation of one unit at one step; `partial`: it stopped early, so its forget metric
    is a lower bound that already fails the criterion (`Evaluator.evaluate_forget`)."""

    label: str
    step: float
    metrics: Metrics
    forgets: bool
    partial: bool = False

    def to_dict(self) -> dict:
        head = {"layer": self.label, "step": self.step, "forgets": self.forgets}
        return {**head, "partial": self.partial, **self.metrics}


@dataclass
class LayerSearch:
    """The search on one unit: its trials and the smallest step that met the criterion."""

    names: tuple[str, ...]
    trials: list[Trial] = field(default_factory=list)
    step: float | None = None
    metrics: Metrics | None = None
    status: str = "not searched"

    @property
    def label(self) -> str:
        return short_name(self.names)

    @property
    def usable(self) -> bool:
        return self.status == "met"


def step_scales(
    model: nn.Module, names: Sequence[str], forget_grads: Mapping[str, torch.Tensor], step: float
) -> dict[str, float]:
    """The raw scale `s · ‖θ⁰‖ / ‖G_f‖` multiplying each named tensor's forget gradient."""
    return {
        n: step
        * float(model.get_parameter(n).detach().float().norm())
        / max(float(forget_grads[n].float().norm()), 1e-30)
        for n in names
    }


def update(
    model: nn.Module, names: Sequence[str], forget_grads: Mapping[str, torch.Tensor], step: float
) -> dict[str, torch.Tensor]:
    """The fp32 deltas `s · ‖θ⁰‖/‖G_f‖ · G_f` of each named tensor at relative step `step`."""
    scales = step_scales(model, names, forget_grads, step)
    deltas = {n: forget_grads[n].float() * scales[n] for n in names}
    for name, delta in deltas.items():
        if not torch.isfinite(delta).all():
            raise NonFiniteOutputError(
                f"at step s={step:g} the delta of {name} overflows float32: use a smaller "
                "initial_step, and check the forget gradients are finite."
            )
    return deltas


def _is_number(value: object) -> bool:
    return finite_real(value) is not None


def search_step(
    model: nn.Module,
    names: tuple[str, ...],
    forget_grads: Mapping[str, torch.Tensor],
    evaluator: Evaluator,
    criterion: Criterion,
    before: Metrics,
    settings: SearchSettings | None = None,
) -> LayerSearch:
    """Double `s` from `settings.initial_step` until the criterion is met, then bisect;
    at most `settings.max_evaluations` trials, stopping once the bracket is within
    `settings.rel_tolerance` of the step."""
    settings = settings or SearchSettings()
    result = LayerSearch(names)
    low, high = 0.0, None  # the largest step known to fail, the smallest known to succeed
    step = settings.initial_step
    try:
        evaluator.begin(model, names)  # inside: a failing begin still ends the unit
        for _ in range(settings.max_evaluations):
            try:
                with edited(model, update(model, names, forget_grads, step)):
                    metrics, exact = evaluator.evaluate_forget(
                        model, criterion.forget_metric, criterion.ceiling
                    )
                forgets = criterion.forgets(metrics)
            except NonFiniteOutputError:  # the edit overflowed: a broken model forgets nothing
                metrics, exact, forgets = {NON_FINITE: 1.0}, False, False
            result.trials.append(Trial(short_name(names), step, metrics, forgets, not exact))
            if forgets:
                high, result.step, result.metrics = step, step, metrics
            else:
                low = step
            if high is not None and (high - low) <= settings.rel_tolerance * high:
                break
            step = step * 2 if high is None else (low + high) / 2
        missing = set(before) - set(result.metrics or {})
        if result.metrics is not None and missing:
            # only the kept step needs every metric (for the choice and the utility guard); its
            # trial passed, so the metrics it has are exact: ask for the rest
            with edited(model, update(model, names, forget_grads, high)):
                result.metrics = {**result.metrics, **evaluator.evaluate_only(model, missing)}
            next(t for t in reversed(result.trials) if t.step == high).metrics = result.metrics
    finally:
        evaluator.end()
    if high is None:
        result.status = f"largest step reached: s={low:g} did not meet the criterion"
    elif not criterion.keeps_utility(result.metrics, before):
        result.status = (
            f"utility guard: at s={high:g} {criterion.utility_metric} fell from "
            f"{before[criterion.utility_metric]:.4f} to {result.metrics[criterion.utility_metric]:.4f}"
        )
    else:
        result.status = "met"
    return result


CHOICE_RULE = (
    "among searched layers whose smallest passing step met the forget criterion{guard}, the one "
    "with the highest {utility} on the search's evaluation data; ties go to {tie}"
)
SMALLER_STEP = "the smaller step"


def no_layer_message(concept: str, criterion: Criterion, searches: Sequence[LayerSearch]) -> str:
    """Why no searched layer was chosen for `concept`, and what to change."""
    fixes = "raise max_evaluations or initial_step, add the other tower, or give more forget data"
    guarded = [s for s in searches if s.status.startswith("utility guard")]
    if guarded:
        fixes = (
            f"{len(guarded)} layer(s) forgot it but lost more than "
            f"utility_tolerance={criterion.utility_tolerance} of {criterion.utility_metric}: "
            "accept a larger cost (a larger utility_tolerance, or None to turn the guard off), "
            + fixes
        )
    return (
        f"SLUG found no layer that forgets {concept!r} to {criterion.forget_metric} <= "
        f"{criterion.forget_target}: {fixes}. See result.searches for each layer's status."
    )


def guard_clause(criterion: Criterion) -> str:
    """How a choice rule says the utility guard in words ("" without a guard)."""
    if criterion.utility_tolerance is None:
        return ""
    return (
        f" and kept {criterion.utility_metric} within {criterion.utility_tolerance} of the original"
    )


def choose(
    searches: Sequence[LayerSearch],
    criterion: Criterion,
    tie_break: Callable[[LayerSearch], float] | None = None,
    tie: str = SMALLER_STEP,
) -> tuple[LayerSearch | None, str]:
    """The chosen search and the rule, written out, that chose it.

    Among equal utilities the smallest `tie_break(search)` wins, then the smaller step
    (default: the step alone; `tie` says the rule in words)."""
    rule = CHOICE_RULE.format(
        guard=guard_clause(criterion), utility=criterion.utility_metric, tie=tie
    )
    usable = [s for s in searches if s.usable]
    if not usable:
        return None, rule
    utility = criterion.utility_metric
    best = max(s.metrics.get(utility, 0.0) for s in usable)
    tied = [s for s in usable if s.metrics.get(utility, 0.0) == best]
    return min(tied, key=lambda s: (tie_break(s) if tie_break else s.step, s.step)), rule


def search_layers(
    model: nn.Module,
    units: Sequence[tuple[str, ...]],
    forget_grads: Mapping[str, torch.Tensor],
    evaluator: Evaluator,
    criterion: Criterion,
    before: Metrics,
    settings: SearchSettings | None = None,
    *,
    progress: bool = True,
) -> list[LayerSearch]:
    """Run `search_step` on each unit, with a progress bar over units."""
    searches = []
    bar = tqdm(units, desc="step search", unit="layer", disable=not progress)
    for unit in bar:
        bar.set_postfix_str(short_name(unit))
        searches.append(
            search_step(
                model,
                unit,
                forget_grads,
                evaluator,
                criterion,
                before,
                settings,
            )
        )
    return searches
