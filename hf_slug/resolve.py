"""Where a delta lives: a local folder or a Hub repo id, resolved to a checked local folder.

This is the core of `ConceptDelta.from_pretrained` / `SLUGModel.load_adapter`: it knows files
and the Hub cache, nothing of the search or of models, so the delta file format can use it
without importing the API layer (see docs/architecture.md). `hf_slug.hub` re-exports these
names for compatibility.

A Hub repo id goes through `huggingface_hub.snapshot_download`, so it honours `revision`,
`subfolder`, `token`, `cache_dir` and `HF_HUB_OFFLINE=1` (a populated cache then works with no
network). `subfolder` must stay inside the folder or snapshot.

Example:
    >>> folder = resolve_delta_folder("my-org/clip-forget-ada", revision="main")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .config import CONFIG_NAME, STACK_NAME, WEIGHTS_NAME
from .errors import ConfigError, DeltaFormatError, HubError
from .io import FolderReplacedError, missing_folder_error
from .names import folder_layout

PEFT_CONFIG = "adapter_config.json"


def resolve_folder(
    path_or_repo_id: str | Path,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    **unknown: Any,
) -> Path:
    """A local folder for a path, or for a Hub repo id (downloaded, or read from the cache).

    `subfolder` must be a relative path that stays inside the folder or snapshot.
    """
    if unknown:  # what load_adapter / from_pretrained pass on: say which keywords exist
        raise ConfigError(
            f"unknown keyword argument(s) {sorted(unknown)} for loading {path_or_repo_id}: the "
            "Hub keywords are subfolder=, revision=, token= and cache_dir=."
        )
    if subfolder is not None:
        subfolder = _checked_subfolder(subfolder)
    local = Path(path_or_repo_id)
    if local.exists():
        folder = local / subfolder if subfolder else local
        _inside(folder, local, subfolder)
        if not folder.is_dir():
            raise DeltaFormatError(f"{folder} is not a folder: pass the delta folder itself.")
        return folder
    repo_id = str(path_or_repo_id)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id) or ".." in repo_id.split("/"):
        replaced = missing_folder_error(local)
        if isinstance(replaced, FolderReplacedError):  # a save is replacing that folder
            raise replaced
        raise DeltaFormatError(
            f"{repo_id} is neither an existing folder nor a Hub repo id (org/name): check the path."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [f"{subfolder}/**", "*.json", "*.md"] if subfolder else None
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                allow_patterns=patterns,
            )
        )
    except LocalEntryNotFoundError as error:
        replaced = missing_folder_error(local)
        if isinstance(replaced, FolderReplacedError):  # a local save is replacing it
            raise replaced from error
        raise HubError(
            f"{repo_id} (revision {revision or 'main'}) is not in the local Hugging Face cache and "
            "the Hub cannot be reached (HF_HUB_OFFLINE is set, or no network): download it "
            "once with a connection, or pass a local folder."
        ) from error
    except HfHubHTTPError as error:
        raise HubError(f"cannot download {repo_id} from the Hub: {error}") from error
    folder = snapshot / subfolder if subfolder else snapshot
    _inside(folder, snapshot, subfolder)
    if not folder.is_dir():
        raise HubError(
            f"{repo_id} has no sub-folder {subfolder!r} at revision {revision or 'main'}."
        )
    return folder


def _checked_subfolder(subfolder: Any) -> str:
    """A relative sub-folder path without '.', '..', empty parts, backslashes or a drive."""
    if not isinstance(subfolder, str):
        raise DeltaFormatError(
            f"subfolder must be a str, got {type(subfolder).__name__}: pass e.g. subfolder='a'."
        )
    parts = subfolder.strip("/").split("/")
    bad = (
        not subfolder.strip("/")
        or subfolder.startswith(("/", "~"))
        or "\\" in subfolder
        or ":" in subfolder
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise DeltaFormatError(
            f"subfolder {subfolder!r} must be a relative path inside the folder or repo (no "
            "'..', '.', empty parts, backslashes or absolute paths): pass e.g. subfolder='a'."
        )
    return "/".join(parts)


def _inside(folder: Path, root: Path, subfolder: str | None) -> None:
    """Second line of defence: the resolved sub-folder must stay inside `root`."""
    if subfolder and not folder.resolve().is_relative_to(root.resolve()):
        raise DeltaFormatError(
            f"subfolder {subfolder!r} leads outside {root} (a symbolic link): pass a plain "
            "sub-folder of it."
        )


def resolve_delta_folder(path_or_repo_id: str | Path, **hub_kwargs: Any) -> Path:
    """Like `resolve_folder`, and check that the folder holds one hf_slug delta."""
    folder = resolve_folder(path_or_repo_id, **hub_kwargs)
    kind = folder_layout(
        (folder / CONFIG_NAME).is_file(), (folder / STACK_NAME).is_file(), path_or_repo_id
    )
    if kind == "delta":
        return folder
    raise not_a_delta_error(folder, path_or_repo_id, stack=kind == "stack")


def not_a_delta_error(folder: Path, source: str | Path, *, stack: bool = False) -> DeltaFormatError:
    """The error for a folder that holds no single hf_slug delta, saying what it holds instead."""
    subfolders = sorted(p.parent.name for p in folder.glob(f"*/{CONFIG_NAME}"))
    if stack or subfolders:
        return DeltaFormatError(
            f"{source} holds several hf_slug deltas in sub-folders {subfolders}: pass "
            "subfolder= one of them, or load them all with SLUGModel.from_pretrained."
        )
    if (folder / PEFT_CONFIG).is_file():
        return DeltaFormatError(
            f"{source} holds a PEFT adapter ({PEFT_CONFIG}), not an hf_slug delta: load "
            "it with peft.PeftModel.from_pretrained(model, ...) instead."
        )
    return DeltaFormatError(
        f"{source} holds no hf_slug delta: a delta folder has {CONFIG_NAME} and {WEIGHTS_NAME}."
    )
