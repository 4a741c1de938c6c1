"""A concept's delta: its tensors, the config that says what they apply to, and their files.

On disk a delta is a folder with `slug_config.json` and `slug_model.safetensors`, written as a
whole (`hf_slug.io.atomic_folder`) and read as a whole (`hf_slug.io.PinnedFolder`), so a reader
never pairs one save's config with another save's tensors. Tensor keys are
parameter paths in the model the delta applies to (`vision_model.encoder.layers.3.mlp.fc1.weight`,
or `text_encoder.…` in a pipeline). A dense delta stores one tensor per target; a low-rank one
stores `{name}.up` (out × r) and `{name}.down` (r × in) with Δ = up @ down.

Example:
    >>> delta = ConceptDelta.from_result(result, concept_kind="identity")  # doctest: +SKIP
    >>> delta.save_pretrained("deltas/ada")  # doctest: +SKIP
    >>> ConceptDelta.from_pretrained("deltas/ada").apply_to(model)  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .adapter_weights import add_checked
from .config import CONFIG_NAME, STACK_NAME, WEIGHTS_NAME, TargetInfo, UnlearningConfig
from .config_fields import FLOAT_DTYPES
from .errors import (
    AdapterError,
    ConfigError,
    DeltaFormatError,
    FingerprintMismatchError,
    NonFiniteGradientError,
)
from .io import (
    PinnedFolder,
    atomic_folder,
    fingerprint,
    parse_safetensors_bytes,
    read_consistently,
    write_json,
)
from .names import (
    StackEntry,
    folder_layout,
    owned_entries,
    path_argument,
    read_stack_index,
)
from .resolve import not_a_delta_error, resolve_folder

UP, DOWN = ".up", ".down"


@dataclass
class ConceptDelta:
    """One concept's update: `config` (what and where) and `tensors` (dense or low-rank)."""

    config: UnlearningConfig
    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        """Check that the tensors are exactly the config's targets, with their shapes."""
        names = self.config.targets
        if self.config.delta_format == "lowrank":
            expected = {n + suffix for n in names for suffix in (UP, DOWN)}
        else:
            expected = set(names)
        if set(self.tensors) != expected:
            extra = sorted(set(self.tensors) - expected)[:3]
            lacking = sorted(expected - set(self.tensors))[:3]
            raise DeltaFormatError(
                f"the delta's tensors do not match its config's targets (unexpected {extra}, "
                f"missing {lacking}): the folder is inconsistent; save it again."
            )
        for name, info in names.items():
            self._check_shape(name, list(info.shape))

    def _check_shape(self, name: str, want: list[int]) -> None:
        if self.config.delta_format != "lowrank":
            tensor = self.tensors[name]
            _floating(name, tensor)
            if list(tensor.shape) != want:
                raise DeltaFormatError(
                    f"the delta for {name} has shape {list(tensor.shape)}, its config says "
                    f"{want}: the folder is inconsistent; save it again."
                )
            return
        up, down = self.tensors[name + UP], self.tensors[name + DOWN]
        _floating(name + UP, up)
        _floating(name + DOWN, down)
        if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0] or up.shape[1] < 1:
            raise DeltaFormatError(
                f"the low-rank factors of {name} do not multiply: up is {list(up.shape)}, down "
                f"is {list(down.shape)} (they need out x r and r x in, r >= 1); save it again."
            )
        if [up.shape[0], down.shape[1]] != want:
            raise DeltaFormatError(
                f"the low-rank factors of {name} make a {[up.shape[0], down.shape[1]]} delta, "
                f"its config says {want}: the folder is inconsistent; save it again."
            )

    def check_finite(self, source: str | Path | None = None) -> None:
        """Raise NonFiniteGradientError if a stored tensor or the dense delta holds NaN/inf."""
        where = f"{source}: " if source else ""
        for key, tensor in self.tensors.items():
            if not torch.isfinite(tensor).all():
                raise NonFiniteGradientError(
                    f"{where}the delta for {self.config.concept!r} holds NaN/inf in {key}: it "
                    "would corrupt every output. Recompute the delta or load a good copy."
                )
        for name, value in self.dense().items():
            if not torch.isfinite(value).all():
                raise NonFiniteGradientError(
                    f"{where}the low-rank factors of {name} in the delta for "
                    f"{self.config.concept!r} overflow to NaN/inf when multiplied: recompute "
                    "the delta or load a good copy."
                )

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_result(
        cls,
        result: Any,
        *,
        concept_kind: str | None = None,
        model_family: str = "clip",
        component: str | None = None,
        rename: Mapping[str, str] | None = None,
    ) -> ConceptDelta:
        """The delta of an `UnlearningResult`: `result.to_delta(...)` with these keywords.

        `concept_kind` defaults to the result's config's; `rename` maps CLIPModel names to host
        names. The result builds it, so this module needs nothing from the search.
        """
        to_delta = getattr(result, "to_delta", None)
        if not callable(to_delta):
            raise AdapterError(
                f"expected an UnlearningResult (from hf_slug.unlearn), got "
                f"{type(result).__name__}: pass the result of unlearn(...) or a ConceptDelta."
            )
        return to_delta(
            concept_kind=concept_kind, model_family=model_family, component=component, rename=rename
        )

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

    def digest(self) -> str:
        """sha256 over the stored tensors (names and values): which delta a report is about."""
        import hashlib

        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            digest.update(f"{name}:{fingerprint(self.tensors[name])};".encode())
        return digest.hexdigest()

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

    def rekeyed(self, mapping: Mapping[str, str]) -> ConceptDelta:
        """This delta with its target names mapped (`mapping`: old name -> host name)."""
        if all(k == v for k, v in mapping.items()):
            return self
        suffixes = ("", UP, DOWN)
        tensors = {}
        for key, value in self.tensors.items():
            base = next(k for k in mapping for s in suffixes if key == k + s)
            tensors[mapping[base] + key[len(base) :]] = value
        targets = {mapping[k]: v for k, v in self.config.targets.items()}
        scales = {mapping.get(k, k): v for k, v in self.config.scales.items()}
        return ConceptDelta(replace(self.config, targets=targets, scales=scales), tensors)

    def check_weighted(self, weight: float, name: str) -> None:
        """Raise NonFiniteGradientError if `weight` × this delta overflows to inf."""
        for key, value in self.dense().items():
            if not torch.isfinite(weight * value).all():
                raise NonFiniteGradientError(
                    f"weight {weight:g} times the delta of {name!r} overflows to inf in {key}: "
                    "pass a smaller weight."
                )

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
            held = str(base.dtype).removeprefix("torch.")
            if actual != info.sha256 and held != info.dtype:
                raise FingerprintMismatchError(
                    f"{name} does not match the delta for {self.config.concept!r} because of "
                    f"its dtype: the model holds {held}, the delta was computed on "
                    f"{info.dtype}. Load the model in {info.dtype} "
                    f"(torch_dtype=torch.{info.dtype}) before applying, or pass "
                    "check_fingerprint=False if you accept the rounding."
                )
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
        """Add `weight` × this delta into `model` in place (after `check_base`); return it.

        All or nothing: `weight` must be a finite number (AdapterError for a str or bool,
        NonFiniteGradientError for NaN/inf), the delta finite, and every `base + weight·Δ`
        finite in the model's dtype (`hf_slug.adapter_weights.checked_update`) before any
        weight is written.
        """
        self.check_base(model, check_fingerprint=check_fingerprint)
        self.check_finite()
        who = f"refusing to apply the delta for {self.config.concept!r} at weight {weight}"
        add_checked(model, self.dense(), weight, who)
        return model

    # -- files ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write the folder; `dtype=torch.float16` halves it. Nothing is replaced on failure.

        The folder is replaced as a whole (see `hf_slug.io.atomic_folder`): the new config and
        tensors appear together, a stack saved there before (its `slug_stack.json` and adapter
        sub-folders) is replaced by this one delta, and files hf_slug did not write (README.md,
        notes) are kept.
        """
        directory = path_argument(directory, "directory")
        storage_dtype(dtype)
        with atomic_folder(directory, owned_entries) as tmp:
            self.write_files(tmp, dtype=dtype)
        return directory

    def write_files(self, directory: Path, *, dtype: torch.dtype | None = None) -> None:
        """Write config and tensors into `directory` (created; no atomicity: see save_pretrained)."""
        dtype = storage_dtype(dtype)
        tensors = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in self.tensors.items()}
        if any(not torch.isfinite(t).all() for t in tensors.values()):
            raise NonFiniteGradientError(
                f"the delta for {self.config.concept!r} holds NaN/inf (after casting to "
                f"{dtype}): save it in float32 or recompute it."
            )
        stored = (
            str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else "float32"
        )
        config = replace(self.config, delta_dtype=stored).checked_dict()  # before any write
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu") for k, v in tensors.items()}
        save_file(
            tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "hf_slug": "delta"}
        )
        write_json(directory / CONFIG_NAME, config)

    @classmethod
    def from_pretrained(cls, path: str | Path, **hub_kwargs: Any) -> ConceptDelta:
        """Load a delta folder, or a Hub repo id (see `hf_slug.resolve.resolve_folder`).

        The config is validated field by field, the tensors against it, and a delta holding
        NaN/inf is refused (NonFiniteGradientError). A save replacing the folder meanwhile is
        waited out: the config and tensors read always come from the same save.
        """

        path_argument(path, "path")

        def read() -> ConceptDelta:
            folder = resolve_folder(path, **hub_kwargs)
            with PinnedFolder(folder) as pinned:
                kind = folder_layout(pinned.is_file(CONFIG_NAME), pinned.is_file(STACK_NAME), path)
                if kind != "delta":
                    raise not_a_delta_error(folder, path, stack=kind == "stack")
                return cls.read_pinned(pinned, folder)

        return read_consistently(read)

    @classmethod
    def read_pinned(cls, pinned: PinnedFolder, source: str | Path) -> ConceptDelta:
        """Read and check the delta in an opened folder (see `hf_slug.io.PinnedFolder`)."""
        source = Path(source)
        config = UnlearningConfig.from_bytes(pinned.read_bytes(CONFIG_NAME), source / CONFIG_NAME)
        tensors = parse_safetensors_bytes(pinned.read_bytes(WEIGHTS_NAME), source / WEIGHTS_NAME)
        pinned.check_unchanged()
        try:
            delta = cls(config, tensors)
        except DeltaFormatError as error:
            raise DeltaFormatError(f"{source}: {error}") from error
        delta.check_finite(source)
        return delta


def low_rank_factors(
    delta: torch.Tensor, rank: int | float | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """SVD factors `(up, down)` of a 2-D delta and the relative error of `up @ down`.

    `rank=None` keeps every singular value above float32 noise (exact to float32 precision, the
    numerical rank of `numpy.linalg.matrix_rank`); an int keeps that
    many; a float in (0, 1] keeps the fewest values holding that fraction of the squared norm.
    """
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, numbers.Real)):
        raise ConfigError(
            f"rank must be None, a positive int or an energy fraction in (0, 1], got {rank!r}: "
            "pass e.g. rank=8 or rank=0.99."
        )
    if not torch.isfinite(delta).all():
        raise NonFiniteGradientError(
            "the delta holds NaN/inf, which no low-rank factors can represent: recompute it, "
            "or load a good copy."
        )
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if rank is None:
        # numpy.linalg.matrix_rank's rule: values below float32 noise carry nothing
        tolerance = s[0] * max(delta.shape) * torch.finfo(torch.float32).eps if s.numel() else 0
        keep = max(1, int((s > tolerance).sum())) if s.numel() and s[0] > 0 else 1
    elif isinstance(rank, float):
        if not 0 < rank <= 1:
            raise ConfigError(
                f"an energy fraction must be in (0, 1], got {rank}: pass e.g. rank=0.99."
            )
        energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        keep = int((energy < rank - 1e-12).sum()) + 1
    else:
        if rank < 1:
            raise ConfigError(f"rank must be at least 1, got {rank}: pass e.g. rank=8.")
        keep = min(int(rank), s.numel())
    root = s[:keep].sqrt()
    up = (u[:, :keep] * root).float()
    down = (root[:, None] * vh[:keep]).float()
    norm = delta.double().norm()
    error = float((delta.double() - up.double() @ down.double()).norm() / norm) if norm > 0 else 0.0
    return up, down, error


def combined(
    deltas: Sequence[ConceptDelta], weights: Sequence[float], labels: Sequence[str]
) -> ConceptDelta:
    """One dense delta equal to `Σ wₐ·Δₐ`, its config the first's (`labels` name the parts)."""
    tensors: dict[str, torch.Tensor] = {}
    targets: dict[str, TargetInfo] = {}
    for delta, w in zip(deltas, weights):
        for key, value in delta.dense().items():
            tensors[key] = tensors.get(key, 0) + w * value
            targets[key] = delta.config.targets[key]
    config = replace(
        deltas[0].config,
        concept=" + ".join(d.config.concept for d in deltas),
        targets=targets,
        scales={},
        delta_format="dense",
        rank=None,
        metrics={"combined": dict(zip(labels, weights))},
    )
    return ConceptDelta(config, tensors)


STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def storage_dtype(dtype: Any) -> torch.dtype | None:
    """`dtype` if a delta can be stored in it (None keeps the tensors' own), else ConfigError.

    Example:
        >>> storage_dtype(torch.float16)
        torch.float16
    """
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in STORAGE_DTYPES):
        return dtype
    allowed = ", ".join(f"torch.{str(d).removeprefix('torch.')}" for d in STORAGE_DTYPES)
    raise ConfigError(
        f"a delta can be saved in {allowed} or None (its own dtype), got {dtype!r}: pass e.g. "
        "dtype=torch.float16 (a torch.dtype, not a string) to halve the file."
    )


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise DeltaFormatError(f"unknown dtype {name!r} in the slug config.")
    return value


def _floating(name: str, tensor: torch.Tensor) -> None:
    if str(tensor.dtype).removeprefix("torch.") not in FLOAT_DTYPES:  # as the config's dtypes
        raise DeltaFormatError(
            f"the delta tensor {name} has dtype {tensor.dtype}, not float32, float16, bfloat16 "
            "or float64: the file is not an hf_slug delta; save it again in one of those."
        )


def folder_size(directory: str | Path) -> int:
    """Total bytes of the files in a folder (not recursive)."""
    return sum(os.path.getsize(p) for p in Path(directory).iterdir() if p.is_file())


def read_delta_or_stack(
    path: str | Path, adapter_name: str | None, hub_kwargs: dict[str, Any]
) -> ConceptDelta | list[tuple[StackEntry, ConceptDelta]]:
    """A delta, or a stack's (entry, delta) pairs (only `adapter_name`'s if given), read whole.

    Every entry of the stack index is validated (`hf_slug.names.read_stack_index`) and each
    adapter folder must be a plain sub-folder, so nothing outside the folder is read.
    """
    path_argument(path, "path")
    folder = resolve_folder(path, **hub_kwargs)
    with PinnedFolder(folder) as pinned:
        kind = folder_layout(pinned.is_file(CONFIG_NAME), pinned.is_file(STACK_NAME), path)
        if kind == "delta":
            return ConceptDelta.read_pinned(pinned, folder)
        if kind is None:
            raise not_a_delta_error(folder, path)
        entries = read_stack_index(pinned.read_bytes(STACK_NAME), folder / STACK_NAME)
        if adapter_name is not None:
            entries = [e for e in entries if e.name == adapter_name]
            if not entries:
                raise AdapterError(f"{path} holds no adapter named {adapter_name!r}.")
        loaded = []
        for entry in entries:
            with pinned.sub(entry.name) as sub:
                source = folder / entry.name
                inner = folder_layout(sub.is_file(CONFIG_NAME), sub.is_file(STACK_NAME), source)
                if inner != "delta":
                    raise not_a_delta_error(source, source, stack=inner == "stack")
                loaded.append((entry, ConceptDelta.read_pinned(sub, source)))
        return loaded
