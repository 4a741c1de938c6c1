"""What the host-aware search costs on the embedded pipeline: `unlearn_pipeline` with the
denoiser criterion against CLIP's criterion, the same target, data and process, alternating.

For each target and repeat it times the whole call (evaluator construction, gradients, step
search) for `criterion="denoiser"` with each `DenoiserCheck` setting given and for
`criterion="clip"`, with caches off (every call a first call), and splits the denoiser's time
into building its reference directions and the trials. CLIP's call runs first in each repeat
(a first call's warm-up lands on CLIP's side). Run it with nothing else on the machine: the
ratio is what it reports.

    python benchmarks/denoiser_cost.py --out benchmarks/denoiser_cost.json
    python benchmarks/denoiser_cost.py --checks "0.5:1" "0.8,0.5,0.2:2" --repeats 1 --out /tmp/c.json
    python benchmarks/denoiser_cost.py --remember --checks "0.5:1" --out benchmarks/denoiser_cost_remembered.json

`--remember`: caches on (both criteria), and before each timed pair a denoiser call for another
identity among the same candidates fills the denoiser's memory of unedited directions
(`hf_slug.hosts.denoiser_memory`): the cost of a second concept on the same pipeline.

Target (issue 19): the host-aware search within 3× the CLIP-only search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.generative_pipeline import TARGETS, load_models, unlearn_text_encoder  # noqa: E402
from hf_slug.cache import DISABLE_VARIABLE  # noqa: E402
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402
from hf_slug.hosts import denoiser_criterion  # noqa: E402
from hf_slug.hosts.denoiser_criterion import DenoiserCheck  # noqa: E402

os.environ.setdefault(DISABLE_VARIABLE, "1")


def parse_check(text: str) -> DenoiserCheck:
    """'0.8,0.5,0.2:2' -> DenoiserCheck(timesteps=(0.8, 0.5, 0.2), noises=2)."""
    times, _, noises = text.partition(":")
    return DenoiserCheck(timesteps=tuple(float(t) for t in times.split(",")), noises=int(noises))


class ReferenceClock:
    """Seconds spent building the denoiser evaluator's reference directions (its first call)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._original = denoiser_criterion.DenoiserEvaluator.__init__

    def __enter__(self) -> ReferenceClock:
        original, seconds = self._original, self.seconds

        def timed(evaluator, *args, **kwargs):
            start = time.perf_counter()
            original(evaluator, *args, **kwargs)
            seconds.append(time.perf_counter() - start)

        denoiser_criterion.DenoiserEvaluator.__init__ = timed
        return self

    def __exit__(self, *exc: object) -> None:
        denoiser_criterion.DenoiserEvaluator.__init__ = self._original


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "denoiser_cost.json")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument(
        "--checks",
        nargs="+",
        default=["0.5:1", "0.8,0.5,0.2:2"],
        help="DenoiserCheck settings as 'timesteps:noises' (the first is today's default)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--remember",
        action="store_true",
        help="caches on; each target timed after another identity's denoiser call",
    )
    args = parser.parse_args(argv)
    if args.remember:
        os.environ[DISABLE_VARIABLE] = "0"
    torch.set_num_threads(args.threads)
    world = World(seed=0)
    names = list(world.identities)
    pipe, clips, _ = load_models()
    rows = []
    for target in args.targets:
        forget = forget_pairs(world, target, 32)
        retain = retain_pairs(world, exclude=[target])
        for repeat in range(args.repeats):
            clip_out, clip_seconds = unlearn_text_encoder(
                pipe, clips, target, retain, forget, names, kind="identity", criterion="clip"
            )
            row = {"target": target, "repeat": repeat, "clip_seconds": round(clip_seconds, 2)}
            row["clip_layer"] = list(clip_out.result.chosen_names)
            for text in args.checks:
                if args.remember:  # another concept among the same names, same pipeline
                    other = next(n for n in names if n != target)
                    unlearn_text_encoder(
                        pipe, clips, other, retain_pairs(world, exclude=[other]),
                        forget_pairs(world, other, 32), names, kind="identity",
                        criterion="denoiser", denoiser=parse_check(text),
                    )  # fmt: skip
                with ReferenceClock() as clock:
                    out, seconds = unlearn_text_encoder(
                        pipe, clips, target, retain, forget, names, kind="identity",
                        criterion="denoiser", denoiser=parse_check(text),
                    )  # fmt: skip
                row[text] = {
                    "seconds": round(seconds, 2),
                    "reference_seconds": round(sum(clock.seconds), 2),
                    "ratio_to_clip": round(seconds / clip_seconds, 2),
                    "layer": list(out.result.chosen_names),
                    "step": out.result.step,
                    "trials": len(out.result.trials),
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {
        text: {
            "median_ratio": statistics.median(r[text]["ratio_to_clip"] for r in rows),
            "ratio_range": [
                min(r[text]["ratio_to_clip"] for r in rows),
                max(r[text]["ratio_to_clip"] for r in rows),
            ],
        }
        for text in args.checks
    }
    record = {
        "command": "python benchmarks/denoiser_cost.py " + shlex.join(argv or sys.argv[1:]),
        "data": "the embedded pipeline; forget = 32 training views of the target, retain = the "
        "demo's retain pairs without it; candidates = the 26 identities; concept_kind identity",
        "threads": args.threads,
        "remembered": args.remember,
        "machine": platform.processor() or platform.machine(),
        "summary": summary,
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
