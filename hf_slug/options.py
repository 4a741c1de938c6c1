"""How a SLUG run executes: typed option groups that change cost, never what is forgotten.

`SLUGConfig` says *what* to forget and by which rule (it is saved with every delta); the groups
here say *how* the run goes: where the gradients come from and how the one gradient pass runs
(`GradientOptions`), how the step search spends its evaluations (`SearchSettings`), and what a
run sits on (`UnlearnOptions`: cached gradients, a stack, the candidate tensors, progress bars).

Example:
    >>> import torch
    >>> options = UnlearnOptions(
    ...     cache_dir="slug_cache",
    ...     gradients=GradientOptions(autocast_dtype=torch.bfloat16, checkpointing=True),
    ...     progress=False,
    ... )
    >>> options.gradients.checkpointing
    True
    >>> SearchSettings(initial_step=0.2).max_evaluations
    10
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checks import positive_int, positive_number
from .errors import ConfigError

GradientSource = str | os.PathLike | Mapping[str, torch.Tensor]
"""Precomputed gradients: a name -> tensor mapping or a safetensors file written by a run."""


@dataclass(frozen=True)
class GradientOptions:
    """How the one gradient pass runs: memory and processes (results equal to float rounding).

    Args:
        autocast_dtype: run the forward in this mixed precision (e.g. `torch.bfloat16`); the
            gradient sums stay float32.
        checkpointing: recompute activations in the backward instead of keeping them.
        storage_dtype: dtype of the returned gradients (`torch.bfloat16` halves them).
        accelerator: an `accelerate.Accelerator` (under `accelerate launch`): each process
            takes every n-th batch and the sums are all-reduced.

    Example:
        >>> GradientOptions(checkpointing=True).autocast_dtype is None
        True
    """

    autocast_dtype: torch.dtype | None = None
    checkpointing: bool = False
    storage_dtype: torch.dtype = torch.float32
    accelerator: Any | None = None

    def __post_init__(self) -> None:
        allowed = {
            "autocast_dtype": (None, torch.float16, torch.bfloat16),
            "storage_dtype": (torch.float32, torch.float16, torch.bfloat16),
        }
        for name, choices in allowed.items():
            value = getattr(self, name)
            if value not in choices:  # an int dtype would truncate every gradient to 0
                raise ConfigError(
                    f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}: "
                    "pass e.g. torch.bfloat16 (a torch.dtype, not a string)."
                )
        if not isinstance(self.checkpointing, bool):
            raise ConfigError(f"checkpointing must be True or False, got {self.checkpointing!r}.")


@dataclass(frozen=True)
class SearchSettings:
    """How the step search spends its evaluations (SLUG.md §4): start, budget, precision.

    Args:
        initial_step: the first relative step tried (‖Δθ‖ = s·‖θ⁰‖).
        max_evaluations: trials per layer at most.
        rel_tolerance: stop bisecting once the bracket is this narrow, relative to the step.

    Example:
        >>> SearchSettings(max_evaluations=0)
        Traceback (most recent call last):
        ...
        hf_slug.errors.ConfigError: max_evaluations must be a positive int, got 0: pass max_evaluations=10 or another positive number.
    """

    initial_step: float = 0.1
    max_evaluations: int = 10
    rel_tolerance: float = 0.05

    def __post_init__(self) -> None:
        positive_number(
            self.initial_step, "initial_step", "initial_step=0.1 (the first step tried)"
        )
        positive_int(self.max_evaluations, "max_evaluations", "max_evaluations=10")
        positive_number(self.rel_tolerance, "rel_tolerance", "rel_tolerance=0.05")


@dataclass(frozen=True)
class UnlearnOptions:
    """How `unlearn` runs, beside the concept's data and config.

    Args:
        forget_gradients, retain_gradients: gradients computed before (tensors or a
            safetensors file); the pass is skipped for that side.
        cache_dir: write the gradients there (`forget_gradients-<concept>.safetensors`,
            `retain_gradients.safetensors`) and reuse them on the next call.
        cache_retain: without `cache_dir`, keep the retain gradients in the per-user cache
            (`hf_slug.cache.cache_home()/gradients`, one file per model weights, candidate
            tensors and retain set; as large as the candidate weights in fp32), so the next
            concept on the same model and retain set skips the retain pass.
        gradients: how the gradient pass runs (`GradientOptions`).
        candidates: narrow the candidate tensors (hosts pass the blocks their model reads).
        on_top_of: ConceptDeltas (or name -> tensor dicts) the search runs on top of (a stack).
        avoid: ConceptDeltas, UnlearningResults or tensor names that are no candidates.
        inplace: apply the chosen delta to the model.
        progress: show progress bars.

    Example:
        >>> UnlearnOptions(cache_dir="cache", progress=False).inplace
        False
    """

    forget_gradients: GradientSource | None = None
    retain_gradients: GradientSource | None = None
    cache_dir: str | os.PathLike | None = None
    cache_retain: bool = True
    gradients: GradientOptions = field(default_factory=GradientOptions)
    candidates: Sequence[str] | None = None
    on_top_of: Sequence[Any] = ()
    avoid: Sequence[Any] = ()
    inplace: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.gradients, GradientOptions):
            raise ConfigError(
                f"gradients must be a GradientOptions, got a {type(self.gradients).__name__}: "
                "pass gradients=GradientOptions(autocast_dtype=..., checkpointing=...)."
            )
        if not isinstance(self.cache_retain, bool):
            raise ConfigError(f"cache_retain must be True or False, got {self.cache_retain!r}.")
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, os.PathLike)):
                raise ConfigError(
                    f"cache_dir must be a folder path, got a {type(self.cache_dir).__name__}."
                )
            if Path(self.cache_dir).exists() and not Path(self.cache_dir).is_dir():
                raise ConfigError(
                    f"cache_dir {self.cache_dir} is a file, not a folder: pass a folder path "
                    "(it is created if it does not exist)."
                )
        for name in ("on_top_of", "avoid"):
            if isinstance(getattr(self, name), (Mapping, str, bytes)):
                raise ConfigError(
                    f"{name} takes a list (of deltas, results or names), got a "
                    f"{type(getattr(self, name)).__name__}: wrap it in a list, {name}=[...]."
                )


LEGACY_KEYWORDS = {
    "forget_gradients": "options=UnlearnOptions(forget_gradients=...)",
    "retain_gradients": "options=UnlearnOptions(retain_gradients=...)",
    "cache_dir": "options=UnlearnOptions(cache_dir=...)",
    "candidates": "options=UnlearnOptions(candidates=...)",
    "on_top_of": "options=UnlearnOptions(on_top_of=...)",
    "avoid": "options=UnlearnOptions(avoid=...)",
    "inplace": "options=UnlearnOptions(inplace=...)",
    "progress": "options=UnlearnOptions(progress=...)",
    "autocast_dtype": "options=UnlearnOptions(gradients=GradientOptions(autocast_dtype=...))",
    "gradient_checkpointing": (
        "options=UnlearnOptions(gradients=GradientOptions(checkpointing=...))"
    ),
    "accelerator": "options=UnlearnOptions(gradients=GradientOptions(accelerator=...))",
}


def reject_unknown_keywords(function: str, keywords: Mapping[str, Any]) -> None:
    """Raise `ConfigError` for keywords `function` does not take, naming their new spelling.

    Example:
        >>> reject_unknown_keywords("unlearn", {})
        >>> reject_unknown_keywords("unlearn", {"cache_dir": "c"})
        Traceback (most recent call last):
        ...
        hf_slug.errors.ConfigError: unlearn() no longer takes cache_dir=: pass options=UnlearnOptions(cache_dir=...) (hf_slug.options).
    """
    if not keywords:
        return
    name = next(iter(keywords))
    if name in LEGACY_KEYWORDS:
        raise ConfigError(
            f"{function}() no longer takes {name}=: pass {LEGACY_KEYWORDS[name]} (hf_slug.options)."
        )
    raise ConfigError(f"{function}() got an unexpected keyword argument {name!r}.")


__all__ = [
    "GradientOptions",
    "GradientSource",
    "SearchSettings",
    "UnlearnOptions",
    "reject_unknown_keywords",
]
