"""Shared fixtures. The tiny models themselves come from `hf_slug.testing`; the names below are
re-exported so test modules can keep `from conftest import tiny_clip, ...`."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from hf_slug.hosts.denoiser_memory import forget_all as forget_directions
from hf_slug.testing import (
    IMAGE_SIZE,
    TOKENIZER_DIR,
    random_images,
    tiny_clip,
    tiny_clip_config,
    tiny_clip_processor,
)

# unlearn keeps retain gradients in the per-user cache by default: never the user's own one here
# (session fixtures use this folder; every test gets a fresh one, see `fresh_gradient_cache`)
os.environ["HF_SLUG_CACHE"] = tempfile.mkdtemp(prefix="hf_slug-test-cache-")
atexit.register(shutil.rmtree, os.environ["HF_SLUG_CACHE"], True)

clip_config = tiny_clip_config  # the tests' historical names
tiny_processor = tiny_clip_processor

PLUMBING = {"validation_share": 0, "forget_target": 1.0}
"""SLUGConfig settings for plumbing tests on random-weight models and a handful of images: score
in-sample (labelled "in-sample"; too few images to hold any out) and accept the first trial, so
a delta exists whatever the random model recognises. Such tests check names, files and
untouched weights, never forgetting; quality is tested on trained fixtures (tests/shapes.py)."""

__all__ = [
    "IMAGE_SIZE",
    "PLUMBING",
    "TOKENIZER_DIR",
    "clip_config",
    "random_images",
    "tiny_clip",
    "tiny_processor",
]

torch.set_num_threads(min(2, torch.get_num_threads()))  # the fixtures that train pin 1 thread

NUMERICS = (
    "numerics: asserts what a tiny model learns or a search finds (trained fixtures, step "
    "searches); .ci/run runs these again under other CPU kernels"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", NUMERICS)


@pytest.fixture(autouse=True)
def fresh_gradient_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An empty per-user cache for each test, so no test reuses another's retain gradients (nor
    the denoiser criterion's remembered directions)."""
    forget_directions()
    folder = tmp_path_factory.mktemp("hf_slug_cache")
    monkeypatch.setenv("HF_SLUG_CACHE", str(folder))
    # importing benchmarks/common.py (benchmark tests do) turns the cache off process-wide
    monkeypatch.delenv("HF_SLUG_DISABLE_GRADIENT_CACHE", raising=False)
    return folder


@pytest.fixture(scope="session")
def processor() -> CLIPProcessor:
    return tiny_processor()


@pytest.fixture
def model() -> CLIPModel:
    return tiny_clip()


@pytest.fixture(scope="session")
def shapes_clip():
    """A tiny CLIP trained for ~15 s on six coloured-shape classes, its held-out margins checked
    (see tests/shapes.py; `HF_SLUG_SHAPES_SEED` trains it from another seed)."""
    from shapes import train_shapes_clip

    return train_shapes_clip()
