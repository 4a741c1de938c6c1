"""World B: a second, independent captioned world, to check that defaults tuned on the embedded
world carry over.

Everything that `hf_slug.demo.world.EMBEDDED_DESIGN` fixes is drawn anew here: 18 people with
other invented names (none shared with the embedded world's name pools), another design seed,
other skin, hair, clothing, eye and accent colours and feature weights, no real portraits;
8 other objects and 6 other painting styles (their mask and renderer functions are below); other
training and held-out caption templates. Only the digits (a utility probe) and the view
machinery (backgrounds, lighting, splits, held-out hues) are shared. The identity prompt stays
the SLUG paper's ``"{name}."``, which the demo protocol uses for every world.

Example:
    >>> world = world_b()
    >>> len(world.identities), len(world.objects), len(world.styles)
    (18, 8, 6)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from hf_slug.demo.draw_things import hsv, hue_of, outline, over, pil_filter, plain
from hf_slug.demo.draw_views import smooth_noise
from hf_slug.demo.world import FEATURES, Prim, Template, World, WorldDesign, draw_primitives

# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------

FIRST_BEARDED = (
    "Orrin", "Leopold", "Ansel", "Barnaby", "Ewan", "Gideon", "Mattias", "Rafferty", "Stellan",
    "Torvald", "Ulric", "Evander", "Lazlo", "Percival",
)  # fmt: skip
FIRST_OTHER = (
    "Wren", "Solveig", "Liora", "Mireille", "Tamsin", "Zofia", "Aurelie", "Briony", "Cosima",
    "Esme", "Ffion", "Ilse", "Juno", "Katya", "Linnea", "Oona", "Petra", "Saoirse",
)  # fmt: skip
LAST_NAMES = (
    "Ashgrove", "Blackthorn", "Coldwater", "Drummond", "Elmsworth", "Foxley", "Greywell",
    "Hollingsby", "Ivesdale", "Juniper", "Kingsmere", "Larchmont", "Marlowe", "Nettlefield",
    "Oakenshaw", "Pryce", "Quarrington", "Ravensworth", "Stonebridge", "Thornbury",
)  # fmt: skip
N_IDENTITIES = 18
DESIGN_SEED = 7243019

SKIN = {
    "ivory": (247, 226, 210),
    "peach": (240, 200, 170),
    "honey": (222, 170, 110),
    "bronze": (176, 120, 74),
    "umber": (120, 78, 48),
    "ebony": (70, 46, 34),
}
HAIR = {
    "jet": (12, 12, 16),
    "chestnut": (120, 70, 40),
    "platinum": (236, 228, 200),
    "auburn": (150, 56, 30),
    "violet": (120, 60, 170),
    "rose": (220, 100, 150),
}
CLOTHES = {
    "maroon": (120, 24, 40),
    "navy": (24, 36, 100),
    "cyan": (20, 170, 190),
    "mustard": (200, 160, 30),
    "lavender": (180, 150, 220),
    "coral": (250, 120, 100),
    "khaki": (150, 140, 80),
    "cream": (240, 230, 200),
}
EYES = {"grey": (120, 130, 140), "hazel": (140, 110, 50), "amber": (190, 130, 40)}
ACCENTS = (
    (0, 150, 136),
    (156, 39, 176),
    (255, 193, 7),
    (121, 85, 72),
    (233, 30, 99),
    (63, 81, 181),
)
IDENTITY_FEATURES: dict[str, tuple[str, ...]] = {
    **FEATURES,
    "skin": tuple(SKIN),
    "hair_colour": tuple(HAIR),
    "clothing_colour": tuple(CLOTHES),
}
FEATURE_WEIGHTS: dict[str, tuple[float, ...]] = {
    "hair_style": (2, 2, 3, 1, 3, 2, 3, 2),
    "glasses": (3, 3, 2, 2),
    "beard": (5, 2, 2, 2),
    "hat": (4, 2, 2, 2),
    "earrings": (2, 1),
}

# ---------------------------------------------------------------------------------------------
# Objects: primitives in unit coordinates, as `hf_slug.demo.world.SHAPES`
# ---------------------------------------------------------------------------------------------


def _leaf_outline(n: int = 14) -> list[tuple[float, float]]:
    """A lens-shaped leaf along the diagonal from (0.18, 0.82) to (0.86, 0.14)."""
    (x0, y0), (x1, y1) = (0.18, 0.82), (0.86, 0.14)
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy)
    nx, ny = -dy / length, dx / length
    side_a, side_b = [], []
    for t in np.linspace(0, 1, n):
        half = 0.2 * math.sin(math.pi * t) ** 0.8
        px, py = x0 + dx * t, y0 + dy * t
        side_a.append((px + nx * half, py + ny * half))
        side_b.append((px - nx * half, py - ny * half))
    return side_a + side_b[::-1]


_CROWN_PEAKS = ((0.14, 0.28), (0.5, 0.16), (0.86, 0.28))
SHAPES: dict[str, list[Prim]] = {
    "kite": [
        ("poly", [(0.5, 0.05), (0.8, 0.38), (0.5, 0.76), (0.2, 0.38)], "body"),
        ("poly", [(0.5, 0.08), (0.5, 0.38), (0.24, 0.38)], "light"),
        ("line", [(0.5, 0.05), (0.5, 0.76)], "detail", 0.025),
        ("line", [(0.2, 0.38), (0.8, 0.38)], "detail", 0.025),
        ("line", [(0.5, 0.76), (0.42, 0.84), (0.56, 0.9), (0.46, 0.98)], "detail", 0.025),
        ("poly", [(0.38, 0.82), (0.46, 0.84), (0.38, 0.88)], "body"),
        ("poly", [(0.6, 0.88), (0.52, 0.9), (0.6, 0.95)], "body"),
    ],
    "bell": [
        ("ellipse", (0.28, 0.14, 0.72, 0.56), "body"),
        ("poly", [(0.28, 0.36), (0.72, 0.36), (0.88, 0.76), (0.12, 0.76)], "body"),
        ("rect", (0.1, 0.72, 0.9, 0.8), "detail"),
        ("ellipse", (0.42, 0.76, 0.58, 0.92), "detail"),
        ("ring", (0.42, 0.04, 0.58, 0.18), "detail", 0.035),
        ("ellipse", (0.34, 0.24, 0.44, 0.56), "light"),
    ],
    "lamp": [
        ("poly", [(0.3, 0.08), (0.7, 0.08), (0.86, 0.44), (0.14, 0.44)], "body"),
        ("ellipse", (0.28, 0.4, 0.72, 0.52), "light"),
        ("rect", (0.46, 0.46, 0.54, 0.84), "detail"),
        ("ellipse", (0.22, 0.8, 0.78, 0.95), "body"),
        ("line", [(0.62, 0.44), (0.62, 0.6)], "detail", 0.02),
    ],
    "anchor": [
        ("ring", (0.39, 0.03, 0.61, 0.23), "body", 0.06),
        ("rect", (0.455, 0.2, 0.545, 0.88), "body"),
        ("rect", (0.26, 0.28, 0.74, 0.36), "detail"),
        ("arc", (0.14, 0.36, 0.86, 0.9), "body", (10, 170, 0.08)),
        ("poly", [(0.06, 0.56), (0.24, 0.6), (0.14, 0.72)], "body"),
        ("poly", [(0.94, 0.56), (0.76, 0.6), (0.86, 0.72)], "body"),
    ],
    "crown": [
        (
            "poly",
            [
                (0.14, 0.78),
                (0.14, 0.3),
                (0.32, 0.54),
                (0.5, 0.18),
                (0.68, 0.54),
                (0.86, 0.3),
                (0.86, 0.78),
            ],
            "body",
        ),
        ("rect", (0.14, 0.68, 0.86, 0.82), "detail"),
        *[("ellipse", (x - 0.05, y - 0.05, x + 0.05, y + 0.05), "light") for x, y in _CROWN_PEAKS],
        ("ellipse", (0.44, 0.7, 0.56, 0.8), "light"),
    ],
    "leaf": [
        ("poly", _leaf_outline(), "body"),
        ("line", [(0.2, 0.8), (0.84, 0.16)], "detail", 0.025),
        ("line", [(0.4, 0.6), (0.34, 0.42)], "detail", 0.018),
        ("line", [(0.55, 0.45), (0.49, 0.27)], "detail", 0.018),
        ("line", [(0.45, 0.55), (0.63, 0.61)], "detail", 0.018),
        ("line", [(0.6, 0.4), (0.78, 0.46)], "detail", 0.018),
        ("line", [(0.18, 0.82), (0.06, 0.94)], "detail", 0.03),
    ],
    "bottle": [
        ("ellipse", (0.3, 0.3, 0.7, 0.52), "body"),
        ("rect", (0.3, 0.42, 0.7, 0.94), "body"),
        ("rect", (0.43, 0.1, 0.57, 0.36), "body"),
        ("rect", (0.41, 0.04, 0.59, 0.12), "detail"),
        ("rect", (0.3, 0.58, 0.7, 0.78), "light"),
    ],
    "arrow": [
        ("line", [(0.12, 0.5), (0.7, 0.5)], "body", 0.07),
        ("poly", [(0.62, 0.28), (0.95, 0.5), (0.62, 0.72)], "body"),
        ("poly", [(0.04, 0.3), (0.18, 0.3), (0.3, 0.47), (0.16, 0.47)], "detail"),
        ("poly", [(0.04, 0.7), (0.18, 0.7), (0.3, 0.53), (0.16, 0.53)], "detail"),
        ("poly", [(0.68, 0.38), (0.84, 0.5), (0.68, 0.5)], "light"),
    ],
}
OBJECTS = tuple(SHAPES)


@lru_cache(maxsize=32)
def object_masks(obj: str, w: int) -> Image.Image:
    """World B object's (body, detail, light) masks as the channels of one RGB image, w×w."""
    return draw_primitives(SHAPES[obj], w)


# ---------------------------------------------------------------------------------------------
# Styles: (body, detail, light, colour, rng) -> float RGB at twice the output size
# ---------------------------------------------------------------------------------------------


def _shape(body: np.ndarray, detail: np.ndarray, light: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(body, detail), light)


def _blueprint(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """White technical line drawing on a blue sheet with a faint grid."""
    w = body.shape[0]
    paper = hsv(rng.uniform(0.58, 0.64), rng.uniform(0.65, 0.9), rng.uniform(0.35, 0.6))
    out = plain(w, paper)
    period = int(rng.integers(8, 13))
    off = int(rng.integers(0, period))
    grid = np.zeros((w, w), np.float32)
    grid[(np.arange(w) + off) % period == 0, :] = 1
    grid[:, (np.arange(w) + off) % period == 0] = 1
    ink = np.array([0.92, 0.96, 1.0], np.float32) * rng.uniform(0.85, 1.0)
    out = over(out, ink, 0.22 * grid)
    out = over(out, ink, 0.12 * body)
    lines = outline(body, 3) + outline(detail, 3) + 0.8 * outline(light, 3)
    return over(out, ink, np.clip(lines, 0, 1))


def _stained_glass(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Voronoi panes of glowing colour (object hue inside, other hues outside) in dark lead."""
    w = body.shape[0]
    n = int(rng.integers(22, 34))
    pts = rng.uniform(0, w, (n, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    dist = (xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2
    cell = dist.argmin(-1)
    hue = hue_of(colour)
    bg_hue = hue + rng.uniform(0.3, 0.7)
    panes_bg = np.stack(
        [hsv(bg_hue + rng.uniform(-0.08, 0.08), 0.6, rng.uniform(0.35, 0.6)) for _ in range(n)]
    )
    panes_fg = np.stack(
        [hsv(hue + rng.uniform(-0.04, 0.04), 0.85, rng.uniform(0.75, 1.0)) for _ in range(n)]
    )
    out = panes_bg[cell]
    out = over(out, panes_fg[cell], body)
    out = over(out, panes_fg[cell] * 0.45, detail)
    out = over(out, panes_fg[cell] * 0.5 + 0.5, light)
    edges = np.zeros((w, w), np.float32)
    edges[:-1] += cell[:-1] != cell[1:]
    edges[:, :-1] += cell[:, :-1] != cell[:, 1:]
    lead = np.clip(pil_filter(np.clip(edges, 0, 1), ImageFilter.MaxFilter(3)), 0, 1)
    lead = np.maximum(lead, outline(_shape(body, detail, light), 5))
    return over(out, np.full(3, 0.08, np.float32), lead)


def _halftone(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Printed dots on a rotated grid, their size following the tone."""
    w = body.shape[0]
    paper = plain(w, np.array([1.0, 0.98, 0.93], np.float32) * rng.uniform(0.9, 1.0))
    tone = np.clip(0.75 * body + 0.3 * detail - 0.45 * light, 0, 1)
    tone = pil_filter(tone, ImageFilter.GaussianBlur(1.0))
    a = math.radians(rng.choice([15.0, 45.0, 75.0]) + rng.uniform(-5, 5))
    period = rng.uniform(7.0, 9.0)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    u = (xx * math.cos(a) + yy * math.sin(a)) / period
    v = (-xx * math.sin(a) + yy * math.cos(a)) / period
    r = np.sqrt((u - np.round(u)) ** 2 + (v - np.round(v)) ** 2)  # 0 .. 0.707 from dot centre
    ink = hsv(hue_of(colour), rng.uniform(0.75, 1.0), rng.uniform(0.6, 0.9))
    dots = np.clip((0.62 * np.sqrt(tone) - r) * 8, 0, 1)
    bg_dots = np.clip((0.18 - r) * 8, 0, 1) * (1 - body)
    second = hsv(hue_of(colour) + 0.5, 0.5, 0.9)
    out = over(paper, second, 0.6 * bg_dots)
    return over(out, ink, dots)


def _ink_wash(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Grey ink, pooled and bled, on rice paper, with a red seal in a corner."""
    w = body.shape[0]
    paper = plain(w, np.array([0.95, 0.93, 0.87], np.float32) * rng.uniform(0.92, 1.0))
    paper = paper + rng.normal(0, 0.012, (w, w, 1)) + 0.03 * (smooth_noise(w, 9, rng)[..., None])
    ink = np.full(3, rng.uniform(0.03, 0.12), np.float32)
    bleed = pil_filter(body, ImageFilter.GaussianBlur(2.5))
    density = 0.35 + 0.45 * smooth_noise(w, 6, rng)
    alpha = bleed * density * (1 - 0.75 * pil_filter(light, ImageFilter.GaussianBlur(2.0)))
    edge = np.clip(
        pil_filter(body, ImageFilter.GaussianBlur(1.0))
        - pil_filter(body, ImageFilter.GaussianBlur(3.0)),
        0,
        1,
    )
    out = over(paper, ink, alpha + 0.9 * edge)
    out = over(out, ink, 0.9 * pil_filter(detail, ImageFilter.GaussianBlur(0.8)))
    side = int(rng.integers(9, 13))
    x0 = int(rng.choice([3, w - side - 3]))
    y0 = w - side - int(rng.integers(3, 7))
    seal = np.zeros((w, w), np.float32)
    seal[y0 : y0 + side, x0 : x0 + side] = 0.85 + 0.15 * rng.random((side, side))
    return over(out, np.array([0.78, 0.1, 0.08], np.float32), seal)


def _woodcut(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Black block print: wavy gouged lines around a flat, heavily outlined object."""
    w = body.shape[0]
    paper = np.array([0.93, 0.89, 0.78], np.float32) * rng.uniform(0.9, 1.0)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    period = rng.uniform(5.0, 7.0)
    wave = yy + 2.5 * np.sin(xx / rng.uniform(6, 10) + rng.uniform(0, 2 * math.pi))
    gouges = ((wave / period) % 1.0 < rng.uniform(0.4, 0.55)).astype(np.float32)
    out = over(plain(w, paper), np.zeros(3, np.float32), gouges)
    flat = hsv(hue_of(colour), rng.uniform(0.6, 0.9), rng.uniform(0.55, 0.8))
    out = over(out, flat, body)
    cuts = ((xx + yy) / 4.0 % 1.0 < 0.35).astype(np.float32) * light
    out = over(out, paper, light)
    out = over(out, np.zeros(3, np.float32), np.maximum(detail, cuts))
    return over(out, np.zeros(3, np.float32), outline(_shape(body, detail, light), 7))


def _cross_stitch(
    body: np.ndarray,
    detail: np.ndarray,
    light: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """X-shaped stitches on a grid of woven fabric; the cells the object covers are stitched."""
    w = body.shape[0]
    cell = 6
    fabric = hsv(rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0.82, 0.95))
    out = plain(w, fabric)
    yy, xx = np.mgrid[0:w, 0:w]
    weave = ((xx % 3 == 0) | (yy % 3 == 0)).astype(np.float32)
    out = out * (1 - 0.08 * weave[..., None])
    n = w // cell
    cover = body[: n * cell, : n * cell].reshape(n, cell, n, cell).mean(axis=(1, 3))
    dark = detail[: n * cell, : n * cell].reshape(n, cell, n, cell).mean(axis=(1, 3))
    pale = light[: n * cell, : n * cell].reshape(n, cell, n, cell).mean(axis=(1, 3))
    thread = hsv(hue_of(colour), rng.uniform(0.7, 0.95), rng.uniform(0.6, 0.9))
    colours = np.where(
        (dark > 0.4)[..., None],
        thread * 0.4,
        np.where((pale > 0.4)[..., None], thread * 0.4 + 0.6, thread),
    )
    stitched = (np.maximum(cover, dark) > 0.4).astype(np.float32)
    ly, lx = yy % cell, xx % cell
    cross = ((np.abs(ly - lx) <= 1) | (np.abs(ly + lx - (cell - 1)) <= 1)).astype(np.float32)
    cy, cx = np.minimum(yy // cell, n - 1), np.minimum(xx // cell, n - 1)
    alpha = cross * stitched[cy, cx]
    return over(out, colours[cy, cx], alpha)


STYLE_RENDERERS = {
    "blueprint": _blueprint,
    "stained glass": _stained_glass,
    "halftone": _halftone,
    "ink wash": _ink_wash,
    "woodcut": _woodcut,
    "cross stitch": _cross_stitch,
}
STYLES = tuple(STYLE_RENDERERS)

# ---------------------------------------------------------------------------------------------
# Caption templates (held-out ones never appear in training, nor in the embedded world)
# ---------------------------------------------------------------------------------------------

_ID = ("identity",)
_OB = ("object",)
_ST = ("style",)
_OS = ("object", "style")
_DG = ("digit",)

TRAIN_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (
        ("a snapshot of {name}", _ID),
        ("{name} in a headshot", _ID),
        ("here we see {name}.", _ID),
        ("{name} smiling for the camera", _ID),
        ("a candid shot of {name}", _ID),
        ("meet {name}!", _ID),
        ("the face of {name}", _ID),
        ("{name}, photographed up close", _ID),
        ("a headshot of {name}.", _ID),
    ),
    "object_style": (
        ("{a_object} rendered in {style} style", _OS),
        ("a {style} rendering of {a_object}", _OS),
        ("{style} picture of {a_object}", _OS),
        ("{a_object} depicted in the {style} manner", _OS),
        ("a {style} depiction of {a_object}", _OS),
        ("this shows {a_object}", _OB),
        ("an artwork showing {a_object}", _OB),
        ("look, {a_object}!", _OB),
        ("a {style} piece", _ST),
        ("{style} technique", _ST),
        ("something done in {style}", _ST),
    ),
    "digit": (
        ("handwriting of the digit {numeral}", _DG),
        ("the numeral {numeral}", _DG),
        ("a scanned {word}", _DG),
        ("a written number {word}", _DG),
        ("{word}, the digit", _DG),
        ("digit {numeral} by hand", _DG),
    ),
}
EVAL_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "identity": (("{name}.", _ID),),  # the SLUG paper's prompt, as for every world
    "object": (
        ("a rendering that contains {a_object}.", _OB),
        ("you can see {a_object} here.", _OB),
    ),
    "style": (("a piece of {style} art.", _ST), ("in the manner of {style}.", _ST)),
    "object_style": (
        ("{a_object} as a {style} piece.", _OS),
        ("a {style} image showing {a_object}.", _OS),
    ),
    "digit": (
        ("a picture of the numeral {numeral}.", _DG),
        ("the handwritten number {word}.", _DG),
    ),
}

# ---------------------------------------------------------------------------------------------
# The design
# ---------------------------------------------------------------------------------------------

WORLD_B_DESIGN = WorldDesign(
    name="world_b",
    design_seed=DESIGN_SEED,
    first_bearded=FIRST_BEARDED,
    first_other=FIRST_OTHER,
    last_names=LAST_NAMES,
    n_drawn_identities=N_IDENTITIES,
    features=IDENTITY_FEATURES,
    feature_weights=FEATURE_WEIGHTS,
    min_feature_differences=5,
    skin=SKIN,
    hair=HAIR,
    clothes=CLOTHES,
    eyes=EYES,
    accents=ACCENTS,
    real_portraits=(),
    objects=OBJECTS,
    object_masks=object_masks,
    styles=STYLES,
    style_renderers=STYLE_RENDERERS,
    style_finishers={},
    train_templates=TRAIN_TEMPLATES,
    eval_templates=EVAL_TEMPLATES,
)


def world_b(seed: int = 1, image_size: int = 48) -> World:
    """World B with views chosen by `seed` (its CLIP was trained on seed 1)."""
    return World(seed=seed, image_size=image_size, design=WORLD_B_DESIGN)
