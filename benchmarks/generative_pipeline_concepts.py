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
    pct,
    unlearn_text_encoder,
    versions,
)
from hf_slug import SLUGModel  # noqa: E402
from hf_slug.demo.t2i import EMBEDDED_T2I, GENERATION_KWARGS, IdentityJudge, generate  # noqa: E402
from hf_slug.demo.world import World, fill_template  # noqa: E402
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


def unlearn_concept(pipe, clips, world, kind, target, measured) -> tuple[dict, dict | None]:
    """Unlearn `target` (an object or style) with the default criterion; measure with its delta."""
    forget, retain = concept_pairs(world, kind, target)
    labels = world.objects if kind == "object" else world.styles
    out, seconds = unlearn_text_encoder(pipe, clips, target, retain, forget, labels, kind)
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


def by(x: float, limit: float, higher: bool) -> str:
    """'met' or 'missed by N points' against a limit."""
    gap = (limit - x) if higher else (x - limit)
    return "met" if gap <= 0 else f"missed by {100 * gap:.1f} points"


def unlearned_lines(r: dict) -> list[str]:
    lines = [
        "| kind | target | converged | layer | step | target before | target after (≤ 10 %) | "
        "UA after | IRA before → after (kept, ≥ 90 %) | CRA before → after (kept, ≥ 90 %) | "
        "CRA on the target's images | unlearn s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for kind, u in r["unlearned"].items():
        if "skipped" in u:
            lines.append(f"| {kind} | {u['target']} | – | – | – | – | {u['skipped']} | | | | | |")
            continue
        if "target_after" not in u:
            lines.append(f"| {kind} | {u['target']} | {u['converged']} | – | – | – | no delta | "
                         f"| | | | {u['unlearn_seconds']} |")  # fmt: skip
            continue
        step = f"{u['step']:.3g}" if u["step"] is not None else "–"
        lines.append(
            f"| {kind} | {u['target']} | {u['converged']} | {u['layer']} | {step} | "
            f"{pct(u['target_before'])} | {pct(u['target_after'])} | {pct(u['UA_after'])} | "
            f"{pct(u['IRA_before'])} → {pct(u['IRA_after'])} ({pct(u['IRA_relative'])}) | "
            f"{pct(u['CRA_before'])} → {pct(u['CRA_after'])} ({pct(u['CRA_relative'])}) | "
            f"{pct(u['CRA_target_generations_before'])} → "
            f"{pct(u['CRA_target_generations_after'])} | {u['unlearn_seconds']} |"
        )
        verdicts.append(
            f"* {kind} **{u['target']}**: target recognised {pct(u['target_after'])} "
            f"({by(u['target_after'], 0.10, higher=False)}); IRA kept {pct(u['IRA_relative'])} "
            f"({by(u['IRA_relative'], 0.90, higher=True)}); CRA kept {pct(u['CRA_relative'])} "
            f"({by(u['CRA_relative'], 0.90, higher=True)}). Its generations were judged after: "
            + ", ".join(f"{k} {v}" for k, v in u["target_said_after"].items())
            + "."
        )
    lines += [
        "",
        "Without a forced choice: the 'open' judge names each image among the 12 objects *and* "
        "the 26 identities, so an image drawn as a person is no longer forced onto some object "
        "or style label:",
        "",
        "| kind | target | all images judged a person | the target's images judged a person | "
        "target recognised among objects + people | other objects among objects + people "
        "(kept) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, u in r["unlearned"].items():
        if "person_share_after" not in u:
            continue
        obj = (
            [
                f"{pct(u['open_target_before'])} → {pct(u['open_target_after'])}",
                f"{pct(u['open_IRA_before'])} → {pct(u['open_IRA_after'])} "
                f"({pct(u['open_IRA_relative'])})",
            ]
            if "open_target_after" in u
            else ["–", "–"]
        )
        lines.append(
            f"| {kind} | {u['target']} | {pct(u['person_share_before'])} → "
            f"{pct(u['person_share_after'])} | {pct(u['person_share_target_before'])} → "
            f"{pct(u['person_share_target_after'])} | " + " | ".join(obj) + " |"
        )
    lines += [
        "",
        "The search's own CLIP criterion (pooled text embedding, held-out training pairs), "
        "before → after: "
        + "; ".join(
            f"{kind} {u['target']}: forget acc. {pct(u['clip_metrics_before']['forget_acc'])} → "
            f"{pct(u['clip_metrics_after']['forget_acc'])}, others "
            f"{pct(u['clip_metrics_before']['others_acc'])} → "
            f"{pct(u['clip_metrics_after']['others_acc'])}"
            for kind, u in r["unlearned"].items()
            if "forget_acc" in u.get("clip_metrics_after", {})
        )
        + ".",
    ]
    return lines + ["", "Against issue 17's target (forced-choice judge):", "", *verdicts]


def reading_lines(r: dict) -> list[str]:
    """What the numbers say, every number from `r`."""
    b, c, real = r["before"], r["chance"], r["judge_on_real_test_views"]
    lines = [
        "## Reading",
        "",
        f"* Before: the pipeline draws objects and styles only weakly — object accuracy "
        f"{pct(b['object_mean'])} ({b['object_mean'] / c['object']:.1f}× chance), style "
        f"{pct(b['style_mean'])} ({b['style_mean'] / c['style']:.1f}× chance), above the 2× "
        f"chance bar this script requires to go on. {pct(b['person_share'])} of the "
        "object-in-style generations are judged a person by the open judge, which calls "
        f"{pct(real['open_person'])} of real object views a person: many of these generations "
        "are portraits, and a forced choice among objects or styles still gives them a label.",
    ]
    for kind, u in r["unlearned"].items():
        if "person_share_after" not in u:
            continue
        text = (
            f"* {kind} {u['target']}: after the delta {pct(u['person_share_target_after'])} of "
            f"its generations and {pct(u['person_share_after'])} of all generations are judged "
            f"a person (before {pct(u['person_share_target_before'])} and "
            f"{pct(u['person_share_before'])})"
        )
        if "open_target_after" in u:
            text += (
                f"; among objects and people the target is recognised "
                f"{pct(u['open_target_before'])} → {pct(u['open_target_after'])} and the other "
                f"objects {pct(u['open_IRA_before'])} → {pct(u['open_IRA_after'])}. The forced-"
                "choice numbers above label these portraits as objects all the same"
            )
        general = u["person_share_after"] - u["person_share_before"] > 0.2
        lines.append(
            text + (": the edit does not remove one concept, it turns object/style prompts "
                    "into portraits in general." if general else ".")
        )  # fmt: skip
    met = [f"the {k}" for k, u in r["unlearned"].items() if all(u.get("met", {0: 0}).values())]
    lines += [
        "* Issue 17's 'an object or style erased the same way': "
        + (f"met by {' and '.join(met)} " if met else "not met ")
        + "with the default criterion on this pipeline (forced-choice judge; see the verdicts "
        "above). The search's own criterion (CLIP zero-shot on the pooled text embedding) is "
        "listed above; the pipeline reads all 77 token states, not the pooled one.",
        "",
    ]
    return lines


def markdown(r: dict) -> str:
    b, c = r["before"], r["chance"]
    lines = [
        "# The embedded text-to-image pipeline: an object and a style, unlearned through its "
        "text encoder",
        "",
        f"Command: `{r['command'].strip()}` ({r['minutes']} min on 2 shared CPU cores, 1 thread).",
        "",
        f"Pipeline `{r['pipeline']}`; {len(r['objects'])} objects × {len(r['styles'])} styles × "
        f"{len(r['phrasings'])} held-out phrasings ({', '.join(repr(p) for p in r['phrasings'])};"
        f" none a training template) × seeds {r['seeds']} = {r['images_per_measurement']} images"
        f" per measurement, {r['generation']['num_inference_steps']} DDIM steps, guidance "
        f"{r['generation']['guidance_scale']} ({b['seconds_per_image']:.2f} s/image). Judge: "
        f"{r['judge']}; on real test views it names {pct(r['judge_on_real_test_views']['object'])}"
        f" of objects and {pct(r['judge_on_real_test_views']['style'])} of styles right.",
        "",
        "## 1. Can the pipeline draw objects and styles?",
        "",
        f"| | test seeds (accuracy) | chance | validation seeds {r['validation_seeds']} |",
        "|---|---|---|---|",
        f"| object | {pct(b['object_mean'])} | {pct(c['object'])} | "
        f"{pct(r['validation']['object_mean'])} |",
        f"| style | {pct(b['style_mean'])} | {pct(c['style'])} | "
        f"{pct(r['validation']['style_mean'])} |",
        "",
        f"Accuracy / chance: object {b['object_mean'] / c['object']:.1f}×, style "
        f"{b['style_mean'] / c['style']:.1f}×. Among objects and people together ('open' "
        f"judge) {pct(b['open_mean'])} of the objects are named right and "
        f"{pct(b['person_share'])} of all images are judged a person (on real object test "
        f"views the open judge names {pct(r['judge_on_real_test_views']['open_object'])} "
        f"right and calls {pct(r['judge_on_real_test_views']['open_person'])} a person).",
        "",
        "Per object (test seeds): "
        + ", ".join(f"{k} {pct(v)}" for k, v in b["per_object"].items())
        + ".",
        "",
        "Per style (test seeds): "
        + ", ".join(f"{k} {pct(v)}" for k, v in b["per_style"].items())
        + ".",
        "",
        f"Targets, chosen as the best drawn on the validation seeds: object "
        f"**{r['chosen']['object']}**, style **{r['chosen']['style']}**.",
        "",
        "## 2. Unlearned with `unlearn_pipeline`'s default criterion ('clip')",
        "",
        "Forget: 32 training views of the concept whose caption states it; retain: 4 training "
        "views per identity and digit and 1 per object × style without the concept; "
        "`SLUGConfig(concept, towers=('text',), candidate_labels=<the 12 objects | 8 styles>, "
        "concept_kind=...)`; the delta applied with `SLUGModel(pipe).add_adapter`. UA = the "
        "target's generations not judged as it; IRA = the other labels of its kind, mean "
        "per-label accuracy; CRA = the other kind's accuracy over all generations (and over the "
        "target's own generations).",
        "",
        *unlearned_lines(r),
        "",
        *reading_lines(r),
        "Grids (rows: the target's combinations, then others; phrasing "
        f"{r['phrasings'][0]!r}; seeds before | after): "
        + ", ".join(f"`{u['grid']}`" for u in r["unlearned"].values() if "grid" in u)
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
