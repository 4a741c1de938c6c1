"""Where the default call's peak memory goes: a first (cold) call against one after a warm-up,
for the default criterion and a one-template criterion, in one process each.

    python benchmarks/peak_memory.py default cold      # and: default warm, one-template cold, ...

Prints the peak RSS above the RSS before the measured call (`measure.PeakMemory`), in MB.
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import MB, PeakMemory  # noqa: E402

import benchmarks.common  # noqa: E402, F401  (turns the gradient cache off)
from benchmarks.generalisation import WORLDS, data_for, load_world  # noqa: E402
from hf_slug import SLUGConfig, UnlearnOptions, unlearn  # noqa: E402

VARIANTS = {"default": {}, "one-template": {"templates": ("{}.",), "name_parts": False}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=list(VARIANTS))
    parser.add_argument("state", choices=("cold", "warm"))
    parser.add_argument("--target", default="Clara Alderwick")
    parser.add_argument("--n-forget", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    world = load_world("embedded")
    model = CLIPModel.from_pretrained(WORLDS["embedded"]).float().eval()
    processor = CLIPProcessor.from_pretrained(WORLDS["embedded"])
    forget, retain = data_for(world, "identity", args.target, args.n_forget)
    config = SLUGConfig(
        concept=args.target,
        candidate_labels=world.identities,
        concept_kind="identity",
        **VARIANTS[args.variant],
    )
    options = UnlearnOptions(progress=False)
    warnings.simplefilter("ignore")
    if args.state == "warm":
        unlearn(model, processor, forget, retain, config, options=options)
    gc.collect()
    with PeakMemory() as peak:
        result = unlearn(model, processor, forget, retain, config, options=options)
    chosen = result.chosen.label if result.chosen else None
    print(f"{args.variant} {args.state}: {peak.peak_above_baseline / MB:.1f} MB ({chosen})")


if __name__ == "__main__":
    main()
