"""The per-user retain-gradient cache: a second concept on the same model and retain set skips
the retain pass; any change to the weights, the retain data or the pass settings misses it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import PLUMBING, random_images

import hf_slug.gradient_cache as gradients_module
from hf_slug import SLUGConfig, UnlearnOptions, load_pairs, unlearn
from hf_slug.cache import DISABLE_VARIABLE, cache_home, gradient_cache_enabled
from hf_slug.errors import ConfigError
from hf_slug.gradient_cache import KEEP_FILES

NAMES = ["Ada Byron", "Alan Turing"]
pytestmark = pytest.mark.filterwarnings("ignore:the model already meets the forget criterion")

RETAIN_CAPTIONS = [f"a photo of item number {i}" for i in range(8)]


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the gradient passes that actually ran, in order."""
    ran: list[str] = []
    compute = gradients_module.compute_gradients

    def counted(model, processor, pairs, kind, names, **kwargs):
        ran.append(kind)
        return compute(model, processor, pairs, kind, names, **kwargs)

    monkeypatch.setattr(gradients_module, "compute_gradients", counted)
    return ran


def forget_set(name: str, seed: int):
    return load_pairs((random_images(4, seed=seed), [f"a photo of {name}"] * 4))


def retain_set(captions=RETAIN_CAPTIONS):
    return load_pairs((random_images(len(captions), seed=9), list(captions)))


def run(model, processor, name: str, retain, options: UnlearnOptions | None = None):
    config = SLUGConfig(concept=name, candidate_labels=NAMES, layer="vision.L0.fc1", **PLUMBING)
    options = options or UnlearnOptions(progress=False)
    return unlearn(
        model, processor, forget_set(name, seed=len(name)), retain, config, options=options
    )


def cached_files(folder: Path) -> list[Path]:
    return sorted((folder / "gradients").glob("*.safetensors"))


def test_a_second_concept_reuses_the_retain_gradients(
    model, processor, passes, fresh_gradient_cache
) -> None:
    retain = retain_set()
    first = run(model, processor, "Ada Byron", retain)
    assert passes == ["forget", "retain"]
    assert len(cached_files(fresh_gradient_cache)) == 1
    second = run(model, processor, "Alan Turing", retain)
    assert passes == ["forget", "retain", "forget"]  # no second retain pass
    fresh = run(model, processor, "Alan Turing", retain, UnlearnOptions(cache_retain=False))
    assert passes[-2:] == ["forget", "retain"]
    assert first.layers and second.layers
    # the retain gradients only enter the layer metrics: a cached pass gives the same ones
    assert [s.to_dict() for s in second.layers] == [s.to_dict() for s in fresh.layers]


CHANGES = {
    "a retain caption": lambda model: (
        model,
        retain_set(["another caption"] + RETAIN_CAPTIONS[1:]),
    ),
    "a weight outside the candidates": lambda model: (_nudged(model), retain_set()),
}


def _nudged(model):
    with torch.no_grad():
        model.text_model.final_layer_norm.bias.add_(1e-3)
    return model


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_misses_the_cache(model, processor, passes, fresh_gradient_cache, change):
    run(model, processor, "Ada Byron", retain_set())
    model, retain = CHANGES[change](model)
    run(model, processor, "Alan Turing", retain)
    assert passes == ["forget", "retain", "forget", "retain"]
    assert len(cached_files(fresh_gradient_cache)) == 2  # one file each, nothing overwritten


def test_an_image_file_edited_in_place_misses_the_cache(model, processor, passes, tmp_path) -> None:
    paths = []
    for i, image in enumerate(random_images(len(RETAIN_CAPTIONS), seed=9)):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    run(model, processor, "Ada Byron", load_pairs((paths, RETAIN_CAPTIONS)))
    random_images(1, seed=1)[0].save(paths[0])  # same name, new pixels
    run(model, processor, "Alan Turing", load_pairs((paths, RETAIN_CAPTIONS)))
    assert passes.count("retain") == 2


def test_the_batch_size_is_part_of_the_key(model, processor, passes) -> None:
    retain = retain_set()
    run(model, processor, "Ada Byron", retain)
    config = SLUGConfig(
        concept="Alan Turing",
        candidate_labels=NAMES,
        layer="vision.L0.fc1",
        batch_size=3,
        **PLUMBING,
    )
    unlearn(
        model,
        processor,
        forget_set("Alan", 1),
        retain,
        config,
        options=UnlearnOptions(progress=False),
    )
    assert passes.count("retain") == 2  # the contrastive loss contrasts within a batch


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_default_cache_can_be_turned_off(
    model, processor, passes, fresh_gradient_cache, monkeypatch, how
) -> None:
    options = UnlearnOptions(progress=False, cache_retain=how != "option")
    if how == "environment":
        monkeypatch.setenv(DISABLE_VARIABLE, "1")
    assert gradient_cache_enabled() is (how != "environment")
    run(model, processor, "Ada Byron", retain_set(), options)
    run(model, processor, "Alan Turing", retain_set(), options)
    assert passes.count("retain") == 2
    assert not cached_files(fresh_gradient_cache)


def test_cache_dir_keeps_its_own_files(model, processor, fresh_gradient_cache, tmp_path):
    run(
        model,
        processor,
        "Ada Byron",
        retain_set(),
        UnlearnOptions(cache_dir=tmp_path / "c", progress=False),
    )
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "forget_gradients-Ada_Byron.safetensors",
        "retain_gradients.safetensors",
    ]
    assert not cached_files(fresh_gradient_cache)  # an explicit folder replaces the default


def test_cache_home_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("HF_SLUG_CACHE", "/somewhere/mine")
    assert cache_home() == Path("/somewhere/mine")
    monkeypatch.delenv("HF_SLUG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/home/me/.cache")
    assert cache_home() == Path("/home/me/.cache/hf_slug")


def test_cache_retain_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="cache_retain must be True or False"):
        UnlearnOptions(cache_retain="yes")


def test_the_per_user_cache_keeps_only_the_most_recently_used_files(model, processor, passes):
    from hf_slug.cache import prune

    folder = cache_home() / "gradients"
    folder.mkdir(parents=True)
    old = []
    for i in range(KEEP_FILES + 3):
        old.append(folder / f"old{i}.safetensors")
        old[-1].write_bytes(b"x")
        os.utime(old[-1], (1000 + i, 1000 + i))
    leftover = folder / ".old0.safetensors.abc.tmp"
    leftover.write_bytes(b"x")
    os.utime(leftover, (1000, 1000))
    run(model, processor, "Ada Byron", retain_set())
    kept = sorted(p.name for p in folder.iterdir())
    assert len(kept) == KEEP_FILES + 1  # the newest old ones and this call's file
    assert "old0.safetensors" not in kept and leftover.name not in kept
    assert prune(folder / "missing") == []
