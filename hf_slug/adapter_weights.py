"""How attached deltas act on a model: forward hooks (unmerged) or written weights (merged).

`SLUGModel` (hf_slug.model) keeps the adapters' bookkeeping; this module holds the mechanics it
uses. Unmerged, each targeted `nn.Linear` gets a forward hook (`DeltaHooks`) adding
`x @ Δᵀ` to its output; merged, `write_weights` sets each weight to `base + Δ`, summed in fp32
(`hf_slug.weights.added`) and cast to the weight's dtype.

Example:
    >>> import torch
    >>> root = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> hooks = DeltaHooks()
    >>> hooks.install(root, {"0.weight": torch.eye(2)})
    >>> len(hooks)
    1
    >>> hooks.remove()
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from .config import TargetInfo, UnlearningConfig
from .errors import AdapterError, DeltaFormatError, NonFiniteGradientError
from .names import adapter_weight
from .towers import block_index, find_towers
from .weights import added

__all__ = [
    "DeltaHooks",
    "add_checked",
    "checked_update",
    "host_parameter",
    "hooked_layers",
    "module_tree",
    "owner",
    "restoring",
    "require_no_active_adapters",
    "write_weights",
]


def module_tree(host: Any) -> nn.Module:
    """The module tree of a model (itself) or a diffusers pipeline (its nn.Module components).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> module_tree(layer) is layer
        True
    """
    if isinstance(host, nn.Module):
        return host
    components = getattr(host, "components", None)
    if isinstance(components, dict):
        return nn.ModuleDict({k: v for k, v in components.items() if isinstance(v, nn.Module)})
    raise TypeError(
        f"SLUGModel wraps a torch model or a diffusers pipeline, got {type(host).__name__}."
    )


def owner(root: nn.Module, param_name: str) -> nn.Module:
    """The module of `root` that holds the parameter `param_name`.

    Example:
        >>> import torch
        >>> root = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> type(owner(root, "0.weight")).__name__
        'Linear'
    """
    return root.get_submodule(param_name.rsplit(".", 1)[0])


class DeltaHooks:
    """Forward hooks adding `x @ Δᵀ` to the output of each hooked layer (one per weight name).

    The deltas are read when the layer runs. `len(hooks)` is the number of hooked layers.

    Example:
        >>> import torch
        >>> root = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
        >>> hooks = DeltaHooks()
        >>> hooks.install(root, {"0.weight": -root[0].weight.detach()})
        >>> root(torch.ones(1, 2)).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self) -> None:
        self.handles: dict[str, Any] = {}
        self.deltas: dict[str, torch.Tensor] = {}

    def install(self, root: nn.Module, total: Mapping[str, torch.Tensor]) -> None:
        """Hook the owner of every weight named in `total` to add that weight's delta."""
        for host, delta in total.items():
            module = owner(root, host)
            self.deltas[host] = delta
            self.handles[host] = module.register_forward_hook(_adder(self.deltas, host))

    def remove(self) -> None:
        """Remove every hook (and forget the deltas)."""
        for handle in self.handles.values():
            handle.remove()
        self.handles.clear()
        self.deltas.clear()

    def __len__(self) -> int:
        return len(self.handles)


def write_weights(
    root: nn.Module, base: Mapping[str, torch.Tensor], total: Mapping[str, torch.Tensor]
) -> None:
    """Set every weight named in `base` to its base value plus `total`'s entry (if any).

    The sum is taken in fp32 and cast to the weight's dtype (`hf_slug.weights.added`).

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2)
        >>> write_weights(layer, {"weight": torch.zeros(2, 2)}, {"weight": torch.eye(2)})
        >>> layer.weight.data
        tensor([[1., 0.],
                [0., 1.]])
    """
    params = dict(root.named_parameters())
    with torch.no_grad():
        for host, value in base.items():
            target = params[host]
            if host in total:
                target.copy_(added(value, total[host], dtype=target.dtype))
            else:
                target.copy_(value.to(target.dtype))


def checked_update(
    host: str, base: torch.Tensor, delta: torch.Tensor, dtype: torch.dtype, who: str
) -> torch.Tensor:
    """`base + delta` in `dtype` (see `hf_slug.weights.added`), after checking it is usable.

    `delta` (already weighted, fp32) must be finite, finite in `dtype` (the hooks add it in the
    layer's dtype), its rows' absolute sums must fit `dtype` (else the layer's output overflows
    for any input of magnitude 1) and `base + delta` must be finite in `dtype`; otherwise
    NonFiniteGradientError starting with `who` says which and how to fix it. Nothing is written.

    Example:
        >>> import torch
        >>> checked_update("w", torch.ones(1, 2), torch.ones(1, 2), torch.float16, "merge")
        tensor([[2., 2.]], dtype=torch.float16)
    """
    fix = "pass smaller weights, or load the model in float32"
    if not torch.isfinite(delta).all():
        raise NonFiniteGradientError(
            f"{who}: the weighted delta of {host} holds NaN/inf (a weight too large for "
            "float32, or a corrupt delta): pass a smaller weight, or delete/reload the delta."
        )
    limit = torch.finfo(dtype).max if dtype.is_floating_point else math.inf
    largest = float(delta.abs().max()) if delta.numel() else 0.0
    if not torch.isfinite(delta.to(dtype)).all():
        raise NonFiniteGradientError(
            f"{who}: the weighted delta of {host} reaches {largest:.3g}, beyond what {dtype} "
            f"holds ({limit:.3g}): {fix}."
        )
    if delta.ndim == 2 and delta.numel():
        rows = float(delta.abs().sum(dim=1, dtype=torch.float64).max())
        if rows > limit:
            raise NonFiniteGradientError(
                f"{who}: a row of the weighted delta of {host} sums to {rows:.3g} in absolute "
                f"value, beyond what {dtype} holds ({limit:.3g}), so the layer's output "
                f"overflows to inf: {fix}."
            )
    merged = added(base, delta, dtype=dtype)
    if not torch.isfinite(merged).all():
        raise NonFiniteGradientError(
            f"{who}: base + weighted delta of {host} overflows {dtype}: {fix}."
        )
    return merged


def host_parameter(
    root: nn.Module, params: dict, key: str, info: TargetInfo, config: UnlearningConfig
) -> str:
    """Where a delta's tensor lives in this host: the same name, or the same block by structure.

    A delta computed on a `CLIPModel` (`text_model.encoder.layers.3…`) finds its tensor in a
    pipeline's `text_encoder.encoder.layers.3…` or a VLM's vision tower; the fingerprint check
    then proves it is the same tensor.
    """
    if key in params:
        return key
    found = block_index(key)
    towers = [t for t in find_towers(root) if info.tower in (None, t.kind)]
    if config.component:
        towers = [t for t in towers if config.component in t.path.split(".")] or towers
    if found is not None:
        block, weight = found
        hits = [t.name(f"encoder.layers.{block}.{weight}") for t in towers]
        hits = [h for h in hits if h in params]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DeltaFormatError(
                f"the delta's {key} matches several towers here ({hits}): the delta must name its "
                "component (e.g. text_encoder or text_encoder_2)."
            )
    raise DeltaFormatError(
        f"the delta for {config.concept!r} targets {key}, which this "
        f"{type(root).__name__} does not have (no {info.tower or 'CLIP'} tower with that block). "
        f"Load it onto the model family it was made for ({config.model_family}, base "
        f"{config.base_model_name_or_path})."
    )


def add_checked(
    model: nn.Module, deltas: Mapping[str, torch.Tensor], weight: Any, who: str
) -> nn.Module:
    """Add `weight` × each delta to `model`'s tensor of that name in place, all or nothing.

    `weight` must be a finite number (`hf_slug.names.adapter_weight`); every `base + weight·Δ`
    is computed and checked (`checked_update`, messages start with `who`) before any is written.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(2, 2, bias=False)
        >>> _ = add_checked(layer, {"weight": -layer.weight.detach()}, 1.0, "apply")
        >>> layer.weight.abs().sum().item()
        0.0
    """
    weight = adapter_weight(weight, "weight")
    params = dict(model.named_parameters())
    updated = {
        name: checked_update(
            name, params[name].detach(), weight * delta.float(), params[name].dtype, who
        )
        for name, delta in deltas.items()
    }
    with torch.no_grad():
        for name, value in updated.items():
            params[name].copy_(value)
    return model


@contextlib.contextmanager
def restoring(*containers: dict | list) -> Iterator[None]:
    """If the block raises, put every dict and list back, in place, as it was before it.

    Example:
        >>> state = {"a": 1}
        >>> try:
        ...     with restoring(state):
        ...         state["b"] = 2
        ...         raise ValueError
        ... except ValueError:
        ...     state
        {'a': 1}
    """
    saved = [copy.copy(c) for c in containers]
    try:
        yield
    except BaseException:
        for current, old in zip(containers, saved):
            if isinstance(current, dict):
                current.clear()
                current.update(old)
            else:
                current[:] = old
        raise


def _adder(combined: dict[str, torch.Tensor], host: str) -> Callable[..., torch.Tensor]:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        delta = combined[host].to(device=output.device, dtype=output.dtype)
        return output + torch.nn.functional.linear(args[0], delta)

    hook.hf_slug_delta = host  # marks it for `hooked_layers`
    return hook


def hooked_layers(model: nn.Module) -> list[str]:
    """The modules of `model` that an active, unmerged SLUGModel adapter hooks.

    Their outputs include a delta the weights do not show, so gradients, fingerprints and
    trials computed on `model` would silently include it.

    Example:
        >>> import torch
        >>> hooked_layers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        []
    """
    return [
        name
        for name, module in model.named_modules()
        if any(hasattr(h, "hf_slug_delta") for h in module._forward_hooks.values())
    ]


def require_no_active_adapters(model: nn.Module, what: str) -> None:
    """Raise `AdapterError` if SLUGModel adapters hook `model` (see `hooked_layers`)."""
    hooked = hooked_layers(model)
    if hooked:
        raise AdapterError(
            f"{what} has active SLUGModel adapters (hooks on {hooked[:3]}): a search on it would "
            "include their deltas without knowing it. Pass the base model with the adapters "
            "off (`with slug.disable_adapters(): ...`, or `slug.unload()`), and give deltas to "
            "stack on as UnlearnOptions(on_top_of=[...])."
        )
