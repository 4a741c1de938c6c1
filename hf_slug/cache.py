"""Where hf_slug keeps what a later call can reuse (today: retain gradients).

The folder is `$HF_SLUG_CACHE`, else `$XDG_CACHE_HOME/hf_slug`, else `~/.cache/hf_slug`.
`HF_SLUG_DISABLE_GRADIENT_CACHE=1` turns the default gradient cache off (benchmarks that time a
first call set it); `UnlearnOptions(cache_retain=False)` does the same for one call.

Example:
    >>> cache_home().name != ""
    True
"""

from __future__ import annotations

import contextlib
import os
import time
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


def prune(folder: Path, keep: int = 8, stale_s: float = 86400.0) -> list[Path]:
    """Delete all but the `keep` most recently used `*.safetensors` files of `folder`, and
    leftovers of interrupted writes (`.*.tmp`) older than `stale_s`; the deleted paths.

    A file in use elsewhere stays readable by whoever has it open (POSIX unlink).
    """
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    leftovers = [p for p in folder.glob(".*.tmp") if now - p.stat().st_mtime > stale_s]
    removed = []
    for path in [*files[keep:], *leftovers]:
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # another process removed it first, or it is not ours to remove
            pass
    return removed


def touch(path: Path) -> None:
    """Mark a cache file as just used (what `prune` keeps)."""
    with contextlib.suppress(OSError):  # not there yet, or not ours
        os.utime(path)


__all__ = ["DISABLE_VARIABLE", "cache_home", "gradient_cache_enabled", "prune", "touch"]
