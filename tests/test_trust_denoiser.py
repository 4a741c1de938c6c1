"""The denoiser criterion under adversarial input, on tiny pipelines (an adversarial review):
overflowing edits, a CLIP that is not the encoder's tower, clip_skip, UNets that need more than
text, the config's own phrasings, a name part every other candidate shares, bad labels and checks.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import CLIPModel

from hf_slug import ConfigError, SLUGConfig
from hf_slug.errors import NonFiniteOutputError, SLUGError
from hf_slug.hosts.denoiser_criterion import DenoiserCheck, DenoiserEvaluator, denoiser_evaluator
from hf_slug.hosts.diffusion import PipelineOptions
from hf_slug.hosts.pipeline_criteria import default_criterion, pipeline_evaluator
from hf_slug.testing import tiny_clip, tiny_clip_config, tiny_sd_pipeline
from hf_slug.weights import edited

pytest.importorskip("diffusers")
PEOPLE = ["Clara Alderwick", "Ronan Kestrelle", "Lucia Dunmore", "Caleb Ostrander"]
SMALL = DenoiserCheck(templates=("a photo of {}.", "an image of {}."), timesteps=(0.5,), noises=1)
FC1 = "text_model.encoder.layers.0.mlp.fc1.weight"


@pytest.fixture()
def tiny():
    clip = tiny_clip()
    return clip, tiny_sd_pipeline(clip)


def test_an_overflowing_edit_is_no_forgetting(tiny):
    clip, pipe = tiny
    evaluator = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, SMALL)
    weight = dict(clip.named_parameters())[FC1]
    with edited(clip, {FC1: torch.full_like(weight, 1e37)}):  # finite delta, NaN encoder output
        with pytest.raises(NonFiniteOutputError):
            evaluator.evaluate_only(clip, ("forget_acc",))
        with pytest.raises(NonFiniteOutputError):
            evaluator(clip)


def test_a_clip_that_is_not_the_encoders_tower_fails_typed_and_leaves_the_pipeline(tiny):
    clip, pipe = tiny
    before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    with pytest.raises(SLUGError, match="text tower"):
        DenoiserEvaluator(pipe, tiny_clip(seed=1), PEOPLE[0], PEOPLE, SMALL)  # same shapes
    config = tiny_clip_config()
    config.text_config.intermediate_size = 48  # same names, another MLP width
    with pytest.raises(SLUGError, match="text tower"):
        DenoiserEvaluator(pipe, CLIPModel(config), PEOPLE[0], PEOPLE, SMALL)(clip)
    assert all(torch.equal(before[k], v) for k, v in pipe.text_encoder.state_dict().items())


def test_clip_skip_is_honoured(tiny):
    clip, pipe = tiny
    config = SLUGConfig(PEOPLE[0], towers=("text",), candidate_labels=PEOPLE)
    skipped = pipeline_evaluator(
        PipelineOptions(clip_skip=1, denoiser=SMALL), pipe, clip, None, config
    )
    plain = pipeline_evaluator(PipelineOptions(denoiser=SMALL), pipe, clip, None, config)
    assert not torch.allclose(skipped._reference, plain._reference)
    assert skipped(clip)["forget_acc"] == 1.0


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("clip_skip", [None, 1, 2])
def test_the_conditioning_is_the_pipelines_own(tiny, clip_skip, masked):
    """Prompts and the empty prompt as the pipeline conditions its UNet: diffusers applies
    clip_skip to the prompt alone, its negative prompt is the encoder's last hidden state."""
    clip, pipe = tiny
    config = SLUGConfig(PEOPLE[0], towers=("text",), candidate_labels=PEOPLE)
    options = PipelineOptions(clip_skip=clip_skip, denoiser=SMALL)
    evaluator = pipeline_evaluator(options, pipe, clip, None, config)
    prompts = ["a photo of Clara Alderwick.", "an image of Ewan Greywell."]
    encoder = pipe.text_encoder
    encoder.config.use_attention_mask = masked  # an encoder that reads its padding mask
    try:
        states, empty = evaluator._conditioning(prompts)
        own, negative = pipeline_conditioning(pipe, prompts, clip_skip)
    finally:
        del encoder.config.use_attention_mask
    torch.testing.assert_close(states, own)
    torch.testing.assert_close(empty.expand_as(negative), negative)


def pipeline_conditioning(pipe, prompts: list[str], clip_skip: int | None):
    """What `pipe.encode_prompt` feeds the UNet (prompts, negative prompts)."""
    encoder = pipe.text_encoder
    # diffusers' clip_skip path reads `text_model.final_layer_norm`, which transformers 5 folds
    # into the model itself: an unregistered alias lets the pipeline's own code run
    object.__setattr__(encoder, "text_model", encoder)
    try:
        return pipe.encode_prompt(prompts, "cpu", 1, True, clip_skip=clip_skip)
    finally:
        del encoder.__dict__["text_model"]


def test_the_unet_is_never_asked_for_more_than_batch_samples(tiny):
    clip, pipe = tiny
    check = replace(SMALL, timesteps=(0.3, 0.7), noises=3)  # 6 (timestep, noise) pairs
    small = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, check, batch=4)
    large = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, check)
    prompts = [f"a photo of {name}." for name in PEOPLE] + ["an image of Clara Alderwick."]
    sizes: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda _, args: sizes.append(len(args[0])))
    try:
        directions = small._directions(prompts)
    finally:
        hook.remove()
    assert sizes and max(sizes) <= 4
    torch.testing.assert_close(directions, large._directions(prompts), atol=1e-5, rtol=0)


def test_a_name_part_every_other_candidate_shares_is_not_asked(tiny):
    clip, pipe = tiny
    labels = ["Clara Alderwick", "Clara Dunmore"]
    evaluator = DenoiserEvaluator(pipe, clip, labels[0], labels, replace(SMALL, name_parts=True))
    weight = dict(clip.named_parameters())[FC1]
    lowest = 1.0
    for seed in range(30):
        delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed)) * 5
        with edited(clip, {FC1: delta}):
            lowest = min(lowest, evaluator.evaluate_only(clip, ("forget_acc",))["forget_acc"])
    assert lowest < 1 / 3  # HEAD: the 'Clara' positions always count (own == rest)


@pytest.mark.parametrize(("in_channels", "extra"), [(9, {}), (7, {"num_class_embeds": 1000})])
def test_unets_needing_more_than_text_are_not_the_denoisers(tiny, in_channels, extra):
    from diffusers import UNet2DConditionModel

    clip, pipe = tiny
    pipe.unet = UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=pipe.text_encoder.config.hidden_size, **extra,
    )  # fmt: skip
    pipe.components["unet"] = pipe.unet
    with pytest.raises(ConfigError, match="criterion="):
        DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, SMALL)
    with pytest.warns(UserWarning):
        assert default_criterion(pipe, 1) == "clip"


def test_config_templates_are_asked_too(tiny):
    clip, pipe = tiny
    config = SLUGConfig(
        PEOPLE[0],
        towers=("text",),
        candidate_labels=PEOPLE,
        templates=("a courtroom sketch of {}.",),
    )
    evaluator = denoiser_evaluator(
        pipe, clip, config, check=DenoiserCheck(timesteps=(0.5,), noises=1)
    )
    assert "a courtroom sketch of {}." in evaluator.phrasings


@pytest.mark.parametrize(
    "labels", [PEOPLE + [""], PEOPLE + ["  "], PEOPLE + [None], "Clara Alderwick"]
)
def test_bad_labels_fail_typed(tiny, labels):
    clip, pipe = tiny
    with pytest.raises(ConfigError):
        DenoiserEvaluator(pipe, clip, PEOPLE[0], labels, replace(SMALL, name_parts=True))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed": "x"},
        {"seed": 1.5},
        {"timesteps": 0.5},
        {"templates": ("a {} in {style}",)},
        {"noises": 10**9},
    ],
)
def test_bad_checks_fail_typed_at_construction(kwargs):
    with pytest.raises(ConfigError):
        DenoiserCheck(**kwargs)


def test_config_misspellings_are_asked_too(tiny):
    clip, pipe = tiny
    config = SLUGConfig(PEOPLE[0], towers=("text",), candidate_labels=PEOPLE, misspellings=1)
    evaluator = denoiser_evaluator(pipe, clip, config, check=SMALL)
    target, other = evaluator.prompts[PEOPLE[0]], evaluator.prompts[PEOPLE[1]]
    assert len(target) == 4 and target[2] != "a photo of Clara Alderwick."  # a misspelt name
    assert other[2] == "a photo of Ronan Kestrelle."  # the others keep their spelling
    with pytest.raises(ConfigError, match="misspellings"):
        DenoiserCheck(misspellings=-1)


def test_the_kinds_default_misspellings_shape_the_direction_but_are_not_asked(tiny):
    clip, pipe = tiny
    config = SLUGConfig(
        PEOPLE[0], towers=("text",), candidate_labels=PEOPLE, concept_kind="identity"
    )
    assert config.criterion_misspellings > 0  # the gradient is averaged over them
    asked = denoiser_evaluator(pipe, clip, config, check=SMALL).prompts[PEOPLE[0]]
    spelt = [PEOPLE[0], *PEOPLE[0].split()]  # the name, its first and its last word
    assert asked == [t.format(n) for n in spelt for t in SMALL.templates]


def test_a_second_concept_reuses_the_unedited_directions_only_on_the_same_weights(
    tiny, monkeypatch
):
    """The reference is remembered per prompt under a digest of the weights: a second concept
    among the same names asks the UNet nothing new; an edited pipeline asks everything again,
    and with the caches turned off nothing is remembered."""
    from hf_slug.cache import DISABLE_VARIABLE
    from hf_slug.hosts.denoiser_memory import forget_all

    clip, pipe = tiny
    monkeypatch.delenv(DISABLE_VARIABLE, raising=False)
    forget_all()
    calls: list[int] = []  # prompts asked of the UNet (a hook on it would turn the memory off)
    original = DenoiserEvaluator._directions

    def counted(evaluator, prompts):
        calls.append(len(prompts))
        return original(evaluator, prompts)

    monkeypatch.setattr(DenoiserEvaluator, "_directions", counted)
    try:
        first = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, SMALL)
        asked = sum(calls)
        second = DenoiserEvaluator(pipe, clip, PEOPLE[1], PEOPLE, SMALL)
        assert sum(calls) == asked  # every prompt remembered
        torch.testing.assert_close(second._reference, first._reference, rtol=0, atol=0)
        delta = torch.randn(dict(clip.named_parameters())[FC1].shape) * 0.5
        own = FC1.replace("text_model.", "")  # the same tensor in the pipeline's encoder
        with edited(clip, {FC1: delta}), edited(pipe.text_encoder, {own: delta}):
            edited_pipe = DenoiserEvaluator(pipe, clip, PEOPLE[1], PEOPLE, SMALL)
        assert sum(calls) == 2 * asked  # a new digest: all asked again
        assert not torch.allclose(edited_pipe._reference, first._reference)
        monkeypatch.setenv(DISABLE_VARIABLE, "1")
        DenoiserEvaluator(pipe, clip, PEOPLE[1], PEOPLE, SMALL)
        assert sum(calls) == 3 * asked
    finally:
        forget_all()
