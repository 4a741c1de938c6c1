"""Issue 15's N = 3 target on the embedded model: three identities unlearned one at a time by the
default call, stacked with `SLUGModel` at weight 1.0, judged on held-out test views.

The subset is draw 0 of `benchmarks/stacking.py` (`random.Random(3000)`); it meets the target
there with room (retain −0.0, utility +0.9; the other draw too, benchmarks/stacking.md). Every
assertion leaves a margin of at least one point of the bound.
"""

from __future__ import annotations

import warnings

import pytest

from hf_slug import ConceptDelta, SLUGConfig, SLUGModel, UnlearnOptions, unlearn
from hf_slug.demo.protocol import forget_pairs, identity_evaluator, identity_report, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.world import World

TARGETS = ["Yara Underhill", "Maren Everhart", "Nadia Jelstrup"]
TEST = dict(per_identity=24, per_concept=3)  # the demo's and the benchmark's test protocol


@pytest.fixture(scope="module")
def stack():
    model, processor = load_embedded()
    world = World(0)
    deltas = {}
    for target in TARGETS:
        result = unlearn(
            model,
            processor,
            forget_pairs(world, target, 64),
            retain_pairs(world, exclude=[target], per_concept=4),
            SLUGConfig(concept=target, candidate_labels=world.identities, concept_kind="identity"),
            options=UnlearnOptions(progress=False),
        )
        assert result.converged, result.report()
        deltas[target] = ConceptDelta.from_result(result)
    test = identity_evaluator(world, processor, TARGETS, "test", **TEST)
    return model, deltas, test


def _report(model, deltas, test, names) -> dict[str, float]:
    slug = SLUGModel(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shared-tensor warnings are tested elsewhere
        for name in names:
            slug.add_adapter(name.replace(" ", "_"), deltas[name])
    try:
        return identity_report(test(model), TARGETS)
    finally:
        slug.unload()


@pytest.mark.numerics
def test_three_stacked_identities_meet_the_n3_target_and_come_back_one_by_one(stack):
    model, deltas, test = stack
    original = _report(model, deltas, test, [])
    stacked = _report(model, deltas, test, TARGETS)
    assert all(original[f"FA@1 {t}"] >= 90 for t in TARGETS)
    assert all(stacked[f"FA@1 {t}"] == 0 for t in TARGETS), stacked
    assert original["retain"] - stacked["retain"] <= 2, (original, stacked)
    assert original["utility"] - stacked["utility"] <= 2, (original, stacked)
    for removed in TARGETS:
        rest = _report(model, deltas, test, [t for t in TARGETS if t != removed])
        assert rest[f"FA@1 {removed}"] >= 0.9 * original[f"FA@1 {removed}"], rest
        assert all(rest[f"FA@1 {t}"] == 0 for t in TARGETS if t != removed), rest
