"""Export deltas as genuine PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`).

`rank=None` is exact: the full-rank SVD of each delta, so `B @ A` reproduces it to float
precision. An integer rank or an energy fraction truncates; the report gives each tensor's
relative error and the file size.

Example:
    >>> report = export_peft_lora(delta, "lora/")  # doctest: +SKIP
    >>> from peft import PeftModel
    >>> PeftModel.from_pretrained(base_model, "lora/")  # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .delta import ConceptDelta, low_rank_factors, storage_dtype
from .errors import AdapterError, ConfigError, DeltaFormatError, NonFiniteGradientError
from .io import atomic_folder, write_json, write_safetensors

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
LORA_FILES = {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, "pytorch_lora_weights.safetensors"}
"""What either LoRA export writes: a new export replaces all of them at once, so a folder never
holds one export's weights beside another's config (other files in it are kept)."""


def export_folder(directory: str | Path) -> AbstractContextManager[Path]:
    """`atomic_folder(directory)` owning `LORA_FILES`: fill the yielded folder, then it swaps in."""
    return atomic_folder(directory, lambda _old: set(LORA_FILES))


def lora_dtype(dtype: Any) -> torch.dtype:
    """`dtype` if LoRA factors can be stored in it (`delta.STORAGE_DTYPES`), else ConfigError."""
    if dtype is None:  # storage_dtype's "keep the tensors' own" means nothing for factors
        raise ConfigError("a LoRA export needs a dtype: pass e.g. dtype=torch.float32.")
    return storage_dtype(dtype)


def require_deltas(deltas: dict[str, torch.Tensor]) -> None:
    """AdapterError for an empty delta (nothing to export)."""
    if not deltas:
        raise AdapterError("nothing to export: the delta (or active adapter set) is empty.")


@dataclass
class ExportReport:
    """What an export wrote: folder, rank and relative error per module, bytes on disk."""

    directory: Path
    ranks: dict[str, int]
    relative_errors: dict[str, float]
    nbytes: int

    @property
    def max_relative_error(self) -> float:
        return max(self.relative_errors.values(), default=0.0)


def lora_factors(
    deltas: dict[str, torch.Tensor], rank: int | float | None
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """module path -> (A, B) with `B @ A ≈ Δ` (A: r × in, B: out × r), and the relative errors.

    A delta holding NaN/inf raises NonFiniteGradientError (PEFT and diffusers exports alike).
    """
    check_finite_deltas(deltas)
    factors, errors = {}, {}
    for name, delta in deltas.items():
        if not name.endswith(".weight") or delta.ndim != 2:
            raise DeltaFormatError(
                f"only 2-D `.weight` deltas export to LoRA, got {name} with shape "
                f"{list(delta.shape)}: export the delta's weight matrices only."
            )
        up, down, error = low_rank_factors(delta, rank)
        factors[name.removesuffix(".weight")] = (down.contiguous(), up.contiguous())
        errors[name.removesuffix(".weight")] = error
    return factors, errors


def check_finite_deltas(deltas: dict[str, torch.Tensor], how: str = "") -> None:
    """Raise NonFiniteGradientError naming the first tensor that holds NaN/inf."""
    for name, value in deltas.items():
        if not torch.isfinite(value).all():
            raise NonFiniteGradientError(
                f"refusing to export: {name} holds NaN/inf{' ' + how if how else ''}, which no "
                "LoRA can represent. Recompute the delta, or load a good copy of it."
            )


def export_peft_lora(
    delta: ConceptDelta | dict[str, torch.Tensor],
    directory: str | Path,
    *,
    rank: int | float | None = None,
    base_model_name_or_path: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ExportReport:
    """Write a PEFT LoRA adapter for `delta` (a ConceptDelta or name -> dense tensor).

    A delta holding NaN/inf is refused with NonFiniteGradientError before anything is written.
    """
    try:
        from peft import LoraConfig
    except ImportError as error:  # pragma: no cover - peft is a declared extra
        raise ImportError("exporting to PEFT needs peft: pip install 'hf_slug[peft]'.") from error
    dtype = lora_dtype(dtype)
    if isinstance(delta, ConceptDelta):
        base_model_name_or_path = base_model_name_or_path or delta.config.base_model_name_or_path
        delta = delta.dense()
    require_deltas(delta)
    factors, errors = lora_factors(delta, rank)
    ranks = {module: a.shape[0] for module, (a, _) in factors.items()}
    top = max(ranks.values())
    config = LoraConfig(
        r=top,
        lora_alpha=top,
        target_modules=sorted(factors),
        rank_pattern={m: r for m, r in ranks.items() if r != top},
        alpha_pattern={m: r for m, r in ranks.items() if r != top},
        lora_dropout=0.0,
        bias="none",
        base_model_name_or_path=base_model_name_or_path,
        inference_mode=True,
    )
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(dtype)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(dtype)
    check_finite_deltas(tensors, f"in {dtype} (pass dtype=torch.float32)")
    directory = Path(directory)
    with export_folder(directory) as tmp:
        write_safetensors(tmp / PEFT_WEIGHTS_NAME, tensors, {"format": "pt"})
        write_json(tmp / PEFT_CONFIG_NAME, _jsonable(config.to_dict()))
    size = sum((directory / n).stat().st_size for n in (PEFT_WEIGHTS_NAME, PEFT_CONFIG_NAME))
    return ExportReport(directory, ranks, errors, size)


def _jsonable(data: dict) -> dict:
    return {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}
