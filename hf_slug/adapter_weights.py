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

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import AdapterError
from .weights import added

__all__ = [
    "DeltaHooks",
    "hooked_layers",
    "module_tree",
    "owner",
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
