"""The embedded text-to-image pipeline (hf_slug/demo/embedded_t2i): loads with plain diffusers,
its text encoder is the embedded CLIP's text tower, generates deterministically, fails typed.

No quality number is asserted here (CPU kernels may move single pixels); the measured generation
accuracies are in benchmarks/generative_pipeline.md and model_cards/embedded_t2i.md.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hf_slug import ConfigError
from hf_slug.demo.run import EMBEDDED, load_embedded
from hf_slug.demo.t2i import (
    EMBEDDED_T2I,
    FILES,
    embedded_t2i_path,
    generate,
    load_embedded_pipeline,
)
from hf_slug.hosts.diffusion import check_text_encoder
from hf_slug.hosts.generation import generate_images

diffusers = pytest.importorskip("diffusers")
STEPS = {"num_inference_steps": 3, "guidance_scale": 5.0}


@pytest.fixture(scope="module")
def pipe():
    return load_embedded_pipeline()


def test_folder_holds_no_second_copy_of_the_text_encoder():
    assert all((EMBEDDED_T2I / f).is_file() for f in FILES)
    assert not (EMBEDDED_T2I / "text_encoder").exists()
    index = json.loads((EMBEDDED_T2I / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    size = sum(f.stat().st_size for f in EMBEDDED_T2I.rglob("*") if f.is_file())
    assert size <= 20e6


def test_loads_with_plain_diffusers():
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    plain = StableDiffusionPipeline.from_pretrained(
        EMBEDDED_T2I,
        text_encoder=CLIPTextModel.from_pretrained(EMBEDDED, dtype=torch.float32),
        tokenizer=CLIPTokenizer.from_pretrained(EMBEDDED),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    plain.set_progress_bar_config(disable=True)
    image = plain(
        "Clara Alderwick.", generator=torch.Generator().manual_seed(0), output_type="np", **STEPS
    ).images[0]
    assert image.shape == (48, 48, 3)
    assert np.isfinite(image).all()


def test_text_encoder_is_the_embedded_clips(pipe):
    clip, _ = load_embedded()
    check_text_encoder(pipe, clip)
    assert pipe.unet.dtype == torch.float32
    assert pipe.unet.config.cross_attention_dim == clip.config.text_config.hidden_size


def test_fixed_seeds_give_the_same_images(pipe):
    prompts = ["Clara Alderwick.", "a headshot of Marcus Brennholt."]
    first = generate(pipe, prompts, [0], **STEPS)
    again = generate(pipe, prompts, [0], **STEPS)
    for key, image in first.items():
        assert image.size == (48, 48)
        assert np.array_equal(np.asarray(image), np.asarray(again[key]))
    # the batched helper seeds like the library's one-image-per-call generate_images
    single = generate_images(pipe, prompts[:1], 1, seed=0, progress=False, **STEPS)
    difference = np.abs(
        np.asarray(single[prompts[0]][0], dtype=int) - np.asarray(first[(prompts[0], 0)], dtype=int)
    )
    assert difference.max() <= 2


def test_missing_folder_fails_typed(tmp_path):
    with pytest.raises(ConfigError, match="train_embedded_t2i.py"):
        embedded_t2i_path(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(EMBEDDED_T2I, partial)
    (partial / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ConfigError, match="unet/diffusion_pytorch_model.safetensors"):
        load_embedded_pipeline(partial)
