"""Deltas saved before a change keep loading unchanged (issue 13: the public API keeps working).

`tests/fixtures/format_v0_2/` was written by hf_slug at commit 67c3c57, before the held-out
default changed `SLUGConfig` (`tests/fixtures/make_old_format.py` says how). The base tensors the
fixtures target are exact integer-derived values, so their fingerprints hold on every CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from hf_slug import ConceptDelta, SLUGModel, UnlearningConfig

FIXTURES = Path(__file__).parent / "fixtures"
OLD = FIXTURES / "format_v0_2"
_spec = importlib.util.spec_from_file_location("make_old_format", FIXTURES / "make_old_format.py")
make_old_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_old_format)
ADA, BOB = make_old_format.TARGETS


def _base() -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in make_old_format.fixture_model().named_parameters()}


def test_an_old_dense_delta_loads_and_applies_exactly():
    delta = ConceptDelta.from_pretrained(OLD / "dense_ada")
    assert delta.config.concept == "Ada Byron" and delta.config.step == 0.5
    assert delta.config.concept_kind == "identity" and list(delta.config.targets) == [ADA]
    model = make_old_format.fixture_model()
    base = _base()
    delta.apply_to(model)
    params = dict(model.named_parameters())
    want = base[ADA] + make_old_format.fixture_tensor(tuple(base[ADA].shape), 10) * 0.5
    assert torch.equal(params[ADA], want)
    assert all(torch.equal(params[n], base[n]) for n in base if n != ADA)


def test_an_old_lowrank_delta_loads():
    delta = ConceptDelta.from_pretrained(OLD / "lowrank_ada")
    assert delta.config.delta_format == "lowrank" and delta.config.rank == 4
    dense = delta.dense()[ADA]
    assert dense.shape == _base()[ADA].shape and torch.isfinite(dense).all()


def test_an_old_stack_loads_with_its_weights_and_merges_exactly():
    assert UnlearningConfig.from_pretrained(OLD / "stack" / "bob").concept == "Bob Stone"
    slug = SLUGModel.from_pretrained(make_old_format.fixture_model(), OLD / "stack")
    assert slug.weights == {"ada": 1.0, "bob": 0.5}
    merged = dict(slug.merge_and_unload().named_parameters())
    base = _base()
    shape_a, shape_b = tuple(base[ADA].shape), tuple(base[BOB].shape)
    assert torch.equal(merged[ADA], base[ADA] + make_old_format.fixture_tensor(shape_a, 10) * 0.5)
    want_b = base[BOB] + 0.5 * (make_old_format.fixture_tensor(shape_b, 11) * 0.25)
    torch.testing.assert_close(merged[BOB], want_b, rtol=0, atol=1e-7)
