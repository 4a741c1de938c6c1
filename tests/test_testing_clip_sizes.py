"""One CLIPConfig builder (`hf_slug.clip_sizes.clip_config`) serves the tiny test models, the
benchmarks' real sizes and the embedded model's training script, and each still gets the config
it had."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from transformers import CLIPConfig

from hf_slug.clip_sizes import CLIP_VOCAB_SIZE, TowerSize, clip_config
from hf_slug.testing import tiny_clip_config

ROOT = Path(__file__).resolve().parents[1]


def _module(folder: str, name: str):
    sys.path.insert(0, str(ROOT / folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / folder))


def test_both_towers_get_openai_clip_text_settings_and_their_own_shapes():
    config = clip_config(
        TowerSize(32, 2, 2), TowerSize(64, 3, 4), image_size=48, patch_size=12, projection=16
    )
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (32, 2, 2)
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (64, 3, 4)
    assert (text.intermediate_size, vision.intermediate_size) == (128, 256)
    assert text.vocab_size == CLIP_VOCAB_SIZE and text.max_position_embeddings == 77
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (49406, 49407, 49407)
    assert text.hidden_act == vision.hidden_act == "quick_gelu"
    assert (vision.image_size, vision.patch_size, config.projection_dim) == (48, 12, 16)
    default = CLIPConfig().text_config.projection_dim
    assert text.projection_dim == default  # towers keep transformers' default unless asked


def test_tower_projection_puts_the_projection_on_each_tower():
    config = clip_config(
        TowerSize(32, 2, 2),
        TowerSize(32, 2, 2),
        image_size=32,
        patch_size=8,
        projection=24,
        tower_projection=True,
    )
    assert config.text_config.projection_dim == config.vision_config.projection_dim == 24


def test_tiny_clip_config_is_the_builder_with_half_width_mlps():
    tower = TowerSize(32, 2, 2)
    built = clip_config(tower, tower, image_size=32, patch_size=8, projection=16, mlp_ratio=2)
    assert tiny_clip_config().to_dict() == built.to_dict()


def test_benchmark_sizes_are_the_real_models():
    models = _module("benchmarks", "models")
    b32 = models.clip_config("ViT-B/32")
    assert (b32.vision_config.intermediate_size, b32.text_config.intermediate_size) == (3072, 2048)
    assert (b32.vision_config.patch_size, b32.projection_dim) == (32, 512)
    h14 = models.clip_config("ViT-H/14")
    assert (h14.vision_config.num_hidden_layers, h14.text_config.hidden_size) == (32, 1024)


def test_train_embedded_builds_the_shipped_embedded_architecture(monkeypatch):
    script = _module("scripts", "train_embedded")
    monkeypatch.setattr(script, "CLIPModel", lambda config: config)  # the config, not a model
    built = script.build_model(script.parse_args([])).to_dict()
    shipped = CLIPConfig.from_pretrained(ROOT / "hf_slug" / "demo" / "embedded_clip").to_dict()
    for key in ("architectures", "dtype", "transformers_version"):  # written when saved
        built.pop(key, None)
        shipped.pop(key, None)
    assert built == shipped
