"""Where hf_slug keeps what a later call can reuse (today: retain gradients).

The folder is `$HF_SLUG_CACHE`, else `$XDG_CACHE_HOME/hf_slug`, else `~/.cache/hf_slug`.
`HF_SLUG_DISABLE_GRADIENT_CACHE=1` turns the default gradient cache off (benchmarks that time a
first call set it); `UnlearnOptions(cache_retain=False)` does the same for one call.

Example:
    >>> cache_home().name != ""
    True
"""

from __future__ import annotations

import os
from pathlib import Path

DISABLE_VARIABLE = "HF_SLUG_DISABLE_GRADIENT_CACHE"


def cache_home() -> Path:
    """The per-user cache folder (created by whoever writes into it)."""
    root = os.environ.get("HF_SLUG_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hf_slug"


def gradient_cache_enabled() -> bool:
    """False when `HF_SLUG_DISABLE_GRADIENT_CACHE` is set to 1/true/yes/on."""
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() not in {"1", "true", "yes", "on"}


__all__ = ["DISABLE_VARIABLE", "cache_home", "gradient_cache_enabled"]
