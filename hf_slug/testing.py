"""Tiny real models for tests, notebooks and examples, built from configs (no download).

Every builder returns a genuine transformers / diffusers object (`CLIPModel`,
`StableDiffusionPipeline`, `StableDiffusionXLPipeline`, `LlavaForConditionalGeneration`, their
processors) with random weights and about 1.6 M parameters (most of them CLIP's 49,408-token
embedding), so the whole SLUG workflow runs offline on a CPU in seconds. The CLIP tokenizer is the real one (OpenAI's
BPE vocabulary, shipped with hf_slug), so captions tokenize as on the Hub.

The pipeline and VLM builders put an existing CLIP's tower inside: a pipeline's text encoder holds
exactly the text tower of the `CLIPModel` you pass (as SD's text encoder is OpenAI's / LAION's
CLIP text tower), and a LLaVA's vision tower holds exactly its vision tower, so SLUG's gradients,
taken on the `CLIPModel`, belong to them. Pass a trained CLIP (e.g. the embedded demo model,
`hf_slug.demo.run.load_embedded()`) to get meaningful text / vision features around a random
UNet or language model.

diffusers is imported only inside the Stable Diffusion builders: `import hf_slug.testing` works
without it.

Example:
    >>> from hf_slug.testing import random_images, tiny_clip, tiny_clip_processor
    >>> clip, processor = tiny_clip(seed=0), tiny_clip_processor()
    >>> inputs = processor(text=["a photo of a cat"], images=random_images(1), return_tensors="pt")
    >>> clip(**inputs).logits_per_image.shape
    torch.Size([1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
)

from .clip_sizes import CLIP_VOCAB_SIZE, TowerSize, clip_config
from .towers import tower_of

if TYPE_CHECKING:  # diffusers is optional: imported lazily by the builders below
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "clip_tokenizer"  # package data
"""Folder holding the real CLIP BPE tokenizer files (`vocab.json`, `merges.txt`)."""

IMAGE_SIZE = 32
"""Side in pixels of the tiny CLIP's input images (and of `random_images`)."""

SDXL_ADD_TIME_DIM = 4  # SDXL: 6 micro-conditioning numbers, each embedded in this many dims

LLAVA_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
LLAVA_WORDS: tuple[str, ...] = (
    *LLAVA_SPECIAL_TOKENS,
    "user", "assistant", ":", "who", "is", "in", "this", "image", "?",
)  # fmt: skip
"""The tiny LLaVA's default word-level vocabulary: special tokens, then the words of the
default prompt "USER: <image>\\nWho is in this image? ASSISTANT:" (lower-cased)."""


# -- CLIP ------------------------------------------------------------------------------------------
def tiny_clip_config(
    width: int = 32,
    layers: int = 2,
    projection: int = 16,
    *,
    image_size: int = IMAGE_SIZE,
    patch_size: int = 8,
    heads: int = 2,
) -> CLIPConfig:
    """A tiny `CLIPConfig` with the real vocabulary size, 77 positions and EOS pooling.

    Both towers have `layers` blocks of `width` dims (MLP 2 × `width`); images are `image_size`
    px in `patch_size` px patches. Built by `hf_slug.clip_sizes.clip_config`.

    Example:
        >>> tiny_clip_config(width=64, layers=3).vision_config.num_hidden_layers
        3
    """
    tower = TowerSize(width=width, layers=layers, heads=heads)
    return clip_config(
        tower,
        tower,
        image_size=image_size,
        patch_size=patch_size,
        projection=projection,
        mlp_ratio=2,
    )


def tiny_clip(seed: int = 0, **config_kwargs: Any) -> CLIPModel:
    """A randomly initialised tiny `CLIPModel` (eval mode); `config_kwargs` go to
    `tiny_clip_config`. The same seed and settings give the same weights.

    Example:
        >>> clip = tiny_clip(seed=0, layers=3)
        >>> len(clip.vision_model.encoder.layers), clip.config.projection_dim
        (3, 16)
    """
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config(**config_kwargs)).eval()


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """OpenAI's CLIP BPE tokenizer (shipped with hf_slug), 77 tokens long like the Hub's.

    It pads with `<|endoftext|>` as the Hub's CLIP tokenizers do; SDXL's second tokenizer pads
    with "!" (`pad_token="!"`).

    Example:
        >>> clip_tokenizer()("a photo of a cat")["input_ids"]
        [49406, 320, 1125, 539, 320, 2368, 49407]
    """
    return CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def tiny_clip_processor(image_size: int = IMAGE_SIZE) -> CLIPProcessor:
    """A `CLIPProcessor`: the real CLIP tokenizer and an image processor to `image_size` px.

    Example:
        >>> tiny_clip_processor()(images=random_images(2), return_tensors="pt")["pixel_values"].shape
        torch.Size([2, 3, 32, 32])
    """
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())


def random_images(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> list[Image.Image]:
    """`n` RGB images of uniform noise, `size` × `size` px, reproducible from `seed`.

    Example:
        >>> [im.size for im in random_images(2, size=16)]
        [(16, 16), (16, 16)]
    """
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


# -- Stable Diffusion ------------------------------------------------------------------------------
def text_encoder_from(
    clip: CLIPModel, *, projection: bool = False, layers: int | None = None
) -> CLIPTextModel | CLIPTextModelWithProjection:
    """A pipeline text encoder holding `clip`'s text tower, as SD's text encoder is a CLIP's.

    `projection=True` gives a `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`) with
    `clip`'s text projection; `layers` keeps only the first blocks (SD 2.x keeps 23 of OpenCLIP
    ViT-H's 24).

    Example:
        >>> encoder = text_encoder_from(tiny_clip(layers=3), layers=2)
        >>> type(encoder).__name__, encoder.config.num_hidden_layers
        ('CLIPTextModel', 2)
    """
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


def _unet(seed: int, **config: Any) -> Any:
    """A random 8 × 8-latent `UNet2DConditionModel` (two blocks of 16 and 32 channels)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        attention_head_dim=4,
        **config,
    ).eval()


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

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


def _scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_pipeline(
    clip: CLIPModel,
    *,
    layers: int | None = None,
    seed: int = 0,
    tokenizer: CLIPTokenizer | None = None,
) -> StableDiffusionPipeline:
    """A `StableDiffusionPipeline` generating 16 × 16 px images, whose text encoder is `clip`'s
    text tower (`text_encoder_from(clip, layers=layers)`); random UNet and VAE from `seed`.

    `tokenizer` defaults to `clip_tokenizer()`; pass the CLIP processor's tokenizer when it
    differs. Needs diffusers.

    Example:
        >>> pipe = tiny_sd_pipeline(tiny_clip())  # doctest: +SKIP
        >>> pipe("a photo of a cat", num_inference_steps=2).images[0].size  # doctest: +SKIP
        (16, 16)
    """
    from diffusers import StableDiffusionPipeline

    encoder = text_encoder_from(clip, layers=layers)
    unet = _unet(
        seed,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=encoder.config.hidden_size,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(seed + 1),
        text_encoder=encoder,
        tokenizer=tokenizer if tokenizer is not None else clip_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(
    clip_l: CLIPModel, clip_g: CLIPModel, *, seed: int = 0
) -> StableDiffusionXLPipeline:
    """A `StableDiffusionXLPipeline` (16 × 16 px): `text_encoder` = `clip_l`'s text tower
    (`CLIPTextModel`), `text_encoder_2` = `clip_g`'s text tower with its projection
    (`CLIPTextModelWithProjection`), as SDXL pairs CLIP-L with OpenCLIP bigG. Needs diffusers.

    Example:
        >>> pipe = tiny_sdxl_pipeline(tiny_clip(seed=0), tiny_clip(seed=1))  # doctest: +SKIP
        >>> type(pipe.text_encoder_2).__name__  # doctest: +SKIP
        'CLIPTextModelWithProjection'
    """
    from diffusers import StableDiffusionXLPipeline

    encoder = text_encoder_from(clip_l)
    encoder_2 = text_encoder_from(clip_g, projection=True)
    unet = _unet(
        seed,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=encoder.config.hidden_size + encoder_2.config.hidden_size,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_ADD_TIME_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_ADD_TIME_DIM
        + encoder_2.config.projection_dim,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(seed + 1),
        text_encoder=encoder,
        text_encoder_2=encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=_scheduler(),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- LLaVA -----------------------------------------------------------------------------------------
def llava_vocabulary(extra: Sequence[str] = ()) -> list[str]:
    """`LLAVA_WORDS` plus the lower-cased words of `extra` (e.g. people's names), each once.

    Example:
        >>> llava_vocabulary(["Ada Byron", "a cat"])[-4:]
        ['ada', 'byron', 'a', 'cat']
    """
    words = list(LLAVA_WORDS)
    for text in extra:
        for word in text.lower().split():
            if word not in words:
                words.append(word)
    return words


def tiny_llava(
    clip: CLIPModel,
    *,
    vocabulary: Sequence[str] = LLAVA_WORDS,
    feature_layer: int | Sequence[int] = -2,
    vision_config: PretrainedConfig | None = None,
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """A tiny `LlavaForConditionalGeneration` (a 1-layer Llama) whose vision tower holds
    `clip`'s vision tower weights.

    The language model's vocabulary is `vocabulary` (word-level; see `tiny_llava_processor`),
    `feature_layer` is `config.vision_feature_layer` (LLaVA-1.5: -2). Its language model,
    projector and head are random with large weights, so greedy answers depend on the image but
    mean nothing. With `vision_config` (e.g. a SigLIP config) the tower is built from it and
    left random.

    Example:
        >>> vlm = tiny_llava(tiny_clip(layers=3))
        >>> vlm.config.vision_feature_layer, len(vlm.model.vision_tower.encoder.layers)
        (-2, 3)
    """
    vision = vision_config if vision_config is not None else clip.config.vision_config
    text = LlamaConfig(
        vocab_size=len(vocabulary),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=list(vocabulary).index("<image>"),
        vision_feature_layer=feature_layer,
    )
    torch.manual_seed(seed)
    vlm = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # large weights: greedy answers then depend on the image
        for part in (vlm.model.language_model, vlm.model.multi_modal_projector, vlm.lm_head):
            for p in part.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.5)
    if vision_config is None:
        vlm.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    return vlm


def tiny_llava_processor(
    image_processor: Any = None,
    *,
    vocabulary: Sequence[str] = LLAVA_WORDS,
    patch_size: int = 8,
) -> LlavaProcessor:
    """A `LlavaProcessor` for `tiny_llava`: a lower-casing word-level tokenizer over
    `vocabulary` and `image_processor` (default: `tiny_clip_processor()`'s).

    `patch_size` must be the vision tower's, so the prompt gets one `<image>` token per patch
    plus CLIP's class token.

    Example:
        >>> processor = tiny_llava_processor()
        >>> processor.tokenizer("Who is in this image?")["input_ids"]
        [8, 9, 10, 11, 12, 13]
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(vocabulary)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    return LlavaProcessor(
        image_processor=image_processor
        if image_processor is not None
        else tiny_clip_processor().image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token
    )


__all__ = [
    "CLIP_VOCAB_SIZE",
    "IMAGE_SIZE",
    "LLAVA_WORDS",
    "TOKENIZER_DIR",
    "clip_tokenizer",
    "llava_vocabulary",
    "random_images",
    "text_encoder_from",
    "tiny_clip",
    "tiny_clip_config",
    "tiny_clip_processor",
    "tiny_llava",
    "tiny_llava_processor",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
]
