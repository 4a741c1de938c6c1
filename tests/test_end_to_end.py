"""End to end on a tiny CLIP trained inside the tests: one class forgotten, the others kept."""

from __future__ import annotations

import copy

import pytest
from shapes import NAMES, per_class_accuracy, samples, unlearn_shape, validation_evaluator

from hf_slug.search import edited

MARGIN = 0.15  # the other classes' accuracy may drop by at most this much on unseen images


@pytest.mark.parametrize("target", ["zorb", "quax"])
def test_unlearning_one_class_keeps_the_others(shapes_clip, target, tmp_path):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    result = unlearn_shape(model, processor, target, seed=1, cache_dir=tmp_path)
    assert result.converged, result.report()
    assert result.after["forget_acc"] == 0.0  # the criterion, on validation images
    test_images, test_labels = samples(12, seed=4)  # images neither the search nor training saw
    before = per_class_accuracy(model, processor, test_images, test_labels)
    result.apply(model)
    after = per_class_accuracy(model, processor, test_images, test_labels)
    assert before[target] >= 0.9
    assert after[target] <= 0.1, (before, after)
    for name in NAMES:
        if name != target:
            assert after[name] >= before[name] - MARGIN, (name, before, after)
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
