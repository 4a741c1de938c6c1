"""A zero-shot task, and how its images are scored against its labels' prompts.

Example:
    >>> from PIL import Image
    >>> task = ZeroShotTask("forget", [Image.new("RGB", (4, 4))], ["Ada"], ["Ada", "Bob"],
    ...                     templates=("{}.", "a photo of {}."))
    >>> task.texts()
    (['Ada.', 'a photo of Ada.', 'Bob.', 'a photo of Bob.'], [0, 0, 1, 1])
    >>> task.in_utility
    False
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from .base import FORGET_TASK

SCORINGS = ("mean", "any")


@dataclass
class ZeroShotTask:
    """Images with their true labels, classified among `label_names` by prompt ensembles.

    Metrics are keyed `accuracy_key(name)` (`{name}_acc`, top-1) and `top5_key(name)`
    (`{name}_acc@5`, top-5).

    `scoring="mean"` averages each label's prompts into one embedding (the CLIP convention);
    `scoring="any"` counts an image as recognised when *any single* phrasing ranks its label
    first (every label needs the same number of prompts, aligned by position) — a forget
    criterion that each phrasing must fail. With `margin` > 0 an image also counts as recognised
    while its label's cosine trails the best other label's by less than `margin`.

    `track_drift=True` adds the task to `PROMPT_DRIFT`: during a text-tower search, how far the
    edit moves the prompts of the labels none of its images has (the other names, for a forget
    task) from where the unit's search began.
    """

    name: str
    images: Sequence[Image.Image]
    labels: Sequence[str]
    label_names: Sequence[str]
    templates: Sequence[str] = ("{}",)
    prompts: Mapping[str, Sequence[str]] | None = None  # label -> prompts; overrides templates
    counts_for_utility: bool = True
    scoring: str = "mean"
    margin: float = 0.0
    track_drift: bool = False

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ConfigError(f"task {self.name!r}: scoring must be one of {SCORINGS}.")
        if not isinstance(self.margin, (int, float)) or not 0 <= self.margin < 2:
            raise ConfigError(
                f"task {self.name!r}: margin must be a cosine difference in [0, 2), got "
                f"{self.margin!r}; 0 keeps the plain top-1."
            )
        if self.scoring == "any":
            counts = {len(self.texts_of(label)) for label in self.label_names}
            if len(counts) != 1:
                raise ConfigError(
                    f"task {self.name!r}: scoring='any' compares phrasings position by position, "
                    "so every label needs the same number of prompts; use templates=."
                )
        unknown = sorted(set(self.labels) - set(self.label_names))
        if unknown:
            raise ValueError(f"task {self.name!r}: labels {unknown[:3]} are not in label_names.")
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"task {self.name!r}: {len(self.images)} images, {len(self.labels)} labels."
            )

    @property
    def in_utility(self) -> bool:
        """Whether `utility` averages this task's top-1: `counts_for_utility`, and never for the
        task named `FORGET_TASK` (saved task files mark that one `counts_for_utility=True`)."""
        return self.counts_for_utility and self.name != FORGET_TASK

    def texts_of(self, label: str) -> list[str]:
        """The prompts of one label."""
        return list(
            self.prompts[label] if self.prompts else [t.format(label) for t in self.templates]
        )

    def bystanders(self) -> list[int]:
        """Indices into `label_names` of the labels that no image has (their prompts' drift is
        what `track_drift` measures)."""
        own = set(self.labels)
        return [i for i, label in enumerate(self.label_names) if label not in own]

    def texts(self) -> tuple[list[str], list[int]]:
        """Every prompt, and the label index each belongs to."""
        texts, owners = [], []
        for i, label in enumerate(self.label_names):
            prompts = self.texts_of(label)
            texts += prompts
            owners += [i] * len(prompts)
        return texts, owners


def _label_embeddings(text_f: torch.Tensor, owners: torch.Tensor, n_labels: int) -> torch.Tensor:
    sums = torch.zeros(n_labels, text_f.shape[1]).index_add_(0, owners, text_f)
    return F.normalize(sums, dim=-1)


def _logits(
    image_f: torch.Tensor, text_f: torch.Tensor, owners: torch.Tensor, task: ZeroShotTask
) -> torch.Tensor:
    """(images, views, labels) cosines: one view (the averaged prompts) under `scoring="mean"`,
    one per phrasing under `"any"` (the labels' prompts are stored label by label)."""
    n_labels = len(task.label_names)
    if task.scoring == "mean":
        return (image_f @ _label_embeddings(text_f, owners, n_labels).T)[:, None]
    return (image_f @ text_f.T).view(len(image_f), n_labels, -1).transpose(1, 2)


def _boosted(logits: torch.Tensor, truth: torch.Tensor, margin: float) -> torch.Tensor:
    """`logits` with each image's own label raised by `margin`."""
    own = logits.gather(2, truth.view(-1, 1, 1).expand(-1, logits.shape[1], 1))
    return logits.scatter(2, truth.view(-1, 1, 1).expand_as(own), own + margin)


def _view_hits(boosted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(images, views): whether each view ranks the image's own label first."""
    return boosted.topk(min(5, boosted.shape[-1]), dim=-1).indices[..., 0] == truth[:, None]


def _accuracy(
    image_f: torch.Tensor,
    text_f: torch.Tensor,
    owners: torch.Tensor,
    truth: torch.Tensor,
    task: ZeroShotTask,
) -> tuple[float, float]:
    """Top-1 and top-5 recognition rates under the task's scoring and margin."""
    boosted = _boosted(_logits(image_f, text_f, owners, task), truth, task.margin)
    top = boosted.topk(min(5, len(task.label_names)), dim=-1).indices  # (images, views, k)
    hit1 = _view_hits(boosted, truth).any(dim=1)
    hit5 = (top == truth[:, None, None]).any(dim=-1).any(dim=1)
    return hit1.float().mean().item(), hit5.float().mean().item()


def _rate(count: int, n: int) -> float:
    """`count` of `n` as `_accuracy` reports it (the same float32 mean)."""
    return (torch.arange(n) < count).float().mean().item()
