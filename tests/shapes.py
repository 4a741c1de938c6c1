"""A tiny captioned world of coloured shapes and a tiny CLIP trained on it in seconds.

Used by the end-to-end and multi-concept tests: real training, real zero-shot accuracy, small
enough for CI.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from conftest import IMAGE_SIZE, tiny_clip, tiny_processor
from PIL import Image, ImageDraw

from hf_slug import SLUGConfig, ZeroShotEvaluator, ZeroShotTask, unlearn
from hf_slug.families.clip import encode_images, encode_texts
from hf_slug.stacking import StackRequest

CLASSES = {  # invented single-token-ish names -> (colour, shape)
    "zorb": ((220, 40, 40), "circle"),
    "plim": ((40, 90, 220), "square"),
    "quax": ((40, 180, 60), "triangle"),
    "drell": ((230, 200, 30), "cross"),
    "fent": ((160, 60, 200), "ring"),
    "tully": ((250, 130, 20), "bar"),
}
NAMES = list(CLASSES)
TEMPLATE = "a photo of a {}."


def draw(name: str, rng: np.random.Generator) -> Image.Image:
    colour, shape = CLASSES[name]
    bg = tuple(int(v) for v in rng.integers(0, 60, 3))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)
    d = ImageDraw.Draw(image)
    c = rng.integers(11, 21, 2)
    r = int(rng.integers(7, 11))
    jitter = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255)) for v in colour)
    box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
    if shape == "circle":
        d.ellipse(box, fill=jitter)
    elif shape == "square":
        d.rectangle(box, fill=jitter)
    elif shape == "triangle":
        d.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], fill=jitter)
    elif shape == "cross":
        d.rectangle([c[0] - r, c[1] - 2, c[0] + r, c[1] + 2], fill=jitter)
        d.rectangle([c[0] - 2, c[1] - r, c[0] + 2, c[1] + r], fill=jitter)
    elif shape == "ring":
        d.ellipse(box, outline=jitter, width=3)
    else:
        d.rectangle([c[0] - r, c[1] - 3, c[0] + r, c[1] + 3], fill=jitter)
    return image


def samples(per_class: int, seed: int, names: list[str] | None = None) -> tuple[list, list]:
    """`per_class` images of each class and their names, deterministic from `seed`."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in names or NAMES:
        for _ in range(per_class):
            images.append(draw(name, rng))
            labels.append(name)
    return images, labels


def train_shapes_clip(steps: int = 250, seed: int = 0):
    """A tiny CLIP trained contrastively on the shapes (multi-positive targets per class)."""
    model, processor = tiny_clip(seed, width=64, layers=2, projection=32), tiny_processor()
    images, labels = samples(40, seed=100 + seed)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = processor(text=[TEMPLATE.format(n) for n in NAMES], return_tensors="pt", padding=True)
    y = torch.tensor([NAMES.index(name) for name in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (48,), generator=generator)
        image_f = F.normalize(encode_images(model, pixels[idx]), dim=-1)
        text_f = F.normalize(encode_texts(model, **tokens), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * image_f @ text_f.T, y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), processor


def per_class_accuracy(model, processor, images: list, labels: list) -> dict[str, float]:
    """Zero-shot top-1 accuracy of each class's images among all class names."""
    tasks = [
        ZeroShotTask(
            name,
            [i for i, y in zip(images, labels) if y == name],
            [name] * labels.count(name),
            NAMES,
            (TEMPLATE,),
        )
        for name in NAMES
    ]
    metrics = ZeroShotEvaluator(processor, tasks)(model)
    return {name: metrics[f"{name}_acc"] for name in NAMES}


def validation_evaluator(processor, target: str, seed: int) -> ZeroShotEvaluator:
    """The search's evaluator for `target`: its images and the others' from seed `seed + 2`."""
    others = [n for n in NAMES if n != target]
    val_forget, _ = samples(30, seed=seed + 2, names=[target])
    val_retain, val_labels = samples(6, seed=seed + 2, names=others)
    return ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask("forget", val_forget, [target] * len(val_forget), NAMES, (TEMPLATE,)),
            ZeroShotTask("retain", val_retain, val_labels, NAMES, (TEMPLATE,)),
        ],
    )


def shape_request(processor, target: str, seed: int = 1) -> StackRequest:
    """What SLUG gets for one class: train-like forget/retain sets, a validation evaluator.

    Seeds `seed`, `seed + 1`, `seed + 2` draw the forget, retain and validation images, so
    test images drawn from other seeds are unseen by the search.
    """
    others = [n for n in NAMES if n != target]
    forget_images, _ = samples(16, seed=seed, names=[target])
    retain_images, retain_labels = samples(6, seed=seed + 1, names=others)
    return StackRequest(
        (forget_images, [TEMPLATE.format(target)] * 16),
        (retain_images, [TEMPLATE.format(n) for n in retain_labels]),
        SLUGConfig(concept=target, utility_tolerance=0.10),
        validation_evaluator(processor, target, seed),
    )


def unlearn_shape(model, processor, target: str, seed: int = 1, **kwargs):
    """SLUG on one class with `shape_request`'s data and evaluator."""
    r = shape_request(processor, target, seed)
    return unlearn(
        model,
        processor,
        r.forget,
        r.retain,
        r.config,
        evaluator=r.evaluator,
        progress=False,
        **kwargs,
    )
