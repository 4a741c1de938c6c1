"""Several concepts whose deltas work together: each step re-searched on top of the others.

Each concept's delta alone is tuned to just forget that concept, at the edge of its criterion, so
added to another delta it can lose a few images back. `unlearn_stack` first unlearns every
concept independently (gradients at θ⁰, its own layer and step: SLUG.md §5), then, round after
round, checks each concept's criterion with the other deltas applied and, for each concept the
stack broke, searches its layer and step again on top of the others
(`unlearn(..., on_top_of=...)`), until every concept holds. Gradients come from the cache, so a
round costs only evaluations.

Example:
    >>> requests = [StackRequest(forget_a, retain, config_a, evaluator_a),  # doctest: +SKIP
    ...             StackRequest(forget_b, retain, config_b, evaluator_b)]
    >>> results = unlearn_stack(model, processor, requests)  # doctest: +SKIP
    >>> deltas = [ConceptDelta.from_result(r) for r in results]  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .delta import ConceptDelta
from .errors import ConfigError, StackError
from .evaluation import StackedEvaluator, as_evaluator
from .options import UnlearnOptions
from .request import ConceptRequest
from .search import Criterion, edited
from .unlearn import UnlearningResult

StackRequest = ConceptRequest
"""One concept of a stack (the same `ConceptRequest` as everywhere); its evaluator scores the
concept's own validation images, and the stack is checked on it."""


def unlearn_stack(
    model: nn.Module,
    processor: Any,
    requests: Sequence[StackRequest],
    *,
    rounds: int = 3,
    cache_dir: str | Path | None = None,
    independent: Sequence[UnlearningResult] | None = None,
    on_failure: str = "warn",
    progress: bool = True,
) -> list[UnlearningResult]:
    """Unlearn every requested concept so that all their deltas, summed, forget all of them.

    Returns one result per request, in order; a result searched again on the stack lists the
    other concepts in `result.on_top_of`. Each request's evaluator must score its own
    concept's forget images (on validation data). Gradients are cached in `cache_dir` (default: a
    temporary folder). `independent`: results of `unlearn` already run on the requests (same
    order, same `cache_dir`), to skip the first pass.

    A re-search keeps its utility guard (`config.utility_tolerance`) against θ⁰, not against the
    stack, so the losses of the deltas cannot add up past it. When the rounds are over, the whole
    stack is checked once more: a concept that still fails is reported with its forget metric
    — a warning (`on_failure="warn"`) or a `StackError` (`on_failure="raise"`). A re-searched
    delta records the concepts it was tuned with (`result.on_top_of`, saved in its config's
    metrics as `searched_on_top_of`); `SLUGModel` warns when it is loaded without them.
    """
    if on_failure not in ("warn", "raise"):
        raise ConfigError(
            f"on_failure must be 'warn' or 'raise', got {on_failure!r}: pass one of those."
        )
    if len({r.config.concept for r in requests}) != len(requests):
        raise ValueError("each concept of a stack must be requested once.")
    if independent is not None and len(independent) != len(requests):
        raise ValueError(f"{len(independent)} independent results for {len(requests)} requests.")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}.")
    unscored = [r.config.concept for r in requests if r.evaluator is None]
    if unscored:
        raise ValueError(
            f"the requests for {unscored} have no evaluator: a stack is checked on each concept's "
            "own validation images, so give every StackRequest an evaluator."
        )
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(cache_dir) if cache_dir is not None else Path(scratch)
        results = (
            list(independent)
            if independent is not None
            else [
                r.unlearn(model, processor, UnlearnOptions(cache_dir=cache, progress=progress))
                for r in requests
            ]
        )
        missing = [r.config.concept for r, res in zip(requests, results) if not res.converged]
        if missing:
            warnings.warn(
                f"no layer forgets {missing}; the stack is tuned without them.", stacklevel=2
            )
        bar = tqdm(range(rounds), desc="stack rounds", unit="round", disable=not progress)
        for _ in bar:
            redone = []
            for i, request in enumerate(requests):
                others = [
                    ConceptDelta.from_result(res)
                    for j, res in enumerate(results)
                    if j != i and res.converged
                ]
                if not results[i].converged or _holds(model, request, results[i], others):
                    continue
                with warnings.catch_warnings():  # the others may already forget some images
                    warnings.filterwarnings("ignore", message=".*already meets the forget")
                    again = request.unlearn(
                        model,
                        processor,
                        UnlearnOptions(cache_dir=cache, on_top_of=others, progress=False),
                    )
                if again.converged:
                    results[i] = again
                    redone.append(request.config.concept)
            bar.set_postfix_str(", ".join(redone) or "stable")
            if not redone:
                break
    failing = _failing(model, requests, results)
    if failing:
        message = (
            f"after {rounds} round(s) the stack still fails "
            + "; ".join(failing)
            + ": raise rounds=, max_evaluations or initial_step, or unlearn fewer concepts at "
            "once (benchmarks/stacking.md)."
        )
        if on_failure == "raise":
            raise StackError(message)
        warnings.warn(message, stacklevel=2)
    return results


def _failing(
    model: nn.Module, requests: Sequence[StackRequest], results: Sequence[UnlearningResult]
) -> list[str]:
    """'concept (metric = value > target)' for each concept the whole stack does not forget."""
    failing = []
    for i, (request, result) in enumerate(zip(requests, results)):
        config = request.config
        if not result.converged:
            failing.append(f"{config.concept!r} (no layer met its criterion alone)")
            continue
        others = [
            ConceptDelta.from_result(r) for j, r in enumerate(results) if j != i and r.converged
        ]
        with edited(model, result.deltas):
            metrics = StackedEvaluator(as_evaluator(request.evaluator), others).evaluate_only(
                model, (config.forget_metric,)
            )
        criterion = Criterion(config.forget_metric, config.forget_target)
        if not criterion.forgets(metrics):
            failing.append(
                f"{config.concept!r} ({config.forget_metric} = "
                f"{criterion.forget_value(metrics):.4g} > target {config.forget_target:g})"
            )
    return failing


def _holds(
    model: nn.Module, request: StackRequest, result: UnlearningResult, others: list[ConceptDelta]
) -> bool:
    """Whether `result`'s delta still meets its forget criterion with `others` applied."""
    config = request.config
    with edited(model, result.deltas):
        metrics = StackedEvaluator(as_evaluator(request.evaluator), others).evaluate_only(
            model, (config.forget_metric,)
        )
    return Criterion(config.forget_metric, config.forget_target).forgets(metrics)


def interference(
    adapters: Mapping[str, ConceptDelta],
    targets: Mapping[str, Mapping[str, str]],
    active: Sequence[str],
    new: Sequence[str],
) -> list[str]:
    """Known interference patterns between the `new` adapters and the other `active` ones.

    `adapters`: name -> delta (keyed by host tensor names, as `SLUGModel` keeps them);
    `targets`: name -> {delta key: host tensor}. Patterns: two deltas on one tensor (their
    cosine says whether they cancel or push the same direction), and a delta searched on top of
    concepts that are not active. Each message says what was found and what to do.
    """
    messages = []
    concepts = {adapters[a].config.concept for a in active}
    for name in new:
        if name not in active:
            continue
        mine = _host_dense(adapters[name], targets[name])
        for other in active:
            if other == name or (other in new and active.index(other) > active.index(name)):
                continue
            theirs = _host_dense(adapters[other], targets[other])
            for host in sorted(set(mine) & set(theirs)):
                cos = float(
                    torch.nn.functional.cosine_similarity(
                        mine[host].flatten(), theirs[host].flatten(), dim=0
                    )
                )
                effect = (
                    "they partly cancel, so a concept can come back"
                    if cos < -0.2
                    else "they push one direction further, so retain and utility pay twice"
                    if cos > 0.2
                    else "their changes compound on one tensor"
                )
                messages.append(
                    f"{name!r} and {other!r} both edit {host}: their deltas add up (cosine "
                    f"{cos:+.2f}; {effect}). Check both concepts on held-out views, or make one "
                    f"again with unlearn(..., avoid=[the other delta]) or unlearn_stack."
                )
        tuned = adapters[name].config.metrics.get("searched_on_top_of") or []
        absent = sorted({str(c) for c in tuned} - concepts)
        if absent:
            messages.append(
                f"{name!r} was searched with the deltas of {absent} applied, and they are not "
                "active: its step fits that stack, so alone it may not forget "
                f"{adapters[name].config.concept!r}. Load those deltas too, or use its "
                "independently made delta."
            )
    return messages


def _host_dense(delta: ConceptDelta, mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    return {mapping.get(k, k): v.float() for k, v in delta.dense().items()}
