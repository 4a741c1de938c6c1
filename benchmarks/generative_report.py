"""The tables of `generative.json` (`benchmarks/generative.py` prints them): each target and
search criterion before/after, the stacks of two deltas and why a delta does or does not reach
the VLM.

    python benchmarks/generative.py --markdown benchmarks/generative.json   # the tables again
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import table  # noqa: E402


def short(name: str) -> str:
    """`vision_model.encoder.layers.2.mlp.fc1.weight` -> `layers.2.mlp.fc1`."""
    return name.split("encoder.")[-1].removesuffix(".weight")


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(report: dict) -> str:
    b = report["before"]
    lines = [
        f"Before (test): names {pct(b['identity'])} % right, objects {pct(b['object'])} %, "
        f"styles {pct(b['style'])} %.",
        "",
    ]
    rows = []
    for target, by in report["targets"].items():
        for criterion, e in by.items():
            s = e["search"]
            if "after" not in e:
                rows.append([target, criterion, "no delta", *[""] * 9])
                continue
            a = e["after"]
            rows.append(
                [
                    target,
                    criterion,
                    ", ".join(short(n) for n in s["layer"]),
                    f"{s['step']:.3g}",
                    pct(a["target_named_before"][target]),
                    f"**{pct(a['target_named'][target])}**",
                    f"{pct(a['others_named_before'])} → {pct(a['others_named'])}",
                    f"**{pct(a['others_relative'])}**",
                    f"{a['worst_other'][0]} {pct(a['worst_other'][1])}",
                    f"{pct(a['object_before'])} → {pct(a['object'])}",
                    f"{pct(a['style_before'])} → {pct(a['style'])}",
                    e["identity"]["language_model_and_projector_identical"],
                ]
            )
    lines.append(
        table(
            [
                "target",
                "search",
                "layer",
                "step",
                "target named before %",
                "target named after %",
                "others named %",
                "others vs before %",
                "worst other, named %",
                "objects %",
                "styles %",
                "LM + projector bit-identical",
            ],
            rows,
        )
    )
    lines.append("")
    srows = []
    for criterion, st in report["stack"].items():
        if "after" not in st:
            srows.append([criterion, st.get("skipped", ""), *[""] * 6])
            continue
        a = st["after"]
        srows.append(
            [
                criterion,
                " + ".join(st["targets"]),
                ", ".join(f"**{pct(v)}**" for v in a["target_named"].values()),
                f"{pct(a['others_named_before'])} → {pct(a['others_named'])} "
                f"(**{pct(a['others_relative'])}**)",
                f"{a['worst_other'][0]} {pct(a['worst_other'][1])}",
                f"{pct(a['object_before'])} → {pct(a['object'])}",
                f"{pct(a['style_before'])} → {pct(a['style'])}",
                st["identity"]["language_model_and_projector_identical"],
            ]
        )
    lines.append(
        table(
            [
                "search",
                "stack of 2",
                "targets named after %",
                "others named % (vs before)",
                "worst other, named %",
                "objects %",
                "styles %",
                "LM + projector bit-identical",
            ],
            srows,
        )
    )
    mrows = []
    for target, by in report["targets"].items():
        for criterion, e in by.items():
            m = e.get("mechanism")
            if not m:
                continue
            t, o = m["target"], m["others"]
            mrows.append(
                [
                    target,
                    criterion,
                    f"{pct(t['clip_zero_shot_before'])} → {pct(t['clip_zero_shot_after'])}",
                    f"{pct(o['clip_zero_shot_before'])} → {pct(o['clip_zero_shot_after'])}",
                    f"{t['pooled_shift']:.3f}",
                    f"{t['patch_shift']:.4f}",
                    f"{o['pooled_shift']:.3f}",
                    f"{o['patch_shift']:.4f}",
                    pct(e["after"]["target_named"][target]),
                ]
            )
    if mrows:
        lines += [
            "",
            table(
                [
                    "target",
                    "search",
                    "CLIP zero-shot, target views %",
                    "CLIP zero-shot, others %",
                    "pooled shift, target",
                    "patch shift, target",
                    "pooled shift, others",
                    "patch shift, others",
                    "VLM names target %",
                ],
                mrows,
            ),
        ]
    return "\n".join(lines)
