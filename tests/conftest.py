"""Shared fixtures: tiny CLIP models built from configs, the real CLIP tokenizer, tiny images."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "hf_slug" / "demo" / "embedded_clip"
IMAGE_SIZE = 32

torch.set_num_threads(min(2, torch.get_num_threads()))


def clip_config(width: int = 32, layers: int = 2, projection: int = 16) -> CLIPConfig:
    """A tiny CLIPConfig with the real vocabulary size and EOS pooling."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            image_size=IMAGE_SIZE,
            patch_size=8,
        ),
        projection_dim=projection,
    )


def tiny_clip(seed: int = 0, **kwargs) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(clip_config(**kwargs)).eval()


def tiny_processor() -> CLIPProcessor:
    tokenizer = CLIPTokenizer(
        str(TOKENIZER_DIR / "vocab.json"),
        str(TOKENIZER_DIR / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def random_images(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


@pytest.fixture(scope="session")
def processor() -> CLIPProcessor:
    return tiny_processor()


@pytest.fixture
def model() -> CLIPModel:
    return tiny_clip()


@pytest.fixture(scope="session")
def shapes_clip():
    """A tiny CLIP trained for ~15 s on six coloured-shape classes (see tests/shapes.py)."""
    from shapes import train_shapes_clip

    return train_shapes_clip()
