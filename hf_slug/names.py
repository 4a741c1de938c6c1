"""Adapter names, the stack index (`slug_stack.json`) and what a folder holds — one parser each.

An adapter name becomes a folder name inside a saved stack, so it must be one safe path part
on every platform: it matches `ADAPTER_NAME_PATTERN` — 1 to 128 ASCII letters, digits, spaces,
`_`, `.` or `-`, starting with a letter or digit and not ending in a space or `.` — so it is
never empty, `.`, `..`, hidden, absolute, or holding a separator; it is not a Windows device
name (CON, NUL, COM1, ...) nor one of the file names hf_slug writes beside the adapters. The
same check runs on every name a user passes and on every entry of a stack index read from disk
or from the Hub cache.

Example:
    >>> validate_adapter_name("ada_byron")
    'ada_byron'
    >>> suggest_adapter_name("../Ada/Byron")
    'Ada_Byron'
"""

from __future__ import annotations

import numbers
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .checks import finite_real
from .config import CONFIG_NAME, STACK_NAME, WEIGHTS_NAME
from .errors import (
    AdapterError,
    AdapterNameError,
    ConfigError,
    DeltaFormatError,
    NonFiniteGradientError,
)
from .io import parse_json_bytes

ADAPTER_NAME_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9 _.-]{0,126}[A-Za-z0-9_-])?"
_NAME = re.compile(ADAPTER_NAME_PATTERN)
CARD_NAME = "README.md"
RESERVED = {n.lower() for n in (CONFIG_NAME, WEIGHTS_NAME, STACK_NAME, CARD_NAME)}
_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)


def _reserved(name: str) -> bool:
    return name.lower() in RESERVED or bool(_DEVICES.fullmatch(name))


ENTRY_KEYS = ("name", "weight", "active")


def suggest_adapter_name(text: Any) -> str:
    """A safe adapter name made from `text` (unsafe characters become `_`)."""
    name = re.sub(r"[^A-Za-z0-9 _.-]+", "_", str(text)).strip(" ._-")[:128].rstrip(" ._-")
    if not name or _reserved(name):
        return "adapter"
    return name


def validate_adapter_name(name: Any, *, where: str = "") -> str:
    """Return `name` if it is a safe adapter name, else raise AdapterNameError saying why."""
    context = f"{where}: " if where else ""
    if not isinstance(name, str):
        raise AdapterNameError(
            f"{context}an adapter name must be a str, got {type(name).__name__} {name!r}: pass "
            f"a str, e.g. {suggest_adapter_name(name)!r}."
        )
    if _NAME.fullmatch(name) and not _reserved(name):
        return name
    if _reserved(name):
        why = "is a file name hf_slug writes beside the adapters, or a Windows device name"
    elif not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "is a relative folder reference"
    elif "/" in name or "\\" in name or name.startswith("~"):
        why = "holds a path separator (a name must stay inside its folder)"
    else:
        why = f"does not match {ADAPTER_NAME_PATTERN}"
    raise AdapterNameError(
        f"{context}the adapter name {name!r} {why}: an adapter name is one folder name of at "
        "most 128 ASCII letters, digits, spaces, '_', '.' and '-', starting with a letter or "
        f"digit and not ending in a space or '.'. Use e.g. {suggest_adapter_name(name)!r}."
    )


def adapter_names_list(adapter_names: Any) -> list[str]:
    """A name or a list of names, as a list (anything else raises AdapterNameError)."""
    if isinstance(adapter_names, str):
        return [adapter_names]
    if not isinstance(adapter_names, (list, tuple)):
        raise AdapterNameError(
            f"adapter names must be a str or a list of str, got {type(adapter_names).__name__}: "
            "pass e.g. ['ada', 'bob']."
        )
    names = list(adapter_names)
    seen: dict[str, str] = {}
    for name in names:
        key = name.lower() if isinstance(name, str) else repr(name)
        if key in seen:
            raise AdapterError(
                f"the adapter names {names} list {seen[key]!r} twice (names are compared "
                "ignoring case): each adapter counts once; to weight one more, pass its weight "
                "instead, e.g. set_adapters(['ada'], [2.0])."
            )
        seen[key] = name
    return names


def path_argument(value: Any, what: str) -> Path:
    """`value` as a Path if it is a str or os.PathLike (a folder path or repo id), else ConfigError.

    Example:
        >>> path_argument("deltas/ada", "directory")
        PosixPath('deltas/ada')
    """
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value):
        return Path(value)
    raise ConfigError(
        f"{what} must be a folder path (a str or pathlib.Path), got {type(value).__name__} "
        f"{value!r}: pass e.g. {what}='deltas/ada'."
    )


def adapter_weight(value: Any, what: str) -> float:
    """A finite float weight: a string or bool raises AdapterError, NaN/inf NonFiniteGradientError."""
    number = finite_real(value)
    if number is not None:
        return number
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d tensor or array: its number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AdapterError(
            f"{what} must be a number, got {type(value).__name__} {value!r}: pass e.g. 1.0."
        )
    raise NonFiniteGradientError(
        f"{what} is {value!r}, not a finite number: it would make every output NaN/inf; pass "
        "a finite weight such as 1.0."
    )


def default_adapter_name(concept: str) -> str:
    """The default adapter name of a concept: "Ada Byron" -> "ada_byron"."""
    name = re.sub(r"[^a-z0-9]+", "_", concept.lower()).strip("_")[:128].strip("_")
    try:
        return validate_adapter_name(name or "default")
    except AdapterNameError:
        return "default"


def saves_bare(name: str, weight: float, active: bool, concept: str) -> bool:
    """Whether an adapter saved as a bare delta loads back as itself: active, at weight 1,
    under its concept's default name (else it is saved as a one-entry stack).

    Example:
        >>> saves_bare("ada_byron", 1.0, True, "Ada Byron"), saves_bare("ada", 0.5, True, "Ada")
        (True, False)
    """
    return active and weight == 1.0 and name == default_adapter_name(concept)


def adapter_weights_list(weights: Any, names: list[str]) -> list[float]:
    """One finite weight per adapter from a number (shared by all) or a sequence (one each)."""
    shared = isinstance(weights, (str, bytes, bool)) or not hasattr(weights, "__iter__")
    if shared or getattr(weights, "ndim", None) == 0 or finite_real(weights) is not None:
        return [adapter_weight(weights, "weights")] * len(names)
    values = list(weights)
    if len(values) != len(names):
        raise AdapterError(
            f"{len(names)} adapters but {len(values)} weights: pass one weight per adapter."
        )
    return [adapter_weight(w, f"the weight of {n!r}") for n, w in zip(names, values)]


# -- the stack index ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackEntry:
    """One adapter of a saved stack: its folder name, weight and whether it is active."""

    name: str
    weight: float = 1.0
    active: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "active": self.active}


def parse_stack_index(data: Any, source: str | Path = STACK_NAME) -> list[StackEntry]:
    """Validate a decoded `slug_stack.json`: {"adapters": [{"name", "weight", "active"}, ...]}.

    Every name is checked as an adapter name and must be unique; `weight` must be a finite real
    number (not a bool or a string) and `active` a real bool. Unknown keys warn.
    """
    if not isinstance(data, dict) or not isinstance(data.get("adapters"), list):
        got = type(data.get("adapters")).__name__ if isinstance(data, dict) else "no object"
        raise DeltaFormatError(
            f"{source} must be a JSON object with an 'adapters' list, got {got}: it is not an "
            "hf_slug stack index or it was damaged; save the stack again with "
            "SLUGModel.save_pretrained."
        )
    adapters = data["adapters"]
    if not adapters:
        raise DeltaFormatError(
            f"{source} lists no adapters: save a stack with at least one adapter, or delete it."
        )
    entries: list[StackEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(adapters):
        where = f"{source} entry {i}"
        if not isinstance(item, dict):
            raise ConfigError(
                f"{where} must be an object with 'name', 'weight' and 'active', got "
                f"{type(item).__name__}: save the stack again."
            )
        if "name" not in item:
            raise ConfigError(f"{where} has no 'name': save the stack again.")
        name = validate_adapter_name(item["name"], where=where)
        if name.lower() in seen:
            raise ConfigError(
                f"{where}: the adapter name {name!r} appears twice (names are folder names and "
                "must be unique, also ignoring case): rename one and save the stack again."
            )
        seen.add(name.lower())
        weight = finite_real(item.get("weight", 1.0))
        if weight is None:
            raise ConfigError(
                f"{where}: the weight of {name!r} must be a finite number, got "
                f'{item.get("weight")!r}: write e.g. "weight": 1.0 (a number, not a string).'
            )
        active = item.get("active", True)
        if not isinstance(active, bool):
            raise ConfigError(
                f"{where}: 'active' of {name!r} must be true or false, got {active!r}: write "
                'e.g. "active": false (a JSON boolean, not a string).'
            )
        unknown = sorted(str(k) for k in item if k not in ENTRY_KEYS)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown key(s) {unknown}.", stacklevel=2)
        entries.append(StackEntry(name, weight, active))
    return entries


def read_stack_index(raw: bytes, source: str | Path) -> list[StackEntry]:
    """Parse the bytes of a `slug_stack.json` (see `parse_stack_index`)."""
    return parse_stack_index(parse_json_bytes(raw, source), source)


# -- what a folder holds --------------------------------------------------------------------------
def folder_layout(
    has_config: bool, has_stack: bool, source: str | Path
) -> Literal["delta", "stack"] | None:
    """What a folder holds: one delta ("delta"), a saved stack ("stack") or neither (None).

    A folder holding both is an error: which one a reader would load is ambiguous.
    """
    if has_config and has_stack:
        raise DeltaFormatError(
            f"{source} holds both a single delta ({CONFIG_NAME}, {WEIGHTS_NAME}) and a stack "
            f"index ({STACK_NAME}), so what it is depends on who reads it: delete {STACK_NAME} "
            f"and the adapter sub-folders to keep the single delta, or delete {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} to keep the stack."
        )
    if has_stack:
        return "stack"
    return "delta" if has_config else None


def owned_entries(folder: Path) -> set[str]:
    """The entries of an existing delta or stack folder that a new save replaces.

    hf_slug's own files and the adapter sub-folders its stack index lists; everything else —
    README.md, notes, images, sub-folders the index does not list — belongs to the user and is
    carried into the new folder.
    """
    owned = {CONFIG_NAME, WEIGHTS_NAME, STACK_NAME}
    temp_prefixes = tuple(f".{n}." for n in (CONFIG_NAME, WEIGHTS_NAME, STACK_NAME))
    for entry in folder.iterdir():
        if entry.name.startswith(temp_prefixes) and entry.name.endswith(".tmp"):
            owned.add(entry.name)  # a file-level temp file of a save killed by an older hf_slug
    try:
        raw = (folder / STACK_NAME).read_bytes()
        data = parse_json_bytes(raw, folder / STACK_NAME)
        listed = data.get("adapters", []) if isinstance(data, dict) else []
        for item in listed if isinstance(listed, list) else []:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and _NAME.fullmatch(name):
                owned.add(name)
    except (OSError, DeltaFormatError):
        pass
    return owned
