"""Atomic file writes, tensor fingerprints and checked safetensors reads.

Example:
    >>> import torch
    >>> fingerprint(torch.zeros(2))[:12]
    '6e340b9cffb3'
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import DeltaFormatError


def fingerprint(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's values as stored (dtype and shape matter, device does not)."""
    data = tensor.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
        data = data.view(torch.int16)
    digest = hashlib.sha256(data.numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Mapping) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata=dict(metadata or {}))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing, truncated or corrupt file into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DeltaFormatError(f"{path} does not exist: the folder is incomplete; save it again.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DeltaFormatError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt. "
            "Download or save it again."
        ) from error


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise DeltaFormatError(f"{path} is not a readable safetensors file ({error}).") from error
