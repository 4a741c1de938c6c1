"""Do typo'd names still name the concept after the default call? (issue 18: misspellings)

For each target, `unlearn` runs with the README's call (`SLUGConfig(concept=..., candidate_labels=
..., concept_kind=...)`) plus each `--settings` entry, on the world's training pairs
(`generalisation.data_for`). Each edit is then probed with `--spellings` one-typo and as many
two-typo spellings of the target (`hf_slug.audit.phrasings.name_variants`, seeds 0.., drawn apart
from the criterion's and the gradient's `misspellings`) in every held-out audit template, on
`--split` views: a spelling's rate is the share of views its *worst* template names top-1 among
the kind's names (the others spelt right). A spelling counts only when the original model names
the concept with it on at least half the views ("known"); it "leaks" when the edited model still
does on more than 5 %. Validation utility (`--split val`) or test utility says what the edit cost.

Tune on one world's val split, report on another world's test split:

    python benchmarks/typo_sweep.py --world embedded --split val \\
        --settings '{}' '{"misspellings": 0}' '{"misspellings": 2}' '{"misspellings": 8}' \\
        --out benchmarks/generalisation_sweeps/typo_val_embedded.json
    python benchmarks/typo_sweep.py --world b --split test --settings '{}' '{"misspellings": 0}' \\
        --out benchmarks/generalisation_sweeps/typo_test_b.json
    python benchmarks/typo_sweep.py --markdown benchmarks/generalisation_sweeps/typo_val_embedded.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, table, write_json  # noqa: E402
from benchmarks.generalisation import WORLDS, data_for, load_world  # noqa: E402
from hf_slug import ConceptDelta, SLUGConfig, UnlearnOptions, unlearn  # noqa: E402
from hf_slug.audit.phrasings import name_variants  # noqa: E402
from hf_slug.audit.phrasings import templates as audit_templates  # noqa: E402
from hf_slug.audit.probes import Scorer, phrasing_rates  # noqa: E402
from hf_slug.demo.protocol import (  # noqa: E402
    concept_evaluator,
    concept_report,
    identity_evaluator,
    identity_report,
)

KNOWN, LEAK = 0.5, 0.05  # the original names it on >= half the views; the edit on > 5 %


def views_of(world: Any, kind: str, target: str, split: str) -> tuple[list, list[str]]:
    """Up to 24 `split` views of the target and the names of its kind."""
    if kind == "identity":
        return [s.image for s in world.samples("identity", split, 24, [target])], world.identities
    per = 3 if kind == "object" else 2
    scenes = world.samples("object_style", split, per, [target])
    label = (lambda s: s.label) if kind == "object" else (lambda s: s.style)
    names = world.objects if kind == "object" else world.styles
    return [s.image for s in scenes if label(s) == target][:24], names


def spellings(target: str, count: int) -> dict[str, str]:
    """`count` one-typo and `count` two-typo spellings (the audit's draws, seeds 0..count-1)."""
    out = {}
    for seed in range(count):
        variants = name_variants(target, seed)
        out[f"one typo, seed {seed}"] = variants["one typo"]
        out[f"two typos, seed {seed}"] = variants["two typos"]
    return out


def worst_rates(model, processor, images, names, target, kind, spelt) -> dict[str, float]:
    """Each spelling's FA@1 on its worst held-out template."""
    templates = audit_templates(kind)
    rates = phrasing_rates(
        Scorer(model, processor), images, names, names.index(target), templates, spelt
    )
    return {label: max(rates[(t, label)] for t in templates) for label in spelt}


def utility(world, processor, kind, target, split, model) -> dict[str, float]:
    """The protocol's report on `split` (identities: retain/utility; objects, styles: IRA/CRA)."""
    if kind == "identity":
        evaluator = identity_evaluator(world, processor, target, split, per_identity=12)
        return identity_report(evaluator(model))
    evaluator = concept_evaluator(world, processor, kind, target, split, per_concept=2)
    return concept_report(evaluator(model))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import CLIPModel, CLIPProcessor

    torch.set_num_threads(args.threads)
    world = load_world(args.world)
    folder = WORLDS[args.world]
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    settings = [json.loads(s) for s in args.settings]
    rows = []
    for item in args.targets:
        kind, _, target = item.partition(":")
        images, names = views_of(world, kind, target, args.split)
        spelt = spellings(target, args.spellings)
        original = worst_rates(model, processor, images, names, target, kind, spelt)
        before = utility(world, processor, kind, target, args.split, model)
        forget, retain = data_for(world, kind, target, 32)
        for setting in settings:
            config = SLUGConfig(
                concept=target, candidate_labels=names, concept_kind=kind, **setting
            )
            start = time.perf_counter()
            result = unlearn(
                model, processor, forget, retain, config, options=UnlearnOptions(progress=False)
            )
            seconds = time.perf_counter() - start
            row = {"kind": kind, "target": target, "setting": setting, "seconds": seconds}
            row["misspellings"] = config.criterion_misspellings
            if result.chosen is None:
                rows.append({**row, "chosen": None})
                continue
            edited = ConceptDelta.from_result(result).apply_to(copy.deepcopy(model))
            after = worst_rates(edited, processor, images, names, target, kind, spelt)
            rows.append(
                {
                    **row,
                    "chosen": result.chosen.label,
                    "step": result.step,
                    "before": before,
                    "after": utility(world, processor, kind, target, args.split, edited),
                    "spellings": {
                        label: {"spelling": s, "original": original[label], "edited": after[label]}
                        for label, s in spelt.items()
                    },
                }
            )
            print(summary_line(rows[-1]), file=sys.stderr, flush=True)
    return {
        "command": command_line(),
        "world": args.world,
        "split": args.split,
        "known": KNOWN,
        "leak": LEAK,
        "rows": rows,
    }


def leaks(row: dict[str, Any]) -> tuple[int, list[str]]:
    """(known spellings, those the edit still names on more than `LEAK` of the views)."""
    known = {k: v for k, v in row["spellings"].items() if v["original"] >= KNOWN}
    bad = [f"{v['spelling']} {100 * v['edited']:.0f}" for v in known.values() if v["edited"] > LEAK]
    return len(known), bad


def cost(row: dict[str, Any]) -> float:
    """Utility (identities) or CRA (objects, styles) after minus before, in points."""
    key = "utility" if row["kind"] == "identity" else "CRA"
    return row["after"][key] - row["before"][key]


def summary_line(row: dict[str, Any]) -> str:
    known, bad = leaks(row)
    return (
        f"{row['target']} {row['setting']} {row['chosen']} s={row['step']:.3g}: "
        f"{len(bad)}/{known} known spellings leak {bad}; cost {cost(row):+.1f}"
    )


def markdown(report: dict[str, Any]) -> str:
    """Per setting and kind: targets, known spellings, leaking spellings, cost."""
    out = [f"`{report['command']}` ({report['world']} world, {report['split']} views)", ""]
    groups: dict[tuple[str, str], list] = {}
    for row in report["rows"]:
        if row.get("chosen"):
            key = (json.dumps(row["setting"]), "identity" if row["kind"] == "identity" else "o/s")
            groups.setdefault(key, []).append(row)
    body = []
    for (setting, kind), rows in groups.items():
        counted = [leaks(r) for r in rows]
        costs = [cost(r) for r in rows]
        body.append(
            [
                setting,
                kind,
                len(rows),
                rows[0]["misspellings"],
                sum(k for k, _ in counted),
                sum(len(b) for _, b in counted),
                "; ".join(
                    f"{r['target']}: {', '.join(b[:3])}"
                    + (f" (+{len(b) - 3})" if len(b) > 3 else "")
                    for r, (_, b) in zip(rows, counted)
                    if b
                )
                or "none",
                f"{statistics.mean(costs):+.1f} ({min(costs):+.1f})",
            ]
        )
    header = [
        "setting",
        "kind",
        "targets",
        "misspellings",
        "known spellings",
        "leak > 5 %",
        "which (edited FA@1 %)",
        "utility / CRA Δ mean (worst)",
    ]
    return "\n".join([*out, table(header, body)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="embedded")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument(
        "--targets",
        nargs="+",
        help="KIND:NAME ... (default: the world's first 8 identities, 2 objects, 2 styles)",
    )
    parser.add_argument("--settings", nargs="+", default=["{}"], help="SLUGConfig fields as JSON")
    parser.add_argument("--spellings", type=int, default=12, help="one- and two-typo draws each")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path, help="only print the table of this JSON")
    args = parser.parse_args(argv)
    if args.markdown:
        report = json.loads(args.markdown.read_text())
    else:
        if not args.targets:
            world = load_world(args.world)
            args.targets = [f"identity:{n}" for n in world.identities[:8]]
            args.targets += [f"object:{n}" for n in world.objects[:2]]
            args.targets += [f"style:{n}" for n in world.styles[:2]]
        report = run(args)
        if args.out:
            write_json(args.out, report)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
