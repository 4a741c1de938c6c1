"""A person a world's model never saw: the audit's scale for learning a concept from scratch.

Example:
    >>> from hf_slug.demo.world import World
    >>> len(novel_views(World(), 2))
    2
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from .world import (
    EMBEDDED_DESIGN,
    SPLITS,
    IdentityDesign,
    World,
    WorldDesign,
    feature_differences,
    identity_designs,
)

NOVEL_NAME = "Quill Varanov"


def novel_design(seed: int = 1, design: WorldDesign | None = None) -> IdentityDesign:
    """A drawn person that differs from every identity of `design` (default: the embedded
    world's) in at least its `min_feature_differences` features, drawn from its features."""
    design = design or EMBEDDED_DESIGN
    rng = np.random.default_rng([seed, 7919])
    known = identity_designs(design)
    while True:
        features = {}
        for key, values in design.features.items():
            weights = np.asarray(design.feature_weights.get(key, (1,) * len(values)), dtype=float)
            features[key] = values[rng.choice(len(values), p=weights / weights.sum())]
        person = replace(known[0], name=NOVEL_NAME, **features)
        if all(feature_differences(person, d) >= design.min_feature_differences for d in known):
            return person


def novel_views(world: World, n: int, split: str = "test", seed: int = 1) -> list[Image.Image]:
    """`n` views of the novel person, rendered like the world's identities in `split`."""
    person = novel_design(seed, world.design)
    world = World(world.seed, world.image_size, world.design)
    world.designs[person.name] = person  # renderable, but not one of world.identities
    views = []
    for index in range(n):
        rng = np.random.default_rng([world.seed, 99, SPLITS.index(split), seed, index])
        views.append(world._render_identity(person.name, split, rng))
    return views
