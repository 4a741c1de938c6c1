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
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checks import finite_real, positive_int, positive_number
from .config_fields import CAPTION_MODES, FIELD_CHECKS, TOWERS, TargetInfo
from .errors import ConfigError, DeltaFormatError
from .evaluation.base import FORGET_ACC, UTILITY
from .io import parse_json_bytes, write_json
from .options import SearchSettings
from .phrasings import MAX_MISSPELLINGS as MAX_SPELLS
from .phrasings import criterion_templates
from .version import __version__

CONFIG_NAME = "slug_config.json"
WEIGHTS_NAME = "slug_model.safetensors"
STACK_NAME = "slug_stack.json"  # a saved SLUGModel: adapter names, weights, active flags


DEFAULT_MARGIN = 0.05
DEFAULT_MARGINS: dict[str, float] = {"identity": 0.3}
"""The criterion's margin per `concept_kind` when `SLUGConfig(margin=None)` and the text tower is
searched; `DEFAULT_MARGIN` otherwise. Identities: 0.3 (benchmarks/generalisation.md: on 24
embedded identities 0.05 -> 0.15 took FA@5 from 29.0 to 2.1 % at the same retain and utility;
with every text `fc2` searched, 0.15 / 0.2 / 0.3 forgot 23 / 23 / 24 of them under every
held-out phrasing, FA@5 3.3 / 0.9 / 0.2 %, utility +0.1 / +0.0 / -0.2 on average, worst -0.3 /
-0.7 / -1.2); objects and styles keep 0.05 (0.15 cost the other kind up to 10.4 points). It was
chosen on text edits: a search of the vision tower alone keeps 0.05 (on the embedded VLM every
vision block meeting 0.15 lost more than the utility guard allows)."""

DEFAULT_MISSPELLINGS: dict[str, int] = {"identity": 8}
"""How many misspellings of the name `SLUGConfig(misspellings=None)` checks and averages the
forget gradient over, per `concept_kind`, when the text tower is searched; 0 otherwise.
Identities: 8 (on 8 embedded identities' validation views, 24 held-out one- and two-typo
spellings each, drawn apart from these: 0 / 4 / 8 misspellings left 4 / 1 / 0 of the 186
spellings the original names still named above 5 %, utility -0.1 / +0.0 / -0.1 points on
average; `benchmarks/typo_sweep.py`, generalisation.md); objects and styles keep 0 (their typos
are often other words, "bat" for boat; on 5 of them 2 / 4 misspellings still left 17 / 13 of 42
typo'd spellings named and cost 6.0 / 7.5 points of the other kind's accuracy)."""


@dataclass
class SLUGConfig:
    """What to forget and by which rule, for one concept (saved with its delta).

    The fields form three groups; the search reads its group as `config.search_settings`
    (`hf_slug.options.SearchSettings`, which also holds the defaults), and how a run executes
    (gradient caches, memory, stacks, progress) is `hf_slug.UnlearnOptions`, not config.

    Args:
        concept: the concept's name, e.g. "Elon Musk" (also the caption in `concept_name` mode).

    Candidates (which weight matrices may change):
        towers: which CLIP tower(s) to take candidate layers from: "vision" and/or "text".
        layer: "auto" to pick over the Pareto front, or layer name(s) to force (full parameter
            names or short labels such as "vision.L3.fc1").
        group: None, "qkv" (q/k/v share one step) or "mlp" (fc1/fc2 share one step).
        top_k: search only the `top_k` most important front layers per tower (None: all and,
            when the evaluator reports the prompt drift as the default one does, every block's
            MLP output `fc2` of the null-space towers besides the front: the projection changes
            what an edit costs, and on the embedded world the front missed the `fc2` that kept
            the other styles; `hf_slug.selection.units_to_search`).
        include_projections: also consider the towers' projection matrices.

    Criterion (when a concept counts as forgotten, and what it may cost):
        candidate_labels: names the default evaluator classifies forget images among.
        concept_kind: "identity", "object", "style" or "concept": picks the built-in phrasings
            the default forget criterion checks (`hf_slug.phrasings`) and the card's tags.
        templates: the user's own phrasings (each with one "{}"), checked besides the built-in.
        name_parts: for identities, the criterion also checks each name's first and last word.
        misspellings: this many misspellings of the concept's name (`hf_slug.phrasings`) are
            checked by the criterion too, and the step goes along the forget gradient averaged
            over the captions written with each of them (layers are still scored on the name
            as written), so a typo'd name is silenced too. None (the default): the kind's own,
            `DEFAULT_MISSPELLINGS` — 8 for identities when the text tower is searched, else 0
            (objects' and styles' typos are often other words and cost them utility;
            benchmarks/robustness.md). `criterion_misspellings` is the number in force.
        margin: the default criterion counts an image as still recognised while, under any
            phrasing, the concept's cosine trails the best other label's by less than this.
            None (the default): the kind's own, `DEFAULT_MARGINS` — 0.3 for identities, 0.05
            otherwise and for a search of the vision tower alone (chosen on the embedded world:
            identities forgot deeper and stacked better at no cost, objects and styles lost up
            to 10 points of the other kind at 0.15; benchmarks/generalisation.md).
            `criterion_margin` is the one in force.
        validation_share: without an evaluator, this share of the forget and of the retain pairs
            (drawn with `split_seed`) is held out: trials are scored on it, gradients never see
            it. 0 scores on the gradient pairs themselves (reported as "in-sample").
        forget_target: the forget metric must fall to at most this (0 = never recognised).
        utility_tolerance: reject steps that lower the utility metric by more than this, on the
            evaluator's scale (0.1: ten points of hf_slug's 0–1 utilities; None turns the guard
            off; an evaluator without the metric runs unguarded, with a warning). Chosen on the embedded
            world: no layer the default picks there loses more than 6.1 points, the choices it
            refuses lost 12–63 (benchmarks/generalisation.md).
        forget_metric, utility_metric: the evaluator's metric names the search reads.

    Update direction (hf_slug's extension of SLUG, `hf_slug.null_space`):
        retain_null_space: the forget gradient of each candidate of `null_space_towers` is
            projected off the directions holding this share of the energy of the retain pairs'
            inputs to that tensor, so the edit leaves retain inputs' outputs (nearly) unchanged
            (0.999 chosen on the embedded world: benchmarks/generalisation.md). None: SLUG's
            plain gradient.
        null_space_towers: the towers whose candidates are projected (default text only: image
            inputs do not separate a concept from the rest the way a name's tokens do). With a
            null space, a projected edit that meets the criterion is chosen over any plain one
            (`hf_slug.null_space.PROJECTED_FIRST`).

    Search and data:
        initial_step, max_evaluations: the step search's start and budget per layer.
        caption_mode: forget captions as given ("original") or replaced by `concept`.
        batch_size: batch size of the gradient passes.

    Example:
        >>> config = SLUGConfig(concept="Ada Byron", candidate_labels=["Ada Byron", "Alan Kay"])
        >>> config.margin is None, config.criterion_margin
        (True, 0.05)
        >>> person = SLUGConfig(concept="Ada Byron", concept_kind="identity")
        >>> person.criterion_margin, person.criterion_misspellings
        (0.3, 8)
    """

    concept: str
    towers: tuple[str, ...] = ("vision", "text")
    layer: str | list[str] = "auto"
    group: str | None = None
    caption_mode: str = "original"
    candidate_labels: list[str] | None = None
    concept_kind: str = "concept"
    templates: tuple[str, ...] = ()
    margin: float | None = None
    name_parts: bool = True
    misspellings: int | None = None
    validation_share: float = 0.25
    split_seed: int = 0
    top_k: int | None = None
    forget_target: float = 0.0
    utility_tolerance: float | None = 0.1
    initial_step: float = SearchSettings.initial_step  # one set of search defaults
    max_evaluations: int = SearchSettings.max_evaluations
    batch_size: int = 32
    include_projections: bool = False
    retain_null_space: float | None = 0.999
    null_space_towers: tuple[str, ...] = ("text",)
    forget_metric: str = FORGET_ACC
    utility_metric: str = UTILITY

    def __post_init__(self) -> None:
        """Check every field's type and range (ConfigError), before any gradient work."""
        if not isinstance(self.concept, str) or not self.concept.strip():
            raise ConfigError(
                f"concept must be a non-empty string naming what to unlearn, got "
                f"{self.concept!r}: pass e.g. concept='Ada Byron'."
            )
        self.towers = _as_tuple(self.towers, "towers", "'vision', 'text' or a tuple of them")
        if not self.towers or any(t not in TOWERS for t in self.towers):
            raise ConfigError(
                f"towers must be a non-empty subset of {TOWERS}, got {self.towers!r}: pass "
                "e.g. towers=('vision', 'text')."
            )
        self._check_layer()
        if self.group not in (None, "qkv", "mlp"):
            raise ConfigError(f"group must be None, 'qkv' or 'mlp', got {self.group!r}.")
        if self.caption_mode not in CAPTION_MODES:
            raise ConfigError(
                f"caption_mode must be 'original' or 'concept_name', got {self.caption_mode!r}."
            )
        self._check_labels()
        self._check_criterion()
        positive_int(self.batch_size, "batch_size", "batch_size=32")
        positive_int(self.max_evaluations, "max_evaluations", "max_evaluations=10")
        if self.top_k is not None:
            positive_int(self.top_k, "top_k", "top_k=4, or top_k=None for every front layer")
        positive_number(self.initial_step, "initial_step", "initial_step=0.1")
        if finite_real(self.forget_target) is None:
            raise ConfigError(
                f"forget_target must be a finite number on the forget metric's scale, got "
                f"{self.forget_target!r}: pass e.g. forget_target=0.0 (never recognised)."
            )
        tolerance = self.utility_tolerance
        if tolerance is not None and (finite_real(tolerance) is None or tolerance < 0):
            raise ConfigError(
                f"utility_tolerance must be None or a finite number >= 0, got {tolerance!r}: "
                "pass e.g. utility_tolerance=0.01."
            )
        self._check_null_space()
        if not isinstance(self.include_projections, bool):
            raise ConfigError(
                f"include_projections must be True or False, got {self.include_projections!r}."
            )
        for name in ("forget_metric", "utility_metric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(
                    f"{name} must be a metric name (a non-empty str), got {getattr(self, name)!r}."
                )

    def _check_layer(self) -> None:
        layer = self.layer
        if isinstance(layer, str):
            if not layer.strip():
                raise ConfigError(
                    "layer must be 'auto' or a layer name, got an empty string: pass "
                    "layer='auto' or e.g. layer='vision.L3.fc1'."
                )
            return
        if isinstance(layer, tuple):
            layer = list(layer)
        if not isinstance(layer, list) or not layer:
            raise ConfigError(
                f"layer must be 'auto', a layer name or a non-empty list of names, got "
                f"{self.layer!r}: pass layer='auto' or e.g. layer=['vision.L3.fc1']."
            )
        if any(not isinstance(n, str) or not n.strip() for n in layer):
            raise ConfigError(
                f"every layer name must be a non-empty string, got {self.layer!r}: pass e.g. "
                "layer=['vision.L3.fc1']."
            )
        self.layer = layer

    def _check_labels(self) -> None:
        labels = self.candidate_labels
        if labels is None:
            return
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or not labels:
            raise ConfigError(
                f"candidate_labels must be None or a non-empty list of names, got {labels!r}: "
                f"pass e.g. candidate_labels=[{self.concept!r}, 'another name']."
            )
        if any(not isinstance(x, str) or not x.strip() for x in labels):
            raise ConfigError(f"every candidate label must be a non-empty string, got {labels!r}.")
        self.candidate_labels = list(labels)

    def _check_criterion(self) -> None:
        self.templates = _as_tuple(
            self.templates,
            "templates",
            "a tuple of phrasings with one '{}', e.g. ('a photo of {}.',)",
        )
        criterion_templates(self.concept_kind, self.templates)
        margin = None if self.margin is None else finite_real(self.margin)
        if self.margin is not None and (margin is None or not 0 <= margin < 2):
            raise ConfigError(
                f"margin must be a cosine difference in [0, 2), got {self.margin!r}: pass e.g. "
                "margin=0.05, 0 for the plain top-1 criterion, or None for the kind's default."
            )
        if not isinstance(self.name_parts, bool):
            raise ConfigError(f"name_parts must be True or False, got {self.name_parts!r}.")
        count = self.misspellings
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SPELLS
        ):
            raise ConfigError(
                f"misspellings must be None or an int from 0 to {MAX_SPELLS}, got {count!r}: pass "
                "e.g. misspellings=2, 0 to check the name only as written, or None for the "
                "kind's default."
            )
        share = finite_real(self.validation_share)
        if share is None or not 0 <= share < 1:
            raise ConfigError(
                f"validation_share must be in [0, 1), got {self.validation_share!r}: pass e.g. "
                "validation_share=0.25, or 0 to score on the gradient pairs (in-sample)."
            )
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise ConfigError(f"split_seed must be an int, got {self.split_seed!r}.")

    def _check_null_space(self) -> None:
        energy = self.retain_null_space
        if energy is not None and (finite_real(energy) is None or not 0 < energy <= 1):
            raise ConfigError(
                f"retain_null_space must be None or a share of energy in (0, 1], got {energy!r}: "
                "pass e.g. retain_null_space=0.999, or None for SLUG's plain gradient."
            )
        self.null_space_towers = _as_tuple(
            self.null_space_towers, "null_space_towers", "'text', 'vision' or a tuple of them"
        )
        if not self.null_space_towers or any(t not in TOWERS for t in self.null_space_towers):
            raise ConfigError(
                f"null_space_towers must be a non-empty subset of {TOWERS}, got "
                f"{self.null_space_towers!r}: pass e.g. ('text',), or retain_null_space=None "
                "to project nothing."
            )

    @property
    def search_settings(self) -> SearchSettings:
        """The step search's group of this config (`initial_step`, `max_evaluations`)."""
        return SearchSettings(self.initial_step, self.max_evaluations)

    @property
    def criterion_margin(self) -> float:
        """The margin in force: `margin`, or when None the kind's `DEFAULT_MARGINS` entry if the
        text tower is searched, else `DEFAULT_MARGIN` (so a `dataclasses.replace` of a
        `margin=None` config follows its new kind and towers; `to_dict` pins the number)."""
        if self.margin is not None:
            return float(self.margin)
        if "text" not in self.towers:
            return DEFAULT_MARGIN
        return DEFAULT_MARGINS.get(self.concept_kind, DEFAULT_MARGIN)

    @property
    def criterion_misspellings(self) -> int:
        """The misspellings in force: `misspellings`, or when None the kind's
        `DEFAULT_MISSPELLINGS` entry if the text tower is searched, else 0."""
        if self.misspellings is not None:
            return int(self.misspellings)
        if "text" not in self.towers:
            return 0
        return DEFAULT_MISSPELLINGS.get(self.concept_kind, 0)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values, with the margin and misspellings in force."""
        data = asdict(self)
        data["margin"] = self.criterion_margin
        data["misspellings"] = self.criterion_misspellings
        data["towers"] = list(self.towers)
        data["templates"] = list(self.templates)
        data["null_space_towers"] = list(self.null_space_towers)
        return data


def _as_tuple(value: Any, name: str, expected: str) -> tuple:
    """`value` as a tuple (a lone string becomes a 1-tuple); ConfigError unless a list/tuple."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be {expected}, got {value!r}.")
    return tuple(value)


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
    hf_slug_version: str = __version__

    @property
    def target_modules(self) -> list[str]:
        """The targeted parameter names."""
        return list(self.targets)

    @property
    def component_steps(self) -> dict[str, float | None]:
        """Each edited component's step (SDXL: two); None where the file holds no finite one."""
        parts = self.metrics.get("components") if isinstance(self.metrics, dict) else None
        if not isinstance(parts, dict) or not parts:
            return {self.component or "": self.step}
        return {
            n: finite_real(p.get("step")) if isinstance(p, dict) else None for n, p in parts.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def checked_dict(self) -> dict[str, Any]:
        """`to_dict()` after the checks a load applies, so nothing is saved that cannot load."""
        data = self.to_dict()
        for key, value in data.items():
            FIELD_CHECKS[key](value, f"the config being saved: {key!r}")
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "the slug config") -> UnlearningConfig:
        """Build from decoded JSON, checking every field's type, finiteness and range.

        Unknown keys warn and are ignored; missing required keys or a value that is not an
        object raise DeltaFormatError; a field of the wrong type or value raises ConfigError.
        """
        if not isinstance(data, dict):
            raise DeltaFormatError(
                f"{source} must be a JSON object, got {type(data).__name__}: it is not an "
                "hf_slug delta config or it was damaged; save the delta again."
            )
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise DeltaFormatError(
                f"{source} lacks required key(s) {missing}: it is not an hf_slug delta "
                "config or it was truncated; save the delta again."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            warnings.warn(
                f"ignoring unknown slug config key(s) {unknown} (written by a newer hf_slug?).",
                stacklevel=2,
            )
        kwargs = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = FIELD_CHECKS[key](value, f"{source}: {key!r}")
        return cls(**kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `slug_config.json` into `directory` (atomically); return its path."""
        path = Path(directory) / CONFIG_NAME
        write_json(path, self.checked_dict())
        return path

    @classmethod
    def from_bytes(cls, raw: bytes, source: str | Path) -> UnlearningConfig:
        """Parse the bytes of a `slug_config.json` (bad UTF-8 / JSON: DeltaFormatError)."""
        return cls.from_dict(parse_json_bytes(raw, source), source)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> UnlearningConfig:
        """Read `slug_config.json` from a local delta folder."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise DeltaFormatError(
                f"{path} does not exist: {directory} is not an hf_slug delta folder (it needs "
                f"{CONFIG_NAME} and {WEIGHTS_NAME})."
            )
        return cls.from_bytes(path.read_bytes(), path)
