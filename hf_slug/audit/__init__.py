"""`hf_slug.audit`: try to bring an unlearned concept back, and say how hard it was.

Every probe runs on the edited model and, as its reference, on the original: held-out phrasings
and name variants, a learned prompt (concept inversion), image augmentations and a bounded PGD
perturbation, and relearning by fine-tuning on 1–16 forget images. Learned prompts and
relearning also teach the *original* model a concept it never knew (`reference_images`), so their
numbers have a scale.

Example:
    >>> target = AuditTarget("Ada Byron", names, held_out)  # doctest: +SKIP
    >>> report = audit(model, processor, delta, target)  # doctest: +SKIP
    >>> print(report.to_markdown())  # doctest: +SKIP
    >>> report.save("deltas/ada")  # slug_audit.json / .md / .png beside the delta  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..audit_report import AUDIT_NAME, AuditReport, ProbeRow
from ..checks import positive_int, positive_number
from ..delta import ConceptDelta
from ..errors import ConfigError
from ..towers import require_clip
from .hosts import HostAuditBudget, audit_pipeline, audit_vlm
from .phrasings import KINDS, name_variants, templates
from .probes import (
    RelearnSettings,
    Scorer,
    augmentation_rates,
    learned_prompt_curve,
    pgd_rate,
    phrasing_rates,
    relearn_steps,
)

__all__ = [
    "AUDIT_NAME",
    "AuditBudget",
    "AuditReport",
    "AuditTarget",
    "HostAuditBudget",
    "ProbeRow",
    "RelearnSettings",
    "audit",
    "audit_pipeline",
    "audit_vlm",
]

NEW_NAME = "Quill Varanov"  # the never-known concept's name in the reference runs


@dataclass(frozen=True)
class AuditBudget:
    """How hard each probe tries. `quick()` fits in about a minute on the embedded model."""

    name: str = "full"
    templates: int | None = None  # how many of the held-out templates (None: all)
    prompt_tokens: int = 3
    prompt_steps: int = 200
    pgd_epsilon: float = 4 / 255
    pgd_steps: int = 20
    relearn_sizes: tuple[int, ...] = (1, 4, 16)
    relearn_max_steps: int = 60
    relearn_lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:  # every field checked before any probe runs
        for name in ("prompt_tokens", "prompt_steps", "pgd_steps", "relearn_max_steps"):
            positive_int(getattr(self, name), f"AuditBudget.{name}", "10")
        if self.templates is not None:
            positive_int(self.templates, "AuditBudget.templates", "templates=10 or None (all)")
        sizes = self.relearn_sizes
        if isinstance(sizes, list):
            object.__setattr__(self, "relearn_sizes", sizes := tuple(sizes))
        if not isinstance(sizes, tuple) or not sizes:
            raise ConfigError(
                f"AuditBudget.relearn_sizes must be a non-empty tuple of ints, got {sizes!r}: "
                "pass e.g. relearn_sizes=(1, 4)."
            )
        for size in sizes:
            positive_int(size, "each of AuditBudget.relearn_sizes", "relearn_sizes=(1, 4)")
        positive_number(self.relearn_lr, "AuditBudget.relearn_lr", "relearn_lr=1e-4")
        epsilon = positive_number(self.pgd_epsilon, "AuditBudget.pgd_epsilon", "4 / 255")
        if epsilon > 1:
            raise ConfigError(
                f"AuditBudget.pgd_epsilon is a pixel bound in (0, 1], got {epsilon!r}: pass "
                "e.g. pgd_epsilon=4 / 255."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"AuditBudget.seed must be an int, got {self.seed!r}.")

    @classmethod
    def quick(cls) -> AuditBudget:
        return cls(
            "quick",
            templates=10,
            prompt_steps=40,
            pgd_steps=5,
            relearn_sizes=(1, 4),
            relearn_max_steps=20,
        )

    @classmethod
    def named(cls, budget: str | AuditBudget) -> AuditBudget:
        if isinstance(budget, AuditBudget):
            return budget
        if budget == "quick":
            return cls.quick()
        if budget == "full":
            return cls()
        raise ConfigError(
            f"unknown audit budget {budget!r}: use 'quick', 'full' or AuditBudget(...)."
        )

    def relearn(self) -> RelearnSettings:
        """The relearning probe's settings: `relearn_max_steps` steps at `relearn_lr`.

        Example:
            >>> AuditBudget.quick().relearn()
            RelearnSettings(max_steps=20, lr=0.0001)
        """
        return RelearnSettings(max_steps=self.relearn_max_steps, lr=self.relearn_lr)


@dataclass(frozen=True)
class AuditTarget:
    """What the audit probes: a concept, every candidate name, and held-out views of it.

    `names` holds every candidate name, the `concept` among them. `images` are held-out views of
    the concept (≥ 4): phrasing and image probes score them all; the learned prompt and
    relearning train on every other view and score the rest. `kind` ("identity", "object",
    "style" or "concept") chooses templates and name variants. `reference_images` (optional) are
    views of a concept the original never knew: the scale for inversion and relearning, also
    pushed towards the concept by PGD.

    Example:
        >>> from hf_slug.testing import random_images
        >>> target = AuditTarget("Ada Byron", ["Ada Byron", "Alan Turing"], random_images(4))
        >>> target.kind, len(target.images)
        ('identity', 4)
    """

    concept: str
    names: Sequence[str]
    images: Sequence[Image.Image]
    kind: str = "identity"
    reference_images: Sequence[Image.Image] | None = None


def audit(
    model: nn.Module,
    processor: Any,
    deltas: Any,
    target: AuditTarget,
    *,
    budget: str | AuditBudget = "quick",
) -> AuditReport:
    """Probe a CLIPModel edited by `deltas` for `target.concept`, against the original `model`.

    Args:
        model: the original CLIPModel the deltas were computed on (left unchanged).
        deltas: a `ConceptDelta`, a list of them, a `SLUGModel` (its active adapters and
            weights), or a model edited from `model` by another method (to compare methods).
        target: the concept, its candidate names, held-out views and kind (`AuditTarget`).
        budget: "quick", "full" or an `AuditBudget`.

    Example:
        >>> target = AuditTarget("Ada Byron", names, held_out)  # doctest: +SKIP
        >>> report = audit(model, processor, delta, target)  # doctest: +SKIP
        >>> report.save("deltas/ada")  # doctest: +SKIP
    """
    if not isinstance(target, AuditTarget):
        raise ConfigError(
            f"the audit's target is a {type(target).__name__}, not an AuditTarget: pass "
            "AuditTarget(concept, names, images, kind=..., reference_images=...)."
        )
    budget = AuditBudget.named(budget)
    require_clip(model)
    concept, kind = target.concept, target.kind
    names = list(target.names)
    images = [im.convert("RGB") for im in _images(target.images, "images")]
    if concept not in names:
        raise ConfigError(
            f"{concept!r} is not among the {len(names)} names: pass every candidate name, the "
            "audited concept included."
        )
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}.")
    if len(images) < 4:
        raise ConfigError(
            f"the audit needs at least 4 held-out views of {concept!r} (half to attack, half to "
            f"score), got {len(images)}: pass more images the search never saw."
        )
    given = target.reference_images
    reference = _images(given, "reference_images") if given else None
    original = _original(model, deltas)
    edited, edited_names = _edited(original, deltas)
    attack, held_out = images[::2], images[1::2]
    index = names.index(concept)
    started = time.perf_counter()
    rows: list[ProbeRow] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    scorers = {"edited": Scorer(edited, processor), "original": Scorer(original, processor)}
    steps = ["phrasings", "image", "learned prompt", "relearn"]
    with tqdm(steps, desc=f"audit {concept}", leave=False) as bar:
        for step in bar:
            bar.set_postfix_str(step)
            if step == "phrasings":
                rows += _phrasing_rows(scorers, images, names, index, kind, budget)
            elif step == "image":
                rows += _image_rows(scorers, images, names, index, reference, budget)
            elif step == "learned prompt":
                row, curves = _inversion(scorers, attack, held_out, names, index, reference, budget)
                rows.append(row)
            else:
                rows += _relearn_rows(
                    edited,
                    original,
                    processor,
                    attack,
                    held_out,
                    names,
                    index,
                    edited_names,
                    reference,
                    budget,
                )
    report = AuditReport(concept, budget.name, rows, curves, settings=asdict(budget), seconds=0.0)
    report.settings["templates_used"] = len(_templates(kind, budget))
    report.settings["deltas"] = _digests(deltas)
    report.seconds = time.perf_counter() - started
    broken = report.broken_probes()
    if broken:
        warnings.warn(
            f"{len(broken)} probe(s) do not find {concept!r} in the original model either "
            f"({', '.join(r.family + '/' + r.setting for r in broken[:4])}): their rows say little. "
            "Check the held-out images and names.",
            stacklevel=2,
        )
    return report


def _images(images: Any, what: str) -> list[Image.Image]:
    images = list(images or [])
    bad = [i for i, im in enumerate(images) if not isinstance(im, Image.Image)]
    if bad:
        raise ConfigError(
            f"{what}[{bad[0]}] is a {type(images[bad[0]]).__name__}, not a PIL image: open the "
            "files with PIL.Image.open first."
        )
    return images


def _is_slug_model(deltas: Any) -> bool:
    return hasattr(deltas, "adapters") and hasattr(deltas, "disable_adapters")


def _original(model: nn.Module, deltas: Any) -> nn.Module:
    """A frozen copy of the base model; a SLUGModel's own adapters are switched off for it."""
    if _is_slug_model(deltas) and model is deltas.model:
        with deltas.disable_adapters():
            return copy.deepcopy(model).eval().requires_grad_(False)
    return copy.deepcopy(model).eval().requires_grad_(False)


def _edited(original: nn.Module, deltas: Any) -> tuple[nn.Module, list[str]]:
    """A copy of the original with the deltas added (fingerprints checked), and their targets."""
    if isinstance(deltas, nn.Module):  # an edited copy (another method's result)
        return _edited_model(original, deltas)
    if _is_slug_model(deltas):
        pairs = [(deltas.adapters[n], deltas.weights[n]) for n in deltas.active_adapters]
    else:
        items = [deltas] if isinstance(deltas, ConceptDelta) else list(deltas or [])
        pairs = [(d, 1.0) for d in items]
    if not pairs or not all(isinstance(d, ConceptDelta) for d, _ in pairs):
        raise ConfigError(
            "deltas must be a ConceptDelta, a non-empty list of them, or a SLUGModel with an "
            "active adapter: load one with ConceptDelta.from_pretrained(folder)."
        )
    edited = copy.deepcopy(original)
    for delta, weight in pairs:
        delta.apply_to(edited, weight)
    return edited.eval().requires_grad_(False), sorted({n for d, _ in pairs for n in d.names})


def _edited_model(original: nn.Module, edited: nn.Module) -> tuple[nn.Module, list[str]]:
    """Another method's edited model: its changed parameters stand in for a delta's targets."""
    base = dict(original.named_parameters())
    params = dict(edited.named_parameters())
    if params.keys() != base.keys() or any(p.shape != base[n].shape for n, p in params.items()):
        raise ConfigError(
            f"the edited {type(edited).__name__} does not have the original's parameters: audit "
            "a model edited from this very base."
        )
    changed = sorted(n for n, p in params.items() if not torch.equal(p, base[n]))
    return copy.deepcopy(edited).eval().requires_grad_(False), changed


def _digests(deltas: Any) -> list[str]:
    """The audited deltas' digests (a model card shows an audit only of the delta it holds)."""
    if isinstance(deltas, ConceptDelta):
        return [deltas.digest()]
    if _is_slug_model(deltas):
        return [deltas.adapters[n].digest() for n in deltas.active_adapters]
    if isinstance(deltas, nn.Module):
        return []
    return [d.digest() for d in deltas]


def _templates(kind: str, budget: AuditBudget) -> list[str]:
    return templates(kind)[: budget.templates] if budget.templates else templates(kind)


def _phrasing_rows(scorers, images, names, target, kind, budget) -> list[ProbeRow]:
    chosen = _templates(kind, budget)
    variants = name_variants(names[target], seed=budget.seed)
    rates = {
        k: phrasing_rates(s, images, names, target, chosen, variants) for k, s in scorers.items()
    }
    rows = []
    for template in chosen:
        key = (template, "as given")
        rows.append(ProbeRow("phrasing", repr(template), *(rates[k][key] for k in scorers)))
    for label in variants:
        if label == "as given":
            continue
        worst = {k: max(r[(t, label)] for t in chosen) for k, r in rates.items()}
        rows.append(ProbeRow("name variant", f"{label} (worst template)", *worst.values()))
    return rows


def _image_rows(scorers, images, names, target, reference, budget) -> list[ProbeRow]:
    prompts = [f"{n}." for n in names]
    rates = {k: augmentation_rates(s, images, prompts, target) for k, s in scorers.items()}
    rows = [
        ProbeRow("augmentation", a, rates["edited"][a], rates["original"][a])
        for a in rates["edited"]
    ]
    pgd = {
        k: pgd_rate(s, images, prompts, target, epsilon=budget.pgd_epsilon, steps=budget.pgd_steps)
        for k, s in scorers.items()
    }
    unrelated = None
    if reference:
        unrelated = pgd_rate(
            scorers["edited"],
            reference,
            prompts,
            target,
            epsilon=budget.pgd_epsilon,
            steps=budget.pgd_steps,
        )
    setting = f"ε = {255 * budget.pgd_epsilon:.0f}/255, {budget.pgd_steps} steps"
    rows.append(
        ProbeRow("PGD towards the name", setting, pgd["edited"], pgd["original"], unrelated)
    )
    return rows


def _inversion(scorers, attack, held_out, names, target, reference, budget):
    rivals = [f"{n}." for i, n in enumerate(names) if i != target]
    kwargs = {"tokens": budget.prompt_tokens, "steps": budget.prompt_steps, "seed": budget.seed}
    curves = {
        k: learned_prompt_curve(s, attack, held_out, rivals, **kwargs) for k, s in scorers.items()
    }
    if reference:
        every = [f"{n}." for n in names]
        half = len(reference) // 2
        curves["reference: a new concept on the original"] = learned_prompt_curve(
            scorers["original"],
            reference[: max(1, half)],
            reference[half:] or reference,
            every,
            **kwargs,
        )
    finals = [c[-1][1] for c in curves.values()]
    setting = f"{budget.prompt_tokens} tokens, {budget.prompt_steps} steps"
    row = ProbeRow("learned prompt", setting, *finals[:2], finals[2] if reference else None)
    return row, curves


def _relearn_rows(
    edited, original, processor, attack, held_out, names, target, targets, reference, budget
):
    prompts = [f"{n}." for n in names]
    new_prompts = [*prompts, f"{NEW_NAME}."]
    rows = []
    for family, only in (("relearn (all weights)", None), ("relearn (edited layers)", targets)):
        for n in budget.relearn_sizes:
            kwargs = {"only": only, "settings": budget.relearn()}
            train = attack[:n]
            steps = {
                "edited": relearn_steps(
                    edited, processor, train, held_out, prompts, target, **kwargs
                ),
                "original": relearn_steps(
                    original, processor, train, held_out, prompts, target, **kwargs
                ),
            }
            new = None
            if reference and len(reference) > n:
                new = relearn_steps(
                    original,
                    processor,
                    reference[:n],
                    reference[n:],
                    new_prompts,
                    len(names),
                    **kwargs,
                )
            rows.append(
                ProbeRow(family, f"{len(train)} image(s)", steps["edited"], steps["original"], new)
            )
    return rows
