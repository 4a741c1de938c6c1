"""Layer importance, gradient alignment and the Pareto front (SLUG.md §3).

Example:
    >>> front = pareto_front([(0.9, 0.1), (0.5, 0.5), (0.95, 0.4)])
    >>> front
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from .towers import short_name, tower_kinds


@dataclass(frozen=True)
class LayerScore:
    """A candidate unit (one tensor, or a q/k/v or fc1/fc2 group) and its two metrics."""

    names: tuple[str, ...]
    tower: str
    importance: float  # ‖G_f‖ / ‖θ‖: how strongly the concept lives here
    alignment: float  # |cos(G_f, G_r)|: how much forgetting here would hurt retention
    on_front: bool = False

    @property
    def label(self) -> str:
        return short_name(self.names)

    def to_dict(self) -> dict:
        return {**asdict(self), "names": list(self.names), "label": self.label}


def score_layers(
    model: torch.nn.Module,
    units: Sequence[tuple[str, ...]],
    forget_grads: Mapping[str, torch.Tensor],
    retain_grads: Mapping[str, torch.Tensor],
) -> list[LayerScore]:
    """Importance and alignment of every unit, with the Pareto front marked per tower."""
    params = dict(model.named_parameters())
    kinds = tower_kinds(model, [unit[0] for unit in units])
    scores = []
    for unit in units:
        theta = torch.cat([params[n].detach().float().flatten().cpu() for n in unit])
        g_f = torch.cat([forget_grads[n].float().flatten() for n in unit])
        g_r = torch.cat([retain_grads[n].float().flatten() for n in unit])
        importance = float(g_f.norm() / theta.norm().clamp_min(1e-12))
        denominator = (g_f.norm() * g_r.norm()).clamp_min(1e-30)
        alignment = float((g_f @ g_r).abs() / denominator)
        scores.append(LayerScore(unit, kinds[unit[0]], importance, alignment))
    marked = list(scores)
    for tower in sorted({s.tower for s in scores}):
        members = [i for i, s in enumerate(scores) if s.tower == tower]
        points = [(scores[i].importance, scores[i].alignment) for i in members]
        for j in pareto_front(points):
            i = members[j]
            marked[i] = LayerScore(**{**scores[i].__dict__, "on_front": True})
    return marked


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of `(importance, alignment)` points no other point dominates, in input order.

    A point is dominated by one with strictly higher importance *and* strictly lower alignment, so
    ties and duplicates stay on the front together.
    """
    return [
        i
        for i, (imp, ali) in enumerate(points)
        if not any(o_imp > imp and o_ali < ali for o_imp, o_ali in points)
    ]
