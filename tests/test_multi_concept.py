"""Three concepts unlearned separately, stacked: each forgotten, the rest kept, removable."""

from __future__ import annotations

import copy

from shapes import NAMES, per_class_accuracy, samples, unlearn_shape

from hf_slug import SLUGModel

TARGETS = ["zorb", "quax", "fent"]


def test_three_stacked_concepts_forgotten_and_one_restored(shapes_clip):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    results = {t: unlearn_shape(model, processor, t, seed=11) for t in TARGETS}
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
