"""End to end on the embedded text-to-image pipeline: can it draw the world's objects and styles,
and does SLUG on the text encoder stop it drawing one object (one style) while it keeps the rest?

The pipeline is `hf_slug/demo/embedded_t2i`, trained on identities and on objects in styles
(captions from the world's training templates). Every object × style combination is drawn from
held-out phrasings (the world's two eval templates for objects in styles and "{style} {object}.",
none a training template) at fixed seeds. A judge — the *unedited* embedded CLIP, zero-shot, each
label's held-out prompts (`World.prompts`) averaged — names the object of each image among the 12
objects and its style among the 8 styles (object / style accuracy). Step 1: those accuracies
before, against chance; a kind drawn near chance (< 2 × chance) is not unlearned. Step 2: the
object and the style best drawn on validation seeds (disjoint from the test seeds) are unlearned
with `unlearn_pipeline`'s default criterion (forget = 32 training views of the concept whose
caption states it; retain = identity, digit and object/style training pairs without the concept),
the delta applied with `SLUGModel`, and the same prompts and seeds drawn and judged again:
UA (the target's generations not judged as the target), IRA (the other concepts of its kind still
judged right) and CRA (the other kind's accuracy on the same generations). An 'open' judge
(the 12 objects and the 26 identity names together) shows how many generations are portraits,
which a forced choice among objects or styles still labels.

    python benchmarks/generative_pipeline_concepts.py                 # the full run
    python benchmarks/generative_pipeline_concepts.py --quick --out /tmp/gpc   # smoke run
    python benchmarks/generative_pipeline_concepts.py --markdown   # rewrite the .md from the JSON

Targets (issue 17): after unlearning, the target's generations recognised ≤ 10 %, the others
(IRA, CRA) ≥ 90 % of before.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# importing the identity benchmark sets HF_HUB_OFFLINE=1 and turns off the gradient cache
from benchmarks.generative_pipeline import (  # noqa: E402
    REPO,
    load_models,
    log,
    unlearn_text_encoder,
    versions,
)
from benchmarks.generative_pipeline_concepts_report import markdown  # noqa: E402
from hf_slug import SLUGModel  # noqa: E402
from hf_slug.demo.t2i import EMBEDDED_T2I, GENERATION_KWARGS, IdentityJudge, generate  # noqa: E402
from hf_slug.demo.world import World, fill_template  # noqa: E402
from hf_slug.hosts.pipeline_criteria import CRITERIA, default_criterion  # noqa: E402
from hf_slug.names import default_adapter_name  # noqa: E402
from hf_slug.plots import image_grid  # noqa: E402

EXTRA_PHRASING = "{style} {object}."
VALIDATION_SEEDS = (1000, 1001)  # target choice only; the test seeds are 0, 1, ...
KINDS = ("object", "style")


def held_out_phrasings(world: World) -> list[str]:
    """ "{style} {object}." and the world's eval templates for objects in styles, checked unseen."""
    phrasings = [EXTRA_PHRASING, *(t for t, _ in world.design.eval_templates["object_style"])]
    trained = {t for t, _ in world.design.train_templates["object_style"]}
    assert not trained & set(phrasings), "a measured phrasing is a training template"
    return phrasings


class ConceptJudge(IdentityJudge):
    """The label an image shows among `prompts`' labels: zero-shot by an unedited CLIP, each
    label's prompts averaged into one embedding (the CLIP convention, as `concept_evaluator`)."""

    def __init__(self, clip_model: Any, processor: Any, prompts: dict[str, list[str]]):
        self.model, self.processor, self.names = clip_model.eval(), processor, list(prompts)
        rows = []
        with torch.no_grad():
            for label in self.names:
                tokens = processor(text=prompts[label], return_tensors="pt", padding=True)
                text = clip_model.get_text_features(**tokens)
                text = F.normalize(getattr(text, "pooler_output", text).float(), dim=-1)
                rows.append(F.normalize(text.mean(0), dim=-1))
        self.text = torch.stack(rows)


def accuracy(truth: list[str], said: list[str], labels: list[str]) -> dict[str, float]:
    """Per label, the share of its images judged as it."""
    out = {}
    for label in labels:
        hits = [s == label for t, s in zip(truth, said) if t == label]
        if hits:
            out[label] = float(np.mean(hits))
    return out


def measure(model: Any, judges: dict, combos, phrasings, seeds, **kwargs) -> dict:
    """Draw every (object, style) × phrasing × seed; judge each image's object and style."""
    prompts = {fill_template(t, o, s): (o, s) for o, s in combos for t in phrasings}
    start = time.time()
    images = generate(model, list(prompts), seeds, **kwargs)
    seconds = time.time() - start
    truth = {
        "object": [prompts[p][0] for p, _ in images],
        "style": [prompts[p][1] for p, _ in images],
    }
    said = {kind: judges[kind](list(images.values())) for kind in (*KINDS, "open")}
    per = {kind: accuracy(truth[kind], said[kind], judges[kind].names) for kind in KINDS}
    per["open"] = accuracy(truth["object"], said["open"], judges["object"].names)
    people = set(judges["open"].names) - set(judges["object"].names)
    return {
        **{f"per_{kind}": per[kind] for kind in (*KINDS, "open")},
        "open_mean": float(np.mean(list(per["open"].values()))),
        "person_share": float(np.mean([s in people for s in said["open"]])),
        "person": [s in people for s in said["open"]],
        **{f"{kind}_mean": float(np.mean(list(per[kind].values()))) for kind in KINDS},
        "truth": truth,
        "said": said,
        "images": images,
        "seconds": round(seconds, 1),
        "seconds_per_image": seconds / max(1, len(images)),
    }


def public(m: dict) -> dict:
    """What of a measurement goes to the JSON."""
    keep = ("per_object", "per_style", "per_open", "object_mean", "style_mean", "open_mean")
    keep += ("person_share", "seconds", "seconds_per_image")
    return {k: m[k] for k in keep}


def concept_pairs(world: World, kind: str, target: str, n: int = 32) -> tuple[list, list]:
    """(forget, retain): `n` training views of `target` whose caption states its kind; retain =
    4 training views per identity and digit, 1 per object × style without `target`."""
    combos = len(world.objects if kind == "style" else world.styles)
    views = world.samples("object_style", "train", -(-48 // combos), [target])
    forget = [(s.image, s.caption) for s in views if kind in s.stated][:n]
    scenes = [
        s for s in world.samples("object_style", "train", 1) if target not in (s.label, s.style)
    ]
    samples = world.samples("identity", "train", 4) + scenes + world.samples("digit", "train", 4)
    return forget, [(s.image, s.caption) for s in samples]


def summary(before: dict, after: dict, kind: str, target: str) -> dict:
    """UA, IRA and CRA before/after, and what the target's generations are called after."""
    other = "style" if kind == "object" else "object"
    mine = [t == target for t in before["truth"][kind]]

    def ira(m: dict) -> float:
        return float(np.mean([v for k, v in m[f"per_{kind}"].items() if k != target]))

    def cra_on_target(m: dict) -> float:
        pairs = zip(m["truth"][other], m["said"][other], mine)
        return float(np.mean([t == s for t, s, own in pairs if own]))

    def open_ira(m: dict) -> float:
        return float(np.mean([v for k, v in m["per_open"].items() if k != target]))

    def person_on_target(m: dict) -> float:
        return float(np.mean([p for p, own in zip(m["person"], mine) if own]))

    votes: dict[str, int] = {}
    for said, own in zip(after["said"][kind], mine):
        if own:
            votes[said] = votes.get(said, 0) + 1
    out = {
        "target_before": before[f"per_{kind}"][target],
        "target_after": after[f"per_{kind}"][target],
        "UA_before": 1 - before[f"per_{kind}"][target],
        "UA_after": 1 - after[f"per_{kind}"][target],
        "IRA_before": ira(before),
        "IRA_after": ira(after),
        "CRA_before": before[f"{other}_mean"],
        "CRA_after": after[f"{other}_mean"],
        "CRA_target_generations_before": cra_on_target(before),
        "CRA_target_generations_after": cra_on_target(after),
        "person_share_before": before["person_share"],
        "person_share_after": after["person_share"],
        "person_share_target_before": person_on_target(before),
        "person_share_target_after": person_on_target(after),
        "target_said_after": dict(sorted(votes.items(), key=lambda kv: -kv[1])),
        "per_label_after": after[f"per_{kind}"],
    }
    if kind == "object":  # the same, judged among objects and people (no forced choice)
        out["open_target_before"] = before["per_open"][target]
        out["open_target_after"] = after["per_open"][target]
        out["open_IRA_before"], out["open_IRA_after"] = open_ira(before), open_ira(after)
        out["open_IRA_relative"] = out["open_IRA_after"] / out["open_IRA_before"]
    out["IRA_relative"] = out["IRA_after"] / out["IRA_before"]
    out["CRA_relative"] = out["CRA_after"] / out["CRA_before"]
    out["met"] = {
        "target_le_10pct": out["target_after"] <= 0.10,
        "IRA_ge_90pct_of_before": out["IRA_relative"] >= 0.90,
        "CRA_ge_90pct_of_before": out["CRA_relative"] >= 0.90,
    }
    return out


def unlearn_concept(
    pipe, clips, world, kind, target, measured, criterion=None
) -> tuple[dict, dict | None]:
    """Unlearn `target` (an object or style) with `criterion` (None: `unlearn_pipeline`'s
    default); measure with its delta."""
    forget, retain = concept_pairs(world, kind, target)
    labels = world.objects if kind == "object" else world.styles
    out, seconds = unlearn_text_encoder(
        pipe, clips, target, retain, forget, labels, kind, criterion=criterion
    )
    result = out.result
    record: dict[str, Any] = {
        "target": target,
        "converged": out.converged,
        "unlearn_seconds": round(seconds, 1),
        "forget_pairs": len(out.forget),
        "retain_pairs": len(retain),
        "layer": result.chosen.label if result.chosen is not None else None,
        "step": result.chosen.step if result.chosen is not None else None,
        "clip_metrics_before": {k: float(v) for k, v in result.before.items()},
        "clip_metrics_after": {k: float(v) for k, v in result.after.items()},
    }
    log(f"{kind} {target}: converged={out.converged} in {record['unlearn_seconds']}s, "
        f"{record['layer']} step={record['step']}")  # fmt: skip
    if out.delta is None:
        return record, None
    slug = SLUGModel(pipe)
    slug.add_adapter(default_adapter_name(target), out.delta)
    try:
        after = measured(slug)
    finally:
        slug.unload()
    return record, after


def save_grid(before, after, kind, target, combos, phrasing, seeds, path: Path) -> Path:
    """Rows: the target's first combinations, then others; columns: seeds before | after."""
    index = 0 if kind == "object" else 1
    mine = [c for c in combos if c[index] == target][:4]
    rows = mine + [c for c in combos if c[index] != target][:: max(1, len(combos) // 4)][:3]
    grid = [
        [
            m["images"][(fill_template(phrasing, o, s), seed)]
            for m in (before, after)
            for seed in seeds
        ]
        for o, s in rows
    ]
    cols = [f"{w} s{seed}" for w in ("before", "after") for seed in seeds]
    return image_grid(grid, path, row_labels=[f"{s} {o}" for o, s in rows], col_labels=cols)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--phrasings", type=int, default=2)
    parser.add_argument("--steps", type=int, default=GENERATION_KWARGS["num_inference_steps"])
    parser.add_argument("--guidance", type=float, default=GENERATION_KWARGS["guidance_scale"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default=None,
        help="unlearn_pipeline's search criterion (default: the library's default)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 objects × 2 styles")
    parser.add_argument("--markdown", action="store_true", help="no run: rewrite the .md")
    args = parser.parse_args(argv)
    if args.markdown:
        record = json.loads((args.out / "generative_pipeline_concepts.json").read_text())
        (args.out / "generative_pipeline_concepts.md").write_text(markdown(record))
        return
    torch.set_num_threads(args.threads)
    began = time.time()
    world = World(seed=0)
    objects, styles = list(world.objects), list(world.styles)
    val_seeds = list(VALIDATION_SEEDS)
    if args.quick:
        args.seeds, args.phrasings, args.steps = 1, 1, 6
        objects, styles, val_seeds = objects[:3], styles[:2], val_seeds[:1]
    combos = [(o, s) for o in objects for s in styles]
    phrasings = held_out_phrasings(world)[: args.phrasings]
    seeds = list(range(args.seeds))
    kwargs = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}
    grids = args.out / "generative_pipeline_concepts"

    pipe, clips, (judge_clip, judge_processor) = load_models()
    judges = {k: ConceptJudge(judge_clip, judge_processor, world.prompts(k)) for k in KINDS}
    open_prompts = {**world.prompts("object"), **world.prompts("identity")}
    judges["open"] = ConceptJudge(judge_clip, judge_processor, open_prompts)
    real = world.samples("object_style", "test", 1)
    judge_real = {
        "object": float(np.mean([g == s.label for g, s in zip(judges["object"]([s.image for s in real]), real)])),
        "style": float(np.mean([g == s.style for g, s in zip(judges["style"]([s.image for s in real]), real)])),
    }  # fmt: skip
    said_open = judges["open"]([s.image for s in real])
    judge_real["open_object"] = float(np.mean([g == s.label for g, s in zip(said_open, real)]))
    judge_real["open_person"] = float(np.mean([g in world.identities for g in said_open]))
    log(f"judge on real test views: {judge_real}")

    validation = measure(pipe, judges, combos, phrasings, val_seeds, **kwargs)
    chosen = {k: max(validation[f"per_{k}"].items(), key=lambda kv: kv[1])[0] for k in KINDS}
    log(f"validation: object {validation['object_mean']:.3f}, style "
        f"{validation['style_mean']:.3f}; chosen {chosen}")  # fmt: skip
    before = measure(pipe, judges, combos, phrasings, seeds, **kwargs)
    chance = {"object": 1 / len(world.objects), "style": 1 / len(world.styles)}
    log(f"before: object {before['object_mean']:.3f} (chance {chance['object']:.3f}), style "
        f"{before['style_mean']:.3f} (chance {chance['style']:.3f}); "
        f"{before['seconds_per_image']:.2f} s/image")  # fmt: skip

    unlearned: dict[str, Any] = {}
    for kind in KINDS:
        target = chosen[kind]
        if before[f"{kind}_mean"] < 2 * chance[kind]:
            unlearned[kind] = {"target": target, "skipped": "before-accuracy < 2 × chance"}
            log(f"{kind}: not drawn (below 2 × chance), not unlearned")
            continue
        record, after = unlearn_concept(
            pipe,
            clips,
            world,
            kind,
            target,
            lambda m: measure(m, judges, combos, phrasings, seeds, **kwargs),
            args.criterion,
        )
        if after is not None:
            record.update(summary(before, after, kind, target))
            record["after_means"] = {k: after[f"{k}_mean"] for k in KINDS}
            path = save_grid(before, after, kind, target, combos, phrasings[0], seeds,
                             grids / f"{kind}_{default_adapter_name(target)}.png")  # fmt: skip
            record["grid"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
            log(f"{kind} {target}: {record['target_before']:.3f} -> {record['target_after']:.3f}; "
                f"IRA {record['IRA_relative']:.1%}, CRA {record['CRA_relative']:.1%} of before")  # fmt: skip
        unlearned[kind] = record

    results = {
        "command": "python benchmarks/generative_pipeline_concepts.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "pipeline": str(EMBEDDED_T2I.relative_to(REPO)),
        "judge": "unedited embedded CLIP, zero-shot over the 12 objects / 8 styles, each label's "
        "held-out prompts (World.prompts) averaged; 'open': the same over the 12 objects and "
        "the 26 identity names ('{name}.') together, to see images drawn as people",
        "judge_on_real_test_views": judge_real,
        "objects": objects,
        "styles": styles,
        "phrasings": phrasings,
        "seeds": seeds,
        "validation_seeds": val_seeds,
        "images_per_measurement": len(combos) * len(phrasings) * len(seeds),
        "generation": kwargs,
        "chance": chance,
        "validation": public(validation),
        "chosen": chosen,
        "criterion": args.criterion or default_criterion(pipe, 1),
        "criterion_is_default": args.criterion is None,
        "before": public(before),
        "unlearned": unlearned,
        "minutes": round((time.time() - began) / 60, 1),
        "versions": versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generative_pipeline_concepts.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    (args.out / "generative_pipeline_concepts.md").write_text(markdown(results))
    log(f"done in {results['minutes']} min")


if __name__ == "__main__":
    main()
