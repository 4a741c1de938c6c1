"""A cheap host-aware criterion for pipelines: ask the denoiser, not CLIP's pooled embedding.

The UNet of a Stable Diffusion pipeline reads every token's hidden state of the text encoder;
what a prompt makes it draw is carried by its classifier-free guidance direction — the noise it
predicts with the prompt minus the noise it predicts with the empty prompt. `DenoiserEvaluator`
scores each trial of the step search on that direction, with no sampling, VAE or judge: for
fixed noise latents and a few timesteps it asks the UNet for every (prompt, timestep, noise)
on the conditioning the pipeline itself builds (`pipe.encode_prompt`, so `clip_skip` holds).

Before any trial, with the unedited encoder, it records the guidance direction of every
candidate name under each validation phrasing (for identities also with each name's first and
last word alone, as CLIP's criterion does). A trial's target prompt counts as the target
when its direction (all timesteps and noises concatenated) is at least as close, by cosine, to
the target's original direction as to any other name's, less `margin`. The unedited directions
are remembered for the next concept on the same weights (`hf_slug.hosts.denoiser_memory`).
Metrics: `forget_acc` (share of the target's phrasings that still point to the target),
`others_acc` (share of the other names whose direction still points to themselves) and
`utility` (mean cosine between each other name's direction and its original: 1.0 untouched).

On the embedded pipeline this agrees with generation where CLIP's criterion does not: at the
step CLIP's criterion chose for Eileen Collins (and at 2×) every phrasing still points to her,
and the pipeline still draws her (`benchmarks/generative_pipeline.md`).

Example:
    >>> check = DenoiserCheck(templates=("a photo of {}.",), timesteps=(0.5,), noises=1)
    >>> check.calls_per_prompt
    1
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import gradient_cache_enabled
from ..checks import finite_real, positive_int
from ..errors import ConfigError, NonFiniteOutputError
from ..evaluation import Evaluator, Metrics
from ..phrasings import criterion_templates
from ..towers import tower_of
from ..validation import EvaluationData, criterion_prompts
from ..weights import mirrored
from .base import check_tower
from .denoiser_memory import remembered, weights_key
from .diffusion_criterion import FORGET_ACC, OTHERS_ACC, UTILITY, shared_text_tensors
from .generation import pipeline_components
from .prompt_conditioning import PromptConditioning, first_text_block

MAX_CALLS_PER_PROMPT = 256


def _fills(template: Any) -> bool:
    """Whether `template` is a string with one `{}` that `.format(name)` fills."""
    if not isinstance(template, str) or template.count("{}") != 1:
        return False
    try:
        template.format("x")
    except (KeyError, IndexError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class DenoiserCheck:
    """What the denoiser criterion asks the UNet: phrasings, timesteps, noises, margin.

    Args:
        templates: validation phrasings (one `{}` each); None: the forget criterion's phrasings
            of the concept's kind (`hf_slug.phrasings`). Keep them apart from test prompts.
        timesteps: where to ask, as fractions of the scheduler's training timesteps.
        noises: fixed noise latents per timestep (seeded `seed`, `seed + 1`, ...). The default,
            one latent at timestep 0.5 (one UNet evaluation per prompt), chose the same layer
            as three timesteps × two latents for each of the four tuning identities, forgetting
            all four with the others at 94.8-100.7 % of their generations
            (`benchmarks/generative_pipeline_denoiser_check.json`); timed alone, its search takes
            1.8-3.1x CLIP's, the previous check's 12.9-24.2x (`benchmarks/denoiser_cost.json`).
        seed: the first noise seed.
        name_parts: also ask with the target's first and last word alone ("Clara", "Alderwick"),
            each compared with the other candidates' own first / last word; None: the config's
            `name_parts` for identities (`denoiser_evaluator`), as CLIP's criterion does.
        misspellings: also ask with this many misspellings of the target (the others spelt
            right); None: the config's `misspellings` if given, else none: the kind's default
            (8 for identities) averages the update direction only, as each one asked costs one
            UNet evaluation per phrasing.
        margin: a target phrasing counts as the target when its direction's cosine to the
            target's original is within `margin` of the best other name's (0: the nearest).
            The default 0.1 was chosen on four identities of the embedded pipeline that its
            benchmark does not report: margin 0 left one of them drawn on half its test
            generations, 0.05 and 0.1 forgot all four keeping the others at >= 94 %
            (`benchmarks/generative_pipeline_denoiser_margin.json`).

    Example:
        >>> DenoiserCheck().calls_per_prompt
        1
    """

    templates: Sequence[str] | None = None
    timesteps: Sequence[float] = (0.5,)
    noises: int = 1
    seed: int = 1000
    margin: float = 0.1
    name_parts: bool | None = None
    misspellings: int | None = None

    def __post_init__(self) -> None:
        given = () if self.templates is None else tuple(self.templates)
        if any(not _fills(t) for t in given) or self.templates is not None and not given:
            raise ConfigError(
                "DenoiserCheck templates must each hold one '{}': pass e.g. "
                "templates=('a photo of {}.',), or None for the built-in phrasings."
            )
        if isinstance(self.timesteps, (str, bytes)) or not isinstance(self.timesteps, Sequence):
            raise ConfigError(
                f"DenoiserCheck(timesteps={self.timesteps!r}) must be a sequence of fractions: "
                "pass e.g. (0.8, 0.5, 0.2)."
            )
        steps = [finite_real(t) for t in self.timesteps]
        if not steps or any(t is None or not 0 < t < 1 for t in steps):
            raise ConfigError(
                f"DenoiserCheck(timesteps={tuple(self.timesteps)!r}) must be fractions strictly "
                "between 0 and 1 of the scheduler's training timesteps: pass e.g. (0.8, 0.5, 0.2)."
            )
        positive_int(self.noises, "noises", "noises=2")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(
                f"DenoiserCheck(seed={self.seed!r}) must be an int >= 0: pass seed=1000."
            )
        if self.misspellings is not None and (
            isinstance(self.misspellings, bool)
            or not isinstance(self.misspellings, int)
            or self.misspellings < 0
        ):
            raise ConfigError(
                f"DenoiserCheck(misspellings={self.misspellings!r}) must be None or an int >= 0: "
                "pass e.g. misspellings=2."
            )
        if self.calls_per_prompt > MAX_CALLS_PER_PROMPT:
            raise ConfigError(
                f"DenoiserCheck asks the UNet {self.calls_per_prompt} times per prompt (timesteps × "
                f"noises); at most {MAX_CALLS_PER_PROMPT}: pass fewer, e.g. noises=2."
            )
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
        if isinstance(labels, str) or any(not isinstance(x, str) or not x.strip() for x in labels):
            raise ConfigError(
                f"the denoiser criterion's labels must be a list of non-empty names, got "
                f"{labels!r}: pass e.g. SLUGConfig(candidate_labels=[concept, 'another name'])."
            )
        self.concept, self.labels = concept, list(dict.fromkeys(labels))
        if concept not in self.labels or len(self.labels) < 2:
            raise ConfigError(
                "the denoiser criterion compares the concept with the other candidates, so "
                f"config.candidate_labels must hold {concept!r} and another name: pass "
                "SLUGConfig(candidate_labels=[...]), or PipelineOptions(criterion='clip')."
            )
        self.unet = plain_unet(pipe)
        from .diffusion import StableDiffusionHost  # diffusion imports this module's chooser

        check_tower(StableDiffusionHost(pipe, component, clip_skip), clip_model)
        self.component, self.batch = component, positive_int(batch, "batch", "batch=64")
        encoder = pipeline_components(pipe)[component]
        self._pairs = shared_text_tensors(tower_of(clip_model, "text").module, encoder, component)
        self._prompt_states = PromptConditioning(pipe, component, clip_skip)
        self._hardest = 0  # the spelling group that last failed a trial: asked first
        self.phrasings = self.check.phrasings()
        # each label's prompts, position by position: the full name, then (name_parts) its
        # first and last word, each in every phrasing; positions < len(phrasings): full names
        self.prompts = criterion_prompts(
            self.labels,
            self.phrasings,
            concept,
            bool(self.check.name_parts),
            self.check.misspellings or 0,
        )
        positions = len(self.prompts[concept])
        # a position where another label's prompt is the target's own (a shared first name)
        # cannot tell them apart: that label is left out there, and a position with no label
        # left is not asked
        target = self.prompts[concept]
        self._clash = torch.tensor(
            [[n != concept and self.prompts[n][p] == target[p] for n in self.labels]
             for p in range(positions)]
        )  # fmt: skip
        others_left = ~self._clash.clone()
        others_left[:, self.labels.index(concept)] = False
        self._asked_count = max(1, int(others_left.any(-1).sum()))  # positions asked
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
        reference = remembered(
            self._memory_key(),
            [self.prompts[n][j] for j in range(positions) for n in self.labels],
            self._directions,
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
        return self.evaluate_only(model, (FORGET_ACC, OTHERS_ACC, UTILITY))

    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        """Trials that edit only `names` follow: the encoder's blocks below them run once per
        prompt list (`PromptConditioning`)."""
        self._prompt_states.begin(first_text_block(model, names))

    def end(self) -> None:
        self._prompt_states.end()

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """The target's prompts one spelling (full name, first, last, ...) at a time, the one
        that last failed a trial first; stop once more are named than `ceiling` allows (then
        `forget_acc` is a lower bound that already fails: the same decision)."""
        if metric != FORGET_ACC:
            return self.evaluate_only(model, (metric,)), True
        size, total = len(self.phrasings), len(self.prompts[self.concept])
        starts = list(range(0, total, size))
        first = self._hardest if self._hardest < len(starts) else 0
        allowed, named = ceiling * self._asked_count, 0
        with mirrored(self._pairs):
            for asked, group in enumerate([*range(first, len(starts)), *range(first)], 1):
                start = starts[group]
                named += int(self._named(slice(start, start + size)).sum())
                if named > allowed:
                    self._hardest = group
                    if asked < len(starts):
                        return {FORGET_ACC: named / self._asked_count}, False
        return {FORGET_ACC: named / self._asked_count}, True

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the target's prompts when only `forget_acc` is asked for (most trials), only the
        other names' when it is not (the kept step's remaining metrics)."""
        wanted = set(metrics)
        with mirrored(self._pairs):
            found = {FORGET_ACC: self._forget_acc()} if FORGET_ACC in wanted or not wanted else {}
            if wanted - {FORGET_ACC}:
                found.update(self._others())
        return found

    def _others(self) -> Metrics:
        """`others_acc` and `utility`: each other name at its own phrasing, against the unedited
        directions of every name there."""
        edited = self._directions(self.other_prompts)
        cosines = edited @ self._reference.flatten(0, 1).T  # other x (position · label)
        cosines = cosines.view(len(self.others), len(self._reference), len(self.labels))
        rows = torch.arange(len(self.others))
        own_phrasing = rows % len(self.phrasings)
        own_label = torch.tensor([self.labels.index(n) for n in self.others])
        per_label = cosines[rows, own_phrasing]  # other x label, at its own phrasing
        kept = per_label.argmax(-1) == own_label
        return {
            OTHERS_ACC: float(kept.float().mean()),
            UTILITY: float((edited * self._own).sum(-1).mean()),
        }

    # -- the denoiser ---------------------------------------------------------------------------
    def _memory_key(self) -> tuple | None:
        """What the unedited directions depend on (`hosts.denoiser_memory`), or None when they
        are not to be remembered: the weights' digest, the conditioning path, the latents."""
        encoder = self._prompt_states.encoder
        digest = weights_key(encoder, self.unet) if gradient_cache_enabled() else None
        if digest is None:
            return None
        parameter = next(self.unet.parameters())
        tokenizer = self.pipe.tokenizer
        return (
            digest,
            self.component,
            self.clip_skip,
            tuple(self._times.tolist()),
            self.check.seed,
            tuple(self._noise.shape),
            str(parameter.dtype),
            str(parameter.device),
            type(tokenizer).__name__,
            len(tokenizer),
            getattr(tokenizer, "model_max_length", None),
        )

    def _forget_acc(self) -> float:
        return float(self._named(slice(None)).sum()) / self._asked_count

    def _named(self, positions: slice) -> torch.Tensor:
        """Whether each of the target's prompts at `positions` still points to the target (a
        position that asks nothing, every other label clashing there, counts False)."""
        edited = self._directions(self.prompts[self.concept][positions])
        cosines = torch.einsum("pd,pld->pl", edited, self._reference[positions])
        index = self.labels.index(self.concept)
        own = cosines[:, index]
        rest = cosines.masked_fill(self._clash[positions], -math.inf)
        rest[:, index] = -math.inf
        best = rest.max(-1).values
        return (own >= best - self.check.margin) & (best > -math.inf)

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

    def _conditioning(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(each prompt's hidden states, the empty prompt's) on the UNet's device and dtype."""
        parameter = next(self.unet.parameters())
        states, empty = self._prompt_states(prompts)
        return (
            states.to(parameter.device, parameter.dtype),
            empty.to(parameter.device, parameter.dtype),
        )

    @torch.no_grad()
    def _directions(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit guidance directions, one row per prompt: every (timestep, noise) concatenated.

        The UNet is called on up to `batch` samples at once, every sample a (timestep, noise,
        prompt) with its own timestep: a trial takes as few calls as `batch` allows."""
        parameter = next(self.unet.parameters())
        embeds, empty = self._conditioning(prompts)
        noise = self._noise.to(parameter.device, parameter.dtype)
        pairs = len(self._times) * len(noise)  # (timestep, noise), timestep-major
        latents = noise.repeat(len(self._times), 1, 1, 1)  # pair x latent
        times = self._times.repeat_interleave(len(noise)).to(parameter.device)  # pair
        # one batch: every pair with the empty prompt (state 0), then with each prompt
        pair_of = torch.cat(
            [torch.arange(pairs), torch.arange(pairs).repeat_interleave(len(prompts))]
        )  # sample -> pair
        state_of = torch.cat(
            [torch.zeros(pairs, dtype=torch.long), torch.arange(1, len(prompts) + 1).repeat(pairs)]
        )  # sample -> state
        found = self._predict(latents, times, torch.cat([empty, embeds]), pair_of, state_of)
        base, predicted = found[:pairs], found[pairs:]
        predicted = predicted.view(pairs, len(prompts), -1) - base[:, None]
        found = predicted.transpose(0, 1).flatten(1).float().cpu()
        if not torch.isfinite(found).all():
            raise NonFiniteOutputError(
                "the pipeline's UNet gives NaN or inf guidance directions: the text encoder's "
                "weights (or an edit of them) overflow its dtype; load the pipeline in float32 "
                "or lower the step."
            )
        return F.normalize(found, dim=-1)

    def _predict(
        self,
        latents: torch.Tensor,
        times: torch.Tensor,
        states: torch.Tensor,
        pair_of: torch.Tensor,
        state_of: torch.Tensor,
    ) -> torch.Tensor:
        """The UNet's flattened noise predictions for samples (latents[pair_of[i]],
        times[pair_of[i]], states[state_of[i]]), at most `batch` samples per call."""
        found = []
        for start in range(0, len(pair_of), self.batch):
            pair, state = pair_of[start : start + self.batch], state_of[start : start + self.batch]
            out = self.unet(latents[pair], times[pair], encoder_hidden_states=states[state])
            found.append(out.sample.flatten(1))
        return torch.cat(found)


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
        or getattr(config, "num_class_embeds", None) is not None
        or getattr(config, "in_channels", None) != getattr(config, "out_channels", None)
    ):
        raise ConfigError(
            f"criterion='denoiser' calls a Stable Diffusion UNet on text conditioning alone; "
            f"{type(pipe).__name__} has none it can call (SDXL, upscaler, inpainting and "
            "transformer pipelines add inputs of their own): pass "
            "PipelineOptions(criterion='generation') or 'clip'."
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
    phrasings = tuple(
        check.templates
        if check.templates is not None
        else criterion_templates(config.concept_kind, tuple(config.templates or ()))
    )
    parts = check.name_parts
    if parts is None:  # as CLIP's criterion: a person's first and last word alone as well
        parts = config.name_parts and config.concept_kind == "identity"
    return DenoiserEvaluator(
        pipe,
        clip_model,
        config.concept,
        config.candidate_labels or [],
        replace(
            check,
            templates=phrasings,
            name_parts=bool(parts),
            misspellings=(config.misspellings or 0)  # the user's own number, not the kind's
            if check.misspellings is None
            else check.misspellings,
        ),
        component,
        clip_skip,
    )


__all__ = ["DenoiserCheck", "DenoiserEvaluator", "denoiser_evaluator", "plain_unet"]
