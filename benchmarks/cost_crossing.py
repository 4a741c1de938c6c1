"""Where SLUG's advantage starts: SLUG against the iterative baselines as the data grows.

On the embedded CLIP, for one or two identities, SLUG (the README's default call: 25 % of the
forget and retain pairs held out as its validation split) and GA / GAFT (tune_baselines.json's
learning rates, stopping at val FA@1 = 0, checked every iteration) run on the same pairs, each in
a spawned process with one torch thread, as the forget set grows (retain at its smallest size)
and as the retain set grows (forget at its smallest). Cost: process CPU seconds of the method's
call (`time.process_time`; wall is recorded too) and pairs through forward+backward. Quality:
test FA@1 / retain / utility, and FA@1 on the protocol's val views (neither method trains on).

    python benchmarks/cost_crossing.py --out benchmarks/
    python benchmarks/cost_crossing.py --smoke --out /tmp/crossing-smoke   # < 1 min, tiny model
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from statistics import median
from typing import Any

from baselines import IterativeConfig, run_iterative
from common import DEFAULT_MODEL, Stopwatch, command_line, model_sha256, table, write_json
from measure import counting, machine, quiet_threads, run_isolated, warm_up
from models import load_model, save_smoke_model
from tasks import DEFAULT_CACHE, TaskSpec, cached_task, load_task

FORGET_SIZES = (32, 64, 128, 256, 512)
RETAIN_SIZES = (256, 1024, 4096)
TARGETS = ("Clara Alderwick", "Marcus Brennholt")
METHODS = ("SLUG", "GA", "GAFT")
BASELINES = ("GA", "GAFT")
DEFAULT_LR = 1e-4
NO_CACHE = "HF_SLUG_DISABLE_GRADIENT_CACHE"  # hf_slug's default retain-gradient cache, off


@dataclass
class Job:
    """One child run: a method on one cached task."""

    method: str
    task_path: str
    model: str
    lr: float = DEFAULT_LR
    max_steps: int = 200
    threads: int = 1


def run_job(job: Job) -> dict[str, Any]:
    """Run one method in this (child) process; its CPU/wall cost, passes and test metrics."""
    from hf_slug.demo.world import World

    quiet_threads(job.threads)
    os.environ[NO_CACHE] = "1"  # a first concept: no retain gradients from an earlier run
    task = load_task(job.task_path)
    model, processor = load_model(job.model)
    test, val = task.evaluator(processor, "test"), task.evaluator(processor, "val")
    stop = task.stop_evaluator(processor)
    labels = list(World(seed=task.spec.seed).identities)
    warm_up(model, processor, task.retain)
    before = task.report(test(model))
    gc.collect()
    with counting(model) as counter:
        cpu, wall = time.process_time(), time.perf_counter()
        if job.method == "SLUG":
            result = _slug(model, processor, task, labels)
        else:
            config = IterativeConfig(job.method, lr=job.lr, max_steps=job.max_steps, target=0.0)
            check = lambda m: stop(m)["forget_acc"]  # noqa: E731
            result = run_iterative(
                model, processor, task.forget, task.retain, check, config, progress=False
            )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    record: dict[str, Any] = {
        "method": job.method,
        "target": task.spec.target,
        "n_forget": len(task.forget),
        "n_retain": len(task.retain),
        "threads": job.threads,
        "cpu_s": cpu,
        "wall_s": wall,
        "passes": counter.to_dict(),
        "before": before,
    }
    if job.method == "SLUG":
        record.update(
            reached=result.converged,
            layer=result.chosen.label if result.chosen else None,
            step=result.step,
            searched_layers=len(result.searches),
            trials=len(result.trials),
            timings_s=result.timings,
            data=result.data.to_dict() if result.data else None,
        )
        if result.converged:
            result.apply(model)
    else:
        record.update(reached=result.reached, steps=result.steps, lr=job.lr)
        record["timings_s"] = result.timings
    record["after"] = task.report(test(model))
    record["val_after"] = task.report(val(model))
    return record


def _slug(model: Any, processor: Any, task: Any, labels: list[str]) -> Any:
    """The README's default call (its own held-out validation split); no progress bars."""
    from hf_slug import SLUGConfig, UnlearnOptions, unlearn

    config = SLUGConfig(concept=task.spec.target, candidate_labels=labels, concept_kind="identity")
    return unlearn(
        model, processor, task.forget, task.retain, config, options=UnlearnOptions(progress=False)
    )


# -- the parent --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a CLIPModel folder")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), help="identity names")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--forget-sizes", nargs="+", type=int, default=list(FORGET_SIZES))
    parser.add_argument("--retain-sizes", nargs="+", type=int, default=list(RETAIN_SIZES))
    parser.add_argument("--per-identity", type=int, default=24, help="val/test views per identity")
    parser.add_argument("--max-steps", type=int, default=200, help="GA/GAFT iteration budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each child")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method and point")
    parser.add_argument(
        "--tuning", type=Path, default=Path(__file__).with_name("tune_baselines.json")
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--in-process", action="store_true", help="no child processes (--smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model and sizes")
    parser.add_argument("--code", default="", help="which code ran (e.g. a commit), for the report")
    parser.add_argument("--from-json", type=Path, help="only rewrite the .md and .png of this JSON")
    return parser.parse_args(argv)


def points(forget_sizes: list[int], retain_sizes: list[int]) -> list[tuple[int, int]]:
    """(n_forget, n_retain): the forget axis at the smallest retain size, then the retain axis
    at the smallest forget size (their shared corner once)."""
    f0, r0 = min(forget_sizes), min(retain_sizes)
    grid = [(f, r0) for f in sorted(forget_sizes)] + [(f0, r) for r in sorted(retain_sizes)]
    return list(dict.fromkeys(grid))


def learning_rates(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    rates = dict.fromkeys(BASELINES, DEFAULT_LR)
    if args.smoke or not args.tuning.exists():
        return rates, f"default {DEFAULT_LR:g} (no tuning file)"
    chosen = json.loads(args.tuning.read_text())["chosen_lr"]
    rates.update({m: chosen[m] for m in BASELINES if m in chosen})
    return rates, f"chosen_lr of {args.tuning.name}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_json:
        return write_outputs(json.loads(args.from_json.read_text()), args.from_json.with_suffix(""))
    quiet_threads(args.threads)
    clock = Stopwatch()
    args.out.mkdir(parents=True, exist_ok=True)
    model = str(save_smoke_model(args.cache / "smoke_model")) if args.smoke else args.model
    if args.smoke:
        args.in_process, args.max_steps, args.per_identity, args.repeats = True, 3, 1, 1
        args.targets = args.targets[:1]
        args.forget_sizes, args.retain_sizes = [16, 24], [32, 48]
    rates, rate_source = learning_rates(args)
    _, processor = load_model(model)
    name = "cost_crossing_smoke" if args.smoke else "cost_crossing"
    report: dict[str, Any] = {
        "command": command_line(),
        "code": args.code,
        "machine": machine(),
        "model": model,
        "model_sha256": model_sha256(model),
        "settings": {
            "forget_sizes": args.forget_sizes,
            "retain_sizes": args.retain_sizes,
            "targets": args.targets,
            "methods": args.methods,
            "learning_rates": rates,
            "learning_rate_source": rate_source,
            "max_steps": args.max_steps,
            "threads": args.threads,
            "per_identity": args.per_identity,
            "repeats": args.repeats,
            "slug_gradient_cache": f"off ({NO_CACHE}=1): every SLUG run computes its retain "
            "gradients, as a first concept on a model does",
        },
        "points": points(args.forget_sizes, args.retain_sizes),
        "runs": [],
    }
    for target in args.targets:
        for n_forget, n_retain in report["points"]:
            spec = TaskSpec(target, "identity", n_forget, n_retain, per_identity=args.per_identity)
            if args.smoke:
                spec = TaskSpec(target, "identity", n_forget, n_retain, 1, 1)
            print(f"== {target}: forget {n_forget}, retain {n_retain}", flush=True)
            path = str(cached_task(spec, processor, args.cache))
            for repeat, method in product(range(args.repeats), args.methods):
                lr = rates.get(method, DEFAULT_LR)
                job = Job(method, path, model, lr, args.max_steps, args.threads)
                try:
                    record = run_isolated(run_job, job, isolate=not args.in_process)
                except RuntimeError as error:
                    print(error, flush=True)
                    record = {"method": method, "target": target, "error": str(error)}
                record.update(point=[n_forget, n_retain], repeat=repeat, job=asdict(job))
                report["runs"].append(record)
                print(f"   {method} #{repeat}: {_line(record)}", flush=True)
                write_json(args.out / f"{name}.json", report)
    report["seconds"] = clock()
    return write_outputs(report, args.out / name)


def write_outputs(report: dict[str, Any], stem: Path) -> dict[str, Any]:
    """The summary into the JSON, and the markdown and plot beside it (`stem` + suffix)."""
    report["summary"] = summarise(report)
    write_json(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    plot_costs(report, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md and .png")
    return report


def _line(record: dict[str, Any]) -> str:
    if "error" in record:
        return "FAILED"
    after = record["after"]
    return (
        f"{record['cpu_s']:.1f} CPU s ({record['wall_s']:.1f} wall), reached={record['reached']}, "
        f"{record['passes']['pairs_forward_backward']:.0f} pairs f+b, test FA@1 "
        f"{after['FA@1']:.1f} retain {after['retain']:.1f} utility {after['utility']:.1f}"
    )


# -- summary, markdown and plot ----------------------------------------------------------------
def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (target, point): each method's cost and quality, SLUG's cost ratios."""
    rows = []
    for target in report["settings"]["targets"]:
        for point in report["points"]:
            mine: dict[str, list[dict[str, Any]]] = {}
            for r in report["runs"]:
                if r["target"] == target and list(r["point"]) == list(point) and "error" not in r:
                    mine.setdefault(r["method"], []).append(r)
            row: dict[str, Any] = {"target": target, "n_forget": point[0], "n_retain": point[1]}
            for method, runs in mine.items():
                r, cpu = runs[0], [x["cpu_s"] for x in runs]
                row[method] = {
                    "cpu_s": median(cpu),  # the median of the repeats; quality: the first's
                    "cpu_s_range": [min(cpu), max(cpu)],
                    "wall_s": median(x["wall_s"] for x in runs),
                    "repeats": len(runs),
                    "reached": all(x["reached"] for x in runs),
                    "same_quality_every_repeat": all(x["after"] == r["after"] for x in runs),
                    "pairs_forward_backward": r["passes"]["pairs_forward_backward"],
                    "eval_image_forwards": r["passes"]["eval_image_forwards"],
                    "test": r["after"],
                    "val_FA@1": r["val_after"]["FA@1"],
                }
            for method in BASELINES:
                if "SLUG" in row and method in row:
                    row[f"SLUG/{method}"] = row["SLUG"]["cpu_s"] / row[method]["cpu_s"]
            rows.append(row)
    return rows


def axes(report: dict[str, Any]) -> dict[str, tuple[str, int, list[tuple[int, int]]]]:
    """Each axis: (the size that varies, the fixed size, its points in order)."""
    f0, r0 = min(report["settings"]["forget_sizes"]), min(report["settings"]["retain_sizes"])
    pts = [tuple(p) for p in report["points"]]
    return {
        "forget": ("n_forget", r0, [p for p in pts if p[1] == r0]),
        "retain": ("n_retain", f0, [p for p in pts if p[0] == f0]),
    }


def _order(slug: dict[str, Any], base: dict[str, Any]) -> str:
    """'<' (SLUG cheaper), '>' (dearer) or '=' (the repeats' CPU ranges overlap)."""
    if slug["cpu_s_range"][1] < base["cpu_s_range"][0]:
        return "<"
    return ">" if slug["cpu_s_range"][0] > base["cpu_s_range"][1] else "="


def crossings(report: dict[str, Any], baseline: str = "GA") -> list[str]:
    """Sentences on whether SLUG's and `baseline`'s CPU-time curves cross, only as measured: at
    each size SLUG is cheaper, dearer, or tied (the CPU ranges of the repeats overlap)."""
    sentences, words = [], {"<": "cheaper", ">": "dearer", "=": "tied"}
    by_key = {(r["target"], r["n_forget"], r["n_retain"]): r for r in report["summary"]}
    for axis, (size_key, fixed, pts) in axes(report).items():
        fixed_name = "retain" if axis == "forget" else "forget"
        for target in report["settings"]["targets"]:
            rows = [by_key[(target, *p)] for p in pts if f"SLUG/{baseline}" in by_key[(target, *p)]]
            if len(rows) < 2:
                continue
            marks = [
                (r[size_key], r[f"SLUG/{baseline}"], _order(r["SLUG"], r[baseline])) for r in rows
            ]
            trail = ", ".join(f"{n}: {x:.2f} ({words[o]})" for n, x, o in marks)
            flips = [
                f"from SLUG {words[o1]} at {a} to {words[o2]} at {b}"
                for (a, _, o1), (b, _, o2) in zip(marks, marks[1:])
                if o1 != o2
            ]
            if flips:
                verdict = "the order changes " + "; ".join(flips) + f" {axis} pairs"
            else:
                verdict = f"SLUG is {words[marks[0][2]]} at every measured size: no crossing"
            unreached = [
                f"{m} at {r[size_key]}"
                for r in rows
                for m in ("SLUG", baseline)
                if not r[m]["reached"]
            ]
            note = f" (target not reached: {', '.join(unreached)})" if unreached else ""
            head = f"**{target}, {axis} set grows ({fixed_name} {fixed})**: SLUG/{baseline} CPU"
            sentences.append(f"- {head} {trail} — {verdict}.{note}")
    return sentences


def findings(report: dict[str, Any]) -> list[str]:
    """What every row shows, in numbers: pairs per method, and where forgetting was not equal."""
    rows, lines = report["summary"], []
    for m in report["settings"]["methods"]:
        pairs = [r[m]["pairs_forward_backward"] for r in rows if m in r]
        cpu = [r[m]["cpu_s"] for r in rows if m in r]
        missed = [
            f"{r['target']} {r['n_forget']}/{r['n_retain']} "
            f"(test {r[m]['test']['FA@1']:.1f}, val {r[m]['val_FA@1']:.1f})"
            for r in rows
            if m in r and (r[m]["test"]["FA@1"] > 0 or r[m]["val_FA@1"] > 0)
        ]
        lines.append(
            f"- {m}: {min(pairs):,.0f}–{max(pairs):,.0f} pairs through forward+backward and "
            f"{min(cpu):.2f}–{max(cpu):.2f} CPU s over the {len(pairs)} points; FA@1 above 0 "
            f"(forget/retain sizes): {', '.join(missed) if missed else 'none'}."
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The cost and quality tables and the crossing statements."""
    s = report["settings"]
    methods = [m for m in METHODS if m in s["methods"]]
    lines = [
        "# SLUG vs the iterative baselines as the data grows (`cost_crossing.py`)",
        "",
        f"Command: `{report['command']}` ({report.get('seconds', 0) / 60:.1f} min wall)."
        + (f" Code: {report['code']}." if report.get("code") else ""),
        "",
        "Reproduce (from the repository root, with these settings): `python "
        "benchmarks/cost_crossing.py --out benchmarks/ --targets "
        + " ".join(f"'{t}'" for t in s["targets"])
        + f" --forget-sizes {' '.join(map(str, s['forget_sizes']))} --retain-sizes "
        f"{' '.join(map(str, s['retain_sizes']))} --repeats {s['repeats']} --threads "
        f"{s['threads']} --per-identity {s['per_identity']} --max-steps {s['max_steps']}`",
        "",
        f"Model `{report['model']}` (sha256 `{(report['model_sha256'] or '')[:12]}`); "
        f"{report['machine'].get('cpu')}, {s['threads']} torch thread(s) per method process. "
        f"Learning rates {s['learning_rates']} ({s['learning_rate_source']}); GA/GAFT budget "
        f"{s['max_steps']} iterations. {s['per_identity']} val and test views of the target.",
        "",
        "SLUG: the README's default call (25 % of the forget and retain pairs held out as its "
        "validation split; its own forget criterion). GA/GAFT: all forget pairs (GAFT also the "
        "retain pairs), stopping at FA@1 = 0 on the protocol's val views, checked after every "
        "iteration. Cost: process CPU seconds of the method's call (one thread; the median of "
        f"{s['repeats']} runs in fresh processes, the range beside it), and image-text "
        "pairs through forward+backward; `val FA@1` is measured afterwards on the protocol's "
        "val views (neither method trains on them), test metrics on the test views.",
        "",
        "## Where the curves cross (CPU seconds)",
        "",
        "SLUG's median CPU over the baseline's at each size; cheaper / dearer when the CPU "
        "ranges of the repeats do not overlap, tied when they do.",
        "",
        *crossings(report, "GA"),
        *(crossings(report, "GAFT") if "GAFT" in methods else []),
        "",
        "## What every row shows",
        "",
        *findings(report),
        "",
        "## Cost",
        "",
    ]
    cost_rows, quality_rows = [], []
    for row in report["summary"]:
        head = [row["target"], row["n_forget"], row["n_retain"]]
        cost_rows.append(
            head
            + [_cpu(row.get(m)) for m in methods]
            + [row.get(m, {}).get("wall_s") for m in methods]
            + [row.get(m, {}).get("pairs_forward_backward") for m in methods]
            + [row.get(f"SLUG/{b}") for b in BASELINES if b in methods]
        )
        quality_rows.append(head + [_quality(row.get(m)) for m in methods])
    header = ["target", "forget", "retain"]
    lines.append(
        table(
            header
            + [f"{m} CPU s, median (range)" for m in methods]
            + [f"{m} wall s" for m in methods]
            + [f"{m} pairs f+b" for m in methods]
            + [f"SLUG/{b} CPU" for b in BASELINES if b in methods],
            cost_rows,
        )
    )
    lines += [
        "",
        "## Quality (test FA@1 / retain / utility / val FA@1, percent; * = target not reached)",
        "",
        table(header + list(methods), quality_rows),
        "",
    ]
    return "\n".join(lines)


def _cpu(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    low, high = entry["cpu_s_range"]
    return f"{entry['cpu_s']:.2f} ({low:.2f}–{high:.2f})"


def _quality(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    test = " / ".join(f"{entry['test'][k]:.1f}" for k in ("FA@1", "retain", "utility"))
    return f"{test} / {entry['val_FA@1']:.1f}" + ("" if entry["reached"] else "*")


def plot_costs(report: dict[str, Any], path: Path) -> Path:
    """CPU seconds against the forget size and the retain size (log-log), per method and target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter
    from plots import COLOURS

    fig, panels = plt.subplots(1, 2, figsize=(12, 4.6))
    markers = ["o", "s", "^", "D"]
    by_key = {(r["target"], r["n_forget"], r["n_retain"]): r for r in report["summary"]}
    for ax, (axis, (size_key, fixed, pts)) in zip(panels, axes(report).items()):
        for t, target in enumerate(report["settings"]["targets"]):
            for method in report["settings"]["methods"]:
                rows = [by_key[(target, *p)] for p in pts if method in by_key[(target, *p)]]
                if not rows:
                    continue
                cpu = [r[method]["cpu_s"] for r in rows]
                spread = [
                    [c - r[method]["cpu_s_range"][0] for c, r in zip(cpu, rows)],
                    [r[method]["cpu_s_range"][1] - c for c, r in zip(cpu, rows)],
                ]
                ax.errorbar(
                    [r[size_key] for r in rows],
                    cpu,
                    yerr=spread,
                    capsize=3,
                    marker=markers[t % len(markers)],
                    color=COLOURS.get(method),
                    linestyle="-" if t == 0 else "--",
                    label=f"{method} ({target})",
                )
                missed = [(r[size_key], c) for r, c in zip(rows, cpu) if not r[method]["reached"]]
                for x, y in missed:
                    ax.scatter([x], [y], s=120, facecolors="none", edgecolors="black")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        fixed_name = "retain" if axis == "forget" else "forget"
        ax.set_xlabel(f"{axis} pairs ({fixed_name} fixed at {fixed})")
        ax.set_ylabel("process CPU s, median and range (1 thread, log)")
        ax.set_title(f"cost to reach the forget target as the {axis} set grows")
        ax.grid(True, which="both", alpha=0.3)
    panels[0].legend(fontsize=7)
    fig.text(0.01, 0.01, "circled: forget target not reached within the budget", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
