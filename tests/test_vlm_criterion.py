"""The host-aware criterion for VLMs (issue 19), on the embedded *trained* VLM.

The embedded LLaVA names every identity on test views; its vision tower is the embedded CLIP's.
With the CLIP-only criterion (zero-shot on the pooled class token) the search is satisfied while
the VLM still names the person; with the VLM's own answers as the criterion it stops naming
them. Margins: 100 % vs 0 % of 8 test views (`benchmarks/vlm_criterion.py` measures more).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hf_slug import ConfigError, SLUGConfig, SLUGModel
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.vlm import ask, load_embedded_vlm
from hf_slug.demo.world import World
from hf_slug.hosts.vlm import VLMOptions, unlearn_vlm
from hf_slug.hosts.vlm_criterion import VLMAnswerEvaluator, answer_gradients
from hf_slug.hosts.vlm_evaluation import AskSettings, VLMIdentityEvaluator
from hf_slug.options import UnlearnOptions

QUIET = UnlearnOptions(progress=False)

TARGET = "Clara Alderwick"
QUESTION = "Who is the person in this photo?"  # a held-out phrasing (never trained on)


@pytest.fixture(scope="module")
def setup():
    clip, clip_processor = load_embedded()
    vlm, processor = load_embedded_vlm()
    world = World(0)
    data = (forget_pairs(world, TARGET, 64), retain_pairs(world, exclude=[TARGET], per_concept=4))
    views = [s.image for s in world.samples("identity", "test", 8, [TARGET])]
    config = SLUGConfig(concept=TARGET, candidate_labels=world.identities, concept_kind="identity")
    return clip, clip_processor, vlm, processor, data, views, config


def named(slug, processor, views) -> float:
    answers = ask(slug, processor, views, QUESTION)
    return sum(TARGET.lower() in a.lower() for a in answers) / len(answers)


@pytest.mark.numerics
def test_clip_criterion_is_met_while_the_vlm_still_names_the_person(setup):
    clip, clip_processor, vlm, processor, (forget, retain), views, config = setup
    assert named(vlm, processor, views) == 1.0
    with pytest.warns(UserWarning, match="pooled class token"):
        out = unlearn_vlm(vlm, clip, clip_processor, forget, retain, config, options=QUIET)
    assert out.converged and out.result.after["forget_acc"] == 0.0  # CLIP is satisfied
    slug = SLUGModel(vlm)
    slug.add_adapter("clip", out.delta)
    try:
        assert named(slug, processor, views) >= 0.75  # … the VLM is not (measured: 100 %)
    finally:
        slug.unload()  # the module's VLM goes back to its own weights


@pytest.mark.numerics
def test_the_vlm_criterion_makes_it_stop_and_keeps_the_language_model(setup):
    clip, clip_processor, vlm, processor, (forget, retain), views, config = setup
    language = {n: p.detach().clone() for n, p in vlm.named_parameters() if "vision" not in n}
    tower = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = unlearn_vlm(
            vlm, clip, clip_processor, forget, retain, config, vlm_processor=processor,
            options=QUIET,
        )  # fmt: skip
    assert not [w for w in caught if "pooled class token" in str(w.message)]
    assert out.converged and out.result.data.source == "validation"
    assert all(torch.equal(p, tower[n]) for n, p in vlm.named_parameters())  # restored
    slug = SLUGModel(vlm)
    slug.add_adapter("vlm", out.delta)
    try:
        assert named(slug, processor, views) <= 0.25  # measured: 0 %
        current = dict(slug.model.named_parameters())
        assert all(torch.equal(current[n], t) for n, t in language.items())
    finally:
        slug.unload()


def test_an_answer_evaluator_restores_the_tower_and_scores_what_the_vlm_says(setup):
    clip, _, vlm, processor, _, views, _ = setup
    judge = VLMIdentityEvaluator(
        processor, views[:2], [TARGET] * 2, TARGET, settings=AskSettings(QUESTION)
    )
    evaluator = VLMAnswerEvaluator(vlm, clip, judge)
    before = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    name = "vision_model.encoder.layers.0.mlp.fc2.weight"
    param = dict(clip.named_parameters())[name]
    original = param.detach().clone()
    with torch.no_grad():
        param.mul_(-3.0)  # a drastic edit of the CLIPModel: the VLM must see it during the call
    try:
        edited = evaluator.evaluate_only(clip, ("forget_acc",))
    finally:
        with torch.no_grad():
            param.copy_(original)
    assert set(edited) == {"forget_acc"}
    assert all(torch.equal(p, before[n]) for n, p in vlm.named_parameters())
    assert evaluator(clip)["forget_acc"] == 1.0  # unedited: the VLM names her


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"criterion": "answers"}, "criterion must be one of"),
        ({"criterion": "vlm"}, "pass vlm_processor="),
    ],
)
def test_bad_criteria_are_typed_errors(setup, kwargs, match):
    clip, clip_processor, vlm, _, (forget, retain), _, config = setup
    with pytest.raises(ConfigError, match=match):
        options = VLMOptions(unlearn=QUIET, **kwargs)
        unlearn_vlm(vlm, clip, clip_processor, forget, retain, config, options=options)


def test_answer_gradients_reach_only_the_blocks_the_language_model_reads(setup):
    clip, _, vlm, processor, _, views, _ = setup
    flags = {n: p.requires_grad for n, p in vlm.named_parameters()}
    judge = VLMIdentityEvaluator(
        processor, views[:4], [TARGET] * 4, TARGET, settings=AskSettings(QUESTION)
    )
    grads = answer_gradients(vlm, clip, [(judge, [True] * 4)])
    assert {n: p.requires_grad for n, p in vlm.named_parameters()} == flags  # restored
    clip_names = {n for n, _ in clip.named_parameters()}
    assert set(grads) <= clip_names and all(torch.isfinite(g).all() for g in grads.values())
    below = [g for n, g in grads.items() if ".layers.2." in n and n.endswith("fc2.weight")]
    above = [g for n, g in grads.items() if ".layers.3." in n]
    assert below and below[0].abs().sum() > 0  # block 2 feeds hidden state -2
    assert above and all(g.abs().sum() == 0 for g in above)  # block 3 is never read


@pytest.mark.numerics
def test_the_vlm_demo_runs_and_reports_both_criteria(tmp_path):
    from hf_slug.demo.vlm_demo import run_vlm_demo

    report = run_vlm_demo(tmp_path, quick=True)
    assert report["before"][report["target"]] == 100.0
    assert report["runs"]["vlm"]["after"][report["target"]] <= 25.0  # measured: 0 %
    assert report["runs"]["clip"]["after"][report["target"]] >= 75.0  # measured: 100 %
    assert (tmp_path / "vlm_demo_report.json").is_file()
    assert (tmp_path / "deltas" / "Clara_Alderwick" / "slug_config.json").is_file()


def test_the_images_are_processed_once_and_answers_can_stop_after_a_batch(setup):
    clip, _, vlm, processor, _, views, _ = setup
    calls = []

    class Counting:  # the processor, counting the images it processes
        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, *args, **kwargs):
            calls.append(len(kwargs["images"]))
            return processor(*args, **kwargs)

    counting = Counting()
    settings = AskSettings(QUESTION, batch_size=3)
    judge = VLMIdentityEvaluator(counting, views, [TARGET] * len(views), TARGET, settings=settings)
    full = judge.answers(vlm)
    assert calls == [3, 3, 2] and len(full) == len(views)
    assert judge.answers(vlm) == full and calls == [3, 3, 2]  # processed once
    stopped = judge.answers(vlm, until=lambda answers: len(answers) >= 4)
    assert stopped == full[:6]  # the batch where `until` first held is the last one asked


@pytest.mark.numerics
def test_an_early_exit_trial_makes_the_same_decision(setup):
    """A trial that already names the target more often than the ceiling allows stops asking;
    the forget metric is then a lower bound, marked inexact, that fails the same ceiling."""
    clip, _, vlm, processor, _, views, _ = setup
    settings = AskSettings(QUESTION, batch_size=2)
    judge = VLMIdentityEvaluator(processor, views, [TARGET] * len(views), TARGET, settings=settings)
    evaluator = VLMAnswerEvaluator(vlm, clip, judge)
    asked = []
    original = evaluator._target_only.answers

    def answers(model, until=None):
        found = original(model, until=until)
        asked.append(len(found))
        return found

    evaluator._target_only.answers = answers
    full = evaluator.evaluate_only(clip, ("forget_acc",))["forget_acc"]
    assert full == 1.0  # unedited, the VLM names her on every view
    metrics, exact = evaluator.evaluate_forget(clip, "forget_acc", 0.05)
    assert not exact and asked[-1] == 2 and 0.05 < metrics["forget_acc"] <= full
    metrics, exact = evaluator.evaluate_forget(clip, "forget_acc", 1.0)
    assert exact and asked[-1] == len(views) and metrics["forget_acc"] == full
