"""The generation criterion of `unlearn_pipeline` (hf_slug.hosts.diffusion_criterion), on the
embedded pipeline and a fixed small subset of its people, prompts and seeds.

Trials copy the CLIPModel's edit into the pipeline's text encoder only while they generate; the
unedited judge's text features are computed once; bad input fails typed, naming the fix.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from hf_slug import ConfigError, SLUGConfig, UnlearnOptions
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.t2i import load_embedded_pipeline
from hf_slug.demo.world import World
from hf_slug.hosts.diffusion import PipelineOptions, unlearn_pipeline
from hf_slug.hosts.diffusion_criterion import (
    GenerationCheck,
    GenerationEvaluator,
    generation_evaluator,
)
from hf_slug.phrasings import criterion_templates
from hf_slug.weights import edited

pytest.importorskip("diffusers")
TARGET = "Clara Alderwick"
PEOPLE = [TARGET, "Ronan Kestrelle", "Lucia Dunmore", "Caleb Ostrander"]
V_PROJ = "text_model.encoder.layers.0.self_attn.v_proj.weight"
SMALL = GenerationCheck(
    templates=("a photo of {}.", "an image of {}."),
    target_images=2,
    generation_kwargs={"num_inference_steps": 4, "guidance_scale": 5.0},
    chunk=1,
)


@pytest.fixture(scope="module")
def models():
    clip, processor = load_embedded()
    return load_embedded_pipeline(), clip, processor


def evaluator_of(models, check=SMALL) -> GenerationEvaluator:
    pipe, clip, processor = models
    return GenerationEvaluator(pipe, clip, processor, TARGET, PEOPLE, check, progress=False)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_trials_hold_the_edit_only_while_generating(models):
    pipe, clip, _ = models
    evaluator = evaluator_of(models)
    before = snapshot(pipe.text_encoder)
    clip_before = snapshot(clip)
    seen = []
    call = evaluator.pipe

    class Recording:  # the pipeline, recording its v_proj while it draws
        def __call__(self, *args, **kwargs):
            seen.append(pipe.text_encoder.encoder.layers[0].self_attn.v_proj.weight.clone())
            return call(*args, **kwargs)

    evaluator.pipe = Recording()
    delta = torch.randn_like(dict(clip.named_parameters())[V_PROJ]) * 0.5
    with edited(clip, {V_PROJ: delta}):
        edit = dict(clip.named_parameters())[V_PROJ].detach().clone()
        metrics = evaluator(clip)
        forget, exact = evaluator.evaluate_forget(clip, "forget_acc", 0.0)
    assert set(metrics) == {"forget_acc", "others_acc", "utility"}
    assert 0 <= metrics["utility"] <= 1 and 0 <= forget["forget_acc"] <= 1
    assert seen and all(torch.equal(w, edit) for w in seen)
    after = snapshot(pipe.text_encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical after
    assert all(torch.equal(clip_before[k], v) for k, v in snapshot(clip).items())
    # the early exit: a failing trial stops at the first named image, a lower bound
    unedited = evaluator.evaluate_forget(clip, "forget_acc", 0.0)
    assert unedited[0]["forget_acc"] > 0
    if unedited[0]["forget_acc"] < 1:
        assert unedited[1] is False


def test_the_judge_reads_text_features_computed_once(models):
    _, clip, _ = models
    evaluator = evaluator_of(models)
    text = evaluator._text.clone()
    with edited(clip, {V_PROJ: torch.ones_like(dict(clip.named_parameters())[V_PROJ])}):
        evaluator(clip)
        assert torch.equal(evaluator._text, text)
    assert evaluator.images_generated == 2 + 3  # the target's images, one per other person
    assert evaluator.data.validation_forget == 2 and evaluator.data.validation_retain == 3


def test_validation_jobs_take_templates_in_turn():
    check = GenerationCheck(templates=("a {}.", "b {}."), target_images=3, seed=5)
    assert check.target_jobs("x") == [("x", "a x.", 5), ("x", "b x.", 5), ("x", "a x.", 6)]
    assert check.other_jobs(["y", "z", "w"]) == [("y", "a y.", 5), ("z", "b z.", 5),
                                                 ("w", "a w.", 5)]  # fmt: skip
    default = GenerationCheck()  # the forget criterion's phrasings of the concept's kind
    assert len({p for _, p, _ in default.target_jobs("x", "identity")}) == 8


def test_bad_input_fails_typed_and_names_the_fix(models):
    pipe, clip, processor = models
    with pytest.raises(ConfigError, match="criterion='nope'.*'generation'"):
        PipelineOptions(criterion="nope")
    with pytest.raises(ConfigError, match="one '\\{\\}'"):
        GenerationCheck(templates=("no slot",))
    with pytest.raises(ConfigError, match="drop them"):
        GenerationCheck(generation_kwargs={"generator": None})
    with pytest.raises(ConfigError, match="candidate_labels"):
        generation_evaluator(pipe, clip, processor, SLUGConfig(TARGET, towers=("text",)))
    world = World(seed=0)
    data = (forget_pairs(world, TARGET, 16), retain_pairs(world, exclude=[TARGET]))
    config = SLUGConfig(TARGET, towers=("text",), candidate_labels=PEOPLE)
    quiet = UnlearnOptions(progress=False)
    with pytest.raises(ConfigError, match="no 'forget_acc' metric.*make it return"):
        unlearn_pipeline(
            pipe,
            clip,
            processor,
            TARGET,
            data[1],
            forget=data[0],
            config=config,
            options=PipelineOptions(evaluator=lambda model: {"utility": 1.0}, unlearn=quiet),
        )
    with pytest.raises(ConfigError, match="candidate_labels"):  # the default criterion
        unlearn_pipeline(
            pipe,
            clip,
            processor,
            TARGET,
            data[1],
            forget=data[0],
            config=SLUGConfig(TARGET, towers=("text",)),
            options=PipelineOptions(unlearn=quiet),
        )
    out = unlearn_pipeline(  # the default criterion: CLIP's, on SLUG's held-out split
        pipe, clip, processor, TARGET, data[1], forget=data[0], config=config,
        options=PipelineOptions(unlearn=quiet),
    )  # fmt: skip
    assert out.result.data.source == "validation"


@pytest.mark.numerics
def test_clip_only_met_while_generations_show_the_target_and_generation_stops_it(models):
    """Eileen Collins (benchmarks/generative_pipeline_plain_gradient.md): CLIP's criterion is met at
    a step where the pipeline still draws her; judged on generations, the search goes further."""
    from hf_slug.options import SearchSettings
    from hf_slug.search import Criterion, search_step

    pipe, clip, processor = models
    world = World(seed=0)
    target, names = "Eileen Collins", list(World(seed=0).identities)
    config = SLUGConfig(  # SLUG's plain gradient: the direction that measurement used
        target,
        towers=("text",),
        candidate_labels=names,
        layer="text.L0.v_proj",
        retain_null_space=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip_only = unlearn_pipeline(
            pipe,
            clip,
            processor,
            target,
            retain_pairs(world, exclude=[target]),
            forget=forget_pairs(world, target, 32),
            config=config,
            options=PipelineOptions(criterion="clip", unlearn=UnlearnOptions(progress=False)),
        ).result
    assert clip_only.converged and clip_only.after["forget_acc"] == 0
    check = GenerationCheck(
        templates=tuple(criterion_templates("identity")),
        generation_kwargs={"num_inference_steps": 10, "guidance_scale": 5.0},
        margin=0.0,
    )
    judge = GenerationEvaluator(pipe, clip, processor, target, names, check, progress=False)
    with edited(clip, clip_only.deltas):
        shown = judge.evaluate_only(clip, ("forget_acc",))
    assert shown["forget_acc"] >= 0.5  # the pipeline still draws her (measured: 7 of 8)
    grads = clip_only.deltas  # a positive multiple of the forget gradient: the same steps
    found = search_step(
        clip,
        clip_only.chosen.names,
        grads,
        judge,
        Criterion(),
        {},  # no utility guard: only the forget criterion is asked, the target's images only
        SearchSettings(initial_step=clip_only.step, max_evaluations=3),
    )
    assert found.usable and found.metrics["forget_acc"] == 0
    assert found.step > clip_only.step  # its first trial, at CLIP's step, failed
