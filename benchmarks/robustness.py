"""Audit SLUG and the baselines on the embedded CLIP: how hard is each erased concept to bring back?

Each target is unlearned by SLUG (the benchmarks' settings, a val evaluator) and by GA, GAFT,
MaskGAFT (the SLUG paper's mask + GAFT variant of SalUn; the JSON of earlier runs calls it
"SalUn") and SSD (learning rates from tune_baselines.json), each stopping on
the val forget accuracy; then `hf_slug.audit` probes every edited model on held-out **test**
views (24 per concept), with the original model as the reference.

    .venv/bin/python benchmarks/robustness.py --out benchmarks/           # full budget
    .venv/bin/python benchmarks/robustness.py --budget quick --targets "Marcus Brennholt"
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from baselines import IterativeConfig, SSDConfig, run_iterative, run_ssd
from common import command_line, write_json
from tasks import TaskSpec, build_task

from hf_slug import ConceptDelta, SLUGConfig, unlearn
from hf_slug.audit import AuditTarget, audit
from hf_slug.demo.novel import novel_views
from hf_slug.demo.run import load_embedded
from hf_slug.demo.world import World

TARGETS = (
    "Marcus Brennholt:identity",
    "Eileen Collins:identity",
    "Grace Hopper:identity",
    "boat:object",
    "watercolor:style",
)
METHODS = ("SLUG", "SLUG-ensemble", "SLUG-default", "GA", "GAFT", "MaskGAFT", "SSD")
MARGIN = 0.02  # SLUG-ensemble: an image counts as recognised within this cosine of the best


def ensemble_evaluator(task: Any, processor: Any, kind: str, margin: float = MARGIN) -> Any:
    """The val evaluator with its forget task judged by every criterion phrasing (any one names
    the target → recognised) and a margin: the criterion the audit suggested."""
    from dataclasses import replace

    from hf_slug import ZeroShotEvaluator
    from hf_slug.phrasings import criterion_templates

    templates = criterion_templates(kind if kind in ("identity", "object", "style") else "concept")
    tasks = [
        replace(t, templates=templates, prompts=None, scoring="any", margin=margin)
        if t.name == "forget"
        else t
        for t in task.val_tasks
    ]
    return ZeroShotEvaluator(processor, tasks)


VIEWS = 24  # held-out test views per concept


def held_out(world: World, kind: str, target: str) -> tuple[list, list[str]]:
    """Test views of the target and the names it competes with."""
    if kind == "identity":
        views = world.samples("identity", "test", VIEWS, [target])
        return [s.image for s in views], world.identities
    scenes = world.samples("object_style", "test", 3 if kind == "object" else 2, [target])
    label = (lambda s: s.label) if kind == "object" else (lambda s: s.style)
    names = world.objects if kind == "object" else world.styles
    return [s.image for s in scenes if label(s) == target][:VIEWS], names


SLUG_DEFAULT_SETTINGS: dict[str, Any] = {}  # --set key=json: SLUGConfig fields of SLUG-default


def unlearned(
    method: str, model: Any, processor: Any, task: Any, names: list[str], lr: dict, margin: float
) -> Any:
    """The edited model (or SLUG's delta) and what the run did."""
    if method == "SLUG-default":  # the shipped default call: held-out split, ensemble, margin
        config = SLUGConfig(
            concept=task.spec.target,
            candidate_labels=names,
            concept_kind=task.spec.kind,
            **SLUG_DEFAULT_SETTINGS,
        )
        evaluator = None
    elif method.startswith("SLUG"):
        config = SLUGConfig(
            concept=task.spec.target, candidate_labels=names, top_k=4, max_evaluations=10
        )
        evaluator = (
            ensemble_evaluator(task, processor, task.spec.kind, margin)
            if method == "SLUG-ensemble"
            else task.evaluator(processor, "val")
        )
    if method.startswith("SLUG"):
        result = unlearn(model, processor, task.forget, task.retain, config, evaluator=evaluator)
        if not result.converged:
            return None, {"reached": False}
        delta = ConceptDelta.from_result(result, concept_kind=task.spec.kind)
        return delta, {"reached": True, "layer": result.chosen.label, "step": result.step}
    edited = copy.deepcopy(model)
    stop = task.stop_evaluator(processor)
    check = lambda m: stop(m)["forget_acc"]  # noqa: E731
    if method == "SSD":
        outcome = run_ssd(
            edited, processor, task.forget, task.retain, check, SSDConfig(), progress=False
        )
    else:
        config = IterativeConfig(method, lr=lr[method], max_steps=200)
        outcome = run_iterative(
            edited, processor, task.forget, task.retain, check, config, progress=False
        )
    return edited, {"reached": outcome.reached, "steps": outcome.steps}


def test_metrics(model: Any, processor: Any, task: Any, edit: Any) -> dict[str, float]:
    """FA@1, FA@5, retain and utility on the test split (the protocol's template)."""
    edited = edit if isinstance(edit, torch.nn.Module) else edit.apply_to(copy.deepcopy(model))
    return task.report(task.evaluator(processor, "test")(edited))


SUMMARY = (  # (row label, family, statistic over its rows, column)
    ("held-out phrasings, worst template", "phrasing", max, "edited"),
    ("name variants, worst", "name variant", max, "edited"),
    ("augmentations, worst", "augmentation", max, "edited"),
    ("PGD towards the name", "PGD towards the name", max, "edited"),
    ("PGD: unrelated person's views → the name", "PGD towards the name", max, "reference"),
    ("learned prompt (concept inversion)", "learned prompt", max, "edited"),
    ("learned prompt: a never-seen person, original model", "learned prompt", max, "reference"),
    ("relearn, all weights, 1 image (steps)", "relearn (all weights)", min, "edited"),
    ("relearn: a never-seen person, original, 1 image", "relearn (all weights)", min, "reference"),
    ("relearn, edited layers, 1 image (steps)", "relearn (edited layers)", min, "edited"),
)


def summary_cell(audit_: dict[str, Any], family: str, pick: Any, column: str) -> str:
    """One statistic of a family's sound rows (those that find the concept in the original)."""
    rows = [r for r in audit_["rows"] if r["family"] == family]
    if family.startswith("relearn"):
        value = rows[0][column] if rows else None
        return f">{audit_['settings']['relearn_max_steps']}" if value is None else str(value)
    if column == "edited":  # a probe that misses the concept in the original says nothing
        rows = [r for r in rows if r["original"] is not None and r["original"] >= 0.5]
    values = [r[column] for r in rows if r[column] is not None]
    return f"{100 * pick(values):.1f}" if values else "–"


def markdown(report: dict[str, Any]) -> str:
    """One table per target: the probes' summaries (rows) for the original and each method."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in report["runs"]):
        runs = [r for r in report["runs"] if r["target"] == target and "audit" in r]
        if not runs:
            continue
        kind = runs[0]["kind"]
        lines += [
            f"### {target} ({kind}; {report['views']} held-out test views, {report['budget']} "
            "budget)",
            "",
            "| probe (FA@1 %, or steps) | original | "
            + " | ".join(r["method"] for r in runs)
            + " |",
            "|---|---|" + "---|" * len(runs),
        ]
        for label, family, pick, column in SUMMARY:
            first = runs[0]["audit"]
            if column == "reference" and kind != "identity":
                continue
            original = summary_cell(
                first, family, pick, "original" if column == "edited" else column
            )
            cells = [summary_cell(r["audit"], family, pick, column) for r in runs]
            if column == "reference":
                original = "–"
            lines.append(f"| {label} | {original} | " + " | ".join(cells) + " |")
        for key in ("FA@1", "retain", "utility"):
            base = runs[0]["before"][key]
            cells = [f"{r['test'][key]:.1f}" if "test" in r else "–" for r in runs]
            label = f"test {key} (protocol template)"
            lines.append(f"| {label} | {base:.1f} | " + " | ".join(cells) + " |")
        reached = ", ".join(f"{r['method']} {'yes' if r['reached'] else 'NO'}" for r in runs)
        lines += ["", f"Val forget target reached: {reached}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables-from", type=Path, help="only rewrite the tables of this JSON")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="NAME:KIND ...")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budget", default="full", choices=("quick", "full"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--margin", type=float, default=MARGIN, help="SLUG-ensemble's margin")
    parser.add_argument("--set", action="append", default=[], help="SLUG-default: field=json")
    args = parser.parse_args(argv)
    for item in args.set:
        key, _, value = item.partition("=")
        SLUG_DEFAULT_SETTINGS[key] = json.loads(value)
    if args.tables_from:
        report = json.loads(args.tables_from.read_text())
        print(markdown(report))
        return report
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, processor = load_embedded()
    world = World(0)
    lr = json.loads((Path(__file__).parent / "tune_baselines.json").read_text())["chosen_lr"]
    runs = []
    for item in args.targets:
        target, _, kind = item.partition(":")
        kind = kind or "identity"
        task = build_task(TaskSpec(target, kind), processor)
        images, names = held_out(world, kind, target)
        before = task.report(task.evaluator(processor, "test")(model))
        reference = novel_views(world, 16) if kind == "identity" else None
        for method in args.methods:
            clock = time.perf_counter()
            edit, info = unlearned(method, model, processor, task, names, lr, args.margin)
            info["unlearn_s"] = time.perf_counter() - clock
            record = {"target": target, "kind": kind, "method": method, "before": before, **info}
            if edit is not None:
                record["test"] = test_metrics(model, processor, task, edit)
                audited = AuditTarget(target, names, images, kind=kind, reference_images=reference)
                report = audit(model, processor, edit, audited, budget=args.budget)
                record["audit"] = report.to_dict()
            runs.append(record)
            print(f"{target} / {method}: {info}", file=sys.stderr)
    out = {
        "command": command_line(),
        "budget": args.budget,
        "views": VIEWS,
        "margin": args.margin,
        "runs": runs,
    }
    write_json(args.out / "robustness.json", out)
    print(markdown(out))
    return out


if __name__ == "__main__":
    main()
