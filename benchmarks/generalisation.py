"""Does the default call's forgetting hold on held-out views and phrasings? (issue 14)

For each target of a world, the README's call — `unlearn(model, processor, forget, retain,
SLUGConfig(concept=..., candidate_labels=..., concept_kind=...))`, nothing else — is judged on
the world's `test` split, which no search or training saw:

* FA@1 / FA@5: the target's test views among its kind's names, with the world's held-out
  templates (mean of the prompts, the CLIP convention);
* worst phrasing FA@1: the share of test views that *some* held-out audit phrasing
  (`hf_slug.audit.phrasings.templates`, disjoint from the criterion's) still names top-1;
* misspelt FA@1: the same with the target written with the audit's one- and two-typo
  variants (drawn apart from the criterion's `misspellings`) in three held-out templates;
* retain and utility (identities: the other identities; objects, styles, digits — the SLUG
  paper's CLIP protocol), IRA / CRA for objects and styles (UnlearnCanvas).

The layer-choice study re-scores, on the same test data, every layer the search met its
criterion on, and reports what each rule (validation utility — the default —, importance,
alignment, depth, smallest step) would have picked. Costs are ratios to one forward+backward
pass over the whole forget + retain sets, measured in the same process.

    OMP_NUM_THREADS=2 python benchmarks/generalisation.py --world embedded \\
        --out benchmarks/generalisation_embedded.json
    python benchmarks/generalisation.py --world b --out benchmarks/generalisation_b.json
    python benchmarks/generalisation.py --world embedded --set margin=0.1 --out /tmp/m.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, table, write_json  # noqa: E402
from hf_slug import (  # noqa: E402
    ConceptDelta,
    SLUGConfig,
    UnlearnOptions,
    ZeroShotEvaluator,
    ZeroShotTask,
    unlearn,
)
from hf_slug.audit.phrasings import name_variants  # noqa: E402
from hf_slug.audit.phrasings import templates as audit_templates  # noqa: E402
from hf_slug.data import load_pairs  # noqa: E402
from hf_slug.demo.protocol import (  # noqa: E402
    concept_evaluator,
    concept_report,
    identity_evaluator,
    identity_report,
    retain_pairs,
)
from hf_slug.evaluation import PROMPT_DRIFT  # noqa: E402
from hf_slug.gradient_cache import misspelt_average  # noqa: E402
from hf_slug.gradients import compute_gradients  # noqa: E402
from hf_slug.null_space import null_space_gradients  # noqa: E402
from hf_slug.options import GradientOptions  # noqa: E402
from hf_slug.search import edited, update  # noqa: E402
from hf_slug.towers import block_index, candidate_names  # noqa: E402
from hf_slug.validation import held_out_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORLDS = {
    "embedded": REPO / "hf_slug" / "demo" / "embedded_clip",
    "b": REPO / "benchmarks" / "world_b" / "clip",
}
SHIPPED = "projected first, then least prompt drift"
PREVIOUS = "projected first, then validation utility"  # the default before prompt drift
RULES = (
    SHIPPED,
    PREVIOUS,
    "validation utility",
    "importance",
    "alignment",
    "shallowest",
    "smallest step",
)
# cheaper searches (issue 16): the default rule, searching only the k most important front
# layers per tower (SLUGConfig(top_k=k)); read off the same searches, no new run
TOP_K_RULES = {"validation utility, top_k=2": 2, "validation utility, top_k=3": 3}


def load_world(name: str) -> Any:
    if name == "embedded":
        from hf_slug.demo.world import World

        return World(seed=0)
    from benchmarks.world_b import world_b

    return world_b(seed=1)


def default_targets(world: Any, n_identities: int) -> list[tuple[str, str]]:
    """Every ⌊n/k⌋-th drawn identity, two objects, two styles (fixed, not tuned on)."""
    people = [n for n in world.identities if n not in ("Grace Hopper", "Eileen Collins")]
    step = max(1, len(people) // n_identities)
    picked = [("identity", n) for n in people[::step][:n_identities]]
    picked += [("object", o) for o in world.objects[1:3]]
    picked += [("style", s) for s in world.styles[1:3]]
    return picked


def data_for(world: Any, kind: str, target: str, n_forget: int) -> tuple[list, list]:
    """Training-split forget and retain pairs (the retain set excludes the target's views)."""
    if kind == "identity":
        forget = world.samples("identity", "train", n_forget, [target])
        return [(s.image, s.caption) for s in forget], retain_pairs(world, exclude=[target])
    per = -(-n_forget // (len(world.styles) if kind == "object" else len(world.objects)))
    scenes = world.samples("object_style", "train", per, [target])[:n_forget]
    rest = [
        s for s in world.samples("object_style", "train", 1) if target not in (s.label, s.style)
    ]
    others = world.samples("identity", "train", 4) + rest + world.samples("digit", "train", 4)
    return [(s.image, s.caption) for s in scenes], [(s.image, s.caption) for s in others]


def test_evaluator(world: Any, processor: Any, kind: str, target: str) -> ZeroShotEvaluator:
    """The world's test tasks plus the worst-phrasing task (held-out audit templates)."""
    if kind == "identity":
        base = identity_evaluator(world, processor, target, "test", per_identity=24)
        labels = world.identities
    else:
        base = concept_evaluator(world, processor, kind, target, "test", per_concept=3)
        labels = world.objects if kind == "object" else world.styles
    forget = next(t for t in base.tasks if t.name == "forget")
    worst = ZeroShotTask(
        "phrasings",
        forget.images,
        forget.labels,
        labels,
        templates=tuple(audit_templates(kind)),
        counts_for_utility=False,
        scoring="any",
    )
    return ZeroShotEvaluator(processor, [*base.tasks, worst, misspelt(forget, labels, kind)])


def misspelt(forget: ZeroShotTask, labels: list[str], kind: str) -> ZeroShotTask:
    """The target written with the audit's one- and two-typo variants (`name_variants`, drawn
    apart from the criterion's misspellings) in the first three held-out templates; the other
    labels keep their spelling. Any of the six naming the target top-1 counts."""
    target = forget.labels[0]
    variants = name_variants(target)
    spellings = [variants["one typo"], variants["two typos"]]
    held_out = audit_templates(kind)[:3]
    prompts = {
        label: [t.format(s if label == target else label) for s in spellings for t in held_out]
        for label in labels
    }
    return ZeroShotTask(
        "misspelt",
        forget.images,
        forget.labels,
        labels,
        prompts=prompts,
        counts_for_utility=False,
        scoring="any",
    )


def report(kind: str, metrics: dict[str, float]) -> dict[str, float]:
    out = identity_report(metrics) if kind == "identity" else concept_report(metrics)
    out = {k: v for k, v in out.items() if not k.startswith("FA@1 ")}
    out["FA@1"] = 100 * metrics["forget_acc"]
    out["FA@5"] = 100 * metrics["forget_acc@5"]
    out["worst phrasing FA@1"] = 100 * metrics["phrasings_acc"]
    out["misspelt FA@1"] = 100 * metrics["misspelt_acc"]
    return out


def floor_seconds(model: Any, processor: Any, forget: list, retain: list) -> float:
    """One forward+backward over the whole forget and retain sets (SLUG's gradient floor)."""
    names = candidate_names(model, ("vision", "text"))
    start = time.perf_counter()
    for loss, pairs in (("forget", forget), ("retain", retain)):
        compute_gradients(model, processor, load_pairs(pairs), loss, names, progress=False)
    return time.perf_counter() - start


def run_target(model, processor, world, kind, target, settings, n_forget) -> dict[str, Any]:
    labels = {"identity": world.identities, "object": world.objects, "style": world.styles}[kind]
    forget, retain = data_for(world, kind, target, n_forget)
    config = SLUGConfig(concept=target, candidate_labels=labels, concept_kind=kind, **settings)
    evaluator = test_evaluator(world, processor, kind, target)
    before = report(kind, evaluator(model))
    floor = floor_seconds(model, processor, forget, retain)
    with tempfile.TemporaryDirectory() as cache:
        result = unlearn(
            model,
            processor,
            forget,
            retain,
            config,
            options=UnlearnOptions(cache_dir=cache, progress=False),
        )
        grads_file = next(Path(cache).glob("forget_gradients-*.safetensors"))
        grads, covariances = searched_directions(
            model, processor, config, load_file(str(grads_file)), (forget, retain)
        )
    if result.chosen is not None:
        check_same_edit(model, result, grads)
    scores = {s.label: s for s in result.layers}
    layers = []
    for search in result.searches:
        if search.step is None:
            continue
        with edited(model, update(model, search.names, grads, search.step)):
            test = report(kind, evaluator(model))
        score = scores[search.label]
        layers.append(
            {
                "layer": search.label,
                "status": search.status,
                "step": search.step,
                "validation": search.metrics,
                "importance": score.importance,
                "alignment": score.alignment,
                "block": block_index(search.names[0])[0],
                "projected": bool(covariances) and all(n in covariances for n in search.names),
                "test": test,
            }
        )
    chosen = result.chosen.label if result.chosen else None
    after = next((x["test"] for x in layers if x["layer"] == chosen), None)
    return {
        "kind": kind,
        "target": target,
        "converged": result.converged,
        "chosen": chosen,
        "step": result.step,
        "before": before,
        "after": after,
        "validation_before": result.before,
        "validation_after": result.after,
        "data": result.summary()["data"],
        "layers": layers,
        "picks": picks(layers),
        "cost": {
            **{k: round(v, 3) for k, v in result.timings.items()},
            "floor_s": round(floor, 3),
            "ratio_to_floor": round(result.timings["total"] / floor, 3),
        },
    }


def searched_directions(model, processor, config, grads: dict, data: tuple) -> tuple:
    """The directions the search stepped along — the cached (raw) forget gradients, averaged
    over the name's misspellings and projected off the gradient retain pairs' inputs as
    `unlearn` does (`config.criterion_misspellings`, `config.retain_null_space`) — and those
    inputs' covariances (None without a null space). `data`: (forget, retain)."""
    forget, retain, _, _, _ = held_out_split(*map(load_pairs, data), config)  # as unlearn
    if config.criterion_misspellings:
        passes = dict(batch_size=config.batch_size, options=GradientOptions(), progress=False)
        grads = misspelt_average(model, processor, forget, grads, config, passes)
    if config.retain_null_space is None:
        return grads, None
    return null_space_gradients(model, processor, retain, grads, config, progress=False)


def check_same_edit(model, result, grads: dict) -> None:
    """Fail loudly unless the chosen layer's test edit is the delta `unlearn` made (so a table
    never reports an edit the default call would not make)."""
    made = ConceptDelta.from_result(result).tensors
    remade = update(model, result.chosen.names, grads, result.step)
    for name, tensor in made.items():
        if not torch.allclose(tensor.float(), remade[name], rtol=1e-4, atol=1e-6):
            raise RuntimeError(f"the benchmark's edit of {name} is not the one unlearn made")


def picks(layers: list[dict]) -> dict[str, str | None]:
    """The layer each rule picks among those that met the criterion on validation data."""
    met = [x for x in layers if x["status"] == "met"]
    if not met:
        return dict.fromkeys([*RULES, *TOP_K_RULES])
    top_k = {}
    for rule, k in TOP_K_RULES.items():
        kept = [x for x in most_important(layers, k) if x["status"] == "met"]
        top_k[rule] = max(kept, key=_by_utility)["layer"] if kept else None
    projected = [x for x in met if x.get("projected")] or met
    drifts = all(PROMPT_DRIFT in x["validation"] for x in projected)
    return {
        SHIPPED: min(projected, key=_by_drift)["layer"] if drifts else None,
        PREVIOUS: max(projected, key=_by_utility)["layer"],
        "validation utility": max(met, key=_by_utility)["layer"],
        "importance": max(met, key=lambda x: x["importance"])["layer"],
        "alignment": min(met, key=lambda x: x["alignment"])["layer"],
        "shallowest": min(met, key=lambda x: (x["block"], x["step"]))["layer"],
        "smallest step": min(met, key=lambda x: x["step"])["layer"],
        **top_k,
    }


def _by_utility(layer: dict) -> tuple[float, bool, float]:
    """Validation utility; ties to a projected edit, then the smaller step (`unlearn`'s rule
    among projected edits before prompt drift, `PREVIOUS`, and its rule before that)."""
    return layer["validation"]["utility"], bool(layer.get("projected")), -layer["step"]


def _by_drift(layer: dict) -> tuple[float, float, float]:
    """`unlearn`'s rule among projected edits (`SHIPPED`): the least prompt drift, ties to the
    higher validation utility, then the smaller step."""
    v = layer["validation"]
    return v[PROMPT_DRIFT], -v["utility"], layer["step"]


def most_important(layers: list[dict], k: int) -> list[dict]:
    """The `k` searched layers of highest importance in each tower (what `top_k=k` searches)."""
    kept = []
    for tower in ("vision", "text"):
        own = [x for x in layers if x["layer"].startswith(tower + ".")]
        kept += sorted(own, key=lambda x: -x["importance"])[:k]
    return kept


def deltas(row: dict, test: dict | None) -> dict[str, float | None]:
    """Changes from before, in points: retain / utility (identities), IRA / CRA (concepts)."""
    keys = ("retain", "utility") if row["kind"] == "identity" else ("IRA", "CRA")
    if test is None:
        return dict.fromkeys(keys)
    return {k: test[k] - row["before"][k] for k in keys}


def markdown(results: list[dict]) -> str:
    """The tables of `benchmarks/generalisation.md` from the JSON of one or more runs."""
    out = []
    for run in results:
        out.append(f"### World `{run['world']}` — settings {run['settings'] or 'defaults'}\n")
        out.append(f"`{run['command']}`\n")
        rows = []
        for r in run["rows"]:
            a = r["after"] or {}
            d = deltas(r, r["after"])
            rows.append(
                [
                    r["kind"],
                    r["target"],
                    f"`{r['chosen']}` s={r['step']:.3g}" if r["chosen"] else "none met",
                    a.get("FA@1"),
                    a.get("FA@5"),
                    a.get("worst phrasing FA@1"),
                    a.get("misspelt FA@1", "–"),
                    *[f"{v:+.1f}" if v is not None else "–" for v in d.values()],
                    r["cost"]["ratio_to_floor"],
                ]
            )
        out.append(
            table(
                [
                    "kind",
                    "target",
                    "chosen",
                    "FA@1",
                    "FA@5",
                    "worst phrasing FA@1",
                    "misspelt FA@1",
                    "retain / IRA Δ",
                    "utility / CRA Δ",
                    "cost (× floor)",
                ],
                rows,
            )
        )
        out.append("\n" + summary(run["rows"]) + "\n")
        out.append(rules_table(run["rows"]) + "\n")
    return "\n".join(out)


def summary(rows: list[dict]) -> str:
    """Per kind group: targets forgotten on test (FA@1 = 0; and on every phrasing), mean and
    worst change of retain/utility (identities) or IRA/CRA (objects and styles)."""
    lines = []
    for group, kinds in (
        ("identities", ("identity",)),
        ("objects and styles", ("object", "style")),
    ):
        mine = [r for r in rows if r["kind"] in kinds]
        if not mine:
            continue
        done = [r for r in mine if r["after"] is not None]
        zero = sum(r["after"]["FA@1"] == 0 for r in done)
        every = sum(
            r["after"]["FA@1"] == 0 and r["after"]["worst phrasing FA@1"] == 0 for r in done
        )
        changes = [list(deltas(r, r["after"]).values()) for r in done]
        names = ("retain", "utility") if group == "identities" else ("IRA", "CRA")
        stats = ", ".join(
            f"{name} Δ mean {sum(c[i] for c in changes) / len(changes):+.1f} "
            f"(worst {min(c[i] for c in changes):+.1f})"
            for i, name in enumerate(names)
        )
        fa5 = sum(r["after"]["FA@5"] for r in done) / len(done)
        typos = [r["after"]["misspelt FA@1"] for r in done if "misspelt FA@1" in r["after"]]
        typo_text = (
            f"; misspelt FA@1 mean {sum(typos) / len(typos):.1f} (worst {max(typos):.1f})"
            if typos
            else ""
        )
        lines.append(
            f"- {group}: FA@1 = 0 for {zero}/{len(mine)}, on every held-out phrasing for "
            f"{every}/{len(mine)}; mean FA@5 {fa5:.1f}{typo_text}; {stats}."
        )
    return "\n".join(lines)


def rules_table(rows: list[dict]) -> str:
    """For each rule: how many targets its pick forgets on test, and its mean / worst costs."""
    lines = []
    for rule in [*RULES, *TOP_K_RULES]:
        forgotten, costs = 0, []
        for r in rows:
            pick = picks(r["layers"]).get(rule)
            test = next((x["test"] for x in r["layers"] if x["layer"] == pick), None)
            if test is None:
                continue
            forgotten += test["FA@1"] == 0 and test["worst phrasing FA@1"] == 0
            costs.append(list(deltas(r, test).values()))
        if not costs:
            continue
        first = [c[0] for c in costs]
        second = [c[1] for c in costs]
        lines.append(
            [
                rule,
                f"{forgotten}/{len(rows)}",
                sum(first) / len(first),
                min(first),
                sum(second) / len(second),
                min(second),
            ]
        )
    return table(
        [
            "layer-choice rule",
            "FA@1 = 0 on every phrasing",
            "retain/IRA Δ mean",
            "worst",
            "utility/CRA Δ mean",
            "worst",
        ],
        lines,
    )


def parse_settings(items: list[str]) -> dict[str, Any]:
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    return settings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--world", choices=sorted(WORLDS), default="embedded")
    p.add_argument("--identities", type=int, default=6)
    p.add_argument("--targets", nargs="*", help="kind:name pairs (default: a fixed draw)")
    p.add_argument("--n-forget", type=int, default=64)
    p.add_argument("--set", action="append", default=[], help="SLUGConfig field=json value")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="the JSON to write")
    p.add_argument("--markdown", nargs="+", type=Path, help="print the tables of these JSONs")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown([json.loads(path.read_text()) for path in args.markdown]))
        return
    if args.out is None:
        p.error("--out is required (or --markdown to print tables)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    world = load_world(args.world)
    model = CLIPModel.from_pretrained(WORLDS[args.world]).float().eval()
    processor = CLIPProcessor.from_pretrained(WORLDS[args.world])
    targets = (
        [tuple(t.split(":", 1)) for t in args.targets]
        if args.targets
        else default_targets(world, args.identities)
    )
    settings = parse_settings(args.set)
    rows = []
    for kind, target in targets:
        start = time.perf_counter()
        row = run_target(model, processor, world, kind, target, settings, args.n_forget)
        rows.append(row)
        after = row["after"] or {}
        print(
            f"{kind:8s} {target:22s} chosen={row['chosen']} s={row['step']} "
            + " ".join(f"{k}={after.get(k, float('nan')):.1f}" for k in ("FA@1", "FA@5"))
            + f" ({time.perf_counter() - start:.0f}s)",
            flush=True,
        )
        write_json(
            args.out,
            {"command": command_line(), "world": args.world, "settings": settings, "rows": rows},
        )


if __name__ == "__main__":
    main()
