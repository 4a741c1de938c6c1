"""Train the embedded text-to-image pipeline (`hf_slug/demo/embedded_t2i`) on the embedded world.

A real diffusers `StableDiffusionPipeline`: a tiny `AutoencoderKL` (48 × 48 px images, latents
4 × 12 × 12), a tiny `UNet2DConditionModel` with cross-attention on the embedded CLIP's text
tower (128-d, 77 tokens), a `DDIMScheduler`, and as `text_encoder` / `tokenizer` the embedded
CLIP's own text tower (`CLIPTextModel.from_pretrained("hf_slug/demo/embedded_clip")`) and
tokenizer, FROZEN, so SLUG's text-encoder edits act on it and `check_text_encoder(pipe, clip)`
passes. Only unet/, vae/, scheduler/ and model_index.json are stored; the text encoder and the
tokenizer are read from `hf_slug/demo/embedded_clip` at load (no second copy of the weights):

    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer
    pipe = StableDiffusionPipeline.from_pretrained(
        "hf_slug/demo/embedded_t2i",
        text_encoder=CLIPTextModel.from_pretrained(
            "hf_slug/demo/embedded_clip", dtype=torch.float32),  # stored in fp16
        tokenizer=CLIPTokenizer.from_pretrained("hf_slug/demo/embedded_clip"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)

Training, in order: render training views of the world (identities, plus objects in styles);
train the VAE (reconstruction + a small KL term) for `--vae-steps`; freeze it and encode every
view once; encode every training caption once with the frozen text encoder; train the UNet
(epsilon prediction, DDPM noise schedule, captions dropped 10 % of the time for
classifier-free guidance, EMA weights) for `--steps`, or until `--minutes` run out. Then the
pipeline is saved, reloaded with plain diffusers, and judged: fixed-seed generations of every
identity from held-out phrasings ("{name}." and audit templates never used in training) are
classified by the *unedited* embedded CLIP (zero-shot over the 26 names, "{name}."). The log
(`training_log.json`) holds the losses, the step counts and that accuracy; `--steps N
--vae-steps M` with the same `--seed` replays a run (up to CPU-kernel float noise).

Full run (2 shared CPU cores: 35 minutes measured; run it in the background and poll the log):

    OMP_NUM_THREADS=2 nohup nice -n 5 python scripts/train_embedded_t2i.py \\
        --out hf_slug/demo/embedded_t2i --seed 0 --minutes 24 > /tmp/train_t2i.log 2>&1 &

Smoke run (a minute): `python scripts/train_embedded_t2i.py --out /tmp/t2i_smoke --quick`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_slug.demo.t2i import load_embedded_pipeline, load_text_encoder  # noqa: E402
from hf_slug.demo.world import TRAIN_TEMPLATES, World, fill_template  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP_DIR = REPO / "hf_slug" / "demo" / "embedded_clip"
LATENT_CHANNELS = 4
BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
# held-out generation phrasings: the world's eval template and audit templates (never trained on)
HELD_OUT = ("{}.", "a headshot of {}.", "here we see {}.", "a snapshot of {}.")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- models -----------------------------------------------------------------------------------
def make_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=48,
        scaling_factor=scaling_factor,
    )


def make_unet(width: int = 64):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=12,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        layers_per_block=1,
        block_out_channels=(width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=4,
        norm_num_groups=16,
    )


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        **BETAS,
    )


# -- data -------------------------------------------------------------------------------------
def to_tensor(images) -> torch.Tensor:
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def render(world: World, id_views: int, os_views: int):
    """Training views: (images [N,3,48,48] in [-1, 1], label per view, kind per view, captions).

    Identity views are captioned at training time with a random training template; object/style
    views keep their world caption (which may state only the object or only the style).
    """
    ids = world.samples("identity", "train", id_views)
    scenes = world.samples("object_style", "train", os_views)
    images = to_tensor([s.image for s in ids + scenes])
    labels = [s.label for s in ids] + [s.caption for s in scenes]
    kinds = ["identity"] * len(ids) + ["scene"] * len(scenes)
    return images, labels, kinds


def to_images(batch: torch.Tensor):
    """[-1, 1] image tensors -> PIL images."""
    from PIL import Image

    array = ((batch.detach().clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round()
    return [Image.fromarray(x.astype(np.uint8)) for x in array]


def identity_captions(name: str) -> list[str]:
    return [fill_template(t, name) for t, _ in TRAIN_TEMPLATES["identity"]]


@torch.no_grad()
def encode_prompts(encoder, tokenizer, prompts: Sequence[str], batch: int = 64) -> torch.Tensor:
    """The hidden states a StableDiffusionPipeline conditions on (max-length padding, no mask)."""
    out = []
    for i in range(0, len(prompts), batch):
        ids = tokenizer(
            list(prompts[i : i + batch]),
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        out.append(encoder(ids)[0])
    return torch.cat(out)


# -- training ---------------------------------------------------------------------------------
def train_vae(vae, images: torch.Tensor, steps: int, batch: int, seed: int, losses: list):
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    vae.train()
    start = time.time()
    for step in range(steps):
        lr = 1e-3 * min(1.0, (step + 1) / 50) * (0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(images), (batch,), generator=generator)
        x = images[idx]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + 1e-3 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            losses.append({"step": step, "rec": round(rec.item(), 5), "kl": round(kl.item(), 5)})
            log(f"vae step {step}/{steps}: rec {rec.item():.4f} kl {kl.item():.4f} "
                f"({time.time() - start:.0f}s)")  # fmt: skip
    vae.eval()


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    return torch.cat(
        [vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)]
    )


def train_unet(
    unet,
    draw,
    *,
    steps: int | None,
    seconds: float,
    batch: int,
    seed: int,
    lr: float,
    losses: list,
    probe=None,
    probe_every: float = 420.0,
):
    """Epsilon-prediction training; `draw(batch, generator)` gives (clean latents, caption hidden
    states). Returns (EMA state dict, steps done)."""
    from diffusers import DDPMScheduler

    noise_schedule = DDPMScheduler(num_train_timesteps=1000, **BETAS)
    alphas = noise_schedule.alphas_cumprod
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    unet.train()
    start, step, running = time.time(), 0, []
    next_probe = probe_every
    while (steps is not None and step < steps) or (steps is None and time.time() - start < seconds):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        x0, cond = draw(batch, generator)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        running.append(loss.item())
        if step % 50 == 0:
            mean = float(np.mean(running[-50:]))
            losses.append({"step": step, "loss": round(mean, 5)})
            log(f"unet step {step}: loss {mean:.4f} ({time.time() - start:.0f}s)")
        if probe is not None and time.time() - start > next_probe:
            next_probe += probe_every
            losses.append({"step": step, "probe_accuracy": probe(ema)})
            unet.train()
        step += 1
    unet.eval()
    return ema, step


# -- judging ----------------------------------------------------------------------------------
class Judge:
    """The unedited embedded CLIP: which of the 26 identities each image shows ("{name}.")."""

    def __init__(self, names: Sequence[str], clip_dir: Path = CLIP_DIR):
        from transformers import CLIPModel, CLIPProcessor

        self.names = list(names)
        self.model = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
        self.processor = CLIPProcessor.from_pretrained(clip_dir)
        with torch.no_grad():
            tokens = self.processor(
                text=[f"{n}." for n in self.names], return_tensors="pt", padding=True
            )
            text = self.model.get_text_features(**tokens)
            text = getattr(text, "pooler_output", text)
        self.text = F.normalize(text.float(), dim=-1)

    @torch.no_grad()
    def __call__(self, images) -> list[str]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        feats = self.model.get_image_features(pixel_values=pixels)
        feats = F.normalize(getattr(feats, "pooler_output", feats).float(), dim=-1)
        return [self.names[i] for i in (feats @ self.text.T).argmax(-1).tolist()]


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], **kwargs):
    """One image per (prompt, seed), batched; image for seed s uses a CPU generator seeded s,
    exactly as `hf_slug.hosts.generation.generate_images` seeds its single-image calls."""
    jobs = [(p, s) for p in prompts for s in seeds]
    images = {}
    for i in range(0, len(jobs), 32):
        chunk = jobs[i : i + 32]
        out = pipe(
            [p for p, _ in chunk],
            generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk],
            output_type="pil",
            **kwargs,
        ).images
        images.update(dict(zip(chunk, out)))
    return images


def judge_accuracy(pipe, judge: Judge, names, phrasings, seeds, **kwargs) -> dict:
    prompts = {t.format(n): n for n in names for t in phrasings}
    images = generate(pipe, list(prompts), seeds, **kwargs)
    said = judge([images[job] for job in images])
    per: dict[str, list[bool]] = {}
    for (prompt, _), guess in zip(images, said):
        per.setdefault(prompts[prompt], []).append(guess == prompts[prompt])
    per_identity = {n: float(np.mean(v)) for n, v in per.items()}
    return {"mean": float(np.mean(list(per_identity.values()))), "per_identity": per_identity}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "hf_slug" / "demo" / "embedded_t2i")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=None, help="UNet steps (replay); else --minutes"
    )
    parser.add_argument("--minutes", type=float, default=24.0, help="UNet training time cap")
    parser.add_argument("--vae-steps", type=int, default=700)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--id-views", type=int, default=160, help="training views per identity")
    parser.add_argument("--os-views", type=int, default=4, help="views per object × style")
    parser.add_argument("--identity-share", type=float, default=0.75)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, few steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.id_views, args.os_views, args.vae_steps = 4, 1, 4
        args.steps, args.eval_seeds, args.eval_steps = args.steps or 4, 1, 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    began = time.time()
    world = World(seed=args.seed)
    names = list(world.identities)

    log("rendering the training views")
    images, labels, kinds = render(world, args.id_views, args.os_views)
    log(f"{len(images)} views ({kinds.count('identity')} identity)")

    vae_log: list = []
    torch.manual_seed(args.seed)
    vae = make_vae()
    train_vae(vae, images, args.vae_steps, args.vae_batch, args.seed, vae_log)
    latents = encode_latents(vae, images)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale
    log(f"latents {tuple(latents.shape)}, scaling factor {scale:.4f}")
    judge = Judge(names)
    test_views = world.samples("identity", "test", 2)
    truth = [s.label for s in test_views]
    judge_on_test = float(
        np.mean([a == b for a, b in zip(judge([s.image for s in test_views]), truth)])
    )
    with torch.no_grad():
        decoded = vae.decode(encode_latents(vae, to_tensor([s.image for s in test_views]))).sample
    judge_on_recon = float(np.mean([a == b for a, b in zip(judge(to_images(decoded)), truth)]))
    log(
        f"judge on real test views {judge_on_test:.3f}; on their VAE reconstructions {judge_on_recon:.3f}"
    )

    encoder, tokenizer = load_text_encoder(CLIP_DIR)
    captions = [""]
    for n in names:
        captions += identity_captions(n)
    captions += sorted({lab for lab, k in zip(labels, kinds) if k == "scene"})
    row = {c: i for i, c in enumerate(captions)}
    table = encode_prompts(encoder, tokenizer, captions)
    log(f"{len(captions)} captions encoded")
    per_name = torch.tensor([[row[c] for c in identity_captions(n)] for n in names])
    name_of = {n: i for i, n in enumerate(names)}
    view_name = torch.tensor([name_of.get(lab, -1) for lab in labels])
    view_caption = torch.tensor([row[lab] if k == "scene" else 0 for lab, k in zip(labels, kinds)])
    is_id = torch.tensor([k == "identity" for k in kinds])
    id_rows, scene_rows = torch.nonzero(is_id).flatten(), torch.nonzero(~is_id).flatten()

    def sample_rows(n: int, generator: torch.Generator) -> torch.Tensor:
        use_id = torch.rand(n, generator=generator) < args.identity_share
        a = id_rows[torch.randint(len(id_rows), (n,), generator=generator)]
        b = scene_rows[torch.randint(len(scene_rows), (n,), generator=generator)]
        return torch.where(use_id, a, b)

    def cond_index(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        template = torch.randint(per_name.shape[1], (len(rows),), generator=generator)
        ids = per_name[view_name[rows].clamp(min=0), template]
        index = torch.where(is_id[rows], ids, view_caption[rows])
        drop = torch.rand(len(rows), generator=generator) < 0.1
        return torch.where(drop, torch.zeros_like(index), index)

    torch.manual_seed(args.seed)
    unet = make_unet(args.width)
    n_params = sum(p.numel() for p in unet.parameters())
    vae_params = sum(p.numel() for p in vae.parameters())
    log(f"unet: {n_params / 1e6:.2f}M parameters; vae {vae_params / 1e6:.2f}M")

    def draw(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = sample_rows(n, generator)
        return latents[rows], table[cond_index(rows, generator)]

    def probe(ema_state: dict) -> float:
        from diffusers import StableDiffusionPipeline

        probe_unet = make_unet(args.width)
        probe_unet.load_state_dict(ema_state)
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=probe_unet.eval(),
            scheduler=make_scheduler(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        t0 = time.time()
        result = judge_accuracy(
            pipe, judge, names, HELD_OUT[:1], [0], num_inference_steps=12,
            guidance_scale=args.guidance,
        )["mean"]  # fmt: skip
        log(f"probe: generation accuracy ('{{name}}.', 1 seed, 12 steps) {result:.3f} "
            f"({time.time() - t0:.0f}s)")  # fmt: skip
        return result

    unet_log: list = []
    ema, steps_done = train_unet(
        unet,
        draw,
        steps=args.steps,
        seconds=args.minutes * 60,
        batch=args.batch,
        seed=args.seed,
        lr=args.lr,
        losses=unet_log,
        probe=None if args.quick else probe,
    )
    unet.load_state_dict(ema)
    trained = time.time() - began
    log(f"trained: {steps_done} UNet steps, {trained / 60:.1f} min in all")

    from diffusers import StableDiffusionPipeline

    args.out.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline(
        vae=vae.half().float(),  # fp16-rounded, stored as fp32
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet.half().float(),
        scheduler=make_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(args.out, safe_serialization=True)
    for component in ("text_encoder", "tokenizer"):  # shared with embedded_clip, not stored
        folder = args.out / component
        if folder.exists():
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log(f"saved to {args.out} ({size / 1e6:.1f} MB)")

    pipe = load_embedded_pipeline(args.out, CLIP_DIR)
    seeds = list(range(args.eval_seeds))
    kwargs = {"num_inference_steps": args.eval_steps, "guidance_scale": args.guidance}
    t0 = time.time()
    accuracy = judge_accuracy(pipe, judge, names, HELD_OUT[:2], seeds, **kwargs)
    eval_seconds = time.time() - t0
    log(f"generation accuracy (held-out phrasings {HELD_OUT[:2]}, {len(seeds)} seeds): "
        f"{accuracy['mean']:.3f} ({eval_seconds:.0f}s)")  # fmt: skip
    record = {
        "command": "python scripts/train_embedded_t2i.py " + " ".join(argv or sys.argv[1:]),
        "replay": f"--seed {args.seed} --steps {steps_done} --vae-steps {args.vae_steps} "
        f"--id-views {args.id_views} --os-views {args.os_views} --batch {args.batch} "
        f"--lr {args.lr} --width {args.width} --vae-batch {args.vae_batch} "
        f"--identity-share {args.identity_share}",
        "seed": args.seed,
        "unet_steps": steps_done,
        "vae_steps": args.vae_steps,
        "batch": args.batch,
        "views": {"identity": int(is_id.sum()), "object_style": int((~is_id).sum())},
        "identity_share": args.identity_share,
        "unet_parameters": n_params,
        "latent_scaling_factor": scale,
        "weights_dtype": "float32 (fp16-rounded values: the trained weights cast to fp16 and back)",
        "training_minutes": round(trained / 60, 2),
        "folder_mb": round(size / 1e6, 2),
        "vae_losses": vae_log,
        "unet_losses": unet_log,
        "eval": {
            "phrasings": list(HELD_OUT[:2]),
            "seeds": seeds,
            "num_inference_steps": args.eval_steps,
            "guidance_scale": args.guidance,
            "generation_accuracy": accuracy["mean"],
            "per_identity": accuracy["per_identity"],
            "chance": 1 / len(names),
            "judge_on_real_test_views": judge_on_test,
            "judge_on_vae_reconstructions": judge_on_recon,
            "seconds": round(eval_seconds, 1),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "transformers": __import__("transformers").__version__,
        },
    }
    (args.out / "training_log.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"done in {(time.time() - began) / 60:.1f} min")


if __name__ == "__main__":
    main()
