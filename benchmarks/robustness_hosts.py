"""The host audit (issue 18 item 5): question paraphrases for the VLM, generation phrasings for
the pipeline, each on the edited model and the original.

On the embedded VLM, each target is unlearned with the default host-aware call
(`unlearn_vlm(..., vlm_processor=processor)`: the VLM's answers judge the search) and audited
with `audit_vlm` on 40 held-out test views. On the embedded pipeline, one target is unlearned
with `unlearn_pipeline`'s public defaults (forget = 32 training views) and audited with
`audit_pipeline`, judged by a separately loaded, never-edited embedded CLIP.

    python benchmarks/robustness_hosts.py --out benchmarks/robustness_hosts.json
    python benchmarks/robustness_hosts.py --out benchmarks/robustness_hosts.json --parts vlm
    python benchmarks/robustness_hosts.py --tables-from benchmarks/robustness_hosts.json

`--parts` runs some parts and keeps the others' results in the JSON. Contrasts: each VLM target
also with `criterion="clip"`; the pipeline also with `criterion="clip"` (`pipeline-clip`) and
with a generation criterion over more phrasings at the pipeline's own settings
(`pipeline-check`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, quietly, write_json  # noqa: E402
from hf_slug import (  # noqa: E402
    PipelineOptions,
    SLUGConfig,
    UnlearnOptions,
    VLMOptions,
    unlearn_pipeline,
    unlearn_vlm,
)
from hf_slug.audit import AuditTarget, HostAuditBudget, audit_pipeline, audit_vlm  # noqa: E402
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.run import load_embedded  # noqa: E402
from hf_slug.demo.t2i import GENERATION_KWARGS, load_embedded_pipeline  # noqa: E402
from hf_slug.demo.vlm import load_embedded_vlm  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402
from hf_slug.hosts.vlm_evaluation import DEFAULT_QUESTION  # noqa: E402
from hf_slug.phrasings import criterion_templates  # noqa: E402

VLM_TARGETS = ("Clara Alderwick", "Grace Hopper")
PIPELINE_TARGETS = ("Clara Alderwick",)
VIEWS = 40
PARTS = ("vlm", "pipeline", "pipeline-clip", "pipeline-check")


def run_record(out: Any, seconds: float) -> dict[str, Any]:
    """What the unlearning call chose and which criterion judged its search."""
    result = out.result
    return {
        "converged": out.converged,
        "seconds": round(seconds, 1),
        "layer": result.chosen.label if result.chosen is not None else None,
        "step": result.step,
        "criterion_metrics": sorted(result.after),
        "criterion_before": {k: float(v) for k, v in result.before.items()},
        "criterion_after": {k: float(v) for k, v in result.after.items()},
        "data": result.data.describe() if result.data is not None else None,
    }


def pipeline_criterion(record: dict[str, Any], options: PipelineOptions, pipe: Any) -> dict:
    """Which criterion the call used: the options' field, or (None) the one `unlearn_pipeline`
    chooses for this pipeline (`default_criterion`), with the check it asked."""
    from hf_slug.hosts.denoiser_criterion import DenoiserCheck
    from hf_slug.hosts.diffusion_criterion import GenerationCheck
    from hf_slug.hosts.pipeline_criteria import default_criterion

    used = options.criterion or default_criterion(pipe, 1)
    check: dict[str, Any] | None = None
    if used == "generation":
        generation = options.generation or GenerationCheck()
        check = {
            "templates": list(generation.phrasings("identity")),
            "target_images": generation.target_images,
            "seed": generation.seed,
            "generation_kwargs": dict(generation.generation_kwargs),
        }
    elif used == "denoiser":
        denoiser = options.denoiser or DenoiserCheck()
        check = {
            "templates": list(denoiser.phrasings("identity")),
            "timesteps": list(denoiser.timesteps),
            "noises": denoiser.noises,
            "seed": denoiser.seed,
            "margin": denoiser.margin,
        }
    return {"options_criterion": options.criterion, "used": used, "check": check}


def vlm_part(world: World, targets: list[str], budget: HostAuditBudget) -> list[dict]:
    """Each target unlearned with the default host-aware call (`vlm_processor` given: the VLM's
    answers judge the search) and, as a contrast, with `criterion="clip"`; both audited."""
    vlm, processor = load_embedded_vlm()
    clip, clip_processor = load_embedded()
    rows = []
    for target, criterion in [(t, c) for t in targets for c in ("default", "clip")]:
        options = VLMOptions(unlearn=UnlearnOptions(progress=False))
        if criterion == "clip":
            options = dataclasses.replace(options, criterion="clip")
        out, seconds = quietly(
            unlearn_vlm,
            vlm,
            clip,
            clip_processor,
            forget_pairs(world, target, 64),
            retain_pairs(world, exclude=[target], per_concept=4),
            SLUGConfig(concept=target, candidate_labels=world.identities),
            vlm_processor=processor,
            options=options,
        )
        record = {"target": target, "search": criterion, "criterion": options.criterion}
        record["call"] = "unlearn_vlm(..., vlm_processor=processor, options=VLMOptions(...))"
        record.update(run_record(out, seconds))
        print(f"{target} ({criterion}): unlearn_vlm {record}", flush=True)
        if out.delta is not None:
            views = [s.image for s in world.samples("identity", "test", VIEWS, [target])]
            aim = AuditTarget(target, world.identities, views)
            report = audit_vlm(vlm, processor, out.delta, aim, budget=budget)
            record["audit"] = report.to_dict()
            asked = audit_vlm(vlm, processor, out.delta, aim, questions=[DEFAULT_QUESTION])
            record["criterion_question"] = dataclasses.asdict(asked.rows[0])
            print(report.to_markdown(), flush=True)
        rows.append(record)
    return rows


def pipeline_options(search: str) -> PipelineOptions:
    """`default`: `PipelineOptions()` as shipped; `clip`: CLIP zero-shot (the former default);
    `check`: the generation criterion over four criterion phrasings, drawn with the embedded
    pipeline's own generation settings (20 steps, guidance 5) instead of its 10-step default."""
    options = PipelineOptions(concept_kind="identity", unlearn=UnlearnOptions(progress=False))
    if search == "clip":
        return dataclasses.replace(options, criterion="clip")
    if search == "check":
        from hf_slug.hosts.diffusion_criterion import GenerationCheck

        check = GenerationCheck(
            templates=tuple(criterion_templates("identity")[:4]),
            generation_kwargs=GENERATION_KWARGS,
        )
        return dataclasses.replace(options, criterion="generation", generation=check)
    return options


def pipeline_part(
    world: World, targets: list[str], budget: HostAuditBudget, search: str
) -> list[dict]:
    pipe = load_embedded_pipeline()
    clip, clip_processor = load_embedded()
    judge, judge_processor = load_embedded()  # a separate copy: never edited
    rows = []
    for target in targets:
        options = pipeline_options(search)
        out, seconds = quietly(
            unlearn_pipeline,
            pipe,
            clip,
            clip_processor,
            target,
            retain_pairs(world, exclude=[target]),
            forget=forget_pairs(world, target, 32),
            config=SLUGConfig(
                target,
                towers=("text",),
                candidate_labels=world.identities,
                concept_kind="identity",
            ),
            options=options,
        )
        record = {"target": target, "search": search, "call": f"unlearn_pipeline: {search}"}
        record.update(run_record(out, seconds))
        record["criterion"] = pipeline_criterion(record, options, pipe)
        print(f"{target}: unlearn_pipeline {record}", flush=True)
        if out.delta is not None:
            views = [s.image for s in world.samples("identity", "test", 8, [target])]
            report = audit_pipeline(
                pipe,
                out.delta,
                AuditTarget(target, world.identities, views),
                judge,
                judge_processor,
                budget=budget,
            )
            record["audit"] = report.to_dict()
            print(report.to_markdown(), flush=True)
        rows.append(record)
    return rows


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def vlm_table(rows: list[dict]) -> str:
    """One column per search: each paraphrase's named rate, edited (original)."""
    audited = [r for r in rows if "audit" in r]
    header = ["probe (VLM names the target, % of 40 test views)", "original"]
    header += [f"{r['target']}, {r['search']} search" for r in audited]
    lines = [table_row(header), table_row(["---"] * len(header))]
    first = audited[0]["audit"]["rows"]
    for i, probe in enumerate(first):
        originals = {pct(r["audit"]["rows"][i]["original"]) for r in audited}
        cells = [probe["setting"], " / ".join(sorted(originals))]
        cells += [pct(r["audit"]["rows"][i]["edited"]) for r in audited]
        lines.append(table_row(cells))
    crit = [f"the criterion's own question {audited[0]['criterion_question']['setting']}"]
    crit.append(" / ".join(sorted({pct(r["criterion_question"]["original"]) for r in audited})))
    crit += [pct(r["criterion_question"]["edited"]) for r in audited]
    lines.append(table_row(crit))
    return "\n".join(lines)


def pipeline_table(parts: dict[str, dict]) -> str:
    """One column per pipeline search: each probe's judged rate (original | edited)."""
    runs = [(p, r) for p, part in parts.items() for r in part["rows"] if "audit" in r]
    header = ["probe (judge names the target, % of 4 seeds)", "original"]
    header += [f"{r['target']}, {r['search']} search" for _, r in runs]
    lines = [table_row(header), table_row(["---"] * len(header))]
    for i, probe in enumerate(runs[0][1]["audit"]["rows"]):
        family = probe["family"].removeprefix("generation (").rstrip(")")
        cells = [f"{family}: {probe['setting']}"]
        cells.append(" / ".join(sorted({pct(r["audit"]["rows"][i]["original"]) for _, r in runs})))
        cells += [pct(r["audit"]["rows"][i]["edited"]) for _, r in runs]
        lines.append(table_row(cells))
    return "\n".join(lines)


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def searches_table(data: dict) -> str:
    """What each unlearning call chose, how long it took, and its criterion's own numbers."""
    header = ["part", "target", "search", "criterion used", "layer", "step", "seconds"]
    lines = [table_row(header), table_row(["---"] * len(header))]
    for part, content in data["parts"].items():
        for r in content["rows"]:
            used = r["criterion"]
            if isinstance(used, dict):
                used = used["used"]
            elif used is None:
                used = "vlm (answers; vlm_processor given)"
            step = "–" if r["step"] is None else f"{r['step']:.3g}"
            cells = [part, r["target"], r["search"], str(used), str(r["layer"]), step]
            lines.append(table_row([*cells, f"{r['seconds']:.0f}"]))
    return "\n".join(lines)


def summary_table(data: dict) -> str:
    """Per audited run: the worst edited rate of each probe family, and how many probes
    (rows other than the worst-case one) leave the edited model above 5 %."""
    header = ["part", "target", "search", "worst per probe family (edited %)", "probes > 5 %"]
    lines = [table_row(header), table_row(["---"] * len(header))]
    for part, content in data["parts"].items():
        for r in content["rows"]:
            if "audit" not in r:
                continue
            worst: dict[str, float] = {}
            for probe in r["audit"]["rows"]:
                family = probe["family"]
                worst[family] = max(worst.get(family, 0.0), probe["edited"])
            probes = [p for p in r["audit"]["rows"] if not p["setting"].startswith("any ")]
            above = sum(p["edited"] > 0.05 for p in probes)
            families = "; ".join(f"{k}: {pct(v)}" for k, v in worst.items())
            cells = [part, r["target"], r["search"], families, f"{above} of {len(probes)}"]
            lines.append(table_row(cells))
    return "\n".join(lines)


def markdown(data: dict) -> str:
    parts = data["parts"]
    out = [searches_table(data), "", summary_table(data), ""]
    if "vlm" in parts:
        out += [vlm_table(parts["vlm"]["rows"]), ""]
    pipeline = {k: v for k, v in parts.items() if k.startswith("pipeline")}
    if pipeline:
        out += [pipeline_table(pipeline), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the JSON to write (parts already in it stay)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to run; the others' results already in --out are kept",
    )
    parser.add_argument("--vlm-targets", nargs="*", default=list(VLM_TARGETS))
    parser.add_argument("--pipeline-targets", nargs="*", default=list(PIPELINE_TARGETS))
    parser.add_argument("--quick", action="store_true", help="the quick host budget")
    parser.add_argument("--tables-from", type=Path, help="no run: print the tables of a JSON")
    args = parser.parse_args()
    if args.tables_from:
        print(markdown(json.loads(args.tables_from.read_text())))
        return
    if args.out is None:
        parser.error("--out is required for a run")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    world = World(0)
    budget = HostAuditBudget.named("quick" if args.quick else "full")
    pipe_budget = dataclasses.replace(budget, generation_kwargs=GENERATION_KWARGS)
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    data.setdefault("parts", {})
    for part in args.parts:
        began = time.perf_counter()
        if part == "vlm":
            rows = vlm_part(world, args.vlm_targets, budget)
        else:
            search = part.removeprefix("pipeline-") if "-" in part else "default"
            rows = pipeline_part(world, args.pipeline_targets, pipe_budget, search)
        data["parts"][part] = {
            "command": command_line(),
            "budget": budget.name,
            "seconds": round(time.perf_counter() - began, 1),
            "rows": rows,
        }
        write_json(args.out, data)


if __name__ == "__main__":
    main()
