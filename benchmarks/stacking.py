"""Stacking: deltas made one identity at a time, loaded together — what holds, what interferes.

On the embedded model and world (or world B and its CLIP, `--world b`: drawn for reports and
never tuned on), for N = 2, 3, 5, 8 identities (seeded random draws), each
identity is unlearned alone (its own val evaluator, the demo's settings), then the deltas are
stacked with `SLUGModel` at weight 1.0 and judged on held-out **test** views:

* `stacks` — per composition and draw: every target's FA@1, retain and utility against the
  original; each delta alone under the stack's evaluator (is the retain drift additive?); each
  delta removed again (does its concept come back, do the others stay forgotten?).
* `pairs` — on **val** views, for every ordered pair (i, j) of a stack: does adding delta i break
  delta j's forgetting? Pairs are classed by where i sits relative to j (same tensor, same block,
  a lower block of the same tower, a higher block, the other tower).

Compositions: `independent` (each identity's own layer choice) and `avoid` (identities unlearned
in order, each with `unlearn(..., avoid=previous deltas)`: no tensor edited twice).

    python benchmarks/stacking.py --out benchmarks/
    python benchmarks/stacking.py --sizes 2 --draws 1 --out /tmp/stack-smoke
    python benchmarks/stacking.py --world b --sizes 3 5 --compositions default --out /tmp/stack-b
    python benchmarks/stacking.py --markdown benchmarks/stacking.json  # tables for stacking.md
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import DEFAULT_MODEL, command_line, model_sha256, write_json  # noqa: E402

from hf_slug import (  # noqa: E402
    ConceptDelta,
    SLUGConfig,
    SLUGModel,
    UnlearnOptions,
    unlearn,
)
from hf_slug.demo.protocol import (  # noqa: E402
    forget_pairs,
    identity_evaluator,
    identity_report,
    retain_pairs,
)
from hf_slug.demo.run import load_embedded  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402

SIZE = dict(per_identity=24, per_concept=3)  # the demo's test protocol
WORLD_B_MODEL = Path(__file__).resolve().parent / "world_b" / "clip"
VAL = dict(per_identity=24, per_concept=3, forget_views=192)  # the demo's search protocol
SETTINGS = dict(top_k=4, max_evaluations=10)
COMPOSITIONS = ("independent", "guarded", "stacked", "default", "default-avoid")
GUARDS = (0.005, 0.01, 0.02, None)  # val retain tolerances tried in turn
DEFAULT_SETTINGS: dict[str, Any] = {}  # --set field=json: SLUGConfig fields of the default call


def draws(world: World, sizes: list[int], n_draws: int) -> list[tuple[int, int, list[str]]]:
    """(N, draw, identities), seeded per (N, draw)."""
    return [
        (n, d, random.Random(1000 * n + d).sample(world.identities, n))
        for n in sizes
        for d in range(n_draws)
    ]


def make_delta(
    model, processor, world, target, cache: Path, composition: str, stack=()
) -> ConceptDelta:
    """Unlearn `target` (val evaluator) as `composition` says; `stack`: the deltas before it.

    independent: the demo's settings. guarded: the whole front searched, and a step is kept only
    if val retain stays within GUARDS[0] of θ⁰ (the next tolerance if no layer can). stacked: as
    guarded, searched with `stack` applied (`on_top_of`, guard against θ⁰) on tensors it does not
    use (`avoid`). default: the shipped default call (64 forget views, a held-out validation share,
    the phrasing ensemble with its margin), no evaluator of the benchmark's. default-avoid: the
    same call with `avoid=` the deltas before it (each tensor edited at most once).
    """
    if composition in ("default", "default-avoid"):
        avoid = list(stack) if composition == "default-avoid" else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = unlearn(
                model,
                processor,
                forget_pairs(world, target, 64),
                retain_pairs(world, exclude=[target], per_concept=4),
                SLUGConfig(
                    concept=target,
                    candidate_labels=world.identities,
                    concept_kind="identity",
                    **DEFAULT_SETTINGS,
                ),
                options=UnlearnOptions(
                    cache_dir=cache / "gradients-default" / target.replace(" ", "_"),
                    progress=False,
                    avoid=avoid,
                ),
            )
        if not result.converged:
            raise RuntimeError(f"no layer forgets {target}: {result.report()}")
        return ConceptDelta.from_result(result)
    settings = dict(SETTINGS)
    guards: tuple[float | None, ...] = (None,)
    if composition != "independent":
        settings.update(top_k=None, utility_metric="retain_acc")
        guards = GUARDS
    extra = dict(on_top_of=list(stack), avoid=list(stack)) if composition == "stacked" else {}
    for tolerance in guards:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = unlearn(
                model,
                processor,
                forget_pairs(world, target, 32),
                retain_pairs(world, exclude=[target], per_concept=4),
                SLUGConfig(
                    concept=target,
                    candidate_labels=world.identities,
                    utility_tolerance=tolerance,
                    **settings,
                ),
                evaluator=identity_evaluator(world, processor, target, "val", **VAL),
                options=UnlearnOptions(
                    cache_dir=cache / "gradients" / target.replace(" ", "_"), progress=False
                ),
                **extra,
            )
        if result.converged:
            delta = ConceptDelta.from_result(result, concept_kind="identity")
            delta.config.metrics["guard"] = tolerance
            return delta
    raise RuntimeError(f"no layer forgets {target}: {result.report()}")


def layer_of(delta: ConceptDelta) -> tuple[str, int, str]:
    """(tower, block, tensor) of a one-tensor delta."""
    name = delta.names[0]
    tower = "vision" if name.startswith("vision") else "text"
    parts = name.split(".")
    block = int(parts[parts.index("layers") + 1]) if "layers" in parts else 99
    return tower, block, name


def relation(i: ConceptDelta, j: ConceptDelta) -> str:
    """Where delta i sits relative to delta j."""
    (ti, bi, ni), (tj, bj, nj) = layer_of(i), layer_of(j)
    if ni == nj:
        return "same tensor"
    if ti != tj:
        return "other tower"
    if bi == bj:
        return "same block"
    return "lower block" if bi < bj else "higher block"


def stack_eval(
    model, evaluator, deltas: dict[str, ConceptDelta], names: list[str], targets=()
) -> dict:
    """identity_report of the model with `names` of `deltas` stacked at weight 1.0 (per-target
    FA@1 for `targets` when the evaluator holds several)."""
    slug = SLUGModel(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stacking warnings are measured, not shown here
        for n in names:
            slug.add_adapter(n.replace(" ", "_"), deltas[n])
    try:
        return identity_report(evaluator(model), targets if len(targets) > 1 else ())
    finally:
        slug.unload()


def measure_stack(model, processor, world, targets, deltas) -> dict[str, Any]:
    test = identity_evaluator(world, processor, targets, "test", **SIZE)
    val = identity_evaluator(world, processor, targets, "val", **SIZE)
    val_original = stack_eval(model, val, deltas, [], targets)
    val_stacked = stack_eval(model, val, deltas, targets, targets)
    original = stack_eval(model, test, deltas, [], targets)
    stacked = stack_eval(model, test, deltas, targets, targets)
    alone = {t: stack_eval(model, test, deltas, [t], targets) for t in targets}
    removed = {
        t: stack_eval(model, test, deltas, [u for u in targets if u != t], targets) for t in targets
    }
    fa = {t: stacked[f"FA@1 {t}"] if len(targets) > 1 else stacked["FA@1"] for t in targets}
    key = (lambda t: f"FA@1 {t}") if len(targets) > 1 else (lambda t: "FA@1")
    return {
        "targets": targets,
        "layers": {t: layer_of(deltas[t])[2] for t in targets},
        "steps": {t: deltas[t].config.step for t in targets},
        "guards": {t: deltas[t].config.metrics.get("guard") for t in targets},
        "val": {
            "retain_drop": val_original["retain"] - val_stacked["retain"],
            "utility_drop": val_original["utility"] - val_stacked["utility"],
            "max_fa1": max(val_stacked[k] for k in val_stacked if k.startswith("FA@1")),
        },
        "original": original,
        "stacked": stacked,
        "fa1": fa,
        "all_forgotten": all(v == 0.0 for v in fa.values()),
        "retain_drop": original["retain"] - stacked["retain"],
        "utility_drop": original["utility"] - stacked["utility"],
        "retain_drop_sum_alone": sum(original["retain"] - alone[t]["retain"] for t in targets),
        "utility_drop_sum_alone": sum(original["utility"] - alone[t]["utility"] for t in targets),
        "removed": {
            t: {
                "own_fa1": removed[t][key(t)],
                "own_fa1_original": original[key(t)],
                "comes_back": removed[t][key(t)] >= 0.9 * original[key(t)],
                "others_max_fa1": max((removed[t][key(u)] for u in targets if u != t), default=0.0),
            }
            for t in targets
        },
    }


def measure_pairs(model, processor, world, targets, deltas) -> list[dict[str, Any]]:
    """Val FA@1 of each j with its delta alone and with each other delta i added."""
    rows = []
    for j in targets:
        val = identity_evaluator(world, processor, j, "val", **VAL)

        def fa(names: list[str], val: Any = val) -> float:
            slug = SLUGModel(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for n in names:
                    slug.add_adapter(n.replace(" ", "_"), deltas[n])
            try:
                return 100 * val.evaluate_only(model, ("forget_acc",))["forget_acc"]
            finally:
                slug.unload()

        alone = fa([j])
        for i in targets:
            if i != j:
                rows.append(
                    {
                        "i": i,
                        "j": j,
                        "relation": relation(deltas[i], deltas[j]),
                        "fa1_j_alone": alone,
                        "fa1_j_with_i": fa([j, i]),
                    }
                )
    return rows


def markdown(path: Path) -> str:
    """The tables of stacking.md, every number read from `path` (a stacking.json)."""
    import json

    from common import table

    report = json.loads(path.read_text())
    rows = []
    for s in report["stacks"]:
        back = s["removed"].values()
        rows.append(
            [
                s["n"],
                s["draw"],
                s["composition"],
                ", ".join(f"{v:.1f}" for v in s["fa1"].values()),
                s["original"]["retain"],
                -s["retain_drop"],
                -s["retain_drop_sum_alone"],
                s["original"]["utility"],
                -s["utility_drop"],
                sum(v["comes_back"] for v in back),
                max(v["others_max_fa1"] for v in back),
                ", ".join(f"{s['steps'][t]:.3g} ({s['guards'][t]})" for t in s["targets"]),
            ]
        )
    stacks = table(
        [
            "N",
            "draw",
            "composition",
            "FA@1 per target",
            "retain before",
            "Δ retain",
            "Σ Δ retain alone",
            "utility before",
            "Δ utility",
            "concepts back when removed",
            "max FA@1 of others then",
            "steps (val guard)",
        ],
        rows,
    )
    by_relation: dict[str, list[float]] = {}
    for p in report["pairs"]:
        by_relation.setdefault(p["relation"], []).append(p["fa1_j_with_i"] - p["fa1_j_alone"])
    pairs = table(
        ["delta i relative to delta j", "pairs", "pairs where i breaks j (val FA@1 > 0)", "max"],
        [[k, len(v), sum(x > 0 for x in v), max(v)] for k, v in sorted(by_relation.items())],
    )
    return f"{stacks}\n\n{pairs}\n"


def _world(name: str) -> tuple[Path, Any]:
    """The CLIP's folder and the world of `--world`: the embedded one (the defaults were tuned
    there) or world B (`benchmarks/world_b.py`, its seed as `generalisation.py` draws it)."""
    if name == "embedded":
        return Path(DEFAULT_MODEL), World(seed=0)
    from world_b import world_b

    return WORLD_B_MODEL, world_b(seed=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--world", choices=("embedded", "b"), default="embedded")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 5, 8])
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--compositions", nargs="+", default=list(COMPOSITIONS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/hf_slug_stacking_cache"))
    parser.add_argument(
        "--only", nargs="*", default=[], help="composition=N,N: sizes for that composition"
    )
    parser.add_argument("--markdown", type=Path, help="print stacking.md's tables from a json")
    parser.add_argument(
        "--set", action="append", default=[], help="default composition: SLUGConfig field=json"
    )
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        DEFAULT_SETTINGS[key] = json.loads(value)
    if args.markdown:
        print(markdown(args.markdown))
        return
    args.sizes_for = {
        c: [int(x) for x in v.split(",")] for c, v in (o.split("=") for o in args.only)
    }
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_path, world = _world(args.world)
    model, processor = load_embedded(model_path)
    cache = args.cache / args.world
    start = time.perf_counter()
    alone: dict[tuple[str, str], ConceptDelta] = {}
    report: dict[str, Any] = {
        "command": command_line(),
        "world": args.world,
        "model_sha256": model_sha256(str(model_path)),
        "protocol": {"test": SIZE, "val": VAL, "settings": SETTINGS, "weight": 1.0},
        "stacks": [],
        "pairs": [],
    }
    for n, d, targets in draws(world, args.sizes, args.draws):
        for composition in args.compositions:
            if n not in args.sizes_for.get(composition, args.sizes):
                continue
            if composition in ("independent", "guarded", "default"):
                for t in targets:
                    if (composition, t) not in alone:
                        alone[composition, t] = make_delta(
                            model, processor, world, t, cache, composition
                        )
                deltas = {t: alone[composition, t] for t in targets}
            else:
                deltas = {}
                for t in targets:  # each searched on top of the ones before it
                    deltas[t] = make_delta(
                        model, processor, world, t, cache, composition, deltas.values()
                    )
            row = measure_stack(model, processor, world, targets, deltas)
            row.update(n=n, draw=d, composition=composition)
            if composition == "independent":
                pairs = measure_pairs(model, processor, world, targets, deltas)
                report["pairs"] += [dict(p, n=n, draw=d) for p in pairs]
            report["stacks"].append(row)
            print(
                f"N={n} draw={d} {composition}: FA@1 {row['fa1']} retain "
                f"-{row['retain_drop']:.1f} utility -{row['utility_drop']:.1f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            report["seconds"] = time.perf_counter() - start
            write_json(args.out / "stacking.json", report)


if __name__ == "__main__":
    main()
