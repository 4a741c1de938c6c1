"""World B (`benchmarks/world_b.py`) is a genuinely different world, and parametrising `World` by
a design left the embedded world bit-identical."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.world_b import TRAIN_TEMPLATES as TRAIN_TEMPLATES_B  # noqa: E402
from benchmarks.world_b import WORLD_B_DESIGN, world_b  # noqa: E402
from hf_slug.demo.world import (  # noqa: E402
    EMBEDDED_DESIGN,
    EVAL_TEMPLATES,
    TRAIN_TEMPLATES,
    World,
    fill_template,
    identity_designs,
)


def digest(sample) -> str:
    return hashlib.sha256(np.asarray(sample.image).tobytes()).hexdigest()[:16]


# computed with world.py before `WorldDesign` existed
EMBEDDED_PINS = [
    (("identity", "Clara Alderwick", None, "test", 0), "Clara Alderwick.", "c12add1963ce1fe2"),
    (
        ("identity", "Grace Hopper", None, "train", 3),
        "Grace Hopper looking at the camera",
        "0e9b9115c671fb0f",
    ),
    (
        ("object_style", "umbrella", "mosaic", "val", 1),
        "an umbrella made in mosaic style.",
        "ef43659da40939ff",
    ),
    (
        ("object_style", "moon", "pixel art", "train", 0),
        "an image in pixel art style",
        "d593736ab697902f",
    ),
    (("digit", "seven", None, "train", 2), "a photo of the digit seven", "2fc55d2ecf6dfe9b"),
]


@pytest.mark.parametrize(("args", "caption", "pin"), EMBEDDED_PINS, ids=lambda x: str(x)[:40])
def test_default_design_is_unchanged(args, caption, pin):
    sample = World(seed=0).sample(*args)
    assert (sample.caption, digest(sample)) == (caption, pin)


def test_default_design_is_the_embedded_one():
    world = World(0)
    assert world.design is EMBEDDED_DESIGN
    assert identity_designs() == identity_designs(EMBEDDED_DESIGN)
    assert world.identities[-2:] == ["Grace Hopper", "Eileen Collins"]


def words(names) -> set[str]:
    return {part for name in names for part in name.split()}


def test_world_b_shares_no_concept_with_the_embedded_world():
    a, b = World(0), world_b()
    assert 16 <= len(b.identities) <= 20 and len(b.objects) == 8 and len(b.styles) == 6
    pools_a = {*EMBEDDED_DESIGN.first_bearded, *EMBEDDED_DESIGN.first_other}
    pools_a |= set(EMBEDDED_DESIGN.last_names) | words(EMBEDDED_DESIGN.real_portraits)
    assert not words(b.identities) & pools_a
    assert not words(b.identities) & words(a.identities)
    assert not set(b.objects) & set(a.objects) and not set(b.styles) & set(a.styles)
    assert WORLD_B_DESIGN.real_portraits == ()
    assert WORLD_B_DESIGN.design_seed != EMBEDDED_DESIGN.design_seed
    colours = ("skin", "hair", "clothes", "eyes")
    for palette in colours:
        values_a = set(getattr(EMBEDDED_DESIGN, palette).values())
        assert not values_a & set(getattr(WORLD_B_DESIGN, palette).values()), palette
    assert not set(EMBEDDED_DESIGN.accents) & set(WORLD_B_DESIGN.accents)
    assert b.digits == a.digits


def texts(table) -> set[str]:
    return {t for templates in table.values() for t, _ in templates}


def test_world_b_templates_are_new_and_held_out():
    train_b, eval_b = texts(WORLD_B_DESIGN.train_templates), texts(WORLD_B_DESIGN.eval_templates)
    a = texts(TRAIN_TEMPLATES) | texts(EVAL_TEMPLATES)
    assert not train_b & a
    assert not eval_b & train_b
    # every world keeps the SLUG paper's identity prompt, which the demo protocol uses
    assert eval_b & a == {"{name}."}


def test_world_b_views_are_deterministic_and_captioned_by_its_templates():
    names = world_b().identities[:2]
    first = world_b().samples("identity", "val", 2, names)
    assert [digest(s) for s in first] == [
        digest(s) for s in world_b().samples("identity", "val", 2, names)
    ]
    assert [digest(s) for s in first] != [
        digest(s) for s in world_b(seed=2).samples("identity", "val", 2, names)
    ]
    scenes = world_b().samples("object_style", "train", 1, ["kite"])
    assert len(scenes) == 6 and {s.style for s in scenes} == set(WORLD_B_DESIGN.styles)
    for s in scenes:
        filled = {fill_template(t, s.label, s.style) for t, _ in TRAIN_TEMPLATES_B["object_style"]}
        assert s.caption in filled and s.image.size == (48, 48)
    prompts = world_b().prompts("style")
    assert prompts["ink wash"] == ["a piece of ink wash art.", "in the manner of ink wash."]


def test_world_b_styles_look_different():
    """Simple image statistics (mean, contrast, edges) differ between any two styles."""
    world = world_b()
    stats = {}
    for style in world.styles:
        views = [
            np.asarray(s.image, np.float32) / 255
            for s in world.samples("object_style", "train", 3, [style])[:9]
        ]
        stack = np.stack(views)
        stats[style] = np.array([stack.mean(), stack.std(), np.abs(np.diff(stack, axis=2)).mean()])
    names = list(stats)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            assert np.abs(stats[x] - stats[y]).max() > 0.01, (x, y)


def test_the_novel_person_is_drawn_from_the_given_world():
    from hf_slug.demo.novel import NOVEL_NAME, novel_design, novel_views
    from hf_slug.demo.world import feature_differences, identity_designs

    world = world_b()
    person = novel_design(1, world.design)
    assert person.name == NOVEL_NAME and NOVEL_NAME not in world.identities
    for key, values in WORLD_B_DESIGN.features.items():
        assert getattr(person, key) in values
    known = identity_designs(WORLD_B_DESIGN)
    assert min(feature_differences(person, d) for d in known) >= (
        WORLD_B_DESIGN.min_feature_differences
    )
    assert person != novel_design(1)  # not the embedded world's novel person
    assert len(novel_views(world, 2)) == 2
