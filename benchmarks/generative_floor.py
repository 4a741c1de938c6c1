"""What does the embedded pipeline draw for a name it never learnt? (issue 19: the pipeline's floor)

`generative_pipeline.py` counts a target as forgotten when the unedited judge (the embedded
CLIP, zero-shot over the 26 identity names) names its generations as it on at most 10 %. A
pipeline that has truly forgotten a person draws, for their name, what it draws for any name
it never knew — and the judge must still pick one of the 26 names for that face. This script
prompts the *unedited* pipeline with made-up names (never in the world, never in training) in
the same held-out phrasings and seeds, and records how often the judge names each identity:
that identity's **floor**, the rate a perfect erasure would leave. With uniform guesses the
floor is 1/26 = 3.8 %; an identity the pipeline draws as its "generic" face has a higher one.

`--compare` puts the targets of `generative_pipeline.py` runs beside their floor.

    python benchmarks/generative_floor.py --seeds 12 --out benchmarks/generative_floor.json \\
        --compare benchmarks/generative_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import command_line, table, write_json  # noqa: E402
from benchmarks.generative_pipeline import PHRASINGS, load_models, measure, versions  # noqa: E402
from hf_slug.demo.t2i import EMBEDDED_T2I, GENERATION_KWARGS, IdentityJudge  # noqa: E402
from hf_slug.demo.world import World  # noqa: E402

# made-up names: none is an identity of the world (checked below), none was in any caption
UNKNOWN = (
    "Tamsin Okafor",
    "Perrin Vasquez",
    "Odile Brankov",
    "Jonah Wetherell",
    "Marisol Quint",
    "Idris Holloway",
    "Freya Eklund",
    "Bram Udoh",
    "Liesel Marchetti",
    "Corwin Ashdown",
    "Nika Sorensen",
    "Alaric Penhallow",
)


def floors(said: dict[str, dict[str, int]], names: list[str]) -> tuple[dict, dict]:
    """(per identity: the share of all made-up names' generations judged as it; per identity:
    the least and most share over the made-up names, the spread between prompts)."""
    total = Counter()
    for counts in said.values():
        total.update(counts)
    images = sum(total.values())
    share = {n: total[n] / images for n in names}
    per_name = [
        {n: counts.get(n, 0) / max(1, sum(counts.values())) for n in names}
        for counts in said.values()
    ]
    spread = {n: (min(p[n] for p in per_name), max(p[n] for p in per_name)) for n in names}
    return share, spread


def compare(runs: list[Path], share: dict[str, float]) -> list[dict[str, Any]]:
    """Every target of the given `generative_pipeline.py` JSONs (main runs and their variants):
    after, beside its floor, with the number of test generations the rate is out of."""
    rows = []
    for path in runs:
        record = json.loads(path.read_text())
        groups = [(c, "", targets) for c, targets in record["by_criterion"].items()]
        groups += [("", label, v["unlearned"]) for label, v in record.get("variants", {}).items()]
        for criterion, variant, targets in groups:
            for target, run in targets.items():
                if "target_after" not in run:
                    continue
                rows.append(
                    {
                        "run": str(path),
                        "variant": variant,
                        "criterion": criterion or run.get("criterion", ""),
                        "target": target,
                        "generations": sum(run["target_said_after"][target].values()),
                        "before": run["target_before"][target],
                        "after": run["target_after"][target],
                        "floor": share[target],
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pipeline", type=Path, default=EMBEDDED_T2I)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--phrasings", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", type=Path, nargs="*", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(World(seed=0).identities)
    clash = [u for u in UNKNOWN if u in names or any(p in " ".join(names) for p in u.split())]
    if clash:
        raise SystemExit(f"made-up names that share a word with an identity: {clash}")
    pipe, _, (judge_clip, judge_processor) = load_models(args.pipeline)
    judge = IdentityJudge(judge_clip, judge_processor, names)
    phrasings, seeds = list(PHRASINGS[: args.phrasings]), list(range(args.seeds))
    kwargs = {"num_inference_steps": GENERATION_KWARGS["num_inference_steps"]}
    start = time.time()
    result = measure(pipe, judge, list(UNKNOWN), phrasings, seeds, **kwargs)
    share, spread = floors(result["said"], names)
    top = sorted(names, key=lambda n: -share[n])
    rows = compare(args.compare, share)
    report = {
        "command": command_line(),
        "pipeline": str(args.pipeline),
        "judge": "unedited embedded CLIP, zero-shot over 26 identity names, '{name}.'",
        "made_up_names": list(UNKNOWN),
        "phrasings": phrasings,
        "seeds": seeds,
        "images": len(result["images"]),
        "uniform": 1 / len(names),
        "floor": {n: share[n] for n in top},
        "floor_range_over_names": {n: list(spread[n]) for n in top},
        "said": result["said"],
        "compare": rows,
        "minutes": round((time.time() - start) / 60, 1),
        "versions": versions(),
    }
    write_json(args.out, report)
    print(
        table(
            ["identity", "floor %", "least / most over made-up names %"],
            [
                [n, 100 * share[n], f"{100 * spread[n][0]:.1f} / {100 * spread[n][1]:.1f}"]
                for n in top[:8]
            ],
        )
    )
    print(f"{len(result['images'])} images; identities never picked: "
          f"{sum(share[n] == 0 for n in names)} of {len(names)}; "
          f"mean over identities {100 * np.mean(list(share.values())):.1f} %")  # fmt: skip
    if rows:
        print(
            table(
                [
                    "run",
                    "criterion",
                    "target",
                    "test generations",
                    "before %",
                    "after %",
                    "floor %",
                ],
                [
                    [Path(r["run"]).stem + (f" / {r['variant'][:48]}…" if r["variant"] else "")]
                    + [r["criterion"], r["target"], r["generations"]]
                    + [100 * r["before"], 100 * r["after"], 100 * r["floor"]]
                    for r in rows
                ],
            )
        )


if __name__ == "__main__":
    main()
