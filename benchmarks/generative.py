"""Generative models end to end: SLUG on the embedded VLM (a trained LLaVA), measured by what it says.

VLM section. The embedded VLM (`hf_slug/demo/embedded_vlm`, a `LlavaForConditionalGeneration`
whose vision tower is the embedded CLIP's) is asked held-out questions ("Who is in this
image?", "Who is the person in this photo?", "Name the person shown in the image.", cycled over
the images) about held-out **test** views of the world's 26 people, and "What is shown in this
image?" / "In which style is this picture?"-style questions about test views of objects in
styles; answers are greedy and an answer counts as right when it contains the label.

For each target identity:

* `before`: the VLM's name accuracy on every identity's test views, objects and styles.
* `default`: `unlearn_vlm(vlm, clip, clip_processor, forget, retain, SLUGConfig(concept=target,
  candidate_labels=world.identities))` — the public call with its default search criterion
  (CLIP zero-shot on the pooled class token, on a held-out part of the forget/retain sets);
  forget = 32 train views of the target, retain = train views of everything else
  (`hf_slug.demo.protocol.forget_pairs` / `retain_pairs`). Then, with the delta applied through
  `SLUGModel(vlm)`: how often the VLM still names the target on its test views, how often it
  names the others (and relative to before), objects and styles, and whether the language model
  and projector are bit-identical (every tensor outside the vision tower compared with
  `torch.equal`, with the delta merged into the weights).
* `vlm_criterion`: the same call with `evaluator=` a VLM-level criterion on **val** views (the
  search's trials are scored by asking the VLM, its tower replaced by the trial's CLIP tower:
  the target's named rate must reach 0, the utility is the mean of the others' named rate,
  objects and styles), measured the same way on test views.
* `vlm_gradients`: as `vlm_criterion`, with `forget_gradients=` / `retain_gradients=` the
  gradients of the VLM's own answer loss (NLL of the right answer, training phrasings) on the
  same training views, instead of CLIP's losses on the pooled embedding.
* `…_all_layers`: `layer=` every usable tensor (blocks 0–2), so the search tries them all
  instead of only the Pareto front of the gradient scores.
* (`…_orthogonal`, on request: `direction="retain_orthogonal"`.)

Then the first two targets' deltas are stacked (`add_adapter` twice, `set_adapters([a, b])`).

    python benchmarks/generative.py --out benchmarks/
    python benchmarks/generative.py --quick --out /tmp/generative-smoke   # 2 targets, ~8 min
    python benchmarks/generative.py --markdown benchmarks/generative.json   # the tables again
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import command_line, model_sha256, write_json  # noqa: E402
from generative_probe import QUESTIONS, Probe, VLMCriterion, others_rate  # noqa: E402
from generative_report import markdown  # noqa: E402

from hf_slug import SLUGConfig, SLUGModel, UnlearnOptions, VLMOptions  # noqa: E402
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.run import EMBEDDED, load_embedded  # noqa: E402
from hf_slug.demo.vlm import EMBEDDED_VLM, load_embedded_vlm  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402
from hf_slug.hosts.vlm import (  # noqa: E402
    unlearn_vlm,
    usable_vision_blocks,
    vision_tower_of,
)
from hf_slug.towers import candidate_names  # noqa: E402

TARGETS = ("Eileen Collins", "Marcus Brennholt", "Lucia Dunmore")
CRITERIA = (  # how each target's delta is searched (see the module docstring)
    "default",
    "vlm_criterion",
    "vlm_criterion_all_layers",
    "vlm_gradients",
    "vlm_gradients_all_layers",
)
MORE_CRITERIA = ("vlm_criterion_orthogonal", "vlm_gradients_orthogonal")


TRAIN_QUESTIONS = {  # training phrasings, for the VLM-loss gradients (never used for scoring)
    "identity": ("Who is in this picture?", "Who is this?", "Who is shown in the photo?"),
    "object": ("What is shown?", "What object is this?", "What is in the picture?"),
    "style": ("In which style?", "What style is this?", "In which style is this drawn?"),
}


def vlm_loss_gradients(vlm, processor, clip, examples, batch: int = 32) -> dict[str, torch.Tensor]:
    """Mean gradient of the VLM's answer loss (NLL of the right answer and its end token) over
    `examples` — (image, task, answer) on training views, asked training phrasings — for every
    vision-tower weight, keyed by the CLIPModel's names (what `unlearn_vlm`'s
    `forget_gradients=` / `retain_gradients=` take). Ascending it makes the VLM stop giving
    those answers: the same convention as SLUG's forget loss."""
    from hf_slug.demo.vlm import prompt as chat_prompt
    from hf_slug.towers import tower_of

    model = copy.deepcopy(vlm).eval()
    tower = vision_tower_of(model).module
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {n: p for n, p in tower.named_parameters() if p.dim() == 2}
    for p in weights.values():
        p.requires_grad_(True)
    tokenizer = processor.tokenizer
    total = 0
    for start in range(0, len(examples), batch):
        part = examples[start : start + batch]
        rows, labels = [], []
        for k, (image, task, answer) in enumerate(part):
            question = TRAIN_QUESTIONS[task][(start + k) % len(TRAIN_QUESTIONS[task])]
            ids = processor(
                text=chat_prompt(processor, question), images=image, return_tensors="pt"
            )["input_ids"][0]
            target = tokenizer(answer, add_special_tokens=False)["input_ids"]
            target = torch.tensor([*target, tokenizer.eos_token_id])
            rows.append(torch.cat([ids, target]))
            labels.append(torch.cat([torch.full_like(ids, -100), target]))
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), tokenizer.pad_token_id)
        label_ids = torch.full((len(rows), length), -100)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, labels)):
            input_ids[i, : len(r)], label_ids[i, : len(r)], mask[i, : len(r)] = r, lab, 1
        pixels = processor.image_processor([e[0] for e in part], return_tensors="pt")
        loss = model(
            input_ids=input_ids,
            attention_mask=mask,
            labels=label_ids,
            pixel_values=pixels["pixel_values"],
        ).loss
        (loss * len(part)).backward()
        total += len(part)
    prefix = tower_of(clip, "vision").path
    return {  # blocks above the feature layer get no gradient: they are no candidates either
        f"{prefix}.{n}": p.grad.detach() / total for n, p in weights.items() if p.grad is not None
    }


def vlm_examples(world: World, target: str, n_forget: int):
    """(forget, retain) examples for the VLM loss, from the same training views as
    `forget_pairs` / `retain_pairs` (digits left out: the VLM has no digit task)."""
    forget = [
        (s.image, "identity", s.label)
        for s in world.samples("identity", "train", n_forget, [target])
    ]
    others = [n for n in world.identities if n != target]
    retain = [(s.image, "identity", s.label) for s in world.samples("identity", "train", 4, others)]
    for k, s in enumerate(world.samples("object_style", "train", 1)):
        retain.append((s.image, "object", s.label) if k % 2 else (s.image, "style", s.style))
    return forget, retain


def outside_tower(vlm) -> dict[str, torch.Tensor]:
    prefix = vision_tower_of(vlm).path + "."
    return {k: v.detach().clone() for k, v in vlm.state_dict().items() if not k.startswith(prefix)}


def bit_identity(vlm, slug: SLUGModel, snapshot: dict[str, torch.Tensor]) -> dict[str, Any]:
    """With the active deltas merged: are all tensors outside the tower unchanged, bit for bit?
    Which tower tensors changed?"""
    tower_prefix = vision_tower_of(vlm).path + "."
    base_tower = {
        k: v.detach().clone() for k, v in vlm.state_dict().items() if k.startswith(tower_prefix)
    }
    slug.merge_adapter()
    try:
        state = vlm.state_dict()
        differ = [k for k, v in snapshot.items() if not torch.equal(state[k], v)]
        changed = [k for k, v in base_tower.items() if not torch.equal(state[k], v)]
    finally:
        slug.unmerge_adapter()
    return {
        "language_model_and_projector_identical": not differ,
        "tensors_compared": len(snapshot),
        "differing": differ,
        "tower_tensors_changed": changed,
    }


@torch.no_grad()
def clip_view(clip, clip_processor, images, names: list[str]) -> dict[str, torch.Tensor]:
    """CLIP's zero-shot choice among `names` ("{name}." prompts, the pooled class token), its
    image embeddings, and the patch tokens the VLM reads (hidden state -2, class token dropped)."""
    text = clip_processor(text=[f"{n}." for n in names], return_tensors="pt", padding=True)
    pixels = clip_processor(images=images, return_tensors="pt")["pixel_values"]
    out = clip(pixel_values=pixels, **text)
    hidden = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    return {
        "choice": out.logits_per_image.argmax(-1),
        "pooled": out.image_embeds,
        "patches": hidden[-2][:, 1:],
    }


def mechanism(clip, clip_processor, result, world: World, probe: Probe, target: str) -> dict:
    """Why a delta does or does not reach the VLM, on the target's and the others' test views:
    CLIP's zero-shot name accuracy (what the default criterion reads) before and after, and how
    far the edit moves the pooled embedding vs the patch tokens the VLM reads (1 − cosine)."""
    names = world.identities
    edited_clip = result.apply(copy.deepcopy(clip))
    out = {}
    for group, samples in (
        ("target", [s for s in probe.people if s.label == target]),
        ("others", [s for s in probe.people if s.label != target][::8]),
    ):
        images = [s.image for s in samples]
        labels = torch.tensor([names.index(s.label) for s in samples])
        a = clip_view(clip, clip_processor, images, names)
        b = clip_view(edited_clip, clip_processor, images, names)
        cos = torch.nn.functional.cosine_similarity
        out[group] = {
            "clip_zero_shot_before": float((a["choice"] == labels).float().mean()),
            "clip_zero_shot_after": float((b["choice"] == labels).float().mean()),
            "pooled_shift": float((1 - cos(a["pooled"], b["pooled"], dim=-1)).mean()),
            "patch_shift": float((1 - cos(a["patches"], b["patches"], dim=-1)).mean()),
            "images": len(samples),
        }
    return out


def summarize(before: dict, after: dict, targets: list[str]) -> dict[str, Any]:
    others_before = others_rate(before["per_identity"], targets)
    others_after = others_rate(after["per_identity"], targets)
    return {
        "target_named": {t: after["per_identity"][t] for t in targets},
        "target_named_before": {t: before["per_identity"][t] for t in targets},
        "others_named": others_after,
        "others_named_before": others_before,
        "others_relative": others_after / others_before if others_before else float("nan"),
        "object": after["object"],
        "style": after["style"],
        "object_before": before["object"],
        "style_before": before["style"],
        "worst_other": min(
            ((k, v) for k, v in after["per_identity"].items() if k not in targets),
            key=lambda kv: kv[1],
        ),
        "example_answers": [a for s, a in zip_people(after) if s in targets][:4],
    }


def zip_people(result: dict) -> list[tuple[str, str]]:
    return list(zip(result["labels"], result["answers"]["identity"]))


def run_unlearn(
    vlm,
    clip,
    clip_processor,
    world,
    target,
    args,
    evaluator=None,
    on_top_of=(),
    gradients=None,
    **config,
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = unlearn_vlm(
            vlm,
            clip,
            clip_processor,
            forget_pairs(world, target, args.forget),
            retain_pairs(world, exclude=[target], per_concept=4),
            SLUGConfig(concept=target, candidate_labels=world.identities, **config),
            options=VLMOptions(
                evaluator=evaluator,
                unlearn=UnlearnOptions(
                    forget_gradients=(gradients or {}).get("forget"),
                    retain_gradients=(gradients or {}).get("retain"),
                    on_top_of=on_top_of,
                    progress=False,
                ),
            ),
        )
        seconds = time.perf_counter() - t0
    r = out.result
    info = {
        "converged": out.converged,
        "layer": list(r.chosen_names),
        "step": r.step,
        "usable_blocks": list(out.usable_blocks),
        "search_before": {k: v for k, v in r.before.items() if isinstance(v, float)},
        "search_after": {k: v for k, v in r.after.items() if isinstance(v, float)},
        "trials": len(r.trials),
        "evaluation_data": str(r.data) if r.data is not None else None,
        "seconds": round(seconds, 1),
    }
    return out, info


def measure(vlm, probe: Probe, slug: SLUGModel | None = None) -> dict:
    result = probe(slug if slug is not None else vlm)
    result["labels"] = [s.label for s in probe.people]
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--vlm", type=Path, default=EMBEDDED_VLM)
    parser.add_argument("--clip", type=Path, default=EMBEDDED)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--test-views", type=int, default=40, help="test views per identity")
    parser.add_argument("--scene-views", type=int, default=3, help="test views per object×style")
    parser.add_argument("--forget", type=int, default=32, help="train views of the target")
    parser.add_argument(
        "--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA + MORE_CRITERIA
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", type=Path, help="print the tables of a generative.json")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return {}
    if args.quick:
        args.targets, args.test_views, args.scene_views = args.targets[:2], 4, 1
    torch.manual_seed(0)
    torch.set_num_threads(1)
    start = time.perf_counter()
    world = World(seed=0)
    vlm, processor = load_embedded_vlm(args.vlm)
    clip, clip_processor = load_embedded(args.clip)
    snapshot = outside_tower(vlm)
    probe = Probe(world, processor, "test", args.test_views, args.scene_views)
    before = measure(vlm, probe)
    print(
        f"before: identity {before['identity']:.4f} object {before['object']:.4f} "
        f"style {before['style']:.4f}",
        flush=True,
    )
    report: dict[str, Any] = {
        "command": command_line(),
        "vlm": str(args.vlm),
        "vlm_sha256": model_sha256(str(args.vlm)),
        "clip_sha256": model_sha256(str(args.clip)),
        "split": "test (held-out views, held-out phrasings)",
        "test_views": {
            "per_identity": args.test_views,
            "per_object_style": args.scene_views,
            "identity_images": len(probe.people),
            "scene_images": len(probe.scenes),
        },
        "questions": QUESTIONS,
        "before": {k: before[k] for k in ("identity", "per_identity", "object", "style")},
        "targets": {},
        "stack": {},
    }
    deltas: dict[str, dict[str, Any]] = {c: {} for c in args.criteria}
    for target in args.targets:
        report["targets"][target] = {}
        for criterion in args.criteria:
            evaluator, gradients, config = None, None, {}
            if criterion != "default":
                evaluator = VLMCriterion(
                    vlm,
                    processor,
                    world,
                    [target],
                    id_views=2 if args.quick else 4,
                    target_views=8 if args.quick else 16,
                    scene_views=1,
                )
            if criterion.startswith("vlm_gradients"):
                forget, retain = vlm_examples(world, target, args.forget)
                gradients = {
                    "forget": vlm_loss_gradients(vlm, processor, clip, forget),
                    "retain": vlm_loss_gradients(vlm, processor, clip, retain),
                }
            if criterion.endswith("_orthogonal"):
                config["direction"] = "retain_orthogonal"
            if criterion.endswith("_all_layers"):  # every usable tensor, not only the front
                config["layer"] = candidate_names(
                    clip, ("vision",), max_blocks={"vision": len(usable_vision_blocks(vlm))}
                )
            out, info = run_unlearn(
                vlm,
                clip,
                clip_processor,
                world,
                target,
                args,
                evaluator,
                gradients=gradients,
                **config,
            )
            entry = {"search": info}
            if out.converged:
                deltas[criterion][target] = out.delta
                slug = SLUGModel(vlm)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    slug.add_adapter("target", out.delta)
                after = measure(vlm, probe, slug)
                entry["after"] = summarize(before, after, [target])
                entry["identity"] = bit_identity(vlm, slug, snapshot)
                entry["mechanism"] = mechanism(
                    clip, clip_processor, out.result, world, probe, target
                )
                slug.unload()
            report["targets"][target][criterion] = entry
            print(
                f"{target} / {criterion}: "
                + json.dumps(
                    {
                        k: entry.get("after", {}).get(k)
                        for k in ("target_named", "others_relative", "object", "style")
                    }
                    | {"layer": info["layer"], "step": info["step"]}
                ),
                flush=True,
            )
    for criterion in args.criteria:
        pair = [t for t in args.targets if t in deltas[criterion]][:2]
        if len(pair) < 2:
            report["stack"][criterion] = {"skipped": f"fewer than 2 converged deltas: {pair}"}
            continue
        slug = SLUGModel(vlm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, t in enumerate(pair):
                slug.add_adapter(f"d{i}", deltas[criterion][t])
            slug.set_adapters(["d0", "d1"])
        after = measure(vlm, probe, slug)
        report["stack"][criterion] = {
            "targets": pair,
            "layers": {t: deltas[criterion][t].names for t in pair},
            "after": summarize(before, after, pair),
            "identity": bit_identity(vlm, slug, snapshot),
        }
        slug.unload()
    final = outside_tower(vlm)
    report["vlm_unchanged_at_end"] = all(torch.equal(final[k], v) for k, v in snapshot.items())
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "generative.json", report)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
