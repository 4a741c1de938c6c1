"""The demo world's objects (primitives drawn as masks), painting styles and digits.

A style renderer paints an object's (body, detail, light) masks at twice the output size; a
finisher post-processes a style's downsampled image. Digits are scikit-learn's, partitioned
between the splits once for all designs.

Example:
    >>> masks = _object_masks("house", 96)
    >>> masks.size, masks.mode
    ((96, 96), 'RGB')
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .concepts import _DESIGN_SEED, SPLITS
from .draw_views import smooth_noise

Array = np.ndarray  # float: masks (H, W), colours (3,) and RGB images (H, W, 3) in [0, 1]
Rng = np.random.Generator
# (body, detail, light) masks, object colour, rng -> float RGB image at twice the output size
StyleFn = Callable[[Array, Array, Array, Array, Rng], Array]
# float RGB image at the output size, rng -> the style's finished image (e.g. pixelation)
FinishFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


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

    Example:
        >>> draw_primitives([("rect", (0.0, 0.0, 0.5, 1.0), "body")], 4).getpixel((0, 0))
        (255, 0, 0)
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


def pil_filter(mask: np.ndarray, filt: ImageFilter.Filter) -> np.ndarray:
    image = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8), "L").filter(filt)
    return np.asarray(image, np.float32) / 255.0


def outline(mask: np.ndarray, width: int = 3) -> np.ndarray:
    return np.clip(
        pil_filter(mask, ImageFilter.MaxFilter(width))
        - pil_filter(mask, ImageFilter.MinFilter(width)),
        0,
        1,
    )


def over(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.clip(alpha, 0, 1)[..., None]
    return base * (1 - a) + colour * a


def _flat(
    bg: np.ndarray, body: np.ndarray, detail: np.ndarray, light: np.ndarray, colour: np.ndarray
) -> np.ndarray:
    out = over(bg, colour, body)
    out = over(out, colour * 0.4, detail)
    return over(out, colour + (1 - colour) * 0.6, light)


def plain(w: int, colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.float32), (w, w, 3)).copy()


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def hue_of(colour: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*colour)[0]


def _watercolor(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    paper = plain(w, (0.96, 0.94, 0.88)) + rng.normal(0, 0.015, (w, w, 1))
    wash = colour + (1 - colour) * rng.uniform(0.15, 0.35)
    soft = pil_filter(body, ImageFilter.GaussianBlur(2.0))
    edge = np.clip(
        pil_filter(body, ImageFilter.GaussianBlur(1.0))
        - pil_filter(body, ImageFilter.GaussianBlur(3.5)),
        0,
        1,
    )
    alpha = soft * (0.45 + 0.35 * smooth_noise(w, 5, rng)) + 1.2 * edge
    pale = pil_filter(light, ImageFilter.GaussianBlur(1.5))
    alpha *= 1 - 0.7 * pale
    out = over(paper, wash, alpha)
    out = over(out, wash + (1 - wash) * 0.4, 0.45 * pale)
    out = over(out, colour * 0.5, 0.75 * pil_filter(detail, ImageFilter.GaussianBlur(1.5)))
    bloom = smooth_noise(w, 7, rng)[..., None]
    return out * (0.96 + 0.06 * bloom)


def _pixel_art(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    bg = plain(w, hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.95)))
    saturated = hsv(hue_of(colour), 0.85, 0.95)
    out = _flat(bg, body, detail, light, saturated)
    shape = np.maximum(np.maximum(body, detail), light)
    return over(out, np.zeros(3), outline(shape, 5))


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


def _sketch(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    paper = plain(w, np.array([1.0, 0.99, 0.95]) * rng.uniform(0.92, 1.0))
    shape = np.maximum(np.maximum(body, detail), light)
    yy, xx = np.mgrid[0:w, 0:w]
    sign = 1 if rng.random() < 0.5 else -1
    period = int(rng.integers(5, 8))
    hatch = ((xx + sign * yy) % period < 1.5).astype(np.float32)
    cross = ((xx - sign * yy) % period < 1.5).astype(np.float32)
    ink = outline(shape, 3) + 0.5 * outline(np.roll(shape, (1, -1), axis=(0, 1)), 3)
    ink = ink + 0.45 * hatch * body * (1 - light) + 0.6 * np.maximum(hatch, cross) * detail
    pencil = np.full(3, rng.uniform(0.12, 0.35), np.float32)
    return over(paper, pencil, np.clip(ink, 0, 1) * rng.uniform(0.75, 1.0))


def _neon(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    bg = plain(w, hsv(rng.uniform(0.55, 0.8), rng.uniform(0.3, 0.8), rng.uniform(0.02, 0.12)))
    glow_colour = hsv(hue_of(colour), rng.uniform(0.7, 1.0), 1.0)
    lines = np.clip(outline(body, 5) + outline(detail, 3) + outline(light, 3), 0, 1)
    glow = pil_filter(lines, ImageFilter.GaussianBlur(3.0)) * 1.6
    out = bg + glow[..., None] * glow_colour + 0.1 * body[..., None] * glow_colour
    return over(out, glow_colour + (1 - glow_colour) * 0.6, lines)


def _mosaic(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    bg = plain(w, hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.8, 0.97)))
    return _flat(bg, body, detail, light, hsv(hue_of(colour), rng.uniform(0.7, 1.0), 0.75))


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


def _striped(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    bg = plain(w, hsv(rng.random(), rng.uniform(0.0, 0.3), rng.choice([0.15, 0.9])))
    a = rng.uniform(0, math.pi)
    period = rng.uniform(7, 11)
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    phase = (xx * math.cos(a) + yy * math.sin(a)) / period
    stripes = (np.sin(2 * math.pi * phase) > 0).astype(np.float32)[..., None]
    second = hsv(hue_of(colour) + 0.5, 0.2, 1.0) if rng.random() < 0.5 else np.ones(3)
    pattern = colour * stripes + second * (1 - stripes)
    a_body = np.clip(body, 0, 1)[..., None]
    out = bg * (1 - a_body) + pattern * a_body
    out = over(out, colour * 0.35, detail)
    out = over(out, pattern * 0.5 + 0.5, light)
    shape = np.maximum(np.maximum(body, detail), light)
    return over(out, colour * 0.3, outline(shape, 3))


def _pastel(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    bg = plain(w, hsv(rng.random(), rng.uniform(0.1, 0.25), rng.uniform(0.93, 1.0)))
    soft = hsv(hue_of(colour), rng.uniform(0.25, 0.45), rng.uniform(0.9, 1.0))
    blur = ImageFilter.GaussianBlur(1.2)
    out = over(bg, soft, pil_filter(body, blur))
    out = over(out, soft * 0.8, pil_filter(detail, blur))
    return over(out, soft * 0.5 + 0.5, pil_filter(light, blur))


def _charcoal(body: Array, detail: Array, light: Array, colour: Array, rng: Rng) -> Array:
    w = body.shape[0]
    paper = plain(w, np.full(3, rng.uniform(0.72, 0.88))) + rng.normal(0, 0.04, (w, w, 1))
    grain = rng.random((w, w)).astype(np.float32)
    smudge = pil_filter(np.maximum(body, detail), ImageFilter.GaussianBlur(4.0))
    soft = pil_filter(body, ImageFilter.GaussianBlur(1.2)) * (1 - 0.6 * light)
    tone = rng.uniform(0.1, 0.3)
    out = over(paper, np.full(3, tone), 0.3 * smudge)
    out = over(out, np.full(3, tone), soft * (0.55 + 0.45 * grain))
    pale = pil_filter(light, ImageFilter.GaussianBlur(1.2)) * (0.5 + 0.5 * grain)
    out = over(out, np.full(3, tone + 0.3), 0.8 * pale)
    out = over(out, np.full(3, 0.05), pil_filter(detail, ImageFilter.GaussianBlur(1.0)) * 0.9)
    return over(out, np.full(3, 0.05), outline(body, 3) * (0.5 + 0.5 * grain))


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
