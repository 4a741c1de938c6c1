"""SLUG's one gradient computation: `G_f` on the forget set and `G_r` on the retain set.

Both are taken once at the original weights, batch by batch, each batch's gradient weighted by
its size and summed in fp32 (a fresh `torch.autograd.grad` per batch, so nothing accumulates
across batches by accident). Only the candidate tensors get gradients: every other parameter is
frozen for the pass, and a tower without candidates runs without autograd at all. The model's
parameters, `requires_grad` flags, `.grad` fields and train/eval mode are left as they were.

Example:
    >>> grads = compute_gradients(model, processor, forget_pairs, "forget", names)  # doctest: +SKIP
    >>> save_gradients("retain.safetensors", grads, model)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import ImageTextPairs, batches, check_batch_size, load_pairs
from .errors import (
    ConfigError,
    DeltaFormatError,
    NonFiniteGradientError,
    UnknownLayerError,
    UnsupportedModelError,
)
from .io import fingerprint, read_safetensors, read_safetensors_metadata, write_safetensors
from .losses import forget_loss, retain_loss
from .options import GradientOptions
from .towers import encode_images, encode_texts, require_clip, tower_kinds

LossKind = Literal["forget", "retain"]


def compute_gradients(
    model: nn.Module,
    processor: Any,
    pairs: ImageTextPairs,
    loss: LossKind,
    names: Sequence[str],
    *,
    batch_size: int = 32,
    options: GradientOptions | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """The mean gradient of the `loss` over `pairs` for each named tensor, on the CPU.

    `options` (`hf_slug.options.GradientOptions`): `autocast_dtype` (e.g. `torch.bfloat16`)
    runs the forward in mixed precision while the sum stays fp32; `checkpointing` recomputes
    activations in the backward instead of keeping them; `storage_dtype` (e.g. `torch.bfloat16`)
    halves the returned gradients. With an `accelerate.Accelerator` (launched by `accelerate
    launch`), each process takes every n-th batch and the per-tensor sums are all-reduced: every
    process returns the same gradients as one process would (to float rounding).
    """
    options = options or GradientOptions()
    accelerator = options.accelerator
    require_clip_model(model)
    if loss not in ("forget", "retain"):
        raise ConfigError(f"loss must be 'forget' or 'retain', got {loss!r}: pass one of them.")
    check_batch_size(batch_size)
    pairs = load_pairs(pairs, name=f"{loss} set")
    params = dict(model.named_parameters())
    targets = [params[n] for n in check_names(params, names)]
    kinds = set(tower_kinds(model, names).values())
    device = next(model.parameters()).device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = _shard(len(pairs), batch_size, rank, world)
    sums = [torch.zeros(p.shape, dtype=torch.float32, device=device) for p in targets]
    total = torch.zeros((), dtype=torch.float64, device=device)
    with only_these_require_grad(model, targets, options.checkpointing):
        bar = tqdm(
            batches(pairs.subset(shard), processor, batch_size) if shard else iter(()),
            total=-(-len(shard) // batch_size),
            desc=f"{loss} gradients" + (f" [process {rank}/{world}]" if world > 1 else ""),
            unit="batch",
            disable=not progress,
        )
        for n, inputs in bar:
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with _autocast(device, options.autocast_dtype):
                value = _loss(model, inputs, loss, kinds)
            for acc, grad in zip(sums, torch.autograd.grad(value, targets)):
                acc.add_(grad.float(), alpha=n)
            total += n
    if world > 1:
        sums = [accelerator.reduce(acc, reduction="sum") for acc in sums]
        total = accelerator.reduce(total, reduction="sum")
    grads = {name: (acc / total).to("cpu", options.storage_dtype) for name, acc in zip(names, sums)}
    check_finite(grads, what=f"{loss} gradient")
    return grads


def require_clip_model(model: object) -> None:
    """Raise `UnsupportedModelError` unless `model` is a loaded two-tower CLIP module."""
    if isinstance(model, (str, Path)):
        raise UnsupportedModelError(
            f"the model is the string {str(model)!r}, not a loaded model: load it first with "
            f"CLIPModel.from_pretrained({str(model)!r}) and pass that."
        )
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"the model is a {type(model).__name__}, not a torch module: pass a transformers "
            "CLIPModel (CLIPModel.from_pretrained(repo_id_or_folder))."
        )
    require_clip(model)


def check_names(params: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """`names` as a list, if it is non-empty and every name is a parameter; else a typed error."""
    problem = None
    if isinstance(names, str) or not names:
        problem = f"gradients need a non-empty list of parameter names, got {names!r}"
    elif unknown := [n for n in names if n not in params]:
        problem = f"{unknown[:3]} are not parameters of the model"
    if problem is not None:
        raise UnknownLayerError(
            f"{problem}: pass names from hf_slug.towers.candidate_names(model), or "
            "SLUGConfig(layer='auto')."
        )
    return list(names)


def _shard(n_pairs: int, batch_size: int, rank: int, world: int) -> list[int]:
    """The pair indices of process `rank`: whole batches `rank`, `rank + world`, …"""
    starts = range(rank * batch_size, n_pairs, world * batch_size)
    return [i for start in starts for i in range(start, min(start + batch_size, n_pairs))]


def _loss(model: nn.Module, inputs: dict, loss: LossKind, kinds: set[str]) -> torch.Tensor:
    with torch.set_grad_enabled("vision" in kinds):
        images = encode_images(model, inputs["pixel_values"])
    with torch.set_grad_enabled("text" in kinds):
        texts = encode_texts(model, inputs["input_ids"], inputs.get("attention_mask"))
    if loss == "forget":
        return forget_loss(images, texts)
    return retain_loss(images, texts, model.logit_scale)


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise `NonFiniteGradientError` naming every tensor that holds NaN or inf."""
    bad = [name for name, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteGradientError(
            f"the {what} of {len(bad)} tensor(s) holds NaN/inf (first: {bad[0]}). Check the "
            "inputs for NaN pixels, run the model in float32 (or pass autocast_dtype=None), "
            "and check that the weights themselves are finite."
        )


@contextlib.contextmanager
def only_these_require_grad(
    model: nn.Module, targets: list[nn.Parameter], checkpointing: bool = False
) -> Iterator[None]:
    """Freeze every parameter but `targets`, eval mode (or checkpointing); restore afterwards.

    The state `compute_gradients` runs the model in: only `targets` require grad, the model is
    in eval mode (with `checkpointing`, transformers' gradient checkpointing on, in train mode;
    refused for a model with dropout). The flags, the mode and the checkpointing are restored
    on exit, also after an error.

    Example:
        >>> from hf_slug.testing import tiny_clip
        >>> model = tiny_clip()
        >>> target = model.text_projection.weight
        >>> with only_these_require_grad(model, [target]):
        ...     sum(p.requires_grad for p in model.parameters())
        1
        >>> all(p.requires_grad for p in model.parameters())
        True
    """
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    was_checkpointing = getattr(model, "is_gradient_checkpointing", False)
    keep = {id(p) for p in targets}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        model.eval()
        if checkpointing:
            _start_checkpointing(model)
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        if checkpointing and not was_checkpointing:
            model.gradient_checkpointing_disable()
        model.train(was_training)


def _start_checkpointing(model: nn.Module) -> None:
    """Turn on transformers' gradient checkpointing; it acts in train mode, so refuse dropout."""
    if not hasattr(model, "gradient_checkpointing_enable"):
        raise ValueError("gradient_checkpointing needs a transformers PreTrainedModel.")
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    config = getattr(model, "config", None)
    sub = [getattr(config, k, None) for k in ("text_config", "vision_config")]
    rates = [getattr(c, a, 0.0) or 0.0 for c in sub if c for a in ("dropout", "attention_dropout")]
    if dropouts or any(r > 0 for r in rates):
        raise ValueError(
            "gradient checkpointing runs the model in train mode, and this model has dropout: "
            "set the config's dropout and attention_dropout to 0, or compute without it."
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_fingerprint(model: nn.Module, names: Sequence[str]) -> str:
    """One sha256 over the fingerprints of the named tensors (to tie cached gradients to weights)."""
    params = dict(model.named_parameters())
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(f"{name}:{fingerprint(params[name])};".encode())
    return digest.hexdigest()


_WEIGHTS: dict[int, tuple[Any, tuple, str]] = {}  # id(model) -> (model ref, versions, digest)


def weights_fingerprint(model: nn.Module, *, reuse: bool = True) -> str:
    """One sha256 over every parameter and buffer of `model`: a gradient depends on all of them,
    not only on the tensors it is taken for. Kept while no tensor was replaced or written to in
    place since (their version counters), so a call that loads and saves hashes the model once;
    `reuse=False` hashes again (a write through `.data` leaves the version counters alone)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    try:
        versions = tuple((n, id(t), t.data_ptr(), t._version) for n, t in tensors)
    except RuntimeError:  # inference tensors keep no version
        versions = None
    kept = _WEIGHTS.get(id(model))
    fresh = kept is not None and kept[0]() is model and kept[1] == versions
    if reuse and versions is not None and fresh:
        return kept[2]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}:{fingerprint(tensor)};".encode())
    if versions is not None:
        _WEIGHTS.clear()  # one model at a time: no cache outlives its use
        _WEIGHTS[id(model)] = (weakref.ref(model), versions, digest.hexdigest())
    return digest.hexdigest()


def save_gradients(
    path: str | Path, grads: dict[str, torch.Tensor], model: nn.Module, data_signature: str = ""
) -> None:
    """Cache gradients as safetensors, tied to the model's tensors and the data's signature."""
    metadata = {
        "hf_slug": "gradients",
        "model_fingerprint": model_fingerprint(model, list(grads)),
        "weights_fingerprint": weights_fingerprint(model),
        "data_signature": data_signature,
    }
    write_safetensors(path, grads, metadata)


def load_gradients(
    path: str | Path,
    model: nn.Module,
    names: Sequence[str] | None = None,
    data_signature: str | None = None,
) -> dict[str, torch.Tensor]:
    """Load cached gradients; refuse them if the model's tensors or the data changed since."""
    grads = read_safetensors(path)
    metadata = read_safetensors_metadata(path)
    wanted = list(names) if names is not None else list(grads)
    missing = [n for n in wanted if n not in grads]
    if missing or metadata.get("hf_slug") != "gradients":
        raise DeltaFormatError(
            f"{path} is not a gradient cache for these layers (missing {missing[:3]}): compute "
            "the gradients again with the same candidate layers."
        )
    expected = metadata.get("model_fingerprint")
    actual = model_fingerprint(model, list(grads))
    weights = metadata.get("weights_fingerprint")  # (files written before it lack it)
    if expected == actual and weights is not None:  # the other tensors change a gradient too
        expected, actual = weights, weights_fingerprint(model, reuse=False)
    if expected != actual:
        raise DeltaFormatError(
            f"{path} was computed on different weights (fingerprint {expected!s:.12} vs this "
            f"model's {actual:.12}): recompute the gradients on this model."
        )
    if data_signature is not None and metadata.get("data_signature") != data_signature:
        raise DeltaFormatError(
            f"{path} was computed on other data than the set given now: recompute the gradients."
        )
    return {n: grads[n] for n in wanted}


def check_gradient_source(kind: str, source: Any) -> None:
    """A `ConfigError` unless `source` is None, a name -> tensor dict or an existing file."""
    if source is None or isinstance(source, Mapping):
        return
    if not isinstance(source, (str, Path)):
        raise ConfigError(
            f"{kind}_gradients must be None, a name -> tensor dict or a safetensors path, got a "
            f"{type(source).__name__}: pass one of those."
        )
    if not Path(source).is_file():
        raise ConfigError(
            f"{kind}_gradients={str(source)!r} is not a file: pass the path written by "
            "save_gradients (or scripts/distributed_gradients.py), or None to compute them."
        )
