"""SLUGModel: named concept deltas attached to a model or pipeline — stack, weight, merge, save.

Unmerged, each targeted `nn.Linear` gets a forward hook adding `x @ (Σₐ wₐ·Δₐ)ᵀ` to its output,
so the base weights stay untouched and the forward equals that of `base + Σ wₐ·Δₐ`. Merged, the
sum is written into the weights (in fp32) and the originals are kept to unmerge exactly. The
hooks and writes are `hf_slug.adapter_weights`'s; this module keeps the adapters' bookkeeping.

Every added adapter is active at its weight until `set_adapters`, `delete_adapter` or
`disable_adapters` says otherwise: nothing is deactivated silently.

Adapter names are validated folder names (`hf_slug.names`); weights and deltas must be finite,
and nothing non-finite in the model's dtype is ever hooked or written (all or nothing).

Example:
    >>> slug = SLUGModel(model)  # doctest: +SKIP
    >>> slug.add_adapter("ada", result)  # an UnlearningResult or a ConceptDelta
    >>> slug.load_adapter("deltas/bob", adapter_name="bob")
    >>> slug.set_adapters(["ada", "bob"], [1.0, 0.5])
    >>> merged = slug.merge_and_unload()
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .adapter_weights import (
    DeltaHooks,
    checked_update,
    host_parameter,
    module_tree,
    owner,
    restoring,
    write_weights,
)
from .config import STACK_NAME
from .delta import ConceptDelta, combined, read_delta_or_stack, storage_dtype
from .errors import AdapterError, DeltaFormatError
from .export import ExportReport, export_peft_lora
from .hub import push_to_hub
from .io import atomic_folder, read_consistently, write_json
from .names import (
    StackEntry,
    adapter_names_list,
    adapter_weight,
    adapter_weights_list,
    default_adapter_name,
    owned_entries,
    parse_stack_index,
    path_argument,
    saves_bare,
    validate_adapter_name,
)


class SLUGModel:
    """A model (or pipeline) plus named concept deltas. The wrapped object is `.model`."""

    def __init__(self, model: Any):
        if isinstance(model, SLUGModel):
            raise TypeError("this model is already wrapped: use it, or its .model, directly.")
        self.model = model
        self.adapters: dict[str, ConceptDelta] = {}
        self.weights: dict[str, float] = {}
        self.targets: dict[str, dict[str, str]] = {}  # adapter -> delta key -> host name
        self._active: list[str] = []
        self._base: dict[str, torch.Tensor] = {}  # original values of every targeted tensor
        self._hooks = DeltaHooks()  # the unmerged adapters' forward hooks
        self._merged = False
        self._disabled = False

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: Any,
        path: str | Path,
        adapter_name: str | None = None,
        weight: float = 1.0,
        *,
        check_fingerprint: bool = True,
        **hub_kwargs: Any,
    ) -> SLUGModel:
        """Wrap `model` and load the delta (or saved stack of deltas) at `path` or repo id."""
        slug = cls(model)
        slug.load_adapter(
            path, adapter_name, weight, check_fingerprint=check_fingerprint, **hub_kwargs
        )
        return slug

    def load_adapter(
        self,
        path: str | Path,
        adapter_name: str | None = None,
        weight: float = 1.0,
        *,
        check_fingerprint: bool = True,
        **hub_kwargs: Any,
    ) -> list[str]:
        """Load a delta folder, a saved stack, or a Hub repo; return the adapter names added.

        A stack is read as a whole (every entry of its index validated, every delta checked)
        before any adapter is added, and if one cannot be added none stays added.
        """
        if adapter_name is not None:
            validate_adapter_name(adapter_name)
        weight = adapter_weight(weight, "weight")
        loaded = read_consistently(lambda: read_delta_or_stack(path, adapter_name, hub_kwargs))
        if isinstance(loaded, ConceptDelta):
            name = adapter_name or default_adapter_name(loaded.config.concept)
            self.add_adapter(name, loaded, weight, check_fingerprint=check_fingerprint)
            return [name]
        added: list[str] = []
        try:
            for entry, delta in loaded:
                self.add_adapter(
                    entry.name,
                    delta,
                    entry.weight * weight,
                    active=entry.active,
                    check_fingerprint=check_fingerprint,
                )
                added.append(entry.name)
        except BaseException:
            for name in reversed(added):
                self.delete_adapter(name)
            raise
        return added

    def add_adapter(
        self,
        adapter_name: str,
        delta: Any,
        weight: float = 1.0,
        *,
        active: bool = True,
        check_fingerprint: bool = True,
    ) -> None:
        """Attach a `ConceptDelta` (or an `UnlearningResult`) under `adapter_name`."""
        validate_adapter_name(adapter_name)
        weight = adapter_weight(weight, f"the weight of {adapter_name!r}")
        if not isinstance(active, bool):
            raise AdapterError(f"active must be True or False, got {active!r}.")
        if not isinstance(delta, ConceptDelta):
            delta = ConceptDelta.from_result(delta)
        clash = [n for n in self.adapters if n.lower() == adapter_name.lower()]
        if clash:
            raise AdapterError(
                f"an adapter named {clash[0]!r} exists (names are folder names, compared "
                "ignoring case): delete_adapter it first or pick another adapter_name."
            )
        delta.check_finite(f"adapter {adapter_name!r}")
        delta.check_weighted(weight, adapter_name)
        root = module_tree(self.model)
        params = dict(root.named_parameters())
        mapping = {
            key: host_parameter(root, params, key, info, delta.config)
            for key, info in delta.config.targets.items()
        }
        for host in mapping.values():
            if not isinstance(owner(root, host), nn.Linear):
                raise DeltaFormatError(f"{host} is not the weight of an nn.Linear layer.")
        renamed = delta.rekeyed(mapping)
        base = {host: self._base.get(host, params[host]) for host in mapping.values()}
        renamed.check_base(root, check_fingerprint=check_fingerprint, base_tensors=base)
        with self._rollback():
            for host in mapping.values():
                self._base.setdefault(host, params[host].detach().clone())
            self.adapters[adapter_name] = renamed
            self.targets[adapter_name] = {h: h for h in mapping.values()}
            self.weights[adapter_name] = weight
            if active:
                self._active.append(adapter_name)
            self._refresh()
        self._warn_interference([adapter_name])

    # -- which adapters act ----------------------------------------------------------------
    @property
    def active_adapters(self) -> list[str]:
        """The adapters currently applied (empty inside `disable_adapters()`)."""
        return [] if self._disabled else list(self._active)

    def set_adapters(
        self,
        adapter_names: str | Sequence[str],
        weights: float | Sequence[float] | None = None,
        *,
        adapter_weights: float | Sequence[float] | None = None,
    ) -> None:
        """Make exactly these adapters active, with these weights (default: their current).

        `adapter_weights=` is the same as `weights=`, in diffusers' vocabulary.
        """
        if adapter_weights is not None:
            if weights is not None:
                raise AdapterError("pass weights= or adapter_weights=, not both.")
            weights = adapter_weights
        names = adapter_names_list(adapter_names)
        self._require(names)
        if weights is None:
            values = [self.weights[n] for n in names]
        else:
            values = adapter_weights_list(weights, names)
        for name, w in zip(names, values):
            self.adapters[name].check_weighted(w, name)
        with self._rollback():
            self.weights.update(zip(names, values))
            self._active[:] = names
            self._refresh()
        self._warn_interference(names)

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the only active adapter."""
        self.set_adapters([adapter_name])

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Within the block the model behaves as the base model."""
        previous = self._disabled
        self._disabled = True
        self._refresh(check=False)  # the base weights: nothing to check
        try:
            yield
        finally:
            self._disabled = previous
            self._refresh(check=False)  # the state from before the block, checked when set

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter and every trace of it (its hooks and base copies if unused)."""
        self._require([adapter_name])
        with self._rollback():
            del self.adapters[adapter_name], self.weights[adapter_name]
            hosts = set(self.targets.pop(adapter_name).values())
            self._active[:] = [n for n in self._active if n != adapter_name]
            self._refresh()
        still = {h for a in self.targets.values() for h in a.values()}
        for host in hosts - still:
            del self._base[host]

    # -- merging ---------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return self._merged

    def merge_adapter(self, *, safe_merge: bool = True) -> None:
        """Write `base + Σ wₐ·Δₐ` of the active adapters into the weights (fp32 sum).

        Every merged weight is first checked to be finite in the model's dtype; if one is not,
        NonFiniteGradientError is raised and nothing changes. The check always runs (every
        write does it); `safe_merge` is kept for PEFT compatibility.
        """
        self._refresh(merged=True)

    def unmerge_adapter(self) -> None:
        """Restore the base weights exactly; the active adapters act through hooks again."""
        self._refresh(merged=False)

    def fuse(self, *, safe_merge: bool = True) -> None:
        """`merge_adapter`, in diffusers' vocabulary (`fuse_lora`)."""
        self.merge_adapter(safe_merge=safe_merge)

    def unfuse(self) -> None:
        """`unmerge_adapter`, in diffusers' vocabulary (`unfuse_lora`)."""
        self.unmerge_adapter()

    def merge_and_unload(self, *, safe_merge: bool = True) -> Any:
        """Merge the active adapters for good, drop all adapter state, return the model.

        Like `merge_adapter`, it refuses (changing nothing) a merged weight that is not finite.
        """
        self._check_finite(self._sum(), "merge")
        self._hooks.remove()
        self._write_weights(self._sum())
        self._forget_all()
        return self.model

    def unload(self) -> Any:
        """Drop every adapter and return the base model, unchanged."""
        self._hooks.remove()
        self._write_weights({})
        self._forget_all()
        return self.model

    def add_weighted_adapter(
        self,
        adapter_names: Sequence[str],
        weights: Sequence[float],
        adapter_name: str,
        *,
        active: bool = False,
    ) -> None:
        """A new adapter equal to `Σ wₐ·Δₐ` (dense), added inactive unless `active=True`."""
        validate_adapter_name(adapter_name)
        adapter_names = adapter_names_list(adapter_names)
        self._require(adapter_names)
        if not adapter_names:
            raise AdapterError("add_weighted_adapter needs at least one adapter to combine.")
        weights = adapter_weights_list(weights, adapter_names)
        parts = [self.adapters[n] for n in adapter_names]
        self.add_adapter(adapter_name, combined(parts, weights, adapter_names), active=active)

    # -- saving and reporting ------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | Path,
        selected_adapters: Sequence[str] | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> Path:
        """One sub-folder per adapter plus `slug_stack.json` (names, weights, active).

        The folder is replaced as a whole (see `hf_slug.io.atomic_folder`): a reader sees the
        old stack or the new one, never a mix; if writing any adapter fails nothing changes. A
        single delta saved there before (`slug_config.json`) or adapters not in this save are
        replaced; files hf_slug did not write (README.md, notes) are kept.
        """
        names = (
            adapter_names_list(selected_adapters)
            if selected_adapters is not None
            else list(self.adapters)
        )
        self._require(names)
        if not names:
            raise AdapterError("no adapter to save: add or load one first.")
        directory = path_argument(directory, "directory")
        storage_dtype(dtype)
        entries = [StackEntry(n, self.weights[n], n in self._active).to_dict() for n in names]
        parse_stack_index({"adapters": entries}, "the stack to save")
        with atomic_folder(directory, owned_entries) as tmp:
            for name in names:
                self.adapters[name].write_files(tmp / name, dtype=dtype)
            write_json(tmp / STACK_NAME, {"adapters": entries})
        return directory

    def to_peft_lora(
        self,
        directory: str | Path,
        rank: int | float | None = None,
        adapter_names: Sequence[str] | None = None,
    ) -> ExportReport:
        """Export `Σ wₐ·Δₐ` of the active adapters (or of `adapter_names`) as one PEFT LoRA."""
        names = (
            adapter_names_list(adapter_names) if adapter_names is not None else self.active_adapters
        )
        self._require(names)
        if not names:
            raise AdapterError("no adapter to export: add or activate one first.")
        total = self._sum(names)
        base = self.adapters[names[0]].config.base_model_name_or_path
        return export_peft_lora(total, directory, rank=rank, base_model_name_or_path=base)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        selected_adapters: Sequence[str] | None = None,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ) -> Any:
        """Upload the adapters with a model card (one adapter at the repo root, else a stack).

        A single adapter is uploaded as a bare delta only if loading it back gives the same
        adapter (active, weight 1, its default name); otherwise as a one-entry stack.
        """
        names = (
            adapter_names_list(selected_adapters)
            if selected_adapters is not None
            else list(self.adapters)
        )
        self._require(names)
        one = names[0] if len(names) == 1 else None
        with tempfile.TemporaryDirectory(prefix="hf_slug_") as tmp:
            folder = Path(tmp) / "delta"
            if one and saves_bare(
                one, self.weights[one], one in self._active, self.adapters[one].config.concept
            ):
                self.adapters[one].save_pretrained(folder)
            else:
                self.save_pretrained(folder, names)
            return push_to_hub(
                folder,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message,
                revision=revision,
            )

    def status(self) -> dict[str, Any]:
        """Which adapters, which tensors, weights, active or not, merged or not, sizes."""
        return {
            "merged": self._merged,
            "disabled": self._disabled,
            "adapters": {
                name: {
                    "concept": delta.config.concept,
                    "active": name in self.active_adapters,
                    "weight": self.weights[name],
                    "targets": list(self.targets[name].values()),
                    "format": delta.config.delta_format,
                    "bytes": delta.nbytes(),
                }
                for name, delta in self.adapters.items()
            },
        }

    def __repr__(self) -> str:
        lines = [f"SLUGModel({type(self.model).__name__}, merged={self._merged})"]
        for name, info in self.status()["adapters"].items():
            flag = "active" if info["active"] else "inactive"
            lines.append(
                f"  {name}: {info['concept']!r} w={info['weight']:g} {flag} "
                f"{len(info['targets'])} tensor(s) {info['bytes'] / 1e6:.2f} MB"
            )
        return "\n".join(lines)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped model or pipeline."""
        return self.model(*args, **kwargs)

    # -- internals ---------------------------------------------------------------------------
    def _require(self, names: Sequence[str]) -> None:
        for name in names:
            validate_adapter_name(name)
        unknown = [n for n in names if n not in self.adapters]
        if unknown:
            raise AdapterError(
                f"no adapter named {unknown}: the loaded adapters are {sorted(self.adapters)}."
            )

    def _warn_interference(self, new: Sequence[str]) -> None:
        """Warn about known interference between `new` and the active adapters (stacking.py)."""
        from .stacking import interference

        for message in interference(self.adapters, self.targets, self.active_adapters, new):
            warnings.warn(message, stacklevel=3)

    def _sum(self, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """host name -> Σ over the active adapters (or `names`) of wₐ·Δₐ (fp32)."""
        total: dict[str, torch.Tensor] = {}
        for name in self.active_adapters if names is None else names:
            w = self.weights[name]
            for key, value in self.adapters[name].dense().items():
                host = self.targets[name][key]
                total[host] = total.get(host, 0) + w * value
        return total

    def _check_finite(self, total: dict[str, torch.Tensor], action: str) -> None:
        """Raise unless every weighted delta and `base + Σ wₐ·Δₐ` is usable in the model's dtype."""
        params = dict(module_tree(self.model).named_parameters())
        for host, delta in total.items():
            carriers = [
                f"{a} (weight {self.weights[a]:g})"
                for a in self._active
                if host in self.targets[a].values()
            ]
            who = f"refusing to {action} adapters {carriers}"
            checked_update(host, self._base[host], delta, params[host].dtype, who)

    def _rollback(self) -> contextlib.AbstractContextManager:
        """Puts the bookkeeping back if the block raises (`_refresh` then changed nothing)."""
        return restoring(self.adapters, self.weights, self.targets, self._base, self._active)

    def _refresh(self, merged: bool | None = None, *, check: bool = True) -> None:
        """Bring weights and hooks in line with the merged flag (`merged` sets it), active set
        and weights. What the active adapters would do is checked first (even while disabled):
        on failure nothing is written or hooked."""
        merged = self._merged if merged is None else merged
        would = self._sum(self._active)
        if check:
            self._check_finite(would, "merge" if merged else "activate")
        total = {} if self._disabled else would
        self._merged = merged
        self._hooks.remove()
        if self._merged:
            self._write_weights(total)
            return
        self._write_weights({})
        self._hooks.install(module_tree(self.model), total)

    def _write_weights(self, total: dict[str, torch.Tensor]) -> None:
        """Set every targeted tensor to its base value plus `total`'s entry (if any)."""
        write_weights(module_tree(self.model), self._base, total)

    def _forget_all(self) -> None:
        self.adapters.clear()
        self.weights.clear()
        self.targets.clear()
        self._active.clear()
        self._base.clear()
        self._merged = False
