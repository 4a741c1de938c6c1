"""Models the benchmarks run on: the embedded CLIP, and random-weight CLIPs of real sizes.

Random weights are fine for cost (time and memory do not depend on the values). The sizes follow
the OpenAI / OpenCLIP configurations: ViT-B/32 (CLIP's base model), ViT-L/14 (Stable Diffusion
1.x's text encoder, LLaVA-1.5's vision tower at 336 px) and ViT-H/14 (Stable Diffusion 2.x).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hf_slug.clip_sizes import TowerSize
from hf_slug.clip_sizes import clip_config as build_clip_config
from hf_slug.testing import tiny_clip_processor  # the real CLIP BPE tokenizer, package data


@dataclass(frozen=True)
class Size:
    """One CLIP size: tower widths, depths, heads, image size, patch and projection."""

    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    image_size: int
    patch: int
    projection: int


SIZES: dict[str, Size] = {
    "smoke": Size(32, 2, 2, 32, 2, 2, 32, 8, 16),
    "small": Size(256, 6, 4, 256, 6, 4, 96, 16, 256),
    "medium": Size(512, 8, 8, 384, 8, 6, 160, 32, 384),
    "ViT-B/32": Size(768, 12, 12, 512, 12, 8, 224, 32, 512),
    "ViT-L/14": Size(1024, 24, 16, 768, 12, 12, 224, 14, 768),
    "ViT-L/14-336": Size(1024, 24, 16, 768, 12, 12, 336, 14, 768),
    "ViT-H/14": Size(1280, 32, 16, 1024, 24, 16, 224, 14, 1024),
}


def clip_config(name: str) -> Any:
    """The transformers CLIPConfig of a named size (no dropout, the real vocabulary)."""
    s = SIZES[name]
    return build_clip_config(
        TowerSize(s.text_width, s.text_layers, s.text_heads),
        TowerSize(s.vision_width, s.vision_layers, s.vision_heads),
        image_size=s.image_size,
        patch_size=s.patch,
        projection=s.projection,
    )


def random_clip(name: str, seed: int = 0) -> Any:
    """A CLIPModel of a named size with random weights, fp32, eval mode."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(clip_config(name)).eval()


def processor_for(image_size: int) -> Any:
    """A CLIPProcessor with the real CLIP tokenizer and `image_size` crops."""
    return tiny_clip_processor(image_size)


def load_model(path_or_size: str) -> tuple[Any, Any]:
    """A saved CLIPModel folder (e.g. the embedded model), or `random:<size>`; with processor."""
    if path_or_size.startswith("random:"):
        name = path_or_size.removeprefix("random:")
        return random_clip(name), processor_for(SIZES[name].image_size)
    from hf_slug.demo.run import load_embedded

    return load_embedded(path_or_size)


def save_smoke_model(directory: str | Path) -> Path:
    """Save a tiny random CLIP with its processor (the `--smoke` runs' model)."""
    directory = Path(directory)
    if not (directory / "model.safetensors").exists():
        model = random_clip("smoke")
        model.save_pretrained(directory)
        processor_for(SIZES["smoke"].image_size).save_pretrained(directory)
    return directory


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
