"""Where SLUG's gradients come from: given, read from a cache that matches, or computed.

`gradients_for` takes given gradients (a dict or a file) after checking them, else a cache file
whose metadata matches the model's weights and the data (`gradient_signature`: pairs, processor,
batch size, precision), else runs the pass and writes the cache. `cache_file_for` says which
file `unlearn` uses: `UnlearnOptions.cache_dir`, else for the retain side the per-user cache
(`hf_slug.cache`), one file per weights, candidates and data, keeping the most recently used.

Example:
    >>> grads = gradients_for(model, processor, retain, "retain", names, None,  # doctest: +SKIP
    ...                       cache=None, pass_options={"batch_size": 32})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import cache_home, gradient_cache_enabled, prune, touch
from .config import SLUGConfig
from .data import ImageTextPairs
from .errors import ConfigError, DeltaFormatError, NonFiniteGradientError
from .gradients import (
    LossKind,
    compute_gradients,
    load_gradients,
    save_gradients,
    weights_fingerprint,
)
from .options import GradientOptions, UnlearnOptions
from .phrasings import misspellings

KEEP_FILES = 8  # per-user cache: the most recently used gradient files kept


def gradient_signature(
    pairs: ImageTextPairs, processor: Any, pass_options: Mapping[str, Any]
) -> str:
    """What a gradient depends on besides the weights: the pairs (captions and image bytes),
    the processor (resizing, normalisation, vocabulary), the batch size (the contrastive loss
    contrasts within a batch) and the precision."""
    options = pass_options.get("options") or GradientOptions()
    return (
        f"{pairs.signature()}|processor={processor_signature(processor)}"
        f"|batch_size={pass_options.get('batch_size')}"
        f"|autocast={options.autocast_dtype}|storage={options.storage_dtype}"
    )


def processor_signature(processor: Any) -> str:
    """A sha256 over a processor's image settings and its tokenizer's vocabulary and limits."""
    digest = hashlib.sha256(type(processor).__name__.encode())
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None and hasattr(image_processor, "to_dict"):
        digest.update(json.dumps(image_processor.to_dict(), sort_keys=True, default=str).encode())
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        for attribute in ("model_max_length", "padding_side", "pad_token", "eos_token"):
            digest.update(f"{attribute}={getattr(tokenizer, attribute, None)};".encode())
        digest.update(_vocabulary_digest(tokenizer).encode())
    return digest.hexdigest()


_VOCABULARIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocabulary_digest(tokenizer: Any) -> str:
    """A sha256 of the tokenizer's vocabulary, kept per tokenizer while its size is unchanged
    (hashing 49k entries takes ~0.1 s, which every call would otherwise pay twice)."""
    if not hasattr(tokenizer, "get_vocab"):
        return ""
    size = len(tokenizer)
    try:
        kept = _VOCABULARIES.get(tokenizer)
    except TypeError:  # not weak-referenceable: hash every time
        kept = None
    if kept is not None and kept[0] == size:
        return kept[1]
    digest = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    with contextlib.suppress(TypeError):
        _VOCABULARIES[tokenizer] = (size, digest.hexdigest())
    return digest.hexdigest()


def default_cache_file(model: nn.Module, names: Sequence[str], signature: str) -> Path:
    """The per-user cache file (`hf_slug.cache.cache_home()/gradients`) of the gradients of
    `names` at `model`'s weights over the data of `signature`: one file per combination, so
    concepts on the same model and retain set share it and nothing overwrites another's."""
    digest = hashlib.sha256(weights_fingerprint(model).encode())
    digest.update("\n".join(sorted(names)).encode())
    digest.update(signature.encode())
    return cache_home() / "gradients" / f"{digest.hexdigest()[:40]}.safetensors"


def gradients_for(
    model: nn.Module,
    processor: Any,
    pairs: ImageTextPairs,
    kind: LossKind,
    names: Sequence[str],
    source: str | Path | Mapping[str, torch.Tensor] | None,
    cache: Path | None,
    pass_options: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The `kind` gradients of `names`: given (`source`), read from `cache` when it matches the
    model and the pairs, else computed (`compute_gradients(**pass_options)`: `batch_size`,
    `options`, `progress`) and written to `cache`."""
    if isinstance(source, Mapping):
        missing = [n for n in names if n not in source]
        if missing:
            raise ConfigError(
                f"the given {kind} gradients lack {missing[:3]}: compute them again for these "
                "candidate tensors (or narrow the candidates)."
            )
        return checked_gradients(model, {n: source[n] for n in names}, f"the given {kind}")
    if source is None and cache is None:  # nothing to match: compute
        return compute_gradients(model, processor, pairs, kind, names, **pass_options)
    signature = gradient_signature(pairs, processor, pass_options)
    if source is not None:
        return checked_gradients(
            model, load_gradients(source, model, names, signature), f"{source}'s {kind}"
        )
    if cache is not None and cache.exists():
        try:
            cached = load_gradients(cache, model, names, signature)
            return checked_gradients(model, cached, f"the cached {kind}")
        except (DeltaFormatError, ConfigError, NonFiniteGradientError, KeyError, OSError) as error:
            warnings.warn(f"recomputing {kind} gradients: {error}", stacklevel=3)
    grads = compute_gradients(model, processor, pairs, kind, names, **pass_options)
    accelerator = getattr(pass_options.get("options"), "accelerator", None)
    if cache is not None and (accelerator is None or accelerator.is_main_process):
        try:
            save_gradients(cache, grads, model, signature)
        except OSError as error:  # a cache is an optimisation: the gradients are computed
            warnings.warn(
                f"could not cache the {kind} gradients in {cache.parent} "
                f"({error.strerror or error}): set HF_SLUG_CACHE (or cache_dir) to a writable "
                "folder, or turn the "
                "cache off with UnlearnOptions(cache_retain=False) / "
                "HF_SLUG_DISABLE_GRADIENT_CACHE=1.",
                stacklevel=3,
            )
    return grads


def checked_gradients(
    model: nn.Module, grads: Mapping[str, Any], origin: str
) -> dict[str, torch.Tensor]:
    """`grads` in float32 after checking each is a finite floating-point tensor shaped like its
    parameter: a `ConfigError` or `NonFiniteGradientError` naming the tensor otherwise."""
    checked = {}
    for name, grad in grads.items():
        shape = tuple(model.get_parameter(name).shape)
        if not isinstance(grad, torch.Tensor) or not grad.is_floating_point():
            raise ConfigError(
                f"{origin} gradient of {name} is a {type(grad).__name__} "
                f"({getattr(grad, 'dtype', '')}), not a floating-point tensor: compute it again."
            )
        if tuple(grad.shape) != shape:
            raise ConfigError(
                f"{origin} gradient of {name} has shape {tuple(grad.shape)}, the parameter "
                f"{shape}: it was computed for another model; compute it again."
            )
        if not torch.isfinite(grad).all():
            raise NonFiniteGradientError(
                f"{origin} gradient of {name} holds NaN or inf values: compute it again."
            )
        checked[name] = grad.float()
    return checked


def misspelt_average(
    model: nn.Module,
    processor: Any,
    pairs: ImageTextPairs,
    grads: dict[str, torch.Tensor],
    config: SLUGConfig,
    pass_options: Mapping[str, Any],
    *,
    given: bool = False,
) -> dict[str, torch.Tensor]:
    """The forget gradients `grads` (of `pairs` as written) averaged with those of `pairs` whose
    captions spell `config.concept` as each of its `config.criterion_misspellings` misspellings
    that are no other candidate label (`hf_slug.phrasings`). `grads` come back unchanged, with a
    warning, when they were `given` (no pass runs) or no caption holds the name."""
    concept, count = config.concept, config.criterion_misspellings
    if given:
        warnings.warn(
            "misspellings are checked by the criterion but not in the update direction: the "
            "forget gradients were given (forget_gradients=), so no misspelt pass ran.",
            stacklevel=3,
        )
        return grads
    spellings = misspellings(concept, count, avoid=config.candidate_labels or ())
    respelled = [pairs.respelled(concept, s) for s in spellings]
    respelled = [p for p in respelled if p.texts != pairs.texts]
    if not respelled:
        warnings.warn(
            f"misspellings={count}: no forget caption contains {concept!r} as a word, so the "
            "update direction is the forget gradient as written (the criterion still checks "
            "the misspellings); write the name into the captions, or use "
            "caption_mode='concept_name'.",
            stacklevel=3,
        )
        return grads
    total = {n: g.clone() for n, g in grads.items()}
    for other in respelled:
        extra = compute_gradients(model, processor, other, "forget", list(grads), **pass_options)
        for n, g in checked_gradients(model, extra, "the misspelt forget").items():
            total[n] += g
    return {n: g / (1 + len(respelled)) for n, g in total.items()}


def cache_file_for(
    model: nn.Module,
    processor: Any,
    kind: str,
    pairs: ImageTextPairs,
    names: Sequence[str],
    config: SLUGConfig,
    options: UnlearnOptions,
) -> Path | None:
    """Where `unlearn` caches the `kind` gradients: `options.cache_dir`, else (retain only)
    the per-user cache unless it is turned off — pruned to its most recently used files —,
    else nowhere."""
    if options.cache_dir is not None:
        suffix = "" if kind == "retain" else "-" + _file_stem(config.concept)
        return Path(options.cache_dir) / f"{kind}_gradients{suffix}.safetensors"
    if kind != "retain" or not options.cache_retain or not gradient_cache_enabled():
        return None
    pass_options = {"batch_size": config.batch_size, "options": options.gradients}
    path = default_cache_file(model, names, gradient_signature(pairs, processor, pass_options))
    prune(path.parent, keep=KEEP_FILES)
    touch(path)
    return path


def _file_stem(concept: str) -> str:
    """A short, safe file-name part for `concept`: its letters and digits (at most 48, spaces
    as `_`), plus a hash of the full name when anything else was dropped ("C++" and "C#")."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", concept)
    if stem == re.sub(r" +", "_", concept) and len(stem) <= 48:
        return stem
    return f"{stem[:48]}_{hashlib.sha256(concept.encode()).hexdigest()[:12]}"


__all__ = [
    "KEEP_FILES",
    "cache_file_for",
    "checked_gradients",
    "default_cache_file",
    "gradient_signature",
    "gradients_for",
    "misspelt_average",
    "processor_signature",
]
