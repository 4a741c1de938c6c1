"""Several concepts: each forgotten, stacked and removed exactly; a broken stack re-searched."""

from __future__ import annotations

import copy

import pytest
import torch
from shapes import (
    NAMES,
    TEMPLATE,
    TEST_PER_CLASS,
    assert_forgotten_and_kept,
    assert_same_edit,
    per_class_accuracy,
    samples,
    shape_request,
    unlearn_shape,
)

from hf_slug import SLUGModel
from hf_slug.evaluation import StackedEvaluator
from hf_slug.search import edited
from hf_slug.stacking import unlearn_stack
from hf_slug.towers import encode_images, encode_texts

pytestmark = pytest.mark.numerics

TARGETS = ["zorb", "quax", "fent"]


def summed(results) -> dict:
    total: dict = {}
    for result in results:
        for name, delta in result.deltas.items():
            total[name] = total.get(name, 0) + delta
    return total


def test_three_concepts_each_forgotten_then_stacked_and_removed_exactly(shapes_clip):
    # Independent deltas, the paper's way. Stacked, a concept may come back or another class
    # suffer (which is why unlearn_stack exists): what holds for any model is each delta's own
    # guarantee and the stack's arithmetic, asserted here.
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    results = {t: unlearn_shape(model, processor, t, seed=11) for t in TARGETS}
    assert all(r.converged for r in results.values()), {t: r.report() for t, r in results.items()}
    test_images, test_labels = samples(TEST_PER_CLASS, seed=14)
    before = per_class_accuracy(model, processor, test_images, test_labels)
    for target, result in results.items():  # each alone: its concept forgotten, the rest kept
        with edited(model, result.deltas):
            alone = per_class_accuracy(model, processor, test_images, test_labels)
        assert_forgotten_and_kept(before, alone, [target])
    base = copy.deepcopy(model)  # before SLUGModel hooks it: a deep copy keeps forward hooks
    original = features(base, processor, test_images)
    slug = SLUGModel(model)
    for target, result in results.items():
        slug.add_adapter(target, result)
    stacked = by_hand(base, processor, test_images, results.values())
    assert_same_edit(features(slug.model, processor, test_images), stacked, original)
    slug.delete_adapter("quax")  # exactly the other two deltas remain
    remaining = by_hand(base, processor, test_images, [results["zorb"], results["fent"]])
    assert_same_edit(features(slug.model, processor, test_images), remaining, original)
    assert (remaining - stacked).abs().max() > 1e-3  # quax's delta did come off
    for target in ("zorb", "fent"):
        slug.delete_adapter(target)
    assert torch.equal(features(slug.model, processor, test_images), original)


def features(model, processor, images) -> torch.Tensor:
    """The images' and the class prompts' embeddings, stacked."""
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = processor(text=[TEMPLATE.format(n) for n in NAMES], return_tensors="pt", padding=True)
    with torch.no_grad():
        return torch.cat([encode_images(model, pixels), encode_texts(model, **tokens)])


def by_hand(model, processor, images, results) -> torch.Tensor:
    """`features` of a copy of `model` whose weights were edited by `results`' deltas."""
    model = copy.deepcopy(model)
    for result in results:
        result.apply(model)
    return features(model, processor, images)


def holds(model, request, result, others) -> bool:
    """Whether `result` still meets its criterion with `others`' deltas applied."""
    with edited(model, result.deltas):
        metrics = StackedEvaluator(request.evaluator, [r.deltas for r in others])(model)
    return metrics["forget_acc"] == 0.0


def test_a_stack_broken_by_a_weak_delta_is_searched_again_until_every_concept_holds(
    shapes_clip, tmp_path
):
    model, processor = copy.deepcopy(shapes_clip[0]), shapes_clip[1]
    pair = TARGETS[:2]  # each one's retain sets leave out the other, which the stack forgets
    requests = [shape_request(processor, t, seed=11, stack=pair) for t in pair]
    independent = [
        unlearn_shape(model, processor, t, seed=11, stack=pair, cache_dir=tmp_path) for t in pair
    ]
    assert all(r.converged for r in independent), [r.report() for r in independent]
    weak = copy.copy(independent[0])
    weak.deltas = {n: 0.01 * d for n, d in weak.deltas.items()}
    assert not holds(model, requests[0], weak, [independent[1]])  # no longer forgets "zorb"
    results = unlearn_stack(
        model,
        processor,
        requests,
        cache_dir=tmp_path,
        independent=[weak, independent[1]],
        progress=False,
        on_failure="raise",
    )
    assert results[0] is not weak and results[0].on_top_of == ["quax"]
    # only what the stack broke is searched again: quax, if zorb's new delta broke it
    assert results[1] is independent[1] or results[1].on_top_of == ["zorb"]
    test_images, test_labels = samples(TEST_PER_CLASS, seed=14)
    before = per_class_accuracy(model, processor, test_images, test_labels)
    with edited(model, summed(results)):
        for request in requests:  # the guarantee, on each concept's validation images
            assert request.evaluator(model)["forget_acc"] == 0.0, request.config.concept
        stacked = per_class_accuracy(model, processor, test_images, test_labels)
    # and on unseen images; the last search of a stack ran on top of the others, its θ⁰ utility
    # guard covering the whole stack: the kept classes are kept
    assert_forgotten_and_kept(before, stacked, pair)
