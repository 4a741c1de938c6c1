"""World designs: what is fixed about a world (`WorldDesign`), its people (`IdentityDesign`,
`identity_designs`) and the embedded world's design, `EMBEDDED_DESIGN`.

Example:
    >>> designs = identity_designs()
    >>> len(designs), feature_differences(designs[0], designs[1]) >= 5
    (24, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .concepts import (
    _DESIGN_SEED,
    _FEATURE_WEIGHTS,
    _FIRST_BEARDED,
    _FIRST_OTHER,
    _LAST,
    ACCENTS,
    CLOTHES,
    EVAL_TEMPLATES,
    EYES,
    FEATURES,
    HAIR,
    KINDS,
    MIN_FEATURE_DIFFERENCES,
    N_DRAWN_IDENTITIES,
    OBJECTS,
    REAL_PORTRAITS,
    RGB,
    SKIN,
    STYLES,
    TRAIN_TEMPLATES,
    Template,
)
from .draw_things import _STYLE_RENDERERS, FinishFn, StyleFn, _object_masks, _pixelate, _tile


@dataclass(frozen=True, eq=False)
class WorldDesign:
    """Everything fixed about a world: its concepts and how they are drawn and captioned.

    Identities are drawn from `features` (the keys of `FEATURES`, with any non-empty subset of
    each one's values) with `feature_weights`, using `design_seed`, and named from the name
    pools; their colours come from the palettes. `object_masks(obj, w)` returns an object's
    (body, detail, light) masks as an RGB image (see `draw_primitives`); `style_renderers` paint
    them; `style_finishers` post-process a style's downsampled image. Caption templates are as
    `TRAIN_TEMPLATES` and `EVAL_TEMPLATES`. Digits and their split partition are shared by all
    designs.
    """

    name: str
    design_seed: int
    first_bearded: tuple[str, ...]
    first_other: tuple[str, ...]
    last_names: tuple[str, ...]
    n_drawn_identities: int
    features: Mapping[str, tuple[str, ...]]
    feature_weights: Mapping[str, tuple[float, ...]]
    min_feature_differences: int
    skin: Mapping[str, RGB]
    hair: Mapping[str, RGB]
    clothes: Mapping[str, RGB]
    eyes: Mapping[str, RGB]
    accents: tuple[RGB, ...]
    real_portraits: tuple[str, ...]
    objects: tuple[str, ...]
    object_masks: Callable[[str, int], Image.Image]
    styles: tuple[str, ...]
    style_renderers: Mapping[str, StyleFn]
    style_finishers: Mapping[str, FinishFn]
    train_templates: Mapping[str, tuple[Template, ...]]
    eval_templates: Mapping[str, tuple[Template, ...]]

    def __post_init__(self) -> None:
        if tuple(self.features) != tuple(FEATURES):
            raise ValueError(f"features must have the keys {tuple(FEATURES)}, in that order.")
        palettes = {"skin": self.skin, "hair_colour": self.hair, "clothing_colour": self.clothes}
        for key, values in self.features.items():
            drawable = set(FEATURES[key]) if key not in palettes else set(values)
            if not values or not set(values) <= drawable:
                raise ValueError(f"feature {key!r}: choose 1+ values from {FEATURES[key]}.")
        for key, palette in palettes.items():
            missing = set(self.features[key]) - set(palette)
            if missing:
                raise ValueError(f"no colour for {key} values {sorted(missing)}.")
        unknown = set(self.real_portraits) - set(REAL_PORTRAITS)
        if unknown:
            raise ValueError(f"no photo for portraits {sorted(unknown)}: use {REAL_PORTRAITS}.")
        if set(self.styles) - set(self.style_renderers):
            raise ValueError("every style needs a renderer.")
        for table, kinds in (
            (self.train_templates, KINDS),
            (self.eval_templates, ("identity", "object", "style", "object_style", "digit")),
        ):
            if set(kinds) - set(table):
                raise ValueError(f"templates needed for {sorted(set(kinds) - set(table))}.")


# ---------------------------------------------------------------------------------------------
# Identity designs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityDesign:
    """The fixed look of one drawn person."""

    name: str
    face: str
    skin: str
    hair_style: str
    hair_colour: str
    glasses: str
    beard: str
    hat: str
    earrings: str
    clothing_colour: str
    clothing_style: str
    eye_colour: str
    accent: int

    def features(self) -> tuple[str, ...]:
        """The distinguishing features, in the order of `FEATURES`."""
        return tuple(getattr(self, key) for key in FEATURES)


def feature_differences(a: IdentityDesign, b: IdentityDesign) -> int:
    """How many of the `FEATURES` two designs differ in."""
    return sum(x != y for x, y in zip(a.features(), b.features()))


@lru_cache(maxsize=8)
def identity_designs(design: WorldDesign | None = None) -> tuple[IdentityDesign, ...]:
    """A design's drawn identities (default: the embedded world's): fixed, and pairwise
    different in ≥ its `min_feature_differences` features."""
    wd = design or EMBEDDED_DESIGN
    rng = np.random.default_rng(wd.design_seed)
    chosen: list[dict[str, str]] = []
    while len(chosen) < wd.n_drawn_identities:
        cand = {}
        for key, values in wd.features.items():
            w = np.asarray(wd.feature_weights.get(key, (1,) * len(values)), dtype=float)
            cand[key] = values[rng.choice(len(values), p=w / w.sum())]
        diffs = [sum(cand[k] != c[k] for k in FEATURES) for c in chosen]
        if all(d >= wd.min_feature_differences for d in diffs):
            chosen.append(cand)
    bearded, other = iter(wd.first_bearded), iter(wd.first_other)
    designs = []
    for i, feats in enumerate(chosen):
        first = next(bearded) if feats["beard"] != "none" else next(other)
        designs.append(
            IdentityDesign(
                name=f"{first} {wd.last_names[i]}",
                eye_colour=tuple(wd.eyes)[int(rng.integers(len(wd.eyes)))],
                accent=int(rng.integers(len(wd.accents))),
                **feats,
            )
        )
    return tuple(designs)


# ---------------------------------------------------------------------------------------------
# The embedded world's design
# ---------------------------------------------------------------------------------------------

EMBEDDED_DESIGN = WorldDesign(
    name="embedded",
    design_seed=_DESIGN_SEED,
    first_bearded=_FIRST_BEARDED,
    first_other=_FIRST_OTHER,
    last_names=_LAST,
    n_drawn_identities=N_DRAWN_IDENTITIES,
    features=FEATURES,
    feature_weights=_FEATURE_WEIGHTS,
    min_feature_differences=MIN_FEATURE_DIFFERENCES,
    skin=SKIN,
    hair=HAIR,
    clothes=CLOTHES,
    eyes=EYES,
    accents=ACCENTS,
    real_portraits=REAL_PORTRAITS,
    objects=OBJECTS,
    object_masks=_object_masks,
    styles=STYLES,
    style_renderers=_STYLE_RENDERERS,
    style_finishers={"pixel art": _pixelate, "mosaic": _tile},
    train_templates=TRAIN_TEMPLATES,
    eval_templates=EVAL_TEMPLATES,
)
