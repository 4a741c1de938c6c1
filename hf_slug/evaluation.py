"""Evaluators for the step search and for reports: zero-shot classification on CLIP.

An evaluator is called with the model and returns named metrics. The built-in
`ZeroShotEvaluator` is made cheap for the search: between `begin(model, names)` and `end()` it
keeps the features of the tower that is not edited, and for the edited tower the hidden states
entering the edited block, so a trial recomputes only the blocks from the edit upwards.

Example:
    >>> task = ZeroShotTask("forget", images, ["Ada Byron"] * len(images),  # doctest: +SKIP
    ...                     label_names=names, templates=("{}.",))
    >>> evaluator = ZeroShotEvaluator(processor, [task, retain_task])  # doctest: +SKIP
    >>> evaluator(model)  # doctest: +SKIP
    {'forget_acc': 0.93, 'forget_acc@5': 1.0, 'retain_acc': 0.88, 'retain_acc@5': 0.99, ...}
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data import PROCESSOR_KWARGS
from .errors import ConfigError
from .families.clip import Tower, block_index, encode_images, encode_texts, find_towers

Metrics = dict[str, float]


class Evaluator:
    """Base class: `__call__(model) -> metrics`. `begin`/`end` bracket trials on one unit."""

    def __call__(self, model: nn.Module) -> Metrics:
        raise NotImplementedError

    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        """Called at the original weights before trials that edit only `names`."""

    def end(self) -> None:
        """Called after the trials of one unit."""

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """At least the named `metrics`; the search asks only for the forget metric on most
        trials. The default computes everything; evaluators that can compute less override it."""
        return self(model)


class CallableEvaluator(Evaluator):
    """Wrap any `fn(model) -> dict[str, float]` as an evaluator."""

    def __init__(self, fn: Callable[[nn.Module], Mapping[str, float]]):
        self.fn = fn

    def __call__(self, model: nn.Module) -> Metrics:
        metrics = self.fn(model)
        if not isinstance(metrics, Mapping):
            raise ConfigError(
                f"the evaluator returned a {type(metrics).__name__}, not a dict of metrics: make "
                "it return e.g. {'forget_acc': 0.9, 'utility': 0.8}."
            )
        out = {}
        for key, value in metrics.items():
            try:
                out[str(key)] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"the evaluator's metric {key!r} is {value!r}, not a number: return floats."
                ) from None
        return out


def as_evaluator(evaluator: Evaluator | Callable[[nn.Module], Mapping[str, float]]) -> Evaluator:
    """An `Evaluator` as is, or a plain callable wrapped in `CallableEvaluator`."""
    if isinstance(evaluator, Evaluator):
        return evaluator
    if callable(evaluator):
        return CallableEvaluator(evaluator)
    raise TypeError(
        f"an evaluator must be an hf_slug Evaluator or a callable model -> dict, got "
        f"{type(evaluator).__name__}."
    )


@dataclass
class ZeroShotTask:
    """Images with their true labels, classified among `label_names` by prompt ensembles.

    Metrics are named `{name}_acc` (top-1) and `{name}_acc@5` (top-5).

    `scoring="mean"` averages each label's prompts into one embedding (the CLIP convention);
    `scoring="any"` counts an image as recognised when *any single* phrasing ranks its label
    first (every label needs the same number of prompts, aligned by position) — a forget
    criterion that each phrasing must fail. With `margin` > 0 an image also counts as recognised
    while its label's cosine trails the best other label's by less than `margin`.
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

    def texts_of(self, label: str) -> list[str]:
        """The prompts of one label."""
        return list(
            self.prompts[label] if self.prompts else [t.format(label) for t in self.templates]
        )

    def texts(self) -> tuple[list[str], list[int]]:
        """Every prompt, and the label index each belongs to."""
        texts, owners = [], []
        for i, label in enumerate(self.label_names):
            prompts = self.texts_of(label)
            texts += prompts
            owners += [i] * len(prompts)
        return texts, owners


@dataclass
class _Inputs:
    """One modality's preprocessed batches and, during a search, its caches: the features (when
    the other tower is edited) or each batch's output of the block below the edit."""

    kind: str
    batches: list[dict[str, torch.Tensor]]
    base: torch.Tensor | None = None
    replay: list[Any] = field(default_factory=list)


class ZeroShotEvaluator(Evaluator):
    """Top-1/top-5 zero-shot accuracy per task, plus `utility`: the mean top-1 of utility tasks.

    `utility` averages the tasks with `counts_for_utility=True` (by default all but one named
    `forget`).
    """

    def __init__(self, processor: Any, tasks: Sequence[ZeroShotTask], batch_size: int = 64):
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}.")
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self._images: list[_Inputs] = []
        self._texts: list[_Inputs] = []
        self._owners: list[torch.Tensor] = []
        self._truth: list[torch.Tensor] = []
        for task in self.tasks:
            images = [
                processor(images=list(task.images[i : i + batch_size]), return_tensors="pt")
                for i in range(0, len(task.images), batch_size)
            ]
            texts, owners = task.texts()
            tokens = [
                dict(processor(text=texts[i : i + batch_size], **_TEXT_KWARGS))
                for i in range(0, len(texts), batch_size)
            ]
            self._images.append(_Inputs("vision", [dict(b) for b in images]))
            self._texts.append(_Inputs("text", tokens))
            self._owners.append(torch.tensor(owners))
            index = {n: i for i, n in enumerate(task.label_names)}
            self._truth.append(torch.tensor([index[label] for label in task.labels]))
        self._edit: tuple[str, int] | None = None

    # -- the search protocol -------------------------------------------------------------
    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        tower = _tower_for(model, names[0])
        first_block = min((block_index(n) or (len(tower.layers), ""))[0] for n in names)
        self._edit = (tower.kind, first_block)
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []  # filled by the first trial that needs them

    def end(self) -> None:
        self._edit = None
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []

    def __call__(self, model: nn.Module) -> Metrics:
        return self._evaluate(model, range(len(self.tasks)))

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the tasks behind `metrics` (`{task}_acc`, `{task}_acc@5`); all for `utility`."""
        wanted = {m.rsplit("_acc", 1)[0] for m in metrics if "_acc" in m}
        indices = [i for i, t in enumerate(self.tasks) if t.name in wanted]
        if "utility" in metrics or len(indices) < len(wanted) or not indices:
            return self(model)
        return self._evaluate(model, indices)

    def _evaluate(self, model: nn.Module, indices: Sequence[int]) -> Metrics:
        metrics: Metrics = {}
        utility = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i in indices:
                    task = self.tasks[i]
                    image_f = self._current(model, self._images[i])
                    text_f = self._current(model, self._texts[i])
                    top1, top5 = _accuracy(image_f, text_f, self._owners[i], self._truth[i], task)
                    metrics[f"{task.name}_acc"] = top1
                    metrics[f"{task.name}_acc@5"] = top5
                    if task.counts_for_utility and task.name != "forget":
                        utility.append(top1)
        finally:
            model.train(was_training)
        if utility and len(indices) == len(self.tasks):  # utility needs every task
            metrics["utility"] = sum(utility) / len(utility)
        return metrics

    def similarity(self, model: nn.Module, task: str) -> torch.Tensor:
        """Cosine similarity of each image of `task` to each label's (prompt-averaged) text."""
        i = [t.name for t in self.tasks].index(task)
        with torch.no_grad():
            image_f = self._features(model, self._images[i])
            text_f = _label_embeddings(
                self._features(model, self._texts[i]),
                self._owners[i],
                len(self.tasks[i].label_names),
            )
        return image_f @ text_f.T

    # -- features --------------------------------------------------------------------------
    def _current(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        """Features under the current edit, reusing what the edit cannot change.

        Caches fill lazily, so a trial that scores only the forget task never pays for the
        others: the other tower's features are kept whole, and for the edited tower the output of
        the block below the edit (blocks below it are never edited, so the first trial's full
        pass can record it).
        """
        if self._edit is None:
            return self._features(model, inputs)
        kind, first_block = self._edit
        if inputs.kind != kind:  # an edit in one tower leaves the other tower's features unchanged
            if inputs.base is None:
                inputs.base = self._features(model, inputs)
            return inputs.base
        tower = next(t for t in find_towers(model) if t.kind == kind)
        if first_block == 0:
            return self._features(model, inputs)
        if not inputs.replay:
            features, inputs.replay = self._features_and_replay(
                model, inputs, tower.layers[first_block - 1]
            )
            return features
        parts = []
        with _replaying(tower, first_block) as replay:
            for batch, cached in zip(inputs.batches, inputs.replay):
                replay.output = cached
                parts.append(self._encode(model, inputs.kind, batch))
        return torch.cat(parts)

    def _features(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        return self._features_and_replay(model, inputs, None)[0]

    def _features_and_replay(
        self, model: nn.Module, inputs: _Inputs, block: nn.Module | None
    ) -> tuple[torch.Tensor, list[Any]]:
        """Features of every batch; with `block`, also each batch's output of that block."""
        captured: list[Any] = []

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            captured.append(output.detach() if torch.is_tensor(output) else output)

        handle = block.register_forward_hook(keep) if block is not None else None
        try:
            with torch.no_grad():
                features = torch.cat([self._encode(model, inputs.kind, b) for b in inputs.batches])
        finally:
            if handle is not None:
                handle.remove()
        return features, captured

    @staticmethod
    def _encode(model: nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        if kind == "vision":
            features = encode_images(model, batch["pixel_values"])
        else:
            features = encode_texts(model, batch["input_ids"], batch.get("attention_mask"))
        return F.normalize(features.float(), dim=-1).cpu()


_TEXT_KWARGS = dict(PROCESSOR_KWARGS)


def _tower_for(model: nn.Module, name: str) -> Tower:
    towers = find_towers(model)
    for tower in towers:
        if tower.path and name.startswith(tower.path + "."):
            return tower
    kind = "vision" if "visual" in name else "text"
    return next(t for t in towers if t.kind == kind)


def _label_embeddings(text_f: torch.Tensor, owners: torch.Tensor, n_labels: int) -> torch.Tensor:
    sums = torch.zeros(n_labels, text_f.shape[1]).index_add_(0, owners, text_f)
    return F.normalize(sums, dim=-1)


SCORINGS = ("mean", "any")


def _accuracy(
    image_f: torch.Tensor,
    text_f: torch.Tensor,
    owners: torch.Tensor,
    truth: torch.Tensor,
    task: ZeroShotTask,
) -> tuple[float, float]:
    """Top-1 and top-5 recognition rates under the task's scoring and margin."""
    n_labels = len(task.label_names)
    if task.scoring == "mean":
        logits = (image_f @ _label_embeddings(text_f, owners, n_labels).T)[:, None]
    else:  # (images, phrasings, labels): the labels' prompts are stored label by label
        logits = (image_f @ text_f.T).view(len(image_f), n_labels, -1).transpose(1, 2)
    own = logits.gather(2, truth.view(-1, 1, 1).expand(-1, logits.shape[1], 1))
    boosted = logits.scatter(2, truth.view(-1, 1, 1).expand_as(own), own + task.margin)
    k = min(5, n_labels)
    top = boosted.topk(k, dim=-1).indices  # (images, phrasings, k)
    hit1 = (top[..., 0] == truth[:, None]).any(dim=1)
    hit5 = (top == truth[:, None, None]).any(dim=-1).any(dim=1)
    return hit1.float().mean().item(), hit5.float().mean().item()


class _Replay(nn.Module):
    """Stands in for the blocks below an edit: returns the cached output of the block below."""

    output: Any = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


@contextlib.contextmanager
def _replaying(tower: Tower, first_block: int) -> Iterator[_Replay]:
    """Temporarily run only blocks `first_block…` of `tower`, fed by a `_Replay`."""
    encoder = tower.module.encoder
    original = encoder.layers
    replay = _Replay()
    encoder.layers = nn.ModuleList([replay, *list(original)[first_block:]])
    try:
        yield replay
    finally:
        encoder.layers = original
