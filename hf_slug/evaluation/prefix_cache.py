"""The cache of the blocks below an edit, run through views of the model that never patch it.

A trial of the step search edits only blocks `first_block…` of one tower, so the hidden states
entering block `first_block` are the same in every trial of a unit: they are recorded once per
batch (`recording`) and each later trial runs only the blocks from the edit up, fed from the
cache (`from_block`). Both run the model's own forward through a *view*: a shallow copy of each
module on the path down to the tower's encoder, whose `layers` list is a new `ModuleList` of the
model's blocks (the ones above the edit behind a `_Replay`, or all of them with a `_Record`
around the block below the edit). A view shares every parameter, buffer, hook and config with
the model, so its features are the model's, bit for bit, under the current weights; the model
itself is never assigned to, so an exception or a concurrent reader never sees it changed.

Example:
    >>> from hf_slug.towers import encode_images, tower_of
    >>> tower = tower_of(model, "vision")  # doctest: +SKIP
    >>> hidden = []
    >>> _ = encode_images(recording(model, tower, 1, hidden), pixels)  # doctest: +SKIP
    >>> torch.equal(encode_images(from_block(model, tower, 1, hidden[0]), pixels),
    ...             encode_images(model, pixels))  # doctest: +SKIP
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..towers import Tower


@dataclass
class _Inputs:
    """One modality's batches and, in a search, its features (the other tower is edited) or each
    batch's hidden states entering the edited block (`replay`)."""

    kind: str
    batches: list[dict[str, torch.Tensor]]
    base: torch.Tensor | None = None
    replay: list[Any] = field(default_factory=list)


class _Replay(nn.Module):
    """Stands in for the blocks below an edit: returns their cached output, whatever its input."""

    def __init__(self, output: Any):
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


class _Record(nn.Module):
    """Runs `block` and keeps each of its outputs (detached) in `into`."""

    def __init__(self, block: nn.Module, into: list[Any]):
        super().__init__()
        self.block = block
        self.into = into

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        output = self.block(*args, **kwargs)
        self.into.append(output.detach() if torch.is_tensor(output) else output)
        return output


def from_block(
    model: nn.Module, tower: Tower, first_block: int, hidden: Any, *, upto: int | None = None
) -> nn.Module:
    """A view of `model` whose `tower` starts at block `first_block` from `hidden` (the cached
    output of the block below, as `recording` kept it) and ends below block `upto` (None: at
    the last); `model` itself is left as it is.

    Example:
        >>> features = encode_images(from_block(model, tower, 2, hidden), pixels)  # doctest: +SKIP
    """
    blocks = list(tower.layers)
    return with_blocks(model, tower, [_Replay(hidden), *blocks[first_block:upto]])


def recording(
    model: nn.Module,
    tower: Tower,
    first_block: int,
    into: list[Any],
    *,
    below: bool = False,
    upto: int | None = None,
) -> nn.Module:
    """A view of `model` whose `tower` appends to `into` the output of block `first_block - 1`
    on each forward (`below`: and runs no block above it, so the features it returns are not the
    model's) and ends below block `upto` (None: at the last). `first_block` must be at least 1;
    `model` itself is left as it is.

    Example:
        >>> hidden = []
        >>> _ = encode_images(recording(model, tower, 2, hidden), pixels)  # doctest: +SKIP
    """
    blocks = list(tower.layers)
    above = [] if below else blocks[first_block:upto]
    return with_blocks(
        model, tower, [*blocks[: first_block - 1], _Record(blocks[first_block - 1], into), *above]
    )


def with_blocks(model: nn.Module, tower: Tower, blocks: Sequence[nn.Module]) -> nn.Module:
    """A view of `model` in which `tower`'s encoder runs `blocks` instead of its own layers.

    Every module on the path from `model` to the encoder is a shallow copy with its own
    `_modules`; all else (parameters, buffers, hooks, configs, the blocks) is the model's.

    Example:
        >>> import torch
        >>> from transformers import CLIPTextConfig, CLIPTextModel
        >>> from hf_slug.towers import tower_of
        >>> text = CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=8,
        ...     num_hidden_layers=2, num_attention_heads=2))
        >>> view = with_blocks(text, tower_of(text, "text"), [])
        >>> len(view.encoder.layers), len(text.encoder.layers)
        (0, 2)
    """
    layers = nn.ModuleList(blocks)
    layers.training = tower.layers.training  # (not .train(): that would set the model's blocks)
    path = [p for p in tower.path.split(".") if p] + ["encoder", "layers"]
    return _replaced(model, path, layers)


def _replaced(module: nn.Module, path: Sequence[str], new: nn.Module) -> nn.Module:
    """A shallow copy of `module` with its submodule at `path` replaced by `new`."""
    if not path:
        return new
    view = copy.copy(module)
    view.__dict__["_modules"] = {
        **module._modules,
        path[0]: _replaced(module._modules[path[0]], path[1:], new),
    }
    return view


def _rows(inputs: _Inputs, first_block: int) -> list[dict[str, torch.Tensor]] | None:
    """`inputs` row by row, each with its replayed hidden states (text: trimmed to its tokens);
    None when they cannot be replayed row by row."""
    replay = inputs.replay if first_block > 0 else [None] * len(inputs.batches)
    tensors = all(r is None or torch.is_tensor(r) for r in replay)
    if len(replay) != len(inputs.batches) or not tensors:
        return None
    rows = []
    for batch, hidden in zip(inputs.batches, replay):
        batch = {**batch, **({} if hidden is None else {"hidden": hidden})}
        if inputs.kind == "text" and "attention_mask" not in batch:
            return None
        for k in range(len(next(iter(batch.values())))):
            n = int(batch["attention_mask"][k].sum()) if inputs.kind == "text" else None
            rows.append({key: value[k, :n] if n else value[k] for key, value in batch.items()})
    return rows


def _weights_key(model: nn.Module, tower: Tower | None) -> Any:
    """Which tensors, at which version, `tower`'s features come from (None: unknown)."""
    head = getattr(
        model, f"{'visual' if tower and tower.kind == 'vision' else 'text'}_projection", 0
    )
    try:  # (inference tensors keep no version)
        params = [*tower.module.parameters(), *head.parameters()]
        return tuple((id(p), p.data_ptr(), p.dtype, p._version) for p in params)
    except (AttributeError, RuntimeError):
        return None
