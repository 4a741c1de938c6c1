"""The one weight update (hf_slug.weights) and the adapters' mechanics (hf_slug.adapter_weights)."""

from __future__ import annotations

import pytest
import torch

from hf_slug.adapter_weights import DeltaHooks, module_tree, owner, write_weights
from hf_slug.weights import add_in_place, added

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
WEIGHTS = [1.0, -1.0, 0.5]


def tensors(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(16, 8, generator=g) * 3).to(dtype)
    return base, torch.randn(16, 8, generator=g) * 1e-2


@pytest.mark.parametrize("weight", WEIGHTS, ids=[f"w={w:g}" for w in WEIGHTS])
@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_added_is_fp32_add_then_cast(dtype: torch.dtype, weight: float) -> None:
    base, delta = tensors(dtype)
    want = (base.float() + weight * delta).to(dtype)
    got = added(base, delta, weight)
    assert got.dtype == dtype and torch.equal(got, want)
    kept = base.clone()
    add_in_place(base, delta, weight)
    assert torch.equal(base, want) and not torch.equal(kept, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])
def test_added_casts_to_a_given_dtype(dtype: torch.dtype) -> None:
    base, delta = tensors(torch.float32)
    assert torch.equal(added(base, delta, dtype=dtype), (base + delta).to(dtype))


def test_add_in_place_on_a_parameter_that_requires_grad() -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    add_in_place(param, torch.ones(3), -2.0)
    assert param.requires_grad and torch.equal(param.detach(), torch.full((3,), -2.0))


def test_hooks_act_as_the_written_weights() -> None:
    torch.manual_seed(0)
    root = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x = torch.randn(5, 4)
    base = {"0.weight": root[0].weight.detach().clone()}
    total = {"0.weight": torch.randn(3, 4) * 0.1}
    plain = root(x)
    hooks = DeltaHooks()
    hooks.install(root, total)
    hooked = root(x)
    assert len(hooks) == 1 and not torch.allclose(hooked, plain)
    hooks.remove()
    assert not hooks and torch.equal(root(x), plain)
    write_weights(root, base, total)
    assert torch.allclose(root(x), hooked, atol=1e-6)
    write_weights(root, base, {})
    assert torch.equal(root[0].weight, base["0.weight"]) and torch.equal(root(x), plain)
    assert owner(root, "2.bias") is root[2] and module_tree(root) is root


def test_module_tree_refuses_what_is_no_model() -> None:
    with pytest.raises(TypeError, match="torch model or a diffusers pipeline"):
        module_tree(object())
