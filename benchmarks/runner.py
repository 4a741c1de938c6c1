"""What runs inside each benchmark child process: one method on one task, measured.

Each entry point loads the model and the cached task itself (so nothing leaks between methods),
warms up, records the RSS as its baseline, then runs the method alone under `PeakMemory` and a
`PassCounter`. Rendering the data and preprocessing the evaluation sets happen before the
baseline for every method; each method's own preprocessing of its training pairs is timed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from baselines import (
    ITERATIVE,
    IterativeConfig,
    SSDConfig,
    changed_parameters,
    loss_on,
    preprocess,
    run_iterative,
    run_ssd,
)
from measure import (
    GB,
    MB,
    PeakMemory,
    activation_bytes,
    counting,
    folder_bytes,
    model_bytes,
    quiet_threads,
    tensor_bytes,
    warm_up,
)
from models import load_model, parameter_count
from tasks import load_task
from torch import nn


@dataclass
class SLUGSettings:
    """SLUG's settings in the benchmarks (the demo's: 4 front layers per tower, ≤ 10 trials)."""

    top_k: int | None = 4
    max_evaluations: int = 10
    batch_size: int = 32
    towers: tuple[str, ...] = ("vision", "text")
    layer: str = "auto"
    # "evaluator": the search scores on the task's val views (the benchmarks' first runs);
    # "default": no evaluator — `unlearn` holds out its `validation_share` of the forget and
    # retain pairs and scores on them with the library's default criterion (its shipped default)
    criterion: str = "evaluator"


@dataclass
class MethodSpec:
    """One child run: which method, on which task file and model, with which settings."""

    method: str  # "SLUG", "SLUG-top1", "SSD" or one of baselines.ITERATIVE
    task_path: str
    model: str
    target: float = 0.0
    lr: float = 1e-4
    max_steps: int = 200
    slug: SLUGSettings = field(default_factory=SLUGSettings)
    ssd: SSDConfig = field(default_factory=SSDConfig)
    threads: int = 2
    progress: bool = False
    lora_ranks: tuple[int, ...] = (1, 4)
    floor_repeats: int = 2
    evaluate_test: bool = True  # False: cost only (no test metrics, LoRA or stored sizes)
    evaluate_before: bool = True  # False: no test metrics of the unedited model ("before")
    seed: int = 0  # the iterative baselines' seed (batch order; SalUn's random labels)
    # False: SLUG computes its retain gradients itself (a first concept's cost), even where
    # hf_slug keeps them in the per-user cache by default; True: that cache may be read
    gradient_cache: bool = False

    @property
    def is_slug(self) -> bool:
        return self.method.startswith("SLUG")


def run_method(spec: MethodSpec) -> dict[str, Any]:
    """Run one method in this (child) process; its measurements as a JSON-ready dict."""
    quiet_threads(spec.threads)
    task = load_task(spec.task_path)
    model, processor = load_model(spec.model)
    test = task.evaluator(processor, "test") if spec.evaluate_test else None
    default = spec.is_slug and spec.slug.criterion == "default"
    val = task.evaluator(processor, "val") if spec.is_slug and not default else None
    stop = task.stop_evaluator(processor) if not spec.is_slug else None
    originals = (
        {n: p.detach().clone() for n, p in model.named_parameters()} if not spec.is_slug else {}
    )
    warm_up(model, processor, task.retain)
    before_raw = test(model) if test is not None and spec.evaluate_before else {}
    before = task.report(before_raw) if before_raw else {}
    gc.collect()

    with counting(model) as counter:
        peak = PeakMemory().start()
        clock = time.perf_counter()
        cpu = time.process_time()
        if spec.is_slug:
            result = _slug(model, processor, task, val, spec)
        elif spec.method == "SSD":
            config = SSDConfig(**{**asdict(spec.ssd), "target": spec.target})
            result = run_ssd(
                model,
                processor,
                task.forget,
                task.retain,
                _check(stop),
                config,
                progress=spec.progress,
            )
        elif spec.method in ITERATIVE:
            config = IterativeConfig(
                spec.method,
                lr=spec.lr,
                max_steps=spec.max_steps,
                target=spec.target,
                seed=spec.seed,
                concept=task.spec.target,
                candidates=tuple(task.candidates),
            )
            result = run_iterative(
                model,
                processor,
                task.forget,
                task.retain,
                _check(stop),
                config,
                progress=spec.progress,
            )
        else:
            raise ValueError(f"unknown method {spec.method!r}")
        wall = time.perf_counter() - clock
        cpu = time.process_time() - cpu
        peak.stop()
    record: dict[str, Any] = {
        "method": spec.method,
        "target": task.spec.target,
        "kind": task.spec.kind,
        "n_forget": len(task.forget),
        "n_retain": len(task.retain),
        "wall_s": wall,
        "cpu_s": cpu,  # this process's CPU time (all its threads): fairer than wall on a shared box
        "passes": counter.to_dict(),
        "memory": peak.to_dict(),
        "model_parameters": parameter_count(model),
        "model_mb": model_bytes(model) / MB,
        "before": before,
        "before_raw": before_raw,
    }
    if spec.is_slug:
        record["slug_settings"] = asdict(spec.slug)
        record["gradient_cache"] = spec.gradient_cache
        record.update(_slug_after(model, processor, task, test, result, spec))
    elif test is None:
        record.update(reached=result.reached, outcome=result.to_dict())
    else:
        record["reached"] = result.reached
        record["outcome"] = result.to_dict()
        record["test_counts"] = {t.name: len(t.images) for t in task.test_tasks}
        record["after_raw"] = raw = test(model)
        record["after"] = task.report(raw)
        record["val_after"] = task.report(task.evaluator(processor, "val")(model))
        stored = changed_parameters(model, originals)
        stored["full_checkpoint_bytes"] = model_bytes(model)
        record["stored"] = stored
    return record


def _check(evaluator: Any) -> Any:
    return lambda model: evaluator(model)["forget_acc"]


def _slug(model: nn.Module, processor: Any, task: Any, evaluator: Any, spec: MethodSpec) -> Any:
    with _gradient_cache(spec.gradient_cache):
        return _unlearn(model, processor, task, evaluator, spec)


@contextlib.contextmanager
def _gradient_cache(enabled: bool) -> Any:
    """hf_slug's per-user gradient cache on or off (its environment switch), restored after."""
    name = "HF_SLUG_DISABLE_GRADIENT_CACHE"
    saved = os.environ.get(name)
    os.environ[name] = "0" if enabled else "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def _unlearn(model: nn.Module, processor: Any, task: Any, evaluator: Any, spec: MethodSpec) -> Any:
    from hf_slug import SLUGConfig, UnlearnOptions, unlearn

    default = spec.slug.criterion == "default"
    if spec.slug.criterion not in ("default", "evaluator"):
        raise ValueError(
            f"SLUGSettings.criterion must be 'default' or 'evaluator', not {spec.slug.criterion!r}."
        )
    config = SLUGConfig(
        concept=task.spec.target,
        towers=spec.slug.towers,
        layer=spec.slug.layer,
        top_k=spec.slug.top_k,
        max_evaluations=spec.slug.max_evaluations,
        batch_size=spec.slug.batch_size,
        forget_target=spec.target,
        **(
            {"candidate_labels": task.candidates, "concept_kind": task.spec.kind} if default else {}
        ),
    )
    return unlearn(
        model,
        processor,
        task.forget,
        task.retain,
        config,
        evaluator=None if default else evaluator,
        options=UnlearnOptions(progress=False),
    )


def _slug_after(
    model: nn.Module, processor: Any, task: Any, test: Any, result: Any, spec: MethodSpec
) -> dict[str, Any]:
    """SLUG's cost split, floor, memory bound, stored sizes, LoRA export and test metrics."""
    from hf_slug.delta import ConceptDelta
    from hf_slug.export import export_peft_lora
    from hf_slug.towers import candidate_names

    record: dict[str, Any] = {
        "reached": result.converged,
        "timings_s": result.timings,
        "layer": result.chosen.label if result.chosen else None,
        "step": result.step,
        "searched_layers": [s.label for s in result.searches],
        "trials": len(result.trials),
        "front_size": sum(s.on_front for s in result.layers),
        "candidates": len(result.layers),
        "data": asdict(result.data) if _is_dataclass(result.data) else str(result.data),
    }
    names = candidate_names(model, spec.slug.towers)
    params = dict(model.named_parameters())
    candidate_grad_bytes = tensor_bytes([params[n] for n in names])
    record["floor"] = floor_pass(model, processor, task, spec.slug.batch_size, spec.floor_repeats)
    activations = batch_activation_bytes(model, processor, task, names, spec.slug.batch_size)
    record["memory_bound"] = {
        "activations_one_batch_mb": activations / MB,
        "candidate_gradients_mb": candidate_grad_bytes / MB,
        "bound_above_model_mb": (activations + 2 * candidate_grad_bytes) / MB,
    }
    if test is None:
        return record
    record["test_counts"] = {t.name: len(t.images) for t in task.test_tasks}
    if not result.converged:
        record["after_raw"] = raw = test(model)
        record["after"] = task.report(raw)
        return record
    delta = ConceptDelta.from_result(result, concept_kind=task.spec.kind)
    with tempfile.TemporaryDirectory() as tmp:
        folder = delta.save_pretrained(Path(tmp) / "delta")
        record["stored"] = {
            "delta_folder_bytes": folder_bytes(folder),
            "delta_weights_file_bytes": (folder / "slug_model.safetensors").stat().st_size,
            "delta_tensor_bytes": delta.nbytes(),
            "one_layer_bytes": max(tensor_bytes([params[n]]) for n in delta.names),
            "full_checkpoint_bytes": model_bytes(model),
        }
        lora = {}
        for rank in (None, *spec.lora_ranks):
            report = export_peft_lora(delta, Path(tmp) / f"lora-{rank}", rank=rank)
            weights = report.directory / "adapter_model.safetensors"
            entry = {
                "rank": max(report.ranks.values()),
                "relative_error": report.max_relative_error,
                "folder_bytes": report.nbytes,
                "weights_file_bytes": weights.stat().st_size,
            }
            if rank is not None:
                low, _ = delta.to_lowrank(rank)
                entry["test"] = _evaluate_with(model, low, task, test)
            lora["exact" if rank is None else f"rank{rank}"] = entry
        record["lora"] = lora
    record["after_raw"] = {}
    record["after"] = _evaluate_with(model, delta, task, test, record["after_raw"])
    return record


def _is_dataclass(value: Any) -> bool:
    from dataclasses import is_dataclass

    return is_dataclass(value) and not isinstance(value, type)


def _evaluate_with(
    model: nn.Module, delta: Any, task: Any, test: Any, raw: dict[str, float] | None = None
) -> dict[str, float]:
    """Test metrics with `delta` applied; the model's tensors are restored afterwards."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in delta.names}
    delta.apply_to(model, check_fingerprint=False)
    try:
        metrics = test(model)
        if raw is not None:
            raw.update(metrics)
        return task.report(metrics)
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)


def floor_pass(
    model: nn.Module, processor: Any, task: Any, batch_size: int, repeats: int = 2
) -> dict[str, float]:
    """Seconds of one forward+backward over forget + retain data, every parameter trainable.

    Preprocessing is included (SLUG's gradient pass preprocesses too); the fastest repeat counts.
    """
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for kind, pairs in (("forget", task.forget), ("retain", task.retain)):
                for batch in preprocess(pairs, processor, batch_size):
                    loss_on(model, batch, kind).backward()
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return {"seconds": min(times), "repeats": times}


def batch_activation_bytes(
    model: nn.Module, processor: Any, task: Any, names: list[str], batch_size: int
) -> int:
    """Activation bytes of one retain batch with only the candidate tensors trainable."""
    flags = {p: p.requires_grad for p in model.parameters()}
    keep = set(names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    try:
        batch = preprocess(task.retain[:batch_size], processor, batch_size)[0]
        return activation_bytes(model, lambda: loss_on(model, batch, "retain"))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


# -- the gradient computation alone, for the memory options ------------------------------------
MEMORY_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16 autocast": {"autocast": True},
    "checkpointing": {"checkpointing": True},
    "vision only": {"towers": ("vision",)},
    "text only": {"towers": ("text",)},
    "all three (vision)": {"autocast": True, "checkpointing": True, "towers": ("vision",)},
}


@dataclass
class GradientSpec:
    """One gradient computation: model size, memory variant, pairs (one batch)."""

    size: str
    variant: str
    task_path: str
    n_pairs: int = 8
    threads: int = 2


def run_gradient_memory(spec: GradientSpec) -> dict[str, Any]:
    """Time and peak RSS of `compute_gradients` on one batch, with one memory variant."""
    from models import SIZES, processor_for, random_clip

    from hf_slug.gradients import compute_gradients, only_these_require_grad
    from hf_slug.options import GradientOptions
    from hf_slug.towers import candidate_names

    quiet_threads(spec.threads)
    options = MEMORY_VARIANTS[spec.variant]
    towers = options.get("towers", ("vision", "text"))
    autocast = torch.bfloat16 if options.get("autocast") else None
    checkpointing = bool(options.get("checkpointing"))
    task = load_task(spec.task_path)
    pairs = (task.forget * (1 + spec.n_pairs // len(task.forget)))[: spec.n_pairs]
    build = time.perf_counter()
    model = random_clip(spec.size)
    build = time.perf_counter() - build
    processor = processor_for(SIZES[spec.size].image_size)
    names = candidate_names(model, towers)
    params = dict(model.named_parameters())
    with torch.no_grad():  # warm-up without gradients: first-call costs, no lasting buffers
        batch = preprocess(pairs[:1], processor, 1)[0]
        loss_on(model, batch, "forget")
    gc.collect()
    peak = PeakMemory().start()
    start = time.perf_counter()
    grads = compute_gradients(
        model,
        processor,
        _pairs(pairs),
        "forget",
        names,
        batch_size=spec.n_pairs,
        options=GradientOptions(autocast_dtype=autocast, checkpointing=checkpointing),
        progress=False,
    )
    seconds = time.perf_counter() - start
    peak.stop()
    del grads
    gc.collect()
    batch = preprocess(pairs, processor, spec.n_pairs)[0]
    targets = [params[n] for n in names]
    with only_these_require_grad(model, targets, checkpointing):
        context = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
        with context:
            activations = activation_bytes(model, lambda: loss_on(model, batch, "forget"))
    return {
        "size": spec.size,
        "variant": spec.variant,
        "n_pairs": spec.n_pairs,
        "image_size": SIZES[spec.size].image_size,
        "parameters": parameter_count(model),
        "model_gb": model_bytes(model) / GB,
        "candidates": len(names),
        "candidate_gb": tensor_bytes(targets) / GB,
        "activation_gb": activations / GB,
        "activation_mb_per_pair": activations / MB / spec.n_pairs,
        "seconds": seconds,
        "build_seconds": build,
        "peak_gb": peak.peak_above_baseline / GB,
        "baseline_rss_gb": peak.baseline / GB,
        "memory": peak.to_dict(),
    }


def _pairs(pairs: list[tuple]) -> Any:
    from hf_slug.data import load_pairs

    return load_pairs(list(pairs))
