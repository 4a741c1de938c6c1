"""Cheap command-line checks: option types, paths and labels, run before any model is loaded.

Each raises `UsageError` (exit code 2) or lets argparse name the flag.

Example:
    >>> positive_int("3")
    3
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError

REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


# -- option types: argparse names the flag in their messages and exits 2 ----------------------
def number(kind: type, low: float, high: float = math.inf, what: str = "") -> Any:
    """An argparse type: a finite `kind` (int or float) in [low, high]."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number(int, 1, what="a positive integer")
finite_float = number(float, -math.inf, what="a finite number")
fraction = number(float, 0.0, 1.0, what="a number in [0, 1]")
non_negative = number(float, 0.0, what="a finite number >= 0")


def rank(text: str) -> int | float:
    """An integer rank >= 1, or an energy fraction in (0, 1] when written with a '.'."""
    what = "an integer rank >= 1 or an energy fraction in (0, 1], e.g. 8 or 0.99"
    if "." in text or "e" in text.lower():
        value = number(float, 0.0, 1.0, what)(text)
        if value == 0.0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return number(int, 1, what=what)(text)


# -- cheap checks, run before any model is loaded -------------------------------------------
def existing_source(value: str, flag: str) -> str:
    """A local folder that exists, or a Hub repo id (org/name); else a usage error."""
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {value} is a file: pass the folder that holds it.")
        return value
    if not REPO_ID.fullmatch(value):
        raise UsageError(
            f"{flag} {value} is neither an existing folder nor a Hub repo id (org/name): check "
            "the path."
        )
    return value


def repo_id(value: str, flag: str) -> str:
    """A valid Hub repo id (org/name), checked before anything is built or uploaded."""
    from .errors import HubError
    from .hub import check_repo_id

    if not REPO_ID.fullmatch(value):
        raise UsageError(
            f"{flag} {value!r} is not a Hub repo id: pass org/name, e.g. me/clip-forget-ada "
            "(letters, digits, '-', '_', '.'; no spaces)."
        )
    try:
        return check_repo_id(value)
    except HubError as error:
        raise UsageError(f"{flag}: {error}") from None


def existing_folder(path: str, flag: str) -> str:
    if not Path(path).is_dir():
        raise UsageError(f"{flag} {path}: no such folder; pass an existing folder.")
    return path


def output_folder(value: str, flag: str, keeps: Sequence[str], inputs: Sequence[str] = ()) -> Path:
    """A folder this command may write: new, empty, or holding its own earlier output `keeps`."""
    out = Path(value)
    for source in inputs:
        if Path(source).exists() and out.resolve() == Path(source).resolve():
            raise UsageError(
                f"{flag} {value} is also an input of this command: write to another folder."
            )
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"{flag} {value} is an existing file: pass a folder path.")
        if any(out.iterdir()) and not any((out / name).exists() for name in keeps):
            raise UsageError(
                f"{flag} {value} is a folder that already holds other files: pass a new or "
                "empty folder, so nothing there is overwritten."
            )
    parent = out if out.exists() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {value}: {parent} is a file, so the folder cannot be created.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {value}: {parent} is not writable; pass a writable folder.")
    return out


def labels_from(args: argparse.Namespace) -> list[str] | None:
    """The names of --labels-file or --labels (None when neither is given)."""
    if args.labels_file and args.labels:
        raise UsageError("pass --labels or --labels-file, not both.")
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise UsageError(f"--labels-file {path}: no such file.")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UsageError(f"--labels-file {path} is not UTF-8 text: save it as UTF-8.") from None
        labels = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
        if not labels:
            raise UsageError(f"--labels-file {path} holds no names: write one name per line.")
        return labels
    if args.labels is not None:
        labels = list(dict.fromkeys(x.strip() for x in args.labels.split(",") if x.strip()))
        if not labels:
            raise UsageError('--labels holds no names: pass e.g. --labels "Ada Byron,Bob Stone".')
        return labels
    return None


def require_finite(tensors: dict[str, Any], what: str) -> None:
    import torch

    from .errors import NonFiniteGradientError

    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise NonFiniteGradientError(
            f"{what} holds NaN/inf values (first: {bad[0]}): it is corrupt; recompute or "
            "re-download it."
        )


def model_args(p: argparse.ArgumentParser) -> None:
    """The `--model` / `--revision` options every command that loads a CLIP model takes."""
    p.add_argument("--model", required=True, help="CLIP model folder or Hub repo id")
    p.add_argument("--revision", help="model revision on the Hub")


def load_clip(args: argparse.Namespace) -> tuple[Any, Any]:
    """The CLIPModel (in eval mode) and CLIPProcessor named by `--model` / `--revision`."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(args.model, revision=args.revision)
    processor = CLIPProcessor.from_pretrained(args.model, revision=args.revision)
    return model.eval(), processor
