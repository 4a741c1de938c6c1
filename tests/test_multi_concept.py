"""Three concepts unlearned separately, stacked: each forgotten, the rest kept, removable."""

from __future__ import annotations

import copy

from shapes import NAMES, per_class_accuracy, samples, shape_request, unlearn_shape

from hf_slug import SLUGModel
from hf_slug.search import edited
from hf_slug.stacking import unlearn_stack

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


def summed(results) -> dict:
    total: dict = {}
    for result in results:
        for name, delta in result.deltas.items():
            total[name] = total.get(name, 0) + delta
    return total


def test_a_stack_broken_by_a_weak_delta_is_searched_again_until_every_concept_holds(
    shapes_clip, tmp_path
):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    requests = [shape_request(processor, t, seed=11) for t in TARGETS[:2]]
    independent = [
        unlearn_shape(model, processor, t, seed=11, cache_dir=tmp_path) for t in TARGETS[:2]
    ]
    weak = copy.copy(independent[0])
    weak.deltas = {n: 0.01 * d for n, d in weak.deltas.items()}  # no longer forgets "zorb"
    results = unlearn_stack(
        model,
        processor,
        requests,
        cache_dir=tmp_path,
        independent=[weak, independent[1]],
        progress=False,
    )
    assert results[0] is not weak and results[0].on_top_of == ["quax"]
    assert results[1] is independent[1]  # it held on the stack: untouched
    with edited(model, summed(results)):
        for request in requests:  # the guarantee, on each concept's validation images
            assert request.evaluator(model)["forget_acc"] == 0.0, request.config.concept
