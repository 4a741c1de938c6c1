"""Choose each iterative baseline's learning rate on a tuning identity's val split.

Each of GA, GAFT, MaskGAFT, SalUn and FT runs at every learning rate of a small grid on an
identity that is *not* one of compare_methods.py's targets, with the same budget and stopping rule. The rule:
among the rates that reach the val forget target, the one with the highest val
(retain + utility) / 2 (ties: the higher rate, which is the faster run); if none reaches it, the
lowest final val FA@1 (ties: the higher score).
compare_methods.py reads the chosen rates from the JSON this writes. `--update` keeps the
other methods' runs and rates from the existing JSON and replaces those of `--methods` (a JSON
written before the real SalUn existed holds the mask+GAFT variant's runs as "SalUn": they are
renamed MaskGAFT).

    python benchmarks/tune_baselines.py --out benchmarks/
    python benchmarks/tune_baselines.py --out benchmarks/ --methods SalUn MaskGAFT --update
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from baselines import ITERATIVE, IterativeConfig, run_iterative
from common import DEFAULT_MODEL, Stopwatch, command_line, model_sha256, table, write_json
from measure import machine, quiet_threads, warm_up
from models import load_model, save_smoke_model
from tasks import DEFAULT_CACHE, TaskSpec, cached_task, load_task

TUNING_TARGET = "Clara Alderwick"
SALUN = "random-label"  # what "SalUn" means in the JSON this writes (see baselines.py)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4)
RULE = (
    "among learning rates whose run reached the val forget target, the highest val "
    "(retain + utility) / 2 (ties: the higher rate, the faster run); if none reached it, the "
    "lowest final val FA@1 (ties: the higher score)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--target", default=TUNING_TARGET)
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LEARNING_RATES))
    parser.add_argument("--methods", nargs="+", default=list(ITERATIVE), choices=ITERATIVE)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--forget-target", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--update", action="store_true", help="merge into OUT's existing JSON (other methods kept)"
    )
    return parser.parse_args(argv)


def previous(path: Path, methods: list[str]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The runs and rates of methods other than `methods` in an earlier JSON (none if absent)."""
    if not path.exists():
        return [], {}
    old = json.loads(path.read_text())
    legacy = old.get("salun") != SALUN

    def name(method: str) -> str:
        return "MaskGAFT" if legacy and method == "SalUn" else method

    runs = [{**r, "method": name(r["method"])} for r in old["runs"]]
    chosen = {name(m): lr for m, lr in old["chosen_lr"].items()}
    runs = [r for r in runs if r["method"] not in methods]
    return runs, {m: lr for m, lr in chosen.items() if m not in methods}


def choose(runs: list[dict[str, Any]]) -> float:
    """The learning rate RULE picks from one method's runs."""
    reached = [r for r in runs if r["reached"]]
    if reached:  # scores are float32 means: equal counts may differ in the 7th digit (a tie)
        return max(reached, key=lambda r: (round(r["score"], 4), r["lr"]))["lr"]
    return min(runs, key=lambda r: (r["val"]["FA@1"], -round(r["score"], 4)))["lr"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_threads(args.threads)
    clock = Stopwatch()
    if args.smoke:
        args.model = str(save_smoke_model(args.cache / "smoke_model"))
        args.lrs, args.max_steps = args.lrs[:2], min(args.max_steps, 2)
        args.methods = args.methods[:2]
        # the compare smoke run's task, so that the rendered images are shared
        spec = TaskSpec("Grace Hopper", "identity", 16, 32, per_identity=1, per_concept=1)
    else:
        spec = TaskSpec(args.target, "identity", 32)
    _, processor = load_model(args.model)
    task = load_task(cached_task(spec, processor, args.cache))
    name = "tune_baselines_smoke" if args.smoke else "tune_baselines"
    runs: list[dict[str, Any]] = []
    chosen: dict[str, float] = {}
    earlier = args.out / f"{name}.json"
    earlier_command = json.loads(earlier.read_text())["command"] if earlier.exists() else None
    if args.update:
        runs, chosen = previous(earlier, args.methods)
    for method in args.methods:
        mine = []
        for lr in args.lrs:
            model, processor = load_model(args.model)
            warm_up(model, processor, task.retain)
            stop = task.stop_evaluator(processor)
            val = task.evaluator(processor, "val")
            start = time.perf_counter()
            outcome = run_iterative(
                model,
                processor,
                task.forget,
                task.retain,
                lambda m, stop=stop: stop(m)["forget_acc"],
                IterativeConfig(
                    method,
                    lr=lr,
                    max_steps=args.max_steps,
                    target=args.forget_target,
                    concept=task.spec.target,
                    candidates=tuple(task.candidates),
                ),
            )
            seconds = time.perf_counter() - start
            metrics = task.report(val(model))
            run = {
                "method": method,
                "lr": lr,
                "reached": outcome.reached,
                "steps": outcome.steps,
                "seconds": seconds,
                "val": metrics,
                "score": (metrics["retain"] + metrics["utility"]) / 2,
            }
            print(
                f"{method} lr={lr:g}: reached={run['reached']} in {run['steps']} iterations, "
                f"{seconds:.0f} s; val FA@1 {metrics['FA@1']:.1f} retain {metrics['retain']:.1f} "
                f"utility {metrics['utility']:.1f}",
                flush=True,
            )
            mine.append(run)
        chosen[method] = choose(mine)
        runs += mine
    report = {
        "command": command_line(),
        "machine": machine(),
        "model": args.model,
        "model_sha256": model_sha256(args.model),
        "target": args.target,
        "max_steps": args.max_steps,
        "rule": RULE,
        "salun": SALUN,
        "updated_from": earlier_command if args.update else None,
        "chosen_lr": chosen,
        "runs": runs,
        "seconds": clock(),
    }
    write_json(args.out / f"{name}.json", report)
    (args.out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    print(f"chosen: {chosen}; wrote {args.out / name}.json and .md in {clock():.0f} s")
    return report


def markdown(report: dict[str, Any]) -> str:
    rows = [
        [
            r["method"],
            f"{r['lr']:g}",
            r["reached"],
            r["steps"],
            r["seconds"],
            r["val"]["FA@1"],
            r["val"]["retain"],
            r["val"]["utility"],
            "←" if report["chosen_lr"][r["method"]] == r["lr"] else "",
        ]
        for r in report["runs"]
    ]
    header = ["method", "lr", "reached", "iterations", "s", "val FA@1", "val retain"]
    return "\n".join(
        [
            f"Command: `{report['command']}`  (tuning identity: {report['target']}, "
            f"budget {report['max_steps']} iterations)",
            "",
            f"Rule: {report['rule']}.",
            "",
            table([*header, "val utility", "chosen"], rows),
            "",
            f"Run time: {report['seconds']:.0f} s.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
