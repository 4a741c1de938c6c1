"""Compute SLUG's forget or retain gradients data-parallel with accelerate, and cache them.

Each process takes every n-th batch; the per-tensor sums are all-reduced, so the file equals what
one process would write (to float rounding). Pass it to `unlearn(..., options=UnlearnOptions(retain_gradients=FILE))`.

    accelerate launch --multi_gpu --num_processes 2 scripts/distributed_gradients.py \\
        --model hf_slug/demo/embedded_clip --pairs data/retain --loss retain \\
        --out retain_gradients.safetensors

On a CPU-only machine the same command runs two processes over gloo.
"""

from __future__ import annotations

import argparse

import torch
from accelerate import Accelerator
from transformers import CLIPModel, CLIPProcessor

from hf_slug import GradientOptions, load_pairs
from hf_slug.gradients import compute_gradients, save_gradients
from hf_slug.towers import candidate_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="CLIP model folder or repo id")
    parser.add_argument("--pairs", required=True, help="folder of images with captions")
    parser.add_argument("--loss", choices=["forget", "retain"], default="retain")
    parser.add_argument("--towers", nargs="+", default=["vision", "text"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast forward")
    parser.add_argument("--out", required=True, help="the safetensors file to write")
    args = parser.parse_args()

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # CPU-only: gloo processes
    model = CLIPModel.from_pretrained(args.model).to(accelerator.device).eval()
    processor = CLIPProcessor.from_pretrained(args.model)
    pairs = load_pairs(args.pairs, name=f"{args.loss} set")
    names = candidate_names(model, args.towers)
    grads = compute_gradients(
        model,
        processor,
        pairs,
        args.loss,
        names,
        batch_size=args.batch_size,
        options=GradientOptions(
            autocast_dtype=torch.bfloat16 if args.bf16 else None, accelerator=accelerator
        ),
        progress=accelerator.is_main_process,
    )
    if accelerator.is_main_process:
        save_gradients(args.out, grads, model, pairs.signature())
        print(
            f"wrote {len(grads)} gradients over {len(pairs)} pairs from "
            f"{accelerator.num_processes} process(es) to {args.out}"
        )
    accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():  # gloo's threads stopped before exit, not torn down
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
