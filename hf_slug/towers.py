"""CLIP towers found by structure, their candidate weights, and the embeddings SLUG's losses use.

Parameter names move between transformers versions (`text_model.encoder.layers.i…` in a
`CLIPModel`, `encoder.layers.i…` in a standalone `CLIPTextModel`), so towers are found by what
they contain — an `encoder.layers` list of CLIP blocks beside patch or token embeddings — never
by a string prefix.

Example:
    >>> from transformers import CLIPConfig, CLIPModel
    >>> model = CLIPModel(CLIPConfig(
    ...     text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                      num_attention_heads=2),
    ...     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
    ...                        num_attention_heads=2, image_size=32, patch_size=16)))
    >>> [t.kind for t in find_towers(model)]
    ['text', 'vision']
    >>> candidate_names(model, towers=("vision",))[0]
    'vision_model.encoder.layers.0.self_attn.q_proj.weight'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .errors import UnknownLayerError, UnsupportedModelError

TowerKind = Literal["vision", "text"]
BLOCK_WEIGHTS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.out_proj.weight",
    "mlp.fc1.weight",
    "mlp.fc2.weight",
)
PROJECTIONS = {"vision": "visual_projection.weight", "text": "text_projection.weight"}
GROUPS = {"qkv": ("q_proj", "k_proj", "v_proj"), "mlp": ("fc1", "fc2")}
_BLOCK_RE = re.compile(r"encoder\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Tower:
    """One CLIP transformer (vision or text) inside a larger module tree."""

    kind: TowerKind
    path: str  # its module path inside the root; "" when the root is the tower itself
    module: nn.Module

    @property
    def layers(self) -> nn.ModuleList:
        return self.module.encoder.layers

    def name(self, relative: str) -> str:
        """The root-level name of a parameter given relative to this tower."""
        return f"{self.path}.{relative}" if self.path else relative


def find_towers(root: nn.Module) -> list[Tower]:
    """Every CLIP tower in `root`, outermost first; nested towers inside a tower are skipped."""
    towers: list[Tower] = []
    for path, module in root.named_modules():
        if any(path.startswith(t.path + ".") or t.path == "" for t in towers if path):
            continue
        kind = _tower_kind(module)
        if kind is not None:
            towers.append(Tower(kind, path, module))
    return towers


def _tower_kind(module: nn.Module) -> TowerKind | None:
    encoder = getattr(module, "encoder", None)
    embeddings = getattr(module, "embeddings", None)
    layers = getattr(encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or embeddings is None:
        return None
    if not all(_is_clip_block(block) for block in layers):
        return None
    if hasattr(embeddings, "patch_embedding"):
        return "vision"
    if hasattr(embeddings, "token_embedding"):
        return "text"
    return None


def _is_clip_block(block: nn.Module) -> bool:
    attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    return all(hasattr(attn, p) for p in ("q_proj", "k_proj", "v_proj", "out_proj")) and all(
        hasattr(mlp, f) for f in ("fc1", "fc2")
    )


def tower_of(root: nn.Module, kind: TowerKind) -> Tower:
    """The first tower of `kind` in `root`, or an error naming what the model holds."""
    for tower in find_towers(root):
        if tower.kind == kind:
            return tower
    raise UnsupportedModelError(
        f"{type(root).__name__} has no CLIP {kind} tower. hf_slug unlearns CLIP-like models "
        "(transformers CLIPModel, CLIPTextModel, CLIPVisionModel and the CLIP towers inside "
        "Stable Diffusion pipelines and LLaVA-style VLMs)."
    )


def candidate_names(
    root: nn.Module,
    towers: Iterable[TowerKind] = ("vision", "text"),
    *,
    include_projections: bool = False,
    max_blocks: dict[str, int] | None = None,
) -> list[str]:
    """Names of the 2-D weights SLUG may edit, tower by tower, block by block (SLUG.md §3).

    Never biases, LayerNorms, embeddings or `logit_scale`. `max_blocks` caps the blocks used per
    tower kind (a VLM reads its image features below the last vision blocks).
    """
    wanted = _check_towers(towers)
    names: list[str] = []
    params = dict(root.named_parameters())
    for tower in find_towers(root):
        if tower.kind not in wanted:
            continue
        limit = (max_blocks or {}).get(tower.kind, len(tower.layers))
        for i in range(min(limit, len(tower.layers))):
            names += [tower.name(f"encoder.layers.{i}.{w}") for w in BLOCK_WEIGHTS]
        if include_projections and PROJECTIONS[tower.kind] in params and tower.path:
            names.append(PROJECTIONS[tower.kind])
    return names


def _check_towers(towers: Iterable[str]) -> set[str]:
    if isinstance(towers, str):
        towers = (towers,)
    wanted = set(towers)
    unknown = wanted - {"vision", "text"}
    if unknown or not wanted:
        raise ValueError(f"towers must be 'vision' and/or 'text', got {sorted(towers)}.")
    return wanted


def block_index(name: str) -> tuple[int, str] | None:
    """`(block, weight)` of a block parameter name, e.g. `(3, 'mlp.fc1.weight')`; None otherwise."""
    match = _BLOCK_RE.search(name)
    return (int(match.group(1)), match.group(2)) if match else None


def tower_kind_of(root: nn.Module, name: str) -> TowerKind:
    """Which tower kind the root-level parameter `name` belongs to."""
    return tower_kinds(root, [name])[name]


def tower_kinds(root: nn.Module, names: Sequence[str]) -> dict[str, TowerKind]:
    """`tower_kind_of` for many names, finding the towers once."""
    towers = find_towers(root)
    kinds: dict[str, TowerKind] = {}
    for name in names:
        projection = [k for k, p in PROJECTIONS.items() if name == p]
        owner = next((t for t in towers if not t.path or name.startswith(t.path + ".")), None)
        if not projection and owner is None:
            raise UnknownLayerError(f"{name} is in no CLIP tower of {type(root).__name__}.")
        kinds[name] = projection[0] if projection else owner.kind  # type: ignore[assignment]
    return kinds


def group_layers(names: Sequence[str], group: str | None) -> list[tuple[str, ...]]:
    """Candidate units: single tensors, or q/k/v (`group="qkv"`) / fc1+fc2 (`"mlp"`) together."""
    if group is None:
        return [(n,) for n in names]
    if group not in GROUPS:
        raise ValueError(f"group must be None, 'qkv' or 'mlp', got {group!r}.")
    members = GROUPS[group]
    units: dict[str, list[str]] = {}
    order: list[str] = []
    for name in names:
        module = name.rsplit(".", 2)[-2]
        key = name.replace(module, "{}") if module in members else name
        if key not in units:
            units[key] = []
            order.append(key)
        units[key].append(name)
    return [tuple(units[k]) for k in order]


def short_name(unit: Sequence[str] | str) -> str:
    """A compact label such as `vision.L3.fc1` or `text.L1.{q,k,v}_proj`."""
    names = [unit] if isinstance(unit, str) else list(unit)
    labels = []
    for name in names:
        tower = "vision" if ("vision" in name or "visual" in name) else "text"
        found = block_index(name)
        if found is None:
            labels.append(name.removesuffix(".weight"))
            continue
        block, weight = found
        labels.append(f"{tower}.L{block}.{weight.split('.')[-2]}")
    return labels[0] if len(labels) == 1 else "+".join(labels)


def require_clip(model: nn.Module) -> None:
    """Raise unless `model` is a two-tower CLIP with projections and a logit scale."""
    missing = [
        a for a in ("visual_projection", "text_projection", "logit_scale") if not hasattr(model, a)
    ]
    kinds = {t.kind for t in find_towers(model)}
    if missing or kinds != {"vision", "text"}:
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a CLIP-like model (found towers {sorted(kinds)}, "
            f"missing {missing}). SLUG's gradients need a two-tower transformers CLIPModel: pass "
            "the CLIPModel itself, or for a pipeline or VLM the CLIPModel its tower came from."
        )


def encode_images(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (unnormalised) image embeddings of a CLIPModel."""
    pooled = model.vision_model(pixel_values=pixel_values).pooler_output
    return model.visual_projection(pooled)


def encode_texts(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Projected (unnormalised) text embeddings of a CLIPModel."""
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return model.text_projection(pooled)


def resolve_names(model: nn.Module, names: Iterable[str], allowed: Sequence[str]) -> list[str]:
    """Check user-given layer names against the candidates; accept short labels too."""
    by_short = {short_name(n): n for n in allowed}
    resolved = []
    for name in names:
        if name in allowed:
            resolved.append(name)
        elif name in by_short:
            resolved.append(by_short[name])
        else:
            close = [n for n in allowed if name.split(".")[-2:] == n.split(".")[-2:]][:3]
            raise UnknownLayerError(
                f"{name!r} is not a candidate layer of {type(model).__name__}. Candidates are "
                f"2-D block weights such as {allowed[0]!r} (or short labels such as "
                f"{short_name(allowed[0])!r}); similar: {close}. Check the tower and block index."
            )
    return resolved
