"""Pair sources: folders (txt / jsonl / csv), datasets.Dataset, lists; caption modes; errors."""

from __future__ import annotations

import json

import pytest
from conftest import random_images

from hf_slug import EmptyDatasetError, MissingCaptionError, load_pairs
from hf_slug.data import batches


def _write_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(random_images(n)):
        image.save(folder / f"img{i}.png")


def test_folder_with_txt_captions(tmp_path):
    _write_images(tmp_path, 3)
    for i in range(3):
        (tmp_path / f"img{i}.txt").write_text(f"caption {i}\n")
    pairs = load_pairs(tmp_path)
    assert pairs.texts == ("caption 0", "caption 1", "caption 2")
    assert pairs.image(1).size == (32, 32)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_folder_with_imagefolder_metadata(tmp_path, fmt):
    _write_images(tmp_path, 2)
    if fmt == "jsonl":
        rows = [json.dumps({"file_name": f"img{i}.png", "text": f"c{i}"}) for i in range(2)]
        (tmp_path / "metadata.jsonl").write_text("\n".join(rows))
    else:
        (tmp_path / "metadata.csv").write_text("file_name,caption\nimg0.png,c0\nimg1.png,c1\n")
    assert load_pairs(tmp_path).texts == ("c0", "c1")


def test_datasets_dataset_and_lists():
    datasets = pytest.importorskip("datasets")
    images = random_images(2)
    ds = datasets.Dataset.from_dict({"img": images, "caption": ["a", "b"]})
    assert load_pairs(ds, image_column="img", text_column="caption").texts == ("a", "b")
    assert load_pairs(list(zip(images, ["a", "b"]))).texts == ("a", "b")
    assert load_pairs((images, ["a", "b"])).texts == ("a", "b")
    with pytest.raises(KeyError, match="text_column"):
        load_pairs(ds)


def test_caption_modes_replace_only_forget_captions():
    pairs = load_pairs((random_images(2), ["x", "y"]))
    assert pairs.with_captions("original", "Ada").texts == ("x", "y")
    assert pairs.with_captions("concept_name", "Ada").texts == ("Ada", "Ada")
    with pytest.raises(ValueError, match="caption mode"):
        pairs.with_captions("other", "Ada")


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (([], []), EmptyDatasetError, "empty"),
        ((random_images(2), ["one caption"]), MissingCaptionError, "one caption per image"),
        ((random_images(1), [""]), MissingCaptionError, "non-empty caption"),
        (42, TypeError, "cannot read"),
    ],
)
def test_bad_sources_get_clear_errors(source, error, match):
    with pytest.raises(error, match=match):
        load_pairs(source)


def test_image_without_caption_file(tmp_path):
    _write_images(tmp_path, 2)
    (tmp_path / "img0.txt").write_text("only one")
    with pytest.raises(MissingCaptionError, match="img1.png has no caption"):
        load_pairs(tmp_path)


def test_batches_go_through_the_processor(processor):
    pairs = load_pairs((random_images(5), [f"c {i}" for i in range(5)]))
    sizes = [(n, inputs["pixel_values"].shape[0]) for n, inputs in batches(pairs, processor, 2)]
    assert sizes == [(2, 2), (2, 2), (1, 1)]
