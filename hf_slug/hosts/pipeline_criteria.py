"""Which criterion scores a pipeline's step search, when the caller gives no evaluator.

Three, by name (`PipelineOptions(criterion=...)`):

- "denoiser" (the default where it can run: one text encoder feeding an SD 1.x/2.x UNet): the
  UNet's classifier-free guidance directions of validation phrasings
  (`hf_slug.hosts.denoiser_criterion`);
- "clip": SLUG's held-out CLIP criterion on the pooled text embedding (the default elsewhere,
  with a warning: the UNet reads every token, not the pooled one);
- "generation": every trial drawn by the pipeline and named by an unedited CLIP
  (`hf_slug.hosts.diffusion_criterion`).

Example:
    >>> CRITERIA
    ('denoiser', 'clip', 'generation')
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..evaluation import Evaluator
from .denoiser_criterion import denoiser_evaluator, plain_unet
from .diffusion_criterion import generation_evaluator
from .generation import pipeline_components

CRITERIA = ("denoiser", "clip", "generation")


def check_criterion(criterion: str | None) -> None:
    """A typed error naming the criteria when `criterion` is none of them (None: the default).

    Example:
        >>> check_criterion("clip")
    """
    if criterion is not None and criterion not in CRITERIA:
        raise ConfigError(
            f"PipelineOptions(criterion={criterion!r}) is no criterion: pass one of {CRITERIA} "
            "('denoiser' the UNet's guidance directions, 'clip' CLIP zero-shot, 'generation' "
            "judged generations), or None."
        )


def default_criterion(pipe: Any, encoders: int) -> str:
    """ "denoiser" where it can run; else "clip", with a warning naming the host-aware option.

    Example:
        >>> default_criterion(pipe, 1)  # doctest: +SKIP
        'denoiser'
    """
    try:
        plain_unet(pipe)
    except ConfigError:
        usable = False
    else:
        usable = encoders == 1
    if usable:
        return "denoiser"
    warnings.warn(
        "unlearn_pipeline: the default denoiser criterion needs one text encoder feeding an SD "
        "1.x/2.x UNet, which this pipeline does not have; the search uses CLIP's criterion on "
        "the pooled text embedding instead, which the denoiser may not follow. Pass "
        "PipelineOptions(criterion='generation') for a host-aware search, or criterion='clip' "
        "to choose CLIP's and silence this warning.",
        UserWarning,
        stacklevel=4,
    )
    return "clip"


def pipeline_evaluator(
    options: Any,
    pipe: Any,
    clip_model: nn.Module,
    processor: Any,
    config: Any,
    component: str = "text_encoder",
    encoders: int = 1,
) -> Evaluator | None:
    """The search's evaluator for `options.criterion` (None: `default_criterion`); None for
    "clip", whose held-out split `unlearn` makes itself. `options` is the call's
    `PipelineOptions` (its `clip_skip`, `denoiser` and `generation` checks, `unlearn.progress`).

    Example:
        >>> pipeline_evaluator(PipelineOptions(criterion="clip"), pipe, clip, processor, config)
        ... # doctest: +SKIP
    """
    check_criterion(options.criterion)
    criterion = options.criterion or default_criterion(pipe, encoders)
    if criterion == "clip":
        return None
    if criterion == "denoiser":
        return denoiser_evaluator(
            pipe, clip_model, config, component, options.denoiser, options.clip_skip
        )
    if not (callable(pipe) and pipeline_components(pipe).get("unet") is not None):
        raise ConfigError(
            "PipelineOptions(criterion='generation') draws with the pipeline, but this one has "
            "no UNet to draw with: pass criterion='clip'."
        )
    return generation_evaluator(
        pipe,
        clip_model,
        processor,
        config,
        component,
        options.generation,
        options.unlearn.progress,
    )


__all__ = ["CRITERIA", "check_criterion", "default_criterion", "pipeline_evaluator"]
