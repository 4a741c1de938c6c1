"""The denoiser criterion of `unlearn_pipeline` (hf_slug.hosts.denoiser_criterion), on the
embedded pipeline and a fixed small subset of its people and phrasings.

Trials copy the CLIPModel's edit into the pipeline's text encoder only while the UNet is asked;
the unedited references are computed once; the unedited model scores every name as itself; bad
input fails typed, naming the fix; on the trained pipeline the criterion tells a step the UNet
ignores from one it does not.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from hf_slug import ConfigError, SLUGConfig, UnlearnOptions
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.t2i import load_embedded_pipeline
from hf_slug.demo.world import World
from hf_slug.hosts.denoiser_criterion import DenoiserCheck, DenoiserEvaluator, denoiser_evaluator
from hf_slug.hosts.diffusion import PipelineOptions, unlearn_pipeline
from hf_slug.hosts.pipeline_criteria import default_criterion, pipeline_evaluator
from hf_slug.weights import edited, mirrored

pytest.importorskip("diffusers")
TARGET = "Clara Alderwick"
PEOPLE = [TARGET, "Ronan Kestrelle", "Lucia Dunmore", "Caleb Ostrander"]
V_PROJ = "text_model.encoder.layers.0.self_attn.v_proj.weight"
SMALL = DenoiserCheck(templates=("a photo of {}.", "an image of {}."), timesteps=(0.5,), noises=1)


@pytest.fixture(scope="module")
def models():
    clip, processor = load_embedded()
    return load_embedded_pipeline(), clip, processor


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_trials_hold_the_edit_only_while_the_unet_is_asked(models):
    pipe, clip, _ = models
    evaluator = DenoiserEvaluator(pipe, clip, TARGET, PEOPLE, SMALL)
    before, clip_before = snapshot(pipe.text_encoder), snapshot(clip)
    seen = []
    unet_forward = evaluator.unet.forward

    def recording(*args, **kwargs):  # the UNet, recording the encoder's v_proj when called
        seen.append(pipe.text_encoder.encoder.layers[0].self_attn.v_proj.weight.clone())
        return unet_forward(*args, **kwargs)

    evaluator.unet.forward = recording
    try:
        delta = torch.randn_like(dict(clip.named_parameters())[V_PROJ]) * 0.5
        with edited(clip, {V_PROJ: delta}):
            edit = dict(clip.named_parameters())[V_PROJ].detach().clone()
            metrics = evaluator(clip)
            forget = evaluator.evaluate_only(clip, ("forget_acc",))
    finally:
        del evaluator.unet.forward
    assert set(metrics) == {"forget_acc", "others_acc", "utility"} and set(forget) == {"forget_acc"}
    assert seen and all(torch.equal(w, edit) for w in seen)
    assert all(torch.equal(before[k], v) for k, v in snapshot(pipe.text_encoder).items())
    assert all(torch.equal(clip_before[k], v) for k, v in snapshot(clip).items())
    assert -1 <= metrics["utility"] <= 1 and 0 <= metrics["others_acc"] <= 1


def test_the_unedited_model_scores_every_name_as_itself_and_references_stay(models):
    pipe, clip, _ = models
    evaluator = DenoiserEvaluator(pipe, clip, TARGET, PEOPLE, SMALL)
    reference = evaluator._reference.clone()
    metrics = evaluator(clip)
    assert metrics["forget_acc"] == 1.0 and metrics["others_acc"] == 1.0
    assert metrics["utility"] == pytest.approx(1.0, abs=1e-4)
    with edited(clip, {V_PROJ: torch.ones_like(dict(clip.named_parameters())[V_PROJ])}):
        evaluator(clip)
    assert torch.equal(evaluator._reference, reference)
    assert evaluator.data.validation_forget == 2 and evaluator.data.validation_retain == 3
    counted = evaluator.with_gradient_counts(32, 100).data
    assert "2 forget + 3 retain prompts (the UNet's guidance directions" in counted.describe()
    assert (counted.gradient_forget, counted.gradient_retain, counted.source) == (
        32,
        100,
        "validation",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"templates": ("no slot",)}, "one '\\{\\}'"),
        ({"templates": ()}, "one '\\{\\}'"),
        ({"timesteps": (1.5,)}, "strictly between 0 and 1"),
        ({"timesteps": ()}, "strictly between 0 and 1"),
        ({"timesteps": (float("nan"),)}, "strictly between 0 and 1"),
        ({"noises": 0}, "noises"),
        ({"margin": -0.1}, "cosine difference"),
        ({"margin": float("inf")}, "cosine difference"),
    ],
)
def test_bad_checks_fail_typed_and_name_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DenoiserCheck(**kwargs)


def test_bad_input_fails_typed_and_names_the_fix(models):
    pipe, clip, _ = models
    with pytest.raises(ConfigError, match="'denoiser' the UNet"):
        PipelineOptions(criterion="nope")
    with pytest.raises(ConfigError, match="candidate_labels"):
        denoiser_evaluator(pipe, clip, SLUGConfig(TARGET, towers=("text",)))

    class TextOnly:  # a pipeline's components without a UNet
        components = {"text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer}

    with pytest.raises(ConfigError, match="criterion='generation'"):
        DenoiserEvaluator(TextOnly(), clip, TARGET, PEOPLE, SMALL)


def unlearn_quietly(models, config: SLUGConfig, views: int, **options):
    """`unlearn_pipeline` on the embedded world's views of `config.concept`, warnings and the
    progress bar off; `options`: `PipelineOptions` fields."""
    pipe, clip, processor = models
    world, target = World(seed=0), config.concept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return unlearn_pipeline(
            pipe,
            clip,
            processor,
            target,
            retain_pairs(world, exclude=[target]),
            forget=forget_pairs(world, target, views),
            config=config,
            options=PipelineOptions(unlearn=UnlearnOptions(progress=False), **options),
        )


def test_unlearn_pipeline_searches_on_the_denoiser(models):
    config = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE)
    result = unlearn_quietly(models, config, 16, criterion="denoiser", denoiser=SMALL).result
    assert result.data.source == "validation" and result.data.validation_forget == 2
    assert result.data.gradient_forget == 16  # every forget pair goes to the gradient
    assert set(result.after) >= {"forget_acc", "others_acc", "utility"}
    if result.converged:
        assert result.after["forget_acc"] == 0


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("target", "layer", "drawn"),
    [("Eileen Collins", "text.L1.v_proj", True), ("Clara Alderwick", "text.L0.fc2", False)],
)
def test_the_denoiser_sees_what_clips_criterion_misses(models, target, layer, drawn):
    """At the step CLIP's criterion chooses on these layers (the picks of
    benchmarks/generative_pipeline.md's CLIP rows, pinned so the layer choice can change), the
    pipeline still draws Eileen Collins and no longer draws Clara Alderwick (8 of 8 and 0 of 8
    test generations there); the denoiser criterion says the same on its validation phrasings."""
    pipe, clip, _ = models
    names = list(World(seed=0).identities)
    config = SLUGConfig(target, towers=("text",), layer=layer, candidate_labels=names)
    result = unlearn_quietly(models, config, 32, criterion="clip").result
    assert result.converged and result.after["forget_acc"] == 0  # CLIP's criterion is met
    evaluator = denoiser_evaluator(pipe, clip, replace(config, concept_kind="identity"))
    full = len(evaluator.phrasings)  # the full name's positions come first
    with edited(clip, result.deltas), mirrored(evaluator._pairs):
        edited_directions = evaluator._directions(evaluator.prompts[target][:full])
    cosines = torch.einsum("pd,pld->pl", edited_directions, evaluator._reference[:full])
    own = cosines[:, names.index(target)]
    best_other = torch.cat(
        [cosines[:, : names.index(target)], cosines[:, names.index(target) + 1 :]], 1
    )
    gap = (own - best_other.max(-1).values).median()
    print(f"{target}: median cosine gap to the best other name {gap:.3f}")
    assert gap > 0.05 if drawn else gap < -0.05


def test_the_default_is_the_denoiser_where_it_can_run(models):
    pipe, clip, _ = models
    assert default_criterion(pipe, 1) == "denoiser"
    config = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE)
    evaluator = pipeline_evaluator(PipelineOptions(denoiser=SMALL), pipe, clip, None, config)
    assert isinstance(evaluator, DenoiserEvaluator)
    assert pipeline_evaluator(PipelineOptions(criterion="clip"), pipe, clip, None, config) is None
    with pytest.warns(UserWarning, match="criterion='generation'.*criterion='clip'"):
        assert default_criterion(pipe, 2) == "clip"  # two encoders (SDXL): CLIP's, said aloud


def test_name_parts_are_asked_for_identities_as_clips_criterion_does(models):
    pipe, clip, _ = models
    person = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE, concept_kind="identity")
    evaluator = denoiser_evaluator(pipe, clip, person, check=SMALL)
    assert evaluator.prompts[TARGET] == [
        "a photo of Clara Alderwick.",
        "an image of Clara Alderwick.",
        "a photo of Clara.",
        "an image of Clara.",
        "a photo of Alderwick.",
        "an image of Alderwick.",
    ]
    assert evaluator.prompts["Ronan Kestrelle"][2] == "a photo of Ronan."  # aligned by position
    assert evaluator.data.validation_forget == 6 and evaluator._reference.shape[:2] == (6, 4)
    assert evaluator(clip)["forget_acc"] == 1.0  # unedited: every spelling still the target
    concept = replace(person, concept_kind="concept")
    assert len(denoiser_evaluator(pipe, clip, concept, check=SMALL).prompts[TARGET]) == 2
    unparted = replace(person, name_parts=False)
    assert len(denoiser_evaluator(pipe, clip, unparted, check=SMALL).prompts[TARGET]) == 2
    forced = replace(SMALL, name_parts=True)
    assert len(denoiser_evaluator(pipe, clip, concept, check=forced).prompts[TARGET]) == 6


def test_the_options_concept_kind_reaches_the_criterion(models):
    """`PipelineOptions(concept_kind="identity")` alone gives the person's phrasings and name
    parts (it used to reach only the delta); two different kinds are a typed error."""
    config = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE)
    out = unlearn_quietly(models, config, 16, concept_kind="identity", denoiser=SMALL)
    assert out.delta is not None and out.delta.config.concept_kind == "identity"
    assert out.result.data.validation_forget == 6  # 2 phrasings × (full, first, last name)
    with pytest.raises(ConfigError, match="disagree"):
        unlearn_quietly(models, replace(config, concept_kind="style"), 16, concept_kind="identity")


def test_a_failing_trial_stops_at_its_first_spelling(models):
    """The early exit: unedited, every full-name prompt still points to the target, so a trial
    asking for forget_acc <= 0 stops after them with a lower bound (the same decision)."""
    pipe, clip, _ = models
    person = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE, concept_kind="identity")
    evaluator = denoiser_evaluator(pipe, clip, person, check=SMALL)
    asked = []
    directions = evaluator._directions
    evaluator._directions = lambda prompts: asked.append(len(prompts)) or directions(prompts)
    metrics, exact = evaluator.evaluate_forget(clip, "forget_acc", 0.0)
    assert (metrics["forget_acc"], exact, asked) == (2 / 6, False, [2])
    metrics, exact = evaluator.evaluate_forget(clip, "forget_acc", 1.0)
    assert (metrics["forget_acc"], exact) == (1.0, True)
