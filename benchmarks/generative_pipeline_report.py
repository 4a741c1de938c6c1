"""The markdown of `generative_pipeline.json`: the before/after tables per criterion, the cost
table, the stack of two deltas and the variants (`benchmarks/generative_pipeline.py` writes it).

    python benchmarks/generative_pipeline.py --merge LABEL=PATH   # rewrites the .md
"""

from __future__ import annotations

from pathlib import Path

FINDINGS = "## Findings"


def write_markdown(path: Path, record: dict) -> None:
    """The markdown of `record`; a hand-written section from FINDINGS on is kept."""
    kept = ""
    if path.is_file() and FINDINGS in path.read_text():
        kept = "\n" + path.read_text()[path.read_text().index(FINDINGS) :]
    path.write_text(markdown(record) + kept)


def stack_lines(s: dict | None, grid: bool = True) -> list[str]:
    """The stack-of-2 sentence (targets after, others kept), or nothing without a stack;
    `grid`: name the stack's image grid (the main run's; a variant's was overwritten)."""
    if not s:
        return []
    return [
        "",
        f"**Stack of 2 deltas** ({' + '.join(s['targets'])}, `set_adapters` at weight 1): "
        "targets after "
        + ", ".join(f"{t} {pct(v)}" for t, v in s["target_after"].items())
        + f"; others {pct(s['others_before'])} → {pct(s['others_after'])} "
        f"({pct(s['others_relative'])} of before)."
        + (" Grid: `generative_pipeline/stack.png`." if grid else ""),
    ]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def arrow(before: dict, after: dict, key: str) -> str:
    nan = float("nan")
    return f"{pct(before.get(key, nan))} → {pct(after.get(key, nan))}"


def unlearned_lines(unlearned: dict) -> list[str]:
    """The before/after table, the text-encoder shifts, other weights and the judge's votes."""
    lines = [
        "| unlearned | converged | target before | target after (≤ 10 %) | others before | "
        "others after | others kept (≥ 90 %) | unlearn_pipeline seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, run in unlearned.items():
        if "target_after" not in run:
            lines.append(f"| {target} | {run['converged']} | – | – | – | – | – | "
                         f"{run['unlearn_seconds']} |")  # fmt: skip
            continue
        lines.append(
            f"| {target} | {run['converged']} | {pct(run['target_before'][target])} | "
            f"{pct(run['target_after'][target])} | {pct(run['others_before'])} | "
            f"{pct(run['others_after'])} | {pct(run['others_relative'])} | "
            f"{run['unlearn_seconds']} |"
        )
    lines += [
        "",
        "What the delta changes in the text encoder's output (mean relative L2 change, delta on "
        "vs off): `sequence` = the 77 hidden states the UNet cross-attends to, `pooled` = the EOS "
        "state CLIP's zero-shot criterion reads; the search's own metrics on its validation data, "
        "before → after (criterion 'clip': CLIP zero-shot on its held-out split, retain = caption "
        "retrieval; 'generation': the judged validation generations, others = the other "
        "people's generations named right, utility = the judge's mean probability of their "
        "names; 'denoiser': the UNet's guidance directions on validation phrasings, others = "
        "the other names still nearest their own direction, utility = their mean cosine to it):",
        "",
        "| unlearned | layer | step | target seq. | target pooled | others seq. | "
        "others pooled | search forget acc. | search retain / others acc. | search utility |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for target, run in unlearned.items():
        if "conditioning_shift" not in run:
            continue
        c, m, b = run["conditioning_shift"], run["clip_metrics_after"], run["clip_metrics_before"]
        step = f"{run['step']:.3g}" if run["step"] is not None else "–"
        lines.append(
            f"| {target} | {run['layer']} | {step} | {pct(c['target']['sequence'])} | "
            f"{pct(c['target']['pooled'])} | {pct(c['others']['sequence'])} | "
            f"{pct(c['others']['pooled'])} | {arrow(b, m, 'forget_acc')} | "
            f"{arrow(b, m, 'retain_acc' if 'retain_acc' in m else 'others_acc')} | "
            f"{arrow(b, m, 'utility')} |"
        )
    weighted = [
        f"| {t} | {w} | {pct(v['target_after'][t])} | {pct(v['others_relative'])} |"
        for t, run in unlearned.items()
        for w, v in run.get("weighted", {}).items()
    ]
    if weighted:
        lines += [
            "",
            "The same deltas at other adapter weights (SLUG's step × weight):",
            "",
            "| unlearned | weight | target after | others kept |",
            "|---|---|---|---|",
            *weighted,
        ]
    lines += [
        "",
        "What the target's generations are named after unlearning (judge's votes):",
        "",
    ]
    for target, run in unlearned.items():
        if "target_said_after" in run:
            votes = run["target_said_after"][target]
            lines.append(f"* {target}: " + ", ".join(f"{k} {v}" for k, v in votes.items()))
    return lines


def validation_lines(v: dict | None) -> list[str]:
    if not v:
        return []
    return [
        "",
        "The generation criterion's validation draws (disjoint from the prompts and seeds above):"
        f" the forget criterion's identity phrasings ({', '.join(repr(t) for t in v['templates'])})"
        f", {v['target_images']} images of the target (one per phrasing, seed {v['seed']}), "
        f"{v['others_per_person']} per other person (phrasings in turn), "
        f"{v['generation']['num_inference_steps']} DDIM steps; a target image counts as "
        f"recognised when the judge ranks the target's name within {v.get('margin', 0)} logits "
        "(100·cos) of its first choice; judged by the unedited CLIPModel's image tower against its text features of "
        "the 26 names, computed once before the search.",
    ]


CRITERION_TEXT = {
    "generation": "every trial judged on the pipeline's own generations (validation phrasings "
    "and seeds, see above), opt-in",
    "clip": "CLIP zero-shot on SLUG's held-out split (the default before the denoiser's)",
    "denoiser": "every trial judged on the UNet's classifier-free guidance directions of the "
    "validation phrasings (no sampling), nearest name by cosine with margin 0.1; the default",
}


def cost_lines(by_criterion: dict[str, dict]) -> list[str]:
    """Each target's `unlearn_pipeline` seconds per criterion and the ratio to 'clip'."""
    names = list(by_criterion)
    lines = [
        "Cost: `unlearn_pipeline` seconds per criterion (gradients + search + evaluation), and "
        "the ratio to the CLIP-only call (issue 19's target: within 3×):",
        "",
        "| unlearned | " + " | ".join(f"{c} s" for c in names) + " | "
        + " | ".join(f"{c} / clip" for c in names if c != "clip") + " |",
        "|---|" + "---|" * (len(names) + len([c for c in names if c != "clip"])),
    ]  # fmt: skip
    for target in by_criterion[names[0]]:
        secs = {c: by_criterion[c].get(target, {}).get("unlearn_seconds") for c in names}
        ratios = [
            f"{secs[c] / secs['clip']:.1f}×" if secs.get("clip") and secs[c] else "–"
            for c in names
            if c != "clip"
        ]
        lines.append(
            f"| {target} | " + " | ".join(str(secs[c]) for c in names) + " | "
            + " | ".join(ratios) + " |"
        )  # fmt: skip
    return lines


def denoiser_lines(check: dict | None, tuning: dict | None) -> list[str]:
    """What the denoiser criterion asks the UNet, and where its margin was chosen."""
    if not check:
        return []
    lines = [
        "",
        "The denoiser criterion's validation: the phrasings "
        f"{', '.join(repr(t) for t in check['templates'] or ['(the concept kind’s)'])}"
        + (
            " (concept_kind 'identity': each also with the first and last name alone)"
            if check.get("name_parts")
            else ""
        )
        + f", each asked of the UNet at timesteps {check['timesteps']} (fractions of 1000) × {check['noises']} fixed "
        f"noise latents (seeds from {check['seed']}) — no sampling; a phrasing counts as "
        "forgotten only when its guidance direction is closer (cosine) to another name's "
        f"original direction than to the target's by more than {check['margin']}.",
    ]
    if tuning:
        files = ", ".join(f"`{f}`" for f in tuning.get("files", [tuning.get("file")]))
        lines[-1] += f" How they were chosen: {tuning['note']} ({files})."
    return lines


def markdown(r: dict) -> str:
    n_images = len(r["identities"]) * len(r["phrasings"]) * len(r["seeds"])
    lines = [
        "# The embedded text-to-image pipeline, unlearned through its text encoder",
        "",
        f"Command: `{r['command'].strip()}` ({r['minutes']} min on 2 CPU cores).",
        "",
        f"Pipeline `{r['pipeline']}`; {len(r['identities'])} identities × "
        f"{len(r['phrasings'])} held-out phrasings ({', '.join(repr(p) for p in r['phrasings'])})"
        f" × {len(r['seeds'])} seeds = {n_images} images per measurement, "
        f"{r['generation']['num_inference_steps']} DDIM steps, guidance "
        f"{r['generation']['guidance_scale']}. Judge: {r['judge']} (it names "
        f"{pct(r['judge_on_real_test_views'])} of real test views right). Chance: "
        f"{pct(r['chance'])}.",
        *validation_lines(r.get("validation")),
        *denoiser_lines(r.get("denoiser_check"), r.get("tuning")),
        "",
        f"**Before:** mean generation accuracy over identities {pct(r['before']['mean'])} "
        "(target ≥ 50 %).",
        "",
    ]
    by_criterion = r.get("by_criterion") or {"clip": r["unlearned"]}
    for criterion, unlearned in by_criterion.items():
        lines += ["", f"### criterion={criterion!r}: {CRITERION_TEXT[criterion]}", ""]
        lines += unlearned_lines(unlearned)
    if len(by_criterion) > 1:
        lines += ["", *cost_lines(by_criterion)]
    lines += stack_lines(r.get("stack"))
    for label, variant in r.get("variants", {}).items():
        lines += [
            "",
            f"## Variant: {label}",
            "",
            f"Command: `{variant['command'].strip()}` ({variant['minutes']} min; the same "
            "pipeline, judge, prompts and seeds; its before-accuracy "
            f"{pct(variant['before_mean'])}).",
            "",
            *unlearned_lines(variant["unlearned"]),
            *stack_lines(variant.get("stack"), grid=False),
        ]
    lines += [
        "",
        "## Before, per identity",
        "",
        "Before accuracy per identity: "
        + ", ".join(f"{n} {pct(v)}" for n, v in r["before"]["per_identity"].items())
        + ".",
        "",
        "Grids (one row per identity, phrasing "
        f"{r['phrasings'][0]!r}; seeds before | after): `benchmarks/generative_pipeline/*.png`.",
        "",
    ]
    return "\n".join(lines)
