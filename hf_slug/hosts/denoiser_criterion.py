"""A cheap host-aware criterion for pipelines: ask the denoiser, not CLIP's pooled embedding.

The UNet of a Stable Diffusion pipeline reads every token's hidden state of the text encoder;
what a prompt makes it draw is carried by its classifier-free guidance direction — the noise it
predicts with the prompt minus the noise it predicts with the empty prompt. `DenoiserEvaluator`
scores each trial of the step search on that direction, with no sampling, VAE or judge: for
fixed noise latents and a few timesteps it calls the UNet once per (prompt, timestep, noise)
on the conditioning the pipeline itself builds (`pipe.encode_prompt`, so `clip_skip` holds).

Before any trial, with the unedited encoder, it records the guidance direction of every
candidate name under each validation phrasing (for identities also with each name's first and
last word alone, as CLIP's criterion does). A trial's target prompt counts as the target
when its direction (all timesteps and noises concatenated) is at least as close, by cosine, to
the target's original direction as to any other name's, less `margin`. Metrics: `forget_acc`
(share of the target's phrasings that still point to the target), `others_acc` (share of the
other names whose direction still points to themselves) and `utility` (mean cosine between each
other name's direction and its original: 1.0 untouched).

On the embedded pipeline this agrees with generation where CLIP's criterion does not: at the
step CLIP's criterion chose for Eileen Collins (and at 2×) every phrasing still points to her,
and the pipeline still draws her (`benchmarks/generative_pipeline.md`).

Example:
    >>> check = DenoiserCheck(templates=("a photo of {}.",), timesteps=(0.5,), noises=1)
    >>> check.calls_per_prompt
    1
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import finite_real, positive_int
from ..errors import ConfigError
from ..evaluation import Evaluator, Metrics
from ..phrasings import criterion_templates
from ..towers import tower_of
from ..validation import EvaluationData, criterion_prompts
from ..weights import mirrored
from .diffusion_criterion import FORGET_ACC, OTHERS_ACC, UTILITY, shared_text_tensors
from .generation import pipeline_components


@dataclass(frozen=True)
class DenoiserCheck:
    """What the denoiser criterion asks the UNet: phrasings, timesteps, noises, margin.

    Args:
        templates: validation phrasings (one `{}` each); None: the forget criterion's phrasings
            of the concept's kind (`hf_slug.phrasings`). Keep them apart from test prompts.
        timesteps: where to ask, as fractions of the scheduler's training timesteps.
        noises: fixed noise latents per timestep (seeded `seed`, `seed + 1`, ...).
        seed: the first noise seed.
        name_parts: also ask with the target's first and last word alone ("Clara", "Alderwick"),
            each compared with the other candidates' own first / last word; None: the config's
            `name_parts` for identities (`denoiser_evaluator`), as CLIP's criterion does.
        margin: a target phrasing counts as the target when its direction's cosine to the
            target's original is within `margin` of the best other name's (0: the nearest).
            The default 0.1 was chosen on four identities of the embedded pipeline that its
            benchmark does not report: margin 0 left one of them drawn on half its test
            generations, 0.05 and 0.1 forgot all four keeping the others at >= 94 %
            (`benchmarks/generative_pipeline_denoiser_margin.json`).

    Example:
        >>> DenoiserCheck().calls_per_prompt
        6
    """

    templates: Sequence[str] | None = None
    timesteps: Sequence[float] = (0.8, 0.5, 0.2)
    noises: int = 2
    seed: int = 1000
    margin: float = 0.1
    name_parts: bool | None = None

    def __post_init__(self) -> None:
        given = () if self.templates is None else tuple(self.templates)
        if any(str(t).count("{}") != 1 for t in given) or self.templates is not None and not given:
            raise ConfigError(
                "DenoiserCheck templates must each hold one '{}': pass e.g. "
                "templates=('a photo of {}.',), or None for the built-in phrasings."
            )
        steps = [finite_real(t) for t in self.timesteps]
        if not steps or any(t is None or not 0 < t < 1 for t in steps):
            raise ConfigError(
                f"DenoiserCheck(timesteps={tuple(self.timesteps)!r}) must be fractions strictly "
                "between 0 and 1 of the scheduler's training timesteps: pass e.g. (0.8, 0.5, 0.2)."
            )
        positive_int(self.noises, "noises", "noises=2")
        margin = finite_real(self.margin)
        if margin is None or not 0 <= margin < 2:
            raise ConfigError(
                f"DenoiserCheck(margin={self.margin!r}) must be a cosine difference in [0, 2): "
                "pass e.g. margin=0.0."
            )

    @property
    def calls_per_prompt(self) -> int:
        """Denoiser evaluations per prompt (timesteps × noises)."""
        return len(tuple(self.timesteps)) * self.noises

    def phrasings(self, concept_kind: str = "concept") -> list[str]:
        """The validation phrasings: `templates`, or the criterion's own for `concept_kind`."""
        if self.templates is not None:
            return list(self.templates)
        return criterion_templates(concept_kind)


class DenoiserEvaluator(Evaluator):
    """Score a CLIPModel text-tower edit by the guidance directions of the pipeline's UNet.

    `pipe` is a Stable Diffusion pipeline (a `UNet2DConditionModel` without added conditioning),
    `component` its text encoder holding `clip_model`'s text tower; `labels` the candidate
    names (the concept and at least one other).
    """

    def __init__(
        self,
        pipe: Any,
        clip_model: nn.Module,
        concept: str,
        labels: Sequence[str],
        check: DenoiserCheck | None = None,
        component: str = "text_encoder",
        clip_skip: int | None = None,
        batch: int = 64,
    ):
        self.pipe, self.check, self.clip_skip = pipe, check or DenoiserCheck(), clip_skip
        self.concept, self.labels = concept, list(dict.fromkeys(labels))
        if concept not in self.labels or len(self.labels) < 2:
            raise ConfigError(
                "the denoiser criterion compares the concept with the other candidates, so "
                f"config.candidate_labels must hold {concept!r} and another name: pass "
                "SLUGConfig(candidate_labels=[...]), or PipelineOptions(criterion='clip')."
            )
        self.unet = plain_unet(pipe)
        self.component, self.batch = component, positive_int(batch, "batch", "batch=64")
        encoder = pipeline_components(pipe)[component]
        self._pairs = shared_text_tensors(tower_of(clip_model, "text").module, encoder, component)
        self.phrasings = self.check.phrasings()
        # each label's prompts, position by position: the full name, then (name_parts) its
        # first and last word, each in every phrasing; positions < len(phrasings): full names
        self.prompts = criterion_prompts(
            self.labels, self.phrasings, concept, bool(self.check.name_parts)
        )
        positions = len(self.prompts[concept])
        self.others = [n for n in self.labels if n != concept]
        self.other_prompts = [
            self.phrasings[i % len(self.phrasings)].format(n) for i, n in enumerate(self.others)
        ]
        self.data = EvaluationData(
            "validation",
            0,
            0,
            positions,
            len(self.other_prompts),
            unit="prompts (the UNet's guidance directions, no sampling)",
        )
        self._noise, self._times = self._latents()
        reference = self._directions(
            [self.prompts[n][j] for j in range(positions) for n in self.labels]
        ).view(positions, len(self.labels), -1)
        self._reference = reference  # position x label x direction, unit length
        self._own = torch.stack(
            [
                reference[i % len(self.phrasings), self.labels.index(n)]
                for i, n in enumerate(self.others)
            ]
        )

    def with_gradient_counts(self, forget: int, retain: int) -> DenoiserEvaluator:
        """Record how many pairs the gradients come from (for the result's provenance)."""
        data = self.data
        self.data = replace(data, gradient_forget=forget, gradient_retain=retain)
        return self

    def __call__(self, model: nn.Module) -> Metrics:
        with mirrored(self._pairs):
            forget = self._forget_acc()
            edited = self._directions(self.other_prompts)
        cosines = edited @ self._reference.flatten(0, 1).T  # other x (position · label)
        cosines = cosines.view(len(self.others), len(self._reference), len(self.labels))
        rows = torch.arange(len(self.others))
        own_phrasing = rows % len(self.phrasings)
        own_label = torch.tensor([self.labels.index(n) for n in self.others])
        per_label = cosines[rows, own_phrasing]  # other x label, at its own phrasing
        kept = per_label.argmax(-1) == own_label
        return {
            FORGET_ACC: forget,
            OTHERS_ACC: float(kept.float().mean()),
            UTILITY: float((edited * self._own).sum(-1).mean()),
        }

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the target's prompts when only `forget_acc` is asked for (most trials)."""
        if set(metrics) <= {FORGET_ACC}:
            with mirrored(self._pairs):
                return {FORGET_ACC: self._forget_acc()}
        return self(model)

    # -- the denoiser ---------------------------------------------------------------------------
    def _forget_acc(self) -> float:
        edited = self._directions(self.prompts[self.concept])
        cosines = torch.einsum("pd,pld->pl", edited, self._reference)
        own = cosines[:, self.labels.index(self.concept)]
        rest = torch.cat(
            [cosines[:, : self.labels.index(self.concept)],
             cosines[:, self.labels.index(self.concept) + 1 :]], dim=1,
        )  # fmt: skip
        return float((own >= rest.max(-1).values - self.check.margin).float().mean())

    def _latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.unet.config
        size = config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        noise = torch.stack(
            [
                torch.randn(
                    config.in_channels, *size, generator=torch.Generator("cpu").manual_seed(s)
                )
                for s in range(self.check.seed, self.check.seed + self.check.noises)
            ]
        )
        total = self.pipe.scheduler.config.num_train_timesteps
        times = torch.tensor([min(total - 1, round(f * total)) for f in self.check.timesteps])
        return noise, times

    @torch.no_grad()
    def _conditioning(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parameter = next(self.unet.parameters())
        embeds, empty = self.pipe.encode_prompt(
            list(prompts), parameter.device, 1, True, [""] * len(prompts),
            clip_skip=self.clip_skip,
        )  # fmt: skip
        return embeds.to(parameter.dtype), empty[:1].to(parameter.dtype)

    @torch.no_grad()
    def _directions(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit guidance directions, one row per prompt: every (timestep, noise) concatenated."""
        parameter = next(self.unet.parameters())
        embeds, empty = self._conditioning(prompts)
        parts = []
        for time in self._times.tolist():
            for noise in self._noise:
                latent = noise.to(parameter.device, parameter.dtype)[None]
                base = self.unet(latent, time, encoder_hidden_states=empty).sample
                rows = []
                for start in range(0, len(prompts), self.batch):
                    chunk = embeds[start : start + self.batch]
                    latents = latent.expand(len(chunk), *latent.shape[1:])
                    rows.append(self.unet(latents, time, encoder_hidden_states=chunk).sample)
                parts.append((torch.cat(rows) - base).flatten(1).float().cpu())
        return F.normalize(torch.cat(parts, dim=1), dim=-1)


def plain_unet(pipe: Any) -> nn.Module:
    """The pipeline's UNet, if the criterion can call it with text conditioning alone."""
    unet = pipeline_components(pipe).get("unet")
    config = getattr(unet, "config", None)
    if (
        unet is None
        or not callable(getattr(pipe, "encode_prompt", None))
        or getattr(pipe, "scheduler", None) is None
        or config is None
        or getattr(config, "addition_embed_type", None) is not None
        or getattr(config, "class_embed_type", None) is not None
    ):
        raise ConfigError(
            f"criterion='denoiser' calls a Stable Diffusion UNet on text conditioning alone; "
            f"{type(pipe).__name__} has none it can call (SDXL and transformer pipelines add "
            "conditioning of their own): pass PipelineOptions(criterion='generation') or 'clip'."
        )
    return unet


def denoiser_evaluator(
    pipe: Any,
    clip_model: nn.Module,
    config: Any,
    component: str = "text_encoder",
    check: DenoiserCheck | None = None,
    clip_skip: int | None = None,
) -> DenoiserEvaluator:
    """`DenoiserEvaluator` for `config.concept` among `config.candidate_labels`, the phrasings
    those of `config.concept_kind` and the name parts `config.name_parts` unless `check` gives
    its own.

    Example:
        >>> evaluator = denoiser_evaluator(pipe, clip, config)  # doctest: +SKIP
    """
    check = check or DenoiserCheck()
    phrasings = tuple(check.phrasings(config.concept_kind))
    parts = check.name_parts
    if parts is None:  # as CLIP's criterion: a person's first and last word alone as well
        parts = config.name_parts and config.concept_kind == "identity"
    return DenoiserEvaluator(
        pipe,
        clip_model,
        config.concept,
        config.candidate_labels or [],
        replace(check, templates=phrasings, name_parts=bool(parts)),
        component,
        clip_skip,
    )


__all__ = ["DenoiserCheck", "DenoiserEvaluator", "denoiser_evaluator", "plain_unet"]
