"""Asking a VLM who is in each image: name-in-answer scores and before/after comparisons.

`VLMIdentityEvaluator` asks the question with greedy decoding (`AskSettings`) and scores
`forget_acc` (the target's images still named) and `retain_acc` (the others named);
`before_after` compares a `SLUGModel` with its adapters disabled and active.

Example:
    >>> evaluator = VLMIdentityEvaluator(llava_processor, images, people,  # doctest: +SKIP
    ...                                  target="Elon Musk")
    >>> print(evaluator.before_after(slug).table())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn

from .base import Comparison, Metrics

DEFAULT_QUESTION = "Who is in this image?"
DEFAULT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"


def answer_names(answer: str, name: str) -> bool:
    """Whether `answer` names `name` (case-insensitive substring, as `score_answers` counts).

    Example:
        >>> answer_names("It is Ada Byron.", "ada byron")
        True
    """
    return name.lower() in answer.lower()


def score_answers(answers: Sequence[str], names: Sequence[str], target: str) -> Metrics:
    """Name-in-answer accuracy (case-insensitive substring).

    `forget_acc`: share of the target's images whose answer names the target; `retain_acc`:
    share of the other images whose answer names their own person (absent when there are none).

    Example:
        >>> score_answers(["It is Ada Byron.", "bob stone", "no idea"],
        ...               ["Ada Byron", "Bob Stone", "Bob Stone"], "Ada Byron")
        {'forget_acc': 1.0, 'retain_acc': 0.5}
    """
    if len(answers) != len(names):
        raise ValueError(f"{len(answers)} answers for {len(names)} images.")
    hits = [answer_names(answer, name) for answer, name in zip(answers, names)]
    forget = [hit for hit, name in zip(hits, names) if name == target]
    retain = [hit for hit, name in zip(hits, names) if name != target]
    if not forget:
        raise ValueError(f"no image is labelled with the target {target!r}.")
    metrics = {"forget_acc": sum(forget) / len(forget)}
    if retain:
        metrics["retain_acc"] = sum(retain) / len(retain)
    return metrics


@dataclass
class VLMComparison(Comparison):
    """Metrics and answers of a VLM without (`before`) and with (`after`) its active deltas."""

    answers_before: list[str] = field(default_factory=list)
    answers_after: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AskSettings:
    """How `VLMIdentityEvaluator` asks: the question, the prompt and greedy generation.

    Args:
        question: the question asked.
        prompt_template: a template with `{question}` and the image token; None uses the
            processor's chat template when it has one, else `"USER: <image>\\n{question}
            ASSISTANT:"`.
        max_new_tokens, batch_size: generation settings (greedy, no sampling).

    Example:
        >>> AskSettings(max_new_tokens=3).question
        'Who is in this image?'
    """

    question: str = DEFAULT_QUESTION
    prompt_template: str | None = None
    max_new_tokens: int = 8
    batch_size: int = 8


class VLMIdentityEvaluator:
    """Asks a VLM "who is in this image?" with greedy decoding and scores the answers.

    Args:
        processor: the VLM's processor (e.g. a `LlavaProcessor`).
        images, names: the evaluation images and the person each shows.
        target: the unlearned identity (`forget_acc` is measured on its images).
        settings: the question, prompt and generation settings (`AskSettings`).
        capability_probe: optional `fn(vlm) -> float | dict[str, float]` for general capability
            (e.g. VQA accuracy on a held-out set); a float is reported as `capability`.

    Example:
        >>> evaluator = VLMIdentityEvaluator(processor, images, people,  # doctest: +SKIP
        ...                                  target="Elon Musk")
        >>> evaluator(llava)  # doctest: +SKIP
        {'forget_acc': 0.95, 'retain_acc': 0.9}
    """

    def __init__(
        self,
        processor: Any,
        images: Sequence[Image.Image],
        names: Sequence[str],
        target: str,
        *,
        settings: AskSettings | None = None,
        capability_probe: Callable[[nn.Module], float | Mapping[str, float]] | None = None,
    ):
        if len(images) != len(names):
            raise ValueError(f"{len(images)} images but {len(names)} names.")
        if target not in names:
            raise ValueError(f"no image is labelled with the target {target!r}.")
        self.processor = processor
        self.images = list(images)
        self.names = list(names)
        self.target = target
        self.settings = settings = settings or AskSettings()
        self.question, self.prompt_template = settings.question, settings.prompt_template
        self.max_new_tokens, self.batch_size = settings.max_new_tokens, settings.batch_size
        self.capability_probe = capability_probe
        self._processed: tuple[Any, list[dict[str, torch.Tensor]]] | None = None

    @property
    def prompt(self) -> str:
        """The full prompt sent with each image."""
        image_token = getattr(self.processor, "image_token", None) or "<image>"
        if self.prompt_template is not None:
            if image_token not in self.prompt_template:
                raise ValueError(
                    f"prompt_template must contain the image token {image_token!r}, got "
                    f"{self.prompt_template!r}."
                )
            return self.prompt_template.format(question=self.question)
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": self.question}],
                }
            ]
            return self.processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=False
            )
        return DEFAULT_TEMPLATE.replace("<image>", image_token).format(question=self.question)

    def answers(self, vlm: Any, until: Callable[[list[str]], bool] | None = None) -> list[str]:
        """The VLM's greedy answer for every image (a `SLUGModel` answers with its deltas); with
        `until`, only up to the first batch after which `until(answers so far)` holds."""
        model = _unwrap(vlm)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        parameter = next(model.parameters())
        answers: list[str] = []
        previous_side = getattr(tokenizer, "padding_side", None)
        was_training = model.training
        model.eval()
        try:
            if previous_side is not None:
                tokenizer.padding_side = "left"  # decoder-only batches pad on the left
            for inputs in self._batches():
                inputs = {
                    k: v.to(device=parameter.device, dtype=parameter.dtype)
                    if v.is_floating_point()
                    else v.to(parameter.device)
                    for k, v in inputs.items()
                }
                with torch.no_grad():
                    output = model.generate(
                        **inputs,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=getattr(tokenizer, "pad_token_id", None),
                    )
                new = output[:, inputs["input_ids"].shape[1] :]
                answers += [
                    a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)
                ]
                if until is not None and until(answers):
                    break
        finally:
            if previous_side is not None:
                tokenizer.padding_side = previous_side
            model.train(was_training)
        return answers

    def _batches(self) -> list[dict[str, torch.Tensor]]:
        """The processor's inputs for each batch of images with the prompt, made once per
        processor, prompt and image list (the step search asks the same images at every trial;
        an image changed in place is not seen: give a new image object instead)."""
        prompt = self.prompt
        images = tuple(id(image) for image in self.images)
        key = (id(self.processor), prompt, self.batch_size, images)
        if self._processed is None or self._processed[0] != key:
            batches = [
                self.processor(
                    images=images, text=[prompt] * len(images), return_tensors="pt", padding=True
                )
                for images in (
                    self.images[start : start + self.batch_size]
                    for start in range(0, len(self.images), self.batch_size)
                )
            ]
            self._processed = (key, [dict(batch) for batch in batches])
        return self._processed[1]

    def evaluate(self, vlm: Any) -> tuple[Metrics, list[str]]:
        """Metrics (`forget_acc`, `retain_acc`, probe metrics) and the answers behind them."""
        answers = self.answers(vlm)
        metrics = score_answers(answers, self.names, self.target)
        if self.capability_probe is not None:
            probe = self.capability_probe(_unwrap(vlm))
            extra = {"capability": probe} if isinstance(probe, (int, float)) else dict(probe)
            clash = sorted(set(extra) & set(metrics))
            if clash:
                raise ValueError(f"the capability probe's metric names {clash} are taken.")
            metrics.update({k: float(v) for k, v in extra.items()})
        return metrics, answers

    def __call__(self, vlm: Any) -> Metrics:
        return self.evaluate(vlm)[0]

    def before_after(self, slug: Any) -> VLMComparison:
        """Evaluate a `SLUGModel` with its adapters disabled, then with its active adapters.

        Example:
            >>> print(evaluator.before_after(slug).table())  # doctest: +SKIP
        """
        with slug.disable_adapters():
            before, answers_before = self.evaluate(slug)
        after, answers_after = self.evaluate(slug)
        return VLMComparison(before, after, answers_before, answers_after)


def _unwrap(vlm: Any) -> nn.Module:
    """The model itself, or the model a `SLUGModel` wraps (its hooks stay active)."""
    model = vlm if isinstance(vlm, nn.Module) else getattr(vlm, "model", None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a VLM or a SLUGModel wrapping one, got {type(vlm).__name__}.")
    return model


__all__ = [
    "AskSettings",
    "DEFAULT_QUESTION",
    "DEFAULT_TEMPLATE",
    "VLMComparison",
    "VLMIdentityEvaluator",
    "answer_names",
    "score_answers",
]
