"""How SLUG's cost grows: with the forget set, the retain set and the model; memory options.

Parts (each measurement in its own spawned process):

* `forget` — SLUG on the embedded model with 25 → 400 forget pairs (retain set fixed).
* `retain` — SLUG on the embedded model with 50 → 800 retain pairs (32 forget pairs).
* `model` — SLUG from the embedded model up to a ViT-B/32-sized CLIP (random weights: cost does
  not depend on the values). So that every size does the same work, the forget target is
  unreachable (−1) and one front layer per tower is searched with exactly 5 trials each; data:
  32 forget pairs, 64 retain pairs, a small val evaluator.
* `memory` — the gradient computation alone (`compute_gradients`, one batch of a few pairs at
  the model's image size) for ViT-B/32-, ViT-L/14- and ViT-H/14-sized CLIPs, without and with
  the memory options (bf16 autocast, gradient checkpointing, candidates in one tower).

    python benchmarks/scaling.py --out benchmarks/
    python benchmarks/scaling.py --parts memory --out benchmarks/
    python benchmarks/scaling.py --smoke --out /tmp/bench-smoke
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import DEFAULT_MODEL, Stopwatch, command_line, model_sha256, table, write_json
from measure import machine, quiet_threads, run_isolated
from models import load_model, save_smoke_model
from plots import plot_memory_options, plot_scaling
from runner import MEMORY_VARIANTS, GradientSpec, MethodSpec, SLUGSettings, run_gradient_memory
from runner import run_method as run_slug
from tasks import DEFAULT_CACHE, TaskSpec, cached_task

PARTS = ("forget", "retain", "model", "memory")
TARGET = "Grace Hopper"
FORGET_SIZES = (25, 50, 100, 200, 400)
RETAIN_SIZES = (50, 100, 200, 400, 800)
MODEL_SIZES = ("embedded", "small", "medium", "ViT-B/32")
MEMORY_SIZES = ("ViT-B/32", "ViT-L/14", "ViT-H/14")
# Pairs per gradient batch: ViT-H/14 with 8 pairs would need ~18 GB, over the ~20 GB this
# machine can give. bf16 matmuls run ~16× slower than fp32 on CPUs without bf16 units (this
# one), so the bf16 variants of the large models use fewer pairs; activations are per pair.
PAIRS = {"ViT-B/32": 8, "ViT-L/14": 8, "ViT-H/14": 4}
BF16_PAIRS = {"ViT-B/32": 8, "ViT-L/14": 2, "ViT-H/14": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the embedded CLIPModel folder")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--forget-sizes", nargs="+", type=int, default=list(FORGET_SIZES))
    parser.add_argument("--retain-sizes", nargs="+", type=int, default=list(RETAIN_SIZES))
    parser.add_argument("--model-sizes", nargs="+", default=list(MODEL_SIZES))
    parser.add_argument("--memory-sizes", nargs="+", default=list(MEMORY_SIZES))
    parser.add_argument("--variants", nargs="+", default=list(MEMORY_VARIANTS))
    parser.add_argument("--pairs", type=int, default=8, help="pairs per gradient batch (memory)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every measurement in this process (faster; memory peaks then mix; --smoke)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_threads(args.threads)
    clock = Stopwatch()
    name = "scaling_smoke" if args.smoke else "scaling"
    out_json = args.out / f"{name}.json"
    if args.smoke:
        args.in_process = True
        args.model = str(save_smoke_model(args.cache / "smoke_model"))
        args.forget_sizes, args.retain_sizes = [4], [16]  # one task, shared with the others
        args.model_sizes, args.memory_sizes = ["smoke"], ["smoke"]
        args.variants, args.pairs = ["fp32", "all three (vision)"], 2
    report: dict[str, Any] = {
        "command": command_line(),
        "machine": machine(),
        "model": args.model,
        "model_sha256": model_sha256(args.model),
    }
    if out_json.exists() and not args.smoke:  # keep the parts not rerun this time
        import json

        previous = json.loads(out_json.read_text())
        report.update({p: previous[p] for p in PARTS if p in previous and p not in args.parts})
        report["commands"] = previous.get("commands", {})
    report.setdefault("commands", {})
    _, processor = load_model(args.model)
    sizes = (
        dict(per_identity=1, per_concept=1) if args.smoke else dict(per_identity=8, per_concept=3)
    )
    slug = SLUGSettings(top_k=1, max_evaluations=2) if args.smoke else SLUGSettings()

    def run(part: str, x: float, spec: MethodSpec) -> dict[str, Any]:
        print(f"[{part}] {x} …", flush=True)
        try:
            record = run_isolated(
                run_slug, spec, timeout_s=args.timeout, isolate=not args.in_process
            )
        except RuntimeError as error:
            return {"x": x, "error": str(error)}
        record["x"] = x
        print(
            f"[{part}] {x}: {record['wall_s']:.1f} s, peak "
            f"+{record['memory']['peak_above_baseline_mb']:.0f} MB",
            flush=True,
        )
        return record

    if "forget" in args.parts:
        rows = []
        for n in args.forget_sizes:
            spec = TaskSpec(TARGET, "identity", n, 16 if args.smoke else None, **sizes)
            path = cached_task(spec, processor, args.cache)
            method = MethodSpec("SLUG", str(path), args.model, slug=slug, evaluate_test=False)
            rows.append(run("forget", n, method))
            report["forget"] = rows
            write_json(out_json, report)
        report["commands"]["forget"] = command_line()
    if "retain" in args.parts:
        rows = []
        for n in args.retain_sizes:
            spec = TaskSpec(TARGET, "identity", 4 if args.smoke else 32, n, **sizes)
            path = cached_task(spec, processor, args.cache)
            method = MethodSpec("SLUG", str(path), args.model, slug=slug, evaluate_test=False)
            rows.append(run("retain", n, method))
            report["retain"] = rows
            write_json(out_json, report)
        report["commands"]["retain"] = command_line()
    if "model" in args.parts:
        rows = []
        n_forget, n_retain = (4, 16) if args.smoke else (32, 64)
        per_identity = 1 if args.smoke else 2
        spec = TaskSpec(TARGET, "identity", n_forget, n_retain, per_identity, per_concept=1)
        path = cached_task(spec, processor, args.cache)
        fixed = SLUGSettings(top_k=1, max_evaluations=2 if args.smoke else 5)
        for size in args.model_sizes:
            model = args.model if size == "embedded" else f"random:{size}"
            method = MethodSpec(
                "SLUG", str(path), model, target=-1.0, slug=fixed, evaluate_test=False
            )
            record = run("model", size, method)
            if "error" not in record:
                record["x"] = record["model_parameters"] / 1e6
            record["size"] = size
            rows.append(record)
            report["model"] = rows
            write_json(out_json, report)
        report["commands"]["model"] = command_line()
    if "memory" in args.parts:
        spec = TaskSpec(TARGET, "identity", 4 if args.smoke else 8, 16, 1, per_concept=1)
        path = cached_task(spec, processor, args.cache)
        rows = []
        for size in args.memory_sizes:
            for variant in args.variants:
                pairs = min(args.pairs, PAIRS.get(size, args.pairs))
                if "bf16" in variant or "all three" in variant:
                    pairs = min(pairs, BF16_PAIRS.get(size, pairs))
                print(f"[memory] {size} {variant} ({pairs} pairs) …", flush=True)
                gradient = GradientSpec(size, variant, str(path), pairs, args.threads)
                try:
                    record = run_isolated(
                        run_gradient_memory,
                        gradient,
                        timeout_s=args.timeout,
                        isolate=not args.in_process,
                    )
                except RuntimeError as error:
                    record = {"size": size, "variant": variant, "error": str(error)[-2000:]}
                    print(f"[memory] {size} {variant}: FAILED {str(error)[:200]}", flush=True)
                else:
                    print(
                        f"[memory] {size} {variant}: {record['seconds']:.1f} s, peak "
                        f"+{record['peak_gb']:.2f} GB",
                        flush=True,
                    )
                rows.append(record)
                report["memory"] = rows
                write_json(out_json, report)
        report["commands"]["memory"] = command_line()
    report["seconds"] = clock()
    write_json(out_json, report)
    (args.out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    if any(report.get(p) for p in ("forget", "retain", "model")):
        plot_scaling(report, args.out / f"{name}.png")
    if report.get("memory"):
        plot_memory_options(report["memory"], args.out / f"{name}_memory.png")
    print(f"wrote {out_json} and .md/.png in {clock():.0f} s")
    return report


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for part, label in (
        ("forget", "forget pairs"),
        ("retain", "retain pairs"),
        ("model", "model"),
    ):
        rows = report.get(part)
        if not rows:
            continue
        lines += [f"### SLUG vs {label}", "", f"Command: `{report['commands'].get(part)}`", ""]
        body = []
        for r in rows:
            if "error" in r:
                body.append([r.get("size", r["x"]), "failed", *[""] * 9])
                continue
            t = r["timings_s"]
            body.append(
                [
                    r.get("size", r["x"]) if part == "model" else r["x"],
                    r["model_parameters"] / 1e6,
                    r["n_forget"],
                    r["n_retain"],
                    t["forget_gradients"],
                    t["retain_gradients"],
                    t["metrics"],
                    t["search"],
                    t["total"],
                    r["trials"],
                    r["floor"]["seconds"],
                    t["total"] / r["floor"]["seconds"],
                    r["memory"]["peak_above_baseline_mb"],
                ]
            )
        lines.append(
            table(
                [
                    label,
                    "params (M)",
                    "forget",
                    "retain",
                    "forget grads s",
                    "retain grads s",
                    "metrics s",
                    "search s",
                    "total s",
                    "trials",
                    "floor s",
                    "total / floor",
                    "peak MB",
                ],
                body,
            )
        )
        lines.append("")
    rows = report.get("memory")
    if rows:
        lines += [
            "### Gradient computation: memory options",
            "",
            f"Command: `{report['commands'].get('memory')}`",
            "",
        ]
        body = []
        for r in rows:
            if "error" in r:
                body.append([r["size"], r["variant"], "failed", *[""] * 8])
                continue
            body.append(
                [
                    r["size"],
                    r["variant"],
                    r["n_pairs"],
                    r["parameters"] / 1e6,
                    r["model_gb"],
                    r["candidate_gb"],
                    r["activation_mb_per_pair"],
                    r["peak_gb"],
                    (r["peak_gb"] - 2 * r["candidate_gb"] - r["activation_gb"]),
                    r["seconds"],
                    r["seconds"] / r["n_pairs"],
                ]
            )
        lines.append(
            table(
                [
                    "size",
                    "variant",
                    "pairs",
                    "params (M)",
                    "model GB",
                    "candidate GB",
                    "activations MB/pair",
                    "peak GB (above model)",
                    "peak − 2×cand − act GB",
                    "s",
                    "s/pair",
                ],
                body,
            )
        )
        lines.append("")
    lines.append(f"Run time: {report.get('seconds', 0):.0f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
