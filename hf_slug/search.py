"""The one-step update, its step-size search, and the choice of layer (SLUG.md §4).

`θ_l = θ_l⁰ + s · (‖θ_l⁰‖ / ‖G_f,l‖) · G_f,l`: ascent on the forget loss with `‖Δθ_l‖ = s‖θ_l⁰‖`.
The search starts at `s₀`, doubles `s` until the forget criterion is met, then bisects, keeping
the smallest `s` that meets it. Every trial starts from θ⁰. Trials ask the evaluator only
whether the forget metric meets the criterion (`Evaluator.evaluate_forget`), which may stop as
soon as it cannot (`decide_early`: the same decision, a lower bound, `Trial.partial`); the kept
step alone is evaluated in full.

Example:
    >>> deltas = update(model, ("vision_model.encoder.layers.0.mlp.fc1.weight",),  # doctest: +SKIP
    ...                 forget_grads, step=0.5)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .checks import finite_real, positive_int, positive_number
from .errors import ConfigError, NonFiniteGradientError
from .evaluation import (
    Evaluator,
    Metrics,
    _boosted,
    _logits,
    _replaying,
    _rows,
    _view_hits,
    as_evaluator,
)
from .families.clip import Tower, short_name


@dataclass(frozen=True)
class Criterion:
    """When a trial has forgotten enough, and (optionally) how much utility it may cost."""

    forget_metric: str = "forget_acc"
    forget_target: float = 0.0
    utility_metric: str = "utility"
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
    params = dict(model.named_parameters())
    return {
        n: step
        * float(params[n].detach().float().norm())
        / max(float(forget_grads[n].float().norm()), 1e-30)
        for n in names
    }


def update(
    model: nn.Module, names: Sequence[str], forget_grads: Mapping[str, torch.Tensor], step: float
) -> dict[str, torch.Tensor]:
    """The fp32 deltas `s · ‖θ⁰‖/‖G_f‖ · G_f` of each named tensor at relative step `step`."""
    scales = step_scales(model, names, forget_grads, step)
    return {n: forget_grads[n].float() * scales[n] for n in names}


@contextlib.contextmanager
def edited(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Add `deltas` to the model's tensors for the duration; restore the exact originals after."""
    params = dict(model.named_parameters())
    originals = {name: params[name].detach().clone() for name in deltas}
    try:
        with torch.no_grad():
            for name, delta in deltas.items():
                p = params[name]
                p.copy_((p.float() + delta.to(p.device)).to(p.dtype))
        yield
    finally:
        with torch.no_grad():
            for name, original in originals.items():
                params[name].copy_(original)


class StackedEvaluator(Evaluator):
    """Evaluate with other concepts' deltas added: search one concept's step on top of a stack.

    `deltas`: `ConceptDelta`s (their dense tensors) or name -> tensor dicts, summed.
    """

    def __init__(self, evaluator: Evaluator, deltas: Sequence[Any]):
        self.evaluator = as_evaluator(evaluator)
        self.stack: dict[str, torch.Tensor] = {}
        for delta in deltas:
            tensors = delta.dense() if hasattr(delta, "dense") else delta
            for name, tensor in tensors.items():
                self.stack[name] = self.stack.get(name, 0) + tensor.float()

    def __call__(self, model: nn.Module) -> Metrics:
        with self._stacked(model):
            return self.evaluator(model)

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        with self._stacked(model):
            return self.evaluator.evaluate_only(model, metrics)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        with self._stacked(model):
            return self.evaluator.evaluate_forget(model, metric, ceiling)

    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        with self._stacked(model):
            self.evaluator.begin(model, names)

    def end(self) -> None:
        self.evaluator.end()

    def _stacked(self, model: nn.Module) -> contextlib.AbstractContextManager:
        missing = sorted(set(self.stack) - {n for n, _ in model.named_parameters()})
        if missing:
            raise KeyError(
                f"the stacked deltas target {missing[:3]}, which this model does not have: "
                "stack deltas computed on this base model."
            )
        return edited(model, self.stack)


def leads(
    logits: torch.Tensor, truth: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best lead of its boosted label over the others (over views), each (image,
    view)'s closest other label, and whether each view ranks the image's label first."""
    boosted = _boosted(logits, truth, margin)
    index = truth.view(-1, 1, 1).expand(-1, logits.shape[1], 1)
    others = boosted.scatter(2, index, float("-inf"))
    lead = (boosted.gather(2, index)[..., 0] - others.amax(-1)).amax(-1)
    return lead, others.argmax(-1), _view_hits(boosted, truth)


@dataclass
class _Early:
    """Kept between early-exit trials of a unit: each image's lead, each (image, view)'s closest
    other label, and the edited tower's inputs row by row (`_rows`)."""

    lead: torch.Tensor
    rivals: torch.Tensor
    rows: list[dict[str, torch.Tensor]] | None = None


def decide_early(ev: Any, model: nn.Module, i: int, limit: int) -> tuple[int, bool] | None:
    """How many images of `ev`'s task `i` are recognised, stopping early: (count, exact), or
    None when the edited tower's inputs cannot be replayed row by row."""
    task, truth, owners = ev.tasks[i], ev._truth[i], ev._owners[i]
    kind, first_block = ev._edit
    tower = ev._tower(model, kind)
    state = ev._early.get(i)
    if state is None:  # nothing known yet: no rival (own label), no lead
        edited = ev._images[i] if kind == "vision" else ev._texts[i]
        if first_block > 0 and not edited.replay:  # only the unedited blocks below the edit
            with _replaying(tower, first_block, below=True):
                block = tower.layers[first_block - 1]
                edited.replay = ev._features_and_replay(model, edited, block)[1]
        views = 1 if task.scoring == "mean" else len(owners) // len(task.label_names)
        rivals = truth[:, None].repeat(1, views)
        state = ev._early[i] = _Early(torch.zeros(len(truth)), rivals, _rows(edited, first_block))
    if state.rows is None:
        return None
    if kind == "vision":
        text_f = ev._current(model, ev._texts[i])[ev._rows_of[i]]

        def hits_of(idx: torch.Tensor) -> torch.Tensor:
            image_f = _rows_features(ev, model, tower, [state.rows[j] for j in idx.tolist()])
            logits = _logits(image_f, text_f, owners, task)
            state.lead[idx], _, hits = leads(logits, truth[idx], task.margin)
            return hits.any(1)

        order = state.lead.argsort(descending=True, stable=True)  # hardest first
        chunks = [order[: ev.chunk], order[ev.chunk :]]  # the likeliest, then the rest
        return count_until([c for c in chunks if len(c)], hits_of, limit)
    image_f = ev._current(model, ev._images[i])
    rows_of = ev._rows_of[i]  # each label's prompts, as rows of the (shared) text inputs
    prompts = [rows_of[owners.eq(label)].tolist() for label in range(len(task.label_names))]
    feats: dict[int, torch.Tensor] = {}

    def columns(pairs: list[tuple[int, int]]) -> torch.Tensor:
        wanted = [
            [prompts[label][v]] if task.scoring == "any" else prompts[label] for v, label in pairs
        ]
        need = sorted({j for js in wanted for j in js} - feats.keys())
        if need:
            rows = [state.rows[j] for j in need]
            feats.update(zip(need, _rows_features(ev, model, tower, rows)))
        cols = torch.stack([sum(feats[j] for j in js) for js in wanted])
        return image_f @ (cols if task.scoring == "any" else F.normalize(cols, dim=-1)).T

    shape = (len(truth), state.rivals.shape[1], len(task.label_names))
    return lazy_recognised(columns, truth, shape, task.margin, limit, state.rivals)


def _rows_features(
    ev: Any, model: nn.Module, tower: Tower, rows: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Features of some rows of the edited tower's inputs, replaying the block below."""
    batch = {key: _stack([r[key] for r in rows], key, ev._pad_id) for key in rows[0]}
    hidden = batch.pop("hidden", None)
    if hidden is None:
        return ev._encode(model, tower.kind, batch)
    with _replaying(tower, ev._edit[1]) as replay:
        replay.output = hidden
        return ev._encode(model, tower.kind, batch)


def count_until(
    chunks: Sequence[Any], hits_of: Callable[[Any], torch.Tensor], limit: int
) -> tuple[int, bool]:
    """Recognised images, chunk by chunk, stopping once more than `limit`: (count, exact)."""
    count = 0
    for k, chunk in enumerate(chunks):
        count += int(hits_of(chunk).sum())
        if count > limit:
            return count, k == len(chunks) - 1
    return count, True


def lazy_recognised(
    columns: Callable[[list[tuple[int, int]]], torch.Tensor],
    truth: torch.Tensor,
    shape: tuple[int, int, int],
    margin: float,
    limit: int,
    rivals: torch.Tensor,
) -> tuple[int, bool]:
    """How many images are recognised, fetching as few (view, label) embeddings as it can.

    `columns(pairs)` gives the (images, pairs) cosines with the (view, label) embeddings;
    `shape` is (images, views, labels). It fetches each image's own label and its `rivals`
    (images, views), the labels that came closest last time, and updated here. A view where a
    fetched label beats the boosted own label strictly cannot rank it first; only views that
    might are completed (every label; the likeliest first, in doubling batches), and the count is
    exact, or a lower bound above `limit` (exact False) when it stops early: `count <= limit` is
    always as in full.
    """
    n, n_views, n_labels = shape
    sims = torch.full(shape, float("nan"))
    fetched: set[tuple[int, int]] = set()

    def fetch(pairs: Any) -> None:
        pairs = sorted(set(pairs) - fetched)
        if pairs:
            views, labels = (torch.tensor(x) for x in zip(*pairs))
            sims[:, views, labels] = columns(pairs)
            fetched.update(pairs)

    every = range(n_views)
    own_labels = [(v, int(t)) for t in truth.unique() for v in every]
    fetch(own_labels + [(v, int(rivals[i, v])) for i in range(n) for v in every])
    own = sims.gather(2, truth.view(-1, 1, 1).expand(-1, n_views, 1))[..., 0]
    own_mask = F.one_hot(truth, n_labels).bool()[:, None, :]
    complete = torch.zeros(n_views, dtype=torch.bool)
    while True:
        others = sims.masked_fill(own_mask, float("-inf")).nan_to_num(nan=float("-inf"))
        best = others.amax(-1)
        hit = torch.zeros(n, n_views, dtype=torch.bool)
        done = complete.nonzero().flatten()
        hit[:, done] = _view_hits(_boosted(sims[:, done], truth, margin), truth)
        recognised = hit.any(1)
        count = int(recognised.sum())
        open_ = ~(best > own + margin) & ~complete[None] & ~recognised[:, None]
        if count > limit or not open_.any():
            rivals.copy_(torch.where(best > float("-inf"), others.argmax(-1), rivals))
            return count, count <= limit or not open_.any()
        lead = (own + margin - best).masked_fill(~open_, float("-inf")).amax(0)
        # the likeliest views first, as many as are complete already (1, 1, 2, 4, ...)
        views = lead.argsort(descending=True, stable=True)[: max(1, int(complete.sum()))]
        views = [int(v) for v in views if lead[v] > float("-inf")]
        fetch([(v, label) for v in views for label in range(n_labels)])
        complete[views] = True


def _stack(tensors: list[torch.Tensor], key: str, pad_id: int) -> torch.Tensor:
    """Stack rows, padding the shorter ones (text) at the end."""
    length, value = max(len(t) for t in tensors), pad_id if key == "input_ids" else 0
    pads = [t.new_full((length - len(t), *t.shape[1:]), value) for t in tensors]
    return torch.stack([torch.cat([t, pad]) if len(pad) else t for t, pad in zip(tensors, pads)])


def _is_number(value: object) -> bool:
    return finite_real(value) is not None


def check_search_options(initial_step: object, max_evaluations: object) -> None:
    """Raise `ConfigError` unless `initial_step` is finite and > 0 and `max_evaluations` >= 1."""
    positive_number(initial_step, "initial_step", "initial_step=0.1 (the first step tried)")
    positive_int(max_evaluations, "max_evaluations", "max_evaluations=10")


def search_step(
    model: nn.Module,
    names: tuple[str, ...],
    forget_grads: Mapping[str, torch.Tensor],
    evaluator: Evaluator,
    criterion: Criterion,
    before: Metrics,
    *,
    initial_step: float = 0.1,
    max_evaluations: int = 10,
    rel_tolerance: float = 0.05,
) -> LayerSearch:
    """Double `s` from `initial_step` until the criterion is met, then bisect; ≤ `max_evaluations`."""
    check_search_options(initial_step, max_evaluations)
    result = LayerSearch(names)
    low, high = 0.0, None  # the largest step known to fail, the smallest known to succeed
    step = initial_step
    evaluator.begin(model, names)
    try:
        for _ in range(max_evaluations):
            with edited(model, update(model, names, forget_grads, step)):
                metrics, exact = evaluator.evaluate_forget(
                    model, criterion.forget_metric, criterion.ceiling
                )
            forgets = criterion.forgets(metrics)
            result.trials.append(Trial(short_name(names), step, metrics, forgets, not exact))
            if forgets:
                high, result.step, result.metrics = step, step, metrics
            else:
                low = step
            if high is not None and (high - low) <= rel_tolerance * high:
                break
            step = step * 2 if high is None else (low + high) / 2
        if result.metrics is not None and not set(before) <= set(result.metrics):
            # only the kept step needs every metric (for the choice and the utility guard)
            with edited(model, update(model, names, forget_grads, high)):
                result.metrics = evaluator(model)
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
    "with the highest {utility} on the search's evaluation data; ties go to the smaller step"
)


def choose(searches: Sequence[LayerSearch], criterion: Criterion) -> tuple[LayerSearch | None, str]:
    """The chosen search and the rule, written out, that chose it."""
    guard = (
        f" and kept {criterion.utility_metric} within {criterion.utility_tolerance} of the original"
        if criterion.utility_tolerance is not None
        else ""
    )
    rule = CHOICE_RULE.format(guard=guard, utility=criterion.utility_metric)
    usable = [s for s in searches if s.usable]
    if not usable:
        return None, rule
    best = max(usable, key=lambda s: (s.metrics.get(criterion.utility_metric, 0.0), -s.step))
    return best, rule


def search_layers(
    model: nn.Module,
    units: Sequence[tuple[str, ...]],
    forget_grads: Mapping[str, torch.Tensor],
    evaluator: Evaluator,
    criterion: Criterion,
    before: Metrics,
    *,
    initial_step: float = 0.1,
    max_evaluations: int = 10,
    progress: bool = True,
) -> list[LayerSearch]:
    """Run `search_step` on each unit, with a progress bar over units."""
    check_search_options(initial_step, max_evaluations)
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
                initial_step=initial_step,
                max_evaluations=max_evaluations,
            )
        )
    return searches
