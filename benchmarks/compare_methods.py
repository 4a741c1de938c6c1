"""SLUG against iterative unlearning baselines on the embedded CLIP: cost and quality.

For each target (identities and a style), every method runs in its own spawned process on the
same model, forget set and retain set, until the val forget accuracy reaches the target (SLUG:
its step search; GA/GAFT/SalUn/FT: checked after every iteration; SSD: its α search) or its
budget runs out. Reported: wall time, image–text pairs through forward+backward, evaluation
forwards, peak memory above the loaded model, test FA@1/FA@5/retain/utility, stored size, and
ratios against SLUG from the same run; SLUG's own cost split and its time against one plain
forward+backward pass over forget + retain data (measured in SLUG's process).

    python benchmarks/compare_methods.py --out benchmarks/
    python benchmarks/compare_methods.py --smoke --out /tmp/bench-smoke   # < 1 min, tiny model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from baselines import ITERATIVE, SSDConfig
from common import (
    DEFAULT_MODEL,
    Stopwatch,
    command_line,
    human_bytes,
    model_sha256,
    table,
    write_json,
)
from measure import machine, quiet_threads, run_isolated
from models import load_model, save_smoke_model
from plots import plot_comparison
from runner import MethodSpec, SLUGSettings, run_method
from tasks import DEFAULT_CACHE, TaskSpec, cached_task

METHODS = ("SLUG", "SLUG-top1", "GA", "GAFT", "SalUn", "SSD", "FT")
# SLUG: the demo's settings (top_k=4); SLUG-top1: only the most important front layer per tower
SLUG_VARIANTS = {"SLUG": {}, "SLUG-top1": {"top_k": 1}}
TARGETS = (
    "Grace Hopper:identity",
    "Eileen Collins:identity",
    "Marcus Brennholt:identity",
    "watercolor:style",
    "boat:object",
)
DEFAULT_LR = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a CLIPModel folder")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="NAME:KIND ...")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--tuning",
        type=Path,
        default=None,
        help="tune_baselines.py's JSON (default: OUT/tune_baselines.json when it exists)",
    )
    parser.add_argument("--lr", nargs="*", default=[], help="METHOD=LR overrides")
    parser.add_argument("--max-steps", type=int, default=200, help="iteration budget")
    parser.add_argument("--forget-target", type=float, default=0.0)
    parser.add_argument("--n-forget", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (faster; memory peaks then mix; --smoke)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny random model and sizes")
    parser.add_argument("--progress", action="store_true", help="per-iteration progress bars")
    return parser.parse_args(argv)


def learning_rates(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """Each iterative method's learning rate and where it came from."""
    rates = dict.fromkeys(ITERATIVE, DEFAULT_LR)
    source = f"default {DEFAULT_LR:g} (no tuning file)"
    path = args.tuning or args.out / "tune_baselines.json"
    if path.exists() and not args.smoke:
        rates.update(json.loads(path.read_text())["chosen_lr"])
        source = f"chosen by {path}"
    for item in args.lr:
        method, value = item.split("=")
        rates[method] = float(value)
        source += f"; {method} set to {value} on the command line"
    return rates, source


def task_specs(args: argparse.Namespace) -> list[TaskSpec]:
    specs = []
    for item in args.targets:
        name, _, kind = item.partition(":")
        if args.smoke:
            specs.append(TaskSpec(name, kind or "identity", 4, 16, per_identity=1, per_concept=1))
        else:
            specs.append(TaskSpec(name, kind or "identity", args.n_forget))
    return specs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_threads(args.threads)
    clock = Stopwatch()
    args.out.mkdir(parents=True, exist_ok=True)
    model = str(save_smoke_model(args.cache / "smoke_model")) if args.smoke else args.model
    if args.smoke:
        args.in_process = True
        args.targets = args.targets[:1] if args.targets == list(TARGETS) else args.targets
        args.max_steps = min(args.max_steps, 3)
    rates, rate_source = learning_rates(args)
    slug = SLUGSettings(top_k=1, max_evaluations=2) if args.smoke else SLUGSettings()
    variants = {m: SLUGSettings(**{**vars(slug), **v}) for m, v in SLUG_VARIANTS.items()}
    ssd = SSDConfig(max_evaluations=2) if args.smoke else SSDConfig()
    _, processor = load_model(model)
    report: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "model": model,
        "model_sha256": model_sha256(model),
        "settings": {
            "forget_target": args.forget_target,
            "max_steps": args.max_steps,
            "learning_rates": rates,
            "learning_rate_source": rate_source,
            "slug": {m: vars(v) for m, v in variants.items()},
            "ssd": vars(ssd),
        },
        "runs": [],
    }
    name = "compare_methods_smoke" if args.smoke else "compare_methods"
    for spec in task_specs(args):
        print(f"== {spec.target} ({spec.kind}): rendering the task (cached after the first run)")
        path = cached_task(spec, processor, args.cache)
        for method in args.methods:
            print(f"   {method} …", flush=True)
            run = MethodSpec(
                method=method,
                task_path=str(path),
                model=model,
                target=args.forget_target,
                lr=rates.get(method, DEFAULT_LR),
                max_steps=args.max_steps,
                slug=variants.get(method, slug),
                ssd=ssd,
                threads=args.threads,
                progress=args.progress,
                lora_ranks=(1,) if args.smoke else (1, 4),
                floor_repeats=1 if args.smoke else 2,
            )
            try:
                record = run_isolated(run_method, run, isolate=not args.in_process)
            except RuntimeError as error:
                print(error)
                record = {"method": method, "target": spec.target, "error": str(error)}
            report["runs"].append(record)
            print(f"   {method}: {_line(record)}", flush=True)
            write_json(args.out / f"{name}.json", report)
    report["summary"] = summarise(report["runs"])
    report["seconds"] = clock()
    write_json(args.out / f"{name}.json", report)
    (args.out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    plot_comparison(report, args.out / f"{name}.png")
    print(f"wrote {args.out / name}.json, .md and .png in {clock():.0f} s")
    return report


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return "FAILED"
    after = record["after"]
    return (
        f"{record['wall_s']:.1f} s, reached={record['reached']}, "
        f"peak +{record['memory']['peak_above_baseline_mb']:.0f} MB, "
        f"test FA@1 {after['FA@1']:.1f} retain {after['retain']:.1f} utility {after['utility']:.1f}"
    )


def stored_bytes(record: dict[str, Any]) -> int | None:
    """What a method must store: SLUG's delta folder; a baseline's changed tensors."""
    stored = record.get("stored")
    if not stored:
        return None
    if record["method"].startswith("SLUG"):
        return stored["delta_folder_bytes"]
    return stored["changed_tensor_bytes"]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: each method's ratios against SLUG (time, passes, memory, storage)."""
    summary: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in runs):
        mine = {r["method"]: r for r in runs if r["target"] == target and "error" not in r}
        slug = mine.get("SLUG")
        rows = {}
        for method, r in mine.items():
            row = {
                "reached": r["reached"],
                "wall_s": r["wall_s"],
                "pairs_forward_backward": r["passes"]["pairs_forward_backward"],
                "peak_mb": r["memory"]["peak_above_baseline_mb"],
                "stored_bytes": stored_bytes(r),
                **{f"test_{k}": v for k, v in r["after"].items()},
            }
            if slug is not None:
                row["time_vs_slug"] = r["wall_s"] / slug["wall_s"]
                row["peak_vs_slug"] = row["peak_mb"] / max(
                    slug["memory"]["peak_above_baseline_mb"], 1e-9
                )
                slug_bytes = stored_bytes(slug)
                if slug_bytes and row["stored_bytes"] is not None:
                    row["stored_vs_slug"] = row["stored_bytes"] / slug_bytes
            rows[method] = row
        iterative = [
            (m, row) for m, row in rows.items() if m in ITERATIVE and row["reached"] and slug
        ]
        fastest = min(iterative, key=lambda mr: mr[1]["wall_s"], default=None)
        summary[target] = {
            "methods": rows,
            "fastest_iterative_reaching_target": fastest[0] if fastest else None,
            "speedup_vs_fastest_iterative": {
                m: fastest[1]["wall_s"] / rows[m]["wall_s"]
                for m in rows
                if fastest and m.startswith("SLUG")
            },
        }
    return summary


def markdown(report: dict[str, Any]) -> str:
    """The tables RESULTS.md quotes."""
    runs = [r for r in report["runs"] if "error" not in r]
    lines = [f"Command: `{report['command']}`", ""]
    for target, part in report["summary"].items():
        mine = [r for r in runs if r["target"] == target]
        if not mine:
            continue
        first = mine[0]
        lines += [
            f"### {target} ({first['kind']}; {first['n_forget']} forget pairs, "
            f"{first['n_retain']} retain pairs)",
            "",
        ]
        rows = [["original", "", "", "", "", "", "", "", *_quality(first["before"]), "", ""]]
        for r in mine:
            m = part["methods"][r["method"]]
            steps = r["trials"] if r["method"].startswith("SLUG") else r["outcome"]["steps"]
            rows.append(
                [
                    r["method"],
                    r["reached"],
                    steps,
                    r["wall_s"],
                    m.get("time_vs_slug"),
                    r["passes"]["pairs_forward_backward"],
                    r["passes"]["eval_image_forwards"] + r["passes"]["eval_text_forwards"],
                    r["memory"]["peak_above_baseline_mb"],
                    *_quality(r["after"]),
                    human_bytes(m["stored_bytes"]),
                    m.get("stored_vs_slug"),
                ]
            )
        lines.append(
            table(
                [
                    "method",
                    "reached",
                    "iters / trials",
                    "wall s",
                    "× SLUG time",
                    "fwd+bwd pairs",
                    "eval fwd (img+txt)",
                    "peak MB",
                    "FA@1",
                    "FA@5",
                    "retain",
                    "utility",
                    "stored",
                    "× SLUG stored",
                ],
                rows,
            )
        )
        fastest = part["fastest_iterative_reaching_target"]
        if fastest:
            speedups = ", ".join(
                f"{m} {v:.2f}×" for m, v in part["speedup_vs_fastest_iterative"].items()
            )
            lines.append(
                f"\nFastest iterative baseline reaching the target: {fastest}; its time over "
                f"SLUG's (speed-up): {speedups}."
            )
        lines.append("")
    lines += ["### SLUG's cost split (seconds)", ""]
    rows = []
    for r in runs:
        if not r["method"].startswith("SLUG"):
            continue
        t = r["timings_s"]
        floor = r["floor"]["seconds"]
        rows.append(
            [
                f"{r['target']} ({r['method']})",
                t["forget_gradients"],
                t["retain_gradients"],
                t["metrics"],
                t["search"],
                t["total"],
                r["wall_s"],
                floor,
                t["total"] / floor,
                r["trials"],
                r["layer"],
                r["step"],
            ]
        )
    lines.append(
        table(
            [
                "target",
                "forget grads",
                "retain grads",
                "metrics",
                "search (evals)",
                "total",
                "wall",
                "floor (1 fwd+bwd)",
                "total / floor",
                "trials",
                "layer",
                "step s",
            ],
            rows,
        )
    )
    lines += ["", "### SLUG's memory and storage", ""]
    rows = []
    for r in runs:
        if not r["method"].startswith("SLUG") or "stored" not in r:
            continue
        bound = r["memory_bound"]
        s = r["stored"]
        lora = r.get("lora", {})
        rows.append(
            [
                f"{r['target']} ({r['method']})",
                r["memory"]["peak_above_baseline_mb"],
                bound["activations_one_batch_mb"],
                bound["candidate_gradients_mb"],
                bound["bound_above_model_mb"],
                human_bytes(s["delta_folder_bytes"]),
                human_bytes(s["delta_weights_file_bytes"]),
                human_bytes(s["one_layer_bytes"]),
                *[
                    f"{human_bytes(v['weights_file_bytes'])} (r={v['rank']}, "
                    f"err {v['relative_error']:.2g}"
                    + (f", test FA@1 {v['test']['FA@1']:.0f}" if "test" in v else "")
                    + ")"
                    for v in lora.values()
                ],
            ]
        )
    ranks = next((list(r["lora"]) for r in runs if r.get("lora")), [])
    lines.append(
        table(
            [
                "target",
                "peak MB",
                "1-batch activations MB",
                "candidate grads MB",
                "bound MB",
                "delta folder",
                "delta weights file",
                "one layer",
                *[f"LoRA {k}" for k in ranks],
            ],
            rows,
        )
    )
    lines += ["", f"Run time of the whole benchmark: {report.get('seconds', 0):.0f} s.", ""]
    return "\n".join(lines)


def _quality(report: dict[str, float]) -> list[float]:
    return [report[k] for k in ("FA@1", "FA@5", "retain", "utility")]


if __name__ == "__main__":
    main()
