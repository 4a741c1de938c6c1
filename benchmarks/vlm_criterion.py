"""The VLM's own answers vs CLIP zero-shot as `unlearn_vlm`'s search criterion (issue 19).

On the embedded VLM (`hf_slug/demo/embedded_vlm`: the embedded CLIP's vision tower, a projector
and a tiny Llama, `vision_feature_layer = -2`), each target is unlearned twice with the
README's call — `unlearn_vlm(vlm, clip, processor, forget, retain, SLUGConfig(concept=t,
candidate_labels=names, concept_kind="identity"), ...)` — once with `criterion="clip"` (CLIP
zero-shot on the pooled class token, the former default) and once with
`vlm_processor=processor` (`criterion="vlm"`, the VLM answering on held-out validation images).
Both are judged on **test** views (12 per identity, held-out question phrasing): how often the
VLM still names the target, how often it names the others (relative to before), object and style
accuracy, and whether the language model and projector stayed bit-identical.

    python benchmarks/vlm_criterion.py --out benchmarks/vlm_criterion.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line, quietly, table, write_json  # noqa: E402
from hf_slug import (  # noqa: E402
    SLUGConfig,
    SLUGModel,
    UnlearnOptions,
    VLMOptions,
    unlearn_vlm,
)
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.run import load_embedded  # noqa: E402
from hf_slug.demo.vlm import ask, load_embedded_vlm  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402

TARGETS = ("Clara Alderwick", "Hugo Iverson", "Yara Underhill", "Grace Hopper")
QUESTIONS = {
    "identity": "Who is the person in this photo?",
    "object": "What object is drawn in the picture?",
    "style": "What style is the image drawn in?",
}  # held-out phrasings of scripts/train_embedded_vlm.py (never trained on)


def named(answers: list[str], labels: list[str]) -> list[bool]:
    return [label.lower() in answer.lower() for answer, label in zip(answers, labels)]


def measure(model, processor, people, scenes) -> dict:
    """Per-person named rates (test views), object and style accuracy."""
    answers = ask(model, processor, [s.image for s in people], QUESTIONS["identity"])
    hits = named(answers, [s.label for s in people])
    per: dict[str, list[bool]] = {}
    for sample, hit in zip(people, hits):
        per.setdefault(sample.label, []).append(hit)
    objects = ask(model, processor, [s.image for s in scenes], QUESTIONS["object"])
    styles = ask(model, processor, [s.image for s in scenes], QUESTIONS["style"])
    return {
        "per_person": {k: 100 * sum(v) / len(v) for k, v in per.items()},
        "object": 100 * sum(named(objects, [s.label for s in scenes])) / len(scenes),
        "style": 100 * sum(named(styles, [s.style or "" for s in scenes])) / len(scenes),
    }


def untouched(slug, snapshot: dict[str, torch.Tensor]) -> bool:
    """With the delta merged into the weights: the language model and projector equal their
    snapshot taken before any unlearning, and the vision tower changed."""
    slug.merge_adapter()
    try:
        current = dict(slug.model.named_parameters())
        same = all(torch.equal(current[n], t) for n, t in snapshot.items() if "vision" not in n)
        moved = any(not torch.equal(current[n], t) for n, t in snapshot.items() if "vision" in n)
    finally:
        slug.unmerge_adapter()
    return same and moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--criteria", nargs="+", default=["clip", "vlm"], choices=["clip", "vlm"])
    parser.add_argument(
        "--stack",
        action="store_true",
        help="also measure the first two targets' vlm deltas stacked",
    )
    parser.add_argument("--vlm", type=Path, default=None, help="another VLM folder (same tower)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    clip, clip_processor = load_embedded()
    vlm, processor = load_embedded_vlm(args.vlm) if args.vlm else load_embedded_vlm()
    world = World(0)
    people = world.samples("identity", "test", 12)
    scenes = world.samples("object_style", "test", 1)
    before = measure(vlm, processor, people, scenes)
    snapshot = {n: p.detach().clone() for n, p in vlm.named_parameters()}
    rows, deltas, stacks = [], {}, []
    for target in args.targets:
        forget = forget_pairs(world, target, 64)
        retain = retain_pairs(world, exclude=[target], per_concept=4)
        config = SLUGConfig(
            concept=target, candidate_labels=world.identities, concept_kind="identity"
        )
        for criterion in args.criteria:
            out, seconds = quietly(
                unlearn_vlm,
                vlm,
                clip,
                clip_processor,
                forget,
                retain,
                config,
                vlm_processor=processor if criterion == "vlm" else None,
                options=VLMOptions(criterion=criterion, unlearn=UnlearnOptions(progress=False)),
            )
            row = {"target": target, "criterion": criterion, "seconds": seconds}
            row["converged"] = out.converged
            if out.converged:
                slug = SLUGModel(vlm)
                slug.add_adapter("target", out.delta)
                after = measure(slug, processor, people, scenes)
                identical = untouched(slug, snapshot)
                slug.unload()  # the next run starts from the VLM's own weights
                if criterion == "vlm":
                    deltas[target] = out.delta
                others = [p for p in before["per_person"] if p != target]
                row.update(
                    layer=out.result.chosen.label,
                    step=out.result.step,
                    target_named=after["per_person"][target],
                    others_relative=100
                    * sum(after["per_person"][p] for p in others)
                    / sum(before["per_person"][p] for p in others),
                    object=after["object"],
                    style=after["style"],
                    lm_and_projector_identical=identical,
                    data=out.result.data.describe() if out.result.data else None,
                )
            rows.append(row)
            print({k: v for k, v in row.items() if k != "data"}, flush=True)
            write_json(args.out, {"command": command_line(), "before": before, "rows": rows})
    if args.stack and len(deltas) >= 2:
        pair = dict(list(deltas.items())[:2])
        stacks.append(stacked(vlm, processor, pair, before, snapshot, (people, scenes)))
        print(stacks[-1], flush=True)
    write_json(
        args.out, {"command": command_line(), "before": before, "rows": rows, "stacks": stacks}
    )
    print(markdown(before, rows))
    if stacks:
        print(stack_markdown(stacks))


def stacked(vlm, processor, deltas: dict, before: dict, snapshot: dict, views: tuple) -> dict:
    """Deltas loaded together (`add_adapter` each, `set_adapters`, weight 1) on `views`
    (test people, test scenes)."""
    people, scenes = views
    slug = SLUGModel(vlm)
    names = []
    for i, delta in enumerate(deltas.values()):
        slug.add_adapter(f"t{i}", delta)
        names.append(f"t{i}")
    slug.set_adapters(names, [1.0] * len(names))
    after = measure(slug, processor, people, scenes)
    identical = untouched(slug, snapshot)
    slug.unload()
    others = [p for p in before["per_person"] if p not in deltas]
    return {
        "targets": list(deltas),
        "targets_named": [after["per_person"][t] for t in deltas],
        "others_relative": 100
        * sum(after["per_person"][p] for p in others)
        / sum(before["per_person"][p] for p in others),
        "object": after["object"],
        "style": after["style"],
        "lm_and_projector_identical": identical,
    }


def stack_markdown(stacks: list[dict]) -> str:
    body = [
        [
            " + ".join(s["targets"]),
            ", ".join(f"{v:.1f}" for v in s["targets_named"]),
            s["others_relative"],
            s["object"],
            s["style"],
            "yes" if s["lm_and_projector_identical"] else "no",
        ]
        for s in stacks
    ]
    header = ["stack (vlm criterion)", "named after", "others (% of before)", "objects", "styles"]
    return table([*header, "LM + projector identical"], body)


def markdown(before: dict, rows: list[dict]) -> str:
    body = [
        [
            r["target"],
            r["criterion"],
            f"`{r.get('layer')}` s={r.get('step', 0):.3g}" if r["converged"] else "none met",
            before["per_person"][r["target"]],
            r.get("target_named"),
            r.get("others_relative"),
            r.get("object"),
            r.get("style"),
            "yes" if r.get("lm_and_projector_identical") else "no",
            r["seconds"],
        ]
        for r in rows
    ]
    header = [
        "target",
        "criterion",
        "chosen",
        "named before",
        "named after",
        "others (% of before)",
        f"objects (before {before['object']:.1f})",
        f"styles (before {before['style']:.1f})",
        "LM + projector identical",
        "seconds",
    ]
    return table(header, body)


if __name__ == "__main__":
    main()
