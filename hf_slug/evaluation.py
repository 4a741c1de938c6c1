"""Evaluators for the step search and for reports: zero-shot classification on CLIP.

An evaluator is called with the model and returns named metrics. The built-in
`ZeroShotEvaluator` is made cheap for the search: it keeps the unedited tower's features (across
units, while its weights are unchanged) and the hidden states entering the edited block, so a
trial runs only the blocks from the edit up, and a forget trial stops early (`evaluate_forget`).

Example:
    >>> task = ZeroShotTask("forget", images, ["Ada Byron"] * len(images),  # doctest: +SKIP
    ...                     label_names=names, templates=("{}.",))
    >>> evaluator = ZeroShotEvaluator(processor, [task, retain_task])  # doctest: +SKIP
    >>> evaluator(model)  # doctest: +SKIP
    {'forget_acc': 0.93, 'forget_acc@5': 1.0, 'retain_acc': 0.88, 'retain_acc@5': 0.99, ...}
"""

from __future__ import annotations

import contextlib
import weakref
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

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """(metrics, exact) for a trial that asks only whether `metric <= ceiling`: it may stop once
        `metric` must exceed `ceiling`, returning a lower bound (same decision) and False."""
        return self.evaluate_only(model, (metric,)), True


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
    """One modality's batches and, in a search, its features (the other tower is edited) or each
    batch's output of the block below the edit."""

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
        self._rows_of: list[torch.Tensor] = []  # each task's prompts, as rows of its `_texts`
        hosts: list[tuple[dict[str, int], _Inputs]] = []  # a task's prompts, once each
        for task in self.tasks:
            images = [
                processor(images=list(task.images[i : i + batch_size]), return_tensors="pt")
                for i in range(0, len(task.images), batch_size)
            ]
            texts, owners = task.texts()
            host = next((h for h in hosts if set(texts) <= h[0].keys()), None)  # e.g. a subset
            if host is None:
                unique = list(dict.fromkeys(texts))
                tokens = [
                    dict(processor(text=unique[i : i + batch_size], **_TEXT_KWARGS))
                    for i in range(0, len(unique), batch_size)
                ]
                hosts.append(
                    host := ({t: k for k, t in enumerate(unique)}, _Inputs("text", tokens))
                )
            self._images.append(_Inputs("vision", [dict(b) for b in images]))
            self._texts.append(host[1])
            self._rows_of.append(torch.tensor([host[0][t] for t in texts]))
            self._owners.append(torch.tensor(owners))
            index = {n: i for i, n in enumerate(task.label_names)}
            self._truth.append(torch.tensor([index[label] for label in task.labels]))
        self._edit: tuple[str, int] | None = None
        self._pad_id = int(getattr(getattr(processor, "tokenizer", None), "pad_token_id", 0) or 0)
        self._early: dict[int, Any] = {}  # per task: what early-exit trials learnt (search)
        self._kept_features: dict[int, tuple[Any, Any, torch.Tensor]] = {}
        self._towers: tuple[Any, list[Tower]] | None = None

    # -- the search protocol -------------------------------------------------------------
    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        tower = _tower_for(model, names[0])
        first_block = min((block_index(n) or (len(tower.layers), ""))[0] for n in names)
        self._edit = (tower.kind, first_block)
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []  # filled by the first trial that needs them
        self._early = {}

    def end(self) -> None:
        self._edit = None
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []
        self._early = {}

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
        with _evaluating(model), torch.no_grad():
            done: dict[int, torch.Tensor] = {}  # tasks sharing prompts encode them once
            for i in indices:
                task = self.tasks[i]
                image_f = self._current(model, self._images[i])
                text_f = done.get(id(self._texts[i]))
                if text_f is None:
                    text_f = done[id(self._texts[i])] = self._current(model, self._texts[i])
                text_f = text_f[self._rows_of[i]]
                top1, top5 = _accuracy(image_f, text_f, self._owners[i], self._truth[i], task)
                metrics[f"{task.name}_acc"] = top1
                metrics[f"{task.name}_acc@5"] = top5
                if task.counts_for_utility and task.name != "forget":
                    utility.append(top1)
        if utility and len(indices) == len(self.tasks):  # utility needs every task
            metrics["utility"] = sum(utility) / len(utility)
        return metrics

    early_exit = True  # forget trials stop early (the decision never changes; benchmarks compare)
    chunk = 2  # vision edit: the hardest images, scored before the rest
    keep_features = True  # reuse unedited towers' features across units (`_kept`)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """Vision edit: the hardest images first (`count_until`); text edit: only the prompts that
        decide (`lazy_recognised`); stops once `metric <= ceiling` cannot hold."""
        i = next((k for k, t in enumerate(self.tasks) if f"{t.name}_acc" == metric), None)
        if not self.early_exit or self._edit is None or i is None or not self.tasks[i].images:
            return self.evaluate_only(model, (metric,)), True
        from .search import decide_early  # (search imports this module)

        n = len(self.tasks[i].images)
        with _evaluating(model), torch.no_grad():
            limit = sum(_rate(c, n) <= ceiling for c in range(n + 1)) - 1
            decided = decide_early(self, model, i, limit)
        if decided is None:  # the edited tower's inputs cannot be replayed row by row
            return self.evaluate_only(model, (metric,)), True
        return {metric: _rate(decided[0], n)}, decided[1]

    def similarity(self, model: nn.Module, task: str) -> torch.Tensor:
        """Cosine similarity of each image of `task` to each label's (prompt-averaged) text."""
        i = [t.name for t in self.tasks].index(task)
        with torch.no_grad():
            image_f, text_f = (self._features(model, x) for x in (self._images[i], self._texts[i]))
            text_f = text_f[self._rows_of[i]]
        labels = _label_embeddings(text_f, self._owners[i], len(self.tasks[i].label_names))
        return image_f @ labels.T

    # -- features --------------------------------------------------------------------------
    def _current(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        """Features under the current edit, reusing what the edit cannot change.

        Caches fill lazily: the other tower's features are kept whole (`_kept`), and for the
        edited tower the output of the block below the edit, which no trial changes.
        """
        if self._edit is None:
            return self._kept(model, inputs)
        kind, first_block = self._edit
        if inputs.kind != kind:  # an edit in one tower leaves the other tower's features unchanged
            if inputs.base is None:
                inputs.base = self._kept(model, inputs)
            return inputs.base
        tower = self._tower(model, kind)
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

    def _tower(self, model: nn.Module, kind: str) -> Tower | None:
        if self._towers is None or self._towers[0]() is not model:
            self._towers = (weakref.ref(model), find_towers(model))
        return next((t for t in self._towers[1] if t.kind == kind), None)

    def _features(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        return self._features_and_replay(model, inputs, None)[0]

    def _kept(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        """`_features`, kept while the tower's tensors are the same, unwritten since (their version
        counters; writes through `.data` go unseen): units in one tower reuse the other's."""
        if not self.keep_features:
            return self._features(model, inputs)
        key = _weights_key(model, self._tower(model, inputs.kind))
        kept = self._kept_features.get(id(inputs))
        if key is None or kept is None or kept[0]() is not model or kept[1] != key:
            features = self._features(model, inputs)
            kept = self._kept_features[id(inputs)] = (weakref.ref(model), key, features)
        return kept[2]

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


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """`model.eval()` for the duration, touching only the modules that were training."""
    training = [m for m in model.modules() if m.training]
    try:
        for module in training:
            module.training = False
        yield
    finally:
        for module in training:
            module.training = True


def _tower_for(model: nn.Module, name: str) -> Tower:
    towers = find_towers(model)
    for tower in towers:
        if tower.path and name.startswith(tower.path + "."):
            return tower
    kind = "vision" if "visual" in name else "text"
    return next(t for t in towers if t.kind == kind)


def _weights_key(model: nn.Module, tower: Tower | None) -> Any:
    """Which tensors, at which version, `tower`'s features come from (None: unknown)."""
    head = getattr(
        model, f"{'visual' if tower and tower.kind == 'vision' else 'text'}_projection", 0
    )
    try:  # (inference tensors keep no version)
        params = [*tower.module.parameters(), *head.parameters()]
        return tuple((id(p), p.data_ptr(), p.dtype, p._version) for p in params)
    except (AttributeError, RuntimeError):
        return None


def _rows(inputs: _Inputs, first_block: int) -> list[dict[str, torch.Tensor]] | None:
    """`inputs` row by row, each with its replayed hidden states (text: trimmed to its tokens);
    None when they cannot be replayed row by row."""
    replay = inputs.replay if first_block > 0 else [None] * len(inputs.batches)
    tensors = all(r is None or torch.is_tensor(r) for r in replay)
    if len(replay) != len(inputs.batches) or not tensors:
        return None
    rows = []
    for batch, hidden in zip(inputs.batches, replay):
        batch = {**batch, **({} if hidden is None else {"hidden": hidden})}
        if inputs.kind == "text" and "attention_mask" not in batch:
            return None
        for k in range(len(next(iter(batch.values())))):
            n = int(batch["attention_mask"][k].sum()) if inputs.kind == "text" else None
            rows.append({key: value[k, :n] if n else value[k] for key, value in batch.items()})
    return rows


def _label_embeddings(text_f: torch.Tensor, owners: torch.Tensor, n_labels: int) -> torch.Tensor:
    sums = torch.zeros(n_labels, text_f.shape[1]).index_add_(0, owners, text_f)
    return F.normalize(sums, dim=-1)


SCORINGS = ("mean", "any")


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


class _Replay(nn.Module):
    """Stands in for the blocks below an edit: returns the cached output of the block below."""

    output: Any = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


@contextlib.contextmanager
def _replaying(tower: Tower, first_block: int, below: bool = False) -> Iterator[_Replay]:
    """Temporarily run only blocks `first_block…` of `tower`, fed by a `_Replay` (`below`: only
    the blocks below `first_block`, to record their output)."""
    encoder, replay = tower.module.encoder, _Replay()
    original = encoder.layers
    layers = list(original)
    encoder.layers = nn.ModuleList(
        layers[:first_block] if below else [replay, *layers[first_block:]]
    )
    try:
        yield replay
    finally:
        encoder.layers = original
