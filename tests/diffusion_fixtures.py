"""Tiny Stable Diffusion (1.x/2.x-shaped) and SDXL-shaped pipelines built from configs.

The builders live in `hf_slug.testing`; this module re-exports them for the diffusion tests.
Every text encoder is a real `CLIPTextModel` / `CLIPTextModelWithProjection` holding exactly the
text tower of a tiny `CLIPModel`, so SLUG's gradients (taken on the CLIPModel) belong to it.
"""

from __future__ import annotations

from hf_slug.testing import (
    SDXL_ADD_TIME_DIM,
    clip_tokenizer,
    text_encoder_from,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

ADD_TIME_DIM = SDXL_ADD_TIME_DIM
tokenizer = clip_tokenizer

__all__ = [
    "ADD_TIME_DIM",
    "text_encoder_from",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
    "tokenizer",
]
