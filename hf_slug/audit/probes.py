"""The audit's probes on a CLIPModel: each tries to make the model recognise a concept again.

Every probe returns the share of held-out views whose top-1 name is the concept (FA@1, 0–1), or
for relearning the number of fine-tuning steps until FA@1 ≥ 0.5. The same function runs on the
edited and on the original model, so each number has its reference beside it.

Example:
    >>> scorer = Scorer(model, processor)  # doctest: +SKIP
    >>> top1_rate(scorer, images, ["Ada.", "Alan."], target=0)  # doctest: +SKIP
    0.95
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch import nn

from ..checks import positive_int, positive_number
from ..towers import encode_images, encode_texts


@dataclass
class Scorer:
    """A frozen CLIPModel and its processor, with batched, normalised feature helpers."""

    model: nn.Module
    processor: Any
    batch_size: int = 64

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.processor.tokenizer(
            list(texts), padding=True, truncation=True, return_tensors="pt"
        )

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        chunks = [
            encode_images(self.model, pixel_values[i : i + self.batch_size])
            for i in range(0, len(pixel_values), self.batch_size)
        ]
        return F.normalize(torch.cat(chunks), dim=-1)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        chunks = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokens(texts[i : i + self.batch_size])
            chunks.append(encode_texts(self.model, tokens["input_ids"], tokens["attention_mask"]))
        return F.normalize(torch.cat(chunks), dim=-1)


def _rate(image_f: torch.Tensor, text_f: torch.Tensor, target: int) -> float:
    return float(((image_f @ text_f.T).argmax(dim=-1) == target).float().mean())


@torch.no_grad()
def top1_rate(
    scorer: Scorer, images: Sequence[Image.Image], prompts: Sequence[str], target: int
) -> float:
    """FA@1: the share of `images` whose most similar prompt is `prompts[target]`."""
    return _rate(
        scorer.image_features(scorer.pixels(images)), scorer.text_features(prompts), target
    )


@torch.no_grad()
def phrasing_rates(
    scorer: Scorer,
    images: Sequence[Image.Image],
    names: Sequence[str],
    target: int,
    templates: Sequence[str],
    variants: dict[str, str],
) -> dict[tuple[str, str], float]:
    """FA@1 for every (template, variant of the target's name); other names keep their spelling."""
    image_f = scorer.image_features(scorer.pixels(images))
    others = [n for i, n in enumerate(names) if i != target]
    rates = {}
    for template in templates:
        other_f = scorer.text_features([template.format(n) for n in others])
        variant_f = scorer.text_features([template.format(v) for v in variants.values()])
        for (label, _), vf in zip(variants.items(), variant_f):
            text_f = torch.cat([other_f[:target], vf[None], other_f[target:]])
            rates[(template, label)] = _rate(image_f, text_f, target)
    return rates


AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda im: im,
    "horizontal flip": ImageOps.mirror,
    "centre crop 80 %": lambda im: ImageOps.fit(im, im.size, centering=(0.5, 0.5), bleed=0.1),
    "colour jitter": lambda im: ImageEnhance.Color(
        ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.25)).enhance(0.8)
    ).enhance(1.4),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
}


def augmentation_rates(
    scorer: Scorer, images: Sequence[Image.Image], prompts: Sequence[str], target: int
) -> dict[str, float]:
    """FA@1 after each of `AUGMENTATIONS`."""
    rgb = [im.convert("RGB") for im in images]
    return {
        name: top1_rate(scorer, [augment(im) for im in rgb], prompts, target)
        for name, augment in AUGMENTATIONS.items()
    }


def pgd_rate(
    scorer: Scorer,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    target: int,
    *,
    epsilon: float = 4 / 255,
    steps: int = 10,
) -> float:
    """FA@1 after an L∞-bounded PGD (in [0, 1] pixel space) pushing each image towards `target`."""
    pixels = scorer.pixels(images)
    image_processor = scorer.processor.image_processor
    mean = torch.tensor(image_processor.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, -1, 1, 1)
    clean = pixels * std + mean
    with torch.no_grad():
        text_f = scorer.text_features(prompts)
    labels = torch.full((len(clean),), target)
    delta = torch.zeros_like(clean, requires_grad=True)
    for _ in range(steps):
        image_f = F.normalize(encode_images(scorer.model, ((clean + delta) - mean) / std), dim=-1)
        loss = F.cross_entropy(100 * image_f @ text_f.T, labels)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= (epsilon / 4) * grad.sign()
            delta.clamp_(-epsilon, epsilon)
            delta.copy_((clean + delta).clamp(0, 1) - clean)
    with torch.no_grad():
        image_f = scorer.image_features(((clean + delta) - mean) / std)
        return _rate(image_f, text_f, target)


def learned_prompt_curve(
    scorer: Scorer,
    attack_images: Sequence[Image.Image],
    eval_images: Sequence[Image.Image],
    rivals: Sequence[str],
    *,
    tokens: int = 3,
    steps: int = 60,
    checkpoints: int = 6,
    seed: int = 0,
) -> list[tuple[int, float]]:
    """Concept inversion: learn `tokens` word embeddings so the views match them, model frozen.

    The learned prompt competes with the `rivals` prompts; the curve holds (step, FA@1 of the
    held-out `eval_images`) at `checkpoints` evenly spaced steps (step 0 included).
    """
    model, tokenizer = scorer.model, scorer.processor.tokenizer
    embedding = model.text_model.embeddings.token_embedding
    prefix = tokenizer("a photo of", add_special_tokens=False)["input_ids"]
    suffix = tokenizer(".", add_special_tokens=False)["input_ids"]
    # placeholders carry the bos id: never taken for the pooled (eos) position, then replaced
    learned_ids = [
        tokenizer.bos_token_id,
        *prefix,
        *[tokenizer.bos_token_id] * tokens,
        *suffix,
        tokenizer.eos_token_id,
    ]
    start = 1 + len(prefix)
    rival_tokens = scorer.tokens(rivals)
    width = max(len(learned_ids), rival_tokens["input_ids"].shape[1])
    ids = torch.full((1 + len(rivals), width), tokenizer.pad_token_id or tokenizer.eos_token_id)
    mask = torch.zeros_like(ids)
    ids[0, : len(learned_ids)] = torch.tensor(learned_ids)
    mask[0, : len(learned_ids)] = 1
    ids[1:, : rival_tokens["input_ids"].shape[1]] = rival_tokens["input_ids"]
    mask[1:, : rival_tokens["input_ids"].shape[1]] = rival_tokens["attention_mask"]
    generator = torch.Generator().manual_seed(seed)
    scale = float(embedding.weight.std())
    init = embedding.weight.mean(0, keepdim=True).expand(tokens, -1)
    learned = (init + scale * torch.randn(init.shape, generator=generator)).clone()
    learned.requires_grad_(True)

    def substitute(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[0, start : start + tokens] = learned.to(output.dtype)
        return output

    with torch.no_grad():
        attack_f = scorer.image_features(scorer.pixels(attack_images))
        eval_f = scorer.image_features(scorer.pixels(eval_images))
    optimizer = torch.optim.Adam([learned], lr=0.5 * scale)
    marks = sorted({round(i * steps / max(1, checkpoints - 1)) for i in range(checkpoints)})
    labels = torch.zeros(len(attack_f), dtype=torch.long)
    curve = []
    handle = embedding.register_forward_hook(substitute)
    try:
        for step in range(steps + 1):
            text_f = F.normalize(encode_texts(model, ids, mask), dim=-1)
            if step in marks:
                curve.append((step, _rate(eval_f, text_f.detach(), 0)))
            if step == steps:
                break
            loss = F.cross_entropy(100 * attack_f @ text_f.T, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        handle.remove()
    return curve


@dataclass(frozen=True)
class RelearnSettings:
    """How the relearning probe fine-tunes: at most `max_steps` Adam steps at learning rate `lr`.

    Example:
        >>> RelearnSettings(max_steps=60).lr
        0.0001
    """

    max_steps: int = 30
    lr: float = 1e-4

    def __post_init__(self) -> None:
        positive_int(self.max_steps, "RelearnSettings.max_steps", "max_steps=30")
        positive_number(self.lr, "RelearnSettings.lr", "lr=1e-4")


def relearn_steps(
    model: nn.Module,
    processor: Any,
    train_images: Sequence[Image.Image],
    eval_images: Sequence[Image.Image],
    prompts: Sequence[str],
    target: int,
    *,
    only: Sequence[str] | None = None,
    settings: RelearnSettings | None = None,
) -> int | None:
    """Fine-tuning steps on `train_images` (labelled `target`) until FA@1 of `eval_images` ≥ 0.5.

    Trains a copy (all weights, or only the parameters named in `only`) with `settings`
    (default `RelearnSettings()`: 30 steps, lr 1e-4); None when `settings.max_steps` do not
    suffice. 0 means the model recognises the concept before any step.

    Example:
        >>> fast = RelearnSettings(max_steps=20)
        >>> relearn_steps(clip, proc, train, test, prompts, 0, settings=fast)  # doctest: +SKIP
        3
    """
    settings = settings or RelearnSettings()
    max_steps = settings.max_steps
    student = copy.deepcopy(model).train()
    params = dict(student.named_parameters())
    chosen = [params[n] for n in only] if only else list(params.values())
    for p in student.parameters():
        p.requires_grad_(False)
    for p in chosen:
        p.requires_grad_(True)
    scorer = Scorer(student, processor)
    train_pixels, eval_pixels = scorer.pixels(train_images), scorer.pixels(eval_images)
    tokens = scorer.tokens(prompts)
    labels = torch.full((len(train_pixels),), target)
    optimizer = torch.optim.Adam(chosen, lr=settings.lr)
    for step in range(max_steps + 1):
        with torch.no_grad():
            text_f = F.normalize(
                encode_texts(student, tokens["input_ids"], tokens["attention_mask"]), dim=-1
            )
            if _rate(scorer.image_features(eval_pixels), text_f, target) >= 0.5:
                return step
        if step == max_steps:
            return None
        image_f = F.normalize(encode_images(student, train_pixels), dim=-1)
        text_f = F.normalize(
            encode_texts(student, tokens["input_ids"], tokens["attention_mask"]), dim=-1
        )
        loss = F.cross_entropy(100 * image_f @ text_f.T, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return None
