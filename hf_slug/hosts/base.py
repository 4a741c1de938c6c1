"""The Host protocol: one interface for every model that carries a CLIP tower (SLUG.md §6).

SLUG's losses need both CLIP towers, so a host's tower (a Stable Diffusion text encoder, a
LLaVA vision tower) is unlearned through the two-tower `CLIPModel` it came from. A `Host` says
which tower that is, which of its blocks reach the rest of the model, what the host calls its
tensors and where it was loaded from; everything else is written once, here:

- `check_tower(host, clip_model)`: the CLIPModel's tower must be the host's (one equality rule);
- `host_names(host, clip_model, names)`: CLIPModel names -> the host's names;
- `host_config` / `host_candidates`: only the host's tower, only its usable blocks;
- `unlearn_on_host(host, clip_model, processor, request, options)`: the one driver;
- `host_delta(host, result, clip_model)`: the delta keyed and fingerprinted by the host;
- `HostUnlearning`: the one result type, a typed list of `ComponentRun`s (SDXL's two text
  encoders are two runs) with one meaning of `converged`;
- `before_after_table` / `Comparison`: the one before/after table.

Example:
    >>> from hf_slug.hosts.vlm import LlavaHost
    >>> host = LlavaHost(llava)  # doctest: +SKIP
    >>> check_tower(host, clip)  # doctest: +SKIP
    >>> run = unlearn_on_host(host, clip, clip_processor, request)  # doctest: +SKIP
    >>> run.delta.save_pretrained("deltas/elon")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn

from ..adapter_weights import require_no_active_adapters
from ..config import SLUGConfig, TargetInfo
from ..data import ImageTextPairs
from ..delta import ConceptDelta
from ..errors import AdapterError, ConfigError, FingerprintMismatchError, UnsupportedModelError
from ..io import fingerprint
from ..options import UnlearnOptions
from ..request import ConceptRequest
from ..towers import (
    BLOCK_WEIGHTS,
    Tower,
    TowerKind,
    block_index,
    candidate_names,
    require_clip,
    tower_of,
)
from ..unlearn import UnlearningResult

Metrics = dict[str, float]
CHECKED_CONFIG = ("hidden_act", "layer_norm_eps")  # same tensors, other maths: refused too


class Host(Protocol):
    """A model carrying one CLIP tower that SLUG edits through a two-tower `CLIPModel`.

    `family` and `component` are written into the delta (`model_family`, `component`);
    `prefix` starts every delta key ("text_encoder." for a pipeline's encoder, "" when the keys
    are the model's own names); `label` names the host's tower in messages and `clip_hint`
    says which CLIPModel to pass. `tower()` is the CLIP tower (its `path` relative to where
    `prefix` points), `usable_blocks()` the blocks whose output reaches the rest of the model,
    `parameters()` the host's tensors by delta key (for fingerprints), `extra_tensors()` the
    host's tensors outside the tower that must equal the CLIPModel's (keyed by CLIPModel name,
    e.g. SDXL's `text_projection.weight`).

    Example:
        >>> from hf_slug.hosts.diffusion import StableDiffusionHost
        >>> StableDiffusionHost(pipe).tower_kind  # doctest: +SKIP
        'text'
    """

    family: str
    component: str
    prefix: str
    tower_kind: TowerKind
    label: str
    clip_hint: str
    base_model_name_or_path: str | None
    base_model_revision: str | None

    def tower(self) -> Tower: ...

    def usable_blocks(self) -> list[int]: ...

    def parameters(self) -> dict[str, torch.Tensor]: ...

    def extra_tensors(self) -> dict[str, torch.Tensor]: ...


# -- the tower check and the names ----------------------------------------------------------------
def check_tower(host: Host, clip_model: nn.Module) -> None:
    """Raise unless the host's tower is `clip_model`'s tower of the same kind.

    One rule for every host: each block's weight matrices (attention and MLP, SLUG's candidates)
    must have the same sha256 fingerprint as the CLIPModel's once those are cast to the host's
    dtype, and every other tensor of the host's tower (embeddings, LayerNorms, biases, and the
    host's `extra_tensors()`) must be equal after the same cast, as must `hidden_act` and
    `layer_norm_eps`. The CLIPModel may have more blocks than the host (SD 2.x keeps 23 of
    OpenCLIP ViT-H's 24). Raises `FingerprintMismatchError` naming the first differing tensor,
    or `UnsupportedModelError` when `clip_model` is no two-tower CLIPModel; `AdapterError` when
    active SLUGModel adapters hook the host's tower.

    Example:
        >>> check_tower(StableDiffusionHost(pipe), clip)  # doctest: +SKIP
    """
    require_clip(clip_model)
    kind, fix = host.tower_kind, host.clip_hint
    mine_tower, theirs_tower = host.tower(), tower_of(clip_model, host.tower_kind)
    require_no_active_adapters(mine_tower.module, host.label)  # hooks the weights do not show
    for attribute in CHECKED_CONFIG:
        a = getattr(getattr(mine_tower.module, "config", None), attribute, None)
        b = getattr(getattr(theirs_tower.module, "config", None), attribute, None)
        if a is not None and b is not None and a != b:
            raise FingerprintMismatchError(
                f"{host.label} uses {attribute}={a!r} but the CLIP model's {kind} tower uses "
                f"{b!r}: they are different towers. {fix}"
            )
    mine = dict(mine_tower.module.named_parameters())
    theirs = dict(theirs_tower.module.named_parameters())
    extra = host.extra_tensors()
    clip_params = dict(clip_model.named_parameters())
    mine.update(extra)
    theirs.update({k: clip_params[k] for k in extra if k in clip_params})
    missing = sorted(set(mine) - set(theirs))
    if missing:
        raise FingerprintMismatchError(
            f"the CLIP model's {kind} tower ({len(theirs_tower.layers)} blocks) lacks "
            f"{missing[:3]}, which {host.label} ({len(mine_tower.layers)} blocks) has: they are "
            f"different architectures. {fix}"
        )
    for key, tensor in mine.items():
        _check_tensor(host, key, tensor, theirs[key])


def _check_tensor(host: Host, key: str, tensor: torch.Tensor, other: torch.Tensor) -> None:
    kind, fix = host.tower_kind, host.clip_hint
    if tensor.shape != other.shape:
        raise FingerprintMismatchError(
            f"{host.label} differs from the CLIP model's {kind} tower at {key}: shape "
            f"{list(tensor.shape)} vs {list(other.shape)}. {fix}"
        )
    cast = other.detach().to(device=tensor.device, dtype=tensor.dtype)
    found = block_index(key)
    if found is not None and found[1] in BLOCK_WEIGHTS:
        same = fingerprint(tensor) == fingerprint(cast)
    else:
        same = torch.equal(tensor.detach(), cast)
    if not same:
        raise FingerprintMismatchError(
            f"{host.label} differs from the CLIP model's {kind} tower at {key} (sha256 "
            f"{fingerprint(tensor)[:16]}… vs {fingerprint(cast)[:16]}…): SLUG's gradients would "
            f"belong to another {kind} tower. {fix}"
        )


def host_names(host: Host, clip_model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Map CLIPModel tower parameter names to the host's names (its delta keys).

    Example:
        >>> host_names(LlavaHost(llava), clip,  # doctest: +SKIP
        ...            ["vision_model.encoder.layers.3.mlp.fc1.weight"])
        {'vision_model.encoder.layers.3.mlp.fc1.weight': 'model.vision_tower.encoder.layers.3.mlp.fc1.weight'}
    """
    kind = host.tower_kind
    source, target = tower_of(clip_model, kind), host.tower()
    mapping = {}
    for name in names:
        if source.path and not name.startswith(source.path + "."):
            raise UnsupportedModelError(
                f"{name} is not in the CLIP model's {kind} tower ({source.path}): only {kind} "
                f"tower tensors map into {host.label}."
            )
        relative = name[len(source.path) + 1 :] if source.path else name
        mapping[name] = host.prefix + target.name(relative)
    return mapping


def first_blocks(reached: int, nothing_to_edit: str) -> list[int]:
    """Blocks `0 … reached - 1`, the ones a host reads; `ValueError(nothing_to_edit)` when none.

    Example:
        >>> first_blocks(3, "no block reaches the language model")
        [0, 1, 2]
    """
    if reached < 1:
        raise ValueError(nothing_to_edit)
    return list(range(reached))


def host_config(host: Host, config: SLUGConfig) -> SLUGConfig:
    """`config` restricted to the host's tower; an error when it does not include it (a vision
    tower's search then keeps the small default margin, `SLUGConfig.criterion_margin`).

    Example:
        >>> host_config(LlavaHost(llava), SLUGConfig("Ada")).towers  # doctest: +SKIP
        ('vision',)
    """
    kind = host.tower_kind
    if kind not in config.towers:
        raise ValueError(
            f"SLUG edits {host.label} through the CLIP model's {kind} tower only, but "
            f"config.towers is {config.towers}: use towers=({kind!r},)."
        )
    return replace(config, towers=(kind,))


def host_candidates(host: Host, clip_model: nn.Module) -> list[str]:
    """The CLIPModel's candidate names in the host's tower, blocks the host reads only.

    Example:
        >>> host_candidates(LlavaHost(llava), clip)[0]  # doctest: +SKIP
        'vision_model.encoder.layers.0.self_attn.q_proj.weight'
    """
    blocks = len(host.usable_blocks())
    return candidate_names(clip_model, (host.tower_kind,), max_blocks={host.tower_kind: blocks})


def host_delta(
    host: Host,
    result: UnlearningResult,
    clip_model: nn.Module,
    concept_kind: str | None = None,
) -> ConceptDelta:
    """The result's delta keyed by the host's names and fingerprinted by the host's tensors.

    Example:
        >>> delta = host_delta(LlavaHost(llava), result, clip, "identity")  # doctest: +SKIP
    """
    rename = host_names(host, clip_model, list(result.deltas))
    delta = result.to_delta(
        concept_kind=concept_kind,
        model_family=host.family,
        component=host.component,
        rename=rename,
    )
    params = host.parameters()
    targets = {
        name: TargetInfo(
            list(params[name].shape),
            str(params[name].dtype).removeprefix("torch."),
            fingerprint(params[name]),
            host.tower_kind,
        )
        for name in delta.config.targets
    }
    config = replace(
        delta.config,
        targets=targets,
        base_model_name_or_path=host.base_model_name_or_path,
        base_model_revision=host.base_model_revision,
        metrics={**delta.config.metrics, "gradients_from": result.base_model_name_or_path},
    )
    return ConceptDelta(config, delta.tensors)


# -- the one driver and the one result type ------------------------------------------------------
@dataclass
class ComponentRun:
    """One host component's SLUG run: its result (CLIPModel names), the blocks that were
    candidates, and its host-keyed delta (None when it met no criterion)."""

    component: str
    result: UnlearningResult
    usable_blocks: tuple[int, ...]
    delta: ConceptDelta | None = None
    tower_path: str = ""

    @property
    def converged(self) -> bool:
        """True when some searched layer met the forget criterion."""
        return self.result.converged

    @property
    def step(self) -> float | None:
        return self.result.step

    @property
    def layer(self) -> str | None:
        """The chosen layer's label (e.g. `text.L3.fc1`), None when none was chosen."""
        return self.result.chosen.label if self.result.chosen else None


def unlearn_on_host(
    host: Host,
    clip_model: nn.Module,
    processor: Any,
    request: ConceptRequest,
    options: UnlearnOptions | None = None,
    concept_kind: str | None = None,
) -> ComponentRun:
    """Run SLUG for `request` on `clip_model`, over the host's tower and usable blocks only.

    The caller checks the tower first (`check_tower`), before anything expensive. `options`'
    `candidates` are replaced by the host's; the models stay untouched.

    Example:
        >>> run = unlearn_on_host(LlavaHost(llava), clip, clip_processor,  # doctest: +SKIP
        ...                       ConceptRequest(forget, retain, SLUGConfig("Elon Musk")))
    """
    blocks = tuple(host.usable_blocks())
    request = replace(request, config=host_config(host, request.config))
    options = replace(options or UnlearnOptions(), candidates=host_candidates(host, clip_model))
    result = request.unlearn(clip_model, processor, options)
    delta = host_delta(host, result, clip_model, concept_kind) if result.converged else None
    return ComponentRun(host.component, result, blocks, delta, host.tower().path)


@dataclass
class HostUnlearning:
    """What unlearning a host returns: one `ComponentRun` per requested component.

    `delta` is one `ConceptDelta` keyed by the host's names holding every component that met
    the criterion (None when none did); `forget` the forget pairs used when the host made them
    (a pipeline's generated images). `converged` means every requested component met the
    criterion.
    """

    runs: list[ComponentRun]
    delta: ConceptDelta | None
    forget: ImageTextPairs | None = None

    @property
    def converged(self) -> bool:
        """True when every requested component met the forget criterion."""
        return bool(self.runs) and all(run.converged for run in self.runs)

    @property
    def components(self) -> list[str]:
        """The components the delta edits."""
        return [run.component for run in self.runs if run.converged]

    @property
    def results(self) -> dict[str, UnlearningResult]:
        """Each requested component's result (CLIPModel names)."""
        return {run.component: run.result for run in self.runs}

    @property
    def usable_blocks(self) -> dict[str, tuple[int, ...]]:
        return {run.component: run.usable_blocks for run in self.runs}

    @property
    def run(self) -> ComponentRun:
        """The single component's run (use `runs` when there are several)."""
        if len(self.runs) != 1:
            raise AdapterError(
                f"this run unlearned {[r.component for r in self.runs]}: pick one from .runs."
            )
        return self.runs[0]

    @property
    def result(self) -> UnlearningResult:
        """The single component's result (use `results` when there are several)."""
        return self.run.result

    def report(self) -> str:
        """Each component's plain-text report."""
        return "\n\n".join(f"[{r.component}]\n{r.result.report()}" for r in self.runs)


def reject_moved_keywords(
    function: str, keywords: Mapping[str, Any], moved: Mapping[str, str]
) -> None:
    """Raise `ConfigError` for a keyword `function` no longer takes, naming its new place.

    Example:
        >>> reject_moved_keywords("unlearn_vlm", {}, {})
        >>> reject_moved_keywords("unlearn_vlm", {"progress": False},
        ...                       {"progress": "options=UnlearnOptions(progress=...)"})
        Traceback (most recent call last):
        ...
        hf_slug.errors.ConfigError: unlearn_vlm() no longer takes progress=: pass options=UnlearnOptions(progress=...).
    """
    if not keywords:
        return
    name = next(iter(keywords))
    if name in moved:
        raise ConfigError(f"{function}() no longer takes {name}=: pass {moved[name]}.")
    raise ConfigError(f"{function}() got an unexpected keyword argument {name!r}.")


# -- the one before/after table -------------------------------------------------------------------
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


@dataclass
class Comparison:
    """Metrics of a host without (`before`) and with (`after`) its active deltas."""

    before: Metrics
    after: Metrics

    def table(self) -> str:
        """A plain-text before/after table (`before_after_table`)."""
        return before_after_table(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {"before": dict(self.before), "after": dict(self.after)}


__all__ = [
    "Comparison",
    "ComponentRun",
    "Host",
    "HostUnlearning",
    "before_after_table",
    "check_tower",
    "first_blocks",
    "host_candidates",
    "host_config",
    "host_delta",
    "host_names",
    "reject_moved_keywords",
    "unlearn_on_host",
]
