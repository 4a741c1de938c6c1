"""What a Stable Diffusion pipeline's UNet is conditioned on, with the encoder's unedited blocks
run once per prompt list.

`PromptConditioning(pipe)(prompts)` returns each prompt's hidden states and the empty prompt's,
as `pipe.encode_prompt` computes them: textual-inversion tokens converted, padded to the
tokenizer's length, the attention mask when the encoder's config asks for it, the encoder's
last hidden state — or, with `clip_skip`, the hidden state that many blocks before the last
through the final layer norm; the empty prompt (the negative prompt) stays the last hidden state,
as diffusers encodes it.

Between `begin(first_block)` and `end()` — the trials of one step-search unit, which edit only
blocks `first_block…` of the encoder — the hidden states entering that block are recorded on the
first call for each prompt list and replayed on later calls through a view of the encoder
(`hf_slug.evaluation.prefix_cache`): the same output bit for bit, without running the blocks
below the edit again.

Example:
    >>> conditioning = PromptConditioning(pipe)  # doctest: +SKIP
    >>> states, empty = conditioning(["a photo of Clara Alderwick."])  # doctest: +SKIP
    >>> states.shape[0], empty.shape[0]  # doctest: +SKIP
    (1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnknownLayerError
from ..evaluation.prefix_cache import from_block, recording, with_blocks
from ..towers import block_index, tower_kinds, tower_of
from .generation import pipeline_components


class PromptConditioning:
    """The UNet's text conditioning for `pipe` (its `component` encoder, `clip_skip` blocks
    skipped), caching the blocks below an edit between `begin` and `end`."""

    def __init__(self, pipe: Any, component: str = "text_encoder", clip_skip: int | None = None):
        self.pipe, self.clip_skip = pipe, clip_skip
        self.encoder: nn.Module = pipeline_components(pipe)[component]
        self.tower = tower_of(self.encoder, "text")
        blocks = len(self.tower.layers)
        if clip_skip is not None and (
            isinstance(clip_skip, bool)
            or not isinstance(clip_skip, int)
            or not 0 <= clip_skip <= blocks
        ):
            raise ConfigError(
                f"clip_skip={clip_skip!r} must be None or an int from 0 to {blocks} (the blocks of "
                f"the pipeline's {component}): pass e.g. clip_skip=1."
            )
        self._first_block = 0
        self._replay: dict[tuple, Any] = {}  # (upto, token ids) -> hidden states at the edit

    def begin(self, first_block: int) -> None:
        """Trials that edit only blocks `first_block`… follow: cache the blocks below (0: none)."""
        self._first_block = first_block if 0 < first_block < len(self.tower.layers) else 0
        self._replay = {}

    def end(self) -> None:
        """The unit's trials are over: forget what was cached."""
        self._first_block, self._replay = 0, {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(each prompt's hidden states, the empty prompt's), on the encoder's device and dtype."""
        tokenizer = self.pipe.tokenizer
        convert = getattr(self.pipe, "maybe_convert_prompt", None)  # textual inversion tokens
        texts = ["", *(convert(list(prompts), tokenizer) if callable(convert) else prompts)]
        tokens = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        )  # fmt: skip
        device = next(self.encoder.parameters()).device
        ids = tokens.input_ids.to(device)
        masked = getattr(self.encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(device) if masked else None
        blocks = len(self.tower.layers)
        if not self.clip_skip:
            last = self._encode(ids, mask, blocks)
            return last[1:], last[:1]
        # the pipeline's clip_skip: the prompts' hidden state `clip_skip` blocks before the last,
        # through the final layer norm (a view that stops there: the model applies the norm to
        # its encoder's output); the empty prompt's last hidden state, as diffusers encodes it
        states = self._encode(ids[1:], None if mask is None else mask[1:], blocks - self.clip_skip)
        empty = self.encoder(ids[:1], attention_mask=None if mask is None else mask[:1])[0]
        return states, empty

    def _encode(self, ids: torch.Tensor, mask: torch.Tensor | None, upto: int) -> torch.Tensor:
        """The encoder's output (its final layer norm applied) after blocks `0…upto-1`, the
        blocks below the edit replayed once recorded for these token ids."""
        first, blocks = self._first_block, list(self.tower.layers)
        if not first or first >= upto:  # nothing cached, or the edit is above what is read
            runner = self.encoder
            if upto < len(blocks):
                runner = with_blocks(self.encoder, self.tower, blocks[:upto])
            return runner(ids, attention_mask=mask)[0]
        key = (upto, tuple(ids.shape), tuple(ids.flatten().tolist()))
        cached = self._replay.get(key)
        if cached is not None:
            view = from_block(self.encoder, self.tower, first, cached, upto=upto)
            return view(ids, attention_mask=mask)[0]
        recorded: list[Any] = []
        view = recording(self.encoder, self.tower, first, recorded, upto=upto)
        output = view(ids, attention_mask=mask)[0]
        self._replay[key] = recorded[0]
        return output


def first_text_block(clip_model: nn.Module, names: Sequence[str]) -> int:
    """The lowest text-tower block the CLIPModel tensors `names` are in; 0 when one of them is in
    no text block (then nothing below the edit can be cached)."""
    try:
        kinds = tower_kinds(clip_model, names)
    except UnknownLayerError:
        return 0
    blocks = [block_index(name) for name in names]
    if any(b is None or kinds[n] != "text" for n, b in zip(names, blocks)):
        return 0
    return min((b[0] for b in blocks if b is not None), default=0)


__all__ = ["PromptConditioning", "first_text_block"]
