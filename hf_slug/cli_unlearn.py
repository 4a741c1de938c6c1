"""`hf-slug unlearn`: one concept's delta from folders of images, with SLUGConfig's defaults.

Every option's default is read from `SLUGConfig`'s own field defaults (never copied), so the
command line and the Python API cannot drift apart.

    hf-slug unlearn --model DIR_OR_ID --concept "Ada Byron" --forget DIR --retain DIR \\
        --labels-file names.txt --out deltas/ada
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .cli_checks import (
    existing_folder,
    existing_source,
    fraction,
    labels_from,
    load_clip,
    model_args,
    number,
    output_folder,
    positive_int,
)
from .config import SLUGConfig
from .errors import UsageError
from .phrasings import CRITERION_TEMPLATES

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in dataclasses.fields(SLUGConfig)
    if f.default is not dataclasses.MISSING
}
"""SLUGConfig's field defaults: the one place the command line reads them from."""


def add_parser(sub: Any) -> None:
    """Add the `unlearn` command to `hf-slug`'s subcommands."""
    p = sub.add_parser("unlearn", help="compute a concept's delta (writes delta, plot, report)")
    model_args(p)
    p.add_argument("--concept", required=True, help='the concept\'s name, e.g. "Ada Byron"')
    p.add_argument(
        "--kind",
        default=DEFAULTS["concept_kind"],
        choices=sorted(CRITERION_TEMPLATES),
        help="the concept's kind: picks the phrasings the forget criterion checks (card tags)",
    )
    p.add_argument("--forget", required=True, help="folder of the concept's images + captions")
    p.add_argument("--retain", required=True, help="folder of other images + captions")
    p.add_argument(
        "--val-forget",
        help="validation images of the concept (+ captions); with --val-retain, the search is "
        "scored on these and --forget/--retain go whole to the gradients",
    )
    p.add_argument("--val-retain", help="validation images of other concepts (+ captions)")
    p.add_argument(
        "--validation-share",
        type=number(float, 0.0, 0.99, "a number in [0, 0.99]"),
        default=DEFAULTS["validation_share"],
        help="without --val-*: share of --forget and --retain held out for validation "
        "(0: score in-sample)",
    )
    p.add_argument(
        "--template",
        action="append",
        default=[],
        help="an extra phrasing the criterion checks, with {} for the name (repeatable)",
    )
    p.add_argument(
        "--margin",
        type=number(float, 0.0, 1.99, "a cosine margin in [0, 1.99]"),
        default=DEFAULTS["margin"],
        help="cosine margin by which every phrasing must fail to name the concept "
        "(default: the kind's, 0.3 for identities, 0.05 otherwise)",
    )
    p.add_argument(
        "--misspellings",
        type=number(int, 0, 8, "an int in [0, 8]"),
        default=DEFAULTS["misspellings"],
        help="misspelt names the criterion checks and the forget gradient is averaged over "
        "(default: the kind's, 8 for identities, 0 otherwise)",
    )
    p.add_argument(
        "--retain-null-space",
        type=energy_or_none,
        default=DEFAULTS["retain_null_space"],
        help="share of the retain inputs' energy the text edit leaves untouched, in (0, 1]; "
        "'none' for SLUG's plain gradient",
    )
    p.add_argument(
        "--labels",
        help="comma-separated names to classify forget images among (the concept and at least "
        "one other; --labels or --labels-file is required)",
    )
    p.add_argument("--labels-file", help="file with one candidate name per line")
    p.add_argument("--tower", choices=["vision", "text", "both"], default="both")
    p.add_argument(
        "--layer", default=DEFAULTS["layer"], help='"auto" (Pareto front) or a layer name'
    )
    p.add_argument("--group", choices=["qkv", "mlp"], help="share one step across q/k/v or fc1/fc2")
    p.add_argument(
        "--caption-mode",
        choices=["original", "concept_name"],
        default=DEFAULTS["caption_mode"],
    )
    p.add_argument(
        "--forget-target",
        type=fraction,
        default=DEFAULTS["forget_target"],
        help="max forget accuracy, in [0, 1]",
    )
    p.add_argument(
        "--utility-tolerance",
        type=tolerance_or_none,
        default=DEFAULTS["utility_tolerance"],
        help="max drop of the validation utility a step may cost (e.g. 0.1 = 10 points); "
        "'none' turns the guard off",
    )
    p.add_argument(
        "--initial-step",
        type=number(float, 1e-9, 1e9, "a relative step > 0, e.g. 0.1"),
        default=DEFAULTS["initial_step"],
        help="the step search's first relative step (||Δθ|| = s·||θ||)",
    )
    p.add_argument("--max-evaluations", type=positive_int, default=DEFAULTS["max_evaluations"])
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"])
    p.add_argument("--out", required=True, help="the delta folder to write (new or empty)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-retain-cache",
        action="store_true",
        help="do not keep the retain gradients in the per-user cache ($HF_SLUG_CACHE/gradients)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """`hf-slug unlearn`: check the usage, run `unlearn`, write the delta, plot and report."""
    from . import ConceptDelta, UnlearnOptions, unlearn
    from .config import CONFIG_NAME
    from .data import load_pairs
    from .errors import UnknownLayerError
    from .io import atomic_folder, write_json
    from .names import owned_entries
    from .towers import candidate_names, resolve_names

    forget = existing_folder(args.forget, "--forget")
    retain = existing_folder(args.retain, "--retain")
    config = _config(args)
    validation = _validation(args)
    existing_source(args.model, "--model")
    out = output_folder(args.out, "--out", keeps=(CONFIG_NAME,), inputs=(forget, retain))
    forget_pairs = load_pairs(forget, name="forget set (--forget)")
    retain_pairs = load_pairs(retain, name="retain set (--retain)")

    model, processor = load_clip(args)
    if args.layer != "auto":
        try:
            resolve_names(model, [args.layer], candidate_names(model, config.towers))
        except UnknownLayerError as error:
            raise UsageError(f"--layer {args.layer}: {error}") from None
    result = unlearn(
        model,
        processor,
        forget_pairs,
        retain_pairs,
        config,
        validation=validation,
        options=UnlearnOptions(progress=not args.quiet, cache_retain=not args.no_retain_cache),
    )
    print(result.report())
    if not result.converged:
        guarded = any(s.status.startswith("utility guard") for s in result.searches)
        guard = " or --utility-tolerance (larger, or 'none')," if guarded else ""
        print(
            f"hf-slug: error: no searched layer forgot {args.concept!r} within "
            f"--max-evaluations {args.max_evaluations}{' and the utility guard' * guarded}: "
            f"raise it,{guard} try --tower both, or give more forget images; nothing was written.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    delta = ConceptDelta.from_result(result, concept_kind=args.kind)
    report = {**result.summary(), "trials": result.trials}
    files = {"pareto.png", "report.json"}  # saved with the delta, all or nothing
    with atomic_folder(out, lambda old: owned_entries(old) | files) as tmp:
        delta.write_files(tmp)
        result.plot_pareto(tmp / "pareto.png")
        write_json(tmp / "report.json", report)
    print(f"wrote {out}/ (delta, pareto.png, report.json)")
    return EXIT_OK


def _config(args: argparse.Namespace) -> SLUGConfig:
    from .errors import ConfigError

    labels = labels_from(args)
    if labels is None:
        raise UsageError(
            "unlearn needs the names to classify the forget images among: pass --labels "
            '"Ada Byron,Bob Stone,..." or --labels-file names.txt (the concept and at least one '
            "other name)."
        )
    if args.concept not in labels:
        labels = [args.concept, *labels]
    if len(labels) < 2:
        raise UsageError(
            f"--labels needs at least one name besides the concept {args.concept!r}: add the "
            "other names the forget images could be mistaken for."
        )
    try:
        return SLUGConfig(
            concept=args.concept,
            towers=("vision", "text") if args.tower == "both" else (args.tower,),
            layer=args.layer,
            group=args.group,
            caption_mode=args.caption_mode,
            candidate_labels=labels,
            forget_target=args.forget_target,
            utility_tolerance=args.utility_tolerance,
            initial_step=args.initial_step,
            max_evaluations=args.max_evaluations,
            batch_size=args.batch_size,
            concept_kind=args.kind,
            templates=tuple(args.template),
            margin=args.margin,
            validation_share=args.validation_share,
            retain_null_space=args.retain_null_space,
            misspellings=args.misspellings,
        )
    except ConfigError as error:
        raise UsageError(f"invalid options: {error}") from None


def tolerance_or_none(text: str) -> float | None:
    """An argparse type: 'none', or a finite number >= 0."""
    if text.strip().lower() == "none":
        return None
    return number(float, 0.0, 1e9, "a number >= 0 or 'none'")(text)


def energy_or_none(text: str) -> float | None:
    """An argparse type: 'none', or a share of energy in (0, 1]."""
    if text.strip().lower() == "none":
        return None
    value = number(float, 0.0, 1.0, "a share in (0, 1] or 'none'")(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1] or 'none', got {text!r}")
    return value


def _validation(args: argparse.Namespace) -> tuple[Any, Any] | None:
    from .data import load_pairs

    if (args.val_forget is None) != (args.val_retain is None):
        raise UsageError(
            "--val-forget and --val-retain go together: pass both validation folders, or "
            "neither (then --validation-share of --forget and --retain is held out)."
        )
    if args.val_forget is None:
        return None
    return tuple(
        load_pairs(existing_folder(path, flag), name=f"validation set ({flag})")
        for path, flag in ((args.val_forget, "--val-forget"), (args.val_retain, "--val-retain"))
    )
