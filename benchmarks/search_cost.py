"""What the step search costs, with and without its shortcuts, and that they change no decision.

For each identity target of the embedded world (data as in `generalisation.py`'s `data_for`),
the README's call `unlearn(model, processor, forget, retain, SLUGConfig(concept=...,
candidate_labels=..., concept_kind="identity"))` runs in one process under two configurations:

* `full` — every trial scores every forget image with every prompt
  (`ZeroShotEvaluator.early_exit = False`) and each searched layer recomputes the unedited
  tower's features (`keep_features = False`): the search as it was before issue 16;
* `early exit` — the defaults: trials stop as soon as the criterion is sure to fail and compute
  only the prompts that decide (`evaluate_forget`), and the unedited tower's features are kept
  across layers while its weights are unchanged;
* `further concept` — the defaults on a model and retain set an earlier call already saw: the
  retain gradients come from the per-user cache (`UnlearnOptions.cache_retain`, on by default),
  so only the forget pass and the search run. (`full` and `early exit` turn the cache off.)

Reported: the whole call's seconds over the floor (one forward+backward over the whole forget +
retain sets, measured in the same process, as in `generalisation.py`), the search's seconds,
trials that stopped early, and whether every searched layer's status and step, the chosen layer
and step and the chosen step's metrics are identical. Times are process CPU seconds (one thread:
on a shared, loaded machine they are what the wall clock would read on an idle one) and, for
reference, wall-clock ratios. Each configuration runs `--repeats` times, alternating; the run
with the least CPU time is reported, and the floor is the least of `--repeats` runs.

    OMP_NUM_THREADS=1 python benchmarks/search_cost.py --out benchmarks/search_cost.json
    python benchmarks/search_cost.py --markdown benchmarks/search_cost.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, model_sha256, table, write_json  # noqa: E402
from benchmarks.generalisation import WORLDS, data_for, floor_seconds, load_world  # noqa: E402
from hf_slug import (  # noqa: E402
    SLUGConfig,
    UnlearnOptions,
    ZeroShotEvaluator,
    unlearn,
)
from hf_slug.cache import DISABLE_VARIABLE  # noqa: E402

# the module, to time its `search_layers` (the package's `unlearn` is the function)
unlearn_module = importlib.import_module("hf_slug.unlearn")
TARGETS = ("Clara Alderwick", "Hugo Iverson", "Yara Underhill")
CONFIGS = {
    "full": {"early_exit": False, "keep_features": False},
    "early exit": {"early_exit": True, "keep_features": True},
    "further concept": {"early_exit": True, "keep_features": True},
}
CACHED = {"further concept"}  # the defaults, with the retain gradients in the per-user cache


def run_once(model, processor, data, config, settings: dict[str, bool], cached: bool) -> dict:
    forget, retain = data
    cpu = {"search_layers": 0.0}
    search_layers = unlearn_module.search_layers

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return search_layers(*args, **kwargs)
        finally:
            cpu["search_layers"] += time.process_time() - start

    for key, value in settings.items():
        setattr(ZeroShotEvaluator, key, value)
    unlearn_module.search_layers = timed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.process_time()
            result = unlearn(
                model,
                processor,
                forget,
                retain,
                config,
                options=UnlearnOptions(progress=False, cache_retain=cached),
            )
            cpu["total"] = time.process_time() - start
    finally:
        unlearn_module.search_layers = search_layers
        for key, value in CONFIGS["early exit"].items():
            setattr(ZeroShotEvaluator, key, value)
    trials = [t for s in result.searches for t in s.trials]
    return {
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
        "chosen": result.chosen.label if result.chosen else None,
        "step": result.step,
        "after": result.after,
        "searches": [(s.label, s.status, s.step) for s in result.searches],
        "trials": len(trials),
        "partial_trials": sum(t.partial for t in trials),
    }


def run_target(model, processor, world, target: str, args: argparse.Namespace) -> dict:
    n_forget, repeats, configs = args.n_forget, args.repeats, args.configs
    forget, retain = data_for(world, "identity", target, n_forget)
    config = SLUGConfig(
        concept=target, candidate_labels=world.identities, concept_kind="identity", **args.set
    )
    floors, cpu_floors = [], []
    for _ in range(repeats):
        start = time.process_time()
        floors.append(floor_seconds(model, processor, forget, retain))
        cpu_floors.append(time.process_time() - start)
    floor, cpu_floor = min(floors), min(cpu_floors)
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    if CACHED & set(configs):  # a first concept on this model and retain set fills the cache
        run_once(model, processor, (forget, retain), config, CONFIGS["early exit"], cached=True)
    for _ in range(repeats):
        for name in configs:
            cached = name in CACHED
            runs[name].append(
                run_once(model, processor, (forget, retain), config, CONFIGS[name], cached)
            )
    best = {name: min(r, key=lambda x: x["cpu_s"]["total"]) for name, r in runs.items()}
    full = best[configs[0]]  # the reference every other run is compared with
    same = all(
        (r["chosen"], r["step"], r["searches"]) == (full["chosen"], full["step"], full["searches"])
        for rs in runs.values()
        for r in rs
    )
    same_after = all(
        abs(r["after"].get(k, 0.0) - v) <= 1e-6
        for rs in runs.values()
        for r in rs
        for k, v in full["after"].items()
    )
    return {
        "target": target,
        "floor_s": round(floor, 4),
        "floor_cpu_s": round(cpu_floor, 4),
        "configs": {
            name: {
                **b,
                "ratio_to_floor": round(b["timings_s"]["total"] / floor, 3),
                "cpu_ratio_to_floor": round(b["cpu_s"]["total"] / cpu_floor, 3),
            }
            for name, b in best.items()
        },
        "identical_decisions": same,
        "identical_after_metrics": same_after,
        "speedup_search_cpu": round(
            best["full"]["cpu_s"]["search_layers"] / best["early exit"]["cpu_s"]["search_layers"], 2
        )
        if {"full", "early exit"} <= set(best)
        else None,
    }


def markdown(data: dict) -> str:
    rows = []
    for r in data["rows"]:
        for name, c in r["configs"].items():
            rows.append(
                [
                    r["target"],
                    name,
                    f"`{c['chosen']}` s={c['step']:.4g}" if c["chosen"] else "none",
                    r["floor_cpu_s"],
                    c["cpu_s"]["search_layers"],
                    c["cpu_s"]["total"],
                    c["cpu_ratio_to_floor"],
                    c["ratio_to_floor"],
                    f"{c['partial_trials']}/{c['trials']}",
                    r["identical_decisions"] and r["identical_after_metrics"],
                ]
            )
    return table(
        [
            "target",
            "configuration",
            "chosen",
            "floor CPU s",
            "search_layers CPU s",
            "total CPU s",
            "total / floor (CPU)",
            "total / floor (wall)",
            "trials stopped early",
            "same layer, step, searches, metrics",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--targets", nargs="*", default=list(TARGETS))
    p.add_argument("--n-forget", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--markdown", type=Path, help="print the table of this JSON")
    p.add_argument(
        "--set", nargs="*", default=[], help="SLUGConfig overrides, KEY=JSON (e.g. top_k=2)"
    )
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = p.parse_args(argv)
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    if args.out is None:
        p.error("--out is required (or --markdown to print the table)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # a fresh per-user cache: only the "further concept" runs read the retain gradients from it
    os.environ["HF_SLUG_CACHE"] = tempfile.mkdtemp(prefix="search-cost-cache-")
    os.environ.pop(DISABLE_VARIABLE, None)
    world = load_world("embedded")
    model = CLIPModel.from_pretrained(WORLDS["embedded"]).float().eval()
    processor = CLIPProcessor.from_pretrained(WORLDS["embedded"])
    rows: list[dict[str, Any]] = []
    for target in args.targets:
        start = time.perf_counter()
        rows.append(run_target(model, processor, world, target, args))
        c = rows[-1]["configs"]
        ratios = "  ".join(f"{k} {v['cpu_ratio_to_floor']:.2f}x" for k, v in c.items())
        print(
            f"{target:18s} CPU: {ratios}  same={rows[-1]['identical_decisions']} "
            f"({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
        write_json(
            args.out,
            {
                "command": command_line(),
                "model": str(WORLDS["embedded"]),
                "model_sha256": model_sha256(str(WORLDS["embedded"])),
                "threads": args.threads,
                "config_overrides": args.set,
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
