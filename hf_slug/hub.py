"""The Hub: resolve a delta by local path or repo id, push delta folders with a model card.

Loading goes through `huggingface_hub.snapshot_download`, so it honours `revision`, `subfolder`,
`token`, `cache_dir` and `HF_HUB_OFFLINE=1` (a populated cache then works with no network).

Example:
    >>> folder = resolve_delta_folder("my-org/clip-forget-ada", revision="main")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from .config import CONFIG_NAME, WEIGHTS_NAME
from .errors import DeltaFormatError, HubError

PEFT_CONFIG = "adapter_config.json"


def resolve_delta_folder(
    path_or_repo_id: str | Path,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local folder holding `slug_config.json`, downloading from the Hub when given a repo id."""
    local = Path(path_or_repo_id)
    if local.exists():
        folder = local / subfolder if subfolder else local
        if not folder.is_dir():
            raise DeltaFormatError(f"{folder} is not a folder: pass the delta folder itself.")
        return _check_folder(folder, str(path_or_repo_id))
    repo_id = str(path_or_repo_id)
    if repo_id.count("/") > 1 or repo_id.startswith((".", "/")):
        raise DeltaFormatError(
            f"{repo_id} is neither an existing folder nor a Hub repo id (org/name): check the path."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    pattern = f"{subfolder.strip('/')}/*" if subfolder else "*"
    try:
        snapshot = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                token=token,
                cache_dir=cache_dir,
                allow_patterns=[pattern, "*.md"],
            )
        )
    except LocalEntryNotFoundError as error:
        raise HubError(
            f"{repo_id} (revision {revision or 'main'}) is not in the local Hugging Face cache and "
            "the Hub cannot be reached (HF_HUB_OFFLINE is set, or no network): download it "
            "once with a connection, or pass a local folder."
        ) from error
    except HfHubHTTPError as error:
        raise HubError(f"cannot download {repo_id} from the Hub: {error}") from error
    folder = snapshot / subfolder if subfolder else snapshot
    return _check_folder(folder, repo_id)


def _check_folder(folder: Path, source: str) -> Path:
    if (folder / CONFIG_NAME).is_file():
        return folder
    subfolders = sorted(p.parent.name for p in folder.glob(f"*/{CONFIG_NAME}"))
    if subfolders:
        raise DeltaFormatError(
            f"{source} holds several hf_slug deltas in sub-folders {subfolders}: pass "
            f"subfolder= one of them (or load them all with SLUGModel.from_pretrained)."
        )
    if (folder / PEFT_CONFIG).is_file():
        raise DeltaFormatError(
            f"{source} holds a PEFT adapter ({PEFT_CONFIG}), not an hf_slug delta: load it with "
            "peft.PeftModel.from_pretrained(model, ...) instead."
        )
    raise DeltaFormatError(
        f"{source} holds no hf_slug delta: a delta folder has {CONFIG_NAME} and {WEIGHTS_NAME}."
    )


__all__ = ["resolve_delta_folder", "HubError"]
