"""Stable Diffusion generations: fixed-seed images, generated forget sets, before/after scores.

Image `j` of every prompt starts from a CPU generator seeded `seed + j`, so generations before
and after unlearning start from the same noise. `DiffusionEvaluator` scores them with a CLIP
judge and an optional classifier (UnlearnCanvas-style UA / IRA / CRA) and saves an image grid.

Example:
    >>> images = generate_images(pipe, ["a photo of a cat"], 4,  # doctest: +SKIP
    ...                          num_inference_steps=30)
    >>> evaluator = DiffusionEvaluator("Snoopy", ["a photo of Snoopy"],  # doctest: +SKIP
    ...     {"a photo of Mickey Mouse": "Mickey Mouse"}, clip_model=clip, processor=proc,
    ...     generation=GenerationSettings(generation_kwargs={"num_inference_steps": 30}))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..checks import positive_int
from ..data import ImageTextPairs
from ..errors import UnsupportedModelError
from ..towers import encode_images, encode_texts, require_clip
from .base import Comparison, Metrics

SUPPORTED = (
    "hf_slug unlearns diffusers pipelines whose text encoders are transformers CLIP text models "
    "(StableDiffusionPipeline for SD 1.x/2.x, StableDiffusionXLPipeline and their img2img / "
    "inpainting / ControlNet variants); the gradients come from the matching two-tower CLIPModel."
)
Classifier = Callable[[Sequence[Image.Image]], Sequence[str]]


def pipeline_components(pipe: Any) -> dict[str, Any]:
    """A diffusers pipeline's components; an error naming what to pass for anything else.

    Example:
        >>> sorted(pipeline_components(pipe))[:2]  # doctest: +SKIP
        ['feature_extractor', 'safety_checker']
    """
    if isinstance(pipe, nn.Module) or not isinstance(getattr(pipe, "components", None), dict):
        hint = (
            " (a SLUGModel: pass its .model, with its adapters disabled or none added)"
            if hasattr(pipe, "adapters") and hasattr(pipe, "model")
            else ""
        )
        raise UnsupportedModelError(
            f"expected a diffusers pipeline, got a {type(pipe).__name__}{hint}. {SUPPORTED}"
        )
    return pipe.components


# -- generation -----------------------------------------------------------------------------------
def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    num_images: int = 1,
    *,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generating",
    **generation_kwargs: Any,
) -> dict[str, list[Image.Image]]:
    """`num_images` images per prompt, image `j` from a CPU generator seeded `seed + j`.

    The same seeds give the same starting noise for every prompt and every call, so generations
    before and after unlearning are comparable. `pipe` may be a pipeline or a `SLUGModel`
    wrapping one (its active adapters then act). `generation_kwargs` go to the pipeline call.

    Example:
        >>> images = generate_images(pipe, ["a photo of a cat"], 4, num_inference_steps=30)
        ... # doctest: +SKIP
    """
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}.")
    reserved = sorted(
        {"generator", "num_images_per_prompt", "output_type"} & set(generation_kwargs)
    )
    if reserved:
        raise ValueError(
            f"{reserved} are set by hf_slug (one PIL image per call, seeded generators): drop them "
            "from the generation arguments; use num_images= and seed= instead."
        )
    pipeline_components(getattr(pipe, "model", pipe) if hasattr(pipe, "adapters") else pipe)
    out: dict[str, list[Image.Image]] = {p: [] for p in prompts}
    jobs = [(p, j) for p in out for j in range(num_images)]
    for prompt, j in tqdm(jobs, desc=desc, unit="image", disable=not progress):
        generator = torch.Generator(device="cpu").manual_seed(seed + j)
        result = pipe(
            prompt,
            generator=generator,
            num_images_per_prompt=1,
            output_type="pil",
            **generation_kwargs,
        )
        out[prompt].append(result.images[0])
    return out


def generate_forget_set(
    pipe: Any, prompt: str, num_images: int, *, seed: int = 0, progress: bool = True, **kwargs: Any
) -> ImageTextPairs:
    """The paper's forget set for a character or object: N generations of `prompt`, captioned
    with `prompt` (seeds `seed … seed + N - 1`); `kwargs` go to the pipeline call.

    Example:
        >>> forget = generate_forget_set(pipe, "Snoopy", 32, num_inference_steps=30)  # doctest: +SKIP
    """
    images = generate_images(
        pipe,
        [prompt],
        num_images,
        seed=seed,
        progress=progress,
        desc="forget set",
        **kwargs,
    )[prompt]
    return ImageTextPairs(tuple(images), (prompt,) * len(images))


@dataclass(frozen=True)
class ForgetGeneration:
    """A forget set the pipeline generates itself (`unlearn_pipeline(..., forget=...)`).

    Args:
        num_images: how many images (image `j` seeded `seed + j`).
        prompt: what to generate and the images' caption (default: the concept).
        seed: the first seed.
        generation_kwargs: passed to the pipeline (e.g. `num_inference_steps`).

    Example:
        >>> ForgetGeneration(32, "a photo of Snoopy").num_images
        32
    """

    num_images: int = 16
    prompt: str | None = None
    seed: int = 0
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive_int(self.num_images, "num_images", "num_images=16")

    def generate(self, pipe: Any, concept: str, progress: bool = True) -> ImageTextPairs:
        """The generated forget pairs (`generate_forget_set` with these settings)."""
        return generate_forget_set(
            pipe,
            self.prompt or concept,
            self.num_images,
            seed=self.seed,
            progress=progress,
            **dict(self.generation_kwargs),
        )


# -- evaluation -----------------------------------------------------------------------------------
@dataclass
class GenerationComparison(Comparison):
    """Metrics and images of a pipeline without (`before`) and with (`after`) its deltas."""

    images_before: dict[str, list[Image.Image]] = field(default_factory=dict)
    images_after: dict[str, list[Image.Image]] = field(default_factory=dict)
    grid: Path | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """How `DiffusionEvaluator` generates: images per prompt, first seed, pipeline keywords.

    Example:
        >>> GenerationSettings(num_images=4).seed
        0
    """

    num_images: int = 2
    seed: int = 0
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = True


@dataclass(frozen=True)
class DiffusionScoring:
    """How `DiffusionEvaluator` scores: zero-shot label names, text template, classifiers.

    Args:
        label_names: the names zero-shot classification chooses among (default: the concept
            and the in-domain labels).
        template: the text template for CLIP scores and zero-shot labels.
        classifier, cross_classifier: `images -> labels` for UA / IRA (same kind) and CRA
            (other kind; default: `classifier`).

    Example:
        >>> DiffusionScoring(template="a photo of {}.").classifier is None
        True
    """

    label_names: Sequence[str] | None = None
    template: str = "{}"
    classifier: Classifier | None = None
    cross_classifier: Classifier | None = None


class DiffusionEvaluator:
    """Fixed-seed generations for target and non-target prompts, scored by CLIP and a classifier.

    Args:
        concept: the unlearned concept's name.
        target_prompts: prompts that ask for the concept.
        other_prompts: prompt -> label for other concepts of the same kind (in-domain).
        cross_prompts: prompt -> label for concepts of the other kind (UnlearnCanvas: objects
            when styles are unlearned); only the classifier scores them (`CRA`).
        clip_model, processor: a CLIPModel and its processor for CLIP scores (optional; ideally
            not the model the delta came from).
        scoring: label names, template and classifiers (`DiffusionScoring`).
        generation: images per prompt, seed, pipeline keywords (`GenerationSettings`).

    Metrics: `target_clip_score` (100·max(cos, 0) between target images and the concept name),
    `target_zs_acc` (share of target images classified as the concept among the label names),
    `other_clip_score` (in-domain and cross images against their own prompts), `other_zs_acc`
    (in-domain images classified as their own label); with a classifier `UA` (share of target
    images not recognised as the concept), `IRA` (in-domain images recognised as their own
    label) and `CRA` (cross images recognised by `cross_classifier`).

    Example:
        >>> evaluator = DiffusionEvaluator("Snoopy", ["a photo of Snoopy"],  # doctest: +SKIP
        ...     {"a photo of Mickey Mouse": "Mickey Mouse"}, clip_model=clip, processor=proc,
        ...     generation=GenerationSettings(generation_kwargs={"num_inference_steps": 30}))
        >>> print(evaluator.before_after(slug, grid_path="grid.png").table())  # doctest: +SKIP
    """

    def __init__(
        self,
        concept: str,
        target_prompts: Sequence[str],
        other_prompts: Mapping[str, str] | None = None,
        *,
        cross_prompts: Mapping[str, str] | None = None,
        clip_model: nn.Module | None = None,
        processor: Any = None,
        scoring: DiffusionScoring | None = None,
        generation: GenerationSettings | None = None,
    ):
        if not target_prompts:
            raise ValueError("give at least one target prompt (one that asks for the concept).")
        self.concept = concept
        self.target_prompts = list(target_prompts)
        self.other_prompts = dict(other_prompts or {})
        self.cross_prompts = dict(cross_prompts or {})
        clash = set(self.target_prompts) & (set(self.other_prompts) | set(self.cross_prompts))
        if clash or set(self.other_prompts) & set(self.cross_prompts):
            raise ValueError(f"a prompt may appear in only one prompt set; repeated: {clash}.")
        if (clip_model is None) != (processor is None):
            raise ValueError("pass clip_model= and processor= together (or neither).")
        if clip_model is not None:
            require_clip(clip_model)
        self.clip_model, self.processor = clip_model, processor
        scoring = scoring or DiffusionScoring()
        self.generation = generation or GenerationSettings()
        self.label_names = list(
            scoring.label_names or dict.fromkeys([concept, *self.other_prompts.values()])
        )
        self.classifier = scoring.classifier
        self.cross_classifier = scoring.cross_classifier or scoring.classifier
        self.template = scoring.template

    @property
    def num_images(self) -> int:
        return self.generation.num_images

    @property
    def prompts(self) -> list[str]:
        """Every prompt: targets, then in-domain, then cross-domain."""
        return [*self.target_prompts, *self.other_prompts, *self.cross_prompts]

    def generate(self, pipe: Any, desc: str = "generating") -> dict[str, list[Image.Image]]:
        """The fixed-seed images of every prompt (a `SLUGModel` generates with its adapters)."""
        settings = self.generation
        return generate_images(
            pipe,
            self.prompts,
            settings.num_images,
            seed=settings.seed,
            progress=settings.progress,
            desc=desc,
            **dict(settings.generation_kwargs),
        )

    def score(self, images: Mapping[str, Sequence[Image.Image]]) -> Metrics:
        """The metrics of a set of generations (prompt -> images)."""
        target = [im for p in self.target_prompts for im in images[p]]
        others = [(im, p, label) for p, label in self.other_prompts.items() for im in images[p]]
        cross = [(im, p, label) for p, label in self.cross_prompts.items() for im in images[p]]
        metrics: Metrics = {}
        if self.clip_model is not None:
            metrics.update(self._clip_metrics(target, others, cross))
        if self.classifier is not None:
            said = list(self.classifier(target))
            metrics["UA"] = sum(s != self.concept for s in said) / len(target)
            if others:
                said = list(self.classifier([im for im, _, _ in others]))
                metrics["IRA"] = sum(s == y for s, (_, _, y) in zip(said, others)) / len(others)
            if cross:
                said = list(self.cross_classifier([im for im, _, _ in cross]))
                metrics["CRA"] = sum(s == y for s, (_, _, y) in zip(said, cross)) / len(cross)
        return metrics

    def __call__(self, pipe: Any) -> Metrics:
        return self.score(self.generate(pipe))

    def before_after(self, slug: Any, grid_path: str | Path | None = None) -> GenerationComparison:
        """Generate and score with `slug`'s adapters disabled, then active; optionally save a grid
        (one row per prompt: the `before` images, then the `after` images).

        Example:
            >>> comparison = evaluator.before_after(slug, "grid.png")  # doctest: +SKIP
        """
        if not hasattr(slug, "disable_adapters"):
            raise TypeError(
                f"before_after needs a SLUGModel wrapping the pipeline, got {type(slug).__name__}"
                ": wrap it with SLUGModel(pipe) and add the delta."
            )
        with slug.disable_adapters():
            images_before = self.generate(slug, desc="generating (before)")
        images_after = self.generate(slug, desc="generating (after)")
        comparison = GenerationComparison(
            self.score(images_before), self.score(images_after), images_before, images_after
        )
        if grid_path is not None:
            from ..plots import image_grid

            n = self.num_images
            comparison.grid = image_grid(
                [images_before[p] + images_after[p] for p in self.prompts],
                grid_path,
                row_labels=[p if len(p) <= 40 else p[:39] + "…" for p in self.prompts],
                col_labels=[f"before #{j}" for j in range(n)] + [f"after #{j}" for j in range(n)],
            )
        return comparison

    def _clip_metrics(self, target: list, others: list, cross: list) -> Metrics:
        concept = self.template.format(self.concept)
        labels = [self.template.format(n) for n in self.label_names]
        own = [(im, p) for im, p, _ in others + cross]
        image_f = self._images(target + [im for im, _ in own])
        text_f = self._texts([concept, *labels, *(p for _, p in own)])
        n_t, n_l = len(target), len(labels)
        concept_f, label_f, prompt_f = text_f[0], text_f[1 : 1 + n_l], text_f[1 + n_l :]
        metrics = {"target_clip_score": _clip_score(image_f[:n_t], concept_f[None]).item()}
        if n_l >= 2 and self.concept in self.label_names:
            guess = (image_f[:n_t] @ label_f.T).argmax(-1)
            metrics["target_zs_acc"] = (guess == self.label_names.index(self.concept)).float()
            metrics["target_zs_acc"] = metrics["target_zs_acc"].mean().item()
        if own:
            pairs = (image_f[n_t:] * prompt_f).sum(-1)
            metrics["other_clip_score"] = (100 * pairs.clamp(min=0)).mean().item()
        labelled = [i for i, (_, _, y) in enumerate(others) if y in self.label_names]
        if others and n_l >= 2 and len(labelled) == len(others):
            guess = (image_f[n_t : n_t + len(others)] @ label_f.T).argmax(-1)
            truth = torch.tensor([self.label_names.index(y) for _, _, y in others])
            metrics["other_zs_acc"] = (guess == truth).float().mean().item()
        return metrics

    def _images(self, images: list[Image.Image]) -> torch.Tensor:
        parameter = next(self.clip_model.parameters())
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            features = encode_images(
                self.clip_model, pixels.to(device=parameter.device, dtype=parameter.dtype)
            )
        return F.normalize(features.float(), dim=-1).cpu()

    def _texts(self, texts: list[str]) -> torch.Tensor:
        device = next(self.clip_model.parameters()).device
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            features = encode_texts(
                self.clip_model,
                tokens["input_ids"].to(device),
                tokens.get("attention_mask").to(device) if "attention_mask" in tokens else None,
            )
        return F.normalize(features.float(), dim=-1).cpu()


def _clip_score(image_f: torch.Tensor, text_f: torch.Tensor) -> torch.Tensor:
    """Mean CLIP score 100·max(cos, 0) of each image against the (broadcast) text."""
    return (100 * (image_f * text_f).sum(-1).clamp(min=0)).mean()


__all__ = [
    "DiffusionEvaluator",
    "DiffusionScoring",
    "ForgetGeneration",
    "GenerationComparison",
    "GenerationSettings",
    "generate_forget_set",
    "generate_images",
    "pipeline_components",
]
