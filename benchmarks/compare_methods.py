"""SLUG against iterative unlearning baselines on the embedded CLIP: cost and quality, over seeds.

Per target (identities, a style, an object) and seed (the world's view draw: which views are
forget, retain, val and test; the model is fixed), each method runs in its own spawned process
on the same model and data until its criterion says the target is forgotten (SLUG: its step
search, by default on the split `unlearn` holds out; GA/GAFT/MaskGAFT/SalUn/FT: val FA@1 after
every iteration; SSD: its α search on val FA@1) or its budget runs out. Reported per target ×
method: mean and spread over seeds of test FA@1/FA@5/retain/utility, wall and CPU seconds, 95 %
intervals on the test views pooled over seeds, and SLUG's cost split against one fwd+bwd pass.

    python benchmarks/compare_methods.py --out benchmarks/ --seeds 0 1 2 --test-views 24 --threads 1
    python benchmarks/compare_methods.py --smoke --out /tmp/bench-smoke   # < 1 min, tiny model
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
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
from plots import plot_comparison_seeds
from runner import MethodSpec, SLUGSettings, run_method
from tasks import DEFAULT_CACHE, TaskSpec, cached_task, load_task, view_counts

METHODS = ("SLUG", "SLUG-top1", "GA", "GAFT", "MaskGAFT", "SalUn", "SSD", "FT")
# the smoke run's methods: the set tests/test_benchmarks.py checks (MaskGAFT is the old "SalUn"
# code path with another name; tests/test_compare_methods.py runs it)
SMOKE_METHODS = ("SLUG", "SLUG-top1", "GA", "GAFT", "SalUn", "SSD", "FT")
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
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="view draws (the model is fixed)"
    )
    parser.add_argument(
        "--test-views", type=int, default=24, help="test views per identity (styles/objects: ×/8)"
    )
    parser.add_argument(
        "--slug-criterion",
        choices=("default", "evaluator"),
        default="default",
        help="default: unlearn's held-out split and default criterion; evaluator: the val views",
    )
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
    parser.add_argument(
        "--resume", type=Path, help="an earlier run's JSON: its finished runs are kept, not rerun"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds a method's process may take (then retried once)"
    )
    return parser.parse_args(argv)


def learning_rates(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """Each iterative method's learning rate and where it came from."""
    rates = dict.fromkeys(ITERATIVE, DEFAULT_LR)
    source = f"default {DEFAULT_LR:g} (no tuning file)"
    path = args.tuning or args.out / "tune_baselines.json"
    if path.exists() and not args.smoke:
        tuning = json.loads(path.read_text())
        chosen = dict(tuning["chosen_lr"])
        if tuning.get("salun") != "random-label" and "SalUn" in chosen:
            chosen["MaskGAFT"] = chosen.pop("SalUn")  # written when "SalUn" was the mask variant
        rates.update(chosen)
        source = f"chosen by {path}"
    for item in args.lr:
        method, value = item.split("=")
        rates[method] = float(value)
        source += f"; {method} set to {value} on the command line"
    return rates, source


def task_specs(args: argparse.Namespace) -> list[TaskSpec]:
    """One task per target and seed (seed-major order, so a cut-short run has whole seeds)."""
    specs = []
    for seed in args.seeds:
        for item in args.targets:
            name, _, kind = item.partition(":")
            if args.smoke:
                specs.append(
                    TaskSpec(name, kind or "identity", 16, 32, per_identity=1, per_concept=1)
                )
            else:
                views = args.test_views if args.test_views not in (None, 8) else None
                specs.append(
                    TaskSpec(name, kind or "identity", args.n_forget, seed=seed, test_views=views)
                )
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
        args.seeds, args.test_views = args.seeds[:1], None  # the smoke task's views: 1 each
    args.methods = args.methods or list(SMOKE_METHODS if args.smoke else METHODS)
    rates, rate_source = learning_rates(args)
    slug = SLUGSettings(criterion=args.slug_criterion)
    if args.smoke:
        slug = SLUGSettings(top_k=1, max_evaluations=2, criterion=args.slug_criterion)
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
            "seeds": args.seeds,
            "test_views_per_identity": args.test_views,
            "threads": args.threads,
            "methods": args.methods,
            "learning_rates": rates,
            "learning_rate_source": rate_source,
            "slug": {m: vars(v) for m, v in variants.items()},
            "ssd": vars(ssd),
        },
        "tasks": [],
        "runs": [],
    }
    name = "compare_methods_smoke" if args.smoke else "compare_methods"
    kept = finished_runs(args.resume, report["settings"]) if args.resume else {}
    report["resumed_from"] = {"path": str(args.resume), "runs": len(kept)} if kept else None
    for spec in task_specs(args):
        print(f"== {spec.target} ({spec.kind}, seed {spec.seed}): rendering the task (cached)")
        path = cached_task(spec, processor, args.cache)
        views = view_counts(load_task(path))
        report["tasks"].append({"target": spec.target, "seed": spec.seed, **views})
        for i, method in enumerate(args.methods):
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
                lora_ranks=(1,) if args.smoke else (4,),
                floor_repeats=1 if args.smoke else 2,
                evaluate_before=i == 0,  # the unedited model's test metrics, once per task
                seed=spec.seed,
            )
            record = kept.get((spec.target, spec.seed, method)) or _run(run, args)
            record.setdefault("target", spec.target)
            record["seed"] = spec.seed
            report["runs"].append(record)
            print(f"   {method}: {_line(record)}", flush=True)
            write_json(args.out / f"{name}.json", report)
    report["summary"] = summarise(report["runs"])
    report["seconds"] = clock()
    write_json(args.out / f"{name}.json", report)
    (args.out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    plot_comparison_seeds(report, args.out / f"{name}.png")
    print(f"wrote {args.out / name}.json, .md and .png in {clock():.0f} s")
    return report


def _run(run: MethodSpec, args: argparse.Namespace) -> dict[str, Any]:
    """One method in its own process; a process that died without an answer is run again."""
    for attempt in range(2):
        try:
            return run_isolated(
                run_method, run, isolate=not args.in_process, timeout_s=args.timeout
            )
        except RuntimeError as error:
            print(error)
            record = {"method": run.method, "error": str(error), "attempts": attempt + 1}
            if "gave no answer" not in str(error):
                break
    return record


def finished_runs(path: Path, settings: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    """The error-free runs of an earlier JSON written with the same settings, by (target, seed,
    method); a JSON with other settings is refused."""
    earlier = json.loads(Path(path).read_text())
    mine = {k: v for k, v in settings.items() if k != "methods"}
    theirs = {k: v for k, v in earlier["settings"].items() if k != "methods"}
    if json.loads(json.dumps(mine)) != theirs:
        raise ValueError(f"{path} was written with other settings: rerun without --resume.")
    return {
        (r["target"], r["seed"], r["method"]): {**r, "resumed": True}
        for r in earlier["runs"]
        if "error" not in r
    }


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return "FAILED"
    after = record["after"]
    return (
        f"{record['wall_s']:.1f} s ({record['cpu_s']:.1f} CPU s), reached={record['reached']}, "
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


# -- statistics --------------------------------------------------------------------------------
Z95 = 1.959963984540054
QUALITY = ("FA@1", "FA@5", "retain", "utility")
# (test task, metric key) behind each reported number; several: their mean (identity utility)
_IDENTITY = ("forget", "retain", ("object", "style", "digit"))
PARTS = {  # kind -> metric -> its (test task, metric key) pairs
    kind: {
        "FA@1": [("forget", "forget_acc")],
        "FA@5": [("forget", "forget_acc@5")],
        "retain": [(names[1], f"{names[1]}_acc")],
        "utility": [(t, f"{t}_acc") for t in names[2]],
    }
    for kind, names in (
        ("identity", _IDENTITY),
        ("concept", ("forget", "in_domain", ("cross_domain",))),
    )
}


def wilson(successes: float, n: int) -> list[float]:
    """The 95 % Wilson score interval of `successes` of `n`, in percent.

    Example:
        >>> [round(x, 1) for x in wilson(0, 72)]
        [0.0, 5.1]
    """
    if n <= 0:
        return [math.nan, math.nan]
    p, z2 = successes / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def pooled_interval(kind: str, metric: str, runs: list[tuple[dict, dict]]) -> list[float]:
    """95 % interval of a reported number on the test views of every run (raw metrics, counts)
    pooled: Wilson for one accuracy, a normal interval for a mean of several accuracies."""
    parts = PARTS["identity" if kind == "identity" else "concept"][metric]
    rates = []
    for task, key in parts:
        n = sum(counts[task] for _, counts in runs)
        hits = sum(round(raw[key] * counts[task]) for raw, counts in runs)
        rates.append((hits, n))
    if len(rates) == 1:
        return wilson(*rates[0])
    mean = sum(h / n for h, n in rates) / len(rates)
    se = math.sqrt(sum((h / n) * (1 - h / n) / n for h, n in rates)) / len(rates)
    return [100 * max(0.0, mean - Z95 * se), 100 * min(1.0, mean + Z95 * se)]


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample sd (0 for one value), min and max over seeds."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {
        "mean": statistics.fmean(values),
        "sd": sd,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _aggregate(runs: list[dict[str, Any]], kind: str, which: str) -> dict[str, Any]:
    row: dict[str, Any] = {"seeds": [r.get("seed") for r in runs]}
    for metric in QUALITY:
        row[metric] = spread([r[which][metric] for r in runs])
        raw = [(r[f"{which}_raw"], r["test_counts"]) for r in runs if r.get(f"{which}_raw")]
        if raw and all("test_counts" in r for r in runs):
            row[metric]["ci95_pooled"] = pooled_interval(kind, metric, raw)
    return row


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: each method's mean and spread over seeds, intervals, and costs against SLUG."""
    summary: dict[str, Any] = {}
    for target in dict.fromkeys(r["target"] for r in runs):
        mine = [r for r in runs if r["target"] == target and "error" not in r]
        if not mine:
            continue
        kind = mine[0]["kind"]
        originals = [r for r in mine if r.get("before_raw")]
        rows: dict[str, Any] = {}
        if originals:
            rows["original"] = _aggregate(originals, kind, "before")
        slug = {r["seed"]: r for r in mine if r["method"] == "SLUG"}
        for method in dict.fromkeys(r["method"] for r in mine):
            done = [r for r in mine if r["method"] == method]
            row = _aggregate(done, kind, "after")
            row["reached"] = sum(bool(r["reached"]) for r in done)
            for key in ("wall_s", "cpu_s"):
                row[key] = spread([r[key] for r in done])
                ratios = [r[key] / slug[r["seed"]][key] for r in done if r["seed"] in slug]
                row[f"{key}_vs_slug"] = spread(ratios)
            row["pairs_forward_backward"] = spread(
                [r["passes"]["pairs_forward_backward"] for r in done]
            )
            row["peak_mb"] = spread([r["memory"]["peak_above_baseline_mb"] for r in done])
            row["stored_bytes"] = spread([b for r in done if (b := stored_bytes(r)) is not None])
            rows[method] = row
        always = [
            (m, row)
            for m, row in rows.items()
            if m != "original" and not m.startswith("SLUG") and row["reached"] == len(row["seeds"])
        ]
        fastest = min(always, key=lambda mr: mr[1]["cpu_s"]["mean"], default=None)
        summary[target] = {
            "kind": kind,
            "errors": [r["method"] for r in runs if r["target"] == target and "error" in r],
            "methods": rows,
            "fastest_baseline_reaching_target_every_seed": fastest[0] if fastest else None,
            "cpu_speedup_vs_fastest_baseline": {
                m: fastest[1]["cpu_s"]["mean"] / rows[m]["cpu_s"]["mean"]
                for m in rows
                if fastest and m.startswith("SLUG")
            },
        }
    return summary


# -- markdown ----------------------------------------------------------------------------------
def _cell(s: dict[str, Any], digits: int = 1) -> str:
    """`mean [min–max] (lo–hi)`: mean and range over seeds, 95 % interval on pooled views."""
    if not s or not s.get("n"):
        return "–"
    text = f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"
    if "ci95_pooled" in s:
        lo, hi = s["ci95_pooled"]
        text += f" ({lo:.0f}–{hi:.0f})"
    return text


def markdown(report: dict[str, Any]) -> str:
    """The tables RESULTS.md quotes."""
    runs = [r for r in report["runs"] if "error" not in r]
    settings = report["settings"]
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Seeds {settings.get('seeds')}; {settings.get('test_views_per_identity')} test views per "
        f"identity; {settings.get('threads')} thread(s) per process. Cells: mean over seeds "
        "[min–max over seeds] (95 % interval on the test views of all seeds pooled: Wilson for an "
        "accuracy, normal for identity utility, a mean of three accuracies). `CPU s` is the "
        "method's process CPU time (all its threads), `wall s` its elapsed time; `× SLUG` is the "
        "mean of per-seed ratios of CPU time. `reached`: seeds where the method's own criterion "
        "was met.",
        "",
    ]
    for target, part in report["summary"].items():
        first = next(r for r in runs if r["target"] == target)
        lines += [
            f"### {target} ({part['kind']}; {first['n_forget']} forget pairs, "
            f"{first['n_retain']} retain pairs, test views per seed: {first.get('test_counts')})",
            "",
        ]
        rows = []
        for method, m in part["methods"].items():
            quality = [_cell(m[k]) for k in QUALITY]
            if method == "original":
                rows.append([method, "", *quality, "", "", "", "", "", ""])
                continue
            cost = [_cell(m[k], 2) for k in ("cpu_s", "wall_s", "cpu_s_vs_slug")]
            size = human_bytes(int(m["stored_bytes"]["mean"])) if m["stored_bytes"]["n"] else "–"
            work = [m["pairs_forward_backward"]["mean"], m["peak_mb"]["mean"], size]
            rows.append([method, f"{m['reached']}/{len(m['seeds'])}", *quality, *cost, *work])
        header = ["method", "reached", "FA@1", "FA@5", "retain", "utility", "CPU s", "wall s"]
        extra = ["× SLUG CPU", "fwd+bwd pairs", "peak MB", "stored"]
        lines.append(table([*header, *extra], rows))
        fastest = part["fastest_baseline_reaching_target_every_seed"]
        if fastest:
            speedups = ", ".join(
                f"{m} {v:.2f}×" for m, v in part["cpu_speedup_vs_fastest_baseline"].items()
            )
            lines.append(
                f"\nFastest baseline reaching its target in every seed (mean CPU s): {fastest}; "
                f"its CPU time over SLUG's: {speedups}."
            )
        if part["errors"]:
            lines.append(f"\nFailed runs: {', '.join(part['errors'])}.")
        lines.append("")
    lines += _slug_tables(runs)
    lines += ["### The test views (distinct / drawn, per task and seed)", ""]
    rows = [
        [t["target"], t["seed"], t["tasks"], t["test_images_also_in_val_or_training"]]
        for t in report.get("tasks", [])
    ]
    lines.append(table(["target", "seed", "test tasks", "test images also in val/train"], rows))
    lines += ["", f"Run time of the whole benchmark: {report.get('seconds', 0):.0f} s.", ""]
    return "\n".join(lines)


def _slug_tables(runs: list[dict[str, Any]]) -> list[str]:
    """SLUG's cost split and storage, mean [min–max] over seeds."""
    lines = ["### SLUG's cost split (seconds, mean [min–max] over seeds)", ""]
    rows = []
    for target in dict.fromkeys(r["target"] for r in runs):
        for method in ("SLUG", "SLUG-top1"):
            mine = [r for r in runs if r["target"] == target and r["method"] == method]
            if not mine:
                continue

            def col(get: Any, mine: list = mine) -> str:
                return _cell(spread([get(r) for r in mine]), 2)

            rows.append(
                [
                    f"{target} ({method})",
                    col(lambda r: r["timings_s"]["forget_gradients"]),
                    col(lambda r: r["timings_s"]["retain_gradients"]),
                    col(lambda r: r["timings_s"]["search"]),
                    col(lambda r: r["timings_s"]["total"]),
                    col(lambda r: r["floor"]["seconds"]),
                    col(lambda r: r["timings_s"]["total"] / r["floor"]["seconds"]),
                    col(lambda r: r["trials"]),
                    ", ".join(sorted({str(r["layer"]) for r in mine})),
                    col(lambda r: r.get("stored", {}).get("delta_weights_file_bytes", 0) / 1024),
                ]
            )
    header = ["target", "forget grads", "retain grads", "search", "total", "floor (1 fwd+bwd)"]
    extra = ["total / floor", "trials", "layers chosen", "delta weights KiB"]
    lines.append(table([*header, *extra], rows))
    data = next((r.get("data") for r in runs if r["method"] == "SLUG"), None)
    lines += ["", f"SLUG's search data (first run): {data}", ""]
    return lines


if __name__ == "__main__":
    main()
