"""A pipeline delta's parts and its diffusers LoRA: combine, select and export components.

One `ConceptDelta` may edit both SDXL text encoders (`combine_deltas`); `select_components`
keeps one of them; `export_diffusers_lora` writes a LoRA that `pipe.load_lora_weights(folder)`
loads natively.

Example:
    >>> both = combine_deltas([delta_te1, delta_te2])  # doctest: +SKIP
    >>> export_diffusers_lora(both, "snoopy_lora/")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..delta import ConceptDelta
from ..errors import AdapterError, DeltaFormatError
from ..export import ExportReport, export_folder, lora_dtype, lora_factors, require_deltas
from ..io import write_safetensors
from ..towers import block_index

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the file diffusers' loaders look for
LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers reads the LoraConfig from this header


def combine_deltas(deltas: Sequence[ConceptDelta]) -> ConceptDelta | None:
    """One delta holding several components' deltas of the same concept (e.g. both SDXL encoders).

    The combined config's `step` is the first component's; every component's own summary sits
    in `metrics["components"]`, and `before` / `after` metrics are prefixed `component/`.

    Example:
        >>> both = combine_deltas([delta_te1, delta_te2])  # doctest: +SKIP
        >>> both.config.component  # doctest: +SKIP
        'text_encoder+text_encoder_2'
    """
    if not deltas:
        return None
    if len(deltas) == 1:
        return deltas[0]
    concepts = {d.config.concept for d in deltas}
    if len(concepts) != 1:
        raise AdapterError(f"combine deltas of one concept, got {sorted(concepts)}.")
    overlap = set(deltas[0].tensors).intersection(*(set(d.tensors) for d in deltas[1:]))
    if overlap:
        raise AdapterError(f"the deltas overlap at {sorted(overlap)[:3]}: stack them instead.")
    first = deltas[0].config
    names = [d.config.component or "model" for d in deltas]
    metrics: dict[str, Any] = {"before": {}, "after": {}, "rule": [], "components": {}}
    for name, delta in zip(names, deltas):
        own = delta.config.metrics
        metrics["components"][name] = {**own, "step": delta.config.step}
        for when in ("before", "after"):
            metrics[when].update({f"{name}/{k}": v for k, v in own.get(when, {}).items()})
        metrics["rule"].append(f"{name}: {own.get('rule', 'named by the user')}")
    rules = {r.split(": ", 1)[1] for r in metrics["rule"]}
    metrics["rule"] = rules.pop() if len(rules) == 1 else "; ".join(metrics["rule"])
    config = replace(
        first,
        component="+".join(names),
        targets={k: v for d in deltas for k, v in d.config.targets.items()},
        scales={k: v for d in deltas for k, v in d.config.scales.items()},
        metrics=metrics,
    )
    return ConceptDelta(config, {k: v for d in deltas for k, v in d.tensors.items()})


def select_components(delta: ConceptDelta, components: str | Sequence[str]) -> ConceptDelta:
    """The part of a pipeline delta that edits `components` (e.g. only SDXL's `text_encoder_2`).

    Example:
        >>> only_g = select_components(ConceptDelta.from_pretrained("deltas/snoopy"),
        ...                            "text_encoder_2")  # doctest: +SKIP
    """
    wanted = [components] if isinstance(components, str) else list(components)
    present = sorted({k.split(".", 1)[0] for k in delta.config.targets})
    unknown = [c for c in wanted if c not in present]
    if unknown or not wanted:
        raise AdapterError(
            f"the delta for {delta.config.concept!r} edits {present}; it has nothing for "
            f"{unknown or wanted}: choose among those."
        )
    if sorted(wanted) == present:
        return delta

    def keep(key: str) -> bool:
        return key.split(".", 1)[0] in wanted

    metrics = delta.config.metrics
    parts = metrics.get("components", {}) if isinstance(metrics, dict) else {}
    if len(wanted) == 1 and wanted[0] in parts:
        metrics = {k: v for k, v in parts[wanted[0]].items() if k != "step"}
        step = delta.config.component_steps.get(wanted[0])
        step = delta.config.step if step is None else step
    else:
        step = delta.config.step
    config = replace(
        delta.config,
        component="+".join(c for c in present if c in wanted),
        step=step,
        targets={k: v for k, v in delta.config.targets.items() if keep(k)},
        scales={k: v for k, v in delta.config.scales.items() if keep(k)},
        metrics=metrics,
    )
    return ConceptDelta(config, {k: v for k, v in delta.tensors.items() if keep(k)})


# -- diffusers LoRA export ------------------------------------------------------------------------
def export_diffusers_lora(
    source: Any,
    directory: str | Path,
    *,
    rank: int | float | None = None,
    adapter_names: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> ExportReport:
    """Write `pytorch_lora_weights.safetensors`, which `pipe.load_lora_weights(directory)` loads.

    `source` is a pipeline `ConceptDelta`, a `SLUGModel` wrapping a pipeline (the weighted sum of
    its active adapters, or of `adapter_names`), or a dict of dense deltas keyed by pipeline
    names. `rank=None` is exact (full-rank SVD); an int or an energy fraction truncates (the
    report gives each module's relative error).

    The file uses diffusers' own text-encoder LoRA format,
    `{component}.text_model.encoder.layers.{i}.{module}.lora_linear_layer.{down,up}.weight`:
    diffusers converts it to PEFT keys and drops the `text_model.` prefix for transformers 5.x's
    flattened `CLIPTextModel` (older transformers keep it), so the same file loads into both.
    (Keys in PEFT's `lora_A`/`lora_B` form fail to load in diffusers 0.42 when only `mlp.fc1` /
    `mlp.fc2` are targeted: its format detection looks for attention keys.) Every module gets the
    same rank (zero-padded) and `lora_alpha = r`, so the LoRA scale is exactly 1 whatever version
    derives the config; the header also carries diffusers' `lora_adapter_metadata`.

    Example:
        >>> export_diffusers_lora(out.delta, "snoopy_lora/")  # doctest: +SKIP
        >>> pipe.load_lora_weights("snoopy_lora/", adapter_name="no_snoopy")  # doctest: +SKIP
    """
    dtype = lora_dtype(dtype)
    dense = _dense_deltas(source, adapter_names)
    require_deltas(dense)
    per_component: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in dense.items():
        component, relative = _split_component(key)
        per_component.setdefault(component, {})[relative] = value
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, Any] = {}
    ranks: dict[str, int] = {}
    errors: dict[str, float] = {}
    factors_by_component = {}
    for component, deltas in per_component.items():
        factors, errs = lora_factors(deltas, rank)
        factors_by_component[component] = factors
        for module, (a, _) in factors.items():
            ranks[f"{component}.{module}"] = a.shape[0]
            errors[f"{component}.{module}"] = errs[module]
    top = max(ranks.values())
    for component, factors in factors_by_component.items():
        targets = []
        for module, (a, b) in factors.items():
            pad = top - a.shape[0]
            a = torch.cat([a, a.new_zeros(pad, a.shape[1])]) if pad else a
            b = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1) if pad else b
            relative = module.removeprefix("text_model.")
            canonical = f"text_model.{relative}" if block_index(module) else module
            prefix = f"{component}.{canonical}.lora_linear_layer"
            tensors[f"{prefix}.down.weight"] = a.to(dtype).contiguous()
            tensors[f"{prefix}.up.weight"] = b.to(dtype).contiguous()
            targets.append(relative)
        metadata.update(
            {
                f"{component}.r": top,
                f"{component}.lora_alpha": top,
                f"{component}.target_modules": sorted(targets),
                f"{component}.lora_dropout": 0.0,
                f"{component}.bias": "none",
            }
        )
    directory = Path(directory)
    with export_folder(directory) as tmp:
        write_safetensors(
            tmp / LORA_WEIGHT_NAME,
            tensors,
            {"format": "pt", LORA_METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True)},
        )
    return ExportReport(directory, ranks, errors, (directory / LORA_WEIGHT_NAME).stat().st_size)


def _dense_deltas(source: Any, adapter_names: Sequence[str] | None) -> dict[str, torch.Tensor]:
    if isinstance(source, ConceptDelta):
        if adapter_names is not None:
            raise ValueError("adapter_names= selects adapters of a SLUGModel, not of a delta.")
        return source.dense()
    if isinstance(source, Mapping):
        return {k: v.float() for k, v in source.items()}
    adapters = getattr(source, "adapters", None)
    if isinstance(adapters, dict) and hasattr(source, "weights") and hasattr(source, "targets"):
        names = list(adapter_names) if adapter_names is not None else source.active_adapters
        unknown = [n for n in names if n not in adapters]
        if unknown:
            raise AdapterError(f"no adapter named {unknown}: the loaded ones are {list(adapters)}.")
        total: dict[str, torch.Tensor] = {}
        for name in names:
            weight = source.weights[name]
            for key, value in adapters[name].dense().items():
                host = source.targets[name][key]
                total[host] = total.get(host, 0) + weight * value
        return total
    raise TypeError(
        f"export_diffusers_lora takes a ConceptDelta, a SLUGModel or a dict of tensors, got "
        f"{type(source).__name__}."
    )


def _split_component(key: str) -> tuple[str, str]:
    component, _, relative = key.partition(".")
    if not relative or not component.startswith("text_encoder"):
        raise DeltaFormatError(
            f"{key} is not keyed by a pipeline text encoder (text_encoder.… or text_encoder_2.…): "
            "a CLIPModel's delta does not load into a pipeline as a LoRA. Compute it with "
            "unlearn_pipeline, or pass ConceptDelta.from_result(..., rename=pipeline_names(...))."
        )
    return component, relative


__all__ = [
    "LORA_METADATA_KEY",
    "LORA_WEIGHT_NAME",
    "combine_deltas",
    "export_diffusers_lora",
    "select_components",
]
