"""Gradients and trials that are not what they should be: given, cached or produced by an
overflowing edit. Each gives a typed error, a recomputation or a failed trial — never a hang,
a raw trace from torch, or NaN in a model."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import PLUMBING, random_images

from hf_slug import (
    ConfigError,
    NonFiniteGradientError,
    NonFiniteOutputError,
    SLUGConfig,
    UnlearnOptions,
    load_pairs,
    unlearn,
)
from hf_slug.gradients import compute_gradients, load_gradients, save_gradients
from hf_slug.search import update

NAMES = ["Ada Byron", "Alan Turing"]
LAYER = "vision_model.encoder.layers.0.mlp.fc1.weight"
pytestmark = pytest.mark.filterwarnings(
    "ignore:the model already meets", "ignore:SLUG found no layer"
)


def forget_set():
    return load_pairs((random_images(4, seed=1), ["a photo of Ada Byron"] * 4))


def retain_set():
    return load_pairs((random_images(6, seed=2), [f"item {i}" for i in range(6)]))


def run(model, processor, *, layer="vision.L0.fc1", options=None, **config):
    settings = {**PLUMBING, **config}
    config = SLUGConfig(concept="Ada Byron", candidate_labels=NAMES, layer=layer, **settings)
    options = options or UnlearnOptions(progress=False)
    return unlearn(model, processor, forget_set(), retain_set(), config, options=options)


@pytest.fixture
def watchdog():
    """Fail instead of hanging (a non-finite trial once looped forever)."""

    def fail(*_):
        raise TimeoutError("the call did not return within 120 s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("layer", ["vision.L0.fc1", "text.L0.fc1"])
def test_an_overflowing_step_is_a_failed_trial(model, processor, watchdog, layer) -> None:
    result = run(model, processor, layer=layer, initial_step=1e30, max_evaluations=3)
    assert result.chosen is None and not result.deltas
    assert all(not t.forgets for s in result.searches for t in s.trials)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_half_precision_overflow_is_a_failed_trial(model, processor, watchdog) -> None:
    result = run(model.half(), processor, layer="text.L0.fc1", initial_step=1e6, max_evaluations=2)
    assert result.chosen is None
    assert [t.metrics for s in result.searches for t in s.trials] == [{"non_finite": 1.0}] * 2


def test_update_refuses_a_delta_that_overflows(model) -> None:
    grads = {LAYER: torch.ones_like(model.get_parameter(LAYER))}
    with pytest.raises(NonFiniteOutputError, match="overflows float32"):
        update(model, (LAYER,), grads, step=1e300)


def _with(value):
    def make(model):
        grad = torch.ones_like(model.get_parameter(LAYER))
        grad.view(-1)[0] = value
        return {LAYER: grad}

    return make


BAD_GIVEN = {
    "a NaN": (_with(float("nan")), NonFiniteGradientError, "NaN or inf"),
    "an inf": (_with(float("inf")), NonFiniteGradientError, "NaN or inf"),
    "a wrong shape": (lambda m: {LAYER: torch.ones(3, 3)}, ConfigError, "shape"),
    "a list": (lambda m: {LAYER: [1.0]}, ConfigError, "not a floating-point tensor"),
    "integers": (lambda m: {LAYER: torch.ones(64, 32, dtype=torch.int64)}, ConfigError, "float"),
    "a missing tensor": (lambda m: {}, ConfigError, "lack"),
}


@pytest.mark.parametrize("case", list(BAD_GIVEN))
def test_bad_given_gradients_are_refused(model, processor, case) -> None:
    make, error, message = BAD_GIVEN[case]
    options = UnlearnOptions(forget_gradients=make(model), inplace=True, progress=False)
    with pytest.raises(error, match=message):
        run(model, processor, options=options)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _poison(path: Path) -> None:
    """Rewrite a cached gradient file with one NaN, metadata intact (as a disk fault could)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    name = next(iter(tensors))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("where", ["cache_dir", "per-user cache"])
def test_a_poisoned_cache_is_recomputed(model, processor, tmp_path, fresh_gradient_cache, where):
    options = UnlearnOptions(progress=False, cache_dir=tmp_path if where == "cache_dir" else None)
    clean = run(model, processor, options=options)
    folder = tmp_path if where == "cache_dir" else fresh_gradient_cache / "gradients"
    for path in folder.glob("*retain*.safetensors" if where == "cache_dir" else "*.safetensors"):
        _poison(path)
    with pytest.warns(UserWarning, match="recomputing retain gradients: .*NaN or inf"):
        again = run(model, processor, options=options)
    assert [s.alignment for s in again.layers] == [s.alignment for s in clean.layers]


def test_an_unwritable_cache_warns_and_the_call_goes_on(model, processor, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HF_SLUG_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="could not cache the retain gradients.*HF_SLUG_CACHE"):
        result = run(model, processor)
    assert result.layers


def test_a_long_or_punctuated_concept_gets_its_own_cache_file(model, processor, tmp_path):
    options = UnlearnOptions(progress=False, cache_dir=tmp_path)
    for concept in ("C++", "C#", "A" * 300):
        config = SLUGConfig(
            concept=concept, candidate_labels=[concept, "other"], layer="vision.L0.fc1", **PLUMBING
        )
        pairs = load_pairs((random_images(4, seed=1), [f"a photo of {concept}"] * 4))
        unlearn(model, processor, pairs, retain_set(), config, options=options)
    forget_files = sorted(p.name for p in tmp_path.glob("forget_gradients-*"))
    assert len(forget_files) == 3 and all(len(name) < 100 for name in forget_files)


def test_a_processor_change_misses_the_cache(model, processor, fresh_gradient_cache) -> None:
    from hf_slug.testing import tiny_clip_processor

    run(model, processor)
    other = tiny_clip_processor()
    other.image_processor.image_mean = [0.0, 0.0, 0.0]
    run(model, other)
    assert len(list((fresh_gradient_cache / "gradients").glob("*.safetensors"))) == 2


def test_load_gradients_sees_a_write_through_data(model, processor, tmp_path) -> None:
    pairs = retain_set()
    grads = compute_gradients(model, processor, pairs, "retain", [LAYER], progress=False)
    save_gradients(tmp_path / "g.safetensors", grads, model)
    model.vision_model.post_layernorm.bias.data.add_(0.5)  # bumps no version counter
    with pytest.raises(Exception, match="different weights"):
        load_gradients(tmp_path / "g.safetensors", model, [LAYER])
