"""Iterative and importance-based unlearning baselines for CLIP, on SLUG's own losses and data.

* **GA** — gradient ascent on the forget loss (SLUG's `1 − cos(v, t)`, so the direction is the
  one SLUG takes, applied iteratively to every parameter).
* **GAFT** — each iteration: one ascent step on a forget batch, then one fine-tuning step on a
  retain batch (SLUG's CLIP contrastive loss).
* **MaskGAFT** — the SLUG paper's "SalUn" variant: GAFT on the salient weights only, the top
  `saliency` fraction of |∇L_f| entries at θ⁰ (one global threshold over every parameter's
  entries with a non-zero forget gradient — the embeddings of words the forget captions never
  use have none); the others never move. (Named "SalUn" in results written before the real
  SalUn was added.)
* **SalUn** — SalUn's random-label forgetting (Fan et al., 2024) on the same saliency mask: each
  forget pair's caption has the target's name replaced by a random *other* candidate label of
  its kind (drawn once per pair, as SalUn relabels its forget set once), and each iteration takes
  one *descent* step of the CLIP contrastive loss on a relabelled forget batch, then one on a
  retain batch; only the masked entries move. Captions that do not name the target (an object's
  scene captioned by its style) keep their caption: their template has no slot to relabel.
* **FT** — fine-tuning on the retain set only (forgetting by catastrophic interference).
* **SSD** — selective synaptic dampening (Foster et al., 2023): diagonal Fisher importances
  `F_f` (forget set, forget loss) and `F_r` (retain set, retain loss) from squared batch
  gradients; every entry with `F_f > α F_r` is multiplied by `min(λ F_r / F_f, 1)`. λ stays at
  SSD's default 1 and α is searched like SLUG's step: start at 10, double while the target is met
  (fewer entries dampened), halve while it is not, then bisect geometrically; the largest α that
  meets the target is kept.

All iterative methods use AdamW (no weight decay) on every parameter of both towers and check
the val forget accuracy after every iteration, stopping as soon as it reaches the target.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_slug.data import batches, load_pairs
from hf_slug.losses import forget_loss, retain_loss
from hf_slug.towers import encode_images, encode_texts

ITERATIVE = ("GA", "GAFT", "SalUn", "FT", "MaskGAFT")
MASKED = ("SalUn", "MaskGAFT")  # the methods that move only the saliency mask's entries
Batch = dict[str, torch.Tensor]
StopCheck = Callable[[nn.Module], float]  # the model's val forget accuracy (0..1)


@dataclass
class IterativeConfig:
    """One iterative run: method, learning rate and budget (iterations)."""

    method: str
    lr: float = 1e-4
    max_steps: int = 200  # iterations; GAFT/MaskGAFT/SalUn take two steps in each
    batch_size: int = 32
    saliency: float = 0.5  # SalUn/MaskGAFT: fraction of entries that may move
    target: float = 0.0  # stop when the val forget accuracy is at or below this
    seed: int = 0
    concept: str | None = None  # SalUn: the target's name in the forget captions
    candidates: tuple[str, ...] = ()  # SalUn: the labels of its kind (random labels come from)

    def __post_init__(self) -> None:
        if self.method not in ITERATIVE:
            raise ValueError(f"method must be one of {ITERATIVE}, got {self.method!r}.")
        if self.method == "SalUn" and (
            not self.concept or not [c for c in self.candidates if c != self.concept]
        ):
            raise ValueError(
                "SalUn relabels forget captions: give IterativeConfig(concept=the target's name, "
                "candidates=the labels of its kind, at least one other than the target)."
            )


@dataclass
class SSDConfig:
    """SSD's importances and its α search (λ fixed)."""

    alpha: float = 10.0  # the first α tried
    lam: float = 1.0
    batch_size: int = 8  # Fisher from squared gradients of batches this size
    max_evaluations: int = 10
    target: float = 0.0
    rel_tolerance: float = 0.1  # stop bisecting when the bracket's ratio is below 1 + this


@dataclass
class Outcome:
    """What a baseline did: whether it reached the target, its work, and its history."""

    method: str
    reached: bool
    steps: int  # iterations (iterative) or α trials (SSD)
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reached": self.reached,
            "steps": self.steps,
            "history": self.history,
            "settings": self.settings,
            "timings_s": self.timings,
        }


# -- shared pieces -----------------------------------------------------------------------------
def preprocess(pairs: Sequence[tuple], processor: Any, batch_size: int) -> list[Batch]:
    """Tokenise and preprocess once; iterative methods reuse the batches every epoch."""
    return [inputs for _, inputs in batches(load_pairs(list(pairs)), processor, batch_size)]


def loss_on(model: nn.Module, batch: Batch, kind: str) -> torch.Tensor:
    """SLUG's forget loss (`kind="forget"`) or CLIP contrastive loss (`"retain"`) on a batch."""
    images = encode_images(model, batch["pixel_values"])
    texts = encode_texts(model, batch["input_ids"], batch.get("attention_mask"))
    if kind == "forget":
        return forget_loss(images, texts)
    return retain_loss(images, texts, model.logit_scale)


def _all_trainable(model: nn.Module) -> list[nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(True)
    return list(model.parameters())


def saliency_mask(
    model: nn.Module, forget: list[Batch], fraction: float
) -> dict[nn.Parameter, torch.Tensor]:
    """SalUn's mask: 1 for the `fraction` of touched entries with the largest |∇L_f| at θ⁰."""
    params = _all_trainable(model)
    grads = [torch.zeros_like(p) for p in params]
    for batch in forget:
        n = batch["pixel_values"].shape[0]
        got = torch.autograd.grad(loss_on(model, batch, "forget"), params, allow_unused=True)
        for acc, g in zip(grads, got):
            if g is not None:
                acc.add_(g, alpha=n)
    # Most of CLIP's entries are token embeddings of words the forget captions never use: their
    # gradient is exactly 0, so "top 50 % of all entries" would keep every touched entry and
    # SalUn would equal GAFT. The fraction is taken over the entries the forget set touches.
    flat = torch.cat([g.abs().flatten() for g in grads])
    flat = flat[flat > 0]
    keep = max(1, int(round(fraction * flat.numel())))
    threshold = torch.kthvalue(flat, flat.numel() - keep + 1).values
    del flat
    return {p: ((g.abs() >= threshold) & (g != 0)).to(p.dtype) for p, g in zip(params, grads)}


def relabel_captions(
    pairs: Sequence[tuple], concept: str, candidates: Sequence[str], seed: int = 0
) -> list[tuple[Any, str]]:
    """SalUn's random labels: each caption with `concept` replaced by a random other candidate.

    Example:
        >>> relabel_captions([(None, "a photo of Ada")], "Ada", ["Ada", "Bo"])
        [(None, 'a photo of Bo')]
    """
    others = [c for c in candidates if c != concept]
    if not others:
        raise ValueError(f"no candidate label other than {concept!r} to relabel with.")
    pattern = re.compile(rf"\b{re.escape(concept)}\b", re.IGNORECASE)
    rng = random.Random(seed)
    out, named = [], 0
    for image, caption, *_ in pairs:
        if pattern.search(caption):
            named += 1
            label = rng.choice(others)
            caption = pattern.sub(lambda _m, label=label: label, caption)
        out.append((image, caption))
    if not named:
        raise ValueError(
            f"no forget caption names {concept!r}: SalUn needs the target's name in the captions "
            "it relabels (check IterativeConfig.concept)."
        )
    return out


# -- iterative methods -------------------------------------------------------------------------
def run_iterative(
    model: nn.Module,
    processor: Any,
    forget: Sequence[tuple],
    retain: Sequence[tuple],
    stop_check: StopCheck,
    config: IterativeConfig,
    *,
    progress: bool = True,
) -> Outcome:
    """Train `model` in place with GA/GAFT/MaskGAFT/SalUn/FT until the val forget accuracy
    reaches the target or `config.max_steps` iterations are spent."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    torch.manual_seed(config.seed)
    model.eval()  # CLIP has no batch norm; eval mode only turns dropout off (it is 0 here)
    ascend = config.method in ("GA", "GAFT", "MaskGAFT")
    relabel = config.method == "SalUn"
    descend = config.method in ("GAFT", "MaskGAFT", "SalUn", "FT")
    masked_method = config.method in MASKED
    forget_batches = (
        preprocess(forget, processor, config.batch_size) if ascend or masked_method else []
    )
    retain_batches = preprocess(retain, processor, config.batch_size) if descend else []
    relabelled = (
        relabel_captions(forget, config.concept or "", config.candidates, config.seed)
        if relabel
        else []
    )
    relabel_batches = preprocess(relabelled, processor, config.batch_size) if relabel else []
    timings["preprocess"] = time.perf_counter() - clock

    start = time.perf_counter()
    mask = saliency_mask(model, forget_batches, config.saliency) if masked_method else {}
    timings["saliency"] = time.perf_counter() - start
    masked = sum(int(m.sum()) for m in mask.values()) / max(
        1, sum(m.numel() for m in mask.values())
    )
    params = _all_trainable(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)

    def step(batch: Batch, kind: str, sign: float) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_on(model, batch, kind)
        (sign * loss).backward()
        for p, m in mask.items():
            if p.grad is not None:
                p.grad.mul_(m)
        optimizer.step()
        return float(loss.detach())

    forget_iter: Iterator[Batch] = cycle(forget_batches)
    relabel_iter: Iterator[Batch] = cycle(relabel_batches)
    retain_iter: Iterator[Batch] = cycle(retain_batches)
    history: list[dict[str, float]] = []
    reached, steps = False, 0
    train_time = check_time = 0.0
    bar = tqdm(range(1, config.max_steps + 1), desc=config.method, disable=not progress)
    for steps in bar:
        start = time.perf_counter()
        record: dict[str, float] = {"step": steps}
        if ascend:
            record["forget_loss"] = step(next(forget_iter), "forget", -1.0)
        if relabel:  # descent on the contrastive loss of the relabelled forget pairs
            record["relabelled_loss"] = step(next(relabel_iter), "retain", 1.0)
        if descend:
            record["retain_loss"] = step(next(retain_iter), "retain", 1.0)
        train_time += time.perf_counter() - start
        start = time.perf_counter()
        record["val_forget_acc"] = stop_check(model)
        check_time += time.perf_counter() - start
        history.append(record)
        bar.set_postfix(acc=f"{record['val_forget_acc']:.3f}")
        if record["val_forget_acc"] <= config.target + 1e-9:
            reached = True
            break
    optimizer.zero_grad(set_to_none=True)
    timings.update(train=train_time, stop_checks=check_time, total=time.perf_counter() - clock)
    settings = {
        "lr": config.lr,
        "max_steps": config.max_steps,
        "batch_size": config.batch_size,
        "optimizer": "AdamW(weight_decay=0)",
        **({"saliency": config.saliency, "trainable_fraction": masked} if masked_method else {}),
        **(
            {"relabelled": [caption for _, caption in relabelled], "seed": config.seed}
            if relabel
            else {}
        ),
    }
    return Outcome(config.method, reached, steps, history, settings, timings)


# -- SSD ---------------------------------------------------------------------------------------
def fisher_diagonal(model: nn.Module, batches_: list[Batch], kind: str) -> list[torch.Tensor]:
    """Mean over batches of the squared batch gradient of every parameter (SSD's importance)."""
    params = _all_trainable(model)
    fisher = [torch.zeros_like(p) for p in params]
    for batch in batches_:
        got = torch.autograd.grad(loss_on(model, batch, kind), params, allow_unused=True)
        for acc, g in zip(fisher, got):
            if g is not None:
                acc.add_(g.square())
    return [f / max(1, len(batches_)) for f in fisher]


def dampening(
    f_forget: torch.Tensor, f_retain: torch.Tensor, alpha: float, lam: float
) -> torch.Tensor:
    """SSD's multiplier: `min(λ F_r / F_f, 1)` where `F_f > α F_r`, else 1."""
    selected = f_forget > alpha * f_retain
    factor = (lam * f_retain / f_forget.clamp_min(1e-30)).clamp(max=1.0)
    return torch.where(selected, factor, torch.ones_like(factor))


def run_ssd(
    model: nn.Module,
    processor: Any,
    forget: Sequence[tuple],
    retain: Sequence[tuple],
    stop_check: StopCheck,
    config: SSDConfig,
    *,
    progress: bool = True,
) -> Outcome:
    """Dampen `model` in place with the largest α (≤ `max_evaluations` tries) meeting the target.

    If no α met it, the model is left at the smallest α tried.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model.eval()
    forget_batches = preprocess(forget, processor, config.batch_size)
    retain_batches = preprocess(retain, processor, config.batch_size)
    f_forget = fisher_diagonal(model, forget_batches, "forget")
    f_retain = fisher_diagonal(model, retain_batches, "retain")
    for p in model.parameters():
        p.requires_grad_(False)
    timings["importances"] = time.perf_counter() - clock

    start = time.perf_counter()
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]

    def set_alpha(alpha: float) -> None:
        with torch.no_grad():
            for p, p0, ff, fr in zip(params, originals, f_forget, f_retain):
                p.copy_(p0 * dampening(ff, fr, alpha, config.lam))

    history: list[dict[str, float]] = []
    good: float | None = None  # the largest α known to meet the target
    bad: float | None = None  # the smallest α known to miss it
    alpha = config.alpha
    bar = tqdm(range(config.max_evaluations), desc="SSD α search", disable=not progress)
    for _ in bar:
        set_alpha(alpha)
        accuracy = stop_check(model)
        met = accuracy <= config.target + 1e-9
        history.append({"alpha": alpha, "val_forget_acc": accuracy, "met": float(met)})
        bar.set_postfix(alpha=f"{alpha:.3g}", acc=f"{accuracy:.3f}")
        if met:
            good = alpha if good is None else max(good, alpha)
        else:
            bad = alpha if bad is None else min(bad, alpha)
        if good is not None and bad is not None:
            if bad / good <= 1 + config.rel_tolerance:
                break
            alpha = math.sqrt(good * bad)
        else:
            alpha = alpha * 2 if good is not None else alpha / 2
    applied = good if good is not None else min(h["alpha"] for h in history)
    set_alpha(applied)
    changed = sum(
        int((dampening(ff, fr, applied, config.lam) != 1).sum())
        for ff, fr in zip(f_forget, f_retain)
    )
    timings.update(search=time.perf_counter() - start, total=time.perf_counter() - clock)
    settings = {
        "alpha_start": config.alpha,
        "alpha": applied,
        "lambda": config.lam,
        "fisher_batch_size": config.batch_size,
        "max_evaluations": config.max_evaluations,
        "dampened_entries": changed,
    }
    return Outcome("SSD", good is not None, len(history), history, settings, timings)


def changed_parameters(model: nn.Module, originals: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Tensors and entries that differ from `originals`, and their fp32 bytes."""
    tensors = entries = nbytes = 0
    for name, p in model.named_parameters():
        diff = int((p.detach() != originals[name]).sum())
        if diff:
            tensors += 1
            entries += diff
            nbytes += p.numel() * p.element_size()
    return {"changed_tensors": tensors, "changed_entries": entries, "changed_tensor_bytes": nbytes}
