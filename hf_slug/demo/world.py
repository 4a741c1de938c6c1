"""A small captioned image world, the training and evaluation data of the embedded demo CLIP.

Three kinds of concept, each drawn in many views, deterministically from a seed:

* ``identity`` — the analogue of celebrities: 24 procedurally drawn people with invented names,
  each with a stable look (face shape, skin tone, hair style and colour, glasses, beard, hat,
  earrings, clothes) that differs from every other person's in at least 5 features, plus two real
  portraits under strong augmentation, "Grace Hopper" (matplotlib's sample photo) and
  "Eileen Collins" (``skimage.data.astronaut()``).
* ``object_style`` — the analogue of UnlearnCanvas: 12 drawn objects × 8 painting styles.
* ``digit`` — scikit-learn's handwritten digits, upscaled and coloured: a utility probe.

There are three disjoint splits. ``train`` views use training captions, three background kinds,
a narrower lighting range and 10 of 12 object hue bins; ``val`` and ``test`` views add two
background kinds, wider lighting and the held-out hues, and are captioned with held-out templates.
Digit images are partitioned between the splits. Each view comes from its own random stream,
keyed by (seed, kind, split, concept, index), so a split's views are never rendered for another
split, and ``samples`` returns a prefix-stable, reproducible list.

The concepts themselves (identity designs, objects, styles, templates, the digit partition) are
fixed by a `WorldDesign`; ``seed`` only chooses the views. `EMBEDDED_DESIGN`, the default, is the
world described here, the one the embedded CLIP was trained on; another design (other people,
colours, objects, styles and caption templates) gives an independent world to check results on.

The parts live in `concepts` (names, palettes, templates), `design` (`WorldDesign`, the people's
designs, `EMBEDDED_DESIGN`), `draw_people`, `draw_things` (objects, styles, digits) and
`draw_views` (backgrounds, lighting); their names stay importable from here.

Example:
    >>> world = World(seed=0)
    >>> sample = world.samples("identity", "test", per_concept=1, concepts=["Grace Hopper"])[0]
    >>> sample.caption, sample.image.size
    ('Grace Hopper.', (48, 48))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .concepts import (
    _FEATURE_WEIGHTS,
    ACCENTS,
    ATTRIBUTES,
    CLOTHES,
    DIGITS,
    EVAL_SPLITS,
    EVAL_TEMPLATES,
    EYES,
    FEATURES,
    HAIR,
    IMAGE_SIZE,
    KINDS,
    MIN_FEATURE_DIFFERENCES,
    N_DRAWN_IDENTITIES,
    OBJECTS,
    PROMPT_KINDS,
    REAL_PORTRAITS,
    RGB,
    SKIN,
    SPLITS,
    STYLES,
    TRAIN_TEMPLATES,
    Template,
    fill_template,
)
from .design import (
    EMBEDDED_DESIGN,
    IdentityDesign,
    WorldDesign,
    feature_differences,
    identity_designs,
)
from .draw_people import _draw_person, _portrait_view
from .draw_things import (
    DIGIT_SPLIT_FRACTIONS,
    HELD_OUT_HUE_BINS,
    HUE_BINS,
    SHAPES,
    FinishFn,
    Prim,
    StyleFn,
    _digit_images,
    _digit_partition,
    _object_colour,
    draw_primitives,
)
from .draw_views import (
    EVAL_BACKGROUNDS,
    TRAIN_BACKGROUNDS,
    _affine,
    _background,
    _blur_rgb,
    _finish,
    _to_image,
)

# The world's names, importable from here whichever module of hf_slug.demo defines them (the
# private ones are helpers benchmarks/world_b.py and demo/novel.py draw other worlds with).
__all__ = [
    "ACCENTS", "ATTRIBUTES", "CLOTHES", "DIGITS", "DIGIT_SPLIT_FRACTIONS", "EMBEDDED_DESIGN",
    "EVAL_BACKGROUNDS", "EVAL_SPLITS", "EVAL_TEMPLATES", "EYES", "FEATURES", "HAIR",
    "HELD_OUT_HUE_BINS", "HUE_BINS", "IMAGE_SIZE", "KINDS", "MIN_FEATURE_DIFFERENCES",
    "N_DRAWN_IDENTITIES", "OBJECTS", "PROMPT_KINDS", "REAL_PORTRAITS", "RGB", "SHAPES", "SKIN",
    "SPLITS", "STYLES", "TRAIN_BACKGROUNDS", "TRAIN_TEMPLATES", "FinishFn", "IdentityDesign",
    "Prim", "Sample", "StyleFn", "Template", "World", "WorldDesign", "attributes_of",
    "draw_primitives", "feature_differences", "fill_template", "identity_designs",
    "_FEATURE_WEIGHTS",
]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Sample:
    """One captioned view of a concept.

    `stated` lists the attributes the caption names (a subset of `ATTRIBUTES`); the image has
    all of `attributes`. A caption fits an image when every attribute it states matches.
    """

    image: Image.Image
    caption: str
    kind: str
    label: str
    style: str | None = None
    split: str = "train"
    stated: tuple[str, ...] = ()

    @property
    def attributes(self) -> dict[str, str]:
        """The image's attributes: {"identity": name}, {"object", "style"} or {"digit": word}."""
        return attributes_of(self.kind, self.label, self.style)


def attributes_of(kind: str, label: str, style: str | None = None) -> dict[str, str]:
    """The attributes an image of `kind` showing `label` (in `style`) has."""
    if kind == "identity":
        return {"identity": label}
    if kind == "object_style":
        return {"object": label, "style": style or ""}
    if kind == "digit":
        return {"digit": label}
    raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}.")


class World:
    """The captioned image world; every view is a pure function of (seed, kind, split, index).

    Attributes:
        seed: chooses the views (concepts and the digit partition are fixed).
        image_size: side of the rendered square RGB images, in pixels.
        design: the concepts and how they are drawn and captioned (default `EMBEDDED_DESIGN`).
        identities: drawn identity names, then the real portraits (embedded design:
            "Grace Hopper" and "Eileen Collins").
        objects, styles, digits: the object names, style names and digit words ("zero".."nine").
    """

    def __init__(
        self, seed: int = 0, image_size: int = IMAGE_SIZE, design: WorldDesign | None = None
    ):
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}.")
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.design = design or EMBEDDED_DESIGN
        self.designs: dict[str, IdentityDesign] = {d.name: d for d in identity_designs(self.design)}
        self.identities: list[str] = [*self.designs, *self.design.real_portraits]
        self.objects: list[str] = list(self.design.objects)
        self.styles: list[str] = list(self.design.styles)
        self.digits: list[str] = list(DIGITS)

    # -- public API ----------------------------------------------------------------------------

    def concepts(self, kind: str) -> list[tuple[str, str | None]]:
        """The (label, style) pairs of `kind`; style is None except for ``object_style``."""
        if kind == "identity":
            return [(name, None) for name in self.identities]
        if kind == "object_style":
            return [(o, s) for o in self.objects for s in self.styles]
        if kind == "digit":
            return [(d, None) for d in self.digits]
        raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}.")

    def samples(
        self, kind: str, split: str, per_concept: int, concepts: Sequence[str] | None = None
    ) -> list[Sample]:
        """`per_concept` views of each concept of `kind` in `split`, concept by concept.

        `concepts` restricts the concepts: identity names, digit words, or for ``object_style``
        objects and/or styles (a combination is kept when its object or its style is listed;
        `per_concept` then counts views per combination). The first n views of a concept are the
        same whatever `per_concept` ≥ n is asked for.
        """
        _check_split(split)
        if per_concept < 0:
            raise ValueError(f"per_concept must be ≥ 0, got {per_concept}.")
        pairs = self.concepts(kind)
        if concepts is not None:
            wanted = set(concepts)
            known = {x for pair in pairs for x in pair if x is not None}
            unknown = sorted(wanted - known)
            if unknown:
                raise ValueError(f"unknown {kind} concepts {unknown}: choose from {sorted(known)}.")
            pairs = [p for p in pairs if p[0] in wanted or p[1] in wanted]
        return [
            self.sample(kind, label, style, split, i)
            for label, style in pairs
            for i in range(per_concept)
        ]

    def sample(self, kind: str, label: str, style: str | None, split: str, index: int) -> Sample:
        """The `index`-th view of one concept in `split`."""
        _check_split(split)
        pairs = self.concepts(kind)
        if (label, style) not in pairs:
            raise ValueError(f"unknown {kind} concept {(label, style)!r}.")
        rng = np.random.default_rng(
            [self.seed, KINDS.index(kind), SPLITS.index(split), pairs.index((label, style)), index]
        )
        if kind == "identity":
            image = self._render_identity(label, split, rng)
        elif kind == "object_style":
            image = self._render_object(label, style or "", split, rng)
        else:
            image = self._render_digit(label, split, index, rng)
        options = self.caption_options(kind, label, style, split)
        caption, stated = options[int(rng.integers(len(options)))]
        return Sample(image, caption, kind, label, style, split, stated)

    def caption_options(
        self, kind: str, label: str, style: str | None, split: str
    ) -> list[tuple[str, tuple[str, ...]]]:
        """Every caption a `split` view of the concept may get, with the attributes it states.

        Training views use the training templates; val and test views the held-out ones.
        """
        _check_split(split)
        attributes_of(kind, label, style)
        d = self.design
        table = d.train_templates if split == "train" else d.eval_templates
        return [(fill_template(t, label, style), states) for t, states in table[kind]]

    def prompts(self, kind: str) -> dict[str, list[str]]:
        """Held-out zero-shot prompts per label; `kind` is identity, object, style or digit.

        Identities use the SLUG paper's template, just ``"{name}."``.
        """
        labels = {
            "identity": self.identities,
            "object": self.objects,
            "style": self.styles,
            "digit": self.digits,
        }
        if kind not in labels:
            raise ValueError(f"unknown prompt kind {kind!r}: use one of {PROMPT_KINDS}.")
        return {
            label: [fill_template(t, label) for t, _ in self.design.eval_templates[kind]]
            for label in labels[kind]
        }

    def digit_indices(self, split: str) -> dict[str, list[int]]:
        """The indices into scikit-learn's `load_digits()` each split draws from, per digit."""
        _check_split(split)
        return {d: idx.tolist() for d, idx in zip(DIGITS, _digit_partition()[split])}

    # -- rendering -----------------------------------------------------------------------------

    def _render_identity(self, name: str, split: str, rng: np.random.Generator) -> Image.Image:
        size = self.image_size
        if name in self.design.real_portraits:
            rgb = _portrait_view(REAL_PORTRAITS.index(name), size, rng)
            if rng.random() < 0.1:
                rgb = rgb.mean(axis=2, keepdims=True).repeat(3, axis=2)
            if rng.random() < 0.5:
                rgb = _blur_rgb(rgb, float(rng.uniform(0.2, 1.0)))
            return _finish(rgb, split, rng)
        big = 2 * size
        person = _draw_person(self.designs[name], big, rng, self.design)
        angle = rng.uniform(-12, 12)
        scale = rng.uniform(0.88, 1.12)
        shift = rng.uniform(-0.07, 0.07, size=2)
        flip = bool(rng.random() < 0.5)
        person = _affine(person.convert("RGBa"), angle, scale, shift, flip).convert("RGBA")
        person = person.reduce(2)
        layer = np.asarray(person, dtype=np.float32) / 255.0
        bg = _background(size, split, rng)
        alpha = layer[..., 3:]
        rgb = layer[..., :3] * alpha + bg * (1.0 - alpha)
        return _finish(rgb, split, rng)

    def _render_object(
        self, obj: str, style: str, split: str, rng: np.random.Generator
    ) -> Image.Image:
        size = self.image_size
        big = 2 * size
        masks = self.design.object_masks(obj, big)
        angle = rng.uniform(-15, 15)
        scale = rng.uniform(0.78, 0.96)
        shift = rng.uniform(-0.05, 0.05, size=2)
        flip = bool(rng.random() < 0.5)
        masks = _affine(masks, angle, scale, shift, flip)
        m = np.asarray(masks, dtype=np.float32) / 255.0
        colour = _object_colour(split, rng)
        rgb = self.design.style_renderers[style](m[..., 0], m[..., 1], m[..., 2], colour, rng)
        rgb = rgb.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
        if style in self.design.style_finishers:
            rgb = self.design.style_finishers[style](rgb, rng)
        lo, hi = (0.9, 1.1) if split == "train" else (0.85, 1.15)
        rgb = rgb * rng.uniform(lo, hi) + rng.normal(0, 0.01, rgb.shape)
        return _to_image(rgb)

    def _render_digit(
        self, word: str, split: str, index: int, rng: np.random.Generator
    ) -> Image.Image:
        size = self.image_size
        pool = _digit_partition()[split][DIGITS.index(word)]
        pixels = _digit_images()[pool[index % len(pool)]]
        glyph = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), "L")
        side = int(round(size * rng.uniform(0.68, 0.82)))
        glyph = glyph.resize((side, side), Image.Resampling.BICUBIC)
        glyph = glyph.rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR)
        alpha = np.zeros((size, size), np.float32)
        jitter = max(1, round(0.06 * size))
        x0, y0 = ((size - side) // 2 + int(rng.integers(-jitter, jitter + 1)) for _ in range(2))
        x0, y0 = (min(max(v, 0), size - side) for v in (x0, y0))
        alpha[y0 : y0 + side, x0 : x0 + side] = np.asarray(glyph, np.float32) / 255.0
        bg = _background(size, split, rng, sat=0.5, spread=0.2)
        level = float(bg.mean())
        lo, hi = (0.0, level - 0.45) if level > 0.5 else (level + 0.45, 1.0)
        ink = np.full(3, rng.uniform(lo, max(lo, hi)), np.float32)
        ink = np.clip(ink + rng.uniform(-0.15, 0.15, 3), 0, 1)  # a tint, keeping the contrast
        rgb = bg * (1 - alpha[..., None]) + ink * alpha[..., None]
        return _finish(rgb, split, rng)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}.")
