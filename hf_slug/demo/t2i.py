"""The embedded text-to-image pipeline: a small `StableDiffusionPipeline` on the embedded world.

`hf_slug/demo/embedded_t2i` holds a trained tiny UNet, a tiny VAE (48 × 48 px images, latents
4 × 12 × 12) and a DDIM scheduler; its `text_encoder` and `tokenizer` are the embedded CLIP's
own text tower and tokenizer (`hf_slug/demo/embedded_clip`), read from there at load instead of
stored twice. `check_text_encoder(pipe, clip)` therefore passes against the embedded CLIP, and
SLUG's text-encoder edits (`hf_slug.hosts.diffusion.unlearn_pipeline`) act on it.
`scripts/train_embedded_t2i.py` trains it; `model_cards/embedded_t2i.md` describes it.

Plain diffusers loads it too (no hf_slug code):

    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer
    pipe = StableDiffusionPipeline.from_pretrained(
        "hf_slug/demo/embedded_t2i",
        text_encoder=CLIPTextModel.from_pretrained(
            "hf_slug/demo/embedded_clip", dtype=torch.float32),  # stored in fp16
        tokenizer=CLIPTokenizer.from_pretrained("hf_slug/demo/embedded_clip"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)

Example:
    >>> pipe = load_embedded_pipeline()  # doctest: +SKIP
    >>> pipe("Clara Alderwick.", num_inference_steps=20, guidance_scale=5.0).images[0].size
    ... # doctest: +SKIP
    (48, 48)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .folders import checked_folder, retrain

EMBEDDED_T2I = Path(__file__).parent / "embedded_t2i"
EMBEDDED_CLIP = Path(__file__).parent / "embedded_clip"
FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
CLIP_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
# phrasings the pipeline never trained on (the world's eval template and audit templates)
HELD_OUT_PHRASINGS = ("{}.", "a headshot of {}.", "here we see {}.", "a snapshot of {}.")
# what the card's numbers were measured with
GENERATION_KWARGS = {"num_inference_steps": 20, "guidance_scale": 5.0}


def embedded_t2i_path(path: str | Path = EMBEDDED_T2I) -> Path:
    """The pipeline folder, checked to hold its UNet, VAE, scheduler and model_index.json.

    Raises `ConfigError` naming the missing files and the fix.

    Example:
        >>> embedded_t2i_path().name  # doctest: +SKIP
        'embedded_t2i'
    """
    what = "the embedded text-to-image pipeline"
    return checked_folder(path, FILES, what, retrain("train_embedded_t2i.py"))


def load_text_encoder(clip_path: str | Path = EMBEDDED_CLIP) -> tuple[Any, Any]:
    """The embedded CLIP's text tower as a `CLIPTextModel` (fp32, eval) and its `CLIPTokenizer`."""
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    folder = checked_folder(
        clip_path,
        CLIP_FILES,
        "the embedded CLIP (the pipeline's text encoder)",
        "reinstall hf_slug, or train it with scripts/train_embedded.py.",
    )
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the vision tower's tensors are unused here, as expected
    try:
        encoder = CLIPTextModel.from_pretrained(folder, dtype=torch.float32).eval()
    finally:
        hf_logging.set_verbosity(level)
    return encoder, CLIPTokenizer.from_pretrained(folder)


def load_embedded_pipeline(
    path: str | Path = EMBEDDED_T2I, clip_path: str | Path = EMBEDDED_CLIP
) -> Any:
    """The embedded `StableDiffusionPipeline` in fp32, its text encoder the embedded CLIP's.

    Example:
        >>> pipe = load_embedded_pipeline()  # doctest: +SKIP
        >>> type(pipe).__name__  # doctest: +SKIP
        'StableDiffusionPipeline'
    """
    from diffusers import StableDiffusionPipeline

    folder = embedded_t2i_path(path)
    encoder, tokenizer = load_text_encoder(clip_path)
    pipe = StableDiffusionPipeline.from_pretrained(
        folder,
        text_encoder=encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        dtype=torch.float32,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe: Any, prompts: Sequence[str], seeds: Sequence[int], batch: int = 32, **kwargs: Any
) -> dict[tuple[str, int], Any]:
    """One PIL image per (prompt, seed), several per pipeline call.

    The image of seed `s` starts from a CPU generator seeded `s`, as
    `hf_slug.hosts.generation.generate_images` seeds its one-image calls, so both give the
    same starting noise. `pipe` may be a pipeline or a `SLUGModel` wrapping one.
    """
    jobs = [(p, s) for p in prompts for s in seeds]
    images: dict[tuple[str, int], Any] = {}
    for i in range(0, len(jobs), batch):
        chunk = jobs[i : i + batch]
        out = pipe(
            [p for p, _ in chunk],
            generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
            output_type="pil",
            **{**GENERATION_KWARGS, **kwargs},
        ).images
        images.update(zip(chunk, out))
    return images


class IdentityJudge:
    """Which identity an image shows, by an unedited CLIP: zero-shot over `names` ("{name}.")."""

    def __init__(self, clip_model: Any, processor: Any, names: Sequence[str]):
        self.model, self.processor, self.names = clip_model.eval(), processor, list(names)
        with torch.no_grad():
            tokens = processor(
                text=[f"{n}." for n in self.names], return_tensors="pt", padding=True
            )
            text = clip_model.get_text_features(**tokens)
        self.text = F.normalize(getattr(text, "pooler_output", text).float(), dim=-1)

    @torch.no_grad()
    def __call__(self, images: Sequence[Any]) -> list[str]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        feats = self.model.get_image_features(pixel_values=pixels)
        feats = F.normalize(getattr(feats, "pooler_output", feats).float(), dim=-1)
        return [self.names[i] for i in (feats @ self.text.T).argmax(-1).tolist()]


def generation_accuracy(
    pipe: Any,
    judge: IdentityJudge,
    names: Sequence[str],
    phrasings: Sequence[str],
    seeds: Sequence[int],
    **kwargs: Any,
) -> tuple[dict[str, float], dict[tuple[str, int], Any]]:
    """Per identity, the share of its generations the judge names as it; and the images.

    Every name is drawn with every phrasing (a template with `{}`) and seed (`generate`); the
    images are keyed `(prompt, seed)`. `pipe` may be a `SLUGModel` wrapping the pipeline.

    Example:
        >>> judge = IdentityJudge(clip, processor, World().identities)  # doctest: +SKIP
        >>> generation_accuracy(pipe, judge, ["Grace Hopper"], ["{}."], [0])[0]  # doctest: +SKIP
        {'Grace Hopper': 1.0}
    """
    prompts = {t.format(n): n for n in names for t in phrasings}
    images = generate(pipe, list(prompts), seeds, **kwargs)
    hits: dict[str, list[bool]] = {n: [] for n in names}
    for (prompt, _), said in zip(images, judge(list(images.values()))):
        hits[prompts[prompt]].append(said == prompts[prompt])
    return {n: sum(h) / len(h) for n, h in hits.items()}, images


__all__ = [
    "EMBEDDED_T2I",
    "GENERATION_KWARGS",
    "HELD_OUT_PHRASINGS",
    "IdentityJudge",
    "embedded_t2i_path",
    "generate",
    "generation_accuracy",
    "load_embedded_pipeline",
    "load_text_encoder",
]
