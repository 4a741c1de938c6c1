"""LLaVA-style VLMs: SLUG on the CLIP vision tower a VLM reads its image features from.

Only the vision tower changes; the language model and the projector stay untouched (SLUG.md §6).
The gradients come from the two-tower `CLIPModel` the VLM's vision tower came from (LLaVA-1.5:
`openai/clip-vit-large-patch14-336`), since SLUG's losses need both towers. Candidates are the
vision blocks whose output reaches the language model: LLaVA reads `hidden_states[k]` of its
tower for each `k` in `config.vision_feature_layer` (default -2), so the blocks above the highest
such layer get no gradient from the language model and are never candidates. The delta is keyed
by the VLM's own parameter names, found structurally (transformers 5.x keeps the tower at
`model.vision_tower.…`, older versions at `vision_tower.vision_model.…`), and is loaded, stacked
and merged through `SLUGModel` like any other delta.

Example:
    >>> from hf_slug import SLUGConfig
    >>> from hf_slug.model import SLUGModel
    >>> out = unlearn_vlm(llava, clip, clip_processor, forget, retain,  # doctest: +SKIP
    ...                   SLUGConfig(concept="Elon Musk", candidate_labels=names))
    >>> slug = SLUGModel(llava)  # doctest: +SKIP
    >>> slug.add_adapter("elon", out.delta)  # doctest: +SKIP
    >>> evaluator = VLMIdentityEvaluator(llava_processor, images, people,  # doctest: +SKIP
    ...                                  target="Elon Musk")
    >>> print(evaluator.before_after(slug).table())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ..config import SLUGConfig, TargetInfo
from ..data import PairSource, load_pairs
from ..delta import ConceptDelta
from ..errors import ConfigError, FingerprintMismatchError, UnsupportedModelError
from ..evaluation import Evaluator
from ..io import fingerprint
from ..unlearn import UnlearningResult, unlearn
from ..validation import check_labels, held_out_split
from .clip import Tower, candidate_names, find_towers, require_clip, tower_of

FeatureLayer = int | Sequence[int]
Metrics = dict[str, float]

SUPPORTED = (
    "hf_slug unlearns VLMs whose vision tower is a transformers CLIPVisionModel and whose config "
    "names the layer(s) the language model reads (`vision_feature_layer`), such as "
    "LlavaForConditionalGeneration (LLaVA-1.5, tower from openai/clip-vit-large-patch14-336); "
    "the gradients come from the matching two-tower CLIPModel."
)
DEFAULT_QUESTION = "Who is in this image?"
DEFAULT_TEMPLATE = "USER: <image>\n{question} ASSISTANT:"


# -- the tower and its usable blocks ------------------------------------------------------------
def vision_tower_of(vlm: nn.Module) -> Tower:
    """The VLM's CLIP vision tower, found by structure wherever transformers keeps it.

    Raises `UnsupportedModelError` for a model without one (a plain language model, a SigLIP
    tower, a two-tower CLIPModel, several vision towers).

    Example:
        >>> vision_tower_of(llava).path  # transformers 5.x  # doctest: +SKIP
        'model.vision_tower'
    """
    towers = find_towers(vlm)
    vision = [t for t in towers if t.kind == "vision"]
    name = type(vlm).__name__
    if any(t.kind == "text" for t in towers) and vision:
        raise UnsupportedModelError(
            f"{name} is a two-tower CLIP model, not a VLM: unlearn it with hf_slug.unlearn, and "
            "pass it as `clip_model` (not as `vlm`) to unlearn_vlm."
        )
    if not vision:
        raise UnsupportedModelError(f"{name} has no CLIP vision tower. {SUPPORTED}")
    if len(vision) > 1:
        raise UnsupportedModelError(
            f"{name} has several vision towers ({[t.path for t in vision]}); {SUPPORTED}"
        )
    tower = vision[0]
    module = tower.module
    if not (hasattr(module, "pre_layrnorm") and hasattr(module.embeddings, "class_embedding")):
        raise UnsupportedModelError(
            f"{name}'s vision tower at {tower.path or '<root>'} is a {type(module).__name__}, not "
            f"a CLIP vision transformer (it lacks CLIP's class embedding and pre-LayerNorm, e.g. "
            f"a SigLIP tower). {SUPPORTED}"
        )
    return tower


def feature_layers_of(vlm: nn.Module) -> tuple[int, ...]:
    """The hidden-state indices the VLM's language model reads (`config.vision_feature_layer`).

    Example:
        >>> feature_layers_of(llava)  # LLaVA-1.5  # doctest: +SKIP
        (-2,)
    """
    config = getattr(vlm, "config", None)
    for attribute in ("vision_feature_layer", "vision_feature_layers"):
        value = getattr(config, attribute, None)
        if value is not None:
            return (value,) if isinstance(value, int) else tuple(value)
    raise UnsupportedModelError(
        f"{type(vlm).__name__}'s config names no `vision_feature_layer`, so which vision blocks "
        f"reach its language model is unknown: pass feature_layer=... explicitly. {SUPPORTED}"
    )


def usable_vision_blocks(vlm: nn.Module, feature_layer: FeatureLayer | None = None) -> list[int]:
    """Indices of the vision blocks whose output reaches the language model.

    A CLIP tower with `L` blocks has `L + 1` hidden states: index 0 is the embeddings, index `k`
    the output of block `k - 1`, negative indices count from the end. The language model reads
    the hidden states at `feature_layer` (default: the VLM's `config.vision_feature_layer`), so
    blocks `0 … max(k) - 1` are usable and the blocks above them are not.

    Example:
        >>> usable_vision_blocks(llava)  # 24 blocks, vision_feature_layer=-2  # doctest: +SKIP
        [0, 1, ..., 22]
    """
    blocks = len(vision_tower_of(vlm).layers)
    if feature_layer is None:
        layers = feature_layers_of(vlm)
    else:
        layers = (feature_layer,) if isinstance(feature_layer, int) else tuple(feature_layer)
    if not layers:
        raise ValueError("feature_layer must name at least one hidden-state index.")
    reached = 0
    for k in layers:
        if isinstance(k, bool) or not isinstance(k, int) or not -(blocks + 1) <= k <= blocks:
            raise ValueError(
                f"vision feature layer {k!r} is no hidden-state index of a {blocks}-block vision "
                f"tower (valid: -{blocks + 1} … {blocks})."
            )
        reached = max(reached, k if k >= 0 else blocks + 1 + k)
    if reached == 0:
        raise ValueError(
            f"the language model reads only the vision embeddings (feature layer(s) {list(layers)})"
            ": no vision block reaches it, so SLUG has nothing to edit."
        )
    return list(range(reached))


def check_same_tower(vlm: nn.Module, clip_model: nn.Module) -> None:
    """Raise `FingerprintMismatchError` unless the VLM's vision tower is the CLIPModel's.

    Every tensor of the VLM's tower must equal the CLIPModel's tensor of the same (tower-relative)
    name, bit for bit once the CLIP tensor is cast to the VLM's dtype (a float16 VLM built from a
    float32 CLIP passes).

    Example:
        >>> check_same_tower(llava, CLIPModel.from_pretrained(  # doctest: +SKIP
        ...     "openai/clip-vit-large-patch14-336"))
    """
    require_clip(clip_model)
    mine = dict(vision_tower_of(vlm).module.named_parameters())
    theirs = dict(tower_of(clip_model, "vision").module.named_parameters())
    fix = (
        "Pass the CLIPModel the VLM's vision tower came from (for LLaVA-1.5, "
        "openai/clip-vit-large-patch14-336, loaded from the same revision)."
    )
    missing = sorted(set(mine) - set(theirs))
    if missing:
        raise FingerprintMismatchError(
            f"the CLIP model's vision tower lacks {missing[:3]}, which {type(vlm).__name__}'s "
            f"vision tower has: they are different architectures. {fix}"
        )
    for name, tensor in mine.items():
        other = theirs[name]
        same = tensor.shape == other.shape and torch.equal(
            tensor.detach(), other.detach().to(device=tensor.device, dtype=tensor.dtype)
        )
        if not same:
            raise FingerprintMismatchError(
                f"{type(vlm).__name__}'s vision tower differs from the CLIP model's at {name} "
                f"(shape {list(tensor.shape)} vs {list(other.shape)}, sha256 "
                f"{fingerprint(tensor)[:16]}… vs {fingerprint(other.to(tensor.dtype))[:16]}…): "
                f"SLUG's gradients would be those of another tower. {fix}"
            )


# -- unlearning ---------------------------------------------------------------------------------
@dataclass
class VLMUnlearning:
    """What `unlearn_vlm` returns.

    `result` is the SLUG run on the CLIPModel (its names are CLIPModel names); `delta` is the
    chosen update keyed by the VLM's own parameter names (None when no layer met the criterion);
    `vision_tower` is the tower's module path in the VLM; `usable_blocks` the candidate blocks.
    """

    result: UnlearningResult
    delta: ConceptDelta | None
    vision_tower: str
    usable_blocks: tuple[int, ...]

    @property
    def converged(self) -> bool:
        return self.delta is not None


def unlearn_vlm(
    vlm: nn.Module,
    clip_model: nn.Module,
    processor: Any,
    forget: PairSource,
    retain: PairSource,
    config: SLUGConfig,
    *,
    evaluator: Evaluator | Callable[[nn.Module], Mapping[str, float]] | None = None,
    feature_layer: FeatureLayer | None = None,
    concept_kind: str = "identity",
    forget_gradients: str | Path | Mapping[str, torch.Tensor] | None = None,
    retain_gradients: str | Path | Mapping[str, torch.Tensor] | None = None,
    cache_dir: str | Path | None = None,
    on_top_of: Sequence[Any] = (),
    vlm_processor: Any = None,
    criterion: str | None = None,
    progress: bool = True,
) -> VLMUnlearning:
    """Unlearn `config.concept` from a LLaVA-style VLM's CLIP vision tower; models stay untouched.

    Checks first that `vlm`'s vision tower equals `clip_model`'s, then runs `hf_slug.unlearn` on
    `clip_model` (with `processor`, the CLIP processor) over the vision blocks whose output
    reaches the language model (`feature_layer`, default the VLM's `vision_feature_layer`). Only
    the vision tower is searched, whatever `config.towers` says, as long as it includes
    "vision". The search's criterion is the VLM's own answers when `vlm_processor` (the VLM's
    processor, e.g. a `LlavaProcessor`) is given (`criterion="vlm"`, the default then): held-out
    forget and retain images (`config.validation_share`) are shown to the VLM with each trial's
    edit, and the target must no longer be named (`hf_slug.families.vlm_criterion`).
    `criterion="clip"` scores CLIP zero-shot on the pooled class token instead, which the
    language model does not read: it can be met while the VLM still names the person.
    `evaluator` replaces either. `on_top_of`: CLIPModel-keyed deltas (e.g. an earlier
    `out.result.deltas`) the search runs on top of, as in `unlearn`. Apply the delta with
    `SLUGModel(vlm).add_adapter(name, delta)`.

    Example:
        >>> out = unlearn_vlm(llava, clip, clip_processor, forget, retain,  # doctest: +SKIP
        ...                   SLUGConfig(concept="Elon Musk", candidate_labels=names))
        >>> out.delta.save_pretrained("deltas/elon")  # doctest: +SKIP
    """
    tower = vision_tower_of(vlm)
    blocks = usable_vision_blocks(vlm, feature_layer)
    check_same_tower(vlm, clip_model)
    if "vision" not in config.towers:
        raise ValueError(
            f"a VLM is unlearned in its vision tower only, but config.towers is {config.towers}: "
            "use towers=('vision',)."
        )
    config = replace(config, towers=("vision",))
    candidates = candidate_names(clip_model, ("vision",), max_blocks={"vision": len(blocks)})
    if evaluator is None:
        evaluator, forget, retain, host_grads = _host_criterion(
            vlm, clip_model, forget, retain, config, vlm_processor, criterion
        )
        if host_grads is not None:  # the VLM's answer loss, unless gradients were given
            forget_gradients = forget_gradients if forget_gradients is not None else host_grads[0]
            retain_gradients = retain_gradients if retain_gradients is not None else host_grads[1]
        if evaluator is not None and config.layer == "auto":
            # the VLM judges every trial, so every usable block is searched, not only CLIP's
            # Pareto front (measured: the front's layers cost the other people more)
            config = replace(config, layer=list(candidates))
    result = unlearn(
        clip_model,
        processor,
        forget,
        retain,
        config,
        evaluator=evaluator,
        forget_gradients=forget_gradients,
        retain_gradients=retain_gradients,
        cache_dir=cache_dir,
        candidates=candidates,
        on_top_of=on_top_of,
        progress=progress,
    )
    delta = _vlm_delta(result, vlm, clip_model, concept_kind) if result.converged else None
    return VLMUnlearning(result, delta, tower.path, tuple(blocks))


def _host_criterion(vlm, clip_model, forget, retain, config, vlm_processor, criterion):
    """(evaluator or None, forget, retain, (forget grads, retain grads) or None): for
    `criterion="vlm"` the VLM's answers on a held-out split judge the trials and the VLM's answer
    loss on the gradient split gives the gradients; `"clip"` leaves both to `unlearn`."""
    from .vlm_criterion import CRITERIA, VLMAnswerEvaluator, answer_gradients, answer_judges

    criterion = criterion or ("vlm" if vlm_processor is not None else "clip")
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    if criterion == "clip":
        if vlm_processor is None:
            warnings.warn(
                "unlearn_vlm scores its search with CLIP zero-shot on the pooled class token, "
                "which the language model never reads: the VLM may still name the person. Pass "
                "vlm_processor= (the VLM's processor) to search on the VLM's own answers.",
                stacklevel=3,
            )
        return None, forget, retain, None
    if vlm_processor is None:
        raise ConfigError(
            "criterion='vlm' asks the VLM itself on held-out images: pass vlm_processor= (e.g. "
            "LlavaProcessor.from_pretrained(the VLM's repo)), or criterion='clip'."
        )
    check_labels(config)
    forget = load_pairs(forget, name="forget set").with_captions(
        config.caption_mode, config.concept
    )
    retain = load_pairs(retain, name="retain set")
    grad_f, grad_r, val_f, val_r, data = held_out_split(forget, retain, config)
    labels = config.candidate_labels
    judge, kept = answer_judges(vlm_processor, val_f, val_r, config.concept, labels)
    evaluator = VLMAnswerEvaluator(vlm, clip_model, judge, data, kept)
    # gradients: the unedited VLM's own answers on the gradient split, named or not
    g_judge, g_kept = answer_judges(vlm_processor, grad_f, grad_r, config.concept, labels)
    target = [name == config.concept for name in g_judge.names]
    forget_grads = answer_gradients(vlm, clip_model, [(g_judge, target)])
    retain_asked = [(g_judge, [not t for t in target])]
    if g_kept is not None:
        retain_asked.append((g_kept, [True] * len(g_kept.images)))
    retain_grads = answer_gradients(vlm, clip_model, retain_asked)
    return evaluator, grad_f, grad_r, (forget_grads, retain_grads)


def vlm_names(vlm: nn.Module, clip_model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Map CLIPModel vision-tower parameter names to the VLM's names for the same tensors.

    Example:
        >>> vlm_names(llava, clip, ["vision_model.encoder.layers.3.mlp.fc1.weight"])  # doctest: +SKIP
        {'vision_model.encoder.layers.3.mlp.fc1.weight': 'model.vision_tower.encoder.layers.3.mlp.fc1.weight'}
    """
    source = tower_of(clip_model, "vision")
    target = vision_tower_of(vlm)
    mapping = {}
    for name in names:
        if source.path and not name.startswith(source.path + "."):
            raise UnsupportedModelError(
                f"{name} is not in the CLIP model's vision tower ({source.path}): only vision "
                "tower tensors map into a VLM."
            )
        relative = name[len(source.path) + 1 :] if source.path else name
        mapping[name] = target.name(relative)
    return mapping


def _vlm_delta(
    result: UnlearningResult,
    vlm: nn.Module,
    clip_model: nn.Module,
    concept_kind: str,
) -> ConceptDelta:
    """The result's delta renamed into the VLM, fingerprinted against the VLM's own tensors."""
    rename = vlm_names(vlm, clip_model, list(result.deltas))
    family = getattr(getattr(vlm, "config", None), "model_type", None) or "llava"
    delta = ConceptDelta.from_result(
        result,
        concept_kind=concept_kind,
        model_family=family,
        component="vision_tower",
        rename=rename,
    )
    params = dict(vlm.named_parameters())
    targets = {
        name: TargetInfo(
            list(params[name].shape),
            str(params[name].dtype).removeprefix("torch."),
            fingerprint(params[name]),
            "vision",
        )
        for name in delta.config.targets
    }
    vlm_config = getattr(vlm, "config", None)
    config = replace(
        delta.config,
        targets=targets,
        base_model_name_or_path=getattr(vlm_config, "_name_or_path", None) or None,
        base_model_revision=getattr(vlm_config, "_commit_hash", None),
        metrics={**delta.config.metrics, "gradients_from": result.base_model_name_or_path},
    )
    return ConceptDelta(config, delta.tensors)


# -- evaluation ---------------------------------------------------------------------------------
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
    hits = [name.lower() in answer.lower() for answer, name in zip(answers, names)]
    forget = [hit for hit, name in zip(hits, names) if name == target]
    retain = [hit for hit, name in zip(hits, names) if name != target]
    if not forget:
        raise ValueError(f"no image is labelled with the target {target!r}.")
    metrics = {"forget_acc": sum(forget) / len(forget)}
    if retain:
        metrics["retain_acc"] = sum(retain) / len(retain)
    return metrics


@dataclass
class VLMComparison:
    """Metrics and answers of a VLM without (`before`) and with (`after`) its active deltas."""

    before: Metrics
    after: Metrics
    answers_before: list[str] = field(default_factory=list)
    answers_after: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A plain-text before/after table."""
        return before_after_table(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {"before": dict(self.before), "after": dict(self.after)}


def before_after_table(before: Mapping[str, float], after: Mapping[str, float]) -> str:
    """A plain-text table of metrics before and after unlearning.

    Example:
        >>> print(before_after_table({"forget_acc": 1.0}, {"forget_acc": 0.0}))
        metric                before     after
        forget_acc            1.0000    0.0000
    """
    lines = [f"{'metric':<18}{'before':>10}{'after':>10}"]
    for key in dict.fromkeys([*before, *after]):
        b, a = before.get(key, math.nan), after.get(key, math.nan)
        lines.append(f"{key:<18}{b:>10.4f}{a:>10.4f}")
    return "\n".join(lines)


class VLMIdentityEvaluator:
    """Asks a VLM "who is in this image?" with greedy decoding and scores the answers.

    Args:
        processor: the VLM's processor (e.g. a `LlavaProcessor`).
        images, names: the evaluation images and the person each shows.
        target: the unlearned identity (`forget_acc` is measured on its images).
        question: the question asked.
        prompt_template: a template with `{question}` and the image token; None uses the
            processor's chat template when it has one, else `"USER: <image>\\n{question}
            ASSISTANT:"`.
        max_new_tokens, batch_size: generation settings (greedy, no sampling).
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
        question: str = DEFAULT_QUESTION,
        prompt_template: str | None = None,
        max_new_tokens: int = 8,
        batch_size: int = 8,
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
        self.question = question
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.capability_probe = capability_probe

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

    def answers(self, vlm: Any) -> list[str]:
        """The VLM's greedy answer for every image (a `SLUGModel` answers with its deltas)."""
        model = _unwrap(vlm)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        prompt = self.prompt
        parameter = next(model.parameters())
        answers: list[str] = []
        previous_side = getattr(tokenizer, "padding_side", None)
        was_training = model.training
        model.eval()
        try:
            if previous_side is not None:
                tokenizer.padding_side = "left"  # decoder-only batches pad on the left
            for start in range(0, len(self.images), self.batch_size):
                images = self.images[start : start + self.batch_size]
                inputs = self.processor(
                    images=images, text=[prompt] * len(images), return_tensors="pt", padding=True
                )
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
        finally:
            if previous_side is not None:
                tokenizer.padding_side = previous_side
            model.train(was_training)
        return answers

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
    "VLMComparison",
    "VLMIdentityEvaluator",
    "VLMUnlearning",
    "before_after_table",
    "check_same_tower",
    "feature_layers_of",
    "score_answers",
    "unlearn_vlm",
    "usable_vision_blocks",
    "vision_tower_of",
    "vlm_names",
]
