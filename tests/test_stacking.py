"""Stacking deltas: interference warnings, `avoid=`, the θ⁰ guard, the final check of a stack.

Tiny CLIPs with evaluators that read the weights (so each case is exact); three identities
stacked on the embedded model are checked in tests/test_stacking_embedded.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_images, tiny_clip

from hf_slug import (
    AdapterError,
    ConceptDelta,
    SLUGConfig,
    SLUGModel,
    UnknownLayerError,
    UnlearningConfig,
    UnlearnOptions,
)
from hf_slug.config import TargetInfo
from hf_slug.io import fingerprint
from hf_slug.stacking import StackError, StackRequest, unlearn_stack
from hf_slug.unlearn import unlearn

FC1 = "vision_model.encoder.layers.0.mlp.fc1.weight"
FC2 = "vision_model.encoder.layers.0.mlp.fc2.weight"
V_PROJ = "text_model.encoder.layers.0.self_attn.v_proj.weight"
LABELS = ["zorb", "quax", "other"]


def make_delta(model, concept: str, name: str, direction: torch.Tensor, **metrics) -> ConceptDelta:
    """A dense one-tensor delta of `direction` with correct fingerprints."""
    p = dict(model.named_parameters())[name].detach()
    info = TargetInfo(list(p.shape), str(p.dtype).removeprefix("torch."), fingerprint(p), "x")
    config = UnlearningConfig(concept=concept, step=0.1, targets={name: info}, metrics=metrics)
    return ConceptDelta(config, {name: direction.clone()})


def direction(model, name: str, seed: int) -> torch.Tensor:
    p = dict(model.named_parameters())[name].detach()
    d = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed))
    return d * (0.1 * p.norm() / d.norm())


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(seed=0, width=32, layers=1, projection=16)


# -- warnings that know ------------------------------------------------------------------------
WARNINGS = [
    pytest.param(FC1, -1.0, {}, "add", r"cosine -1\.00; they partly cancel", id="shared-cancel"),
    pytest.param(FC1, 0.5, {}, "add", r"cosine \+1\.00; they push one", id="shared-same-way"),
    pytest.param(FC1, -1.0, {}, "set", r"cosine -1\.00; they partly cancel", id="shared-by-set"),
    pytest.param(
        V_PROJ,
        1.0,
        {"searched_on_top_of": ["concept x"]},
        "add",
        r"searched with the deltas of \['concept x'\] applied, and they are not active",
        id="tuned-with-absent",
    ),
]


@pytest.mark.parametrize("name, factor, metrics, how, pattern", WARNINGS)
def test_loading_a_stack_with_a_known_interference_warns_what_and_what_to_do(
    clip, name, factor, metrics, how, pattern
):
    model = copy.deepcopy(clip)
    first = make_delta(model, "concept a", FC1, direction(model, FC1, 1))
    base = direction(model, name, 1) if name == FC1 else direction(model, name, 2)
    second = make_delta(model, "concept b", name, factor * base, **metrics)
    slug = SLUGModel(model)
    slug.add_adapter("a", first)
    with pytest.warns(UserWarning, match=pattern) as record:
        if how == "add":
            slug.add_adapter("b", second)
        else:
            slug.add_adapter("b", second, active=False)
            slug.set_adapters(["a", "b"])
    assert any(
        "unlearn(..., avoid=" in str(w.message) or "Load those" in str(w.message) for w in record
    )  # each warning says what to do


# -- avoid= ------------------------------------------------------------------------------------
def pairs(n: int, seed: int, caption: str) -> tuple[list, list[str]]:
    return random_images(n, seed=seed), [caption] * n


def edit_evaluator(reference, stack: dict[str, float] | None = None):
    """forget_acc 0 once any tensor but the stack's moved; utility = 1 − the stack's change."""
    base = {n: p.detach().clone() for n, p in reference.named_parameters()}
    stack = stack or {}

    def evaluate(model) -> dict[str, float]:
        moved, cost = False, 0.0
        for name, p in model.named_parameters():
            change = float((p.detach() - base[name]).norm() / base[name].norm())
            if name in stack:
                cost += change
            elif change > 0:
                moved = True
        return {"forget_acc": 0.0 if moved else 1.0, "utility": 1.0 - cost}

    return evaluate


@pytest.mark.parametrize(
    "avoided",
    [pytest.param([FC1], id="one-tensor"), pytest.param([FC1, FC2, V_PROJ], id="three-tensors")],
)
def test_avoid_keeps_the_search_off_tensors_other_deltas_use(clip, processor, avoided):
    model = copy.deepcopy(clip)
    stack = [make_delta(model, f"c{i}", n, direction(model, n, i)) for i, n in enumerate(avoided)]
    result = unlearn(
        model,
        processor,
        pairs(4, 1, "zorb"),
        pairs(4, 2, "a cat"),
        SLUGConfig(concept="zorb", candidate_labels=LABELS, max_evaluations=2),
        evaluator=edit_evaluator(model),
        options=UnlearnOptions(avoid=stack, progress=False),
    )
    assert result.converged
    searched = {n for s in result.searches for n in s.names}
    assert searched and not searched & set(avoided), searched


def test_avoiding_every_candidate_is_a_typed_error_that_says_what_to_do(clip, processor):
    model = copy.deepcopy(clip)
    names = [n for n, p in model.named_parameters() if p.ndim == 2]
    with pytest.raises(UnknownLayerError, match="avoid= excludes every candidate.*avoid fewer"):
        unlearn(
            model,
            processor,
            pairs(2, 1, "zorb"),
            pairs(2, 2, "a cat"),
            SLUGConfig(concept="zorb", candidate_labels=LABELS, towers=("text",)),
            evaluator=edit_evaluator(model),
            options=UnlearnOptions(avoid=names, progress=False),
        )


# -- the θ⁰ guard --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stack_size, tolerance",
    [pytest.param(0.3, 0.1, id="stack-costs-0.3"), pytest.param(0.15, 0.05, id="stack-0.15")],
)
def test_a_search_on_top_of_a_stack_guards_utility_against_theta0(
    clip, processor, stack_size, tolerance
):
    """The stack alone costs `stack_size` utility: against θ⁰ no step keeps it within tolerance
    (against the stacked model, as before, every step would)."""
    model = copy.deepcopy(clip)
    d = direction(model, FC1, 3)
    d = d * (stack_size * dict(model.named_parameters())[FC1].detach().norm() / d.norm())
    stack = make_delta(model, "other", FC1, d)
    with pytest.warns(UserWarning, match="found no layer that forgets 'zorb'"):
        result = unlearn(
            model,
            processor,
            pairs(4, 1, "zorb"),
            pairs(4, 2, "a cat"),
            SLUGConfig(
                concept="zorb",
                candidate_labels=LABELS,
                towers=("text",),
                top_k=1,
                max_evaluations=2,
                utility_tolerance=tolerance,
            ),
            evaluator=edit_evaluator(model, {FC1: 1.0}),
            options=UnlearnOptions(on_top_of=[stack], progress=False),
        )
    assert not result.converged
    status = result.searches[0].status
    assert status.startswith("utility guard") and "fell from 1.0000" in status, status


# -- the final check of a stack ---------------------------------------------------------------
def clash_evaluator(reference, mine: str, breaker: str):
    """forget_acc 0 when `mine` moved and `breaker` did not: the other delta undoes this one."""
    base = {n: p.detach().clone() for n, p in reference.named_parameters()}

    def evaluate(model) -> dict[str, float]:
        params = dict(model.named_parameters())
        moved = {n: not torch.equal(params[n].detach(), base[n]) for n in (mine, breaker)}
        return {"forget_acc": 0.0 if moved[mine] and not moved[breaker] else 1.0, "utility": 1.0}

    return evaluate


@pytest.mark.parametrize(
    "on_failure, expect",
    [pytest.param("warn", UserWarning, id="warns"), pytest.param("raise", StackError, id="raises")],
)
def test_a_stack_that_still_fails_is_reported_with_the_concept_and_its_numbers(
    clip, processor, on_failure, expect
):
    model = copy.deepcopy(clip)
    layers = {"zorb": FC1, "quax": V_PROJ}
    requests = [
        StackRequest(
            pairs(4, 1, concept),
            pairs(4, 2, "a cat"),
            SLUGConfig(concept=concept, candidate_labels=LABELS, layer=layer, max_evaluations=2),
            clash_evaluator(model, layer, V_PROJ if concept == "zorb" else FC2),
        )
        for concept, layer in layers.items()
    ]
    alone = [
        unlearn(
            model,
            processor,
            r.forget,
            r.retain,
            r.config,
            evaluator=r.evaluator,
            options=UnlearnOptions(progress=False),
        )
        for r in requests
    ]
    assert all(r.converged for r in alone)
    pattern = r"still fails 'zorb' \(forget_acc = 1 > target 0\)"
    context = (
        pytest.warns(expect, match=pattern)
        if expect is UserWarning
        else pytest.raises(expect, match=pattern)
    )
    with context:
        unlearn_stack(
            model,
            processor,
            requests,
            rounds=0,
            independent=alone,
            on_failure=on_failure,
            progress=False,
        )


def test_unlearn_stack_rejects_an_unknown_on_failure(clip, processor):
    from hf_slug import ConfigError

    with pytest.raises(ConfigError, match="on_failure must be 'warn' or 'raise'"):
        unlearn_stack(clip, processor, [], on_failure="ignore", progress=False)


# -- a model with active adapters is no base for a search --------------------------------------------
def test_a_model_with_active_adapters_is_refused_and_disabling_them_is_the_fix(clip, processor):
    model = copy.deepcopy(clip)
    slug = SLUGModel(model)
    slug.add_adapter("zorb", make_delta(model, "zorb", FC1, direction(model, FC1, 1)))
    call = (
        model,
        processor,
        pairs(2, 1, "zorb"),
        pairs(2, 2, "a cat"),
        SLUGConfig(concept="quax", candidate_labels=LABELS, towers=("text",), layer=V_PROJ),
    )
    options = UnlearnOptions(progress=False)
    with pytest.raises(AdapterError, match=r"active SLUGModel adapters.*disable_adapters"):
        unlearn(*call, evaluator=edit_evaluator(model), options=options)
    with slug.disable_adapters():  # the fix the error names: hooks off, the search runs at θ⁰
        result = unlearn(*call, evaluator=edit_evaluator(model), options=options)
    assert result.searches, "the search ran once the adapters were off"
    slug.unload()
