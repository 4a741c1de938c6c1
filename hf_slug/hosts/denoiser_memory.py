"""Remember the denoiser criterion's unedited guidance directions for the next concept.

Building the reference — every candidate name under every phrasing, asked of the unedited
pipeline — is a third of a denoiser search on the embedded pipeline. A second concept among the
same candidates, on the same unchanged pipeline, asks the same prompts. `remembered` keeps each
prompt's direction in memory under a key holding a SHA-256 digest of the text encoder's and the
UNet's weights and every setting the directions depend on, so a direction is reused only for
the very same weights (an applied adapter, a merged delta or a stack on top changes the digest).
One pipeline state is kept at a time, up to `MAX_BYTES`. Nothing is remembered for models whose
output does not follow from their stored tensors alone — forward hooks (hf_slug's unmerged
adapters), PEFT adapter layers (their scale and on/off state are not weights), attention
processors other than diffusers' own, tensors on the meta device — nor for models above
`MAX_DIGEST_BYTES` (hashing them would cost seconds). `HF_SLUG_DISABLE_GRADIENT_CACHE=1`, which
turns hf_slug's caches off, turns this off too.

Example:
    >>> from torch import nn
    >>> len(weights_digest(nn.Linear(2, 2)))
    64
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import nn

from ..cache import gradient_cache_enabled

MAX_BYTES = 256 * 2**20  # directions kept for one pipeline state, at most (then started anew)
MAX_DIGEST_BYTES = 512 * 2**20  # weights hashed for a key, at most (~1.5 s on one CPU core)
STOCK_PROCESSORS = "diffusers.models.attention_processor"

_memory: dict[Hashable, dict[str, torch.Tensor]] = {}


def weights_digest(*modules: nn.Module) -> str:
    """SHA-256 over every parameter and buffer of `modules`: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            flat = tensor.detach().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def weights_key(*modules: nn.Module) -> str | None:
    """`weights_digest(*modules)`, or None when their output may change without their stored
    tensors changing (hooks, PEFT layers, custom attention processors, meta tensors) or when
    they are too large to hash cheaply."""
    if torch.nn.modules.module._global_forward_hooks or (
        torch.nn.modules.module._global_forward_pre_hooks
    ):
        return None
    size = 0
    for module in modules:
        for part in module.modules():
            if part._forward_hooks or part._forward_pre_hooks:
                return None
            if type(part).__module__.startswith("peft."):
                return None
        processors = getattr(module, "attn_processors", None)
        if isinstance(processors, dict) and any(
            not type(p).__module__.startswith(STOCK_PROCESSORS) for p in processors.values()
        ):
            return None
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_meta:
                return None
            size += _bytes(tensor)
    return weights_digest(*modules) if size <= MAX_DIGEST_BYTES else None


def remembered(
    key: Hashable | None, prompts: Sequence[str], compute: Callable[[list[str]], torch.Tensor]
) -> torch.Tensor:
    """Each prompt's row, `compute(missing)` asked only for prompts not remembered under `key`
    (None, or the memory turned off: every prompt computed, nothing kept)."""
    if key is None or not gradient_cache_enabled():
        return compute(list(prompts))
    if key not in _memory:
        _memory.clear()  # one pipeline state at a time
    memory = _memory.setdefault(key, {})
    missing = list(dict.fromkeys(p for p in prompts if p not in memory))
    found = {p: memory[p] for p in prompts if p in memory}
    if missing:
        found.update(zip(missing, compute(missing)))
        if sum(_bytes(t) for t in (*memory.values(), *found.values())) > MAX_BYTES:
            memory.clear()
        memory.update((p, found[p]) for p in missing)
    return torch.stack([found[p] for p in prompts])


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def forget_all() -> None:
    """Drop every remembered direction."""
    _memory.clear()


__all__ = [
    "MAX_BYTES",
    "MAX_DIGEST_BYTES",
    "forget_all",
    "remembered",
    "weights_digest",
    "weights_key",
]
