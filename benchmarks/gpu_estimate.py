"""Expected GPU memory of SLUG's gradient computation for the real CLIPs, from CPU measurements.

Reads scaling.py's memory measurements (random-weight CLIPs of the real sizes) and writes, for
each real model and memory option, the arithmetic

    peak ≈ W + 2·G + B·a + C

W: the fp32 weights; G: the candidate tensors' bytes (hf_slug keeps one fp32 running sum per
candidate, and each batch's fresh gradient lives beside it until it is added); a: activation
bytes per pair that autograd saves (measured with saved-tensor hooks, per option); B: pairs per
batch (hf_slug's default 32, and 8); C: the CUDA context and workspaces (assumed 0.5 GB, not
measured). The CPU runs check the 2·G + B·a part: `measured / predicted` compares the CPU peak
above the loaded model with 2·G + B·a at the batch that was run.

    python benchmarks/gpu_estimate.py --scaling benchmarks/scaling.json --out benchmarks/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common import command_line, table, write_json

CUDA_CONTEXT_GB = 0.5
REAL_MODELS = {
    "ViT-B/32": "openai/clip-vit-base-patch32 (the SLUG paper's CLIP experiments)",
    "ViT-L/14": "openai/clip-vit-large-patch14 (SD 1.x's text encoder; LLaVA-1.5 uses it at 336 px)",
    "ViT-H/14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K (SD 2.x's text encoder)",
}
BATCHES = (8, 32)


def estimate(row: dict[str, Any], batch: int) -> tuple[float, str]:
    """The GPU estimate for one measured row at `batch` pairs, and its arithmetic."""
    w, g, a = row["model_gb"], row["candidate_gb"], row["activation_mb_per_pair"] / 1024
    total = w + 2 * g + batch * a + CUDA_CONTEXT_GB
    text = f"{w:.2f} + 2×{g:.2f} + {batch}×{a:.3f} + {CUDA_CONTEXT_GB} = {total:.1f}"
    return total, text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scaling", type=Path, default=Path("benchmarks/scaling.json"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args(argv)
    import json

    rows = json.loads(args.scaling.read_text()).get("memory", [])
    rows = [r for r in rows if "error" not in r]
    results = []
    for r in rows:
        predicted_cpu = 2 * r["candidate_gb"] + r["activation_gb"]
        entry = {
            "size": r["size"],
            "variant": r["variant"],
            "measured_pairs": r["n_pairs"],
            "cpu_peak_above_model_gb": r["peak_gb"],
            "cpu_predicted_gb": predicted_cpu,
            "cpu_measured_over_predicted": r["peak_gb"] / predicted_cpu,
        }
        for batch in BATCHES:
            entry[f"gpu_gb_batch{batch}"], entry[f"arithmetic_batch{batch}"] = estimate(r, batch)
        results.append(entry)
    report = {
        "command": command_line(),
        "cuda_context_gb_assumed": CUDA_CONTEXT_GB,
        "real_models": REAL_MODELS,
        "estimates": results,
    }
    write_json(args.out / "gpu_estimate.json", report)
    (args.out / "gpu_estimate.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    body = [
        [
            r["size"],
            r["variant"],
            r["measured_pairs"],
            r["cpu_peak_above_model_gb"],
            r["cpu_predicted_gb"],
            r["cpu_measured_over_predicted"],
            r["arithmetic_batch8"],
            r["arithmetic_batch32"],
        ]
        for r in report["estimates"]
    ]
    header = [
        "size",
        "option",
        "pairs run",
        "CPU peak above model GB",
        "2G + act GB",
        "measured / predicted",
        "GPU GB, batch 8: W + 2G + B·a + C",
        "GPU GB, batch 32",
    ]
    models = "\n".join(f"- {size}: {name}" for size, name in report["real_models"].items())
    return "\n".join(
        [
            f"Command: `{report['command']}`",
            "",
            models,
            "",
            table(header, body),
            "",
        ]
    )


if __name__ == "__main__":
    main()
