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

Example:
    >>> world = World(seed=0)
    >>> sample = world.samples("identity", "test", per_concept=1, concepts=["Grace Hopper"])[0]
    >>> sample.caption, sample.image.size
    ('Grace Hopper.', (48, 48))
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 48
SPLITS = ("train", "val", "test")
KINDS = ("identity", "object_style", "digit")
PROMPT_KINDS = ("identity", "object", "style", "digit")
ATTRIBUTES = ("identity", "object", "style", "digit")
EVAL_SPLITS = ("val", "test")

# ---------------------------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------------------------

FEATURES: dict[str, tuple[str, ...]] = {
    "face": ("oval", "round", "long", "square"),
    "skin": ("porcelain", "fair", "tan", "olive", "brown", "deep"),
    "hair_style": ("short", "long", "bun", "bald", "curly", "spiky", "bob", "ponytail"),
    "hair_colour": ("black", "brown", "blonde", "red", "grey", "teal"),
    "glasses": ("none", "round", "square", "sunglasses"),
    "beard": ("none", "full", "moustache", "goatee"),
    "hat": ("none", "cap", "beanie", "headband"),
    "earrings": ("none", "gold"),
    "clothing_colour": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
    "clothing_style": ("crew", "vneck", "shirt_tie", "hoodie", "striped"),
}
_FEATURE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "hair_style": (3, 3, 2, 1, 2, 2, 2, 2),
    "glasses": (4, 2, 2, 2),
    "beard": (6, 2, 2, 2),
    "hat": (5, 2, 2, 2),
}
MIN_FEATURE_DIFFERENCES = 5
N_DRAWN_IDENTITIES = 24
_DESIGN_SEED = 20240611

SKIN = {
    "porcelain": (250, 224, 205),
    "fair": (238, 193, 160),
    "tan": (214, 160, 112),
    "olive": (181, 140, 90),
    "brown": (140, 88, 56),
    "deep": (88, 56, 38),
}
HAIR = {
    "black": (28, 24, 24),
    "brown": (104, 62, 30),
    "blonde": (232, 198, 118),
    "red": (182, 62, 26),
    "grey": (172, 172, 176),
    "teal": (24, 150, 156),
}
CLOTHES = {
    "red": (204, 40, 40),
    "blue": (40, 78, 204),
    "green": (40, 150, 62),
    "yellow": (238, 204, 40),
    "purple": (132, 60, 172),
    "orange": (242, 132, 30),
    "white": (238, 238, 238),
    "black": (34, 34, 40),
}
EYES = {"brown": (92, 56, 30), "blue": (60, 122, 206), "green": (56, 150, 80)}
ACCENTS = (
    (214, 36, 110),
    (30, 120, 200),
    (250, 180, 20),
    (90, 180, 60),
    (240, 90, 40),
    (70, 70, 80),
)

_FIRST_BEARDED = (
    "Marcus", "Tobias", "Felix", "Hugo", "Ronan", "Dmitri", "Caleb", "Anton", "Silas", "Jasper",
    "Lionel", "Osric", "Bram", "Cyrus",
)  # fmt: skip
_FIRST_OTHER = (
    "Clara", "Imogen", "Lucia", "Maren", "Talia", "Nadia", "Beatrix", "Odette", "Priya", "Helena",
    "Yara", "Sabine", "Ingrid", "Elliot", "Noor", "Rosalind", "Kenji", "Amara", "Theo", "Delphine",
)  # fmt: skip
_LAST = (
    "Alderwick", "Brennholt", "Castellane", "Dunmore", "Everhart", "Fairbrook", "Galloway",
    "Harrowgate", "Iverson", "Jelstrup", "Kestrelle", "Lindqvist", "Morrowby", "Norcastle",
    "Ostrander", "Pemberton", "Quennell", "Rushworth", "Sandoval", "Tillbury", "Underhill",
    "Varga", "Whitcombe", "Yarrowby",
)  # fmt: skip

REAL_PORTRAITS = ("Grace Hopper", "Eileen Collins")
OBJECTS = (
    "house", "tree", "car", "fish", "cup", "star", "boat", "flower", "key", "umbrella", "heart",
    "moon",
)  # fmt: skip
STYLES = ("watercolor", "pixel art", "sketch", "neon", "mosaic", "striped", "pastel", "charcoal")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# ---------------------------------------------------------------------------------------------
# Caption templates: (template, attributes it states). Eval templates never appear in training.
# ---------------------------------------------------------------------------------------------

Template = tuple[str, tuple[str, ...]]
_ID = ("identity",)
_OB = ("object",)
_ST = ("style",)
_OS = ("object", "style")
_DG = ("digit",)

TRAIN_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (
        ("a photo of {name}.", _ID),
        ("a portrait of {name}", _ID),
        ("{name} posing for a picture", _ID),
        ("a close-up photo of {name}", _ID),
        ("{name}, face and shoulders", _ID),
        ("this is {name}", _ID),
        ("a picture showing {name}.", _ID),
        ("{name} looking at the camera", _ID),
        ("an image of {name}!", _ID),
    ),
    "object_style": (
        ("{a_object} in {style} style", _OS),
        ("a {style} painting of {a_object}", _OS),
        ("{a_object}, drawn in {style} style", _OS),
        ("{style} artwork of {a_object}", _OS),
        ("a picture of {a_object} in the {style} style", _OS),
        ("{a_object}", _OB),
        ("a picture of {a_object}", _OB),
        ("a drawing of {a_object}", _OB),
        ("{style} style artwork", _ST),
        ("an image in {style} style", _ST),
        ("art in the {style} style", _ST),
    ),
    "digit": (
        ("a handwritten digit {numeral}", _DG),
        ("the number {word}", _DG),
        ("a photo of the digit {word}", _DG),
        ("a handwritten {word}", _DG),
        ("the digit {numeral}", _DG),
        ("{numeral}, written by hand", _DG),
    ),
}
EVAL_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (("{name}.", _ID),),
    "object": (
        ("an illustration of {a_object}.", _OB),
        ("there is {a_object} in this image.", _OB),
    ),
    "style": (("a {style} style image.", _ST), ("made in {style} style.", _ST)),
    "object_style": (
        ("an illustration of {a_object}, {style} style.", _OS),
        ("{a_object} made in {style} style.", _OS),
    ),
    "digit": (("an image of the digit {word}.", _DG), ("a drawing of the number {numeral}.", _DG)),
}


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def fill_template(template: str, label: str, style: str | None = None) -> str:
    """`template` with its fields filled for a concept (identity name, object, style or digit)."""
    fields = {"name": label, "object": label, "a_object": _article(label), "style": style or label}
    if label in DIGITS:
        fields.update(word=label, numeral=str(DIGITS.index(label)))
    return template.format(**fields)


# ---------------------------------------------------------------------------------------------
# World designs
# ---------------------------------------------------------------------------------------------

RGB = tuple[int, int, int]
# (body, detail, light) masks, object colour, rng -> float RGB image at twice the output size
StyleFn = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator], np.ndarray
]
# float RGB image at the output size, rng -> the style's finished image (e.g. pixelation)
FinishFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


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


# ---------------------------------------------------------------------------------------------
# Shared view helpers (float RGB arrays in [0, 1], shape (H, W, 3))
# ---------------------------------------------------------------------------------------------

TRAIN_BACKGROUNDS = ("solid", "linear", "blotches")
EVAL_BACKGROUNDS = (*TRAIN_BACKGROUNDS, "radial", "checker")


def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.0, 0.8)) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(0.1, 1.0)))


def _background(
    size: int, split: str, rng: np.random.Generator, sat: float = 0.8, spread: float | None = None
) -> np.ndarray:
    """A background of a kind allowed in `split` (radial and checker only in val/test).

    `sat` caps the saturation; `spread` (if given) caps how far the second colour of gradients
    and textures may be from the first, per channel.
    """
    kinds = TRAIN_BACKGROUNDS if split == "train" else EVAL_BACKGROUNDS
    kind = kinds[int(rng.integers(len(kinds)))]
    c1, c2 = _random_colour(rng, (0.0, sat)), _random_colour(rng, (0.0, sat))
    if spread is not None:
        c2 = np.clip(c1 + rng.uniform(-spread, spread, 3), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    if kind == "solid":
        return np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
    if kind == "linear":
        a = rng.uniform(0, 2 * math.pi)
        t = (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a) + 0.5
    elif kind == "blotches":
        t = _smooth_noise(size, 4, rng)
        c2 = np.clip(c1 + rng.uniform(-0.35, 0.35, 3), 0, 1) if spread is None else c2
    elif kind == "radial":
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / 0.8
    else:  # checker
        period = rng.uniform(0.12, 0.3)
        t = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
        c2 = np.clip(c1 + rng.uniform(-0.25, 0.25, 3), 0, 1) if spread is None else c2
    t = np.clip(t, 0, 1)[..., None]
    return (c1 * (1 - t) + c2 * t).astype(np.float32)


def _smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a cells×cells random grid upsampled bicubically."""
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8), "L")
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0


def _finish(rgb: np.ndarray, split: str, rng: np.random.Generator) -> Image.Image:
    """Lighting (brightness, contrast, colour cast) and sensor noise; wider ranges in val/test."""
    if split == "train":
        bright, contrast, cast, noise = (0.8, 1.2), (0.8, 1.15), 0.06, 0.03
    else:
        bright, contrast, cast, noise = (0.7, 1.3), (0.7, 1.2), 0.1, 0.05
    mean = rgb.mean()
    rgb = (rgb - mean) * rng.uniform(*contrast) + mean
    rgb = rgb * rng.uniform(*bright) * (1 + rng.uniform(-cast, cast, 3))
    rgb = rgb + rng.normal(0, rng.uniform(0, noise), rgb.shape)
    return _to_image(rgb)


def _to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _blur_rgb(rgb: np.ndarray, radius: float) -> np.ndarray:
    image = _to_image(rgb).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, np.float32) / 255.0


def _affine(
    image: Image.Image, angle: float, scale: float, shift: np.ndarray, flip: bool
) -> Image.Image:
    """Rotate (degrees), scale and shift (fractions of the side) about the centre; maybe mirror."""
    w = image.size[0]
    c = (w - 1) / 2
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    fx = -1.0 if flip else 1.0
    tx, ty = shift[0] * w, shift[1] * w
    # output (u, v) -> source: R^-1 / scale applied to (u - c - tx, v - c - ty), then mirrored.
    data = (
        fx * cos,
        fx * sin,
        c - fx * (cos * (c + tx) + sin * (c + ty)),
        -sin,
        cos,
        c - (-sin * (c + tx) + cos * (c + ty)),
    )
    return image.transform(image.size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------


def _jitter(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 8) -> tuple:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in colour)


def _shade(colour: tuple, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * factor, 0, 255)) for v in colour)  # type: ignore[return-value]


_FACE_BOX = {"oval": (0.18, 0.235), "round": (0.205, 0.21), "long": (0.16, 0.255)}
_FACE_BOX["square"] = (0.195, 0.225)


def _draw_person(
    d: IdentityDesign, w: int, rng: np.random.Generator, design: WorldDesign | None = None
) -> Image.Image:
    """The person of design `d` on a transparent w×w canvas, front view, small variations.

    Colours come from the palettes of the world's `design` (default: the embedded world's).
    """
    wd = design or EMBEDDED_DESIGN
    img = Image.new("RGBA", (w, w), (0, 0, 0, 0))
    dr = ImageDraw.Draw(img)

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * w, y0 * w, x1 * w, y1 * w]

    def pts(*xy: float) -> list[tuple[float, float]]:
        return [(xy[i] * w, xy[i + 1] * w) for i in range(0, len(xy), 2)]

    skin = _jitter(wd.skin[d.skin], rng)
    hair = _jitter(wd.hair[d.hair_colour], rng)
    cloth = _jitter(wd.clothes[d.clothing_colour], rng)
    accent = _jitter(wd.accents[d.accent], rng)
    lw = max(1, round(0.015 * w))
    cx, cy = 0.5, 0.42 + rng.uniform(-0.01, 0.01)
    hw, hh = _FACE_BOX[d.face]

    # body and clothes
    dr.ellipse(box(0.1, 0.74, 0.9, 1.25), fill=cloth)
    if d.clothing_style == "striped":
        stripe = _shade(cloth, 0.6) if sum(cloth) > 300 else _shade(cloth, 1.8)
        for y in np.arange(0.79, 1.0, 0.05):
            dy = (y - 0.995) / 0.255
            half = 0.4 * math.sqrt(max(0.0, 1 - dy * dy))
            dr.line(pts(0.5 - half, y, 0.5 + half, y), fill=stripe, width=lw + 1)
    dr.rectangle(box(0.44, cy + hh - 0.06, 0.56, 0.8), fill=_shade(skin, 0.9))
    if d.clothing_style in ("crew", "striped"):
        dr.chord(box(0.42, 0.69, 0.58, 0.81), 0, 180, fill=_shade(skin, 0.9))
    elif d.clothing_style == "vneck":
        dr.polygon(pts(0.41, 0.745, 0.59, 0.745, 0.5, 0.87), fill=_shade(skin, 0.9))
    elif d.clothing_style == "shirt_tie":
        dr.polygon(pts(0.39, 0.75, 0.5, 0.79, 0.44, 0.86), fill=(245, 245, 245))
        dr.polygon(pts(0.61, 0.75, 0.5, 0.79, 0.56, 0.86), fill=(245, 245, 245))
        dr.polygon(pts(0.48, 0.79, 0.52, 0.79, 0.54, 0.97, 0.5, 1.0, 0.46, 0.97), fill=accent)
    elif d.clothing_style == "hoodie":
        dr.arc(box(0.3, 0.66, 0.7, 0.9), 0, 180, fill=_shade(cloth, 0.65), width=3 * lw)
        dr.line(pts(0.45, 0.8, 0.45, 0.92), fill=(235, 235, 235), width=lw)
        dr.line(pts(0.55, 0.8, 0.55, 0.92), fill=(235, 235, 235), width=lw)

    # hair behind the head
    if d.hair_style == "long":
        dr.rounded_rectangle(
            box(cx - hw - 0.045, cy - hh - 0.02, cx + hw + 0.045, 0.84), radius=0.08 * w, fill=hair
        )
    elif d.hair_style == "bob":
        dr.rounded_rectangle(
            box(cx - hw - 0.04, cy - hh - 0.02, cx + hw + 0.04, cy + 0.12),
            radius=0.06 * w,
            fill=hair,
        )
    elif d.hair_style == "ponytail":
        dr.ellipse(box(cx + hw - 0.03, cy - 0.06, cx + hw + 0.09, cy + 0.22), fill=hair)
    elif d.hair_style == "bun":
        dr.ellipse(box(cx - 0.085, cy - hh - 0.11, cx + 0.085, cy - hh + 0.05), fill=hair)

    # ears, head
    for sx in (-1, 1):
        ex = cx + sx * hw
        dr.ellipse(box(ex - 0.025, cy - 0.035, ex + 0.025, cy + 0.055), fill=_shade(skin, 0.92))
    head = box(cx - hw, cy - hh, cx + hw, cy + hh)
    if d.face == "square":
        dr.rounded_rectangle(head, radius=0.07 * w, fill=skin)
    else:
        dr.ellipse(head, fill=skin)
    if d.earrings == "gold":
        for sx in (-1, 1):
            ex = cx + sx * (hw + 0.005)
            dr.ellipse(box(ex - 0.02, cy + 0.055, ex + 0.02, cy + 0.095), fill=(236, 192, 40))

    # hair on top
    top = box(cx - hw - 0.015, cy - hh - 0.03, cx + hw + 0.015, cy + hh - 0.04)
    if d.hair_style in ("short", "long", "bob", "bun", "ponytail", "curly", "spiky"):
        dr.chord(top, 195, 345, fill=hair)
        if d.hair_style in ("long", "bob"):
            for sx in (-1, 1):
                x0 = cx + sx * (hw + 0.005)
                dr.rectangle(
                    box(min(x0, x0 - sx * 0.04), cy - 0.12, max(x0, x0 - sx * 0.04), cy + 0.1),
                    fill=hair,
                )
    if d.hair_style in ("curly", "spiky"):
        rx, ry = hw + 0.015, hh + 0.01
        for deg in range(195, 350, 22):
            t = math.radians(deg)
            px, py = cx + rx * math.cos(t), cy - 0.02 + ry * math.sin(t)
            if d.hair_style == "curly":
                dr.ellipse(box(px - 0.045, py - 0.045, px + 0.045, py + 0.045), fill=hair)
            else:
                nx, ny = math.cos(t), math.sin(t)
                dr.polygon(
                    pts(
                        px - 0.035 * ny,
                        py + 0.035 * nx,
                        px + 0.035 * ny,
                        py - 0.035 * nx,
                        px + 0.09 * nx,
                        py + 0.09 * ny,
                    ),
                    fill=hair,
                )

    # face
    ey = cy - 0.02
    brow = hair if d.hair_style != "bald" else _shade(HAIR["brown"], 0.7)
    for sx in (-1, 1):
        ex = cx + sx * 0.075
        dr.ellipse(box(ex - 0.036, ey - 0.021, ex + 0.036, ey + 0.021), fill=(250, 250, 250))
        dr.ellipse(box(ex - 0.017, ey - 0.017, ex + 0.017, ey + 0.017), fill=wd.eyes[d.eye_colour])
        dr.ellipse(box(ex - 0.007, ey - 0.007, ex + 0.007, ey + 0.007), fill=(10, 10, 10))
        dr.line(pts(ex - 0.04, ey - 0.05, ex + 0.04, ey - 0.05), fill=brow, width=lw + 1)
    dr.line(
        pts(cx, cy, cx - 0.018, cy + 0.06, cx + 0.012, cy + 0.065), fill=_shade(skin, 0.7), width=lw
    )
    if d.beard == "full":
        dr.chord(box(cx - hw - 0.01, cy - hh, cx + hw + 0.01, cy + hh + 0.03), 12, 168, fill=hair)
    elif d.beard == "goatee":
        dr.ellipse(box(cx - 0.045, cy + 0.125, cx + 0.045, cy + hh + 0.025), fill=hair)
    my = cy + 0.11
    mouth = (150, 50, 55) if d.beard != "full" else _shade(skin, 0.8)
    if rng.random() < 0.5:
        dr.arc(box(cx - 0.06, my - 0.04, cx + 0.06, my + 0.02), 20, 160, fill=mouth, width=lw + 1)
    else:
        dr.line(pts(cx - 0.05, my, cx + 0.05, my), fill=mouth, width=lw + 1)
    if d.beard == "moustache":
        dr.rounded_rectangle(
            box(cx - 0.065, cy + 0.072, cx + 0.065, cy + 0.098), radius=0.01 * w, fill=hair
        )

    # glasses
    if d.glasses != "none":
        frame = (15, 15, 20)
        for sx in (-1, 1):
            ex = cx + sx * 0.075
            g = box(ex - 0.05, ey - 0.04, ex + 0.05, ey + 0.04)
            if d.glasses == "round":
                dr.ellipse(g, outline=frame, width=lw + 1)
            elif d.glasses == "square":
                dr.rectangle(g, outline=frame, width=lw + 1)
            else:
                dr.rounded_rectangle(g, radius=0.02 * w, fill=(20, 20, 28))
        dr.line(pts(cx - 0.025, ey, cx + 0.025, ey), fill=frame, width=lw)

    # hats
    if d.hat == "cap":
        dr.chord(
            box(cx - hw - 0.025, cy - hh - 0.06, cx + hw + 0.025, cy + hh * 0.3),
            180,
            360,
            fill=accent,
        )
        mid = (cy - hh - 0.06 + cy + hh * 0.3) / 2
        dr.ellipse(
            box(cx - hw - 0.06, mid - 0.025, cx + hw + 0.06, mid + 0.03), fill=_shade(accent, 0.7)
        )
    elif d.hat == "beanie":
        dr.rounded_rectangle(
            box(cx - hw - 0.025, cy - hh - 0.07, cx + hw + 0.025, cy - 0.1),
            radius=0.09 * w,
            fill=accent,
        )
        dr.rectangle(
            box(cx - hw - 0.025, cy - 0.15, cx + hw + 0.025, cy - 0.1), fill=_shade(accent, 0.75)
        )
        dr.ellipse(box(cx - 0.04, cy - hh - 0.11, cx + 0.04, cy - hh - 0.03), fill=(245, 245, 245))
    elif d.hat == "headband":
        dr.rectangle(box(cx - hw - 0.01, cy - 0.155, cx + hw + 0.01, cy - 0.115), fill=accent)
    return img


# ---------------------------------------------------------------------------------------------
# Real portraits
# ---------------------------------------------------------------------------------------------

# (face centre x, y, head size) in source pixels
_PORTRAIT_FACES = ((262.0, 205.0, 300.0), (225.0, 108.0, 180.0))


@lru_cache(maxsize=2)
def _portrait_pyramid(which: int) -> tuple[Image.Image, ...]:
    """The source photo at full, half, quarter and eighth resolution."""
    if which == 0:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            image = Image.open(f).convert("RGB")
            image.load()
    else:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    levels = [image]
    for _ in range(3):
        levels.append(levels[-1].reduce(2))
    return tuple(levels)


def _portrait_view(which: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop around the face: scale, shift, rotation, flip and colour jitter."""
    levels = _portrait_pyramid(which)
    fx, fy, head = _PORTRAIT_FACES[which]
    W, H = levels[0].size
    side = head * rng.uniform(1.15, 2.3)
    angle = math.radians(rng.uniform(-15, 15))
    reach = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))
    cx = np.clip(fx + rng.uniform(-0.12, 0.12) * head, reach, W - reach) if 2 * reach < W else W / 2
    cy = fy + side * 0.12 + rng.uniform(-0.12, 0.12) * head
    cy = np.clip(cy, reach, H - reach) if 2 * reach < H else H / 2
    out = 2 * size
    level = 0
    while level < 3 and side / 2 ** (level + 1) >= out:
        level += 1
    src = levels[level]
    k = side / out / 2**level
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    c = (out - 1) / 2
    sx, sy = cx / 2**level, cy / 2**level
    data = (cos, -sin, sx - cos * c + sin * c, sin, cos, sy - sin * c - cos * c)
    view = src.transform((out, out), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgb = np.asarray(view.reduce(2), np.float32) / 255.0
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * rng.uniform(0.5, 1.4)  # saturation
    return rgb


# ---------------------------------------------------------------------------------------------
# Objects and styles
# ---------------------------------------------------------------------------------------------

# primitives in unit coordinates: (shape, coords, role[, extra]); roles: body, detail, light, erase
Prim = tuple  # (shape, coords, role[, extra])
_STAR = [
    (0.5 + r * math.sin(math.radians(36 * i)), 0.53 - r * math.cos(math.radians(36 * i)))
    for i, r in zip(range(10), [0.44, 0.18] * 5)
]
_PETALS = [
    (
        "ellipse",
        (
            0.5 + 0.15 * math.cos(a) - 0.1,
            0.36 + 0.15 * math.sin(a) - 0.1,
            0.5 + 0.15 * math.cos(a) + 0.1,
            0.36 + 0.15 * math.sin(a) + 0.1,
        ),
        "body",
    )
    for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)
]
SHAPES: dict[str, list[Prim]] = {
    "house": [
        ("poly", [(0.08, 0.48), (0.5, 0.1), (0.92, 0.48)], "body"),
        ("rect", (0.66, 0.16, 0.77, 0.36), "body"),
        ("rect", (0.18, 0.46, 0.82, 0.9), "body"),
        ("rect", (0.43, 0.64, 0.57, 0.9), "detail"),
        ("rect", (0.25, 0.55, 0.37, 0.67), "light"),
        ("rect", (0.63, 0.55, 0.75, 0.67), "light"),
    ],
    "tree": [
        ("rect", (0.43, 0.56, 0.57, 0.94), "detail"),
        ("ellipse", (0.14, 0.24, 0.56, 0.64), "body"),
        ("ellipse", (0.44, 0.24, 0.86, 0.64), "body"),
        ("ellipse", (0.26, 0.04, 0.74, 0.48), "body"),
    ],
    "car": [
        ("rect", (0.05, 0.46, 0.95, 0.72), "body"),
        ("poly", [(0.22, 0.47), (0.33, 0.27), (0.67, 0.27), (0.8, 0.47)], "body"),
        ("poly", [(0.29, 0.45), (0.37, 0.31), (0.48, 0.31), (0.48, 0.45)], "light"),
        ("poly", [(0.53, 0.45), (0.53, 0.31), (0.63, 0.31), (0.72, 0.45)], "light"),
        ("ellipse", (0.14, 0.6, 0.36, 0.82), "detail"),
        ("ellipse", (0.64, 0.6, 0.86, 0.82), "detail"),
    ],
    "fish": [
        ("ellipse", (0.08, 0.28, 0.68, 0.72), "body"),
        ("poly", [(0.6, 0.5), (0.94, 0.24), (0.94, 0.76)], "body"),
        ("poly", [(0.3, 0.32), (0.44, 0.16), (0.52, 0.33)], "body"),
        ("ellipse", (0.18, 0.41, 0.27, 0.5), "detail"),
    ],
    "cup": [
        ("poly", [(0.2, 0.28), (0.7, 0.28), (0.64, 0.84), (0.26, 0.84)], "body"),
        ("ring", (0.56, 0.38, 0.88, 0.72), "body", 0.07),
        ("ellipse", (0.08, 0.8, 0.8, 0.93), "detail"),
    ],
    "star": [("poly", _STAR, "body")],
    "boat": [
        ("poly", [(0.04, 0.62), (0.96, 0.62), (0.78, 0.88), (0.22, 0.88)], "body"),
        ("line", [(0.5, 0.08), (0.5, 0.63)], "detail", 0.035),
        ("poly", [(0.54, 0.1), (0.54, 0.58), (0.88, 0.58)], "light"),
        ("poly", [(0.46, 0.2), (0.46, 0.58), (0.18, 0.58)], "light"),
    ],
    "flower": [
        ("line", [(0.5, 0.45), (0.5, 0.96)], "detail", 0.04),
        ("ellipse", (0.5, 0.66, 0.76, 0.78), "detail"),
        *_PETALS,
        ("ellipse", (0.41, 0.27, 0.59, 0.45), "light"),
    ],
    "key": [
        ("ring", (0.04, 0.28, 0.42, 0.66), "body", 0.1),
        ("rect", (0.39, 0.43, 0.94, 0.53), "body"),
        ("rect", (0.72, 0.52, 0.79, 0.66), "body"),
        ("rect", (0.84, 0.52, 0.91, 0.62), "body"),
    ],
    "umbrella": [
        ("pieslice", (0.06, 0.12, 0.94, 0.88), "body", (180, 360)),
        ("ellipse", (0.13, 0.44, 0.33, 0.56), "erase"),
        ("ellipse", (0.4, 0.44, 0.6, 0.56), "erase"),
        ("ellipse", (0.67, 0.44, 0.87, 0.56), "erase"),
        ("line", [(0.5, 0.3), (0.5, 0.84)], "detail", 0.04),
        ("arc", (0.36, 0.74, 0.52, 0.92), "detail", (0, 180, 0.04)),
    ],
    "heart": [
        ("ellipse", (0.1, 0.16, 0.52, 0.58), "body"),
        ("ellipse", (0.48, 0.16, 0.9, 0.58), "body"),
        ("poly", [(0.12, 0.46), (0.88, 0.46), (0.5, 0.92)], "body"),
    ],
    "moon": [
        ("ellipse", (0.1, 0.08, 0.9, 0.88), "body"),
        ("ellipse", (0.34, -0.02, 1.06, 0.7), "erase"),
    ],
}
_ROLE_CHANNEL = {"body": 0, "erase": 0, "detail": 1, "light": 2}


@lru_cache(maxsize=64)
def _object_masks(obj: str, w: int) -> Image.Image:
    """The object's (body, detail, light) masks as the channels of one RGB image, w×w."""
    return draw_primitives(SHAPES[obj], w)


def draw_primitives(prims: Sequence[Prim], w: int) -> Image.Image:
    """Primitives (unit coordinates, see `SHAPES`) drawn as (body, detail, light) masks, w×w.

    The masks are the channels of one RGB image; "erase" primitives clear the body mask.
    """
    layers = [Image.new("L", (w, w), 0) for _ in range(3)]
    draws = [ImageDraw.Draw(layer) for layer in layers]
    for prim in prims:
        shape, coords, role = prim[:3]
        dr = draws[_ROLE_CHANNEL[role]]
        value = 0 if role == "erase" else 255
        if shape in ("rect", "ellipse", "ring", "pieslice", "arc"):
            xy = [v * w for v in coords]
        else:
            xy = [(x * w, y * w) for x, y in coords]
        if shape == "rect":
            dr.rectangle(xy, fill=value)
        elif shape == "ellipse":
            dr.ellipse(xy, fill=value)
        elif shape == "poly":
            dr.polygon(xy, fill=value)
        elif shape == "ring":
            dr.ellipse(xy, outline=value, width=max(1, round(prim[3] * w)))
        elif shape == "pieslice":
            dr.pieslice(xy, *prim[3], fill=value)
        elif shape == "arc":
            start, end, width = prim[3]
            dr.arc(xy, start, end, fill=value, width=max(1, round(width * w)))
        elif shape == "line":
            dr.line(xy, fill=value, width=max(1, round(prim[3] * w)))
    return Image.merge("RGB", layers)


HUE_BINS = 12
HELD_OUT_HUE_BINS = (3, 8)


def _object_colour(split: str, rng: np.random.Generator) -> np.ndarray:
    """The object's colour; hue bins 3 and 8 (of 12) appear only in val/test."""
    bins = [b for b in range(HUE_BINS) if split != "train" or b not in HELD_OUT_HUE_BINS]
    hue = (bins[int(rng.integers(len(bins)))] + rng.random()) / HUE_BINS
    return np.asarray(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95)))


def _pil_filter(mask: np.ndarray, filt: ImageFilter.Filter) -> np.ndarray:
    image = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8), "L").filter(filt)
    return np.asarray(image, np.float32) / 255.0


def _outline(mask: np.ndarray, width: int = 3) -> np.ndarray:
    return np.clip(
        _pil_filter(mask, ImageFilter.MaxFilter(width))
        - _pil_filter(mask, ImageFilter.MinFilter(width)),
        0,
        1,
    )


def _over(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.clip(alpha, 0, 1)[..., None]
    return base * (1 - a) + colour * a


def _flat(
    bg: np.ndarray, body: np.ndarray, detail: np.ndarray, light: np.ndarray, colour: np.ndarray
) -> np.ndarray:
    out = _over(bg, colour, body)
    out = _over(out, colour * 0.4, detail)
    return _over(out, colour + (1 - colour) * 0.6, light)


def _plain(w: int, colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (w, w, 3)).copy()


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _hue_of(colour: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*colour)[0]


def _watercolor(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    paper = _plain(w, (0.96, 0.94, 0.88)) + rng.normal(0, 0.015, (w, w, 1))
    wash = colour + (1 - colour) * rng.uniform(0.15, 0.35)
    soft = _pil_filter(body, ImageFilter.GaussianBlur(2.0))
    edge = np.clip(
        _pil_filter(body, ImageFilter.GaussianBlur(1.0))
        - _pil_filter(body, ImageFilter.GaussianBlur(3.5)),
        0,
        1,
    )
    alpha = soft * (0.45 + 0.35 * _smooth_noise(w, 5, rng)) + 1.2 * edge
    pale = _pil_filter(light, ImageFilter.GaussianBlur(1.5))
    alpha *= 1 - 0.7 * pale
    out = _over(paper, wash, alpha)
    out = _over(out, wash + (1 - wash) * 0.4, 0.45 * pale)
    out = _over(out, colour * 0.5, 0.75 * _pil_filter(detail, ImageFilter.GaussianBlur(1.5)))
    bloom = _smooth_noise(w, 7, rng)[..., None]
    return out * (0.96 + 0.06 * bloom)


def _pixel_art(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    bg = _plain(w, _hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.95)))
    saturated = _hsv(_hue_of(colour), 0.85, 0.95)
    out = _flat(bg, body, detail, light, saturated)
    shape = np.maximum(np.maximum(body, detail), light)
    return _over(out, np.zeros(3), _outline(shape, 5))


def _pixelate(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blocks of 3 px, colours posterised to 4 levels per channel."""
    s = rgb.shape[0]
    b = 3
    n = s // b
    small = rgb[: n * b, : n * b].reshape(n, b, n, b, 3).mean(axis=(1, 3))
    small = np.round(np.clip(small, 0, 1) * 3) / 3
    out = np.repeat(np.repeat(small, b, axis=0), b, axis=1)
    if out.shape[0] < s:
        out = np.pad(out, ((0, s - out.shape[0]), (0, s - out.shape[1]), (0, 0)), mode="edge")
    return out


def _sketch(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    paper = _plain(w, np.array([1.0, 0.99, 0.95]) * rng.uniform(0.92, 1.0))
    shape = np.maximum(np.maximum(body, detail), light)
    yy, xx = np.mgrid[0:w, 0:w]
    sign = 1 if rng.random() < 0.5 else -1
    period = int(rng.integers(5, 8))
    hatch = ((xx + sign * yy) % period < 1.5).astype(np.float32)
    cross = ((xx - sign * yy) % period < 1.5).astype(np.float32)
    ink = _outline(shape, 3) + 0.5 * _outline(np.roll(shape, (1, -1), axis=(0, 1)), 3)
    ink = ink + 0.45 * hatch * body * (1 - light) + 0.6 * np.maximum(hatch, cross) * detail
    pencil = np.full(3, rng.uniform(0.12, 0.35), np.float32)
    return _over(paper, pencil, np.clip(ink, 0, 1) * rng.uniform(0.75, 1.0))


def _neon(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    bg = _plain(w, _hsv(rng.uniform(0.55, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.02, 0.12)))
    glow_colour = _hsv(_hue_of(colour), rng.uniform(0.7, 1.0), 1.0)
    lines = np.clip(_outline(body, 5) + _outline(detail, 3) + _outline(light, 3), 0, 1)
    glow = _pil_filter(lines, ImageFilter.GaussianBlur(3.0)) * 1.6
    out = bg + glow[..., None] * glow_colour + 0.1 * body[..., None] * glow_colour
    return _over(out, glow_colour + (1 - glow_colour) * 0.6, lines)


def _mosaic(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    bg = _plain(w, _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.8, 0.97)))
    return _flat(bg, body, detail, light, _hsv(_hue_of(colour), rng.uniform(0.7, 1.0), 0.75))


def _tile(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tiles of 4 px with per-tile colour jitter and 1 px grout lines."""
    s = rgb.shape[0]
    t = 4
    off = int(rng.integers(0, t))
    pad = np.pad(rgb, ((off, 2 * t), (off, 2 * t), (0, 0)), mode="edge")
    n = (s + off + t - 1) // t
    tiles = pad[: n * t, : n * t].reshape(n, t, n, t, 3).mean(axis=(1, 3))
    tiles = tiles + rng.uniform(-0.06, 0.06, (n, n, 1)) + rng.uniform(-0.03, 0.03, (n, n, 3))
    out = np.repeat(np.repeat(tiles, t, axis=0), t, axis=1)
    grout = rng.uniform(0.75, 0.9) if rng.random() < 0.7 else rng.uniform(0.1, 0.25)
    idx = np.arange(n * t) % t == t - 1
    out[idx, :, :] = grout
    out[:, idx, :] = grout
    return out[off : off + s, off : off + s]


def _striped(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    bg = _plain(w, _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.choice([0.15, 0.9])))
    a = rng.uniform(0, math.pi)
    period = rng.uniform(7, 11)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    phase = (xx * math.cos(a) + yy * math.sin(a)) / period
    stripes = (np.sin(2 * math.pi * phase) > 0).astype(np.float32)[..., None]
    second = _hsv(_hue_of(colour) + 0.5, 0.2, 1.0) if rng.random() < 0.5 else np.ones(3)
    pattern = colour * stripes + second * (1 - stripes)
    a_body = np.clip(body, 0, 1)[..., None]
    out = bg * (1 - a_body) + pattern * a_body
    out = _over(out, colour * 0.35, detail)
    out = _over(out, pattern * 0.5 + 0.5, light)
    shape = np.maximum(np.maximum(body, detail), light)
    return _over(out, colour * 0.3, _outline(shape, 3))


def _pastel(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    bg = _plain(w, _hsv(rng.random(), rng.uniform(0.1, 0.25), rng.uniform(0.93, 1.0)))
    soft = _hsv(_hue_of(colour), rng.uniform(0.25, 0.45), rng.uniform(0.9, 1.0))
    blur = ImageFilter.GaussianBlur(1.2)
    out = _over(bg, soft, _pil_filter(body, blur))
    out = _over(out, soft * 0.8, _pil_filter(detail, blur))
    return _over(out, soft * 0.5 + 0.5, _pil_filter(light, blur))


def _charcoal(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    w = body.shape[0]
    paper = _plain(w, np.full(3, rng.uniform(0.72, 0.88))) + rng.normal(0, 0.04, (w, w, 1))
    grain = rng.random((w, w)).astype(np.float32)
    smudge = _pil_filter(np.maximum(body, detail), ImageFilter.GaussianBlur(4.0))
    soft = _pil_filter(body, ImageFilter.GaussianBlur(1.2)) * (1 - 0.6 * light)
    tone = rng.uniform(0.1, 0.3)
    out = _over(paper, np.full(3, tone), 0.3 * smudge)
    out = _over(out, np.full(3, tone), soft * (0.55 + 0.45 * grain))
    pale = _pil_filter(light, ImageFilter.GaussianBlur(1.2)) * (0.5 + 0.5 * grain)
    out = _over(out, np.full(3, tone + 0.3), 0.8 * pale)
    out = _over(out, np.full(3, 0.05), _pil_filter(detail, ImageFilter.GaussianBlur(1.0)) * 0.9)
    return _over(out, np.full(3, 0.05), _outline(body, 3) * (0.5 + 0.5 * grain))


_STYLE_RENDERERS: dict[str, StyleFn] = {
    "watercolor": _watercolor,
    "pixel art": _pixel_art,
    "sketch": _sketch,
    "neon": _neon,
    "mosaic": _mosaic,
    "striped": _striped,
    "pastel": _pastel,
    "charcoal": _charcoal,
}


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------

DIGIT_SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


@lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.float32)


@lru_cache(maxsize=1)
def _digit_partition() -> dict[str, list[np.ndarray]]:
    """Per split, per digit: the `load_digits` indices it owns (a fixed, stratified 60/20/20)."""
    from sklearn.datasets import load_digits

    target = load_digits().target
    rng = np.random.default_rng(_DESIGN_SEED)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(target == d))
        a = int(round(len(idx) * DIGIT_SPLIT_FRACTIONS[0]))
        b = a + int(round(len(idx) * DIGIT_SPLIT_FRACTIONS[1]))
        for split, part in zip(SPLITS, (idx[:a], idx[a:b], idx[b:])):
            parts[split].append(np.sort(part))
    return parts


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
