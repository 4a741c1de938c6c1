"""Train the embedded VLM: a real LlavaForConditionalGeneration on the embedded CLIP's world.

The model is the embedded CLIP's vision tower (a bit-exact, frozen copy, so
`hf_slug.hosts.vlm.check_same_tower(vlm, clip)` passes), LLaVA's two-layer projector and a
tiny Llama-style language model with a word-level tokenizer, saved with a real `LlavaProcessor`
(the embedded CLIP's `CLIPImageProcessor`, the tokenizer and a chat template), so

    LlavaForConditionalGeneration.from_pretrained("hf_slug/demo/embedded_vlm")
    LlavaProcessor.from_pretrained("hf_slug/demo/embedded_vlm")

work with plain transformers. It answers "Who is in this picture?" with the person's full name,
"What is shown?" with the object and "In which style?" with the style, for images of the world
(`hf_slug.demo.world`): training views of the `train` split with training phrasings; the layer
choice, step count and settings were judged on `val`; the reported numbers come from `test` views
asked with held-out phrasings, through `processor` + `model.generate` (greedy).

As in LLaVA-1.5 the language model reads the tower's penultimate hidden state
(`vision_feature_layer=-2`) without the class token (`vision_feature_select_strategy="default"`):
16 patch tokens for a 48 px image with 12 px patches. The tower is frozen, so its features are
computed once for every training view and only the projector and the language model train.

    python scripts/train_embedded_vlm.py --out hf_slug/demo/embedded_vlm --seed 0
    python scripts/train_embedded_vlm.py --quick --out /tmp/vlm-smoke     # a minute, tiny data
    python scripts/train_embedded_vlm.py --steps 4000 --out /tmp/replay   # replay a logged run

Training is deterministic for a given seed, step count and torch build (one thread).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_slug.demo.world import World  # noqa: E402

CLIP_DIR = ROOT / "hf_slug" / "demo" / "embedded_clip"
DEFAULT_OUT = ROOT / "hf_slug" / "demo" / "embedded_vlm"
CARD = ROOT / "model_cards" / "embedded_vlm.md"

# Questions: the training phrasings, and held-out phrasings (never trained on) for val and test.
# The held-out phrasings reuse training words in new combinations: a word never seen in training
# would reach the model as an untrained embedding.
QUESTIONS = {
    "identity": {
        "train": (
            "Who is in this picture?",
            "Who is this?",
            "Who is shown in the photo?",
            "Name the person in this picture.",
            "Whose portrait is this?",
            "Who is this person?",
            "Tell me who is in the photo.",
        ),
        "eval": (
            "Who is in this image?",  # hf_slug.hosts.vlm_evaluation.DEFAULT_QUESTION
            "Who is the person in this photo?",
            "Name the person shown in the image.",
        ),
    },
    "object": {
        "train": (
            "What is shown?",
            "What object is this?",
            "What is in the picture?",
            "What is drawn here?",
            "Name the object in this image.",
            "What is this?",
        ),
        "eval": (
            "What is shown in this image?",
            "What object is drawn in the picture?",
            "Name the object shown here.",
        ),
    },
    "style": {
        "train": (
            "In which style?",
            "What style is this?",
            "In which style is this drawn?",
            "What is the style of the picture?",
            "Name the style of this image.",
            "Which art style is this?",
        ),
        "eval": (
            "In which style is this picture?",
            "What style is the image drawn in?",
            "Name the art style shown here.",
        ),
    },
}
TASKS = tuple(QUESTIONS)
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<image>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument(
        "--feature-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise added to the tower's features in training, "
        "relative to their per-dimension std",
    )
    p.add_argument("--identity-views", type=int, default=200, help="train views per identity")
    p.add_argument("--scene-views", type=int, default=24, help="train views per object×style")
    p.add_argument("--val-views", type=int, nargs=2, default=(8, 2), metavar=("ID", "SCENE"))
    p.add_argument("--test-views", type=int, nargs=2, default=(40, 10), metavar=("ID", "SCENE"))
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clip", type=Path, default=CLIP_DIR)
    p.add_argument("--quick", action="store_true", help="tiny data and few steps (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.identity_views, args.scene_views = 60, 6, 1
        args.val_views, args.test_views, args.eval_every = (2, 1), (2, 1), 30
    return args


# -- tokenizer, processor, model ----------------------------------------------------------------
def words_of(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text.lower())]


def vocabulary(world: World) -> list[str]:
    texts = ["USER: ASSISTANT:"]
    texts += [q for task in QUESTIONS.values() for qs in task.values() for q in qs]
    texts += [*world.identities, *world.objects, *world.styles]
    words = list(SPECIALS)
    for text in texts:
        for w in words_of(text):
            if w not in words:
                words.append(w)
    return words


def build_processor(world: World, clip_dir: Path, patch_size: int):
    """A LlavaProcessor: the embedded CLIP's image processor, a word-level tokenizer, a template."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    words = vocabulary(world)
    index = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(index, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", index["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=64,
    )
    image_processor = CLIPImageProcessor.from_pretrained(clip_dir)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )


def build_model(clip, tokenizer, args):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=clip.config.vision_config.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    vlm = LlavaForConditionalGeneration(config)
    vlm.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    vlm.generation_config.pad_token_id = tokenizer.pad_token_id
    vlm.generation_config.bos_token_id = tokenizer.bos_token_id
    vlm.generation_config.eos_token_id = tokenizer.eos_token_id
    vlm.generation_config.do_sample = False
    vlm.generation_config.max_new_tokens = 4
    return vlm.eval()


def prompt_of(processor, question: str) -> str:
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


def answer_of(task: str, sample) -> str:
    if task == "identity":
        return sample.label
    if task == "object":
        return sample.label
    return sample.style


# -- data ---------------------------------------------------------------------------------------
def render(world: World, split: str, views: tuple[int, int]):
    """(identity samples, scene samples) of `split`."""
    return world.samples("identity", split, views[0]), world.samples(
        "object_style", split, views[1]
    )


@torch.no_grad()
def tower_features(vlm, processor, images, batch: int = 256) -> torch.Tensor:
    """The hidden state the language model reads (layer -2, class token dropped), per image."""
    out = []
    for i in range(0, len(images), batch):
        pixels = processor.image_processor(images[i : i + batch], return_tensors="pt")
        hidden = vlm.model.vision_tower(pixels["pixel_values"], output_hidden_states=True)
        out.append(hidden.hidden_states[vlm.config.vision_feature_layer][:, 1:])
    return torch.cat(out)


def examples(task_samples, processor, phrasing: str):
    """Per task: (prompt ids per question, answer ids per sample)."""
    tokenizer = processor.tokenizer
    prompts, answers = {}, {}
    dummy = task_samples["identity"][0].image
    for task, samples in task_samples.items():
        questions = QUESTIONS[task][phrasing]
        prompts[task] = [
            processor(text=prompt_of(processor, q), images=dummy, return_tensors="pt")["input_ids"][
                0
            ]
            for q in questions
        ]
        answers[task] = [
            torch.tensor(
                tokenizer(answer_of(task, s), add_special_tokens=False)["input_ids"]
                + [tokenizer.eos_token_id]
            )
            for s in samples
        ]
    return prompts, answers


def batch_of(items, pad_id: int):
    """items: (prompt ids, answer ids, features); right-padded ids, labels, mask, features."""
    length = max(len(p) + len(a) for p, a, _ in items)
    ids = torch.full((len(items), length), pad_id)
    labels = torch.full((len(items), length), -100)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for row, (p, a, _) in enumerate(items):
        seq = torch.cat([p, a])
        ids[row, : len(seq)] = seq
        labels[row, len(p) : len(seq)] = a
        mask[row, : len(seq)] = 1
    return ids, labels, mask, torch.stack([f for _, _, f in items])


def lm_logits(vlm, ids, mask, features):
    """The VLM's logits, with the (precomputed) tower features put in at the image tokens."""
    model = vlm.model
    embeds = model.get_input_embeddings()(ids)
    image = model.multi_modal_projector(features)
    where = (ids == vlm.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(where, image.to(embeds.dtype))
    hidden = model.language_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    return vlm.lm_head(hidden)


@torch.no_grad()
def exact_match(vlm, prompts, answers, features, pad_id: int, batch: int = 256) -> float:
    """Share of examples whose greedy answer is exactly right (teacher-forced argmax over the
    answer and its end token: equal to greedy decoding's exact match)."""
    vlm.eval()
    hits = 0
    items = [(prompts[i % len(prompts)], a, f) for i, (a, f) in enumerate(zip(answers, features))]
    for start in range(0, len(items), batch):
        ids, labels, mask, feats = batch_of(items[start : start + batch], pad_id)
        logits = lm_logits(vlm, ids, mask, feats)
        pred = logits[:, :-1].argmax(-1)
        gold = labels[:, 1:]
        ok = ((pred == gold) | (gold == -100)).all(-1)
        hits += int(ok.sum())
    return hits / len(items)


@torch.no_grad()
def generate_accuracy(vlm, processor, samples, task: str, batch: int = 64) -> dict:
    """Greedy answers through processor + generate, scored by the label appearing in the answer
    (case-insensitive), per held-out phrasing (cycled over the images)."""
    tokenizer = processor.tokenizer
    questions = QUESTIONS[task]["eval"]
    right, answers = [], []
    for qi, question in enumerate(questions):
        chosen = samples[qi :: len(questions)]
        prompt = prompt_of(processor, question)
        for start in range(0, len(chosen), batch):
            part = chosen[start : start + batch]
            inputs = processor(
                text=[prompt] * len(part), images=[s.image for s in part], return_tensors="pt"
            )
            out = vlm.generate(**inputs, max_new_tokens=4, do_sample=False)
            texts = tokenizer.batch_decode(
                out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for s, text in zip(part, texts):
                label = answer_of(task, s)
                answers.append(text.strip())
                right.append(label.lower() in text.lower())
    result = {"accuracy": sum(right) / len(right), "n": len(right)}
    if task == "identity":
        per: dict[str, list[bool]] = {}
        labels = [s.label for qi in range(len(questions)) for s in samples[qi :: len(questions)]]
        for label, ok in zip(labels, right):
            per.setdefault(label, []).append(ok)
        result["per_identity"] = {k: round(sum(v) / len(v), 4) for k, v in per.items()}
    result["examples"] = answers[:6]
    return result


def held_out(vlm, processor, split_samples) -> dict:
    ids, scenes = split_samples
    return {
        "identity": generate_accuracy(vlm, processor, ids, "identity"),
        "object": generate_accuracy(vlm, processor, scenes, "object"),
        "style": generate_accuracy(vlm, processor, scenes, "style"),
    }


# -- training -----------------------------------------------------------------------------------
def train(args) -> dict:
    from transformers import CLIPModel

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    world = World(seed=args.seed)
    clip = CLIPModel.from_pretrained(args.clip, dtype=torch.float32).eval()
    patch = clip.config.vision_config.patch_size
    processor = build_processor(world, args.clip, patch)
    vlm = build_model(clip, processor.tokenizer, args)
    tokenizer = processor.tokenizer

    train_ids, train_scenes = render(world, "train", (args.identity_views, args.scene_views))
    val = render(world, "val", tuple(args.val_views))
    t_render = time.perf_counter() - t0
    feats = {
        "identity": tower_features(vlm, processor, [s.image for s in train_ids]),
        "scene": tower_features(vlm, processor, [s.image for s in train_scenes]),
    }
    val_feats = {
        "identity": tower_features(vlm, processor, [s.image for s in val[0]]),
        "scene": tower_features(vlm, processor, [s.image for s in val[1]]),
    }
    t_data = time.perf_counter() - t0
    print(
        f"data: {len(train_ids)} identity + {len(train_scenes)} scene train views, {t_data:.0f}s",
        flush=True,
    )
    task_samples = {"identity": train_ids, "object": train_scenes, "style": train_scenes}
    prompts, answers = examples(task_samples, processor, "train")
    val_samples = {"identity": val[0], "object": val[1], "style": val[1]}
    val_prompts, val_answers = examples(val_samples, processor, "eval")
    task_feats = {"identity": feats["identity"], "object": feats["scene"], "style": feats["scene"]}
    val_task_feats = {
        "identity": val_feats["identity"],
        "object": val_feats["scene"],
        "style": val_feats["scene"],
    }
    scale = feats["identity"].flatten(0, 1).std(0)

    for p in vlm.model.vision_tower.parameters():
        p.requires_grad_(False)
    trainable = [p for n, p in vlm.named_parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(args.seed)
    shares = torch.tensor([0.5, 0.25, 0.25])
    history, losses = [], []
    t_train = time.perf_counter()
    for step in range(args.steps):
        vlm.train()
        tasks = torch.multinomial(shares, args.batch, replacement=True, generator=generator)
        items = []
        for t in tasks.tolist():
            task = TASKS[t]
            i = int(torch.randint(len(answers[task]), (1,), generator=generator))
            q = int(torch.randint(len(prompts[task]), (1,), generator=generator))
            items.append((prompts[task][q], answers[task][i], task_feats[task][i]))
        ids, labels, mask, f = batch_of(items, tokenizer.pad_token_id)
        if args.feature_noise > 0:
            f = f + args.feature_noise * scale * torch.randn(f.shape, generator=generator)
        logits = lm_logits(vlm, ids, mask, f)
        loss = nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            entry = {
                "step": step + 1,
                "elapsed_s": round(time.perf_counter() - t_train, 1),
                "train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            }
            for task in TASKS:
                entry[task] = round(
                    exact_match(
                        vlm,
                        val_prompts[task],
                        val_answers[task],
                        val_task_feats[task],
                        tokenizer.pad_token_id,
                    ),
                    4,
                )
            history.append(entry)
            print(json.dumps(entry), flush=True)
    train_s = time.perf_counter() - t_train
    vlm.eval()
    return dict(
        world=world,
        clip=clip,
        processor=processor,
        vlm=vlm,
        history=history,
        losses=losses,
        val=val,
        times={"render": t_render, "data": t_data, "train": train_s},
    )


def save(run: dict, args, argv) -> dict:
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    from hf_slug.hosts.vlm import check_same_tower

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    vlm, processor, world = run["vlm"], run["processor"], run["world"]
    vlm.save_pretrained(out)
    processor.save_pretrained(out)
    for path in out.iterdir():
        path.chmod(0o644)  # safetensors writes 0600; the folder ships as package data
    # Reload with plain transformers and measure what the saved files do.
    loaded = LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    loaded_processor = LlavaProcessor.from_pretrained(out)
    check_same_tower(loaded, run["clip"])
    t0 = time.perf_counter()
    val = held_out(loaded, loaded_processor, run["val"])
    test = held_out(loaded, loaded_processor, render(world, "test", tuple(args.test_views)))
    eval_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in loaded.parameters())
    tower = sum(p.numel() for p in loaded.model.vision_tower.parameters())
    log = {
        "command": "python scripts/train_embedded_vlm.py " + " ".join(argv),
        "seed": args.seed,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "questions": QUESTIONS,
        "data": {
            "train": {
                "identity_views": args.identity_views * len(world.identities),
                "scene_views": args.scene_views * len(world.objects) * len(world.styles),
            },
            "val_views_per_concept": {"identity": args.val_views[0], "scene": args.val_views[1]},
            "test_views_per_concept": {"identity": args.test_views[0], "scene": args.test_views[1]},
        },
        "model": {
            "parameters": n_params,
            "vision_tower_parameters (frozen, = embedded CLIP's)": tower,
            "language_model": f"Llama, {args.layers} layers x {args.hidden}, {args.heads} heads, "
            f"vocabulary {len(processor.tokenizer)} words",
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "image_tokens": int((world.image_size // vlm.config.vision_config.patch_size) ** 2),
        },
        "steps": args.steps,
        "final_train_loss": round(sum(run["losses"][-50:]) / max(1, len(run["losses"][-50:])), 4),
        "val_history_exact_match": run["history"],
        "val_accuracy": val,
        "test_accuracy": test,
        "wall_time_s": {k: round(v, 1) for k, v in {**run["times"], "eval": eval_s}.items()},
        "files": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
        },
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    return log


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    run = train(args)
    log = save(run, args, argv)
    summary = {
        split: {task: log[f"{split}_accuracy"][task]["accuracy"] for task in TASKS}
        for split in ("val", "test")
    }
    print(json.dumps(summary, indent=2))
    print(f"total {time.perf_counter() - start:.0f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
