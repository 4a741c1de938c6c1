"""A host-aware search criterion for pipelines: the pipeline itself generates, a judge names.

SLUG's gradients come from the two-tower CLIPModel, but the UNet reads every token's hidden
state of the text encoder, not CLIP's pooled end-of-text embedding: a CLIP-only criterion can be
met while the generations still show the person, or while the other people's generations change
(issue 19). `GenerationEvaluator` scores every trial of the step search by generating: each
trial's edit of the CLIPModel's text tensors is copied into the pipeline's text encoder, the
pipeline draws validation prompts at fixed seeds, and the encoder is restored bit for bit.

The judge is never edited: the CLIPModel's image tower (SLUG edits only the text tower here)
against text features of the candidate names computed once, before any trial. Validation
prompts and seeds (`GenerationCheck`) are the caller's to keep apart from test prompts and
seeds; the defaults are the forget criterion's phrasings of the concept's kind
(`hf_slug.phrasings`: eight for identities, one image each) at seed 1000.

Metrics: `forget_acc` (share of the target's generations the judge names as the target),
`others_acc` (share of the other people's generations named as themselves) and `utility` (the
judge's mean probability of each other person's own name on their generations: a soft
`others_acc`, less noisy for choosing among layers).

Example:
    >>> evaluator = GenerationEvaluator(pipe, clip, clip_processor,  # doctest: +SKIP
    ...     "Clara Alderwick", names, GenerationCheck(generation_kwargs={"guidance_scale": 5.0}))
    >>> unlearn(clip, clip_processor, forget, retain, config, evaluator=evaluator)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checks import finite_real, positive_int
from ..errors import ConfigError
from ..evaluation import Evaluator, Metrics
from ..phrasings import criterion_templates
from ..towers import encode_images, encode_texts, tower_of
from ..validation import EvaluationData
from ..weights import mirrored
from .generation import pipeline_components

Job = tuple[str, str, int]  # (the name the image should show, the prompt, the seed)
FORGET_ACC, OTHERS_ACC, UTILITY = "forget_acc", "others_acc", "utility"


@dataclass(frozen=True)
class GenerationCheck:
    """What the generation criterion draws: phrasings, seeds, pipeline keywords.

    Args:
        templates: validation phrasings (one `{}` each); None: the forget criterion's phrasings
            of `config.concept_kind` (`hf_slug.phrasings`). Keep them apart from test prompts.
        target_images: the target's images: phrasing by phrasing, then the next seed.
        seed: the first seed (the other people's images all use it).
        others_per_person: images of each other person (phrasings taken in turn).
        judge_template: how the judge phrases each candidate name.
        generation_kwargs: passed to the pipeline (default 10 inference steps).
        chunk: target images per pipeline call; the early exit looks after each call.
        margin: a target image counts as showing the target when the judge's logit (100·cos)
            of the target's name is within `margin` of its first choice (0: its first choice).
            The default 5 was chosen on validation generations: the smallest step that met
            margin 0 on these phrasings still showed the target under other phrasings.

    Example:
        >>> len(GenerationCheck(templates=("a photo of {}.",)).target_jobs("x"))
        8
    """

    templates: Sequence[str] | None = None
    target_images: int = 8
    seed: int = 1000
    others_per_person: int = 1
    judge_template: str = "{}."
    generation_kwargs: Mapping[str, Any] = field(
        default_factory=lambda: {"num_inference_steps": 10}
    )
    chunk: int = 4
    margin: float = 5.0

    def __post_init__(self) -> None:
        given = () if self.templates is None else tuple(self.templates)
        bad = [t for t in (*given, self.judge_template) if str(t).count("{}") != 1]
        if bad or self.templates is not None and not given:
            raise ConfigError(
                f"GenerationCheck templates must each hold one '{{}}' (got {bad or 'none'}): "
                "pass e.g. templates=('a photo of {}.',), or None for the built-in phrasings."
            )
        reserved = {"generator", "output_type", "num_images_per_prompt"} & set(
            self.generation_kwargs
        )
        if reserved:
            raise ConfigError(
                f"{sorted(reserved)} are set by the generation criterion: drop them from "
                "GenerationCheck(generation_kwargs=...)."
            )
        positive_int(self.target_images, "target_images", "target_images=8")
        positive_int(self.others_per_person, "others_per_person", "others_per_person=1")
        positive_int(self.chunk, "chunk", "chunk=4")
        margin = finite_real(self.margin)
        if margin is None or margin < 0:
            raise ConfigError(
                f"GenerationCheck(margin={self.margin!r}) must be a finite number >= 0 (logit "
                "units, 100·cos): pass e.g. margin=0.0."
            )

    def phrasings(self, concept_kind: str = "concept") -> list[str]:
        """The validation phrasings: `templates`, or the criterion's own for `concept_kind`."""
        if self.templates is not None:
            return list(self.templates)
        return criterion_templates(concept_kind)

    def target_jobs(self, concept: str, concept_kind: str = "concept") -> list[Job]:
        """(name, prompt, seed) of the target's images, phrasing by phrasing, seed by seed."""
        phrasings = self.phrasings(concept_kind)
        return [
            (
                concept,
                phrasings[i % len(phrasings)].format(concept),
                self.seed + i // len(phrasings),
            )
            for i in range(self.target_images)
        ]

    def other_jobs(self, others: Sequence[str], concept_kind: str = "concept") -> list[Job]:
        """(name, prompt, seed) of the other people's images, the phrasings taken in turn."""
        phrasings = self.phrasings(concept_kind)
        jobs = []
        for i in range(self.others_per_person * len(others)):
            name = others[i % len(others)]
            seed = self.seed + i // len(others)
            jobs.append((name, phrasings[i % len(phrasings)].format(name), seed))
        return jobs


class GenerationEvaluator(Evaluator):
    """Score a CLIPModel text-tower edit by what the pipeline whose text encoder it shares draws.

    `pipe` is a diffusers pipeline, `component` its text encoder holding `clip_model`'s text
    tower; `labels` the candidate names (the concept and the other people). `data` records the
    validation generations' counts (`unlearn` writes it into the result).
    """

    def __init__(
        self,
        pipe: Any,
        clip_model: nn.Module,
        processor: Any,
        concept: str,
        labels: Sequence[str],
        check: GenerationCheck | None = None,
        component: str = "text_encoder",
        progress: bool = True,
    ):
        self.pipe, self.clip_model, self.processor = pipe, clip_model, processor
        self.check = check or GenerationCheck()
        self.concept, self.labels = concept, list(dict.fromkeys(labels))
        if concept not in self.labels or len(self.labels) < 2:
            raise ConfigError(
                "the generation criterion names each image among config.candidate_labels, which "
                f"must hold the concept {concept!r} and another name: pass "
                "SLUGConfig(candidate_labels=[...]), or PipelineOptions(criterion='clip')."
            )
        self.progress = progress
        self.target_jobs = self.check.target_jobs(concept)
        self.other_jobs = self.check.other_jobs([n for n in self.labels if n != concept])
        self.data = EvaluationData(
            "validation",
            0,
            0,
            len(self.target_jobs),
            len(self.other_jobs),
            unit="generated images",
        )
        encoder = pipeline_components(pipe)[component]
        self._pairs = shared_text_tensors(tower_of(clip_model, "text").module, encoder, component)
        self._text, self._scale = self._name_features()  # the unedited judge, once
        self.seconds_generating = 0.0
        self.images_generated = 0

    def with_gradient_counts(self, forget: int, retain: int) -> GenerationEvaluator:
        """Record how many pairs the gradients come from (for the result's provenance)."""
        data = self.data
        self.data = replace(data, gradient_forget=forget, gradient_retain=retain)
        return self

    def __call__(self, model: nn.Module) -> Metrics:
        with self._synced():
            target, _ = self._judge(self.target_jobs, self.check.margin)
            others, own = self._judge(self.other_jobs)
        metrics = {FORGET_ACC: sum(target) / len(target)}
        metrics[OTHERS_ACC] = sum(others) / len(others)
        metrics[UTILITY] = float(own.mean())
        return metrics

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the target's images when only `forget_acc` is asked for (most trials)."""
        if set(metrics) <= {FORGET_ACC}:
            return self.evaluate_forget(model, FORGET_ACC, math.inf)[0]
        return self(model)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """The target's images chunk by chunk; stop once more are named than `ceiling` allows
        (then `forget_acc` is a lower bound that already fails: the same decision)."""
        if metric != FORGET_ACC:
            return self.evaluate_only(model, (metric,)), True
        jobs, named = self.target_jobs, 0
        allowed = ceiling * len(jobs)
        size = self.check.chunk
        with self._synced():
            for start in range(0, len(jobs), size):
                part = jobs[start : start + size]
                named += sum(self._judge(part, self.check.margin)[0])
                if named > allowed and start + size < len(jobs):
                    return {FORGET_ACC: named / len(jobs)}, False
        return {FORGET_ACC: named / len(jobs)}, True

    # -- generation and the judge ---------------------------------------------------------------
    def _draw(self, jobs: Sequence[Job]) -> list[Any]:
        """One image per (name, prompt, seed), `check.chunk`·4 per pipeline call at most."""
        clock = time.perf_counter()
        images: list[Any] = []
        size = 4 * self.check.chunk
        bar = tqdm(
            total=len(jobs), desc="generation check", unit="image", leave=False,
            disable=not self.progress,
        )  # fmt: skip
        for start in range(0, len(jobs), size):
            part = jobs[start : start + size]
            out = self.pipe(
                [prompt for _, prompt, _ in part],
                generator=[torch.Generator("cpu").manual_seed(int(s)) for _, _, s in part],
                output_type="pil",
                **dict(self.check.generation_kwargs),
            )
            images += list(out.images)
            bar.update(len(part))
        bar.close()
        self.seconds_generating += time.perf_counter() - clock
        self.images_generated += len(jobs)
        return images

    @torch.no_grad()
    def _name_features(self) -> tuple[torch.Tensor, float]:
        model = self.clip_model
        device = next(model.parameters()).device
        texts = [self.check.judge_template.format(n) for n in self.labels]
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        mask = tokens.get("attention_mask")
        features = encode_texts(
            model, tokens["input_ids"].to(device), None if mask is None else mask.to(device)
        )
        scale = getattr(model, "logit_scale", None)
        return F.normalize(features.float(), dim=-1).cpu(), (
            float(scale.detach().exp()) if scale is not None else 100.0
        )

    @torch.no_grad()
    def _judge(self, jobs: Sequence[Job], margin: float = 0.0) -> tuple[list[bool], torch.Tensor]:
        """Draw `jobs`; (whether the judge names each image as its job's name — or ranks that
        name within `margin` of its first choice —, its probability of that name)."""
        images = self._draw(jobs)
        parameter = next(self.clip_model.parameters())
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        features = encode_images(
            self.clip_model, pixels.to(device=parameter.device, dtype=parameter.dtype)
        )
        logits = self._scale * F.normalize(features.float(), dim=-1).cpu() @ self._text.T
        own = torch.tensor([self.labels.index(name) for name, _, _ in jobs])
        rows = torch.arange(len(jobs))
        named = logits[rows, own] >= logits.max(-1).values - margin
        return named.tolist(), logits.softmax(-1)[rows, own]

    def _synced(self) -> contextlib.AbstractContextManager[None]:
        """The pipeline's encoder holds the CLIPModel's current text tensors (the trial's
        edit) inside the block; its own tensors come back bit for bit after."""
        return mirrored(self._pairs)


def shared_text_tensors(
    clip_tower: nn.Module, encoder: nn.Module, component: str
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(CLIPModel tensor, pipeline tensor) for every tensor the two text towers share by name."""
    ours = dict(clip_tower.named_parameters())
    theirs = {}
    for name, tensor in encoder.named_parameters():
        theirs[name.removeprefix("text_model.")] = tensor
    pairs = [(ours[n], t) for n, t in theirs.items() if n in ours]
    if not any(".layers." in n for n in theirs if n in ours):
        raise ConfigError(
            f"the pipeline's {component} shares no block tensor with the CLIPModel's text tower: "
            "pass the CLIPModel the text encoder came from (check_text_encoder checks it)."
        )
    return pairs


def generation_evaluator(
    pipe: Any,
    clip_model: nn.Module,
    processor: Any,
    config: Any,
    component: str = "text_encoder",
    check: GenerationCheck | None = None,
    progress: bool = True,
) -> GenerationEvaluator:
    """`GenerationEvaluator` for `config.concept` among `config.candidate_labels`; a typed error
    when the pipeline cannot generate.

    Example:
        >>> evaluator = generation_evaluator(pipe, clip, clip_processor, config)  # doctest: +SKIP
    """
    components = pipeline_components(pipe)
    if (
        not callable(pipe)
        or components.get("unet") is None
        and components.get("transformer") is None
    ):
        raise ConfigError(
            f"criterion='generation' draws with the pipeline, but {type(pipe).__name__} has no "
            "denoiser to call: pass PipelineOptions(criterion='clip'), or a full pipeline."
        )
    check = check or GenerationCheck()
    phrasings = tuple(check.phrasings(config.concept_kind))  # the concept kind's, unless given
    return GenerationEvaluator(
        pipe,
        clip_model,
        processor,
        config.concept,
        config.candidate_labels or [],
        replace(check, templates=phrasings),
        component,
        progress,
    )


__all__ = [
    "GenerationCheck",
    "GenerationEvaluator",
    "generation_evaluator",
]
