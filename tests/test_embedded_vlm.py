"""The embedded VLM (hf_slug/demo/embedded_vlm): loads with plain transformers, answers held-out
views deterministically, shares its vision tower with the embedded CLIP, fails typed.

The answered images are test-split views (never trained on) asked a held-out phrasing, picked
where the trained model is confident: the greedy answer's first token leads the runner-up by a
logit margin of at least `MARGIN` (checked below), far more than CPU float differences between
machines could move it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from hf_slug import FingerprintMismatchError, SLUGConfig
from hf_slug.demo.run import load_embedded
from hf_slug.demo.vlm import EMBEDDED_VLM, ask, embedded_vlm_path, load_embedded_vlm, prompt
from hf_slug.demo.world import World
from hf_slug.hosts.vlm import check_same_tower, unlearn_vlm, usable_vision_blocks
from hf_slug.options import UnlearnOptions

MARGIN = 4.0  # logits; when picked, the answers led by 9.6 to 15.6
# (kind, label, style, test-view index, task): test views the model names confidently.
VIEWS = [
    ("identity", "Grace Hopper", None, 0, "identity"),
    ("identity", "Marcus Brennholt", None, 1, "identity"),
    ("identity", "Lucia Dunmore", None, 2, "identity"),
    ("object_style", "star", "neon", 0, "object"),
    ("object_style", "fish", "pixel art", 0, "style"),
]
QUESTION = {
    "identity": "Who is in this image?",
    "object": "What is shown in this image?",
    "style": "In which style is this picture?",
}


@pytest.fixture(scope="module")
def embedded():
    vlm = LlavaForConditionalGeneration.from_pretrained(EMBEDDED_VLM, dtype=torch.float32).eval()
    processor = LlavaProcessor.from_pretrained(EMBEDDED_VLM)
    world = World(seed=0)
    samples = [world.sample(kind, label, style, "test", i) for kind, label, style, i, _ in VIEWS]
    return vlm, processor, samples


def expected(sample, task: str) -> str:
    return (sample.style if task == "style" else sample.label).lower()


def inputs_for(processor, sample, task):
    return processor(
        text=prompt(processor, QUESTION[task]), images=sample.image, return_tensors="pt"
    )


def test_loads_with_plain_transformers(embedded):
    vlm, processor, samples = embedded
    assert vlm.config.vision_feature_layer == -2
    assert vlm.config.vision_feature_select_strategy == "default"
    assert usable_vision_blocks(vlm) == [0, 1, 2]
    inputs = inputs_for(processor, samples[0], "identity")
    patches = (48 // vlm.config.vision_config.patch_size) ** 2  # 16 tokens, class token dropped
    assert int((inputs["input_ids"] == vlm.config.image_token_id).sum()) == patches
    assert inputs["pixel_values"].shape == (1, 3, 48, 48)
    assert prompt(processor, "Who is this?") == "USER: <image>\nWho is this? ASSISTANT:"
    loaded, loaded_processor = load_embedded_vlm()
    assert type(loaded_processor).__name__ == "LlavaProcessor"
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vlm.state_dict().values())
    )


def test_greedy_generation_is_deterministic_and_right(embedded):
    vlm, processor, samples = embedded
    for sample, (*_, task) in zip(samples, VIEWS):
        inputs = inputs_for(processor, sample, task)
        torch.manual_seed(0)
        first = vlm.generate(**inputs, max_new_tokens=4, do_sample=False)
        torch.manual_seed(1)
        second = vlm.generate(**inputs, max_new_tokens=4, do_sample=False)
        assert torch.equal(first, second)
        prompt_length = inputs["input_ids"].shape[1]
        assert first.shape[0] == 1 and prompt_length < first.shape[1] <= prompt_length + 4
        answer = processor.tokenizer.decode(first[0, prompt_length:], skip_special_tokens=True)
        assert answer.strip() == expected(sample, task)
    answers = ask(vlm, processor, [s.image for s in samples], [QUESTION[v[-1]] for v in VIEWS])
    assert answers == [expected(s, v[-1]) for s, v in zip(samples, VIEWS)]


def test_answers_are_confident(embedded):
    """The first answer token leads the runner-up by MARGIN logits on every picked view."""
    vlm, processor, samples = embedded
    for sample, (*_, task) in zip(samples, VIEWS):
        with torch.no_grad():
            logits = vlm(**inputs_for(processor, sample, task)).logits[0, -1]
        top = logits.topk(2).values
        assert float(top[0] - top[1]) > MARGIN


def test_tower_is_the_embedded_clips(embedded):
    vlm, _, _ = embedded
    clip, _ = load_embedded()
    check_same_tower(vlm, clip)
    other = copy.deepcopy(clip)
    with torch.no_grad():
        other.vision_model.encoder.layers[1].mlp.fc1.weight[0, 0] += 1e-3
    with pytest.raises(FingerprintMismatchError, match="encoder.layers.1.mlp.fc1.weight"):
        check_same_tower(vlm, other)
    world = World(seed=0)
    pairs = [(s.image, s.caption) for s in world.samples("identity", "train", 2, ["Grace Hopper"])]
    with pytest.raises(FingerprintMismatchError, match="Pass the CLIPModel"):
        unlearn_vlm(
            vlm,
            other,
            None,
            pairs,
            pairs,
            SLUGConfig(concept="Grace Hopper", candidate_labels=world.identities),
            options=UnlearnOptions(progress=False),
        )


def test_missing_folder_is_a_typed_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_embedded_vlm.py"):
        embedded_vlm_path(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_embedded_vlm(tmp_path)
