"""Layer importance, gradient alignment, the Pareto front (SLUG.md §3) and the units searched.

Example:
    >>> front = pareto_front([(0.9, 0.1), (0.5, 0.5), (0.95, 0.4)])
    >>> front
    [0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from .config import SLUGConfig
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


def units_to_search(
    scores: list[LayerScore], config: SLUGConfig, every_mlp_output: bool = True
) -> list[tuple[str, ...]]:
    """The units `unlearn` searches: the Pareto front per tower (`top_k` of it); with
    `every_mlp_output` and no `top_k`, also every block's `fc2` of the null-space towers.

    Those extra candidates were measured with the least-prompt-drift choice, so an evaluator
    without `PROMPT_DRIFT` keeps SLUG's front (benchmarks/generative.md: the pipeline's denoiser
    criterion, choosing by utility among them, left one identity drawn on 25 % of her
    generations instead of 0 %).

    Example:
        >>> unit = LayerScore(("text_model.encoder.layers.0.mlp.fc2.weight",), "text", 1.0, 0.1)
        >>> units_to_search([unit], SLUGConfig("Ada", towers=("text",)))
        [('text_model.encoder.layers.0.mlp.fc2.weight',)]
    """
    if config.layer != "auto":
        return [s.names for s in scores]
    picked = []
    for tower in config.towers:
        front = sorted(
            (s for s in scores if s.tower == tower and s.on_front), key=lambda s: -s.importance
        )
        picked += [s.names for s in (front[: config.top_k] if config.top_k else front)]
        if every_mlp_output and config.top_k is None and _projected(tower, config):
            picked += [s.names for s in _mlp_outputs(scores, tower) if s.names not in picked]
    return picked


def _projected(tower: str, config: SLUGConfig) -> bool:
    return config.retain_null_space is not None and tower in config.null_space_towers


def _mlp_outputs(scores: list[LayerScore], tower: str) -> list[LayerScore]:
    """Every unit of `tower` ending in a block's MLP output matrix (`fc2`), in model order."""
    return [s for s in scores if s.tower == tower and s.names[-1].endswith("mlp.fc2.weight")]
