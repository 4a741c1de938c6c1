"""`hf-slug demo --vlm`: unlearn a person from the embedded LLaVA and ask it again.

The embedded VLM (`hf_slug/demo/embedded_vlm`) reads the embedded CLIP's vision tower. One
identity is unlearned twice — searched on CLIP zero-shot (`criterion="clip"`) and on the VLM's
own answers (`vlm_processor=`, the host-aware default) — and the VLM is asked "who is the person
in this photo?" on held-out test views before and after each: how often it names the target,
how often the others. The host-aware delta is saved under `OUT/deltas/`.

Example:
    >>> report = run_vlm_demo("slug_vlm_demo", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ..config import SLUGConfig
from ..hosts.vlm import VLMOptions, unlearn_vlm
from ..model import SLUGModel
from ..options import UnlearnOptions
from .protocol import forget_pairs, retain_pairs
from .run import load_embedded
from .vlm import ask, load_embedded_vlm
from .world import World

TARGET = "Clara Alderwick"
QUESTION = "Who is the person in this photo?"  # a phrasing the VLM never trained on


def named_rates(vlm: Any, processor: Any, views: list) -> dict[str, float]:
    """Per person, the share of their views the VLM answers with their name (in %)."""
    answers = ask(vlm, processor, [s.image for s in views], QUESTION)
    per: dict[str, list[bool]] = {}
    for sample, answer in zip(views, answers):
        per.setdefault(sample.label, []).append(sample.label.lower() in answer.lower())
    return {name: 100 * sum(hits) / len(hits) for name, hits in per.items()}


def run_vlm_demo(out: str | Path, target: str = TARGET, quick: bool = False) -> dict[str, Any]:
    """Run the demo, print its table, write `vlm_demo_report.json` and the delta; return the report."""
    out = Path(out)
    torch.manual_seed(0)
    clip, clip_processor = load_embedded()
    vlm, processor = load_embedded_vlm()
    world = World(0)
    views = world.samples("identity", "test", 4 if quick else 12)
    forget = forget_pairs(world, target, 32 if quick else 64)
    retain = retain_pairs(world, exclude=[target], per_concept=4)
    config = SLUGConfig(concept=target, candidate_labels=world.identities, concept_kind="identity")
    before = named_rates(vlm, processor, views)
    report: dict[str, Any] = {"target": target, "question": QUESTION, "runs": {}}
    rows = [("original", before, None, None)]
    for criterion in ("clip", "vlm"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the CLIP criterion's warning is the point here
            options = VLMOptions(criterion=criterion, unlearn=UnlearnOptions(progress=not quick))
            result = unlearn_vlm(
                vlm, clip, clip_processor, forget, retain, config,
                vlm_processor=processor if criterion == "vlm" else None, options=options,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        if not result.converged:
            report["runs"][criterion] = {"converged": False, "seconds": seconds}
            continue
        slug = SLUGModel(vlm)
        slug.add_adapter(criterion, result.delta)
        try:
            after = named_rates(slug, processor, views)
        finally:
            slug.unload()
        if criterion == "vlm":
            result.delta.save_pretrained(out / "deltas" / target.replace(" ", "_"))
        label = result.result.chosen.label
        rows.append((f"criterion={criterion!r}", after, label, seconds))
        report["runs"][criterion] = {"layer": label, "step": result.result.step, "after": after}
    print(table(rows, target))
    out.mkdir(parents=True, exist_ok=True)
    report["before"] = before
    (out / "vlm_demo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def demo_target(targets: list[str] | None, default: str = TARGET) -> str:
    """The first of `--targets` (or `default`), checked to be an identity of the demo world.

    Example:
        >>> demo_target(None)
        'Clara Alderwick'
    """
    from ..errors import UsageError

    target = targets[0] if targets else default
    names = World(0).identities
    if target not in names:
        raise UsageError(f"{target!r} is not an identity of the demo world: choose among {names}.")
    return target


def demo_command(out: str, targets: list[str] | None, quick: bool) -> int:
    """`hf-slug demo --vlm`: the first of `targets` (default `TARGET`) is unlearned; exit code."""
    from ..cli_checks import output_folder

    target = demo_target(targets)
    run_vlm_demo(
        output_folder(out, "--out", keeps=("vlm_demo_report.json", "deltas")), target, quick
    )
    return 0


def table(rows: list, target: str) -> str:
    """Target named / others named (mean over people), per run, in %."""
    lines = [
        f"{'VLM asked: ' + QUESTION!r}",
        f"{'':<20}{'target named':>14}{'others named':>14}  layer",
    ]
    for name, rates, layer, seconds in rows:
        others = [v for k, v in rates.items() if k != target]
        extra = f"  {layer} ({seconds:.0f} s)" if layer else ""
        lines.append(f"{name:<20}{rates[target]:>13.1f}%{sum(others) / len(others):>13.1f}%{extra}")
    return "\n".join(lines)


__all__ = ["demo_command", "demo_target", "named_rates", "run_vlm_demo"]
