"""The embedded models' folders, checked to hold their files before anything loads them.

Example:
    >>> from hf_slug.demo.vlm import FILES, EMBEDDED_VLM
    >>> checked_folder(EMBEDDED_VLM, FILES, "the embedded VLM", retrain("x.py")).name
    'embedded_vlm'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError


def retrain(script: str) -> str:
    """The fix for a shipped folder that lost files (`{folder}` is filled by `checked_folder`).

    Example:
        >>> retrain("train_embedded_vlm.py").endswith("--out {folder}`.")
        True
    """
    return (
        "reinstall hf_slug (the folder ships as package data), or train it again with "
        f"`python scripts/{script} --out {{folder}}`."
    )


def checked_folder(
    path: str | Path,
    files: Sequence[str],
    what: str,
    fix: str,
    error: type[Exception] = ConfigError,
) -> Path:
    """`path` as a Path, once every name in `files` is a file in it.

    Raises `error` "{what} is missing [names] in {folder}: {fix}", `{folder}` in `fix` filled.

    Example:
        >>> checked_folder("/nowhere", ["a.json"], "the model", "put it in {folder}.")
        Traceback (most recent call last):
        hf_slug.errors.ConfigError: the model is missing ['a.json'] in /nowhere: put it in /nowhere.
    """
    folder = Path(path)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise error(f"{what} is missing {missing} in {folder}: {fix.format(folder=folder)}")
    return folder
