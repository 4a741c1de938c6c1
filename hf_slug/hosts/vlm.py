"""LLaVA-style VLMs: SLUG on the CLIP vision tower a VLM reads its image features from.

Only the vision tower changes; the language model and the projector stay untouched (SLUG.md §6).
The gradients come from the two-tower `CLIPModel` the VLM's vision tower came from (LLaVA-1.5:
`openai/clip-vit-large-patch14-336`), since SLUG's losses need both towers. `LlavaHost` is the
VLM as a `Host` (hosts.base): candidates are the vision blocks whose output reaches the language
model (LLaVA reads `hidden_states[k]` of its tower for each `k` in `config.vision_feature_layer`,
default -2, so the blocks above the highest such layer get no gradient from the language model
and are never candidates). The delta is keyed by the VLM's own parameter names, found
structurally (transformers 5.x keeps the tower at `model.vision_tower.…`, older versions at
`vision_tower.vision_model.…`), and is loaded, stacked and merged through `SLUGModel` like any
other delta.

Example:
    >>> from hf_slug import SLUGConfig
    >>> from hf_slug.model import SLUGModel
    >>> out = unlearn_vlm(llava, clip, clip_processor, forget, retain,  # doctest: +SKIP
    ...                   SLUGConfig(concept="Elon Musk", candidate_labels=names),
    ...                   vlm_processor=llava_processor)
    >>> slug = SLUGModel(llava)  # doctest: +SKIP
    >>> slug.add_adapter("elon", out.delta)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import SLUGConfig
from ..data import PairSource, load_pairs
from ..errors import ConfigError, UnsupportedModelError
from ..options import UnlearnOptions
from ..request import ConceptRequest, EvaluatorLike
from ..towers import Tower, find_towers
from ..validation import check_labels, held_out_split
from .base import (
    HostUnlearning,
    check_tower,
    first_blocks,
    host_candidates,
    host_config,
    host_names,
    reject_moved_keywords,
    unlearn_on_host,
)

FeatureLayer = int | Sequence[int]
VLM_KNOBS = ("evaluator", "feature_layer", "concept_kind", "criterion")
RUN_KNOBS = ("forget_gradients", "retain_gradients", "cache_dir", "on_top_of", "progress")

SUPPORTED = (
    "hf_slug unlearns VLMs whose vision tower is a transformers CLIPVisionModel and whose config "
    "names the layer(s) the language model reads (`vision_feature_layer`), such as "
    "LlavaForConditionalGeneration (LLaVA-1.5, tower from openai/clip-vit-large-patch14-336); "
    "the gradients come from the matching two-tower CLIPModel."
)


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
    return first_blocks(
        reached,
        f"the language model reads only the vision embeddings (feature layer(s) {list(layers)}): "
        "no vision block reaches it, so SLUG has nothing to edit.",
    )


@dataclass(frozen=True)
class LlavaHost:
    """A LLaVA-style VLM's CLIP vision tower as a `Host`; `feature_layer` overrides the VLM's
    `config.vision_feature_layer`.

    Example:
        >>> LlavaHost(llava).usable_blocks()  # 24 blocks, vision_feature_layer=-2  # doctest: +SKIP
        [0, 1, ..., 22]
    """

    vlm: nn.Module
    feature_layer: FeatureLayer | None = None
    component: ClassVar[str] = "vision_tower"
    prefix: ClassVar[str] = ""
    tower_kind: ClassVar[str] = "vision"
    clip_hint: ClassVar[str] = (
        "Pass the CLIPModel the VLM's vision tower came from (for LLaVA-1.5, "
        "openai/clip-vit-large-patch14-336, loaded from the same revision)."
    )

    @property
    def family(self) -> str:
        return getattr(getattr(self.vlm, "config", None), "model_type", None) or "llava"

    @property
    def label(self) -> str:
        return f"{type(self.vlm).__name__}'s vision tower"

    @property
    def base_model_name_or_path(self) -> str | None:
        return getattr(getattr(self.vlm, "config", None), "_name_or_path", None) or None

    @property
    def base_model_revision(self) -> str | None:
        return getattr(getattr(self.vlm, "config", None), "_commit_hash", None)

    def tower(self) -> Tower:
        return vision_tower_of(self.vlm)

    def usable_blocks(self) -> list[int]:
        return usable_vision_blocks(self.vlm, self.feature_layer)

    def parameters(self) -> dict[str, torch.Tensor]:
        return dict(self.vlm.named_parameters())

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}


def check_same_tower(vlm: nn.Module, clip_model: nn.Module) -> None:
    """Raise `FingerprintMismatchError` unless the VLM's vision tower is the CLIPModel's.

    The rule is `check_tower`'s: every tensor of the VLM's tower must equal the CLIPModel's
    tensor of the same (tower-relative) name once the CLIP tensor is cast to the VLM's dtype (a
    float16 VLM built from a float32 CLIP passes).

    Example:
        >>> check_same_tower(llava, CLIPModel.from_pretrained(  # doctest: +SKIP
        ...     "openai/clip-vit-large-patch14-336"))
    """
    check_tower(LlavaHost(vlm), clip_model)


def vlm_names(vlm: nn.Module, clip_model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Map CLIPModel vision-tower parameter names to the VLM's names for the same tensors.

    Example:
        >>> vlm_names(llava, clip, ["vision_model.encoder.layers.3.mlp.fc1.weight"])  # doctest: +SKIP
        {'vision_model.encoder.layers.3.mlp.fc1.weight': 'model.vision_tower.encoder.layers.3.mlp.fc1.weight'}
    """
    return host_names(LlavaHost(vlm), clip_model, names)


# -- unlearning ---------------------------------------------------------------------------------
@dataclass
class VLMUnlearning(HostUnlearning):
    """What `unlearn_vlm` returns: a `HostUnlearning` with the vision tower's one run.

    `result` is the SLUG run on the CLIPModel (CLIPModel names); `delta` the chosen update keyed
    by the VLM's own parameter names (None when no layer met the criterion); `vision_tower` the
    tower's module path in the VLM; `usable_blocks` the candidate blocks.
    """

    @property
    def usable_blocks(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.run.usable_blocks

    @property
    def vision_tower(self) -> str:
        return self.run.tower_path


MOVED = {  # unlearn_vlm's keywords before hf_slug grouped them (issue 13)
    **{k: f"options=VLMOptions({k}=...)" for k in VLM_KNOBS},
    **{k: f"options=VLMOptions(unlearn=UnlearnOptions({k}=...))" for k in RUN_KNOBS},
}


@dataclass(frozen=True)
class VLMOptions:
    """How `unlearn_vlm` runs, beside the concept's data and config.

    Args:
        evaluator: scores the trials instead of the host criterion.
        feature_layer: the hidden state(s) the language model reads (default: the VLM's
            `config.vision_feature_layer`).
        concept_kind: written into the delta.
        criterion: "vlm" (the VLM's answers judge; default when `vlm_processor` is given) or
            "clip" (CLIP zero-shot on the pooled class token).
        unlearn: `UnlearnOptions` (gradients given or cached, `on_top_of`, progress bars).

    Example:
        >>> VLMOptions(criterion="clip").concept_kind
        'identity'
    """

    evaluator: EvaluatorLike | None = None
    feature_layer: FeatureLayer | None = None
    concept_kind: str = "identity"
    criterion: str | None = None
    unlearn: UnlearnOptions = field(default_factory=UnlearnOptions)


def unlearn_vlm(
    vlm: nn.Module,
    clip_model: nn.Module,
    processor: Any,
    forget: PairSource,
    retain: PairSource,
    config: SLUGConfig,
    *,
    vlm_processor: Any = None,
    options: VLMOptions | UnlearnOptions | None = None,
    **moved: Any,
) -> VLMUnlearning:
    """Unlearn `config.concept` from a LLaVA-style VLM's CLIP vision tower; models stay untouched.

    Checks first that `vlm`'s vision tower equals `clip_model`'s (`check_tower`), then runs SLUG
    on `clip_model` (with `processor`, the CLIP processor) over the vision blocks whose output
    reaches the language model (`VLMOptions.feature_layer`, default the VLM's
    `vision_feature_layer`). Only the vision tower is searched, whatever `config.towers` says,
    as long as it includes "vision". The search's criterion is the VLM's own answers when
    `vlm_processor` (the VLM's processor, e.g. a `LlavaProcessor`) is given (`criterion="vlm"`,
    the default then): held-out forget and retain images (`config.validation_share`) are shown
    to the VLM with each trial's edit, and the target must no longer be named
    (`hf_slug.hosts.vlm_criterion`). `criterion="clip"` scores CLIP zero-shot on the pooled
    class token instead, which the language model does not read: it can be met while the VLM
    still names the person. `VLMOptions.evaluator` replaces either. Apply the delta with
    `SLUGModel(vlm).add_adapter(name, out.delta)`.

    Example:
        >>> out = unlearn_vlm(llava, clip, clip_processor, forget, retain,  # doctest: +SKIP
        ...                   SLUGConfig(concept="Elon Musk", candidate_labels=names),
        ...                   vlm_processor=llava_processor)
        >>> out.delta.save_pretrained("deltas/elon")  # doctest: +SKIP
    """
    reject_moved_keywords("unlearn_vlm", moved, MOVED)
    if not isinstance(options, VLMOptions):
        options = VLMOptions(unlearn=options or UnlearnOptions())
    host = LlavaHost(vlm, options.feature_layer)
    host.tower()
    host.usable_blocks()
    check_tower(host, clip_model)
    config = host_config(host, config)
    evaluator, run_options = options.evaluator, options.unlearn
    if evaluator is None:
        evaluator, forget, retain, host_grads = _host_criterion(
            vlm, clip_model, forget, retain, config, vlm_processor, options.criterion
        )
        if host_grads is not None:  # the VLM's answer loss, unless gradients were given
            given_f, given_r = run_options.forget_gradients, run_options.retain_gradients
            run_options = replace(
                run_options,
                forget_gradients=given_f if given_f is not None else host_grads[0],
                retain_gradients=given_r if given_r is not None else host_grads[1],
            )
        if evaluator is not None and config.layer == "auto":
            # the VLM judges every trial, so every usable block is searched, not only CLIP's
            # Pareto front (measured: the front's layers cost the other people more)
            config = replace(config, layer=host_candidates(host, clip_model))
    request = ConceptRequest(forget, retain, config, evaluator)
    run = unlearn_on_host(host, clip_model, processor, request, run_options, options.concept_kind)
    return VLMUnlearning([run], run.delta)


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


__all__ = [
    "FeatureLayer",
    "LlavaHost",
    "VLMOptions",
    "VLMUnlearning",
    "check_same_tower",
    "feature_layers_of",
    "unlearn_vlm",
    "usable_vision_blocks",
    "vision_tower_of",
    "vlm_names",
]
