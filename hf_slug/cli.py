"""The `hf-slug` command line.

    hf-slug demo                                   # the embedded model, end to end
    hf-slug demo --pipeline                        # ... the embedded text-to-image pipeline
    hf-slug demo --vlm                             # ... the embedded LLaVA
    hf-slug unlearn --model DIR_OR_ID --concept "Ada Byron" --forget DIR --retain DIR \\
        --labels-file names.txt --out deltas/ada
    hf-slug inspect deltas/ada
    hf-slug eval --model M --delta deltas/ada --data DIR --labels-file names.txt
    hf-slug merge --model M --delta deltas/ada --out merged/
    hf-slug export-lora deltas/ada --out lora/ --rank 8
    hf-slug push deltas/ada --repo-id me/clip-forget-ada
    hf-slug audit deltas/ada --model M --images held_out/ --labels-file names.txt --quick

Exit codes: 0 success, 1 the work failed (bad data, a delta that does not fit or holds NaN, no
convergence), 2 bad command-line usage: a bad option value, a missing flag, a path that does not
exist, an output folder that cannot be written. Usage is checked before any model is loaded or
gradient computed. Every error is one line on stderr (`HF_SLUG_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .audit.command import add_parser as add_audit_parser
from .cli_checks import (
    existing_folder,
    existing_source,
    finite_float,
    labels_from,
    load_clip,
    model_args,
    output_folder,
    rank,
    repo_id,
    require_finite,
)
from .cli_unlearn import add_parser as add_unlearn_parser
from .errors import UsageError
from .io import atomic_folder

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run `hf-slug`; return the exit code (argparse's own usage errors return 2 too)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or an argparse usage error (already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args) or EXIT_OK
    except KeyboardInterrupt:
        print("hf-slug: interrupted", file=sys.stderr)
        return 130
    except (UsageError, FileNotFoundError, NotADirectoryError) as error:
        _error(error)
        return EXIT_USAGE
    except Exception as error:  # every library error (SLUGError and the rest): one line
        if os.environ.get("HF_SLUG_DEBUG"):
            raise
        _error(error)
        return EXIT_FAILED


def _error(error: BaseException) -> None:
    """Print `error` on one stderr line, as argparse does."""
    from .errors import SLUGError

    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    message = " ".join(str(text).split())
    if not isinstance(error, (SLUGError, UsageError, OSError)) or not message:
        message = f"{type(error).__name__}: {message}".rstrip(": ")
    print(f"hf-slug: error: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-slug",
        description="Targeted unlearning with SLUG: remove one concept from a CLIP model (or a "
        "Stable Diffusion / LLaVA model's CLIP tower) by a one-step update of a single layer, "
        "stored as a small delta you can load, stack, merge and share.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 success, 1 the work failed, 2 a usage error. Run `hf-slug demo` "
        "first to see the whole flow on the embedded model.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="unlearn identities from the embedded CLIP (or, with --vlm / --pipeline, one from "
        "the embedded LLaVA / text-to-image pipeline) and show the effect",
    )
    p.add_argument("--out", default="slug_demo", help="folder for plots, deltas, report")
    p.add_argument("--quick", action="store_true", help="a reduced run (fewer images, for CI)")
    p.add_argument("--model", help="another CLIP trained on the demo world (default: embedded)")
    p.add_argument(
        "--targets",
        nargs=2,
        metavar="NAME",
        help='the two identities to unlearn and stack (default: "Eileen Collins" '
        '"Marcus Brennholt"; with --vlm or --pipeline only the first is unlearned, default '
        '"Clara Alderwick"); see World(0).identities',
    )
    flows = p.add_mutually_exclusive_group()
    vlm_help = "unlearn --targets' first person from the embedded LLaVA instead, and ask it again"
    flows.add_argument("--vlm", action="store_true", help=vlm_help)
    pipeline_help = (
        "unlearn --targets' first person from the embedded text-to-image pipeline instead, "
        "and draw everyone again (before/after grid, judged by an unedited CLIP)"
    )
    flows.add_argument("--pipeline", action="store_true", help=pipeline_help)
    p.set_defaults(handler=_demo)

    add_unlearn_parser(sub)

    p = sub.add_parser("eval", help="zero-shot accuracy of labelled images, before/after deltas")
    model_args(p)
    p.add_argument("--delta", action="append", default=[], help="delta folder or repo id")
    p.add_argument("--data", required=True, help="folder of images; each caption = true label")
    p.add_argument("--labels", help="comma-separated candidate labels")
    p.add_argument("--labels-file", help="file with one candidate label per line")
    p.add_argument("--template", default="{}", help='prompt template, e.g. "a photo of {}."')
    p.set_defaults(handler=_eval)

    for name, text in (("apply", "apply deltas and save the model"), ("merge", "same as apply")):
        p = sub.add_parser(name, help=text)
        model_args(p)
        p.add_argument("--delta", action="append", required=True, help="delta folder or repo id")
        p.add_argument(
            "--weight", action="append", type=finite_float, help="one weight per --delta"
        )
        p.add_argument("--out", required=True, help="folder for the merged model (new or empty)")
        p.set_defaults(handler=_merge)

    p = sub.add_parser("export-lora", help="write a PEFT LoRA adapter for a delta")
    p.add_argument("delta", help="delta folder or repo id")
    p.add_argument("--out", required=True, help="folder for the LoRA (new or empty)")
    p.add_argument(
        "--rank",
        type=rank,
        help="an integer rank, an energy fraction in (0,1] (e.g. 0.99), or omit: exact",
    )
    p.add_argument(
        "--format",
        choices=["peft", "diffusers"],
        default="peft",
        help="peft: PeftModel.from_pretrained; diffusers: pipe.load_lora_weights",
    )
    p.set_defaults(handler=_export)

    p = sub.add_parser("push", help="upload a delta folder with a model card to the Hub")
    p.add_argument("delta", help="the delta (or stack) folder")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--token")
    p.add_argument("--message", help="commit message")
    p.add_argument("--revision", help="branch to push to")
    p.set_defaults(handler=_push)

    p = sub.add_parser("inspect", help="show a delta's config, targets, fingerprints and size")
    p.add_argument("delta", help="delta folder or repo id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_inspect)

    add_audit_parser(sub)
    return parser


# -- commands ---------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from .demo.run import EMBEDDED, TARGETS, run_demo
    from .demo.world import World

    if args.vlm:
        from .demo.vlm_demo import demo_command

        return demo_command(args.out, args.targets, args.quick)
    if args.pipeline:
        from .demo.pipeline_demo import demo_command as pipeline_command

        return pipeline_command(args.out, args.targets, args.quick)
    targets = tuple(args.targets or TARGETS)
    unknown = [t for t in targets if t not in World(0).identities]
    if unknown or len(set(targets)) != 2:
        raise UsageError(
            f"--targets needs two different identities of the demo world; unknown: {unknown}; "
            f"choose among {World(0).identities}."
        )
    model = existing_folder(args.model, "--model") if args.model else EMBEDDED
    out = output_folder(args.out, "--out", keeps=("demo_report.json", "deltas", "gradients"))
    run_demo(out, quick=args.quick, targets=targets, model_path=model)
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from . import ZeroShotEvaluator, ZeroShotTask, load_pairs
    from .errors import NonFiniteGradientError
    from .model import SLUGModel

    data = existing_folder(args.data, "--data")
    existing_source(args.model, "--model")
    deltas = [existing_source(path, "--delta") for path in args.delta]
    template = _template(args.template)
    given = labels_from(args)
    pairs = load_pairs(data, name="evaluation set (--data)")
    labels = given or sorted(set(pairs.texts))
    unknown = sorted(set(pairs.texts) - set(labels))
    if unknown:
        raise UsageError(
            f"--labels lacks {unknown[:3]}, the captions (true labels) of images in --data "
            f"{data}: add them, or omit --labels to use the captions."
        )
    model, processor = load_clip(args)
    images = [pairs.image(i) for i in range(len(pairs))]
    task = ZeroShotTask("eval", images, list(pairs.texts), labels, (template,))
    evaluator = ZeroShotEvaluator(processor, [task])
    rows = {"base": evaluator(model)}
    if deltas:
        slug = SLUGModel(model)
        for path in deltas:
            slug.load_adapter(path)
        rows["with deltas"] = evaluator(slug.model)
    for name, metrics in rows.items():
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:
            where = "the model" if name == "base" else "the model with the deltas"
            raise NonFiniteGradientError(
                f"{where} gives non-finite metrics {bad}: a delta or the model holds NaN/inf; "
                "check them (hf-slug inspect) and recompute or re-download the bad one."
            )
    for name, metrics in rows.items():
        print(f"{name:<12} top-1 {metrics['eval_acc']:.4f}  top-5 {metrics['eval_acc@5']:.4f}")
    return EXIT_OK


def _template(template: str) -> str:
    try:
        filled = template.format("LABEL")
    except (IndexError, KeyError, ValueError):
        filled = ""
    if "LABEL" not in filled:
        raise UsageError(
            f"--template {template!r} must contain one {{}} where the label goes, e.g. "
            '"a photo of {}.".'
        )
    return template


def _merge(args: argparse.Namespace) -> int:
    from .model import SLUGModel

    weights = args.weight or [1.0] * len(args.delta)
    if len(weights) != len(args.delta):
        raise UsageError(
            f"{len(args.delta)} --delta but {len(weights)} --weight values: give one --weight "
            "per --delta, or none."
        )
    existing_source(args.model, "--model")
    deltas = [existing_source(path, "--delta") for path in args.delta]
    out = output_folder(args.out, "--out", keeps=("config.json",), inputs=(args.model, *args.delta))
    model, processor = load_clip(args)
    slug = SLUGModel(model)
    for path, weight in zip(deltas, weights):
        slug.load_adapter(path, weight=weight)
    merged = slug.merge_and_unload(safe_merge=True)
    require_finite(dict(merged.named_parameters()), "the merged model")
    with atomic_folder(out, _model_files) as folder:  # all or nothing: a failure leaves `out`
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)
    print(f"wrote the merged model to {out} (load it with CLIPModel.from_pretrained)")
    return EXIT_OK


def _model_files(folder: Path) -> set[str]:
    """What a transformers save writes (weights, shards, configs, tokenizer files): replaced as
    a whole, so a stale shard of an earlier save never sits beside the new weights."""
    suffixes = {".safetensors", ".bin", ".json", ".txt", ".model"}
    return {p.name for p in folder.iterdir() if p.suffix in suffixes}


def _export(args: argparse.Namespace) -> int:
    from . import ConceptDelta, export_diffusers_lora, export_peft_lora

    source = existing_source(args.delta, "delta")
    keeps = ("adapter_config.json", "pytorch_lora_weights.safetensors")
    out = output_folder(args.out, "--out", keeps=keeps, inputs=(args.delta,))
    delta = ConceptDelta.from_pretrained(source)
    require_finite(delta.tensors, f"the delta {args.delta}")
    export = export_diffusers_lora if args.format == "diffusers" else export_peft_lora
    report = export(delta, out, rank=args.rank)
    print(
        f"wrote {out}: ranks {sorted(set(report.ranks.values()))}, max relative error "
        f"{report.max_relative_error:.2e}, {report.nbytes / 1e6:.3f} MB "
        f"(the dense delta: {delta.nbytes() / 1e6:.3f} MB)"
    )
    return EXIT_OK


def _push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    folder = existing_folder(args.delta, "delta")
    info = push_to_hub(
        folder,
        repo_id(args.repo_id, "--repo-id"),
        private=args.private or None,
        token=args.token,
        commit_message=args.message,
        revision=args.revision,
    )
    print(f"pushed {args.delta} to {args.repo_id}: {info}")
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from . import ConceptDelta
    from .config import WEIGHTS_NAME
    from .hub import resolve_delta_folder

    folder = resolve_delta_folder(existing_source(args.delta, "delta"))
    delta = ConceptDelta.from_pretrained(folder)
    config = delta.config
    info = {
        "concept": config.concept,
        "kind": config.concept_kind,
        "family": config.model_family,
        "component": config.component,
        "base_model": config.base_model_name_or_path,
        "base_revision": config.base_model_revision,
        "step": config.step,
        "format": f"{config.delta_format} {config.delta_dtype}",
        "bytes": (folder / WEIGHTS_NAME).stat().st_size,
        "hf_slug_version": config.hf_slug_version,
        "targets": {
            n: {"shape": t.shape, "dtype": t.dtype, "sha256": t.sha256}
            for n, t in config.targets.items()
        },
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for key, value in info.items():
        if key != "targets":
            print(f"{key:<16}{value}")
    for name, target in info["targets"].items():
        print(
            f"target          {name} {target['shape']} {target['dtype']} "
            f"sha256 {target['sha256'][:16]}…"
        )
    return EXIT_OK


__all__: list[str] = ["main", "UsageError"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
