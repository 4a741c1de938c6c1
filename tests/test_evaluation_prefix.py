"""The evaluation package: the prefix cache never patches the live model, explicit metric keys.

The cache of the blocks below an edit runs the model's own forward through views
(`hf_slug.evaluation.prefix_cache`): features must equal an uncached forward bit for bit, the
live model's `encoder.layers` must be the same object holding the same blocks during and after
an evaluation, and an exception in the middle of one must leave the model as it was.
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_images, tiny_clip

from hf_slug.evaluation import (
    FORGET_ACC,
    FORGET_TASK,
    UTILITY,
    ZeroShotEvaluator,
    ZeroShotTask,
    accuracy_key,
    from_block,
    recording,
    top5_key,
)
from hf_slug.search import edited
from hf_slug.towers import encode_images, encode_texts, tower_of

NAMES = ["Ada Byron", "Bob Stone", "Cy Young"]
TOWERS = ("vision_model", "text_model")


@pytest.fixture
def clip():
    return tiny_clip(seed=3, layers=3)


def _tasks(forget_name: str = FORGET_TASK) -> list[ZeroShotTask]:
    return [
        ZeroShotTask(forget_name, random_images(5, seed=4), ["Ada Byron"] * 5, NAMES),
        ZeroShotTask("retain", random_images(7, seed=5), ["Bob Stone"] * 7, NAMES),
    ]


def _snapshot(model) -> dict:
    """What a patch would change: each tower's encoder, its layers list and the blocks in it."""
    out = {}
    for path in TOWERS:
        encoder = model.get_submodule(path).encoder
        out[path] = (encoder, encoder.layers, list(encoder.layers))
    return out


def _same(model, snapshot: dict) -> bool:
    for path, (encoder, layers, blocks) in snapshot.items():
        now = model.get_submodule(path).encoder
        if now is not encoder or now.layers is not layers or list(now.layers) != blocks:
            return False
    return True


def _edit(model, name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {name: torch.randn_like(dict(model.named_parameters())[name]) * 0.5}


def test_metric_keys_are_explicit():
    assert (accuracy_key("retain"), top5_key("retain")) == ("retain_acc", "retain_acc@5")
    assert FORGET_ACC == accuracy_key(FORGET_TASK) == "forget_acc"
    assert UTILITY == "utility"
    forget, retain = _tasks()
    assert not forget.in_utility and retain.in_utility
    assert not ZeroShotTask("x", [], [], NAMES, counts_for_utility=False).in_utility


@pytest.mark.parametrize("kind", ["vision", "text"])
@pytest.mark.parametrize("first_block", [1, 2])
def test_recorded_and_replayed_features_equal_a_full_forward_bit_for_bit(
    clip, processor, kind, first_block
):
    pixels = processor(images=random_images(3, seed=1), return_tensors="pt")["pixel_values"]
    tokens = processor(text=["a b", "Ada Byron", "x y z"], return_tensors="pt", padding=True)

    def encode(model):
        if kind == "vision":
            return encode_images(model, pixels)
        return encode_texts(model, tokens["input_ids"], tokens["attention_mask"])

    tower = tower_of(clip, kind)
    before = _snapshot(clip)
    with torch.no_grad():
        full = encode(clip)
        hidden, below = [], []
        assert torch.equal(encode(recording(clip, tower, first_block, hidden)), full)
        encode(recording(clip, tower, first_block, below, below=True))
        assert torch.equal(hidden[0], below[0])
        assert torch.equal(encode(from_block(clip, tower, first_block, hidden[0])), full)
    assert _same(clip, before)


def test_cached_trials_equal_uncached_ones_exactly(clip, processor):
    fast = ZeroShotEvaluator(processor, _tasks(), batch_size=3)
    slow = ZeroShotEvaluator(processor, _tasks(), batch_size=3)
    for name in (
        "vision_model.encoder.layers.2.mlp.fc1.weight",
        "text_model.encoder.layers.1.self_attn.q_proj.weight",
    ):
        fast.begin(clip, [name])
        for trial in range(2):  # the first trial fills the caches, the second replays them
            with edited(clip, _edit(clip, name, trial)):
                assert fast(clip) == slow(clip), (name, trial)
        fast.end()


def test_the_live_model_is_the_same_during_and_after_a_cached_evaluation(clip, processor):
    before = _snapshot(clip)
    seen = []
    top = [clip.get_submodule(p).encoder.layers[-1] for p in TOWERS]  # runs in every forward
    handles = [
        b.register_forward_pre_hook(lambda *_: seen.append(_same(clip, before))) for b in top
    ]
    evaluator = ZeroShotEvaluator(processor, _tasks(), batch_size=3)
    try:
        for name in (
            "vision_model.encoder.layers.1.mlp.fc2.weight",
            "text_model.encoder.layers.2.mlp.fc1.weight",
        ):
            evaluator.begin(clip, [name])
            for trial in range(3):
                with edited(clip, _edit(clip, name, trial)):
                    evaluator.evaluate_forget(clip, FORGET_ACC, 0.0)
                    evaluator(clip)
            evaluator.end()
    finally:
        for handle in handles:
            handle.remove()
    assert seen and all(seen)
    assert _same(clip, before)


def test_an_exception_mid_evaluation_leaves_the_model_untouched(clip, processor):
    name = "vision_model.encoder.layers.2.self_attn.v_proj.weight"
    pixels = processor(images=random_images(2, seed=9), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = encode_images(clip, pixels)
    before = _snapshot(clip)
    hooks = [dict(b._forward_hooks) for b in clip.vision_model.encoder.layers]
    evaluator = ZeroShotEvaluator(processor, _tasks(), batch_size=3)
    evaluator.begin(clip, [name])
    evaluator(clip)  # fills the cache of blocks 0-1

    def fail(*_):
        raise RuntimeError("boom")

    handle = clip.vision_model.encoder.layers[2].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            evaluator(clip)  # a replayed trial, failing in the block above the cache
    finally:
        handle.remove()
        evaluator.end()
    assert _same(clip, before)
    assert [dict(b._forward_hooks) for b in clip.vision_model.encoder.layers] == hooks
    with torch.no_grad():
        assert torch.equal(encode_images(clip, pixels), expected)


def test_evaluate_only_reads_the_keys_it_is_given(clip, processor):
    evaluator = ZeroShotEvaluator(processor, _tasks(), batch_size=3)
    full = evaluator(clip)
    assert list(full) == ["forget_acc", "forget_acc@5", "retain_acc", "retain_acc@5", "utility"]
    assert full[UTILITY] == full["retain_acc"]  # the forget task never counts for utility
    for asked, tasks in [
        ((FORGET_ACC,), {"forget"}),
        ((top5_key("retain"),), {"retain"}),
    ]:
        only = evaluator.evaluate_only(clip, asked)
        assert set(only) == {k for t in tasks for k in (accuracy_key(t), top5_key(t))}
        assert all(only[k] == full[k] for k in only)
    # every task (so utility too), utility itself, or a key no task returns: everything
    every = [(FORGET_ACC, accuracy_key("retain")), (UTILITY,), ("nothing",), ("forget_accuracy",)]
    for asked in every:
        assert evaluator.evaluate_only(clip, asked) == full


def test_a_task_named_forget_stays_out_of_utility_whatever_its_flag(clip, processor):
    """Saved benchmark task files mark the forget task `counts_for_utility=True`."""
    flagged = [
        ZeroShotTask(FORGET_TASK, random_images(5, seed=4), ["Ada Byron"] * 5, NAMES, ("{}",)),
        *_tasks()[1:],
    ]
    assert flagged[0].counts_for_utility and not flagged[0].in_utility
    metrics = ZeroShotEvaluator(processor, flagged)(clip)
    assert metrics[UTILITY] == metrics["retain_acc"]
    renamed = ZeroShotEvaluator(processor, _tasks("ada"))(clip)
    assert renamed[UTILITY] == (renamed["ada_acc"] + renamed["retain_acc"]) / 2
