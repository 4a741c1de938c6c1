"""End to end on a tiny CLIP trained inside the tests: one class forgotten, the others kept."""

from __future__ import annotations

import copy

import pytest
from shapes import NAMES, TEMPLATE, samples

from hf_slug import SLUGConfig, ZeroShotEvaluator, ZeroShotTask, unlearn

MARGIN = 0.15  # the other classes' accuracy may drop by at most this much on unseen images


def per_class_accuracy(model, processor, images, labels):
    evaluator = ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask(
                name,
                [i for i, y in zip(images, labels) if y == name],
                [name] * labels.count(name),
                NAMES,
                (TEMPLATE,),
            )
            for name in NAMES
        ],
    )
    metrics = evaluator(model)
    return {name: metrics[f"{name}_acc"] for name in NAMES}


@pytest.mark.parametrize("target", ["zorb", "quax"])
def test_unlearning_one_class_keeps_the_others(shapes_clip, target, tmp_path):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    others = [n for n in NAMES if n != target]
    forget_images, _ = samples(16, seed=1, names=[target])
    retain_images, retain_labels = samples(6, seed=2, names=others)
    val_forget, _ = samples(30, seed=3, names=[target])
    val_retain, val_labels = samples(6, seed=3, names=others)
    evaluator = ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask("forget", val_forget, [target] * len(val_forget), NAMES, (TEMPLATE,)),
            ZeroShotTask("retain", val_retain, val_labels, NAMES, (TEMPLATE,)),
        ],
    )
    config = SLUGConfig(concept=target, utility_tolerance=0.10)
    result = unlearn(
        model,
        processor,
        (forget_images, [TEMPLATE.format(target)] * 16),
        (retain_images, [TEMPLATE.format(n) for n in retain_labels]),
        config,
        evaluator=evaluator,
        cache_dir=tmp_path,
        progress=False,
    )
    assert result.converged, result.report()
    assert result.after["forget_acc"] == 0.0  # the criterion, on validation images
    test_images, test_labels = samples(12, seed=4)  # images neither the search nor training saw
    before = per_class_accuracy(model, processor, test_images, test_labels)
    result.apply(model)
    after = per_class_accuracy(model, processor, test_images, test_labels)
    assert before[target] >= 0.9
    assert after[target] <= 0.1, (before, after)
    for name in others:
        assert after[name] >= before[name] - MARGIN, (name, before, after)
    assert (tmp_path / "retain_gradients.safetensors").exists()
    assert result.plot_pareto(tmp_path / "pareto.png").stat().st_size > 10_000
