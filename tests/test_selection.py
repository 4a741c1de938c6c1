"""Importance, alignment and the Pareto front."""

from __future__ import annotations

import pytest
import torch

from hf_slug.selection import pareto_front, score_layers
from hf_slug.towers import candidate_names, group_layers


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(1.0, 0.5)], [0]),  # one point
        ([(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)], [0, 1, 2]),  # all on the front
        ([(1.0, 0.5), (2.0, 0.1)], [1]),  # strictly dominated
        ([(2.0, 0.1), (2.0, 0.1)], [0, 1]),  # duplicates stay together
        ([(2.0, 0.5), (2.0, 0.1)], [0, 1]),  # tie in importance: not strictly higher
        ([(1.0, 0.1), (2.0, 0.1)], [0, 1]),  # tie in alignment: not strictly lower
        ([(3.0, 0.2), (1.0, 0.3), (2.0, 0.25), (0.5, 0.05)], [0, 3]),
    ],
)
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_scores_match_their_definitions(model):
    names = candidate_names(model)
    torch.manual_seed(1)
    g_f = {n: torch.randn_like(p) for n, p in model.named_parameters() if n in names}
    g_r = {n: torch.randn_like(p) for n, p in model.named_parameters() if n in names}
    scores = score_layers(model, group_layers(names, None), g_f, g_r)
    params = dict(model.named_parameters())
    for s in scores:
        (name,) = s.names
        assert s.importance == pytest.approx(
            float(g_f[name].norm() / params[name].norm()), rel=1e-5
        )
        cos = torch.nn.functional.cosine_similarity(g_f[name].flatten(), g_r[name].flatten(), dim=0)
        assert s.alignment == pytest.approx(abs(float(cos)), rel=1e-4)
    for tower in ("vision", "text"):  # the front is taken per tower
        members = [s for s in scores if s.tower == tower]
        front = pareto_front([(s.importance, s.alignment) for s in members])
        assert [i for i, s in enumerate(members) if s.on_front] == front


def test_grouped_units_share_one_score(model):
    names = candidate_names(model, ("vision",))
    units = group_layers(names, "qkv")
    assert len(units) == len(names) - 2 * 2  # two blocks, q/k/v fold into one unit each
    qkv = [u for u in units if len(u) == 3]
    assert all({n.split(".")[-2] for n in u} == {"q_proj", "k_proj", "v_proj"} for u in qkv)
    mlp = group_layers(names, "mlp")
    assert sum(len(u) == 2 for u in mlp) == 2
