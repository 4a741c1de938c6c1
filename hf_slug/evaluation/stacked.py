"""An evaluator with other concepts' deltas added: one concept's step searched on top of a stack.

Example:
    >>> stacked = StackedEvaluator(evaluator, [first_delta, second_delta])  # doctest: +SKIP
    >>> stacked(model)  # the model's metrics with both deltas added  # doctest: +SKIP
    {'forget_acc': 0.0, 'utility': 0.87, ...}
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import nn

from ..weights import edited
from .base import Evaluator, Metrics, as_evaluator


class StackedEvaluator(Evaluator):
    """Evaluate with other concepts' deltas added: search one concept's step on top of a stack.

    `deltas`: `ConceptDelta`s (their dense tensors) or name -> tensor dicts, summed. Each call
    adds them for its duration and restores the exact original weights after
    (`hf_slug.search.edited`).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(1, 1, bias=False)
        >>> stacked = StackedEvaluator(lambda m: {"w": m.weight.item()}, [{"weight": torch.ones(1, 1)}])
        >>> stacked(layer)["w"] == layer.weight.item() + 1
        True
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

    @property
    def tracks_drift(self) -> bool:
        return self.evaluator.tracks_drift

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
