"""`hf-slug demo --pipeline`: unlearn a person from the embedded text-to-image pipeline.

The embedded pipeline (`hf_slug/demo/embedded_t2i`) reads the embedded CLIP's text tower. One
identity is unlearned through it with `unlearn_pipeline` (forget: 32 training views of the
person with their captions; retain: the demo's retain pairs; the search scored by the demo
protocol's CLIP zero-shot evaluator on `val` views, as `hf-slug demo` does), and the pipeline
draws every measured identity with held-out phrasings and fixed seeds before and after. An
*unedited* copy of the embedded CLIP judges each image zero-shot among the 26 names
("{name}."), as `benchmarks/generative_pipeline.py` does: generation accuracy is the share of a
person's images the judge names as them. The delta, a before/after image grid and a JSON report
are written to `--out`.

Example:
    >>> report = run_pipeline_demo("slug_pipeline_demo", quick=True)  # doctest: +SKIP
    >>> report["after"]["target_gen_acc"] < report["before"]["target_gen_acc"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import SLUGConfig
from ..hosts.base import before_after_table
from ..hosts.diffusion import PipelineOptions, unlearn_pipeline
from ..model import SLUGModel
from ..names import default_adapter_name
from ..options import UnlearnOptions
from ..plots import image_grid
from .protocol import forget_pairs, identity_evaluator, retain_pairs
from .run import load_embedded
from .t2i import (
    GENERATION_KWARGS,
    HELD_OUT_PHRASINGS,
    IdentityJudge,
    generation_accuracy,
    load_embedded_pipeline,
)
from .vlm_demo import demo_target
from .world import World

TARGET = "Clara Alderwick"
REPORT = "pipeline_demo_report.json"
GRID = "pipeline_before_after.png"


def summary(per_identity: dict[str, float], target: str) -> dict[str, float]:
    """The target's generation accuracy and the others' mean, as fractions.

    Example:
        >>> summary({"Ada": 1.0, "Bob": 0.5, "Cy": 0.0}, "Ada")
        {'target_gen_acc': 1.0, 'others_gen_acc': 0.25}
    """
    others = [v for k, v in per_identity.items() if k != target]
    return {"target_gen_acc": per_identity[target], "others_gen_acc": sum(others) / len(others)}


def run_pipeline_demo(out: str | Path, target: str = TARGET, quick: bool = False) -> dict[str, Any]:
    """Run the demo, print its table, write the report, the grid and the delta; return the report.

    `quick`: the target and 5 other identities, 2 seeds (else all 26 identities, 3 seeds); both
    draw each with 2 held-out phrasings.
    """
    out = Path(out)
    torch.manual_seed(0)
    world = World(0)
    names = list(world.identities)
    measured = list(dict.fromkeys([target, *names[:5]])) if quick else names
    phrasings, seeds = list(HELD_OUT_PHRASINGS[:2]), list(range(2 if quick else 3))
    pipe = load_embedded_pipeline()
    clip, clip_processor = load_embedded()  # the CLIP SLUG takes gradients on
    judge = IdentityJudge(*load_embedded(), names)  # a separate copy, never edited
    before, images_before = generation_accuracy(pipe, judge, measured, phrasings, seeds)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unlearned = unlearn_pipeline(
            pipe, clip, clip_processor, target, retain_pairs(world, exclude=[target]),
            forget=forget_pairs(world, target, 32),
            config=SLUGConfig(target, towers=("text",), candidate_labels=names),
            options=PipelineOptions(
                evaluator=identity_evaluator(world, clip_processor, target, "val"),
                concept_kind="identity", unlearn=UnlearnOptions(progress=False),
            ),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    run = unlearned.run
    report: dict[str, Any] = {
        "target": target,
        "identities": measured,
        "phrasings": phrasings,
        "seeds": seeds,
        "generation": GENERATION_KWARGS,
        "judge": "unedited embedded CLIP, zero-shot over the 26 identity names, '{name}.'",
        "converged": run.converged,
        "layer": run.layer,
        "step": run.step,
        "unlearn_seconds": round(seconds, 1),
        "before": summary(before, target),
        "before_per_identity": before,
    }
    out.mkdir(parents=True, exist_ok=True)
    if unlearned.delta is not None:
        name = default_adapter_name(target)
        slug = SLUGModel(pipe)
        slug.add_adapter(name, unlearned.delta)
        after, images_after = generation_accuracy(slug, judge, measured, phrasings, seeds)
        unlearned.delta.save_pretrained(out / "deltas" / name)
        report.update(after=summary(after, target), after_per_identity=after)
        rows = list(dict.fromkeys([target, *measured]))[:6]
        image_grid(
            [[images[(phrasings[0].format(n), s)] for images in (images_before, images_after)
              for s in seeds] for n in rows],
            out / GRID,
            row_labels=rows,
            col_labels=[f"{w} s{s}" for w in ("before", "after") for s in seeds],
        )  # fmt: skip
        report["grid"] = GRID
        print(f"{target}: unlearned at {run.layer}, step {run.step:.3g} ({seconds:.0f} s)")
        print(before_after_table(report["before"], report["after"]))
        kept = report["after"]["others_gen_acc"] / max(report["before"]["others_gen_acc"], 1e-9)
        print(f"the others keep {kept:.1%} of their before-accuracy; images: {out / GRID}")
    else:
        print(f"{target}: unlearn_pipeline did not converge; nothing to compare.")
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def demo_command(out: str, targets: list[str] | None, quick: bool) -> int:
    """`hf-slug demo --pipeline`: the first of `targets` (default `TARGET`); exit code."""
    from ..cli_checks import output_folder

    target = demo_target(targets, TARGET)
    folder = output_folder(out, "--out", keeps=(REPORT, GRID, "deltas"))
    return 0 if run_pipeline_demo(folder, target, quick).get("after") else 1


__all__ = ["GRID", "REPORT", "TARGET", "demo_command", "run_pipeline_demo", "summary"]
