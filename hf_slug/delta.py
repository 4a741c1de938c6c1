"""A concept's delta: its tensors, the config that says what they apply to, and their files.

On disk a delta is a folder with `slug_config.json` and `slug_model.safetensors`. Tensor keys are
parameter paths in the model the delta applies to (`vision_model.encoder.layers.3.mlp.fc1.weight`,
or `text_encoder.…` in a pipeline). A dense delta stores one tensor per target; a low-rank one
stores `{name}.up` (out × r) and `{name}.down` (r × in) with Δ = up @ down.

Example:
    >>> delta = ConceptDelta.from_result(result, concept_kind="identity")  # doctest: +SKIP
    >>> delta.save_pretrained("deltas/ada")  # doctest: +SKIP
    >>> ConceptDelta.from_pretrained("deltas/ada").apply_to(model)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import CONFIG_NAME, WEIGHTS_NAME, TargetInfo, UnlearningConfig
from .errors import DeltaFormatError, FingerprintMismatchError, NonFiniteGradientError
from .io import atomic_path, fingerprint, read_safetensors, write_json

if TYPE_CHECKING:
    from .unlearn import UnlearningResult

UP, DOWN = ".up", ".down"


@dataclass
class ConceptDelta:
    """One concept's update: `config` (what and where) and `tensors` (dense or low-rank)."""

    config: UnlearningConfig
    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        expected = set(self.config.targets)
        if self.config.delta_format == "lowrank":
            present = {k.removesuffix(UP) for k in self.tensors if k.endswith(UP)}
        else:
            present = set(self.tensors)
        if present != expected:
            raise DeltaFormatError(
                f"the delta's tensors {sorted(present)[:3]} do not match its config's targets "
                f"{sorted(expected)[:3]}: the folder is inconsistent; save it again."
            )

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_result(
        cls,
        result: UnlearningResult,
        *,
        concept_kind: str = "concept",
        model_family: str = "clip",
        component: str | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> ConceptDelta:
        """The delta of an `UnlearningResult`; `rename` maps CLIPModel names to host names."""
        if not result.converged:
            raise ValueError(
                f"the search for {result.config.concept!r} met no criterion, so there is no delta "
                "to keep; see result.searches, or force a layer and step."
            )
        rename = dict(rename or {})
        targets = {rename.get(n, n): TargetInfo(**info) for n, info in result.base_tensors.items()}
        config = UnlearningConfig(
            concept=result.config.concept,
            step=float(result.step),
            targets=targets,
            scales={rename.get(n, n): float(s) for n, s in result.scales.items()},
            concept_kind=concept_kind,
            model_family=model_family,
            component=component,
            caption_mode=result.config.caption_mode,
            base_model_name_or_path=result.base_model_name_or_path,
            base_model_revision=result.base_model_revision,
            metrics=result.summary(),
            settings=result.config.to_dict(),
        )
        tensors = {rename.get(n, n): t.float().cpu() for n, t in result.deltas.items()}
        return cls(config, tensors)

    # -- views ----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.config.targets)

    def dense(self) -> dict[str, torch.Tensor]:
        """Target name -> the full fp32 delta (low-rank factors multiplied out)."""
        if self.config.delta_format == "lowrank":
            return {
                n: (self.tensors[n + UP].float() @ self.tensors[n + DOWN].float())
                for n in self.names
            }
        return {n: self.tensors[n].float() for n in self.names}

    def nbytes(self) -> int:
        """Bytes of tensor data this delta stores."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to_lowrank(self, rank: int | float | None = None) -> tuple[ConceptDelta, dict[str, float]]:
        """A low-rank copy (`rank`: int, energy fraction in (0, 1], or None for exact rank).

        Returns the copy and each target's relative Frobenius error ‖Δ − UV‖ / ‖Δ‖.
        """
        tensors, errors, ranks = {}, {}, []
        for name, delta in self.dense().items():
            up, down, error = low_rank_factors(delta, rank)
            tensors[name + UP], tensors[name + DOWN] = up, down
            errors[name] = error
            ranks.append(up.shape[1])
        config = replace(self.config, delta_format="lowrank", rank=max(ranks))
        return ConceptDelta(config, tensors), errors

    # -- checks and application -----------------------------------------------------------
    def check_base(
        self,
        model: nn.Module,
        *,
        check_fingerprint: bool = True,
        base_tensors: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Raise unless every target exists in `model` with the recorded shape and values.

        `base_tensors` gives the original values to check when the model's own tensors already
        carry other edits. `check_fingerprint=False` skips only the value check (explicit opt-out).
        """
        params = dict(model.named_parameters())
        for name, info in self.config.targets.items():
            if name not in params:
                near = [p for p in params if p.endswith(name.split(".", 1)[-1])][:2]
                raise DeltaFormatError(
                    f"the delta for {self.config.concept!r} targets {name}, which "
                    f"{type(model).__name__} does not have (similar: {near}). Load it onto the "
                    f"model family it was made for ({self.config.model_family}, base "
                    f"{self.config.base_model_name_or_path})."
                )
            if list(params[name].shape) != list(info.shape):
                raise DeltaFormatError(
                    f"{name} has shape {list(params[name].shape)} in this model but "
                    f"{info.shape} in the delta: it was made for another architecture "
                    f"({self.config.base_model_name_or_path})."
                )
            if not check_fingerprint:
                continue
            base = base_tensors[name] if base_tensors and name in base_tensors else params[name]
            actual = fingerprint(base.to(_dtype(info.dtype)))
            if actual != info.sha256:
                raise FingerprintMismatchError(
                    f"{name} is not the tensor the delta for {self.config.concept!r} was computed "
                    f"on: its sha256 is {actual[:16]}…, the delta expects {info.sha256[:16]}… "
                    f"(base model {self.config.base_model_name_or_path!r}, revision "
                    f"{self.config.base_model_revision!r}). Load that base model, or pass "
                    "check_fingerprint=False if you know the weights are equivalent."
                )

    def apply_to(
        self, model: nn.Module, weight: float = 1.0, *, check_fingerprint: bool = True
    ) -> nn.Module:
        """Add `weight` × this delta into `model` in place (after `check_base`); return it."""
        self.check_base(model, check_fingerprint=check_fingerprint)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, delta in self.dense().items():
                p = params[name]
                p.copy_((p.float() + weight * delta.to(p.device)).to(p.dtype))
        return model

    # -- files ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write the folder; `dtype=torch.float16` halves it. Nothing is replaced on failure."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.tensors.items()}
        if any(not torch.isfinite(t).all() for t in tensors.values()):
            raise NonFiniteGradientError(
                f"the delta for {self.config.concept!r} holds NaN/inf (after casting to "
                f"{dtype}): save it in float32 or recompute it."
            )
        stored = (
            str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else "float32"
        )
        config = replace(self.config, delta_dtype=stored)
        from safetensors.torch import save_file

        with atomic_path(directory / WEIGHTS_NAME) as weights_tmp:
            save_file(tensors, str(weights_tmp), metadata={"format": "pt", "hf_slug": "delta"})
            with atomic_path(directory / CONFIG_NAME) as config_tmp:
                write_json(config_tmp, config.to_dict())
        return directory

    @classmethod
    def from_pretrained(cls, path: str | Path, **hub_kwargs: Any) -> ConceptDelta:
        """Load a delta folder, or a Hub repo id (see `hf_slug.hub.resolve_delta_folder`)."""
        from .hub import resolve_delta_folder

        folder = resolve_delta_folder(path, **hub_kwargs)
        config = UnlearningConfig.from_pretrained(folder)
        tensors = read_safetensors(folder / WEIGHTS_NAME)
        delta = cls(config, tensors)
        for name, info in config.targets.items():
            shape = list(delta.dense()[name].shape)
            if shape != list(info.shape):
                raise DeltaFormatError(
                    f"{folder}: the delta for {name} has shape {shape}, its config says "
                    f"{info.shape}; the folder is inconsistent."
                )
        return delta


def low_rank_factors(
    delta: torch.Tensor, rank: int | float | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """SVD factors `(up, down)` of a 2-D delta and the relative error of `up @ down`.

    `rank=None` keeps every singular value above float32 noise (exact to float32 precision, the
    numerical rank of `numpy.linalg.matrix_rank`); an int keeps that
    many; a float in (0, 1] keeps the fewest values holding that fraction of the squared norm.
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if rank is None:
        # numpy.linalg.matrix_rank's rule: values below float32 noise carry nothing
        tolerance = s[0] * max(delta.shape) * torch.finfo(torch.float32).eps if s.numel() else 0
        keep = max(1, int((s > tolerance).sum())) if s.numel() and s[0] > 0 else 1
    elif isinstance(rank, float):
        if not 0 < rank <= 1:
            raise ValueError(f"an energy fraction must be in (0, 1], got {rank}.")
        energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        keep = int((energy < rank - 1e-12).sum()) + 1
    else:
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}.")
        keep = min(int(rank), s.numel())
    root = s[:keep].sqrt()
    up = (u[:, :keep] * root).float()
    down = (root[:, None] * vh[:keep]).float()
    norm = delta.double().norm()
    error = float((delta.double() - up.double() @ down.double()).norm() / norm) if norm > 0 else 0.0
    return up, down, error


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise DeltaFormatError(f"unknown dtype {name!r} in the slug config.")
    return value


def folder_size(directory: str | Path) -> int:
    """Total bytes of the files in a folder (not recursive)."""
    return sum(os.path.getsize(p) for p in Path(directory).iterdir() if p.is_file())
