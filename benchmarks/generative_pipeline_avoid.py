"""A stack of 2 pipeline deltas whose second is made with `UnlearnOptions(avoid=[first])`.

Issue 15's `avoid=` keeps the second concept off the tensor the first one edits. On the
embedded pipeline both default deltas of Eileen Collins and Clara Alderwick sit on
`text.L0.v_proj` (`generative_pipeline.md`, stack of 2); this measures the same stack with
Clara Alderwick's delta searched away from that tensor, with the same prompts, seeds and judge
as `generative_pipeline.py` (2 held-out phrasings × 4 seeds × 26 identities):

    python benchmarks/generative_pipeline_avoid.py "Eileen Collins" "Clara Alderwick"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.generative_pipeline as gp  # noqa: E402
from benchmarks.common import quietly  # noqa: E402
from hf_slug import (  # noqa: E402
    PipelineOptions,
    SLUGConfig,
    SLUGModel,
    UnlearnOptions,
    unlearn_pipeline,
)
from hf_slug.demo.protocol import forget_pairs, retain_pairs  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first")
    parser.add_argument("second", help="searched with avoid=[the first's result]")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = World(0)
    names = list(world.identities)
    pipe, clips, (judge_clip, judge_processor) = gp.load_models()
    judge = gp.IdentityJudge(judge_clip, judge_processor, names)
    kwargs = {"num_inference_steps": 20, "guidance_scale": 5.0}
    phrasings, seeds = list(gp.PHRASINGS[:2]), [0, 1, 2, 3]
    before = gp.measure(pipe, judge, names, phrasings, seeds, **kwargs)
    gp.log(f"before: {before['mean']:.3f}")

    def unlearned(target: str, avoid: list) -> object:
        out, _ = quietly(
            unlearn_pipeline,
            pipe,
            *clips,
            target,
            retain_pairs(world, exclude=[target]),
            forget=forget_pairs(world, target, 32),
            config=SLUGConfig(target, towers=("text",), candidate_labels=names),
            options=PipelineOptions(unlearn=UnlearnOptions(progress=False, avoid=avoid)),
        )
        gp.log(f"{target}: {out.result.chosen.label} s={out.result.step:.3g}")
        return out

    first = unlearned(args.first, [])
    second = unlearned(args.second, [first.result])
    slug = SLUGModel(pipe)
    slug.add_adapter("first", first.delta)
    slug.add_adapter("second", second.delta)
    for label, active, targets in (
        ("second alone", ["second"], [args.second]),
        ("stack", ["first", "second"], [args.first, args.second]),
    ):
        slug.set_adapters(active)
        after = gp.measure(slug, judge, names, phrasings, seeds, **kwargs)
        row = gp.summary(before, after, targets, names)
        print(label, json.dumps({k: row[k] for k in ("target_after", "others_relative")}))


if __name__ == "__main__":
    main()
