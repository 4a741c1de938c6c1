"""End to end on a tiny CLIP trained inside the tests: one class forgotten, the others kept."""

from __future__ import annotations

import copy

import pytest
from shapes import (
    TEST_PER_CLASS,
    assert_forgotten_and_kept,
    per_class_accuracy,
    samples,
    unlearn_shape,
    validation_evaluator,
)

from hf_slug.search import edited

pytestmark = pytest.mark.numerics


@pytest.mark.parametrize("target", ["zorb", "quax"])
def test_unlearning_one_class_keeps_the_others(shapes_clip, target, tmp_path):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    result = unlearn_shape(model, processor, target, seed=1, cache_dir=tmp_path)
    assert result.converged, result.report()
    assert result.after["forget_acc"] == 0.0  # the criterion, met exactly on validation images
    test_images, test_labels = samples(TEST_PER_CLASS, seed=4)  # unseen by training and search
    before = per_class_accuracy(model, processor, test_images, test_labels)
    result.apply(model)
    after = per_class_accuracy(model, processor, test_images, test_labels)
    assert_forgotten_and_kept(before, after, [target])
    assert (tmp_path / "retain_gradients.safetensors").exists()
    assert result.plot_pareto(tmp_path / "pareto.png").stat().st_size > 10_000


def test_trials_ask_only_for_the_forget_metric_and_the_kept_step_is_evaluated_in_full(shapes_clip):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    result = unlearn_shape(model, processor, "zorb", seed=1)
    assert result.converged
    for search in result.searches:
        for trial in search.trials:
            full = trial.step == search.step
            assert ("retain_acc" in trial.metrics) == full, (search.label, trial)
    # the kept step's metrics are what a fresh, full evaluation of the edited model gives
    with edited(model, result.deltas):
        fresh = validation_evaluator(processor, "zorb", seed=1)(model)
    assert fresh == pytest.approx(result.after, abs=1e-6)
    assert fresh.keys() == result.before.keys()
