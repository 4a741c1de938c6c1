"""A cheap step search, same decisions (issue 16): early-exit trials decide like full ones.

The pure decision functions (`count_until`, `lazy_recognised`) are checked against the full
top-1 over random similarity tensors, margins and targets; then the whole search on a trained
tiny CLIP, with the early exit on and off, must pick the same layer and step.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from conftest import PLUMBING, random_images, tiny_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapes import NAMES, shape_request, unlearn_shape

from hf_slug import (
    SLUGConfig,
    UnlearnOptions,
    ZeroShotEvaluator,
    unlearn,
)
from hf_slug.evaluation import _boosted, _rate, _view_hits
from hf_slug.evaluation.early_exit import count_until, lazy_recognised
from hf_slug.search import Criterion


def _full_count(sims: torch.Tensor, truth: torch.Tensor, margin: float) -> int:
    """What a full trial counts: images some view ranks first (as `_accuracy`)."""
    return int(_view_hits(_boosted(sims, truth, margin), truth).any(1).sum())


def _limit(target: float, n: int) -> int:
    """The most recognised images `Criterion(forget_target=target)` lets pass."""
    ceiling = Criterion(forget_target=target).ceiling
    return sum(_rate(c, n) <= ceiling for c in range(n + 1)) - 1


@st.composite
def similarity_cases(draw):
    n = draw(st.integers(1, 7))
    views = draw(st.integers(1, 4))
    labels = draw(st.integers(2, 6))
    # a coarse grid of cosines, so that ties (equal cosines) happen too
    values = draw(
        st.lists(st.integers(-4, 4), min_size=n * views * labels, max_size=n * views * labels)
    )
    sims = torch.tensor(values, dtype=torch.float32).view(n, views, labels) / 4
    truth = torch.tensor(draw(st.lists(st.integers(0, labels - 1), min_size=n, max_size=n)))
    rivals = torch.tensor(
        draw(st.lists(st.integers(0, labels - 1), min_size=n * views, max_size=n * views))
    ).view(n, views)
    margin = draw(st.sampled_from([0.0, 0.05, 0.25, 0.5]))
    target = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, -0.1]))
    return sims, truth, rivals, margin, target


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(similarity_cases())
def test_lazy_trial_decides_as_the_full_one(case):
    sims, truth, rivals, margin, target = case
    n, views, labels = sims.shape
    fetched = []

    def columns(pairs):
        fetched.extend(pairs)
        views_, labels_ = zip(*pairs)
        return sims[:, list(views_), list(labels_)]

    limit = _limit(target, n)
    count, exact = lazy_recognised(columns, truth, sims.shape, margin, limit, rivals.clone())
    full = _full_count(sims, truth, margin)
    assert (count <= limit) == (full <= limit)  # the same decision
    if exact:
        assert count == full
    else:  # stopped early: a lower bound that already fails
        assert limit < count <= full
    assert len(fetched) == len(set(fetched))  # nothing is computed twice
    criterion = Criterion(forget_target=target)
    decided = criterion.forgets({"forget_acc": _rate(count, n)})
    assert decided == criterion.forgets({"forget_acc": _rate(full, n)})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=20),
    st.integers(1, 5),
    st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]),
)
def test_chunked_trial_decides_as_the_full_one(hits, chunk, target):
    hits = torch.tensor(hits)
    n = len(hits)
    limit = _limit(target, n)
    chunks = list(torch.arange(n).split(chunk))
    count, exact = count_until(chunks, lambda idx: hits[idx], limit)
    full = int(hits.sum())
    assert (count <= limit) == (full <= limit)
    assert count == full if exact else limit < count <= full


def _searches(result):
    return [(s.label, s.status, s.step) for s in result.searches]


@pytest.fixture
def no_early_exit(monkeypatch):
    def off():
        monkeypatch.setattr(ZeroShotEvaluator, "early_exit", False)
        monkeypatch.setattr(ZeroShotEvaluator, "keep_features", False)

    return off


@pytest.mark.numerics
def test_search_with_early_exit_picks_the_same_layer_and_step(shapes_clip, no_early_exit):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    fast = unlearn_shape(model, processor, "zorb", seed=1)
    assert any(t.partial for s in fast.searches for t in s.trials)  # it did stop early
    no_early_exit()
    full = unlearn_shape(model, processor, "zorb", seed=1)
    assert fast.converged
    assert (fast.chosen_names, fast.step) == (full.chosen_names, full.step)
    assert _searches(fast) == _searches(full)
    assert fast.after == pytest.approx(full.after, abs=1e-6)


@pytest.mark.numerics
def test_default_criterion_with_early_exit_picks_the_same_layer_and_step(
    shapes_clip, no_early_exit
):
    """The default evaluator: every phrasing must fail, within a margin (`scoring="any"`)."""
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    r = shape_request(processor, "plim", seed=2)
    config = SLUGConfig(
        concept="plim", candidate_labels=NAMES, concept_kind="object", validation_share=0
    )
    fast = unlearn(
        model, processor, r.forget, r.retain, config, options=UnlearnOptions(progress=False)
    )
    partial = {s.label.split(".")[0] for s in fast.searches for t in s.trials if t.partial}
    assert partial  # some stopped early (with the default fixture: in both towers)
    no_early_exit()
    full = unlearn(
        model, processor, r.forget, r.retain, config, options=UnlearnOptions(progress=False)
    )
    assert (fast.chosen_names, fast.step) == (full.chosen_names, full.step)
    assert _searches(fast) == _searches(full)


# -- each further concept: cached retain gradients (issue 16) ----------------------------------
def test_cached_retain_gradients_are_reused_and_invalidated(processor, tmp_path, monkeypatch):
    """`unlearn(..., cache_dir=)` reuses the retain gradients for the next concept, and computes
    them again when the model (any tensor, not only the candidates) or the retain set changes."""
    gradients = importlib.import_module("hf_slug.gradient_cache")  # where unlearn calls the pass
    computed = []
    compute = gradients.compute_gradients

    def counting(model, processor, pairs, kind, names, **options):
        computed.append(kind)
        return compute(model, processor, pairs, kind, names, **options)

    monkeypatch.setattr(gradients, "compute_gradients", counting)
    model = tiny_clip()
    forget = (random_images(4, seed=1), ["a photo of Ada Byron"] * 4)
    retain = (random_images(6, seed=2), [f"thing {i}" for i in range(6)])
    config = SLUGConfig(concept="Ada Byron", layer="vision.L1.fc1", **PLUMBING)

    def run(model, retain, concept="Ada Byron"):
        computed.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = unlearn(
                model,
                processor,
                forget,
                retain,
                SLUGConfig(**{**config.to_dict(), "concept": concept}),
                evaluator=lambda m: {"forget_acc": 0.0, "utility": 1.0},
                options=UnlearnOptions(cache_dir=tmp_path, progress=False),
            )
        assert result.converged
        return computed.count("retain")

    cache = tmp_path / "retain_gradients.safetensors"
    assert run(model, retain) == 1 and cache.exists()
    assert run(model, retain, concept="Bob Stone") == 0  # the next concept reuses them
    fewer = (retain[0][:5], retain[1][:5])
    assert run(model, fewer) == 1  # another retain set: computed again, and cached
    assert run(model, fewer) == 0
    with torch.no_grad():  # a tensor below the candidate changes its gradient too
        model.vision_model.embeddings.patch_embedding.weight.mul_(1.5)
    assert run(model, fewer) == 1
    with torch.no_grad():
        model.vision_model.encoder.layers[1].mlp.fc1.weight.add_(0.01)
    assert run(model, fewer) == 1
    assert run(model, fewer) == 0
