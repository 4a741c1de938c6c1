"""A person the embedded model never saw: the audit's scale for learning a concept from scratch.

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
    _FEATURE_WEIGHTS,
    FEATURES,
    MIN_FEATURE_DIFFERENCES,
    SPLITS,
    IdentityDesign,
    World,
    feature_differences,
    identity_designs,
)

NOVEL_NAME = "Quill Varanov"


def novel_design(seed: int = 1) -> IdentityDesign:
    """A drawn person that differs from every embedded identity in ≥ 5 features."""
    rng = np.random.default_rng([seed, 7919])
    known = identity_designs()
    while True:
        features = {}
        for key, values in FEATURES.items():
            weights = np.asarray(_FEATURE_WEIGHTS.get(key, (1,) * len(values)), dtype=float)
            features[key] = values[rng.choice(len(values), p=weights / weights.sum())]
        design = replace(known[0], name=NOVEL_NAME, **features)
        if all(feature_differences(design, d) >= MIN_FEATURE_DIFFERENCES for d in known):
            return design


def novel_views(world: World, n: int, split: str = "test", seed: int = 1) -> list[Image.Image]:
    """`n` views of the novel person, rendered like the world's identities in `split`."""
    design = novel_design(seed)
    world = World(world.seed, world.image_size)
    world.designs[design.name] = design  # renderable, but not one of world.identities
    views = []
    for index in range(n):
        rng = np.random.default_rng([world.seed, 99, SPLITS.index(split), seed, index])
        views.append(world._render_identity(design.name, split, rng))
    return views
