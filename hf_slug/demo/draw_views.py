"""Shared view helpers of the demo world: backgrounds, lighting and noise, affine transforms.

Images are float RGB arrays in [0, 1], shape (H, W, 3), until `_to_image` makes them PIL images.
Every helper draws its random numbers from the `rng` it is given, in a fixed order.

Example:
    >>> import numpy as np
    >>> _background(8, "train", np.random.default_rng(0)).shape
    (8, 8, 3)
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageFilter

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
        t = smooth_noise(size, 4, rng)
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


def smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
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
