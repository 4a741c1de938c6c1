"""A host-aware search criterion for VLMs: the VLM itself answers on held-out images.

SLUG's gradients come from the two-tower CLIPModel, but what counts is what the VLM's language
model reads: the patch tokens at `vision_feature_layer`, not CLIP's pooled class token. A
CLIP-only criterion can be met while the VLM still names the person (issue 19). `VLMAnswerEvaluator`
scores every trial of the step search by asking the VLM "who is in this image?" on held-out
images: each trial's edit of the CLIPModel's vision tensors is copied into the VLM's tower, the
VLM answers greedily, and the tower is restored bit for bit.

Metrics: `forget_acc` (the share of the target's held-out images whose answer names it),
`retain_acc` (other people's images answered with their own name), `kept_acc` (the other retain
images — objects, scenes, anything not naming a candidate — answered exactly as the unedited VLM
answered them, a label-free check of everything else) and `utility`, their mean.

Example:
    >>> judge = VLMIdentityEvaluator(llava_processor, images, people,  # doctest: +SKIP
    ...                              target="Elon Musk")
    >>> evaluator = VLMAnswerEvaluator(llava, clip, judge)  # doctest: +SKIP
    >>> unlearn(clip, clip_processor, forget, retain, config, evaluator=evaluator)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from typing import Any

import torch
from torch import nn

from ..evaluation import Evaluator, Metrics
from ..towers import tower_of
from ..validation import EvaluationData, named_label
from ..weights import mirrored
from .vlm import vision_tower_of
from .vlm_evaluation import AskSettings, VLMIdentityEvaluator, answer_names

CRITERIA = ("vlm", "clip")
KEPT_QUESTION = "What is shown in this image?"


class VLMAnswerEvaluator(Evaluator):
    """Score a CLIPModel edit by the answers of the VLM whose vision tower the CLIPModel shares.

    `judge` holds the held-out images, who each shows, the target and the question; `kept`
    (optional) asks other images a question whose unedited answers must not change. `data`
    records which data it scores on (`unlearn` writes it into the result).
    """

    def __init__(
        self,
        vlm: nn.Module,
        clip_model: nn.Module,
        judge: VLMIdentityEvaluator,
        data: EvaluationData | None = None,
        kept: VLMIdentityEvaluator | None = None,
    ):
        self.vlm = vlm
        self.clip_model = clip_model
        self.judge = judge
        self.data = data
        self.kept = kept
        self._reference = kept.answers(vlm) if kept is not None else None  # the unedited VLM
        vlm_tower = dict(vision_tower_of(vlm).module.named_parameters())
        clip_tower = dict(tower_of(clip_model, "vision").module.named_parameters())
        self._pairs = [(clip_tower[n], vlm_tower[n]) for n in vlm_tower if n in clip_tower]
        self._target_only = VLMIdentityEvaluator(
            judge.processor,
            [im for im, name in zip(judge.images, judge.names) if name == judge.target],
            [judge.target] * judge.names.count(judge.target),
            judge.target,
            settings=judge.settings,
        )

    def __call__(self, model: nn.Module) -> Metrics:
        with self._synced():
            metrics = self.judge(self.vlm)
            if self.kept is not None:
                answers = self.kept.answers(self.vlm)
                same = [
                    a.strip().lower() == r.strip().lower() for a, r in zip(answers, self._reference)
                ]
                metrics["kept_acc"] = sum(same) / len(same)
        parts = [metrics[k] for k in ("retain_acc", "kept_acc") if k in metrics]
        if parts:
            metrics["utility"] = sum(parts) / len(parts)
        return metrics

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the target's images when only `forget_acc` is asked for (most trials)."""
        if set(metrics) <= {"forget_acc"}:
            with self._synced():
                return self._target_only(self.vlm)
        return self(model)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """The target's images batch by batch; stop once more are named than `ceiling` allows
        (then `forget_acc` is a lower bound that already fails: the same decision)."""
        if metric != "forget_acc":
            return self.evaluate_only(model, (metric,)), True
        judge = self._target_only
        total = len(judge.images)

        def named(answers: list[str]) -> int:
            return sum(answer_names(answer, judge.target) for answer in answers)

        with self._synced():
            answers = judge.answers(self.vlm, until=lambda a: named(a) > ceiling * total)
        return {"forget_acc": named(answers) / total}, len(answers) == total

    def _synced(self) -> contextlib.AbstractContextManager[None]:
        """The VLM's tower holds the CLIPModel's current vision tensors (the trial's edit)."""
        return mirrored(self._pairs)


def answer_judges(
    vlm_processor: Any,
    forget: Any,
    retain: Any,
    concept: str,
    labels: Sequence[str],
) -> tuple[VLMIdentityEvaluator, VLMIdentityEvaluator | None]:
    """(judge, kept): the held-out forget images (the concept) and the retain images whose
    caption names another candidate label (that person), asked who they show; and the other
    retain images, asked `KEPT_QUESTION` (None when there are none)."""
    images = [forget.image(i) for i in range(len(forget))]
    names = [concept] * len(images)
    others = [label for label in labels if label != concept]
    rest = []
    for i, text in enumerate(retain.texts):
        label = named_label(text, others)
        if label is not None:
            images.append(retain.image(i))
            names.append(label)
        else:
            rest.append(retain.image(i))
    judge = VLMIdentityEvaluator(vlm_processor, images, names, concept)
    if not rest:
        return judge, None
    # `names` only satisfy the evaluator's bookkeeping: `kept` compares answers, not names
    kept = VLMIdentityEvaluator(
        vlm_processor, rest, [concept] * len(rest), concept, settings=AskSettings(KEPT_QUESTION)
    )
    return judge, kept


def answer_gradients(
    vlm: nn.Module,
    clip_model: nn.Module,
    asked: Sequence[tuple[VLMIdentityEvaluator, Sequence[bool]]],
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """The mean gradient of the VLM's answer loss — the negative log-likelihood of the answers
    the *unedited* VLM gives (and its end token) — for every vision-tower matrix, keyed by the
    CLIPModel's names (what `unlearn`'s `forget_gradients=` / `retain_gradients=` take).

    `asked`: (evaluator holding images and a question, which of its images to use). Ascending
    this gradient makes the VLM stop giving those answers: SLUG's forget-loss convention.
    """
    model = vlm
    tower = vision_tower_of(model)
    weights = {n: p for n, p in tower.module.named_parameters() if p.dim() == 2}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    examples = []
    for evaluator, use in asked:
        answers = evaluator.answers(model)
        examples += [
            (image, evaluator.prompt, answer)
            for image, answer, keep in zip(evaluator.images, answers, use)
            if keep and answer
        ]
    if not examples:
        raise ValueError("no image got an answer to learn from: check the processor and images.")
    processor = asked[0][0].processor
    tokenizer = getattr(processor, "tokenizer", processor)
    grads = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in weights.items()}
    was_training = model.training
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in weights.values():
            p.requires_grad_(True)
        for start in range(0, len(examples), batch_size):
            loss = _answer_loss(model, processor, tokenizer, examples[start : start + batch_size])
            parts = torch.autograd.grad(
                loss * min(batch_size, len(examples) - start),
                list(weights.values()),
                allow_unused=True,
            )
            for name, grad in zip(weights, parts):
                if grad is not None:
                    grads[name] += grad.float()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
        model.train(was_training)
    prefix = tower_of(clip_model, "vision").path
    return {f"{prefix}.{n}" if prefix else n: g / len(examples) for n, g in grads.items()}


def _answer_loss(model: nn.Module, processor: Any, tokenizer: Any, part: list) -> torch.Tensor:
    """Mean NLL of each (image, prompt, answer)'s answer tokens and end token."""
    rows, labels = [], []
    for image, prompt, answer in part:
        ids = processor(text=prompt, images=image, return_tensors="pt")["input_ids"][0]
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
        target = torch.tensor([*target, tokenizer.eos_token_id])
        rows.append(torch.cat([ids, target]))
        labels.append(torch.cat([torch.full_like(ids, -100), target]))
    length = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), length), pad)
    label_ids = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)], label_ids[i, : len(r)], mask[i, : len(r)] = r, lab, 1
    pixels = processor.image_processor([image for image, _, _ in part], return_tensors="pt")
    parameter = next(model.parameters())
    return model(
        input_ids=input_ids.to(parameter.device),
        attention_mask=mask.to(parameter.device),
        labels=label_ids.to(parameter.device),
        pixel_values=pixels["pixel_values"].to(parameter.device, parameter.dtype),
    ).loss


__all__ = [
    "CRITERIA",
    "KEPT_QUESTION",
    "VLMAnswerEvaluator",
    "answer_gradients",
    "answer_judges",
]
