"""End to end on the embedded text-to-image pipeline: does SLUG on the text encoder stop the
pipeline from drawing one identity while it keeps drawing the others?

The pipeline is `hf_slug/demo/embedded_t2i` (a trained tiny `StableDiffusionPipeline` whose text
encoder is the embedded CLIP's text tower). A judge — the *unedited* embedded CLIP, its image
tower against its original text tower, zero-shot over all 26 identity names with "{name}." —
says which identity each generated image shows. For every identity, N fixed seeds × held-out
phrasings (templates never used in training) are generated before unlearning; then, for each
target and criterion (`--criterion`: "clip", SLUG's held-out CLIP criterion, the default —
and "generation", opt-in, the search judged on the pipeline's own generations of validation
phrasings and seeds disjoint from the ones measured here), `unlearn_pipeline` (forget = 32
training views of the target with their captions, retain = the demo's retain pairs without the
target; candidate labels = the 26 names) gives a delta that `SLUGModel` applies to the pipeline,
and the same prompts and seeds are generated and judged again. Unless `--no-stack`, the first
criterion's deltas of the first two targets are applied together. Before/after image grids go
to `benchmarks/generative_pipeline/`.

    python benchmarks/generative_pipeline.py --no-stack      # the full run (2 criteria)
    python benchmarks/generative_pipeline.py --quick --out /tmp/gp   # smoke run

Targets (issue 17): mean generation accuracy before ≥ 50 % (chance 1/26 ≈ 4 %); after one
identity is unlearned, its generations recognised ≤ 10 %, the others ≥ 90 % of their before.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.generative_pipeline_report import write_markdown  # noqa: E402
from hf_slug import (  # noqa: E402
    ForgetGeneration,
    PipelineOptions,
    SLUGConfig,
    SLUGModel,
    UnlearnOptions,
    unlearn_pipeline,
)
from hf_slug.cache import DISABLE_VARIABLE  # noqa: E402
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.run import load_embedded  # noqa: E402
from hf_slug.demo.t2i import (  # noqa: E402
    EMBEDDED_T2I,
    GENERATION_KWARGS,
    IdentityJudge,
    generate,
    load_embedded_pipeline,
)
from hf_slug.demo.world import World  # noqa: E402
from hf_slug.hosts.denoiser_criterion import DenoiserCheck  # noqa: E402
from hf_slug.hosts.diffusion_criterion import GenerationCheck  # noqa: E402
from hf_slug.names import default_adapter_name  # noqa: E402
from hf_slug.phrasings import criterion_templates  # noqa: E402
from hf_slug.plots import image_grid  # noqa: E402

# held-out phrasings: the world's eval template and audit templates, none used in training
PHRASINGS = ("{}.", "a headshot of {}.", "here we see {}.", "a snapshot of {}.")
TARGETS = ("Eileen Collins", "Clara Alderwick", "Ronan Kestrelle")
CRITERIA = ("generation", "clip", "denoiser")
# the generation criterion's validation draws: the library's identity phrasings (none is a test
# phrasing) at seed 1000 (the library's default; test seeds are 0-3), 10 DDIM steps
VALIDATION_STEPS = 10

os.environ.setdefault(DISABLE_VARIABLE, "1")  # every timed call is a first call


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def versions() -> dict[str, str]:
    """The versions a run's numbers are from (also `generative_pipeline_concepts.py`'s)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "transformers": __import__("transformers").__version__,
    }


def measure(model: Any, judge: IdentityJudge, names, phrasings, seeds, **kwargs) -> dict:
    """Per identity: the share of its generations the judge names as it; and the images."""
    prompts = {t.format(n): n for n in names for t in phrasings}
    start = time.time()
    images = generate(model, list(prompts), seeds, **kwargs)
    seconds = time.time() - start
    said = judge(list(images.values()))
    hits: dict[str, list[bool]] = {n: [] for n in names}
    confusions: dict[str, dict[str, int]] = {n: {} for n in names}
    for (prompt, _), guess in zip(images, said):
        name = prompts[prompt]
        hits[name].append(guess == name)
        confusions[name][guess] = confusions[name].get(guess, 0) + 1
    per = {n: float(np.mean(h)) for n, h in hits.items()}
    return {
        "per_identity": per,
        "mean": float(np.mean(list(per.values()))),
        "said": {n: dict(sorted(c.items(), key=lambda kv: -kv[1])) for n, c in confusions.items()},
        "images": images,
        "seconds": seconds,
        "seconds_per_image": seconds / max(1, len(images)),
    }


def summary(before: dict, after: dict, targets: list[str], names: list[str]) -> dict:
    others = [n for n in names if n not in targets]
    b_others = float(np.mean([before["per_identity"][n] for n in others]))
    a_others = float(np.mean([after["per_identity"][n] for n in others]))
    return {
        "target_before": {t: before["per_identity"][t] for t in targets},
        "target_after": {t: after["per_identity"][t] for t in targets},
        "others_before": b_others,
        "others_after": a_others,
        "others_relative": a_others / b_others if b_others else float("nan"),
        "target_said_after": {t: after["said"][t] for t in targets},
    }


@torch.no_grad()
def conditioning_shift(slug: Any, pipe: Any, prompts: dict[str, list[str]]) -> dict[str, dict]:
    """How much the delta moves what the UNet reads: per group of prompts, the mean relative
    L2 change of the text encoder's last hidden state (all 77 positions, as the pipeline passes
    them) and of the pooled EOS state (what CLIP's zero-shot criterion reads), active vs off."""
    out = {}
    for group, texts in prompts.items():
        ids = pipe.tokenizer(
            texts,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        after = pipe.text_encoder(ids)
        with slug.disable_adapters():
            before = pipe.text_encoder(ids)
        seq = (after[0] - before[0]).flatten(1).norm(dim=1) / before[0].flatten(1).norm(dim=1)
        pooled = (after[1] - before[1]).norm(dim=1) / before[1].norm(dim=1)
        out[group] = {"sequence": float(seq.mean()), "pooled": float(pooled.mean())}
    return out


def save_grid(before: dict, after: dict, rows: list[str], phrasing: str, seeds, path: Path):
    images_b, images_a = before["images"], after["images"]
    grid = [
        [images_b[(phrasing.format(n), s)] for s in seeds]
        + [images_a[(phrasing.format(n), s)] for s in seeds]
        for n in rows
    ]
    cols = [f"before s{s}" for s in seeds] + [f"after s{s}" for s in seeds]
    return image_grid(grid, path, row_labels=rows, col_labels=cols)


@dataclass
class Run:
    """What every unlearning of this benchmark shares."""

    slug: Any
    pipe: Any
    clip: Any
    processor: Any
    judge: IdentityJudge
    world: World
    measured: list[str]
    phrasings: list[str]
    seeds: list[int]


def denoiser_check(args: argparse.Namespace) -> DenoiserCheck:
    """The denoiser criterion's settings given on the command line."""
    return DenoiserCheck(
        timesteps=tuple(args.denoiser_timesteps),
        noises=args.denoiser_noises,
        margin=args.denoiser_margin,
    )


def adapter_name(target: str, criterion: str) -> str:
    return f"{default_adapter_name(target)}_{criterion}"


def load_models(pipeline: Path = EMBEDDED_T2I) -> tuple[Any, tuple[Any, Any], tuple[Any, Any]]:
    """The pipeline, the CLIP (model, processor) SLUG computes gradients on, and a separate,
    never-edited CLIP copy for the judge."""
    pipe = load_embedded_pipeline(pipeline)
    return pipe, load_embedded(), load_embedded()


def unlearn_text_encoder(
    pipe: Any,
    clips: tuple[Any, Any],
    target: str,
    retain: list,
    forget: Any,
    labels: list[str],
    kind: str = "concept",
    **options: Any,
) -> tuple[Any, float]:
    """`unlearn_pipeline` on the text tower, `labels` the candidates, warnings and progress bar
    off: (its output, seconds). `options`: more `PipelineOptions` fields (criterion, ...)."""
    clip, processor = clips
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = unlearn_pipeline(
            pipe,
            clip,
            processor,
            target,
            retain,
            forget=forget,
            config=SLUGConfig(target, towers=("text",), candidate_labels=labels, concept_kind=kind),
            options=PipelineOptions(
                concept_kind=kind, unlearn=UnlearnOptions(progress=False), **options
            ),
        )
    return out, time.time() - start


def unlearn_one(run: Run, target, criterion, check, args, kwargs, before, grids):
    """Unlearn `target` with `criterion`, apply the delta, measure: (record, after or None)."""
    slug, pipe, measured, phrasings, seeds = (
        run.slug,
        run.pipe,
        run.measured,
        run.phrasings,
        run.seeds,
    )
    forget = forget_pairs(run.world, target, 32) if args.forget == "views" else None
    retain = retain_pairs(run.world, exclude=[target])
    if forget is None:
        forget = ForgetGeneration(32, generation_kwargs=kwargs)
    with slug.disable_adapters():  # unlearn the original text encoder
        out, unlearn_seconds = unlearn_text_encoder(
            pipe,
            (run.clip, run.processor),
            target,
            retain,
            forget,
            run.judge.names,
            kind=args.kind,
            criterion=criterion,
            generation=check,
            denoiser=denoiser_check(args),
        )
    result = out.result
    record: dict[str, Any] = {
        "criterion": criterion,
        "converged": out.converged,
        "unlearn_seconds": round(unlearn_seconds, 1),
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
        "forget": args.forget,
        "forget_pairs": len(out.forget),
        "retain_pairs": len(retain),
        "layer": result.chosen.label if result.chosen is not None else None,
        "step": result.chosen.step if result.chosen is not None else None,
        "searched": [
            {
                "layer": s.label,
                "step": s.step,
                "status": s.status,
                "trials": len(s.trials),
                **(s.metrics or {}),
            }
            for s in result.searches
        ],  # fmt: skip
        "clip_metrics_before": {k: float(v) for k, v in result.before.items()},
        "clip_metrics_after": {k: float(v) for k, v in result.after.items()},
        "report": result.report(),
    }
    log(f"{target} [{criterion}]: converged={out.converged} in {unlearn_seconds:.0f}s, "
        f"{record['layer']} s={record['step']}")  # fmt: skip
    if out.delta is None:
        return record, None
    name = adapter_name(target, criterion)
    slug.add_adapter(name, out.delta)
    slug.set_adapters([name])
    after = measure(slug, run.judge, measured, phrasings, seeds, **kwargs)
    record.update(summary(before, after, [target], measured))
    record["delta_tensors"] = sorted(out.delta.config.targets)
    others = [n for n in measured if n != target]
    record["conditioning_shift"] = conditioning_shift(
        slug,
        pipe,
        {
            "target": [t.format(target) for t in phrasings],
            "others": [t.format(n) for n in others for t in phrasings],
        },
    )
    rows = list(dict.fromkeys([target, *others[:4]]))
    grid = save_grid(before, after, rows, phrasings[0], seeds, grids / f"{name}.png")
    record["grid"] = str(grid.relative_to(REPO)) if grid.is_relative_to(REPO) else str(grid)
    record["weighted"] = {}
    for weight in args.weights:
        slug.set_adapters([name], [weight])
        weighted = measure(slug, run.judge, measured, phrasings, seeds, **kwargs)
        record["weighted"][str(weight)] = summary(before, weighted, [target], measured)
        log(f"{target} at weight {weight}: "
            f"{record['weighted'][str(weight)]['target_after'][target]:.3f}, others "
            f"{record['weighted'][str(weight)]['others_relative']:.1%} of before")  # fmt: skip
    slug.set_adapters([name], [1.0])
    log(f"{target} [{criterion}]: target {record['target_before'][target]:.3f} -> "
        f"{record['target_after'][target]:.3f}; others {record['others_before']:.3f} -> "
        f"{record['others_after']:.3f} ({record['others_relative']:.1%} of before)")  # fmt: skip
    return record, after


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--pipeline", type=Path, default=EMBEDDED_T2I)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--phrasings", type=int, default=2)
    parser.add_argument("--steps", type=int, default=GENERATION_KWARGS["num_inference_steps"])
    parser.add_argument("--guidance", type=float, default=GENERATION_KWARGS["guidance_scale"])
    parser.add_argument(
        "--forget",
        choices=("views", "generated"),
        default="views",
        help="forget set: 32 training views of the target with their captions, or the paper's "
        "recipe for SD: 32 images the pipeline generates from the target's name",
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="*",
        default=[],
        help="also measure each delta at these adapter weights (e.g. 2: twice SLUG's step)",
    )
    parser.add_argument(
        "--criterion",
        nargs="+",
        choices=CRITERIA,
        default=list(CRITERIA),
        help="unlearn_pipeline's search criterion(s), each run per target (the first one's "
        "deltas are stacked)",
    )
    parser.add_argument("--no-stack", action="store_true", help="skip the 2-delta stack")
    parser.add_argument(
        "--kind",
        default="identity",
        help="SLUGConfig/PipelineOptions concept_kind: the criteria's phrasings and name parts",
    )
    shipped = DenoiserCheck()
    for flag, kind, nargs, default, meaning in (
        ("--denoiser-margin", float, None, shipped.margin, "cosine margin"),
        ("--denoiser-timesteps", float, "+", list(shipped.timesteps), "timesteps (fractions)"),
        ("--denoiser-noises", int, None, shipped.noises, "noise latents per timestep"),
    ):
        help_text = f"the denoiser criterion's {meaning} (DenoiserCheck)"
        parser.add_argument(flag, type=kind, nargs=nargs, default=default, help=help_text)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 identities, 1 target")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="LABEL=PATH",
        help="no run: add other runs' JSON (e.g. --forget generated --out /tmp/x) as variants "
        "to OUT/generative_pipeline.json and rewrite the markdown",
    )
    args = parser.parse_args(argv)
    if args.merge is not None:
        merge(args.out, args.merge)
        return
    torch.set_num_threads(args.threads)
    world = World(seed=0)
    names = list(world.identities)
    measured = list(names)
    if args.quick:
        args.seeds, args.phrasings, args.steps, args.no_stack = 1, 1, 6, True
        args.targets = args.targets[:1]
        measured = list(dict.fromkeys([*args.targets, *names[:5]]))
    phrasings = list(PHRASINGS[: args.phrasings])
    seeds = list(range(args.seeds))
    kwargs = {"num_inference_steps": args.steps, "guidance_scale": args.guidance}
    grids = args.out / "generative_pipeline"
    grids.mkdir(parents=True, exist_ok=True)
    began = time.time()

    pipe, (clip, processor), (judge_clip, judge_processor) = load_models(args.pipeline)
    judge = IdentityJudge(judge_clip, judge_processor, names)
    views = world.samples("identity", "test", 2)
    judge_real = float(
        np.mean([g == s.label for g, s in zip(judge([v.image for v in views]), views)])
    )
    log(f"judge on real test views: {judge_real:.3f}")

    before = measure(pipe, judge, measured, phrasings, seeds, **kwargs)
    log(f"before: mean generation accuracy {before['mean']:.3f} "
        f"({before['seconds_per_image']:.2f} s/image)")  # fmt: skip
    slug = SLUGModel(pipe)
    check = GenerationCheck(
        templates=tuple(criterion_templates("identity")),
        generation_kwargs={
            "num_inference_steps": VALIDATION_STEPS,
            "guidance_scale": args.guidance,
        },
    )
    test_prompts = {t.format(n) for n in measured for t in phrasings}
    val_jobs = [j for n in measured for j in check.target_jobs(n)]
    val_jobs += check.other_jobs(measured)
    assert not test_prompts & {p for _, p, _ in val_jobs} and not set(seeds) & {
        s for _, _, s in val_jobs
    }, "the generation criterion's validation prompts/seeds overlap the measured ones"
    by_criterion: dict[str, dict[str, Any]] = {c: {} for c in args.criterion}
    afters: dict[str, dict] = {}
    for target in args.targets:
        for criterion in args.criterion:
            record, after = unlearn_one(
                Run(slug, pipe, clip, processor, judge, world, measured, phrasings, seeds),
                target,
                criterion,
                check,
                args,
                kwargs,
                before,
                grids,
            )
            by_criterion[criterion][target] = record
            if after is not None and criterion == args.criterion[0]:
                afters[target] = after
    runs = by_criterion[args.criterion[0]]

    stack = None
    stacked = [t for t in args.targets if t in afters][:2]
    if not args.no_stack and len(stacked) == 2:
        slug.set_adapters([adapter_name(t, args.criterion[0]) for t in stacked])
        after = measure(slug, judge, measured, phrasings, seeds, **kwargs)
        stack = {"targets": stacked, **summary(before, after, stacked, measured)}
        rows = list(dict.fromkeys([*stacked, *[n for n in measured if n not in stacked][:3]]))
        save_grid(before, after, rows, phrasings[0], seeds, grids / "stack.png")
        log(f"stack {stacked}: targets {stack['target_after']}; others relative "
            f"{stack['others_relative']:.1%}")  # fmt: skip

    rows = measured[:8]
    image_grid(
        [[before["images"][(phrasings[0].format(n), s)] for s in seeds] for n in rows],
        grids / "before.png",
        row_labels=rows,
        col_labels=[f"seed {s}" for s in seeds],
    )
    results = {
        "command": "python benchmarks/generative_pipeline.py " + " ".join(argv or sys.argv[1:]),
        "pipeline": str(args.pipeline.relative_to(REPO))
        if args.pipeline.resolve().is_relative_to(REPO)
        else str(args.pipeline),
        "judge": "unedited embedded CLIP, zero-shot over 26 identity names, '{name}.'",
        "judge_on_real_test_views": judge_real,
        "identities": measured,
        "phrasings": phrasings,
        "seeds": seeds,
        "generation": kwargs,
        "chance": 1 / len(names),
        "before": {
            "mean": before["mean"],
            "per_identity": before["per_identity"],
            "seconds_per_image": before["seconds_per_image"],
        },
        "criteria": args.criterion,
        "denoiser_check": {
            **{
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in vars(denoiser_check(args)).items()
            },
            "templates": DenoiserCheck().phrasings(args.kind),
            "kind": args.kind,
            "name_parts": args.kind == "identity",  # SLUGConfig.name_parts, True by default
        },
        "validation": {
            "templates": list(check.templates),
            "target_images": check.target_images,
            "seed": check.seed,
            "others_per_person": check.others_per_person,
            "margin": check.margin,
            "generation": dict(check.generation_kwargs),
        },
        "unlearned": runs,
        "by_criterion": by_criterion,
        "stack": stack,
        "minutes": round((time.time() - began) / 60, 1),
        "versions": versions(),
    }
    old = args.out / "generative_pipeline.json"
    if old.is_file() and "variants" in json.loads(old.read_text()):  # earlier runs' variants
        results["variants"] = json.loads(old.read_text())["variants"]
    old.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(args.out / "generative_pipeline.md", results)
    log(f"done in {results['minutes']} min")


def merge(out: Path, items: list[str]) -> None:
    main_path = out / "generative_pipeline.json"
    record = json.loads(main_path.read_text())
    for item in items:
        label, _, path = item.partition("=")
        other = json.loads(Path(path).read_text())
        record.setdefault("variants", {})[label] = {
            "command": other["command"],
            "minutes": other["minutes"],
            "before_mean": other["before"]["mean"],
            "unlearned": other["unlearned"],
            "stack": other.get("stack"),
        }
    main_path.write_text(json.dumps(record, indent=2) + "\n")
    write_markdown(out / "generative_pipeline.md", record)


if __name__ == "__main__":
    main()
