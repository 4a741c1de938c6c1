"""Helpers the benchmark scripts share: the command line, JSON output, markdown tables.

Importing this module turns off hf_slug's per-user gradient cache for this process and the
processes it spawns (`HF_SLUG_DISABLE_GRADIENT_CACHE=1`): every timed call is a first call, so
no run reuses an earlier run's retain gradients. `search_cost.py` measures the cache itself.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hf_slug.cache import DISABLE_VARIABLE
from hf_slug.demo.run import EMBEDDED

os.environ.setdefault(DISABLE_VARIABLE, "1")

DEFAULT_MODEL = str(EMBEDDED)
T = TypeVar("T")


def command_line() -> str:
    """The command that ran this script, as typed from the repository root."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def model_sha256(model: str) -> str | None:
    """The sha256 of a model folder's `model.safetensors` (which weights the numbers are from)."""
    import hashlib

    path = Path(model) / "model.safetensors"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get a sensible number of digits."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01 or value == 0:
            return f"{value:.2f}"
        return f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def quietly(call: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """`call(*args, **kwargs)` with its warnings silenced: (its result, the seconds it took).

    >>> quietly(sum, [1, 2])[0]
    3
    """
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = call(*args, **kwargs)
    return result, time.perf_counter() - start


class Stopwatch:
    """Seconds since creation, for the scripts' own run times."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
