"""The two configs: `SLUGConfig` says how to unlearn; `UnlearningConfig` records what a delta is.

`UnlearningConfig` is what `slug_config.json` holds beside a delta's tensors, in the spirit of
PEFT's adapter config: enough to check a base model before applying the delta, to reproduce it,
and to write its model card.

Example:
    >>> config = SLUGConfig(concept="Ada Byron", towers=("vision",))
    >>> config.caption_mode
    'original'
    >>> UnlearningConfig.from_dict({"concept": "Ada Byron", "step": 0.4, "targets": {}}).step
    0.4
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeltaFormatError
from .io import write_json

CONFIG_NAME = "slug_config.json"
WEIGHTS_NAME = "slug_model.safetensors"
STACK_NAME = "slug_stack.json"  # a saved SLUGModel: adapter names, weights, active flags


def _version() -> str:
    from . import __version__

    return __version__


@dataclass
class SLUGConfig:
    """How to run SLUG for one concept.

    Args:
        concept: the concept's name, e.g. "Elon Musk" (also the caption in `concept_name` mode).
        towers: which CLIP tower(s) to take candidate layers from: "vision" and/or "text".
        layer: "auto" to pick over the Pareto front, or layer name(s) to force (full parameter
            names or short labels such as "vision.L3.fc1").
        group: None, "qkv" (q/k/v share one step) or "mlp" (fc1/fc2 share one step).
        caption_mode: forget captions as given ("original") or replaced by `concept`.
        candidate_labels: names the default evaluator classifies forget images among.
        top_k: search only the `top_k` most important front layers per tower (None: all).
        forget_target: the forget metric must fall to at most this (0 = never recognised).
        utility_tolerance: reject steps that lower the utility metric by more than this.
        initial_step, max_evaluations: the step search's start and budget per layer.
        batch_size: batch size of the gradient passes.
        include_projections: also consider the towers' projection matrices.
        forget_metric, utility_metric: the evaluator's metric names the search reads.
    """

    concept: str
    towers: tuple[str, ...] = ("vision", "text")
    layer: str | list[str] = "auto"
    group: str | None = None
    caption_mode: str = "original"
    candidate_labels: list[str] | None = None
    top_k: int | None = None
    forget_target: float = 0.0
    utility_tolerance: float | None = None
    initial_step: float = 0.1
    max_evaluations: int = 10
    batch_size: int = 32
    include_projections: bool = False
    forget_metric: str = "forget_acc"
    utility_metric: str = "utility"

    def __post_init__(self) -> None:
        if isinstance(self.towers, str):
            self.towers = (self.towers,)
        self.towers = tuple(self.towers)
        if not self.concept or not isinstance(self.concept, str):
            raise ValueError("concept must be a non-empty string naming what to unlearn.")
        if self.caption_mode not in ("original", "concept_name"):
            raise ValueError(
                f"caption_mode must be 'original' or 'concept_name', got {self.caption_mode!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["towers"] = list(self.towers)
        return data


@dataclass
class TargetInfo:
    """A targeted base tensor as it was when the delta was computed."""

    shape: list[int]
    dtype: str
    sha256: str
    tower: str | None = None


REQUIRED = ("concept", "step", "targets")


@dataclass
class UnlearningConfig:
    """What one concept's delta is and what it applies to (`slug_config.json`).

    Args:
        concept: the unlearned concept.
        step: the relative step `s` (‖Δθ‖ = s‖θ⁰‖ per tensor).
        targets: parameter name -> `TargetInfo` (shape, dtype, sha256 of the original values).
        scales: parameter name -> the raw scale `s‖θ⁰‖/‖G_f‖` multiplying the forget gradient.
        concept_kind: "identity", "object", "style", "concept", ... (model-card tags).
        model_family: "clip", "stable_diffusion" or "llava"; component: e.g. "text_encoder".
        caption_mode: the forget captions used ("original" or "concept_name").
        base_model_name_or_path, base_model_revision: the base the delta was computed on.
        delta_format: "dense" or "lowrank" (then `rank`); delta_dtype: the stored dtype.
        metrics: a summary (before/after, chosen layer, rule); settings: the `SLUGConfig` used.
    """

    concept: str
    step: float
    targets: dict[str, TargetInfo]
    scales: dict[str, float] = field(default_factory=dict)
    concept_kind: str = "concept"
    model_family: str = "clip"
    component: str | None = None
    caption_mode: str = "original"
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    delta_format: str = "dense"
    delta_dtype: str = "float32"
    rank: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    hf_slug_version: str = field(default_factory=_version)

    @property
    def target_modules(self) -> list[str]:
        """The targeted parameter names."""
        return list(self.targets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnlearningConfig:
        """Build from a dict: unknown keys warn and are ignored, missing required keys raise."""
        if not isinstance(data, dict):
            raise DeltaFormatError(
                f"a slug config must be a JSON object, got {type(data).__name__}."
            )
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise DeltaFormatError(
                f"the slug config lacks required key(s) {missing}: it is not an hf_slug delta "
                "config or it was truncated; save the delta again."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown slug config key(s) {unknown} (written by a newer hf_slug?).",
                stacklevel=2,
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["targets"] = {n: TargetInfo(**t) for n, t in data["targets"].items()}
        except (TypeError, AttributeError) as error:
            raise DeltaFormatError(
                f"the slug config's 'targets' are malformed: {error}."
            ) from error
        return cls(**kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `slug_config.json` into `directory` (atomically); return its path."""
        path = Path(directory) / CONFIG_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnlearningConfig:
        """Read `slug_config.json` from a local delta folder."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise DeltaFormatError(
                f"{path} does not exist: {directory} is not an hf_slug delta folder (it needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME})."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DeltaFormatError(f"{path} is not valid JSON ({error}); save it again.") from error
        return cls.from_dict(data)
