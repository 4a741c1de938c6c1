"""The honest default (issue 14): a held-out validation split, the phrasing ensemble, the margin.

The default call must never score a trial on a pair its gradients came from; every number says
which data it comes from; bad shares, templates and margins are typed errors.
"""

from __future__ import annotations

import hashlib
import importlib

import pytest
from conftest import tiny_clip
from PIL import Image

from hf_slug import (
    ConfigError,
    SLUGConfig,
    UnlearnOptions,
    unlearn,
)
from hf_slug.data import load_pairs
from hf_slug.evaluation import ZeroShotEvaluator
from hf_slug.testing import random_images
from hf_slug.validation import (
    EvaluationData,
    criterion_prompts,
    default_evaluator,
    held_out_evaluator,
    named_label,
    split_pairs,
)

gradients_module = importlib.import_module("hf_slug.gradient_cache")  # where unlearn calls the pass
NAMES = ["Ada Byron", "Alan Turing", "Grace Hopper"]


def _pairs(n: int, caption: str = "a photo of Ada Byron", seed: int = 0):
    return load_pairs((random_images(n, seed=seed), [caption] * n))


def _retain(n: int):
    names = NAMES[1:] + ["a red house"]
    return load_pairs(
        (random_images(n, seed=99), [f"a photo of {names[i % len(names)]}" for i in range(n)])
    )


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


# -- the split ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, share, held", [(16, 0.25, 4), (40, 0.25, 10), (20, 0.5, 10)])
def test_split_is_deterministic_disjoint_and_complete(n, share, held):
    pairs = _pairs(n)
    grad, val = split_pairs(pairs, share, seed=3, name="forget set", minimum=4)
    again = split_pairs(pairs, share, seed=3, name="forget set", minimum=4)
    assert (grad.images, val.images) == (again[0].images, again[1].images)
    assert len(val) == held and len(grad) == n - held
    assert not {id(i) for i in grad.images} & {id(i) for i in val.images}
    assert {id(i) for i in grad.images} | {id(i) for i in val.images} == {
        id(i) for i in pairs.images
    }


def test_split_depends_on_the_seed_and_the_set():
    pairs = _pairs(40)
    draws = {
        tuple(id(i) for i in split_pairs(pairs, 0.25, seed=s, name=name, minimum=4)[1].images)
        for s in (0, 1, 2)
        for name in ("forget set", "retain set")
    }
    assert len(draws) == 6


@pytest.mark.parametrize("n, share", [(8, 0.25), (12, 0.25), (5, 0.95)])
def test_a_split_leaving_too_few_images_is_a_typed_error(n, share):
    with pytest.raises(ConfigError, match="validation_share") as info:
        split_pairs(_pairs(n), share, seed=0, name="forget set", minimum=4)
    message = str(info.value)
    assert "give at least" in message and "validation_share=0" in message


# -- the config fields ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(validation_share=1.0), "validation_share"),
        (dict(validation_share=-0.1), "validation_share"),
        (dict(validation_share=float("nan")), "validation_share"),
        (dict(margin=2.5), "margin"),
        (dict(margin=float("inf")), "margin"),
        (dict(templates=("a photo of Ada",)), r"\{\}"),
        (dict(templates=("{} and {}",)), r"\{\}"),
        (dict(concept_kind="planet"), "concept kind"),
        (dict(split_seed="0"), "split_seed"),
        (dict(name_parts="yes"), "name_parts"),
    ],
)
def test_bad_criterion_settings_are_typed_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SLUGConfig(concept="Ada Byron", candidate_labels=NAMES, **kwargs)


def test_named_label_matches_whole_words_and_refuses_ambiguity():
    labels = ["cup", "cupboard", "Grace Hopper", "Grace"]
    assert named_label("a cupboard in watercolor", labels) == "cupboard"
    assert named_label("a cup.", labels) == "cup"
    assert named_label("a photo of Grace Hopper.", labels) == "Grace Hopper"
    assert named_label("hiccups", labels) is None
    assert named_label("a cup beside a cupboard", labels) is None


# -- the evaluator ----------------------------------------------------------------------------
def test_default_evaluator_checks_every_phrasing_with_the_margin(processor):
    config = SLUGConfig(
        concept="Ada Byron",
        candidate_labels=NAMES,
        concept_kind="identity",
        templates=("Ada is here: {}",),
        margin=0.1,
    )
    evaluator = default_evaluator(processor, _pairs(4), _retain(8), config)
    forget = next(t for t in evaluator.tasks if t.name == "forget")
    assert forget.scoring == "any" and forget.margin == pytest.approx(0.1)
    assert "Ada is here: {}" in forget.templates and "a photo of {}." in forget.templates
    others = next(t for t in evaluator.tasks if t.name == "others")
    assert set(others.labels) == {"Alan Turing", "Grace Hopper"}  # "a red house" names nobody
    metrics = evaluator(tiny_clip())
    assert {"forget_acc", "forget_acc@5", "retain_acc", "others_acc", "utility"} <= set(metrics)
    expected = (metrics["retain_acc"] + metrics["others_acc"]) / 2
    assert metrics["utility"] == pytest.approx(expected)


def test_name_parts_align_every_label_phrase_by_phrase(processor):
    prompts = criterion_prompts(["Grace Hopper", "Plato"], ["a photo of {}.", "{} here"])
    assert prompts["Grace Hopper"] == [
        "a photo of Grace Hopper.",
        "Grace Hopper here",
        "a photo of Grace.",
        "Grace here",
        "a photo of Hopper.",
        "Hopper here",
    ]
    assert prompts["Plato"][0::2] == ["a photo of Plato."] * 3  # one word: repeated in place
    config = SLUGConfig(
        concept="Ada Byron",
        candidate_labels=NAMES,
        concept_kind="identity",
        name_parts=True,
        misspellings=0,  # the name parts come last only without misspellings
    )
    forget = default_evaluator(processor, _pairs(4), _retain(8), config).tasks[0]
    last = forget.texts_of("Ada Byron")[-1]
    assert "Byron" in last and "Ada" not in last and forget.scoring == "any"
    assert len({len(forget.texts_of(n)) for n in NAMES}) == 1


def test_held_out_evaluator_in_sample_when_asked(processor):
    config = SLUGConfig(concept="Ada Byron", candidate_labels=NAMES, validation_share=0)
    _, forget, retain, data = held_out_evaluator(processor, _pairs(6), _retain(8), config)
    assert (len(forget), len(retain), data.source) == (6, 8, "in-sample")
    assert data.describe().startswith("in-sample")


# -- the default call never scores a trial on a gradient pair ----------------------------------
def test_default_call_never_scores_on_a_gradient_pair(processor, monkeypatch):
    seen = {"gradient": [], "evaluated": []}
    compute = gradients_module.compute_gradients

    def spy_gradients(model, proc, pairs, *args, **kwargs):
        seen["gradient"] += [_digest(pairs.image(i)) for i in range(len(pairs))]
        return compute(model, proc, pairs, *args, **kwargs)

    init = ZeroShotEvaluator.__init__

    def spy_evaluator(self, proc, tasks, *args, **kwargs):
        seen["evaluated"] += [_digest(image) for task in tasks for image in task.images]
        init(self, proc, tasks, *args, **kwargs)

    monkeypatch.setattr(gradients_module, "compute_gradients", spy_gradients)
    monkeypatch.setattr(ZeroShotEvaluator, "__init__", spy_evaluator)
    forget, retain = _pairs(20), _retain(40)
    config = SLUGConfig(
        concept="Ada Byron", candidate_labels=NAMES, layer="vision.L0.fc1", max_evaluations=2
    )
    result = unlearn(
        tiny_clip(), processor, forget, retain, config, options=UnlearnOptions(progress=False)
    )
    gradient, evaluated = set(seen["gradient"]), set(seen["evaluated"])
    assert len(gradient) == 15 + 30 and len(evaluated) == 5 + 10
    assert not gradient & evaluated
    every = {_digest(p.image(i)) for p in (forget, retain) for i in range(len(p))}
    assert gradient | evaluated == every
    assert result.data == EvaluationData("validation", 15, 30, 5, 10, 0.25, 0)
    assert result.summary()["data"]["source"] == "validation"
    assert "validation: 5 forget + 10 retain" in result.summary()["data"]["description"]


def test_card_and_config_say_which_data_the_numbers_come_from(processor, tmp_path):
    from hf_slug import ConceptDelta, UnlearningConfig
    from hf_slug.hub import model_card

    config = SLUGConfig(
        concept="Ada Byron",
        candidate_labels=NAMES,
        layer="vision.L0.fc1",
        forget_target=1.0,  # a random model: the first trial passes, so a delta exists
        validation_share=0,
    )
    result = unlearn(
        tiny_clip(),
        processor,
        _pairs(6),
        _retain(8),
        config,
        options=UnlearnOptions(progress=False),
    )
    ConceptDelta.from_result(result).save_pretrained(tmp_path / "delta")
    saved = UnlearningConfig.from_pretrained(tmp_path / "delta")
    assert saved.metrics["data"]["source"] == "in-sample"
    card = model_card(tmp_path / "delta")
    assert "Measured on in-sample: scored on the 6 forget + 8 retain gradient pairs" in card
    assert "validation data" not in card


def test_own_evaluator_is_labelled_as_such(processor):
    config = SLUGConfig(
        concept="Ada Byron", candidate_labels=NAMES, layer="vision.L0.fc1", max_evaluations=1
    )
    result = unlearn(
        tiny_clip(),
        processor,
        _pairs(6),
        _retain(8),
        config,
        evaluator=lambda model: {"forget_acc": 1.0, "utility": 1.0},
        options=UnlearnOptions(progress=False),
    )
    assert result.data.source == "evaluator"
    assert result.data.gradient_forget == 6  # the user's evaluator: nothing is held out


@pytest.mark.parametrize(
    ("kind", "margin", "towers", "expected"),
    [("identity", None, ("vision", "text"), 0.3), ("identity", None, ("text",), 0.3),
     ("identity", None, ("vision",), 0.05), ("object", None, ("vision", "text"), 0.05),
     ("style", None, ("text",), 0.05), ("concept", None, ("vision", "text"), 0.05),
     ("identity", 0.0, ("vision", "text"), 0.0), ("identity", 0.15, ("vision",), 0.15),
     ("object", 0.2, ("text",), 0.2)],
)  # fmt: skip
def test_the_margin_in_force_is_the_kinds_unless_given(processor, kind, margin, towers, expected):
    """Identities' 0.3 was chosen on text edits: a vision-only search keeps 0.05."""
    config = SLUGConfig(
        concept="Ada Byron", candidate_labels=NAMES, concept_kind=kind, margin=margin,
        towers=towers,
    )  # fmt: skip
    assert config.criterion_margin == expected
    assert config.to_dict()["margin"] == expected  # saved settings carry the number used
    forget = default_evaluator(processor, _pairs(4), _retain(8), config).tasks[0]
    assert forget.margin == expected
