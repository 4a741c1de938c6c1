"""Image–text pairs for the forget and retain sets, and their batches.

A pair source can be a folder of images with captions, a `datasets.Dataset`, in-memory lists, or
an `ImageTextPairs` already built. `load_pairs` turns any of them into `ImageTextPairs`; images in
a folder stay on disk until a batch needs them.

Example:
    >>> from PIL import Image
    >>> pairs = load_pairs(([Image.new("RGB", (8, 8))], ["a black square"]))
    >>> len(pairs), pairs.texts[0]
    (1, 'a black square')
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError

from .checks import positive_int
from .errors import ConfigError, DataFormatError, EmptyDatasetError, MissingCaptionError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CaptionMode = Literal["original", "concept_name"]
ImageLike = Image.Image | str | Path


@dataclass(frozen=True)
class ImageTextPairs:
    """An ordered list of (image, caption) pairs; images are PIL images or paths on disk."""

    images: tuple[ImageLike, ...]
    texts: tuple[str, ...]

    def __post_init__(self) -> None:
        for i, item in enumerate(self.images):
            if not isinstance(item, (Image.Image, str, Path)):
                raise DataFormatError(
                    f"image {i} is a {type(item).__name__} ({_short_repr(item)}), not an image: "
                    "pass PIL images or image file paths (Image.fromarray(array) converts an "
                    "array), and drop missing entries together with their captions."
                )
        if len(self.images) != len(self.texts):
            raise MissingCaptionError(
                f"{len(self.images)} images but {len(self.texts)} captions: give exactly one "
                "caption per image."
            )
        for i, text in enumerate(self.texts):
            if not isinstance(text, str) or not text.strip():
                raise MissingCaptionError(
                    f"pair {i} ({_describe(self.images[i])}) has an empty or non-string caption "
                    f"{text!r}: give every image a non-empty caption."
                )

    def __len__(self) -> int:
        return len(self.texts)

    def image(self, index: int) -> Image.Image:
        """The `index`-th image as an RGB PIL image (opened from disk when it is a path)."""
        item = self.images[index]
        try:
            if isinstance(item, Image.Image):
                return item.convert("RGB") if item.mode != "RGB" else item
            with Image.open(item) as opened:
                return opened.convert("RGB")
        except FileNotFoundError as error:
            raise DataFormatError(
                f"image {index} ({item}) does not exist: restore the file, or remove it and its "
                "caption from the set."
            ) from error
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataFormatError(
                f"image {index} ({_describe(item)}) cannot be decoded ({_reason(error)}): the "
                "file is truncated or corrupt; re-export or re-download it, or remove it and its "
                "caption."
            ) from error

    def with_captions(self, mode: CaptionMode, concept: str | None) -> ImageTextPairs:
        """These pairs with captions per `mode`: kept (`original`) or all set to `concept`."""
        if mode == "original":
            return self
        if mode == "concept_name":
            if not concept:
                raise ConfigError(
                    "caption mode 'concept_name' needs the concept's name: pass concept=."
                )
            return ImageTextPairs(self.images, (concept,) * len(self))
        raise ConfigError(f"unknown caption mode {mode!r}: use 'original' or 'concept_name'.")

    def respelled(self, name: str, spelling: str) -> ImageTextPairs:
        """These pairs with `name` written as `spelling` wherever it stands as a word of their
        captions, in any case ("Al" in "Alan" stays)."""
        word = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
        return ImageTextPairs(
            self.images, tuple(word.sub(lambda _: spelling, t) for t in self.texts)
        )

    def signature(self) -> str:
        """A sha256 over the captions and the images (pixels of PIL images; a path's name and
        its file's bytes, so an image edited in place changes it)."""
        digest = hashlib.sha256()
        for image, text in zip(self.images, self.texts):
            digest.update(f"{len(text.encode())}:".encode() + text.encode())  # length-prefixed
            if isinstance(image, Image.Image):
                digest.update(f"{image.mode}:{image.size}:".encode() + image.tobytes())
            else:
                digest.update(f"path:{image}:".encode())
                if isinstance(image, (str, os.PathLike)):
                    with contextlib.suppress(OSError):  # a missing file is reported when read
                        digest.update(hashlib.sha256(Path(image).read_bytes()).digest())
        return digest.hexdigest()

    def subset(self, indices: Sequence[int]) -> ImageTextPairs:
        """The pairs at `indices`, in that order."""
        return ImageTextPairs(
            tuple(self.images[i] for i in indices), tuple(self.texts[i] for i in indices)
        )


# A folder path, a `datasets.Dataset`, `(images, texts)`, a list of pairs, or ImageTextPairs.
PairSource = Any


def load_pairs(
    source: PairSource, *, image_column: str = "image", text_column: str = "text", name: str = "set"
) -> ImageTextPairs:
    """Build `ImageTextPairs` from a folder, a `datasets.Dataset`, `(images, texts)` or pairs.

    Folders follow `datasets`' imagefolder: a `metadata.jsonl` or `metadata.csv` with a
    `file_name` column and a caption column (`text_column`, or `caption`/`text`), or one `.txt`
    beside each image. `name` only labels error messages ("forget set", "retain set").
    """
    if isinstance(source, ImageTextPairs):
        pairs = source
    elif isinstance(source, (str, Path)):
        pairs = _from_folder(Path(source), text_column)
    elif _is_hf_dataset(source):
        pairs = _from_dataset(source, image_column, text_column)
    elif isinstance(source, tuple) and len(source) == 2 and not isinstance(source[0], str):
        images, texts = source
        pairs = ImageTextPairs(tuple(images), tuple(texts))
    elif isinstance(source, list):
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in source):
            raise TypeError(
                f"the {name} is a list, so each item must be an (image, caption) pair; "
                "or pass a tuple (images, captions)."
            )
        pairs = ImageTextPairs(tuple(p[0] for p in source), tuple(p[1] for p in source))
    else:
        raise TypeError(
            f"cannot read the {name} from a {type(source).__name__}: pass a folder path, a "
            "datasets.Dataset, a tuple (images, captions), a list of (image, caption) pairs or "
            "ImageTextPairs."
        )
    if len(pairs) == 0:
        raise EmptyDatasetError(
            f"the {name} is empty: it needs at least one image–text pair ({_describe(source)})."
        )
    if source is not pairs:
        _check_paths(pairs, name)
    return pairs


def batches(
    pairs: ImageTextPairs, processor: Any, batch_size: int
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Yield `(n, inputs)` per batch: `inputs` holds `pixel_values`, `input_ids`, `attention_mask`."""
    check_batch_size(batch_size)
    for start in range(0, len(pairs), batch_size):
        stop = min(start + batch_size, len(pairs))
        images = [pairs.image(i) for i in range(start, stop)]
        texts = list(pairs.texts[start:stop])
        yield stop - start, dict(processor(text=texts, images=images, **PROCESSOR_KWARGS))


PROCESSOR_KWARGS: dict[str, Any] = {"return_tensors": "pt", "padding": True, "truncation": True}


def check_batch_size(batch_size: object) -> int:
    """Return `batch_size` if it is a positive int; raise `ConfigError` otherwise."""
    return positive_int(batch_size, "batch_size", "batch_size=32")


def _from_folder(folder: Path, text_column: str) -> ImageTextPairs:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder: pass a folder of images with captions, or in-memory data."
        )
    for meta_name in ("metadata.jsonl", "metadata.csv"):
        meta = folder / meta_name
        if meta.exists():
            return _from_metadata(folder, meta, text_column)
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    texts = []
    for path in images:
        caption_file = path.with_suffix(".txt")
        if not caption_file.exists():
            raise MissingCaptionError(
                f"{path} has no caption: write it in {caption_file.name} beside the image, or "
                "list all captions in a metadata.jsonl with file_name and text columns."
            )
        texts.append(_read_text(caption_file).strip())
    return ImageTextPairs(tuple(images), tuple(texts))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8."
        ) from error


def _from_metadata(folder: Path, meta: Path, text_column: str) -> ImageTextPairs:
    """Rows of an imagefolder `metadata.jsonl` / `.csv`, each with its 1-based line number."""
    text = _read_text(meta)
    rows: list[tuple[int, Any]] = []
    if meta.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                raise DataFormatError(
                    f"{meta}, line {number}, is not valid JSON ({_reason(error)}): write one JSON "
                    'object per line, e.g. {"file_name": "0.png", "text": "a photo of ..."}.'
                ) from None
            rows.append((number, row))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        captions = [c for c in (text_column, "text", "caption") if c in header]
        if "file_name" not in header or not captions:
            raise DataFormatError(
                f"{meta} has columns {header}, but needs a 'file_name' column and a caption "
                f"column ({text_column!r}, 'text' or 'caption'): add them to its first line."
            )
        rows = [(reader.line_num, row) for row in reader]
    images, texts = [], []
    for number, row in rows:
        where = f"{meta.name}, line {number}"
        if not isinstance(row, dict):
            raise DataFormatError(
                f"{where}, holds a {type(row).__name__}, not an object: write "
                '{"file_name": ..., "text": ...} on each line.'
            )
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataFormatError(
                f"{where}, has no 'file_name' (got {_short_repr(name)}): give each row the image's "
                "path relative to the folder."
            )
        caption = next((row[c] for c in (text_column, "text", "caption") if row.get(c)), None)
        if caption is None:
            raise MissingCaptionError(
                f"{name} has no caption in {where}: fill its '{text_column}' column."
            )
        if isinstance(caption, bool) or not isinstance(caption, (str, int, float)):
            raise DataFormatError(
                f"{where}, has a {type(caption).__name__} caption for {name}: write the caption "
                "as a string."
            )
        path = folder / name
        if Path(name).is_absolute() or not _inside(path, folder):
            raise DataFormatError(
                f"{where}, names {name!r}, which lies outside {folder}: file_name must be a "
                "path relative to the folder, without '..'."
            )
        if not path.is_file():
            raise DataFormatError(
                f"{where}, lists {name}, which is not a file in {folder}: add the image or "
                "remove the row."
            )
        images.append(path)
        texts.append(str(caption).strip())
    return ImageTextPairs(tuple(images), tuple(texts))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_paths(pairs: ImageTextPairs, name: str) -> None:
    """Cheap checks of the image files before any work: each exists and has an image header."""
    for i, item in enumerate(pairs.images):
        if isinstance(item, Image.Image):
            continue
        if not Path(item).is_file():
            raise DataFormatError(
                f"image {i} of the {name} ({item}) is not a file: fix the path, or remove the "
                "image and its caption."
            )
        try:
            with Image.open(item):  # reads the header only
                pass
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataFormatError(
                f"image {i} of the {name} ({item}) is not a readable image ({_reason(error)}): "
                "re-export or re-download it, or remove it and its caption."
            ) from error


def _reason(error: BaseException) -> str:
    if isinstance(error, UnidentifiedImageError):
        return "unknown image format"
    return " ".join(str(error).split())[:160] or type(error).__name__


def _short_repr(item: object) -> str:
    text = repr(item)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_hf_dataset(source: object) -> bool:
    return type(source).__module__.startswith("datasets.") and hasattr(source, "column_names")


def _from_dataset(dataset: Any, image_column: str, text_column: str) -> ImageTextPairs:
    for column in (image_column, text_column):
        if column not in dataset.column_names:
            raise KeyError(
                f"the dataset has no column {column!r} (it has {dataset.column_names}): pass "
                "image_column= and text_column= to name yours."
            )
    return ImageTextPairs(tuple(dataset[image_column]), tuple(dataset[text_column]))


def _describe(item: object) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return getattr(item, "filename", None) or type(item).__name__
