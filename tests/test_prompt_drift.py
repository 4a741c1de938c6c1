"""`PROMPT_DRIFT`: how far a text edit moves the other labels' prompts, and the choice among
projected edits that reads it (`hf_slug.null_space.choose_projected_first`).

A projected edit leaves the retain captions' outputs alone by construction, so validation retain
and utility barely tell projected edits apart; the drift of phrasings the retain set does not
hold does (`benchmarks/generalisation.md`).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import random_images, tiny_clip

from hf_slug import SLUGConfig, UnlearnOptions, unlearn
from hf_slug.data import PROCESSOR_KWARGS, ImageTextPairs
from hf_slug.evaluation import FORGET_TASK, PROMPT_DRIFT, ZeroShotEvaluator, ZeroShotTask
from hf_slug.null_space import DRIFT_TIE, LEAST_DRIFT, PROJECTED_FIRST, choose_projected_first
from hf_slug.search import Criterion, LayerSearch, edited, guard_clause, search_step
from hf_slug.towers import encode_texts
from hf_slug.validation import default_evaluator

NAMES = ["Ada Byron", "Bob Stone", "Cy Young"]
TEMPLATES = ("a photo of {}.", "this is {}.")
TEXT_V = "text_model.encoder.layers.1.self_attn.v_proj.weight"
VISION_V = "vision_model.encoder.layers.1.self_attn.v_proj.weight"


@pytest.fixture
def clip():
    return tiny_clip(seed=3, layers=3)


def _evaluator(processor, track: bool = True) -> ZeroShotEvaluator:
    forget = ZeroShotTask(
        FORGET_TASK, random_images(4, seed=4), ["Ada Byron"] * 4, NAMES, TEMPLATES,
        track_drift=track,
    )  # fmt: skip
    retain = ZeroShotTask("retain", random_images(4, seed=5), ["Bob Stone"] * 4, NAMES)
    return ZeroShotEvaluator(processor, [forget, retain], batch_size=3)


def _bystander_features(model, processor) -> torch.Tensor:
    """The other labels' prompts through the model, computed apart from the evaluator."""
    texts = [t.format(n) for n in NAMES[1:] for t in TEMPLATES]
    batch = processor(text=texts, **PROCESSOR_KWARGS)
    with torch.no_grad():
        return F.normalize(encode_texts(model, batch["input_ids"], batch["attention_mask"]), dim=-1)


def test_bystanders_are_the_labels_no_image_has():
    task = ZeroShotTask("t", random_images(2, seed=1), ["Bob Stone", "Bob Stone"], NAMES)
    assert task.bystanders() == [0, 2]


def test_a_text_edit_reports_how_far_it_moves_the_other_labels_prompts(clip, processor):
    evaluator = _evaluator(processor)
    assert PROMPT_DRIFT not in evaluator(clip)  # outside a search: no reference to drift from
    unedited = _bystander_features(clip, processor)
    evaluator.begin(clip, [TEXT_V])
    try:
        assert evaluator(clip)[PROMPT_DRIFT] == pytest.approx(0.0, abs=1e-6)
        edit = {TEXT_V: 0.5 * torch.randn_like(clip.get_parameter(TEXT_V))}
        with edited(clip, edit):
            metrics = evaluator(clip)
            only = evaluator.evaluate_only(clip, [PROMPT_DRIFT])
            moved = _bystander_features(clip, processor)
    finally:
        evaluator.end()
    expected = float((1 - (moved * unedited).sum(-1)).mean())
    assert expected > 1e-3  # the edit does move them
    assert metrics[PROMPT_DRIFT] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert only[PROMPT_DRIFT] == metrics[PROMPT_DRIFT] and "retain_acc" not in only
    assert PROMPT_DRIFT not in evaluator(clip)  # after `end`, gone again


@pytest.mark.parametrize(("names", "track"), [([VISION_V], True), ([TEXT_V], False)])
def test_no_drift_for_a_vision_edit_or_an_untracked_task(clip, processor, names, track):
    evaluator = _evaluator(processor, track)
    evaluator.begin(clip, names)
    try:
        with edited(clip, {names[0]: torch.randn_like(clip.get_parameter(names[0]))}):
            assert PROMPT_DRIFT not in evaluator(clip)
    finally:
        evaluator.end()


def test_the_default_evaluator_tracks_its_forget_prompts(processor):
    images = random_images(4, seed=1)
    pairs = ImageTextPairs(tuple(images), ("a photo of Bob Stone.",) * 4)
    evaluator = default_evaluator(
        processor, pairs, pairs, SLUGConfig(concept="Ada Byron", candidate_labels=NAMES)
    )
    assert [t.track_drift for t in evaluator.tasks] == [True] + [False] * (len(evaluator.tasks) - 1)


def _search(name: str, step: float, utility: float, drift: float | None) -> LayerSearch:
    metrics = {"utility": utility} | ({} if drift is None else {PROMPT_DRIFT: drift})
    return LayerSearch((name,), step=step, metrics=metrics, status="met")


@pytest.mark.parametrize(
    ("searches", "chosen", "by_drift"),
    [
        # the least drift wins among projected edits, whatever their utility and step
        ([("p1", 1.0, 0.9, 0.02), ("p2", 9.0, 0.8, 0.001), ("vision", 0.1, 1.0, 0.0)], "p2", True),
        # equal drift: the higher utility, then the smaller step
        ([("p1", 2.0, 0.8, 0.01), ("p2", 3.0, 0.9, 0.01), ("p3", 1.0, 0.9, 0.01)], "p3", True),
        # a projected edit without the metric (another evaluator): the utility rule
        ([("p1", 1.0, 0.9, 0.02), ("p2", 9.0, 0.8, None)], "p1", False),
    ],
)
def test_projected_edits_are_chosen_by_least_drift(searches, chosen, by_drift):
    found = {name: _search(name, *rest) for name, *rest in searches}
    covariances = {name: torch.eye(2) for name in found if name.startswith("p")}
    criterion = Criterion(utility_tolerance=0.1)
    best, rule = choose_projected_first(list(found.values()), criterion, covariances)
    assert best is found[chosen]
    assert rule.startswith(PROJECTED_FIRST)
    assert (PROMPT_DRIFT in rule) == by_drift
    if by_drift:
        guard = guard_clause(criterion)
        assert rule.endswith(LEAST_DRIFT.format(guard=guard, utility="utility"))
        assert "within 0.1" in guard and guard in rule


def test_unlearn_chooses_the_least_drift_among_projected_edits(processor):
    model = tiny_clip(seed=0)
    names = ["zorb", "quax", "blip", "frod"]
    forget = ImageTextPairs(tuple(random_images(8, seed=1)), ("a photo of zorb.",) * 8)
    captions = tuple(f"a photo of {n}." for n in names[1:] for _ in range(4))
    retain = ImageTextPairs(tuple(random_images(len(captions), seed=2)), captions)
    config = SLUGConfig(
        concept="zorb", candidate_labels=names, validation_share=0.0, forget_target=1.0,
        towers=("text",),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # forget_target=1.0 is "already met"
        result = unlearn(
            model, processor, forget, retain, config, options=UnlearnOptions(progress=False)
        )
    usable = [s for s in result.searches if s.usable]
    assert len(usable) >= 2 and all(PROMPT_DRIFT in s.metrics for s in usable)
    tied = [s for s in usable if s.metrics[PROMPT_DRIFT] <= DRIFT_TIE + min(
        x.metrics[PROMPT_DRIFT] for x in usable
    )]  # fmt: skip
    assert result.chosen in tied
    assert result.chosen.metrics["utility"] == max(s.metrics["utility"] for s in tied)
    assert PROMPT_DRIFT in result.rule


def test_drifts_within_round_off_tie_and_go_to_utility():
    found = {
        "p1": _search("p1", 1.0, 0.80, 1e-4),
        "p2": _search("p2", 2.0, 0.90, 1e-4 + 5e-7),  # round-off above p1: a tie, better utility
        "p3": _search("p3", 0.5, 0.95, 1e-4 + 1e-5),  # clearly more drift
    }
    covariances = {name: torch.eye(2) for name in found}
    best, _ = choose_projected_first(list(found.values()), Criterion(), covariances)
    assert best is found["p2"]


TEXT_FC2 = "text_model.encoder.layers.2.mlp.fc2.weight"


def _counting(evaluator: ZeroShotEvaluator) -> list[bool]:
    """Record the evaluator's `_features` calls (True: text). With edits above block 0 the
    trials replay cached prefixes instead, so these are the unedited encodings."""
    calls, features = [], evaluator._features

    def counted(model, inputs):
        calls.append(inputs.kind == "text")
        return features(model, inputs)

    evaluator._features = counted
    return calls


@pytest.mark.parametrize(("restored", "text_encodings"), [(True, 1), (False, 3)])
def test_the_unedited_prompts_are_encoded_once_while_units_restore_the_tower(
    clip, processor, restored, text_encodings
):
    """Writing a tensor back bumps its version; a tower whose edited tensors hold what they held
    at `begin` keeps its features across units. One left changed is encoded again, and the
    drift is then measured from the tower as it is."""
    evaluator = _evaluator(processor)
    calls = _counting(evaluator)
    for name in (TEXT_V, TEXT_FC2):
        evaluator.begin(clip, [name])
        with edited(clip, {name: torch.randn_like(clip.get_parameter(name))}):
            assert evaluator(clip)[PROMPT_DRIFT] > 0
        if not restored:
            with torch.no_grad():
                clip.get_parameter(name).add_(0.1)  # left changed after the unit
        evaluator.end()
    evaluator.begin(clip, [TEXT_V])
    try:
        assert evaluator(clip)[PROMPT_DRIFT] == pytest.approx(0.0, abs=1e-6)
    finally:
        evaluator.end()
    assert sum(calls) == text_encodings, calls


def test_a_failing_begin_still_ends_the_unit(clip, processor):
    class Failing(ZeroShotEvaluator):
        ended = False

        def begin(self, model, names):
            super().begin(model, names)
            raise RuntimeError("out of memory")

        def end(self):
            super().end()
            self.ended = True

    evaluator = Failing(processor, _evaluator(processor).tasks)
    with pytest.raises(RuntimeError, match="out of memory"):
        search_step(clip, (TEXT_V,), {TEXT_V: torch.ones(1)}, evaluator, Criterion(), {})
    assert evaluator.ended and PROMPT_DRIFT not in evaluator(clip)
