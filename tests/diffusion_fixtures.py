"""Tiny Stable Diffusion (1.x/2.x-shaped) and SDXL-shaped pipelines built from configs.

Every text encoder is a real `CLIPTextModel` / `CLIPTextModelWithProjection` holding exactly the
text tower of a tiny `CLIPModel`, so SLUG's gradients (taken on the CLIPModel) belong to it.
"""

from __future__ import annotations

import torch
from conftest import TOKENIZER_DIR
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from hf_slug.families.clip import tower_of

ADD_TIME_DIM = 4  # SDXL: 6 micro-conditioning numbers, each embedded in this many dims


def tokenizer(pad: str = "<|endoftext|>") -> CLIPTokenizer:
    """The real CLIP BPE tokenizer (shipped with hf_slug), 77 tokens like the Hub's."""
    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        pad_token=pad,
        model_max_length=77,
    )


def text_encoder_from(
    clip: CLIPModel, *, projection: bool = False, layers: int | None = None
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A pipeline text encoder holding `clip`'s text tower (optionally only its first `layers`
    blocks, as SD 2.x keeps 23 of OpenCLIP ViT-H's 24)."""
    config = clip.config.text_config
    if layers is not None:
        config = type(config).from_dict({**config.to_dict(), "num_hidden_layers": layers})
    if projection:
        config = type(config).from_dict(
            {**config.to_dict(), "projection_dim": clip.config.projection_dim}
        )
        encoder = CLIPTextModelWithProjection(config)
    else:
        encoder = CLIPTextModel(config)
    source = tower_of(clip, "text").module.state_dict()
    target = tower_of(encoder, "text").module
    keep = {k: v for k, v in source.items() if k in target.state_dict()}
    target.load_state_dict(keep)
    if projection:
        encoder.text_projection.load_state_dict(clip.text_projection.state_dict())
    return encoder.eval()


def _vae(seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    ).eval()


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_pipeline(clip: CLIPModel, *, layers: int | None = None, seed: int = 0):
    """A `StableDiffusionPipeline` (16 × 16 px) whose text encoder is `clip`'s text tower."""
    encoder = text_encoder_from(clip, layers=layers)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=encoder.config.hidden_size,
        attention_head_dim=4,
    ).eval()
    pipe = StableDiffusionPipeline(
        vae=_vae(seed + 1),
        text_encoder=encoder,
        tokenizer=tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(clip_l: CLIPModel, clip_g: CLIPModel, *, seed: int = 0):
    """A `StableDiffusionXLPipeline`: `text_encoder` = clip_l's text tower (CLIPTextModel),
    `text_encoder_2` = clip_g's text tower with its projection (CLIPTextModelWithProjection)."""
    encoder = text_encoder_from(clip_l)
    encoder_2 = text_encoder_from(clip_g, projection=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=encoder.config.hidden_size + encoder_2.config.hidden_size,
        attention_head_dim=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADD_TIME_DIM,
        projection_class_embeddings_input_dim=6 * ADD_TIME_DIM + encoder_2.config.projection_dim,
    ).eval()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(seed + 1),
        text_encoder=encoder,
        text_encoder_2=encoder_2,
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(pad="!"),
        unet=unet,
        scheduler=_scheduler(),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
