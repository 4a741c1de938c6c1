"""The UNet's text conditioning with the encoder's unedited blocks cached (`PromptConditioning`):
the same tensors as the uncached encoder under an edit, the blocks below run once per prompt
list, and the denoiser criterion's kept-step metrics computed apart equal to the full call."""

from __future__ import annotations

import pytest
import torch

from hf_slug import ConfigError
from hf_slug.hosts.denoiser_criterion import DenoiserCheck, DenoiserEvaluator
from hf_slug.hosts.diffusion_criterion import shared_text_tensors
from hf_slug.hosts.prompt_conditioning import PromptConditioning, first_text_block
from hf_slug.testing import tiny_clip, tiny_sd_pipeline
from hf_slug.towers import tower_of
from hf_slug.weights import edited, mirrored

pytest.importorskip("diffusers")
PEOPLE = ["Clara Alderwick", "Ronan Kestrelle", "Lucia Dunmore", "Caleb Ostrander"]
PROMPTS = ["a photo of Clara Alderwick.", "an image of Ronan Kestrelle.", "Lucia."]


def block_weight(block: int) -> str:
    return f"text_model.encoder.layers.{block}.mlp.fc1.weight"


@pytest.fixture()
def tiny():
    clip = tiny_clip(layers=3)
    return clip, tiny_sd_pipeline(clip)


def calls_per_block(encoder) -> tuple[list[int], list]:
    """How often each encoder block runs (counted by hooks, returned to be removed)."""
    layers = tower_of(encoder, "text").layers
    counts = [0] * len(layers)
    hooks = [
        layer.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        for i, layer in enumerate(layers)
    ]
    return counts, hooks


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("clip_skip", [None, 1])
@pytest.mark.parametrize("block", [1, 2])
def test_cached_conditioning_is_the_encoders_own_under_an_edit(tiny, block, clip_skip, masked):
    clip, pipe = tiny
    pipe.text_encoder.config.use_attention_mask = masked
    cached = PromptConditioning(pipe, clip_skip=clip_skip)
    plain = PromptConditioning(pipe, clip_skip=clip_skip)
    name = block_weight(block)
    weight = dict(clip.named_parameters())[name]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    pairs = shared_text_tensors(tower_of(clip, "text").module, pipe.text_encoder, "text_encoder")
    try:
        cached.begin(first_text_block(clip, [name]))
        for scale in (1.0, 3.0):  # the first call records, the second replays
            with edited(clip, {name: delta * scale}), mirrored(pairs):
                got, want = cached(PROMPTS), plain(PROMPTS)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    finally:
        del pipe.text_encoder.config.use_attention_mask


def test_blocks_below_the_edit_run_once_per_prompt_list(tiny):
    clip, pipe = tiny
    conditioning = PromptConditioning(pipe)
    counts, hooks = calls_per_block(pipe.text_encoder)
    try:
        conditioning.begin(2)
        for _ in range(3):
            conditioning(PROMPTS)
        conditioning(PROMPTS[:1])  # another list records anew
        assert counts == [2, 2, 4]
        conditioning.end()
        conditioning(PROMPTS)
        assert counts == [3, 3, 5]
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize(
    ("names", "block"),
    [
        ([block_weight(2), block_weight(1)], 1),
        ([block_weight(2)], 2),
        (["text_model.embeddings.token_embedding.weight"], 0),
        (["text_projection.weight"], 0),
        ([block_weight(2), "vision_model.encoder.layers.1.mlp.fc1.weight"], 0),
        (["no.such.weight"], 0),
    ],
)
def test_first_text_block(tiny, names, block):
    clip, _ = tiny
    assert first_text_block(clip, names) == block


@pytest.mark.parametrize("skip", [2, 3])
def test_clip_skip_reading_below_the_edit_caches_nothing(tiny, skip):
    """With clip_skip the prompts' conditioning comes from a block below the last; when that
    block is below the edit, there is nothing to replay (and no edit to see): the encoder runs
    as without a cache, and gives the same tensors."""
    clip, pipe = tiny
    runs = []
    for first_block in (2, 0):
        conditioning = PromptConditioning(pipe, clip_skip=skip)
        conditioning.begin(first_block)
        counts, hooks = calls_per_block(pipe.text_encoder)
        try:
            runs.append(([conditioning(PROMPTS) for _ in range(2)], counts))
        finally:
            for hook in hooks:
                hook.remove()
    (cached, cached_counts), (plain, plain_counts) = runs
    assert cached_counts == plain_counts
    for got, want in zip(cached, plain):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_kept_steps_remaining_metrics_equal_the_full_call(tiny):
    clip, pipe = tiny
    check = DenoiserCheck(templates=("a photo of {}.", "an image of {}."))
    evaluator = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, check)
    name = block_weight(1)
    weight = dict(clip.named_parameters())[name]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) * 2
    evaluator.begin(clip, [name])
    try:
        with edited(clip, {name: delta}):
            forget, exact = evaluator.evaluate_forget(clip, "forget_acc", 1.0)
            rest = evaluator.evaluate_only(clip, {"others_acc", "utility"})
            full = evaluator(clip)
    finally:
        evaluator.end()
    assert exact and set(rest) == {"others_acc", "utility"}
    assert {**forget, **rest} == full


def test_the_spelling_that_last_failed_a_trial_is_asked_first(tiny, monkeypatch):
    """The target's first and last name alone are groups of prompts of their own; a trial that
    the last name failed asks the last name first next time, and stops there (same decision)."""
    clip, pipe = tiny
    check = DenoiserCheck(templates=("a photo of {}.", "an image of {}."), name_parts=True)
    evaluator = DenoiserEvaluator(pipe, clip, PEOPLE[0], PEOPLE, check)
    asked: list[int] = []

    def named(positions: slice) -> torch.Tensor:  # only the last name is still the target
        asked.append(positions.start)
        return torch.tensor([positions.start == 4, False])

    monkeypatch.setattr(evaluator, "_named", named)
    first = evaluator.evaluate_forget(clip, "forget_acc", 0.0)
    assert asked == [0, 2, 4] and first == ({"forget_acc": 1 / 6}, True)
    asked.clear()
    second = evaluator.evaluate_forget(clip, "forget_acc", 0.0)
    assert asked == [4] and second == ({"forget_acc": 1 / 6}, False)


@pytest.mark.parametrize("clip_skip", [-1, 4, 1.5, True, "1"])
def test_a_clip_skip_the_encoder_cannot_honour_is_a_typed_error(tiny, clip_skip):
    """A negative skip, more blocks than the encoder has, or a non-integer: a ConfigError that
    names the range, never conditioning silently taken from another block."""
    _, pipe = tiny
    with pytest.raises(ConfigError, match="clip_skip"):
        PromptConditioning(pipe, clip_skip=clip_skip)
    with pytest.raises(ConfigError, match="clip_skip"):
        DenoiserEvaluator(pipe, tiny[0], PEOPLE[0], PEOPLE, DenoiserCheck(), clip_skip=clip_skip)
