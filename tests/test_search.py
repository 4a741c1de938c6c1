"""The update's sign, the step search, the layer choice, cached-prefix evaluation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import random_images

from hf_slug import (
    SearchSettings,
    SLUGConfig,
    UnlearnOptions,
    ZeroShotEvaluator,
    ZeroShotTask,
    load_pairs,
    unlearn,
)
from hf_slug.evaluation import CallableEvaluator
from hf_slug.gradients import compute_gradients
from hf_slug.search import Criterion, edited, no_layer_message, search_step, update
from hf_slug.towers import candidate_names, encode_images, encode_texts

NAMES = ["Ada Byron", "Bob Stone", "Cy Young"]


@pytest.fixture
def forget():
    return load_pairs((random_images(6, seed=1), ["a photo of Ada Byron"] * 6))


def mean_forget_cosine(model, processor, pairs):
    inputs = processor(
        text=list(pairs.texts),
        images=[pairs.image(i) for i in range(len(pairs))],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        v = encode_images(model, inputs["pixel_values"])
        t = encode_texts(model, inputs["input_ids"], inputs["attention_mask"])
    return float(F.cosine_similarity(v, t).mean())


@pytest.mark.numerics
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("weight", ["mlp.fc1.weight", "self_attn.v_proj.weight"])
@pytest.mark.parametrize("tower", ["vision_model", "text_model"])
def test_update_lowers_mean_forget_cosine(model, processor, forget, tower, layer, weight):
    name = f"{tower}.encoder.layers.{layer}.{weight}"
    grads = compute_gradients(model, processor, forget, "forget", [name], progress=False)
    before = mean_forget_cosine(model, processor, forget)
    deltas = update(model, (name,), grads, step=0.05)
    assert float(deltas[name].norm()) == pytest.approx(
        0.05 * float(dict(model.named_parameters())[name].detach().norm()), rel=1e-5
    )
    with edited(model, deltas):
        after = mean_forget_cosine(model, processor, forget)
    assert after < before
    assert mean_forget_cosine(model, processor, forget) == pytest.approx(before, abs=1e-7)


def step_of(model, name, original):
    """The relative size of the current edit: ‖θ − θ⁰‖ / ‖θ⁰‖ (what a synthetic evaluator sees)."""
    current = dict(model.named_parameters())[name]
    return float((current.detach() - original).norm() / original.norm())


@pytest.mark.parametrize("threshold", [0.013, 0.1, 0.37, 3.0])
def test_search_meets_a_monotone_criterion_within_ten_evaluations(model, threshold):
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    grads = {name: torch.randn_like(original)}
    calls = []

    def evaluator(m):
        s = step_of(m, name, original)
        calls.append(s)
        return {"forget_acc": 1.0 if s < threshold else 0.0, "utility": 1.0 - s}

    search = search_step(
        model,
        (name,),
        grads,
        CallableEvaluator(evaluator),
        Criterion(),
        {"forget_acc": 1.0, "utility": 1.0},
    )
    assert search.usable and len(calls) <= 10
    assert threshold <= search.step <= threshold * 1.10  # smallest passing step, to bisection width
    assert all(s >= threshold for s in [t.step for t in search.trials if t.forgets])
    assert torch.equal(dict(model.named_parameters())[name], original)  # trials never accumulate


def test_the_kept_step_is_asked_only_for_the_metrics_its_trial_lacks(model):
    """A passing trial's forget metric is exact: the kept step asks the evaluator for the rest
    (`evaluate_only(missing)`), and its metrics are the trial's plus those."""
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    asked: list[set[str]] = []

    class Forgetful(CallableEvaluator):
        def evaluate_only(self, m, metrics):
            asked.append(set(metrics))
            s = step_of(m, name, original)
            every = {"forget_acc": 1.0 if s < 0.37 else 0.0, "utility": 1.0 - s}
            return {k: v for k, v in every.items() if k in metrics}

    search = search_step(
        model,
        (name,),
        {name: torch.randn_like(original)},
        Forgetful(lambda m: {}),
        Criterion(),
        {"forget_acc": 1.0, "utility": 1.0},
    )
    assert search.usable and asked[-1] == {"utility"}
    assert all(metrics == {"forget_acc"} for metrics in asked[:-1])
    assert search.metrics["forget_acc"] == 0.0
    assert search.metrics["utility"] == pytest.approx(1.0 - search.step, rel=1e-3)


def test_search_says_clearly_when_it_cannot(model):
    name = "text_model.encoder.layers.0.mlp.fc2.weight"
    grads = {name: torch.randn_like(dict(model.named_parameters())[name])}
    search = search_step(
        model,
        (name,),
        grads,
        CallableEvaluator(lambda m: {"forget_acc": 1.0}),
        Criterion(),
        {},
        SearchSettings(max_evaluations=5),
    )
    assert not search.usable
    assert search.status.startswith("largest step reached: s=1.6")


def test_utility_guard_rejects_a_costly_step(model):
    name = "text_model.encoder.layers.0.mlp.fc2.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    grads = {name: torch.randn_like(original)}

    def evaluator(m):
        s = step_of(m, name, original)
        return {"forget_acc": float(s < 0.5), "utility": 0.9 - s}

    search = search_step(
        model,
        (name,),
        grads,
        CallableEvaluator(evaluator),
        Criterion(utility_tolerance=0.01),
        {"utility": 0.9},
    )
    assert search.status.startswith("utility guard")


@pytest.mark.parametrize(
    "tolerance, usable",
    [(SLUGConfig(concept="Ada").utility_tolerance, False), (0.3, True), (None, True)],
    ids=["default-guard", "looser-guard", "no-guard"],
)
def test_the_default_guard_refuses_a_step_that_costs_over_ten_points(model, tolerance, usable):
    name = "text_model.encoder.layers.0.mlp.fc2.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    grads = {name: torch.randn_like(original)}

    def evaluator(m):  # forgets from s = 0.5 on, at a cost of 0.4·s (0.2 or more) in utility
        s = step_of(m, name, original)
        return {"forget_acc": float(s < 0.5), "utility": 0.9 - 0.4 * s}

    search = search_step(
        model,
        (name,),
        grads,
        CallableEvaluator(evaluator),
        Criterion(utility_tolerance=tolerance),
        {"utility": 0.9},
    )
    assert search.usable is usable, search.status


def test_a_guarded_failure_names_the_guard_and_how_to_relax_it(model):
    name = "text_model.encoder.layers.0.mlp.fc2.weight"
    original = dict(model.named_parameters())[name].detach().clone()

    def evaluator(m):
        s = step_of(m, name, original)
        return {"forget_acc": float(s < 0.5), "utility": 0.9 - 0.6 * s}

    criterion = Criterion(utility_tolerance=0.1)
    grads = {name: torch.randn_like(original)}
    search = search_step(
        model, (name,), grads, CallableEvaluator(evaluator), criterion, {"utility": 0.9}
    )
    message = no_layer_message("Ada", criterion, [search])
    assert "1 layer(s) forgot it but lost more than utility_tolerance=0.1" in message
    assert "None to turn the guard off" in message
    assert "utility_tolerance" not in no_layer_message("Ada", Criterion(), [])


def test_a_guard_without_its_metric_warns_and_is_off():
    with pytest.warns(UserWarning, match="returns no 'utility', so the utility guard"):
        criterion = Criterion(utility_tolerance=0.1).guarding({"forget_acc": 1.0})
    assert criterion.utility_tolerance is None
    kept = Criterion(utility_tolerance=0.1)
    assert kept.guarding({"forget_acc": 1.0, "utility": 0.5}) is kept


@pytest.mark.numerics
def test_cached_prefix_evaluation_equals_a_full_forward(model, processor):
    tasks = [
        ZeroShotTask("forget", random_images(5, seed=4), ["Ada Byron"] * 5, NAMES),
        ZeroShotTask("retain", random_images(7, seed=5), ["Bob Stone"] * 7, NAMES),
    ]
    fast = ZeroShotEvaluator(processor, tasks, batch_size=3)
    slow = ZeroShotEvaluator(processor, tasks, batch_size=3)
    for name in candidate_names(model):
        fast.begin(model, [name])
        for trial in range(2):  # the first trial fills the caches, the second replays them
            deltas = {name: torch.randn_like(dict(model.named_parameters())[name]) * 0.5}
            with edited(model, deltas):
                only = fast.evaluate_only(model, ("forget_acc",))
                cached = fast(model)
                full = slow(model)
            assert set(only) == {"forget_acc", "forget_acc@5"}, only
            assert only["forget_acc"] == pytest.approx(full["forget_acc"], abs=1e-6)
            assert cached == pytest.approx(full, abs=1e-6), (name, trial)
        fast.end()


@pytest.mark.numerics
def test_unlearn_with_a_named_layer_and_grouping(model, processor, forget):
    retain = load_pairs((random_images(8, seed=2), [f"thing {i}" for i in range(8)]))
    config = SLUGConfig(
        concept="Ada Byron",
        layer="vision.L1.q_proj",
        group="qkv",
        candidate_labels=NAMES,
        validation_share=0,  # a handful of random images: plumbing, scored in-sample
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = unlearn(
        model, processor, forget, retain, config, options=UnlearnOptions(progress=False)
    )
    assert result.converged
    assert {n.split(".")[-2] for n in result.deltas} == {"q_proj", "k_proj", "v_proj"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # not mutated
    assert result.after["forget_acc"] == 0.0
    assert "highest utility" in result.rule
    assert result.data.source == "in-sample"
    result.apply(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(result.deltas)
