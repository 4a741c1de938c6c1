"""The denoiser criterion's memory of unedited directions: per key, per prompt, bounded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_slug.cache import DISABLE_VARIABLE
from hf_slug.hosts import denoiser_memory
from hf_slug.hosts.denoiser_memory import remembered, weights_digest, weights_key


class Counting:
    """`compute` for `remembered`: one row per prompt (its length), counting what is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        self.asked += prompts
        return torch.tensor([[float(len(p))] for p in prompts])


def test_only_prompts_not_remembered_under_the_key_are_computed() -> None:
    compute = Counting()
    assert remembered("a", ["x", "yy"], compute).flatten().tolist() == [1.0, 2.0]
    assert remembered("a", ["yy", "zzz", "yy"], compute).flatten().tolist() == [2.0, 3.0, 2.0]
    assert compute.asked == ["x", "yy", "zzz"]
    remembered("b", ["x"], compute)  # another pipeline state: asked again, "a" dropped
    remembered("a", ["x"], compute)
    assert compute.asked == ["x", "yy", "zzz", "x", "x"]


@pytest.mark.parametrize("setting", ["key", "variable"])
def test_nothing_is_remembered_without_a_key_or_with_the_caches_off(setting, monkeypatch):
    compute = Counting()
    key = None if setting == "key" else "a"
    if setting == "variable":
        monkeypatch.setenv(DISABLE_VARIABLE, "1")
    remembered(key, ["x"], compute)
    remembered(key, ["x"], compute)
    assert compute.asked == ["x", "x"]


def test_the_memory_starts_anew_past_its_size(monkeypatch) -> None:
    monkeypatch.setattr(denoiser_memory, "MAX_BYTES", 8)  # two float32 rows
    compute = Counting()
    remembered("a", ["x", "yy"], compute)
    remembered("a", ["zzz"], compute)  # over the bound: cleared, "zzz" kept
    remembered("a", ["x", "zzz"], compute)
    assert compute.asked == ["x", "yy", "zzz", "x"]


def test_the_digest_sees_any_change_of_a_weight() -> None:
    layer = nn.Linear(3, 2)
    before = weights_digest(layer)
    assert weights_digest(layer) == before
    with torch.no_grad():
        layer.weight[1, 2] += 1e-6
    assert weights_digest(layer) != before


@pytest.fixture
def unet() -> nn.Module:
    pytest.importorskip("diffusers")
    from hf_slug.testing import tiny_clip, tiny_sd_pipeline

    return tiny_sd_pipeline(tiny_clip()).unet


class Processor:
    """An attention processor of the user's own (attention control, token merging, ...)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        from diffusers.models.attention_processor import AttnProcessor

        return AttnProcessor()(attn, hidden_states, encoder_hidden_states, **kwargs)


def with_lora(model: nn.Module) -> None:
    """A PEFT LoRA adapter: `set_adapters` scales and on/off change no stored tensor."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, target_modules=["to_k"], init_lora_weights=False)
    model.add_adapter(config, adapter_name="a")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.register_forward_hook(lambda *a: None), id="forward-hook"),
        pytest.param(lambda m: m.conv_in.register_forward_pre_hook(lambda *a: None), id="pre-hook"),
        pytest.param(with_lora, id="peft-lora"),
        pytest.param(lambda m: m.set_attn_processor(Processor()), id="attention-processor"),
        pytest.param(lambda m: m.to_empty(device="meta"), id="meta-tensors"),
    ],
)
def test_no_key_for_a_model_whose_output_is_not_its_stored_tensors(unet, change) -> None:
    assert weights_key(unet) is not None  # diffusers' own processors, no hooks
    change(unet)
    assert weights_key(unet) is None


def test_no_key_for_a_model_too_large_to_hash_cheaply(monkeypatch) -> None:
    layer = nn.Linear(4, 4)  # 80 bytes
    assert weights_key(layer) == weights_digest(layer)
    monkeypatch.setattr(denoiser_memory, "MAX_DIGEST_BYTES", 64)
    assert weights_key(layer) is None
