"""The audit through a host: a VLM asked question paraphrases, a pipeline prompted in many ways.

`audit_vlm` asks a LLaVA-style VLM held-out paraphrases of "who is this?" about the target's
held-out views; `audit_pipeline` draws the target's name in held-out phrasings and name variants
and lets an *unedited* CLIP name each generation (zero-shot over the candidate names). Both run
on the model edited by the deltas and, as the reference, on the original (adapters disabled),
and return the CLIP audit's `AuditReport`: one row per probe plus a worst-case row (any
paraphrase or prompt recovers the concept). A probe whose original rate is below 50 % cannot
find the concept at all: `report.broken_probes()` lists it and a warning names it.

Example:
    >>> target = AuditTarget("Ada Byron", names, held_out)  # doctest: +SKIP
    >>> print(audit_vlm(llava, llava_processor, delta, target).to_markdown())  # doctest: +SKIP
    >>> report = audit_pipeline(pipe, delta, target, clip, clip_processor)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..audit_report import AuditReport, ProbeRow
from ..delta import ConceptDelta
from ..errors import ConfigError, UnsupportedModelError
from ..hosts.generation import pipeline_components
from ..hosts.vlm_evaluation import AskSettings, VLMIdentityEvaluator, score_answers
from ..model import SLUGModel
from ..phrasings import criterion_templates
from ..towers import encode_images, encode_texts, require_clip
from .phrasings import name_variants, questions, templates

if TYPE_CHECKING:
    from . import AuditTarget

PIPELINE_VARIANTS = ("first name", "last name", "lower case")
RESERVED = ("generator", "num_images_per_prompt", "output_type")


@dataclass(frozen=True)
class HostAuditBudget:
    """How much a host audit generates. `quick()` suits tests and a first look.

    Args:
        name: the budget's name in the report.
        templates: pipeline: how many phrasings of each set (criterion, held-out) are drawn
            (None: all 8 + 22 for an identity).
        variant_templates: pipeline: each name variant is drawn with this many held-out
            phrasings, and its row is the worst of them.
        seeds: pipeline: the seeds every prompt is drawn with (image of seed `s` starts from a
            CPU generator seeded `s`); keep them apart from the seeds a search judged.
        generation_kwargs: passed to the pipeline (e.g. `num_inference_steps`).
        judge_template: how the judge phrases each candidate name.
        max_new_tokens: VLM: greedy answer length.
        batch_size: images per pipeline or VLM call.
        progress: show progress bars.

    Example:
        >>> HostAuditBudget.quick().seeds
        (0, 1)
    """

    name: str = "full"
    templates: int | None = None
    variant_templates: int = 2
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    generation_kwargs: Mapping[str, Any] = field(default_factory=dict)
    judge_template: str = "{}."
    max_new_tokens: int = 8
    batch_size: int = 16
    progress: bool = True

    @classmethod
    def quick(cls, **changes: Any) -> HostAuditBudget:
        """3 phrasings of each set, variants on 1, seeds 0 and 1; `changes` override."""
        quick = {"name": "quick", "templates": 3, "variant_templates": 1, "seeds": (0, 1)}
        return cls(**{**quick, **changes})

    @classmethod
    def named(cls, budget: str | HostAuditBudget) -> HostAuditBudget:
        """'quick', 'full' or a `HostAuditBudget` as it is."""
        if isinstance(budget, HostAuditBudget):
            return budget
        made = {"quick": cls.quick, "full": cls}.get(budget)  # type: ignore[arg-type]
        if made is None:
            raise ConfigError(
                f"unknown host audit budget {budget!r}: use 'quick', 'full' or "
                "HostAuditBudget(...)."
            )
        return made()


def audit_vlm(
    vlm: Any,
    vlm_processor: Any,
    deltas: Any,
    target: AuditTarget,
    *,
    questions: Sequence[str] | None = None,
    budget: str | HostAuditBudget = "full",
) -> AuditReport:
    """Ask the VLM edited by `deltas`, and the original, who `target`'s held-out views show.

    Each paraphrase is asked about every view with greedy decoding; a view counts when the
    answer contains the concept's name (case-insensitive, as `score_answers`). Rows: one per
    paraphrase, and "any paraphrase" (views some paraphrase gets named on: the attacker's best).

    Args:
        vlm: a LLaVA-style VLM (left unchanged), or the `.model` of the SLUGModel in `deltas`.
        vlm_processor: its processor (e.g. a `LlavaProcessor`).
        deltas: a `ConceptDelta`, a list of them, or a `SLUGModel` wrapping `vlm` (its active
            adapters act; disabled for the original).
        target: the concept, its candidate names and held-out views (`AuditTarget`).
        questions: the paraphrases (default: `hf_slug.audit.phrasings.questions(target.kind)`,
            none of which `unlearn_vlm`'s criterion asks).
        budget: "quick", "full" or a `HostAuditBudget` (answer length, batch size).

    Example:
        >>> report = audit_vlm(llava, llava_processor, delta, target)  # doctest: +SKIP
        >>> report.worst("question paraphrase")  # doctest: +SKIP
        0.0
    """
    budget = HostAuditBudget.named(budget)
    concept, names, images = _checked_target(target, need_images=True)
    if not callable(getattr(vlm, "generate", None)):
        raise UnsupportedModelError(
            f"expected a generating VLM (e.g. LlavaForConditionalGeneration), got a "
            f"{type(vlm).__name__}: pass the VLM itself, or its SLUGModel as deltas."
        )
    if vlm_processor is None:
        raise ConfigError("audit_vlm needs the VLM's processor (e.g. LlavaProcessor).")
    asked = _questions(questions, target.kind)
    started = time.perf_counter()
    hits: dict[str, dict[str, list[bool]]] = {"edited": {}, "original": {}}
    answers: dict[str, dict[str, list[str]]] = {"edited": {}, "original": {}}
    with _edited(vlm, deltas) as (slug, digests):
        for question in tqdm(asked, desc=f"audit VLM {concept}", disable=not budget.progress):
            settings = AskSettings(question, None, budget.max_new_tokens, budget.batch_size)
            ask = VLMIdentityEvaluator(
                vlm_processor, images, [concept] * len(images), concept, settings=settings
            )
            for state in ("original", "edited"):
                with slug.disable_adapters() if state == "original" else contextlib.nullcontext():
                    said = ask.answers(slug)
                answers[state][question] = said
                hits[state][question] = [concept.lower() in a.lower() for a in said]
    rows = []
    for q in asked:
        rates = [score_answers(answers[s][q], [concept] * len(images), concept) for s in hits]
        rows.append(ProbeRow("question paraphrase", repr(q), *(r["forget_acc"] for r in rates)))
    rows.append(ProbeRow("question paraphrase", "any paraphrase (per view)", *_any(hits)))
    settings = {
        **asdict(budget),
        "questions": asked,
        "views": len(images),
        "measure": "share of held-out views whose greedy answer contains the concept's name",
        "answers_edited": {q: a[:4] for q, a in answers["edited"].items()},
        "deltas": digests,
    }
    return _report(concept, budget, rows, settings, started, names)


def audit_pipeline(
    pipe: Any,
    deltas: Any,
    target: AuditTarget,
    judge_clip: Any,
    judge_processor: Any,
    *,
    phrasings: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    budget: str | HostAuditBudget = "full",
) -> AuditReport:
    """Draw `target`'s name in many phrasings with the edited and the original pipeline; an
    unedited CLIP names each image among `target.names`.

    Rows: each criterion phrasing (`hf_slug.phrasings`, which a search may have tuned on) and
    each held-out one (`hf_slug.audit.phrasings.templates`), the first name, last name and
    lower-case name (each the worst of `budget.variant_templates` held-out phrasings), and
    "any prompt" (seeds whose image some prompt gets named: the attacker's best). A rate is the
    share of a prompt's images the judge names as the concept; chance is 1 / len(names).
    `target.images`, when given, check that the judge itself recognises the concept.

    Args:
        pipe: a diffusers pipeline with a CLIP text encoder (left unchanged), or the `.model`
            of the SLUGModel in `deltas`.
        deltas: a `ConceptDelta`, a list of them, or a `SLUGModel` wrapping `pipe`.
        target: the concept and its candidate names (`AuditTarget`; images optional).
        judge_clip, judge_processor: a CLIPModel that no delta edits, and its processor.
        phrasings: templates with one `{}` (default: the criterion and held-out sets).
        seeds: the seeds of every prompt (default: the budget's).
        budget: "quick", "full" or a `HostAuditBudget`.

    Example:
        >>> budget = HostAuditBudget(generation_kwargs={"num_inference_steps": 30})
        >>> report = audit_pipeline(pipe, delta, target, clip, clip_processor,  # doctest: +SKIP
        ...                         budget=budget)
    """
    budget = HostAuditBudget.named(budget)
    concept, names, images = _checked_target(target, need_images=False)
    components = pipeline_components(pipe)
    encoders = [v for k, v in components.items() if k.startswith("text_encoder") and v is not None]
    if not encoders:
        raise UnsupportedModelError(
            f"the {type(pipe).__name__} has no text encoder: the pipeline audit prompts the "
            "pipeline, whose CLIP text encoder(s) SLUG edits (Stable Diffusion 1.x/2.x/XL)."
        )
    require_clip(judge_clip)
    if {id(p) for p in judge_clip.parameters()} & {id(p) for e in encoders for p in e.parameters()}:
        raise ConfigError(
            "the judge shares weights with the pipeline's text encoder, so the deltas would edit "
            "it too: load a separate copy of the CLIPModel as judge_clip."
        )
    reserved = sorted(set(RESERVED) & set(budget.generation_kwargs))
    if reserved:
        raise ConfigError(f"{reserved} are set by the audit: drop them from generation_kwargs.")
    if budget.judge_template.count("{}") != 1:
        raise ConfigError(f"judge_template must hold one '{{}}', got {budget.judge_template!r}.")
    seeds = list(budget.seeds if seeds is None else seeds)
    if not seeds:
        raise ConfigError("pass at least one seed, e.g. seeds=[0, 1, 2, 3].")
    prompts = _pipeline_prompts(concept, target.kind, phrasings, budget)
    judge = _Judge(judge_clip, judge_processor, [budget.judge_template.format(n) for n in names])
    index = names.index(concept)
    started = time.perf_counter()
    named: dict[str, dict[tuple[str, int], bool]] = {}
    with _edited(pipe, deltas) as (slug, digests):
        for state in ("original", "edited"):
            with slug.disable_adapters() if state == "original" else contextlib.nullcontext():
                drawn = _draw(slug, list(dict.fromkeys(prompts.values())), seeds, budget, state)
            said = judge(list(drawn.values()))
            named[state] = {key: i == index for key, i in zip(drawn, said)}
    rows = []
    for (family, setting), group in _groups(prompts).items():
        rates = {
            s: max(sum(named[s][(p, k)] for k in seeds) / len(seeds) for p in group)
            for s in ("edited", "original")
        }
        rows.append(ProbeRow(family, setting, rates["edited"], rates["original"]))
    by_prompt = {s: {p: [named[s][(p, k)] for k in seeds] for p in prompts.values()} for s in named}
    rows.append(ProbeRow("generation (any prompt)", "any prompt (per seed)", *_any(by_prompt)))
    settings = {
        **asdict(budget),
        "seeds": seeds,
        "prompts": sorted(set(prompts.values())),
        "judge": f"unedited {type(judge_clip).__name__}, zero-shot over {len(names)} names",
        "chance": 1 / len(names),
        "measure": "share of a prompt's generations the unedited judge names as the concept",
        "deltas": digests,
    }
    if images:
        settings["judge_on_views"] = sum(i == index for i in judge(images)) / len(images)
    return _report(concept, budget, rows, settings, started, names)


# -- shared ---------------------------------------------------------------------------------------
def _checked_target(target: Any, need_images: bool) -> tuple[str, list[str], list[Image.Image]]:
    from . import AuditTarget

    if not isinstance(target, AuditTarget):
        raise ConfigError(
            f"the audit's target is a {type(target).__name__}, not an AuditTarget: pass "
            "AuditTarget(concept, names, images, kind=...)."
        )
    names = list(target.names)
    if target.concept not in names:
        raise ConfigError(
            f"{target.concept!r} is not among the {len(names)} names: pass every candidate name, "
            "the audited concept included."
        )
    images = list(target.images or [])
    if any(not isinstance(im, Image.Image) for im in images):
        raise ConfigError("target.images must be PIL images: open the files with PIL.Image.open.")
    if need_images and not images:
        raise ConfigError(
            f"no held-out views of {target.concept!r}: the VLM audit asks about them; pass "
            "images the search never saw in AuditTarget(images=...)."
        )
    return target.concept, names, [im.convert("RGB") for im in images]


@contextlib.contextmanager
def _edited(model: Any, deltas: Any) -> Iterator[tuple[Any, list[str]]]:
    """A SLUGModel on `model` with `deltas` active (added here and removed after, unless a
    SLUGModel was given), and the deltas' digests."""
    if isinstance(deltas, SLUGModel):
        if deltas.model is not model or not deltas.active_adapters:
            raise ConfigError(
                "the SLUGModel passed as deltas must wrap the audited model and have an active "
                "adapter: pass SLUGModel(model) after add_adapter(...), or the ConceptDelta."
            )
        yield deltas, [deltas.adapters[n].digest() for n in deltas.active_adapters]
        return
    items = [deltas] if isinstance(deltas, ConceptDelta) else list(deltas or [])
    if not items or not all(isinstance(d, ConceptDelta) for d in items):
        raise ConfigError(
            "deltas must be a ConceptDelta, a non-empty list of them, or a SLUGModel with an "
            "active adapter: load one with ConceptDelta.from_pretrained(folder)."
        )
    slug = SLUGModel(model)
    try:
        for i, delta in enumerate(items):
            slug.add_adapter(f"audit_{i}", delta)
        yield slug, [d.digest() for d in items]
    finally:
        slug.unload()


def _any(hits: Mapping[str, Mapping[str, Sequence[bool]]]) -> tuple[float, float]:
    """(edited, original): the share of units (views, seeds) that some probe recovers; `hits`
    maps a state to probe -> one flag per unit."""
    rates = []
    for state in ("edited", "original"):
        units = list(zip(*hits[state].values()))  # one tuple per unit, a flag per probe
        rates.append(sum(any(u) for u in units) / len(units))
    return rates[0], rates[1]


def _report(concept, budget, rows, settings, started, names) -> AuditReport:
    report = AuditReport(concept, budget.name, rows, {}, settings, time.perf_counter() - started)
    report.settings["names"] = len(names)
    broken = [f"{r.family}/{r.setting}" for r in report.broken_probes()]
    if broken:
        warnings.warn(
            f"probe(s) {', '.join(broken[:4])} do not find {concept!r} in the original model "
            "(< 50 %): their rows say little.",
            stacklevel=3,
        )
    return report


# -- VLM ------------------------------------------------------------------------------------------
def _questions(given: Sequence[str] | None, kind: str) -> list[str]:
    asked = questions(kind) if given is None else list(given)
    if not asked or any(not isinstance(q, str) or not q.strip() for q in asked):
        raise ConfigError(f"questions must be non-empty strings, got {given!r}.")
    return list(dict.fromkeys(asked))


# -- pipeline -------------------------------------------------------------------------------------
def _pipeline_prompts(
    concept: str, kind: str, given: Sequence[str] | None, budget: HostAuditBudget
) -> dict[tuple[str, str, str], str]:
    """(family, setting, template) -> prompt, for every probe's prompts."""
    n = budget.templates
    if given is not None:
        bad = [t for t in given if not isinstance(t, str) or t.count("{}") != 1]
        if not given or bad:
            raise ConfigError(f"phrasings must hold one '{{}}' each, got {list(given)!r}.")
        sets = {"generation (phrasing)": list(given)}
    else:
        sets = {
            "generation (criterion phrasing)": criterion_templates(kind)[:n],
            "generation (held-out phrasing)": templates(kind)[:n],
        }
    prompts = {(f, repr(t), t): t.format(concept) for f, ts in sets.items() for t in ts}
    variants = name_variants(concept)
    held_out = list(sets.values())[-1][: budget.variant_templates]
    for label in (v for v in PIPELINE_VARIANTS if v in variants):
        setting = f"{label} (worst of {len(held_out)} phrasing(s))"
        for t in held_out:
            prompts[("generation (name variant)", setting, t)] = t.format(variants[label])
    return prompts


def _groups(prompts: Mapping[tuple[str, str, str], str]) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for (family, setting, _), prompt in prompts.items():
        groups.setdefault((family, setting), []).append(prompt)
    return groups


def _draw(
    pipe: Any, prompts: list[str], seeds: list[int], budget: HostAuditBudget, state: str
) -> dict[tuple[str, int], Image.Image]:
    """One image per (prompt, seed), `budget.batch_size` per pipeline call."""
    jobs = [(p, s) for p in prompts for s in seeds]
    images: dict[tuple[str, int], Image.Image] = {}
    bar = tqdm(total=len(jobs), desc=f"drawing ({state})", disable=not budget.progress)
    with bar:
        while len(images) < len(jobs):
            chunk = jobs[len(images) : len(images) + budget.batch_size]
            out = pipe(
                [p for p, _ in chunk],
                generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
                output_type="pil",
                **dict(budget.generation_kwargs),
            )
            images.update(zip(chunk, out.images))
            bar.update(len(chunk))
    return images


class _Judge:
    """Zero-shot naming by an unedited CLIP: each image's most similar prompt's index."""

    def __init__(self, clip: Any, processor: Any, prompts: list[str]):
        self.clip, self.processor = clip.eval(), processor
        self.device = next(clip.parameters()).device
        tokens = processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.no_grad():
            text = encode_texts(clip, tokens["input_ids"], tokens.get("attention_mask"))
        self.text = F.normalize(text.float(), dim=-1)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], batch: int = 64) -> list[int]:
        said: list[int] = []
        dtype = next(self.clip.parameters()).dtype
        for i in range(0, len(images), batch):
            pixels = self.processor(images=list(images[i : i + batch]), return_tensors="pt")
            pixels = pixels["pixel_values"].to(device=self.device, dtype=dtype)
            feats = F.normalize(encode_images(self.clip, pixels).float(), dim=-1)
            said += (feats @ self.text.T).argmax(-1).tolist()
        return said


__all__ = ["PIPELINE_VARIANTS", "HostAuditBudget", "audit_pipeline", "audit_vlm"]
