"""The checks of every field of a loaded `slug_config.json` (the file is untrusted input).

Each check takes the decoded JSON value and where it sits, and returns the value or raises a
`ConfigError` naming the field and the fix; `FIELD_CHECKS` maps `UnlearningConfig`'s fields to
them.

Example:
    >>> FIELD_CHECKS["step"](0.4, "step")
    0.4
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .checks import finite_real
from .errors import ConfigError, DeltaFormatError

TOWERS = ("vision", "text")
CAPTION_MODES = ("original", "concept_name")
DELTA_FORMATS = ("dense", "lowrank")
MAX_NESTING = 64  # metrics / settings deeper than this are not a config hf_slug wrote


@dataclass
class TargetInfo:
    """A targeted base tensor as it was when the delta was computed."""

    shape: list[int]
    dtype: str
    sha256: str
    tower: str | None = None


# -- field checks of a loaded config --------------------------------------------------------------
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(where: str, want: str, value: Any, fix: str) -> ConfigError:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return ConfigError(f"{where} must be {want}, got {type(value).__name__} {shown}: {fix}.")


def _text(optional: bool = False, choices: tuple[str, ...] | None = None, empty: bool = True):
    def check(value: Any, where: str) -> str | None:
        if value is None and optional:
            return None
        ok = isinstance(value, str) and (empty or value.strip())
        if ok and (choices is None or value in choices):
            return value
        want = (
            f"one of {list(choices)}"
            if choices
            else "a non-empty string"
            if not empty
            else "a string"
        )
        want += " or null" if optional else ""
        raise _bad(where, want, value, "fix the value or save the delta again")

    return check


def _finite_non_negative(value: Any, where: str) -> float:
    number = finite_real(value)
    if number is None or number < 0:
        raise _bad(where, "a finite number >= 0", value, "save the delta again")
    return number


def _rank(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(where, "null or a positive int", value, "save the delta again")
    return value


FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
"""The dtypes a base tensor or a stored delta may have (what hf_slug writes and fingerprints)."""


def _dtype_name(value: Any, where: str) -> str:
    if value in FLOAT_DTYPES:
        return value
    raise _bad(where, f"one of {list(FLOAT_DTYPES)}", value, "save the delta again")


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in `value` (iterative: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            todo.extend((c, level + 1) for c in children)
    return deepest


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "an object", value, "save the delta again")
    if _depth(value) > MAX_NESTING:
        raise ConfigError(
            f"{where} nests deeper than {MAX_NESTING} levels: it was not written by hf_slug; "
            "save the delta again."
        )
    return value


def _scales(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _bad(where, "an object of tensor name -> number", value, "save the delta again")
    scales = {}
    for name, scale in value.items():
        number = finite_real(scale)
        if number is None:
            raise _bad(f"{where}[{name!r}]", "a finite number", scale, "save the delta again")
        scales[name] = number
    return scales


def _target(name: Any, info: Any, where: str) -> TargetInfo:
    where = f"{where}[{name!r}]"
    if not isinstance(name, str) or not name:
        raise _bad(where, "keyed by a parameter name", name, "save the delta again")
    if not isinstance(info, dict):
        raise _bad(where, "an object with shape, dtype, sha256, tower", info, "save it again")
    missing = [k for k in ("shape", "dtype", "sha256") if k not in info]
    if missing:
        raise DeltaFormatError(f"{where} lacks {missing}: save the delta again.")
    unknown = sorted(str(k) for k in info if k not in ("shape", "dtype", "sha256", "tower"))
    if unknown:
        warnings.warn(f"{where}: ignoring unknown key(s) {unknown}.", stacklevel=4)
    shape = info["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
    ):
        raise _bad(f"{where}['shape']", "a list of positive ints", shape, "save the delta again")
    sha = info["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise _bad(f"{where}['sha256']", "64 lowercase hex digits (a string)", sha, "save it again")
    tower = _text(optional=True, choices=TOWERS)(info.get("tower"), f"{where}['tower']")
    return TargetInfo(list(shape), _dtype_name(info["dtype"], f"{where}['dtype']"), sha, tower)


def _targets(value: Any, where: str) -> dict[str, TargetInfo]:
    if not isinstance(value, dict):
        raise _bad(where, "an object of parameter name -> target", value, "save it again")
    return {name: _target(name, info, where) for name, info in value.items()}


def _concept(value: Any, where: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _bad(where, "a non-empty string", value, "write the concept's name there")


FIELD_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "concept": _concept,
    "step": _finite_non_negative,
    "targets": _targets,
    "scales": _scales,
    "concept_kind": _text(),
    "model_family": _text(empty=False),
    "component": _text(optional=True),
    "caption_mode": _text(choices=CAPTION_MODES),
    "base_model_name_or_path": _text(optional=True),
    "base_model_revision": _text(optional=True),
    "delta_format": _text(choices=DELTA_FORMATS),
    "delta_dtype": _dtype_name,
    "rank": _rank,
    "metrics": _mapping,
    "settings": _mapping,
    "hf_slug_version": _text(),
}
