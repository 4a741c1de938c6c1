"""Gradients: equal to a hand-written reference, independent of batching, model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import random_images

from hf_slug import GradientOptions, NonFiniteGradientError, load_pairs
from hf_slug.errors import DeltaFormatError
from hf_slug.gradients import compute_gradients, load_gradients, save_gradients
from hf_slug.towers import candidate_names

CAPTIONS = [f"a photo of item number {i}" for i in range(12)]


@pytest.fixture
def pairs():
    return load_pairs((random_images(12, seed=3), CAPTIONS))


def reference_gradients(model, processor, pairs, loss, names):
    """The loss written out by hand on the whole set at once, autograd on a copy of the model."""
    model = copy.deepcopy(model)
    inputs = processor(
        text=list(pairs.texts),
        images=[pairs.image(i) for i in range(len(pairs))],
        return_tensors="pt",
        padding=True,
    )
    v = model.visual_projection(
        model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
    )
    t = model.text_projection(
        model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pooler_output
    )
    v, t = F.normalize(v, dim=-1), F.normalize(t, dim=-1)
    if loss == "forget":
        value = (1 - (v * t).sum(-1)).mean()
    else:
        logits = model.logit_scale.exp() * v @ t.T
        target = torch.arange(len(t))
        value = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    value.backward()
    params = dict(model.named_parameters())
    return {n: params[n].grad for n in names}


@pytest.mark.numerics
@pytest.mark.parametrize("loss", ["forget", "retain"])
def test_gradients_match_hand_written_reference(model, processor, pairs, loss):
    names = candidate_names(model)
    got = compute_gradients(
        model, processor, pairs, loss, names, batch_size=len(pairs), progress=False
    )
    want = reference_gradients(model, processor, pairs, loss, names)
    for name in names:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


@pytest.mark.numerics
def test_forget_gradient_does_not_depend_on_batch_size(model, processor, pairs):
    names = candidate_names(model, ("text",))
    full = compute_gradients(
        model, processor, pairs, "forget", names, batch_size=12, progress=False
    )
    for batch_size in (1, 5):  # 5 leaves a ragged last batch: weighting by size matters
        small = compute_gradients(
            model, processor, pairs, "forget", names, batch_size=batch_size, progress=False
        )
        for name in names:
            torch.testing.assert_close(small[name], full[name], atol=1e-6, rtol=1e-5)


@pytest.mark.numerics
def test_retain_gradient_does_not_depend_on_batch_order(model, processor, pairs):
    names = candidate_names(model, ("vision",))
    forward = compute_gradients(
        model, processor, pairs, "retain", names, batch_size=4, progress=False
    )
    order = [8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3]  # the same three batches, reversed
    backward = compute_gradients(
        model, processor, pairs.subset(order), "retain", names, batch_size=4, progress=False
    )
    for name in names:
        torch.testing.assert_close(forward[name], backward[name], atol=1e-6, rtol=1e-5)


def test_model_is_left_exactly_as_it_was(model, processor, pairs):
    model.train()
    model.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    compute_gradients(model, processor, pairs, "retain", candidate_names(model), progress=False)
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.requires_grad == flags[name], name
        assert p.grad is None, name


def test_gradient_cache_round_trip_and_refusal(model, processor, pairs, tmp_path):
    names = candidate_names(model, ("text",))
    grads = compute_gradients(model, processor, pairs, "retain", names, progress=False)
    path = tmp_path / "retain.safetensors"
    save_gradients(path, grads, model, pairs.signature())
    loaded = load_gradients(path, model, names, pairs.signature())
    assert all(torch.equal(loaded[n], grads[n]) for n in names)
    with pytest.raises(DeltaFormatError, match="other data"):
        load_gradients(path, model, names, pairs.subset([0, 1]).signature())
    with torch.no_grad():
        dict(model.named_parameters())[names[0]].add_(1.0)
    with pytest.raises(DeltaFormatError, match="different weights"):
        load_gradients(path, model, names)


def test_non_finite_gradient_is_a_clear_error(model, processor, pairs):
    with torch.no_grad():
        model.text_model.final_layer_norm.weight[0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match="NaN/inf"):
        compute_gradients(
            model, processor, pairs, "forget", candidate_names(model, ("text",)), progress=False
        )


def test_memory_options_keep_the_gradient(model, processor, pairs):
    names = candidate_names(model)
    exact = compute_gradients(model, processor, pairs, "retain", names, progress=False)
    checkpointed = compute_gradients(
        model,
        processor,
        pairs,
        "retain",
        names,
        options=GradientOptions(checkpointing=True),
        progress=False,
    )
    halved = compute_gradients(
        model,
        processor,
        pairs,
        "retain",
        names,
        options=GradientOptions(storage_dtype=torch.bfloat16),
        progress=False,
    )
    mixed = compute_gradients(
        model,
        processor,
        pairs,
        "retain",
        names,
        options=GradientOptions(autocast_dtype=torch.bfloat16),
        progress=False,
    )
    assert not model.is_gradient_checkpointing and not model.training
    for name in names:
        torch.testing.assert_close(checkpointed[name], exact[name], atol=1e-6, rtol=1e-5)
        assert halved[name].dtype == torch.bfloat16
        torch.testing.assert_close(halved[name].float(), exact[name], atol=1e-3, rtol=1e-2)
        cosine = F.cosine_similarity(mixed[name].flatten(), exact[name].flatten(), dim=0)
        assert cosine > 0.98, name  # bf16 forward, fp32 sum: the same direction


def test_two_processes_with_accelerate_equal_one(model, processor, pairs, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i in range(len(pairs)):
        pairs.image(i).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(pairs.texts[i])
    script = Path(__file__).resolve().parents[1] / "scripts" / "distributed_gradients.py"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
        str(script),
        "--model",
        str(tmp_path / "model"),
        "--pairs",
        str(folder),
        "--batch-size",
        "5",
        "--out",
        str(tmp_path / "g.safetensors"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "from 2 process(es)" in run.stdout
    local = load_pairs(folder)
    names = candidate_names(model)
    distributed = load_gradients(tmp_path / "g.safetensors", model, names, local.signature())
    single = compute_gradients(
        model, processor, local, "retain", names, batch_size=5, progress=False
    )
    for name in names:
        torch.testing.assert_close(distributed[name], single[name], atol=1e-6, rtol=1e-5)
