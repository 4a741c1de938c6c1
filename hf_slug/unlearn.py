"""`unlearn`: SLUG end to end on a CLIPModel — gradients, metrics, search, choice, result.

Example:
    >>> from transformers import CLIPModel, CLIPProcessor
    >>> from hf_slug import SLUGConfig, unlearn
    >>> model = CLIPModel.from_pretrained("hf_slug/demo/embedded_clip")  # doctest: +SKIP
    >>> processor = CLIPProcessor.from_pretrained("hf_slug/demo/embedded_clip")  # doctest: +SKIP
    >>> result = unlearn(model, processor, forget_pairs, retain_pairs,  # doctest: +SKIP
    ...                  SLUGConfig(concept="Ada Byron", candidate_labels=names))
    >>> print(result.report())  # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter_weights import add_checked, require_no_active_adapters
from .config import SLUGConfig, TargetInfo, UnlearningConfig
from .data import PairSource, check_batch_size, load_pairs
from .delta import ConceptDelta
from .errors import ConfigError, UnknownLayerError
from .evaluation import Evaluator, Metrics, StackedEvaluator, as_evaluator
from .gradient_cache import cache_file_for, gradients_for, misspelt_average
from .gradients import check_gradient_source, require_clip_model
from .io import fingerprint
from .null_space import choose_projected_first, null_space_gradients
from .options import UnlearnOptions, reject_unknown_keywords
from .search import (
    Criterion,
    LayerSearch,
    edited,
    no_layer_message,
    search_layers,
    step_scales,
    update,
)
from .selection import LayerScore, score_layers, units_to_search
from .towers import candidate_names, group_layers, resolve_names
from .validation import EvaluationData, default_evaluator, held_out_evaluator


@dataclass
class UnlearningResult:
    """What `unlearn` found: scores, searches, the chosen layer and step, and its delta."""

    config: SLUGConfig
    layers: list[LayerScore]
    searches: list[LayerSearch]
    chosen: LayerSearch | None
    rule: str
    deltas: dict[str, torch.Tensor]
    before: Metrics
    after: Metrics
    base_tensors: dict[str, dict[str, Any]]  # name -> shape, dtype, sha256, tower
    scales: dict[str, float] = field(default_factory=dict)  # name -> s‖θ⁰‖/‖G_f‖
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    on_top_of: list[str] = field(default_factory=list)  # concepts the search ran stacked on
    data: EvaluationData | None = None  # which data `before`/`after` and the trials come from

    @property
    def converged(self) -> bool:
        """True when some searched layer met the forget criterion (and the utility guard)."""
        return self.chosen is not None

    @property
    def chosen_names(self) -> tuple[str, ...]:
        return self.chosen.names if self.chosen else ()

    @property
    def step(self) -> float | None:
        return self.chosen.step if self.chosen else None

    @property
    def trials(self) -> list[dict]:
        """Every trial of every searched layer, as flat dicts (the per-trial log)."""
        return [t.to_dict() for s in self.searches for t in s.trials]

    def apply(self, model: nn.Module, weight: float = 1.0) -> nn.Module:
        """Add `weight` × the delta to `model`'s tensors in place; return the model."""
        who = f"refusing to apply the result for {self.config.concept!r} at weight {weight}"
        return add_checked(model, self.deltas, weight, who)  # all or nothing, finite

    def to_delta(
        self,
        *,
        concept_kind: str | None = None,
        model_family: str = "clip",
        component: str | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> ConceptDelta:
        """This result's delta (`ConceptDelta.from_result`); `rename` maps names to host names.

        `concept_kind` defaults to the config's."""
        if not self.converged:
            raise ConfigError(
                f"the search for {self.config.concept!r} met no criterion, so there is no delta "
                "to keep; see result.searches, or force a layer and step."
            )
        rename = dict(rename or {})
        targets = {rename.get(n, n): TargetInfo(**info) for n, info in self.base_tensors.items()}
        config = UnlearningConfig(
            concept=self.config.concept,
            step=float(self.step),
            targets=targets,
            scales={rename.get(n, n): float(s) for n, s in self.scales.items()},
            concept_kind=concept_kind or self.config.concept_kind,
            model_family=model_family,
            component=component,
            caption_mode=self.config.caption_mode,
            base_model_name_or_path=self.base_model_name_or_path,
            base_model_revision=self.base_model_revision,
            metrics=self.summary(),
            settings=self.config.to_dict(),
        )
        tensors = {rename.get(n, n): t.float().cpu() for n, t in self.deltas.items()}
        return ConceptDelta(config, tensors)

    def plot_pareto(self, path: str | Path) -> Path:
        """Save the Pareto-front plot (alignment vs importance, chosen layer circled)."""
        from .plots import plot_pareto

        return plot_pareto(self.layers, self.chosen_names, path)

    @property
    def direction(self) -> str:
        """The update direction of the chosen tensors in words: SLUG's forget gradient, or its
        null-space projection (only tensors of `config.null_space_towers` are projected)."""
        energy, towers = self.config.retain_null_space, self.config.null_space_towers
        edited_towers = {info.get("tower") for info in self.base_tensors.values()}
        spelt = (
            f", averaged over the captions and {self.config.criterion_misspellings} misspellings of the name"
            if self.config.criterion_misspellings
            else ""
        )
        if energy is None or (edited_towers and not edited_towers & set(towers)):
            return f"the forget gradient (SLUG){spelt}"
        return (
            f"the forget gradient{spelt + ',' if spelt else ''} off {100 * energy:g} % of the "
            f"retain inputs' energy at the edited tensor ({', '.join(towers)} tower)"
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: chosen layer, step, rule, before/after metrics, timings."""
        return {
            "concept": self.config.concept,
            "converged": self.converged,
            "layer": list(self.chosen_names),
            "step": self.step,
            "rule": self.rule,
            "direction": self.direction,
            "before": self.before,
            "after": self.after,
            "front": [s.label for s in self.layers if s.on_front],
            "searched": [
                {"layer": s.label, "status": s.status, "step": s.step} for s in self.searches
            ],
            "timings_s": self.timings,
            "searched_on_top_of": self.on_top_of,
            "data": self.data.to_dict() if self.data else None,
        }

    def report(self) -> str:
        """A plain-text before/after table with the chosen layer and step."""
        lines = [f"SLUG: unlearn {self.config.concept!r}"]
        if self.chosen is None:
            lines.append("no searched layer met the criterion:")
            lines += [f"  {s.label}: {s.status}" for s in self.searches]
            return "\n".join(lines)
        lines.append(f"layer: {self.chosen.label}   step s = {self.step:.4g}")
        lines.append(f"direction: {self.direction}")
        if self.data is not None:
            lines.append(f"measured on {self.data.describe()}")
        lines.append(f"{'metric':<18}{'before':>10}{'after':>10}")
        for key in self.before:
            lines.append(
                f"{key:<18}{self.before[key]:>10.4f}{self.after.get(key, float('nan')):>10.4f}"
            )
        return "\n".join(lines)


def unlearn(
    model: nn.Module,
    processor: Any,
    forget: PairSource,
    retain: PairSource,
    config: SLUGConfig,
    *,
    evaluator: Evaluator | Callable[[nn.Module], Mapping[str, float]] | None = None,
    validation: tuple[PairSource, PairSource] | None = None,
    options: UnlearnOptions | None = None,
    **unknown: Any,
) -> UnlearningResult:
    """Unlearn `config.concept` from a CLIPModel with SLUG; return the result (model untouched).

    `evaluator` scores each trial. Without one, `config.validation_share` of the forget and the
    retain pairs are held out (seeded by `config.split_seed`) and the default evaluator
    (`hf_slug.validation`) scores every trial on them only: the forget images under a phrasing
    ensemble with a margin, retain retrieval and the other candidates' recognition. Give your
    own evaluator validation data of its own, never the data final numbers come from;
    `validation=(forget pairs, retain pairs)` gives the default evaluator validation data of
    your own (nothing is held out then). `result.data` says which data the numbers come from.

    `options` (`hf_slug.UnlearnOptions`) says how the run goes, never what is forgotten:
    gradients may be given (`forget_gradients` / `retain_gradients`: tensors or a cached
    safetensors file); with `cache_dir` they are written there as `forget_gradients-<concept>`
    and `retain_gradients.safetensors` for the next concept; without it the retain gradients
    are kept in the per-user cache (`hf_slug.cache`; `cache_retain=False` turns it off), so a
    further concept on the same model and retain set pays only its forget pass and search. `candidates` narrows the candidate
    tensors (hosts use it, e.g. the vision blocks whose output reaches a VLM's language model).
    `gradients` (`GradientOptions`: mixed precision, checkpointing, data-parallel processes)
    goes to `compute_gradients`. `on_top_of` (ConceptDeltas or name -> tensor dicts) stacks:
    gradients stay at θ⁰, but the evaluation and the step search run with those deltas
    applied, so with an evaluator whose forget task holds every stacked concept's images the
    step is the one the stack needs; the utility guard (`config.utility_tolerance`) then
    compares with θ⁰, not with the stack. `avoid` (ConceptDeltas, UnlearningResults or tensor
    names): tensors other concepts' deltas already edit are no candidates, so the deltas of a
    stack never add up on one tensor. `inplace=True` applies the delta.
    """
    reject_unknown_keywords("unlearn", unknown)
    options = options if options is not None else UnlearnOptions()
    _check_arguments(model, processor, config, evaluator, options)
    for kind, source in (
        ("forget", options.forget_gradients),
        ("retain", options.retain_gradients),
    ):
        check_gradient_source(kind, source)
    candidates, on_top_of, avoid = options.candidates, options.on_top_of, options.avoid
    progress = options.progress
    criterion = Criterion(
        config.forget_metric, config.forget_target, config.utility_metric, config.utility_tolerance
    )
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    forget_pairs = load_pairs(forget, name="forget set").with_captions(
        config.caption_mode, config.concept
    )
    retain_pairs = load_pairs(retain, name="retain set")
    all_names = candidate_names(
        model, config.towers, include_projections=config.include_projections
    )
    if candidates is not None:
        allowed = set(candidates)
        all_names = [n for n in all_names if n in allowed]
        if not all_names:
            raise UnknownLayerError(
                f"none of the given candidates is a candidate weight of the {config.towers} "
                "tower(s); check the names against hf_slug.towers.candidate_names(model)."
            )
    avoided = avoided_tensors(avoid)
    if avoided:
        all_names = [n for n in all_names if n not in avoided]
        if not all_names:
            raise UnknownLayerError(
                f"avoid= excludes every candidate weight of the {config.towers} tower(s): avoid "
                "fewer deltas, or add the other tower (SLUGConfig(towers=...))."
            )
    units = group_layers(all_names, config.group)
    if config.layer != "auto":
        wanted = [config.layer] if isinstance(config.layer, str) else list(config.layer)
        named = set(resolve_names(model, wanted, all_names))
        units = [unit for unit in units if named & set(unit)]  # a named member brings its group
    names = [n for unit in units for n in unit]
    if not names:
        raise UnknownLayerError(
            f"layer={config.layer!r} selects no candidate weight of the {config.towers} tower(s): "
            "name at least one layer (e.g. 'vision.L0.fc1'), or pass layer='auto'."
        )

    # The evaluator and the metrics before any edit come first: they are cheaper than the
    # gradients, and a missing label or metric is reported before the expensive work.
    start = time.perf_counter()
    if evaluator is not None and validation is not None:
        raise ConfigError(
            "pass evaluator= or validation=, not both: validation=(forget, retain) feeds the "
            "default evaluator; your own evaluator brings its own validation data."
        )
    if evaluator is not None:
        evaluator = as_evaluator(evaluator)
        data = getattr(evaluator, "data", None) or EvaluationData(  # a host evaluator knows
            "evaluator", len(forget_pairs), len(retain_pairs)
        )
    elif validation is not None:
        val_forget, val_retain = _validation_pairs(validation)
        evaluator = default_evaluator(processor, val_forget, val_retain, config)
        data = EvaluationData(
            "validation", len(forget_pairs), len(retain_pairs), len(val_forget), len(val_retain)
        )
    else:  # hold out validation pairs: no trial is ever scored on a gradient pair
        evaluator, forget_pairs, retain_pairs, data = held_out_evaluator(
            processor, forget_pairs, retain_pairs, config
        )
    reference = None  # the guard's baseline: θ⁰, never the stack (so losses cannot add up)
    if on_top_of:
        if criterion.utility_tolerance is not None:
            reference = evaluator(model)
        evaluator = StackedEvaluator(evaluator, on_top_of)
    before = evaluator(model)
    criterion = criterion.guarding(before)
    already_forgotten = criterion.forgets(before)
    evaluation_before = time.perf_counter() - start

    pass_options = dict(batch_size=config.batch_size, options=options.gradients, progress=progress)
    grads = {}
    for kind, source, pairs in (
        ("forget", options.forget_gradients, forget_pairs),
        ("retain", options.retain_gradients, retain_pairs),
    ):
        start = time.perf_counter()
        cache = (
            cache_file_for(model, processor, kind, pairs, names, config, options)
            if source is None
            else None
        )
        grads[kind] = gradients_for(
            model, processor, pairs, kind, names, source, cache, pass_options
        )
        timings[f"{kind}_gradients"] = time.perf_counter() - start
    # The layers are scored on the name as written; the step goes along the gradient averaged
    # over the name's misspellings too, so a typo'd name is forgotten with it.
    start = time.perf_counter()
    plain = spelled = grads["forget"]
    if config.criterion_misspellings:
        given = options.forget_gradients is not None
        spelled = misspelt_average(
            model, processor, forget_pairs, plain, config, pass_options, given=given
        )
    timings["forget_gradients"] += time.perf_counter() - start

    start = time.perf_counter()
    bases: dict[int, torch.Tensor] = {}  # each covariance's directions, found once
    grads["forget"], covariances = null_space_gradients(
        model, processor, retain_pairs, plain, config, progress=progress, bases=bases
    )
    direction = grads["forget"]
    if spelled is not plain:
        direction = null_space_gradients(
            model, processor, retain_pairs, spelled, config, covariances=covariances, bases=bases
        )[0]
    timings["null_space"] = time.perf_counter() - start

    start = time.perf_counter()
    scores = score_layers(model, units, grads["forget"], grads["retain"])
    timings["metrics"] = time.perf_counter() - start

    start = time.perf_counter() - evaluation_before  # "search" includes the evaluation before
    if already_forgotten:
        warnings.warn(
            f"the model already meets the forget criterion for {config.concept!r} before any "
            f"edit ({config.forget_metric} = {before[config.forget_metric]:.3f}): there is little "
            "to unlearn; check the evaluator's forget images and labels.",
            stacklevel=2,
        )
    searches = search_layers(
        model,
        units_to_search(scores, config, every_mlp_output=evaluator.tracks_drift),
        direction,
        evaluator,
        criterion,
        before if reference is None else {**before, **_guarded(reference, criterion)},
        config.search_settings,
        progress=progress,
    )
    chosen, rule = choose_projected_first(searches, criterion, covariances)
    deltas = update(model, chosen.names, direction, chosen.step) if chosen else {}
    after = chosen.metrics if chosen else {}
    timings["search"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - clock
    if chosen is None:
        warnings.warn(no_layer_message(config.concept, criterion, searches), stacklevel=2)
    params = dict(model.named_parameters())
    result = UnlearningResult(
        config=config,
        layers=scores,
        searches=searches,
        chosen=chosen,
        rule=rule,
        deltas=deltas,
        before=before,
        after=after,
        base_tensors={
            n: {
                "shape": list(params[n].shape),
                "dtype": str(params[n].dtype).removeprefix("torch."),
                "sha256": fingerprint(params[n]),
                "tower": next(s.tower for s in scores if n in s.names),
            }
            for n in deltas
        },
        scales=step_scales(model, chosen.names, direction, chosen.step) if chosen else {},
        base_model_name_or_path=getattr(getattr(model, "config", None), "_name_or_path", None)
        or None,
        base_model_revision=getattr(getattr(model, "config", None), "_commit_hash", None),
        timings=timings,
        on_top_of=[getattr(getattr(d, "config", None), "concept", "delta") for d in on_top_of],
        data=data,
    )
    if options.inplace and chosen is not None:
        result.apply(model)
    return result


def _check_arguments(
    model: Any,
    processor: Any,
    config: Any,
    evaluator: Any,
    options: Any,
) -> None:
    """Cheap checks of `unlearn`'s arguments, before any data is read or gradient computed."""
    require_clip_model(model)
    require_no_active_adapters(model, "the CLIP model")
    if not isinstance(config, SLUGConfig):
        raise ConfigError(
            f"config must be an hf_slug.SLUGConfig, got a {type(config).__name__}: pass "
            'SLUGConfig(concept="...", candidate_labels=[...]).'
        )
    if processor is None or not callable(processor):
        raise ConfigError(
            f"processor must be the model's CLIPProcessor, got a {type(processor).__name__}: pass "
            "CLIPProcessor.from_pretrained(the same repo id or folder as the model)."
        )
    if evaluator is not None and not callable(evaluator):
        raise ConfigError(
            f"evaluator must be an hf_slug Evaluator or a callable model -> dict of metrics, got "
            f"a {type(evaluator).__name__}: pass one, or None for the default evaluator."
        )
    if not isinstance(options, UnlearnOptions):
        raise ConfigError(
            f"options must be an hf_slug.UnlearnOptions, got a {type(options).__name__}: pass "
            "options=UnlearnOptions(cache_dir=..., progress=...)."
        )
    check_batch_size(config.batch_size)


def _guarded(reference: Metrics, criterion: Criterion) -> Metrics:
    """The θ⁰ value of the guarded metric (the guard of a stacked search compares to it)."""
    key = criterion.utility_metric
    return {key: reference[key]} if key in reference else {}


def avoided_tensors(avoid: Sequence[Any]) -> set[str]:
    """The tensor names edited by `avoid`'s deltas, results or names."""
    if isinstance(avoid, (str, bytes)):
        avoid = [avoid]
    names: set[str] = set()
    for item in avoid:
        if isinstance(item, str):
            names.add(item)
        elif hasattr(item, "config") and hasattr(item.config, "targets"):
            names.update(item.config.targets)  # a ConceptDelta
        elif isinstance(getattr(item, "deltas", None), Mapping):
            names.update(item.deltas)  # an UnlearningResult
        elif isinstance(item, Mapping):
            names.update(item)
        else:
            raise ConfigError(
                f"avoid= takes ConceptDeltas, UnlearningResults or tensor names, got a "
                f"{type(item).__name__}: pass the deltas already in the stack."
            )
    return names


def _validation_pairs(validation: Any) -> tuple[Any, Any]:
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ConfigError(
            f"validation must be a (forget pairs, retain pairs) tuple, got a "
            f"{type(validation).__name__}: pass validation=(val_forget, val_retain)."
        )
    return (
        load_pairs(validation[0], name="validation forget set"),
        load_pairs(validation[1], name="validation retain set"),
    )


__all__ = ["UnlearningResult", "unlearn", "default_evaluator", "edited"]
