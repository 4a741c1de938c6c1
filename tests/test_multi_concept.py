"""Three concepts unlearned separately, stacked: each forgotten, the rest kept, removable."""

from __future__ import annotations

import copy

from shapes import NAMES, TEMPLATE, samples
from test_end_to_end import per_class_accuracy

from hf_slug import SLUGConfig, ZeroShotEvaluator, ZeroShotTask, unlearn
from hf_slug.model import SLUGModel

TARGETS = ["zorb", "quax", "fent"]


def unlearn_one(model, processor, target):
    others = [n for n in NAMES if n != target]
    forget_images, _ = samples(16, seed=11, names=[target])
    retain_images, retain_labels = samples(6, seed=12, names=others)
    val_forget, _ = samples(30, seed=13, names=[target])
    val_retain, val_labels = samples(6, seed=13, names=others)
    evaluator = ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask("forget", val_forget, [target] * len(val_forget), NAMES, (TEMPLATE,)),
            ZeroShotTask("retain", val_retain, val_labels, NAMES, (TEMPLATE,)),
        ],
    )
    return unlearn(
        model,
        processor,
        (forget_images, [TEMPLATE.format(target)] * 16),
        (retain_images, [TEMPLATE.format(n) for n in retain_labels]),
        SLUGConfig(concept=target, utility_tolerance=0.1),
        evaluator=evaluator,
        progress=False,
    )


def test_three_stacked_concepts_forgotten_and_one_restored(shapes_clip):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    results = {t: unlearn_one(model, processor, t) for t in TARGETS}
    assert all(r.converged for r in results.values())
    test_images, test_labels = samples(12, seed=14)
    before = per_class_accuracy(model, processor, test_images, test_labels)
    slug = SLUGModel(model)
    for target, result in results.items():
        slug.add_adapter(target, result)
    stacked = per_class_accuracy(slug.model, processor, test_images, test_labels)
    for name in NAMES:
        if name in TARGETS:
            assert stacked[name] <= 0.2, (name, stacked)
        else:
            assert stacked[name] >= before[name] - 0.2, (name, before, stacked)
    slug.delete_adapter("quax")
    restored = per_class_accuracy(slug.model, processor, test_images, test_labels)
    assert restored["quax"] >= before["quax"] - 0.1, restored
    assert restored["zorb"] <= 0.2 and restored["fent"] <= 0.2, restored
