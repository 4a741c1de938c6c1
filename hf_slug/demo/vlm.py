"""The embedded VLM: a small trained `LlavaForConditionalGeneration` on the demo world.

Its vision tower is the embedded CLIP's (`hf_slug/demo/embedded_clip`), frozen and bit-identical,
so SLUG's gradients for it come from that CLIPModel (`hf_slug.hosts.vlm.unlearn_vlm`); its
projector and tiny Llama-style language model were trained by `scripts/train_embedded_vlm.py` to
answer "Who is in this picture?" with the person's name, "What is shown?" with the object and
"In which style?" with the style (model card: `model_cards/embedded_vlm.md`). The folder loads
with plain transformers:

    >>> from transformers import LlavaForConditionalGeneration, LlavaProcessor
    >>> vlm = LlavaForConditionalGeneration.from_pretrained(embedded_vlm_path())  # doctest: +SKIP

Example:
    >>> from hf_slug.demo.world import World
    >>> vlm, processor = load_embedded_vlm()  # doctest: +SKIP
    >>> image = World().samples("identity", "test", 1, ["Grace Hopper"])[0].image
    >>> ask(vlm, processor, [image], "Who is in this image?")  # doctest: +SKIP
    ['grace hopper']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .folders import checked_folder, retrain

EMBEDDED_VLM = Path(__file__).parent / "embedded_vlm"
FILES = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json")


def embedded_vlm_path(path: str | Path = EMBEDDED_VLM) -> Path:
    """The embedded VLM's folder, checked to hold its weights, config and processor.

    Raises `FileNotFoundError` naming the missing files and the fix.

    Example:
        >>> embedded_vlm_path().name  # doctest: +SKIP
        'embedded_vlm'
    """
    fix = retrain("train_embedded_vlm.py")
    return checked_folder(path, FILES, "the embedded VLM", fix, FileNotFoundError)


def load_embedded_vlm(path: str | Path = EMBEDDED_VLM) -> tuple[Any, Any]:
    """The embedded `LlavaForConditionalGeneration` (fp32, eval mode) and its `LlavaProcessor`.

    Example:
        >>> vlm, processor = load_embedded_vlm()  # doctest: +SKIP
        >>> vlm.config.vision_feature_layer  # doctest: +SKIP
        -2
    """
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    folder = embedded_vlm_path(path)
    vlm = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return vlm, LlavaProcessor.from_pretrained(folder)


def prompt(processor: Any, question: str) -> str:
    """The chat-template prompt for one image and `question`, ready for generation.

    Example:
        >>> prompt(processor, "Who is this?")  # doctest: +SKIP
        'USER: <image>\\nWho is this? ASSISTANT:'
    """
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def ask(
    vlm: Any,
    processor: Any,
    images: Sequence[Any],
    question: str | Sequence[str],
    *,
    max_new_tokens: int = 4,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to `question` (one for all images, or one per image) for each image.

    `vlm` may be a `SLUGModel` wrapping the VLM (its active deltas then apply).

    Example:
        >>> ask(vlm, processor, images, "What is shown?")  # doctest: +SKIP
        ['house', 'star']
    """
    model = vlm if isinstance(vlm, torch.nn.Module) else vlm.model
    questions = [question] * len(images) if isinstance(question, str) else list(question)
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions for {len(images)} images.")
    tokenizer = processor.tokenizer
    answers: list[str | None] = [None] * len(images)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(q, []).append(i)
    was_training = model.training
    model.eval()
    try:
        for q, indices in groups.items():
            text = prompt(processor, q)
            for start in range(0, len(indices), batch_size):
                part = indices[start : start + batch_size]
                inputs = processor(
                    text=[text] * len(part), images=[images[i] for i in part], return_tensors="pt"
                )
                out = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tokenizer.pad_token_id,
                )
                decoded = tokenizer.batch_decode(
                    out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
                )
                for i, answer in zip(part, decoded):
                    answers[i] = answer.strip()
    finally:
        model.train(was_training)
    return [a or "" for a in answers]


__all__ = ["EMBEDDED_VLM", "ask", "embedded_vlm_path", "load_embedded_vlm", "prompt"]
