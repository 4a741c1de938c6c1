"""The demo world's people: drawn identities (`_draw_person`) and the two real portraits.

Example:
    >>> import numpy as np
    >>> from hf_slug.demo.design import identity_designs
    >>> person = _draw_person(identity_designs()[0], 96, np.random.default_rng(0))
    >>> person.size, person.mode
    ((96, 96), 'RGBA')
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .concepts import HAIR
from .design import EMBEDDED_DESIGN, IdentityDesign, WorldDesign

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
