"""The one `CLIPConfig` builder: a CLIP of given tower sizes, OpenAI's vocabulary and pooling.

The tiny test models (`hf_slug.testing`), the benchmarks' random CLIPs of real sizes
(`benchmarks/models.py`) and the embedded demo model (`scripts/train_embedded.py`) are all built
from `clip_config`: the real 49,408-token BPE vocabulary, 77 positions, EOS pooling (bos 49406,
eos = pad 49407) and OpenAI's `quick_gelu`, with each tower's width, depth and heads given.

Example:
    >>> config = clip_config(
    ...     TowerSize(width=32, layers=2, heads=2),
    ...     TowerSize(width=64, layers=3, heads=4),
    ...     image_size=32,
    ...     patch_size=8,
    ...     projection=16,
    ... )
    >>> config.text_config.hidden_size, config.vision_config.num_hidden_layers
    (32, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import CLIPConfig

CLIP_VOCAB_SIZE = 49408
"""OpenAI CLIP's BPE vocabulary size (the tokenizer in `hf_slug/assets/clip_tokenizer/`)."""
CLIP_CONTEXT = 77
"""Text positions, as in every released CLIP."""
CLIP_BOS, CLIP_EOS = 49406, 49407
"""`<|startoftext|>` and `<|endoftext|>` (also the padding token)."""


@dataclass(frozen=True)
class TowerSize:
    """One CLIP tower's shape: `layers` blocks of `width` dims with `heads` attention heads.

    Example:
        >>> TowerSize(width=768, layers=12, heads=12)  # ViT-B/32's vision tower
        TowerSize(width=768, layers=12, heads=12)
    """

    width: int
    layers: int
    heads: int


def clip_config(
    text: TowerSize,
    vision: TowerSize,
    *,
    image_size: int,
    patch_size: int,
    projection: int,
    mlp_ratio: int = 4,
    tower_projection: bool = False,
) -> CLIPConfig:
    """A `CLIPConfig` with `text` and `vision` towers, OpenAI's vocabulary and EOS pooling.

    Images are `image_size` px in `patch_size` px patches; both towers project to `projection`
    dims, and each block's MLP is `mlp_ratio` × its width (4 in OpenAI's CLIPs). With
    `tower_projection`, each tower's own config carries `projection_dim` too (what
    `CLIPTextModelWithProjection` / `CLIPVisionModelWithProjection` read; the embedded model
    sets it); without, the towers keep transformers' default there.

    Example:
        >>> base = clip_config(
        ...     TowerSize(512, 12, 8), TowerSize(768, 12, 12),
        ...     image_size=224, patch_size=32, projection=512,
        ... )  # ViT-B/32
        >>> base.vision_config.intermediate_size, base.text_config.vocab_size
        (3072, 49408)
    """
    text_config: dict[str, Any] = {
        **_tower(text, mlp_ratio),
        "vocab_size": CLIP_VOCAB_SIZE,
        "max_position_embeddings": CLIP_CONTEXT,
        "bos_token_id": CLIP_BOS,
        "eos_token_id": CLIP_EOS,
        "pad_token_id": CLIP_EOS,
    }
    vision_config: dict[str, Any] = {
        **_tower(vision, mlp_ratio),
        "image_size": image_size,
        "patch_size": patch_size,
    }
    if tower_projection:
        text_config["projection_dim"] = vision_config["projection_dim"] = projection
    return CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=projection
    )


def _tower(size: TowerSize, mlp_ratio: int) -> dict[str, Any]:
    return {
        "hidden_size": size.width,
        "intermediate_size": mlp_ratio * size.width,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "hidden_act": "quick_gelu",
    }


__all__ = ["CLIP_BOS", "CLIP_CONTEXT", "CLIP_EOS", "CLIP_VOCAB_SIZE", "TowerSize", "clip_config"]
