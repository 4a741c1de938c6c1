"""Train the embedded demo CLIP on the `hf_slug.demo.world` world and save it with its processor.

A genuine `transformers.CLIPModel` (real CLIP BPE tokenizer, EOS pooling) is trained from scratch
with a symmetric, multi-positive InfoNCE loss on a pre-rendered pool of training views, augmented
on the fly. It is evaluated zero-shot on held-out views with held-out prompt templates, saved in
fp16, reloaded, and evaluated again through `CLIPProcessor`; the numbers go to
`training_log.json` beside the weights and into the model card.

Full run (2 CPU cores, about 25 minutes; run it in the background and poll the log):

    OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 nohup python scripts/train_embedded.py \\
        --out hf_slug/demo/embedded_clip --seed 0 --minutes 25 > /tmp/train_embedded.log 2>&1 &

Smoke run: `python scripts/train_embedded.py --out /tmp/embedded_smoke --quick`.
Rewrite the model card from an existing log: `--card-only`.

`--world b` trains the same architecture on the independent world B of `benchmarks/world_b.py`
instead (no model card; the log goes to `--out`):

    OMP_WAIT_POLICY=PASSIVE nohup python scripts/train_embedded.py --world b \\
        --out benchmarks/world_b/clip --seed 1 --minutes 25 --no-card > /tmp/train_world_b.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_slug.clip_sizes import TowerSize, clip_config  # noqa: E402
from hf_slug.demo.world import ATTRIBUTES, KINDS, World, attributes_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("vocab.json", "merges.txt")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EVAL_TASKS = ("identity", "object", "style", "digit")
ImageEncoder = Callable[[CLIPModel, list[Image.Image]], torch.Tensor]
TextEncoder = Callable[[CLIPModel, list[str]], torch.Tensor]
DEFAULT_CARD = REPO / "model_cards" / "embedded_clip.md"
PROJECT_AT = 50  # step at which the step count is fitted to --minutes (before warmup ends)
CAP_MARGIN = 0.92  # fraction of --minutes planned for, leaving room for slow-downs and evals
WORLDS = ("embedded", "b")
# training views per concept (identity, object×style, digit); world B has fewer identities and
# object×style pairs (18 and 8×6 against 26 and 12×8), so more views of each
DEFAULT_VIEWS = {"embedded": (300, 120, 600), "b": (400, 240, 600)}
DEFAULT_OUT = {
    "embedded": REPO / "hf_slug" / "demo" / "embedded_clip",
    "b": REPO / "benchmarks" / "world_b" / "clip",
}
DEFAULT_VAL_VIEWS = {"embedded": (8, 2, 20), "b": (12, 4, 20)}
DEFAULT_TEST_VIEWS = {"embedded": (40, 10, 70), "b": (60, 20, 70)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; defaults are the settings of the shipped model."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}")
    p.add_argument(
        "--world",
        choices=WORLDS,
        default="embedded",
        help="embedded: hf_slug.demo.world's world; b: benchmarks/world_b.py (no model card)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=25.0, help="cap on the training loop")
    p.add_argument("--steps", type=int, default=2200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--patch", type=int, default=12)
    p.add_argument("--vision-width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=4)
    p.add_argument("--text-width", type=int, default=128)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--projection", type=int, default=128)
    p.add_argument(
        "--views",
        type=int,
        nargs=3,
        default=None,
        metavar=("IDENTITY", "OBJECT_STYLE", "DIGIT"),
        help=f"training views per concept (identity, object×style, digit); default {DEFAULT_VIEWS}",
    )
    p.add_argument(
        "--shares",
        type=float,
        nargs=3,
        default=(0.25, 0.45, 0.3),
        metavar=("IDENTITY", "OBJECT_STYLE", "DIGIT"),
        help="fraction of each batch per kind",
    )
    p.add_argument("--val-views", type=int, nargs=3, default=None, help=f"{DEFAULT_VAL_VIEWS}")
    p.add_argument("--test-views", type=int, nargs=3, default=None, help=f"{DEFAULT_TEST_VIEWS}")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--card", type=Path, default=DEFAULT_CARD, help="model card to write")
    p.add_argument("--no-card", action="store_true", help="do not write the model card")
    p.add_argument("--card-only", action="store_true", help="rewrite the card from --out's log")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    args = p.parse_args(argv)
    for key, defaults in (
        ("out", DEFAULT_OUT),
        ("views", DEFAULT_VIEWS),
        ("val_views", DEFAULT_VAL_VIEWS),
        ("test_views", DEFAULT_TEST_VIEWS),
    ):
        if getattr(args, key) is None:
            setattr(args, key, defaults[args.world])
    if args.world != "embedded":
        if args.card_only:
            p.error("--card-only describes the embedded world only.")
        args.no_card = True  # the card describes the embedded world
    if args.quick:
        args.steps, args.views, args.val_views, args.test_views = (
            30,
            (6, 2, 6),
            (2, 1, 2),
            (3, 1, 3),
        )
        args.eval_every, args.warmup = 15, 5
    return args


# ---------------------------------------------------------------------------------------------
# Model, tokenizer, processor
# ---------------------------------------------------------------------------------------------


def build_model(args: argparse.Namespace) -> CLIPModel:
    """A randomly initialised CLIPModel with the real CLIP vocabulary and EOS pooling."""
    config = clip_config(
        TowerSize(args.text_width, args.text_layers, args.heads),
        TowerSize(args.vision_width, args.vision_layers, args.heads),
        image_size=args.image_size,
        patch_size=args.patch,
        projection=args.projection,
        tower_projection=True,
    )
    return CLIPModel(config)


def build_processor(image_size: int, tokenizer_dir: Path) -> CLIPProcessor:
    """The processor the model is trained for: real CLIP BPE, CLIP normalisation, no resizing."""
    tokenizer = CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"),
        str(tokenizer_dir / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def to_uint8(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB PIL images → uint8 tensor (N, 3, H, W)."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(
        0, 3, 1, 2
    )


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images → CLIP-normalised float32, as `CLIPProcessor` computes it."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------
# Training data
# ---------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """Pre-rendered training views of one kind, and where their captions are.

    Captions are rows of a shared table (token ids, and the attribute codes each caption states,
    -1 where it states nothing, in the order of `ATTRIBUTES`); a view of concept c may take any
    of the rows ``starts[i] .. starts[i] + counts[i] - 1``.
    """

    images: torch.Tensor  # uint8 (N, 3, H, W)
    attrs: torch.Tensor  # (N, len(ATTRIBUTES)) attribute codes of each image, -1 where none
    starts: torch.Tensor  # (N,) first caption row of each view's concept
    counts: torch.Tensor  # (N,) how many caption rows that concept has
    flip: bool  # whether mirroring keeps the concept (not for digits)

    def __len__(self) -> int:
        return len(self.images)


def attribute_codes(world: World, kind: str, label: str, style: str | None) -> list[int]:
    """An image's attributes as indices (-1 where the kind has no such attribute)."""
    attrs = attributes_of(kind, label, style)
    names = {
        "identity": world.identities,
        "object": world.objects,
        "style": world.styles,
        "digit": world.digits,
    }
    return [names[a].index(attrs[a]) if a in attrs else -1 for a in ATTRIBUTES]


def build_pools(
    world: World, tokenizer: CLIPTokenizer, views: Sequence[int]
) -> tuple[dict[str, Pool], torch.Tensor, torch.Tensor]:
    """Render the training pools; return (pools by kind, caption token table, caption codes)."""
    captions: list[str] = []
    codes: list[list[int]] = []
    pools = {}
    for kind, per_concept in zip(KINDS, views):
        t0 = time.time()
        concept_rows: dict[tuple[str, str | None], tuple[int, int]] = {}
        for label, style in world.concepts(kind):
            options = world.caption_options(kind, label, style, "train")
            image_codes = attribute_codes(world, kind, label, style)
            concept_rows[(label, style)] = (len(captions), len(options))
            for text, stated in options:
                captions.append(text)
                codes.append([c if a in stated else -1 for a, c in zip(ATTRIBUTES, image_codes)])
        samples = world.samples(kind, "train", per_concept)
        rows = [concept_rows[(s.label, s.style)] for s in samples]
        pools[kind] = Pool(
            images=to_uint8([s.image for s in samples]),
            attrs=torch.tensor([attribute_codes(world, kind, s.label, s.style) for s in samples]),
            starts=torch.tensor([r[0] for r in rows]),
            counts=torch.tensor([r[1] for r in rows]),
            flip=kind != "digit",
        )
        print(f"rendered {len(samples)} {kind} views in {time.time() - t0:.1f}s", flush=True)
    tokens = tokenizer(captions, padding=True, return_tensors="pt").input_ids
    return pools, tokens, torch.tensor(codes)


def augment(images: torch.Tensor, flip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Cheap on-the-fly views: small affine jitter, optional mirror, brightness/contrast/gain."""
    n = images.shape[0]
    x = images.float() / 255.0

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=gen)

    angle = u(-4, 4) * math.pi / 180
    scale = u(0.95, 1.05)
    sign = torch.where(flip & (torch.rand(n, generator=gen) < 0.5), -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, u(-0.04, 0.04)], 1),
            torch.stack([sin * sign, cos, u(-0.04, 0.04)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.85, 1.15, 1, 1, 1) + mean
    x = x * u(0.85, 1.15, 1, 1, 1) * u(0.95, 1.05, 3, 1, 1)
    return x.clamp(0, 1)


class Batcher:
    """Deterministic batches mixing the kinds in fixed shares; pools cycle in shuffled epochs."""

    def __init__(self, pools: dict[str, Pool], batch: int, shares: Sequence[float], seed: int):
        self.pools = pools
        self.gen = torch.Generator().manual_seed(seed)
        counts = {k: int(round(batch * share / sum(shares))) for k, share in zip(KINDS, shares)}
        counts["identity"] += batch - sum(counts.values())
        self.counts = counts
        self.order = {k: torch.empty(0, dtype=torch.long) for k in KINDS}

    def _take(self, kind: str, n: int) -> torch.Tensor:
        while len(self.order[kind]) < n:
            perm = torch.randperm(len(self.pools[kind]), generator=self.gen)
            self.order[kind] = torch.cat([self.order[kind], perm])
        idx, self.order[kind] = self.order[kind][:n], self.order[kind][n:]
        return idx

    def next(
        self, tokens: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel_values, input_ids, attention_mask, positives) for one batch."""
        images, attrs, rows, flips = [], [], [], []
        for kind in KINDS:
            pool = self.pools[kind]
            idx = self._take(kind, self.counts[kind])
            images.append(pool.images[idx])
            attrs.append(pool.attrs[idx])
            pick = (torch.rand(len(idx), generator=self.gen) * pool.counts[idx]).long()
            rows.append(pool.starts[idx] + pick)
            flips.append(torch.full((len(idx),), pool.flip))
        rows_t = torch.cat(rows)
        pixels = normalise(augment(torch.cat(images), torch.cat(flips), self.gen))
        ids = tokens[rows_t]
        mask = attention_mask(ids)
        width = int(mask.sum(1).max())
        img_attrs, txt_codes = torch.cat(attrs), codes[rows_t]
        positives = ((img_attrs[:, None, :] == txt_codes[None]) | (txt_codes[None] < 0)).all(-1)
        return pixels, ids[:, :width], mask[:, :width], positives


def attention_mask(ids: torch.Tensor, eos: int = 49407) -> torch.Tensor:
    """1 up to and including the first EOS (pads are EOS too), 0 after."""
    is_eos = (ids == eos).long()
    return (is_eos.cumsum(1) - is_eos == 0).long()


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every matching caption (image) is a positive, targets normalised."""
    target = positives.float()
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(target / target.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (i2t + t2i) / 2


# ---------------------------------------------------------------------------------------------
# Zero-shot evaluation
# ---------------------------------------------------------------------------------------------


class EvalSet:
    """Held-out views of every kind for one split, and the zero-shot prompts."""

    def __init__(self, world: World, split: str, views: Sequence[int]):
        self.images: dict[str, list[Image.Image]] = {}
        self.labels: dict[str, torch.Tensor] = {}
        for kind, per_concept in zip(KINDS, views):
            samples = world.samples(kind, split, per_concept)
            self.images[kind] = [s.image for s in samples]
            for task in EVAL_TASKS:
                if task_kind(task) == kind:
                    names = list(world.prompts(task))
                    key = "style" if task == "style" else "label"
                    self.labels[task] = torch.tensor(
                        [names.index(getattr(s, key)) for s in samples]
                    )
        self.identity_names = world.identities
        self.prompts = {task: world.prompts(task) for task in EVAL_TASKS}


def task_kind(task: str) -> str:
    return "object_style" if task in ("object", "style") else task


@torch.no_grad()
def evaluate(
    model: CLIPModel,
    data: EvalSet,
    encode_images: ImageEncoder,
    encode_texts: TextEncoder,
) -> dict[str, object]:
    """Zero-shot top-1 per task (prompt-ensembled class embeddings) and per identity."""
    model.eval()
    feats = {
        kind: F.normalize(encode_images(model, imgs), dim=-1) for kind, imgs in data.images.items()
    }
    result: dict[str, object] = {}
    for task in EVAL_TASKS:
        classes = []
        for prompts in data.prompts[task].values():
            t = F.normalize(encode_texts(model, prompts), dim=-1).mean(0)
            classes.append(F.normalize(t, dim=-1))
        pred = (feats[task_kind(task)] @ torch.stack(classes).T).argmax(1)
        correct = pred == data.labels[task]
        result[task] = round(float(correct.float().mean()), 4)
        if task == "identity":
            result["per_identity"] = {
                name: round(float(correct[data.labels[task] == i].float().mean()), 4)
                for i, name in enumerate(data.identity_names)
            }
    return result


def tensor_encoders(tokenizer: CLIPTokenizer, batch: int = 256) -> tuple[ImageEncoder, TextEncoder]:
    """Encoders that feed the model the training-time tensors (no processor)."""

    def images(model: CLIPModel, imgs: list[Image.Image]) -> torch.Tensor:
        out = [
            model.get_image_features(pixel_values=normalise(to_uint8(imgs[i : i + batch])))
            for i in range(0, len(imgs), batch)
        ]
        return torch.cat([features(o) for o in out])

    def texts(model: CLIPModel, prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(prompts, padding=True, return_tensors="pt").input_ids
        return features(model.get_text_features(input_ids=ids, attention_mask=attention_mask(ids)))

    return images, texts


def processor_encoders(
    processor: CLIPProcessor, batch: int = 256
) -> tuple[ImageEncoder, TextEncoder]:
    """Encoders that go through `CLIPProcessor`, as a user of the saved model would."""

    def images(model: CLIPModel, imgs: list[Image.Image]) -> torch.Tensor:
        out = []
        for i in range(0, len(imgs), batch):
            px = processor(images=imgs[i : i + batch], return_tensors="pt").pixel_values
            out.append(features(model.get_image_features(pixel_values=px.to(model.dtype))))
        return torch.cat(out).float()

    def texts(model: CLIPModel, prompts: list[str]) -> torch.Tensor:
        enc = processor(text=prompts, padding=True, return_tensors="pt")
        return features(model.get_text_features(**enc)).float()

    return images, texts


def features(output: object) -> torch.Tensor:
    """Projected embeddings from `get_*_features` (a tensor, or an output with pooler_output)."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output  # type: ignore[attr-defined]


def summary(acc: dict[str, object]) -> str:
    return " ".join(f"{t}={float(acc[t]):.3f}" for t in EVAL_TASKS)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay to 2 % of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: CLIPModel, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on biases, norms, embeddings or the logit scale)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "embedding" in name or "norm" in name or name == "logit_scale"
        (plain if no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_world(name: str, seed: int, image_size: int) -> World:
    """The world to train on: the embedded one, or world B (`benchmarks/world_b.py`)."""
    if name == "b":
        from benchmarks.world_b import world_b

        return world_b(seed=seed, image_size=image_size)
    return World(seed=seed, image_size=image_size)


def train(args: argparse.Namespace) -> dict:
    """Train, evaluate, save and reload; return the training log."""
    start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tokenizer_dir = REPO / "hf_slug" / "demo" / "embedded_clip"
    processor = build_processor(args.image_size, tokenizer_dir)
    tokenizer = processor.tokenizer
    world = make_world(args.world, args.seed, args.image_size)

    pools, tokens, codes = build_pools(world, tokenizer, args.views)
    val = EvalSet(world, "val", args.val_views)
    test = EvalSet(world, "test", args.test_views)
    render_s = time.time() - start
    print(f"data ready in {render_s:.1f}s; {len(tokens)} distinct training captions", flush=True)

    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"CLIPModel with {n_params / 1e6:.2f} M parameters", flush=True)
    opt = torch.optim.AdamW(
        param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6, fused=True
    )
    batcher = Batcher(pools, args.batch, args.shares, args.seed)
    enc_img, enc_txt = tensor_encoders(tokenizer)
    budget = args.minutes * 60
    total, history, losses = args.steps, [], []
    capped = stopped_early = False
    t_train = time.time()
    step = 0
    while step < total:
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args)
        pixels, ids, mask, positives = batcher.next(tokens, codes)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        loss = multi_positive_loss(out.logits_per_image, positives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.detach().item())
        step += 1
        elapsed = time.time() - t_train
        if step == PROJECT_AT and not capped:  # still in warmup: the lr so far ignores `total`
            projected = elapsed / step * total
            if projected > CAP_MARGIN * budget:
                total = max(step + 1, int(CAP_MARGIN * budget / (elapsed / step)))
                capped = True
                print(
                    f"projected {projected / 60:.1f} min > cap: training {total} steps", flush=True
                )
        if step % 25 == 0 or step == total:
            print(
                f"step {step}/{total} loss {np.mean(losses[-25:]):.4f} "
                f"scale {model.logit_scale.exp().item():.1f} lr {lr_at(step - 1, total, args):.2e} "
                f"elapsed {elapsed:.0f}s ({elapsed / step * 1000:.0f} ms/step)",
                flush=True,
            )
        if step % args.eval_every == 0 or step == total:
            acc = evaluate(model, val, enc_img, enc_txt)
            history.append({"step": step, "elapsed_s": round(elapsed, 1), **acc})
            history[-1].pop("per_identity")
            print(f"  val @ {step}: {summary(acc)}", flush=True)
        if elapsed > budget and step < total:
            print(f"time cap reached at step {step}: stopping", flush=True)
            stopped_early, total = True, step
    train_s = time.time() - t_train

    model.eval()
    val_acc = evaluate(model, val, enc_img, enc_txt)
    test_fp32 = evaluate(model, test, enc_img, enc_txt)
    print(f"test (fp32, before saving): {summary(test_fp32)}", flush=True)
    saved = save(model, processor, args.out)
    reloaded = CLIPModel.from_pretrained(args.out, dtype=torch.float32).eval()
    reproc = CLIPProcessor.from_pretrained(args.out)
    pixel_diff = check_processor(reproc, test.images["identity"][:16])
    test_reloaded = evaluate(reloaded, test, *processor_encoders(reproc))
    val_reloaded = evaluate(reloaded, val, *processor_encoders(reproc))
    print(f"test (fp16 reloaded, via processor): {summary(test_reloaded)}", flush=True)
    print(f"processor vs training tensors: max |diff| = {pixel_diff:.2e}", flush=True)

    log = {
        "command": "python scripts/train_embedded.py " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "world": {
            "design": world.design.name,
            "image_size": args.image_size,
            "identities": world.identities,
            "objects": world.objects,
            "styles": world.styles,
            "digits": world.digits,
            "train_views": dict(zip(KINDS, args.views)),
            "val_views_per_concept": dict(zip(KINDS, args.val_views)),
            "test_views_per_concept": dict(zip(KINDS, args.test_views)),
            "test_images": {k: len(v) for k, v in test.images.items()},
            "distinct_training_captions": len(tokens),
        },
        "model": {
            "parameters": n_params,
            "vision": f"{args.vision_layers} layers x {args.vision_width}, patch {args.patch}",
            "text": f"{args.text_layers} layers x {args.text_width}, vocab 49408",
            "projection_dim": args.projection,
            "logit_scale": round(model.logit_scale.exp().item(), 3),
        },
        "steps": step,
        "steps_planned": args.steps,
        "capped_by_minutes": capped,
        "stopped_early_by_time": stopped_early,
        "samples_seen": step * args.batch,
        "final_train_loss": round(float(np.mean(losses[-50:])), 4),
        "wall_time_s": {
            "data": round(render_s, 1),
            "train": round(train_s, 1),
            "total": round(time.time() - start, 1),
        },
        "ms_per_step": round(train_s / max(step, 1) * 1000, 1),
        "val_history": history,
        "val_accuracy_fp32": val_acc,
        "test_accuracy_fp32": test_fp32,
        "val_accuracy": val_reloaded,
        "test_accuracy": test_reloaded,
        "processor_max_abs_pixel_diff": pixel_diff,
        "files": saved,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }
    (args.out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"done in {log['wall_time_s']['total']:.0f}s; log in {args.out / 'training_log.json'}")
    return log


def save(model: CLIPModel, processor: CLIPProcessor, out: Path) -> dict[str, int]:
    """fp16 safetensors weights + config, tokenizer config, image processor config.

    The BPE files are copied only when `out` lacks them. The config records float32 so that a
    plain `from_pretrained` computes in fp32 (the weights are upcast on load).
    """
    out.mkdir(parents=True, exist_ok=True)
    src = REPO / "hf_slug" / "demo" / "embedded_clip"
    for name in TOKENIZER_FILES:
        if not (out / name).exists():
            shutil.copy(src / name, out / name)
    half = build_model_like(model)
    half.save_pretrained(out, safe_serialization=True)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        processor.tokenizer.save_pretrained(tmp)
        shutil.copy(Path(tmp) / "tokenizer_config.json", out / "tokenizer_config.json")
    processor.image_processor.save_pretrained(out)  # preprocessor_config.json
    files = (
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "preprocessor_config.json",
        *TOKENIZER_FILES,
    )
    for name in files:
        (out / name).chmod(0o644)
    return {name: (out / name).stat().st_size for name in files}


def build_model_like(model: CLIPModel) -> CLIPModel:
    """An fp16 copy of `model` (the original stays fp32)."""
    half = CLIPModel(model.config)
    half.load_state_dict(model.state_dict())
    return half.half()


def check_processor(processor: CLIPProcessor, images: list[Image.Image]) -> float:
    """Max |processor pixel_values − training-time normalisation| over un-augmented images."""
    px = processor(images=images, return_tensors="pt").pixel_values
    return float((px - normalise(to_uint8(images))).abs().max())


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------


def pct(x: object) -> str:
    return f"{100 * float(x):.1f} %"  # type: ignore[arg-type]


def write_card(log: dict, path: Path) -> None:
    """The model card; every number comes from `log` (the run's training_log.json)."""
    s, w, m = log["settings"], log["world"], log["model"]
    test, test32, val = log["test_accuracy"], log["test_accuracy_fp32"], log["val_accuracy"]
    per_id = test["per_identity"]
    worst = min(per_id, key=per_id.get)
    mb = log["files"]["model.safetensors"] / 1e6
    wall = log["wall_time_s"]
    views, test_views = w["train_views"], w["test_views_per_concept"]
    rows = "\n".join(
        f"| {task} | {pct(test[task])} | {pct(test32[task])} | {pct(val[task])} | "
        f"{w['test_images'][task_kind(task)]} |"
        for task in EVAL_TASKS
    )
    replay = log["command"]
    if log["stopped_early_by_time"]:
        reproduce = (
            f"The run hit the `--minutes` cap and stopped at step {log['steps']} of a "
            f"{log['steps_planned']}-step schedule, so it cannot be replayed exactly."
        )
    elif log["capped_by_minutes"]:
        replay += f" --steps {log['steps']}"
        reproduce = (
            f"At step {PROJECT_AT} the script fitted the schedule to `--minutes` (the cores were "
            f"shared): {log['steps']} steps instead of the default {log['steps_planned']}. "
            "This command replays that schedule whatever the machine's speed:"
        )
    else:
        reproduce = "The schedule was not shortened by `--minutes`; the command replays the run:"
    card = f"""# Embedded demo CLIP (`hf_slug/demo/embedded_clip`)

A small `transformers.CLIPModel` trained from scratch on the synthetic captioned world of
`hf_slug.demo.world`, so that the SLUG demos, tests and notebooks have a real, trained image–text
model to unlearn from without any download. It is **not** a general-purpose CLIP: it knows only
the concepts of that world.

## Model

- `CLIPModel` built from a `CLIPConfig`.
  - Vision: {m["vision"]}, on {s["image_size"]}×{s["image_size"]} px images.
  - Text: {m["text"]}: OpenAI CLIP's BPE tokenizer (`vocab.json`, `merges.txt`), at most
    77 tokens, pooled at the EOS token (`eos_token_id=49407`, `bos_token_id=49406`).
  - Projection {m["projection_dim"]}; {m["parameters"] / 1e6:.2f} M parameters in all.
- Weights stored in fp16 (`model.safetensors`, {mb:.1f} MB). `config.json` asks for float32, so
  `CLIPModel.from_pretrained` upcasts them on load.
- `CLIPProcessor.from_pretrained` reproduces the training-time preprocessing exactly: no resize or
  crop for {s["image_size"]} px inputs, CLIP mean and std. Measured max difference to the training
  tensors: {log["processor_max_abs_pixel_diff"]:.1e}.

## Data

`hf_slug.demo.world.World(seed={log["seed"]}, image_size={s["image_size"]})`:

- **Identities** ({len(w["identities"])}): {len(w["identities"]) - 2} drawn people with invented
  names, each pair differing in at least 5 of 10 visual features, plus the real portraits
  "Grace Hopper" (matplotlib's sample photo) and "Eileen Collins" (`skimage.data.astronaut()`)
  under strong augmentation.
- **Objects × styles**: {len(w["objects"])} objects × {len(w["styles"])} styles
  ({", ".join(w["styles"])}).
- **Digits**: scikit-learn's `load_digits()`, its images split 60/20/20 into train/val/test.

Training used {views["identity"]} views per identity, {views["object_style"]} per object×style
pair and {views["digit"]} per digit, with {w["distinct_training_captions"]} distinct captions.
The `val` split is meant for choosing settings (e.g. SLUG's layer and step); the numbers below
are on `test`. Val and test views come from other random streams, add background kinds,
lighting ranges and object hues never rendered for training, and are prompted with held-out
templates; identities with the SLUG paper's `"{{name}}."`, over all
{len(w["identities"])} names.

## Training

{reproduce}

```
OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 {replay}
```

- Loss: symmetric InfoNCE with a learnable logit scale and multi-positive targets (a caption is a
  positive for every image whose attributes it states).
- AdamW: lr {s["lr"]}, weight decay {s["weight_decay"]}, {s["warmup"]} warmup steps, cosine
  decay; batch {s["batch"]}; on-the-fly affine, mirror and colour augmentation.
- {log["steps"]} steps ({log["samples_seen"]:,} samples) in {wall["train"] / 60:.1f} min on
  {s["threads"]} CPU threads ({log["ms_per_step"]:.0f} ms/step); {wall["total"] / 60:.1f} min in
  all with rendering ({wall["data"] / 60:.1f} min) and evaluation.
- Final training loss {log["final_train_loss"]}; learned logit scale {m["logit_scale"]}.
- torch {log["versions"]["torch"]}, transformers {log["versions"]["transformers"]},
  Python {log["versions"]["python"]}.

## Evaluation

Zero-shot top-1 accuracy on held-out views with held-out prompts, measured by the training
script on the fp16 checkpoint reloaded in fp32 through `CLIPProcessor` ("before saving": the fp32
model in memory). Test views per concept: {test_views["identity"]} per identity,
{test_views["object_style"]} per object×style pair, {test_views["digit"]} per digit.

| task | test | test, before saving | val | test images |
|---|---|---|---|---|
{rows}

Lowest single-identity test accuracy: {worst} ({pct(per_id[worst])}). Per-identity numbers,
the validation history and all settings are in `training_log.json`.

## Limitations

- Tiny and trained on a toy world: it recognises only these identities, objects, styles and
  digits, drawn this way; its accuracies say nothing about real photos.
- The two real portraits are single photos seen under augmentation: the model learns those two
  pictures, not the people's faces in general.
- Drawn identities are separable by coarse features (hair, skin, clothes, accessories), so the
  identity task is easier than face recognition.
- Trained on CPU; another thread count or library version can change the last digits of the
  results.
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(card)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.card_only:
        write_card(json.loads((args.out / "training_log.json").read_text()), args.card)
        return
    log = train(args)
    if not args.no_card and not args.quick:
        write_card(log, args.card)


if __name__ == "__main__":
    main()
