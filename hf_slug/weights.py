"""The one weight update: add a (weighted) delta to a weight in float32, cast back to its dtype.

Every place that writes `base + w·Δ` into a model (a delta applied, adapters merged, a search
trial) goes through `added`, so all of them round the same way: the sum is taken in float32 on
the weight's device and cast once, at the end, to the weight's dtype.

Example:
    >>> import torch
    >>> base = torch.ones(2, dtype=torch.float16)
    >>> added(base, torch.full((2,), 0.5), weight=-1.0)
    tensor([0.5000, 0.5000], dtype=torch.float16)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

__all__ = ["add_in_place", "added", "edited", "mirrored"]


def added(
    base: torch.Tensor,
    delta: torch.Tensor,
    weight: float = 1.0,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`base.float() + weight * delta` (delta moved to base's device), cast to `dtype`.

    `dtype` defaults to `base.dtype`. A weight of 1 adds `delta` unscaled (the same numbers:
    multiplying by 1 is exact).

    Example:
        >>> import torch
        >>> added(torch.zeros(2, dtype=torch.bfloat16), torch.ones(2), 2.0)
        tensor([2., 2.], dtype=torch.bfloat16)
    """
    moved = delta.to(base.device)
    total = base.float() + (moved if weight == 1 else weight * moved)
    return total.to(base.dtype if dtype is None else dtype)


def add_in_place(param: torch.Tensor, delta: torch.Tensor, weight: float = 1.0) -> None:
    """Set `param` (a weight, even one that requires grad) to `added(param, delta, weight)`.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.zeros(2))
        >>> add_in_place(p, torch.ones(2), 0.5)
        >>> p.data
        tensor([0.5000, 0.5000])
    """
    with torch.no_grad():
        param.copy_(added(param, delta, weight))


@contextlib.contextmanager
def edited(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Add `deltas` to the model's tensors for the duration; restore the exact originals after."""
    params = {name: model.get_parameter(name) for name in deltas}
    originals = {name: params[name].detach().clone() for name in deltas}
    try:
        for name, delta in deltas.items():
            add_in_place(params[name], delta)
        yield
    finally:
        with torch.no_grad():
            for name, original in originals.items():
                params[name].copy_(original)


@contextlib.contextmanager
def mirrored(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Inside the block each `(source, copy)` pair's `copy` holds `source`'s current value (in
    the copy's dtype and device); after it, every changed `copy` is back bit for bit.

    A host's own tower (a pipeline's text encoder, a VLM's vision tower) follows the CLIPModel a
    search edits, so a trial judged through the host sees the trial's weights.

    Example:
        >>> import torch
        >>> source, copy = torch.ones(2), torch.zeros(2, dtype=torch.float16)
        >>> with mirrored([(source, copy)]):
        ...     copy.tolist()
        [1.0, 1.0]
        >>> copy.tolist()
        [0.0, 0.0]
    """
    changed = []
    try:  # a copy that fails half way (another shape) leaves nothing changed behind
        with torch.no_grad():
            for source, copy in pairs:
                value = source.detach().to(device=copy.device, dtype=copy.dtype)
                if not torch.equal(value, copy):
                    changed.append((copy, copy.detach().clone()))
                    copy.copy_(value)
        yield
    finally:
        with torch.no_grad():
            for copy, original in changed:
                copy.copy_(original)
