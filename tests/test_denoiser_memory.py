"""The denoiser criterion's memory of unedited directions: per key, per prompt, bounded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_slug.cache import DISABLE_VARIABLE
from hf_slug.hosts import denoiser_memory
from hf_slug.hosts.denoiser_memory import remembered, weights_digest


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
