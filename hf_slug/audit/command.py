"""`hf-slug audit`: probe delta(s) for a way back to the concept; the report lands beside them.

    hf-slug audit slug_demo/deltas/eileen_collins --quick        # the embedded demo's delta
    hf-slug audit deltas/ada --model M --images held_out/ --labels-file names.txt
    hf-slug audit deltas/ada_vlm --vlm --quick      # question paraphrases (embedded VLM)
    hf-slug audit deltas/ada_sd --pipeline --quick  # generation phrasings (embedded pipeline)

On the embedded model, a concept of its world needs no `--images`: the world's held-out test views
(24) are used, and for a person a never-seen person is the reference. `--vlm` and `--pipeline`
audit a VLM's or a pipeline's delta (`hf_slug.audit.hosts`); `--model` is then the LLaVA or
diffusers folder, and a pipeline's generations are named by `--judge` (an unedited CLIPModel;
default: the embedded CLIP).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..cli_checks import existing_folder, existing_source, labels_from, output_folder
from ..errors import UsageError

EMBEDDED_VIEWS = 24


def add_parser(sub: Any) -> None:
    """Register `audit` on the `hf-slug` subparsers."""
    p = sub.add_parser("audit", help="try to bring an unlearned concept back (report + card)")
    p.add_argument("delta", nargs="+", help="delta folder(s) or repo id(s); several are stacked")
    p.add_argument("--model", help="the base CLIP folder or repo id (default: the embedded one)")
    p.add_argument("--revision", help="model revision on the Hub")
    p.add_argument("--concept", help="the concept (default: the first delta's)")
    p.add_argument("--kind", choices=["identity", "object", "style", "concept"])
    p.add_argument("--images", help="folder of held-out views of the concept (captions unused)")
    p.add_argument("--reference", help="folder of views of a concept the model never learned")
    p.add_argument("--labels", help="comma-separated candidate names (the concept among them)")
    p.add_argument("--labels-file", help="file with one candidate name per line")
    p.add_argument("--quick", action="store_true", help="the quick budget (about a minute)")
    host = p.add_mutually_exclusive_group()
    host.add_argument("--vlm", action="store_true", help="the delta edits a VLM: ask paraphrases")
    host.add_argument(
        "--pipeline", action="store_true", help="the delta edits a pipeline: generate and judge"
    )
    p.add_argument("--judge", help="--pipeline: the unedited CLIP naming generations")
    p.add_argument("--out", help="folder for slug_audit.json/.md/.png (default: the delta folder)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `audit` command: cheap checks first, then the probes."""
    from ..delta import ConceptDelta
    from ..hub import resolve_delta_folder
    from . import AuditTarget, audit, audit_pipeline, audit_vlm

    sources = [existing_source(d, "delta") for d in args.delta]
    images_dir = existing_folder(args.images, "--images") if args.images else None
    reference_dir = existing_folder(args.reference, "--reference") if args.reference else None
    given = labels_from(args)
    if args.judge is not None and not args.pipeline:
        raise UsageError("--judge names a pipeline's generations: pass it with --pipeline.")
    if args.pipeline and args.model is not None and args.judge is None:
        raise UsageError("--pipeline with --model needs --judge: an unedited CLIPModel folder.")
    out_default = Path(sources[0]) if len(sources) == 1 and Path(sources[0]).is_dir() else None
    if args.out is None and out_default is None:
        raise UsageError("--out is required when several deltas or a Hub repo id are audited.")
    out = output_folder(args.out, "--out", keeps=("slug_audit.json",)) if args.out else out_default
    deltas = [ConceptDelta.from_pretrained(resolve_delta_folder(s)) for s in sources]
    concept = args.concept or deltas[0].config.concept
    kind = args.kind or _kind(deltas[0].config.concept_kind)
    if images_dir is None and given and args.pipeline:  # generations need no views
        images, names, reference = [], given, None
    elif images_dir is None:
        images, names, reference = _embedded_views(args, concept, kind)
    else:
        if not given:
            raise UsageError("--images needs --labels or --labels-file: every candidate name.")
        images, names, reference = _images(images_dir), given, None
    if reference_dir is not None:
        reference = _images(reference_dir)
    target = AuditTarget(concept, names, images, kind=kind, reference_images=reference)
    budget = "quick" if args.quick else "full"
    if args.vlm:
        vlm, vlm_processor = _model(args, vlm=True)
        report = audit_vlm(vlm, vlm_processor, deltas, target, budget=budget)
    elif args.pipeline:
        pipe, judge, judge_processor, host_budget = _pipeline(args, budget)
        report = audit_pipeline(pipe, deltas, target, judge, judge_processor, budget=host_budget)
    else:
        model, processor = _model(args)
        report = audit(model, processor, deltas, target, budget=budget)
    plot = not (args.vlm or args.pipeline)  # the plot draws learned prompts and relearning
    report.save(out, plot=plot)
    print(report.to_markdown())
    print(f"written: {out}/slug_audit.json, slug_audit.md" + (", slug_audit.png" if plot else ""))
    return 0


def _kind(concept_kind: str) -> str:
    return concept_kind if concept_kind in ("identity", "object", "style") else "concept"


def _model(args: argparse.Namespace, vlm: bool = False) -> tuple[Any, Any]:
    """The base CLIPModel (with `vlm`: the LLaVA) and its processor; default: the embedded one."""
    if args.model is None:
        from ..demo.run import load_embedded
        from ..demo.vlm import load_embedded_vlm

        return load_embedded_vlm() if vlm else load_embedded()
    return _load(args.model, "--model", args.revision, vlm)


def _load(source: str, flag: str, revision: str | None = None, vlm: bool = False) -> tuple:
    from transformers import AutoProcessor, CLIPModel, CLIPProcessor, LlavaForConditionalGeneration

    existing_source(source, flag)
    classes = (LlavaForConditionalGeneration, AutoProcessor) if vlm else (CLIPModel, CLIPProcessor)
    model = classes[0].from_pretrained(source, revision=revision)
    return model.eval(), classes[1].from_pretrained(source, revision=revision)


def _pipeline(args: argparse.Namespace, budget: str) -> tuple[Any, Any, Any, Any]:
    """The pipeline, an unedited judge CLIP and its processor, and the host budget."""
    from dataclasses import replace

    from .hosts import HostAuditBudget

    host_budget = HostAuditBudget.named(budget)
    if args.model is None:
        from ..demo.t2i import GENERATION_KWARGS, load_embedded_pipeline

        pipe = load_embedded_pipeline()
        host_budget = replace(host_budget, generation_kwargs=GENERATION_KWARGS)
    else:
        from diffusers import DiffusionPipeline

        existing_source(args.model, "--model")
        pipe = DiffusionPipeline.from_pretrained(args.model, revision=args.revision)
    if args.judge is None:
        from ..demo.run import load_embedded

        return (pipe, *load_embedded(), host_budget)
    return (pipe, *_load(args.judge, "--judge"), host_budget)


def _embedded_views(args: argparse.Namespace, concept: str, kind: str) -> tuple[list, list, Any]:
    """The embedded world's held-out test views of `concept`, its names and a reference."""
    from ..demo.novel import novel_views
    from ..demo.world import World

    world = World(0)
    kinds = {"identity": world.identities, "object": world.objects, "style": world.styles}
    found = [k for k, names in kinds.items() if concept in names]
    if args.model is not None or not found:
        raise UsageError(
            f"--images is required: {concept!r} is not a concept of the embedded demo world "
            "(or --model is another model). Pass held-out views with --images and the names "
            "with --labels."
        )
    kind = found[0] if kind == "concept" else kind
    if kind == "identity":
        views = world.samples("identity", "test", EMBEDDED_VIEWS, [concept])
        return [s.image for s in views], world.identities, novel_views(world, 16)
    scenes = world.samples("object_style", "test", 3, [concept])
    mine = [s.image for s in scenes if concept in (s.label, s.style)][:EMBEDDED_VIEWS]
    return mine, kinds[kind], None


def _images(folder: str) -> list:
    from ..data import load_pairs

    pairs = load_pairs(folder)
    return [pairs.image(i) for i in range(len(pairs))]
