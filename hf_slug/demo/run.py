"""The one-command demo: unlearn identities from the embedded CLIP, show and save the effect.

    hf-slug demo --out slug_demo

1. Unlearn one identity: before/after FA@1, FA@5, retain accuracy and utility on held-out test
   views; the chosen layer, step and time; the Pareto plot and the before/after similarity
   matrices; the delta folder.
2. Unlearn a second identity and stack both deltas: with independently chosen steps, then with
   steps re-searched on the stack (`unlearn_stack`), showing both forgotten with the rest kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from ..config import SLUGConfig
from ..delta import ConceptDelta
from ..evaluation import ZeroShotEvaluator, ZeroShotTask
from ..model import SLUGModel
from ..options import UnlearnOptions
from ..plots import plot_similarity
from ..request import ConceptRequest
from ..stacking import unlearn_stack
from .protocol import forget_pairs, identity_evaluator, identity_report, retain_pairs
from .world import World

EMBEDDED = Path(__file__).parent / "embedded_clip"
# Eileen Collins is a real photograph (skimage's astronaut); Marcus Brennholt a drawn identity.
# Grace Hopper, the other photograph, is Eileen Collins' nearest neighbour: their deltas disturb
# each other when stacked (see the README's measurements, `--targets "Eileen Collins" "Grace Hopper"`).
TARGETS = ("Eileen Collins", "Marcus Brennholt")


def load_embedded(path: str | Path = EMBEDDED) -> tuple[Any, Any]:
    """The embedded CLIPModel (fp32, eval mode) and its CLIPProcessor."""
    from transformers import CLIPModel, CLIPProcessor

    if not (Path(path) / "model.safetensors").exists():
        raise FileNotFoundError(
            f"the embedded model's weights are missing from {path}: reinstall hf_slug, or "
            "train them with scripts/train_embedded.py."
        )
    model = CLIPModel.from_pretrained(path, dtype=torch.float32).eval()
    return model, CLIPProcessor.from_pretrained(path)


def _table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    width = max(9, *(len(c) + 2 for c in columns))
    lines = [f"{'':<28}" + "".join(f"{c:>{width}}" for c in columns)]
    for name, values in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{values[c]:>{width}.1f}" for c in columns))
    return "\n".join(lines)


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    targets: tuple[str, str] = TARGETS,
    model_path: str | Path = EMBEDDED,
) -> dict:
    """Run the demo, print its tables, write its files under `out`; return the measurements."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, processor = load_embedded(model_path)
    world = World(seed=0)
    size = dict(per_identity=4, per_concept=2) if quick else dict(per_identity=24, per_concept=3)
    val = (
        dict(size, forget_views=2 * size["per_identity"]) if quick else dict(size, forget_views=192)
    )
    n_forget, n_retain = (16, 2) if quick else (32, 4)
    settings = dict(top_k=2 if quick else 4, max_evaluations=8 if quick else 10)
    columns = ["FA@1", "FA@5", "retain", "utility"]
    deltas, results, measured = {}, {}, {"targets": list(targets)}
    test_all = identity_evaluator(world, processor, list(targets), "test", **size)

    requests = {
        t: ConceptRequest(
            forget_pairs(world, t, n_forget),
            retain_pairs(world, exclude=targets, per_concept=n_retain),
            SLUGConfig(concept=t, candidate_labels=world.identities, **settings),
            identity_evaluator(world, processor, t, "val", **val),
        )
        for t in targets
    }
    for target, r in requests.items():
        t0 = time.perf_counter()
        result = r.unlearn(model, processor, UnlearnOptions(cache_dir=out / "gradients"))
        elapsed = time.perf_counter() - t0
        if not result.converged:
            raise RuntimeError(f"the search did not converge for {target}: {result.report()}")
        results[target] = result
        deltas[target] = ConceptDelta.from_result(result, concept_kind="identity")
        folder = out / "deltas" / target.lower().replace(" ", "_")
        deltas[target].save_pretrained(folder)
        result.plot_pareto(folder / "pareto.png")
        test = identity_evaluator(world, processor, target, "test", **size)
        before = identity_report(test(model))
        slug = SLUGModel(model)
        slug.add_adapter(target, deltas[target])
        after = identity_report(test(model))
        slug.unload()
        print(f"\n== unlearn {target!r} (held-out test views, %) ==")
        print(_table({"original": before, f"after SLUG ({elapsed:.1f} s)": after}, columns))
        print(f"layer {result.chosen.label}, step s = {result.step:.4g}; {result.rule}")
        measured[target] = {
            "before": before,
            "after": after,
            "layer": result.chosen.label,
            "step": result.step,
            "seconds": elapsed,
        }
    first = targets[0]
    _similarity_figure(model, processor, world, deltas[first], targets, out / "similarity.png")

    # Stacking: each delta alone was tuned to just forget its own concept, so two of them can
    # disturb each other. unlearn_stack searches each step again (same layer, cached gradients)
    # with the other delta applied, until no step grows.
    t0 = time.perf_counter()
    tuned = unlearn_stack(
        model,
        processor,
        list(requests.values()),
        cache_dir=out / "gradients",
        independent=[results[t] for t in targets],
    )
    stack_seconds = time.perf_counter() - t0
    stack_deltas = {
        t: ConceptDelta.from_result(r, concept_kind="identity") for t, r in zip(targets, tuned)
    }
    for t, delta in stack_deltas.items():
        delta.save_pretrained(out / "deltas" / "stack" / t.lower().replace(" ", "_"))
    slug = SLUGModel(model)
    for t in targets:
        slug.add_adapter(t, deltas[t])
    stacked = {}
    with slug.disable_adapters():
        stacked["original"] = _stack_report(test_all(model), targets)
    stacked["independent steps"] = _stack_report(test_all(model), targets)
    for t in targets:
        slug.delete_adapter(t)
        slug.add_adapter(t, stack_deltas[t])
    stacked[f"stack-tuned steps ({stack_seconds:.1f} s)"] = _stack_report(test_all(model), targets)
    second = targets[1]
    slug.delete_adapter(second)
    stacked[f"{second} delta removed"] = _stack_report(test_all(model), targets)
    slug.unload()
    stack_columns = [f"FA@1 {t.split()[-1]}" for t in targets] + ["retain", "utility"]
    print(f"\n== stack: {' + '.join(targets)} (held-out test views, %) ==")
    print(_table(stacked, stack_columns))
    steps = ", ".join(
        f"{t} {results[t].step:.4g} -> {r.step:.4g} ({r.chosen.label})"
        for t, r in zip(targets, tuned)
    )
    print(f"steps alone -> on the stack: {steps}")
    measured["stack"] = stacked
    measured["stack_steps"] = {
        t: {"layer": r.chosen.label, "alone": results[t].step, "stacked": r.step}
        for t, r in zip(targets, tuned)
    }
    measured["seconds"] = time.perf_counter() - start
    (out / "demo_report.json").write_text(json.dumps(measured, indent=2) + "\n")
    print(
        f"\nfiles in {out}/: deltas/*/ (slug_config.json, slug_model.safetensors, pareto.png), "
        f"similarity.png, demo_report.json; total {measured['seconds']:.0f} s"
    )
    return measured


def _stack_report(metrics: dict[str, float], targets: tuple[str, ...]) -> dict[str, float]:
    """Per-target FA@1 from a joint evaluator (its forget task holds all targets' views)."""
    report = identity_report(metrics, targets)
    return {**{f"FA@1 {t.split()[-1]}": report[f"FA@1 {t}"] for t in targets}, **report}


def _similarity_figure(
    model, processor, world: World, delta: ConceptDelta, targets: tuple[str, ...], path: Path
) -> Path:
    names = list(targets) + [n for n in world.identities if n not in targets][:4]
    views = world.samples("identity", "test", 1, names)
    views.sort(key=lambda s: names.index(s.label))
    evaluator = ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask(
                "faces",
                [s.image for s in views],
                [s.label for s in views],
                names,
                prompts={n: [f"{n}."] for n in names},
            ),
        ],
    )
    before = evaluator.similarity(model, "faces")
    slug = SLUGModel(model)
    slug.add_adapter("forget", delta)
    after = evaluator.similarity(model, "faces")
    slug.unload()
    return plot_similarity(
        before, after, names, names, path, title=f"forgetting {delta.config.concept}"
    )
