"""SLUG's two losses on CLIP embeddings (SLUG.md §2).

Example:
    >>> import torch
    >>> v = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[1.0, 0.0]])
    >>> float(forget_loss(v, t))
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forget_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """Mean over pairs of `1 − cos(v_i, t_i)`: ascending it pulls each image from its caption."""
    return (1.0 - F.cosine_similarity(image_embeds, text_embeds, dim=-1)).mean()


def retain_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """The symmetric CLIP contrastive loss (InfoNCE) with the model's (log-space) logit scale."""
    image_embeds = F.normalize(image_embeds, dim=-1)
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
