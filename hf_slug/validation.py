"""The default evaluator: a held-out validation split and a forget criterion that transfers.

Without an evaluator of the user's, `unlearn` holds out `config.validation_share` of the forget
pairs and of the retain pairs (a seeded, deterministic draw): the gradients come from the rest,
and every trial and the choice of layer are scored on the held-out pairs only. Which data a
number comes from is recorded (`EvaluationData`) and written into the result, its report,
`slug_config.json` and the model card: "validation" (held out by hf_slug), "evaluator" (the
user's own), or "in-sample" (`validation_share=0`: scored on the gradient pairs themselves).

The default forget criterion runs over a prompt ensemble — the built-in phrasings of the
concept's kind (`hf_slug.phrasings`) plus the user's `templates` — and *each* phrasing must fail
to rank the concept first, by `config.criterion_margin`
(`ZeroShotTask(scoring="any", margin=...)`).
Utility is the mean of two retain tasks: retrieval of each held-out retain image's caption, and,
for retain images whose caption names another candidate label, zero-shot recognition of that
label (the concepts an edit is most likely to hurt).

Example:
    >>> from PIL import Image
    >>> from hf_slug.data import load_pairs
    >>> pairs = load_pairs(([Image.new("RGB", (4, 4))] * 8, [f"picture {i}" for i in range(8)]))
    >>> gradient, held_out = split_pairs(pairs, 0.25, seed=0, name="forget set", minimum=2)
    >>> len(gradient), len(held_out)
    (6, 2)
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .config import SLUGConfig
from .data import ImageTextPairs
from .errors import ConfigError
from .evaluation import FORGET_TASK, RETAIN_TASK, ZeroShotEvaluator, ZeroShotTask
from .phrasings import criterion_templates, misspellings

MIN_FORGET_VALIDATION = 4  # held-out forget images the criterion needs to mean anything
MIN_RETAIN_VALIDATION = 8
SOURCES = ("validation", "evaluator", "in-sample")
OTHERS_TASK = "others"  # retain images naming another candidate label, recognised among them


@dataclass(frozen=True)
class EvaluationData:
    """Which data the search's numbers come from, and how many pairs each side saw."""

    source: str  # one of SOURCES
    gradient_forget: int
    gradient_retain: int
    validation_forget: int | None = None  # None: the user's evaluator (hf_slug cannot count)
    validation_retain: int | None = None
    validation_share: float | None = None
    split_seed: int | None = None
    unit: str = "pairs"  # what the validation counts are of (a host criterion: prompts, images)

    def describe(self) -> str:
        """One sentence for reports and model cards."""
        grad = f"{self.gradient_forget} forget + {self.gradient_retain} retain gradient pairs"
        if self.source == "validation" and self.validation_share is None:
            return (
                f"validation: {self.validation_forget} forget + {self.validation_retain} retain "
                f"{self.unit} given as validation data, apart from the {grad}"
            )
        if self.source == "validation":
            return (
                f"validation: {self.validation_forget} forget + {self.validation_retain} retain "
                f"pairs held out from the given sets (validation_share={self.validation_share:g}, "
                f"split_seed={self.split_seed}), disjoint from the {grad}"
            )
        if self.source == "evaluator":
            return (
                "evaluator: the user's own evaluator (hf_slug cannot check that its data is "
                f"disjoint from the {grad})"
            )
        return f"in-sample: scored on the {grad} themselves (validation_share=0)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def split_pairs(
    pairs: ImageTextPairs, share: float, *, seed: int, name: str, minimum: int
) -> tuple[ImageTextPairs, ImageTextPairs]:
    """(gradient pairs, validation pairs): a seeded draw of round(`share` × n) pairs held out.

    The draw depends only on `seed`, `name` and the number of pairs, so the same call always
    gives the same split. A split leaving fewer than `minimum` validation pairs, or no gradient
    pair, is a `ConfigError` naming what to change.
    """
    n = len(pairs)
    held = round(share * n)
    if held < minimum or held >= n:
        needed = next(m for m in range(minimum + 1, 10**6) if minimum <= round(share * m) < m)
        raise ConfigError(
            f"validation_share={share:g} holds out {held} of the {n} pairs of the {name}; the "
            f"default evaluator needs at least {minimum} held out and at least one left for the "
            f"gradient: give at least {needed} pairs, raise validation_share, pass evaluator= "
            "with validation data of your own, or validation_share=0 to score in-sample "
            "(reported as such)."
        )
    digest = hashlib.sha256(f"hf_slug-split:{seed}:{name}:{n}".encode()).digest()
    order = list(range(n))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    validation = sorted(order[:held])
    gradient = sorted(order[held:])
    return pairs.subset(gradient), pairs.subset(validation)


def named_label(caption: str, labels: Sequence[str]) -> str | None:
    """The one label `caption` names (whole words; a match inside a longer one does not count),
    or None when it names none or several."""
    spans = [
        (m.start(), m.end(), label)
        for label in labels
        for m in re.finditer(r"(?<!\w)" + re.escape(label) + r"(?!\w)", caption, re.IGNORECASE)
    ]
    kept = {
        label
        for start, end, label in spans
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
    }
    return kept.pop() if len(kept) == 1 else None


def default_evaluator(
    processor: Any, forget: ImageTextPairs, retain: ImageTextPairs, config: SLUGConfig
) -> ZeroShotEvaluator:
    """Forget images under the phrasing ensemble with a margin; retain retrieval and recognition.

    Tasks `FORGET_TASK`, `RETAIN_TASK` and `OTHERS_TASK`, so the metrics are `forget_acc` /
    `forget_acc@5` (recognised under *any* phrasing, within the margin), `retain_acc` (caption
    retrieval among the retain captions), `others_acc` (retain images whose caption names
    another candidate label, recognised among the candidates) and `utility`, the mean of the
    retain tasks (`hf_slug.evaluation.accuracy_key`, `UTILITY`); during a text-tower search also
    `PROMPT_DRIFT`, how far the edit moves the other labels' forget prompts. Give it data the
    gradients never saw.
    """
    labels = check_labels(config)
    templates = criterion_templates(config.concept_kind, config.templates)
    forget_images = [forget.image(i) for i in range(len(forget))]
    parts = config.name_parts and config.concept_kind == "identity"
    spelled = parts or config.criterion_misspellings > 0
    tasks = [
        ZeroShotTask(
            FORGET_TASK,
            forget_images,
            [config.concept] * len(forget_images),
            labels,
            prompts=(
                criterion_prompts(
                    labels, templates, config.concept, parts, config.criterion_misspellings
                )
                if spelled
                else None
            ),
            templates=tuple(templates),
            counts_for_utility=False,
            scoring="any",
            margin=config.criterion_margin,
            track_drift=True,
        ),
        ZeroShotTask(
            RETAIN_TASK,
            [retain.image(i) for i in range(len(retain))],
            list(retain.texts),
            list(dict.fromkeys(retain.texts)),
        ),
    ]
    others = [o for o in labels if o != config.concept]
    named = [(i, named_label(text, others)) for i, text in enumerate(retain.texts)]
    named = [(i, label) for i, label in named if label is not None]
    if named:
        tasks.append(
            ZeroShotTask(
                OTHERS_TASK,
                [retain.image(i) for i, _ in named],
                [label for _, label in named],
                labels,
                templates=tuple(templates),
            )
        )
    return ZeroShotEvaluator(processor, tasks)


def check_labels(config: SLUGConfig) -> list[str]:
    """The candidate labels, which must hold the concept and another name (else `ConfigError`)."""
    labels = config.candidate_labels
    if not labels or config.concept not in labels or len(set(labels)) < 2:
        raise ConfigError(
            "the default evaluator classifies forget images among config.candidate_labels, "
            f"which must include the concept {config.concept!r} and at least one other name "
            f"(got {_preview(labels)}): pass candidate_labels=[...] (e.g. all identity names), "
            "or pass your own evaluator=."
        )
    return list(labels)


def criterion_prompts(
    labels: Sequence[str],
    templates: Sequence[str],
    concept: str | None = None,
    name_parts: bool = True,
    misspellings: int = 0,
) -> dict[str, list[str]]:
    """Each label's phrasings, spelling by spelling, aligned position by position: the full name,
    with `name_parts` its first and last word (one-word names repeat), so an edit must also
    silence "Hopper" alone; then `misspellings` misspelt names of `concept`
    (`hf_slug.phrasings.misspellings`), where the other labels keep their own spelling."""

    def spellings(label: str) -> list[str]:
        words = label.split()
        found = [label, words[0], words[-1]] if name_parts else [label]
        if misspellings:
            own = label == concept
            found += (
                _padded_misspellings(label, misspellings, labels) if own else [label] * misspellings
            )
        return found

    if misspellings and concept is None:
        raise ConfigError("misspellings need the concept's name: pass concept=.")
    return {label: [t.format(p) for p in spellings(label) for t in templates] for label in labels}


def _padded_misspellings(name: str, count: int, labels: Sequence[str]) -> list[str]:
    """`count` misspellings of `name` that are no other label, the last repeated when a short
    name has fewer (the name itself when it has none)."""
    found = misspellings(name, count, avoid=labels) or [name]
    return found + [found[-1]] * (count - len(found))


def held_out_split(
    forget: ImageTextPairs, retain: ImageTextPairs, config: SLUGConfig
) -> tuple[ImageTextPairs, ImageTextPairs, ImageTextPairs, ImageTextPairs, EvaluationData]:
    """(gradient forget, gradient retain, validation forget, validation retain, provenance):
    `config.validation_share` of each set held out with `config.split_seed`. With a share of
    0 the validation sets are the gradient sets themselves ("in-sample")."""
    share = float(config.validation_share)
    if share == 0:
        return forget, retain, forget, retain, EvaluationData("in-sample", len(forget), len(retain))
    seed = config.split_seed
    grad_f, val_f = split_pairs(
        forget, share, seed=seed, name="forget set", minimum=MIN_FORGET_VALIDATION
    )
    grad_r, val_r = split_pairs(
        retain, share, seed=seed, name="retain set", minimum=MIN_RETAIN_VALIDATION
    )
    data = EvaluationData(
        "validation", len(grad_f), len(grad_r), len(val_f), len(val_r), share, seed
    )
    return grad_f, grad_r, val_f, val_r, data


def held_out_evaluator(
    processor: Any, forget: ImageTextPairs, retain: ImageTextPairs, config: SLUGConfig
) -> tuple[ZeroShotEvaluator, ImageTextPairs, ImageTextPairs, EvaluationData]:
    """The default evaluator on a held-out split: (evaluator, gradient forget, gradient retain,
    what the numbers come from). With `validation_share=0` it scores in-sample."""
    check_labels(config)  # before the split, whose size errors would hide a missing label
    grad_f, grad_r, val_f, val_r, data = held_out_split(forget, retain, config)
    return default_evaluator(processor, val_f, val_r, config), grad_f, grad_r, data


def _preview(labels: Any) -> str:
    if labels is None:
        return "None"
    items = list(labels)
    return repr(items[:5])[:-1] + (", ...]" if len(items) > 5 else "]")


__all__ = [
    "OTHERS_TASK",
    "EvaluationData",
    "check_labels",
    "criterion_prompts",
    "default_evaluator",
    "held_out_evaluator",
    "held_out_split",
    "named_label",
    "split_pairs",
]
