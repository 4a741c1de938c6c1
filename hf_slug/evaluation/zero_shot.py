"""Zero-shot classification on CLIP, made cheap for the step search.

`ZeroShotEvaluator` keeps the unedited tower's features (across units, while its weights are
unchanged) and the hidden states entering the edited block (`prefix_cache`), so a trial runs only
the blocks from the edit up, and a forget trial stops early (`evaluate_forget`).

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
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import PROCESSOR_KWARGS
from ..errors import NonFiniteOutputError
from ..towers import Tower, block_index, encode_images, encode_texts, find_towers
from .base import PROMPT_DRIFT, UTILITY, Evaluator, Metrics, accuracy_key, top5_key
from .prefix_cache import _Inputs, _weights_key, from_block, recording
from .tasks import ZeroShotTask, _accuracy, _label_embeddings, _rate

_TEXT_KWARGS = dict(PROCESSOR_KWARGS)


class ZeroShotEvaluator(Evaluator):
    """Top-1/top-5 zero-shot accuracy per task, plus `utility`: the mean top-1 of utility tasks.

    Keys: `accuracy_key(task.name)`, `top5_key(task.name)` and `UTILITY`, which averages the
    tasks whose `in_utility` holds (by default all but the one named `FORGET_TASK`); during a
    text-tower search (`begin` .. `end`) with a task that has `track_drift`, `PROMPT_DRIFT`.
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
        self._bystander_rows: list[torch.Tensor] = []  # of those, the drift-tracked ones
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
            bystanders = set(task.bystanders()) if task.track_drift else set()
            self._bystander_rows.append(
                torch.tensor(
                    [k for k, owner in enumerate(owners) if owner in bystanders], dtype=torch.long
                )
            )
            index = {n: i for i, n in enumerate(task.label_names)}
            self._truth.append(torch.tensor([index[label] for label in task.labels]))
        self._keys = [(accuracy_key(t.name), top5_key(t.name)) for t in self.tasks]
        self._edit: tuple[str, int] | None = None
        self._pad_id = int(getattr(getattr(processor, "tokenizer", None), "pad_token_id", 0) or 0)
        self._early: dict[int, Any] = {}  # per task: what early-exit trials learnt (search)
        self._kept_features: dict[int, tuple[Any, Any, torch.Tensor]] = {}
        self._towers: tuple[Any, list[Tower]] | None = None
        self._drift_from: dict[int, torch.Tensor] = {}  # task -> its bystanders' unedited features
        self._unit: tuple[Any, list[tuple[nn.Parameter, torch.Tensor]], dict] | None = None

    @property
    def tracks_drift(self) -> bool:
        """True when a text-tower search reports `PROMPT_DRIFT` (a task has `track_drift`)."""
        return any(len(rows) for rows in self._bystander_rows)

    # -- the search protocol -------------------------------------------------------------
    def begin(self, model: nn.Module, names: Sequence[str]) -> None:
        tower = _tower_for(model, names[0])
        first_block = min((block_index(n) or (len(tower.layers), ""))[0] for n in names)
        self._edit = (tower.kind, first_block)
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []  # filled by the first trial that needs them
        self._early = {}
        self._drift_from = {}
        self._unit = (  # the model, copies of the unit's tensors, each tower's weights key
            weakref.ref(model),
            [(p, p.detach().clone()) for p in _parameters(model, names)],
            {t.kind: _weights_key(model, t) for t in find_towers(model)},
        )
        if tower.kind == "text":
            with _evaluating(model), torch.no_grad():
                for i, rows in enumerate(self._bystander_rows):
                    if len(rows):
                        unedited = self._kept(model, self._texts[i])[self._rows_of[i]]
                        self._drift_from[i] = unedited[rows]

    def end(self) -> None:
        self._edit = None
        for inputs in self._images + self._texts:
            inputs.base, inputs.replay = None, []
        self._early = {}
        self._drift_from = {}
        self._rekey_restored()

    def _rekey_restored(self) -> None:
        """After a unit whose tensors hold exactly what they held at `begin` (the search restores
        them; writing bumps their version counters all the same), the features kept for the
        towers as they were then stay valid: re-key them to the tensors' new versions, so the
        next unit does not encode them again."""
        unit, self._unit = self._unit, None
        model = unit[0]() if unit else None
        if model is None or not all(torch.equal(p, copy) for p, copy in unit[1]):
            return
        for kind, old in unit[2].items():
            new = _weights_key(model, self._tower(model, kind))
            for inputs_id, (owner, key, features) in list(self._kept_features.items()):
                if owner() is model and key == old and old is not None:
                    self._kept_features[inputs_id] = (owner, new, features)

    def __call__(self, model: nn.Module) -> Metrics:
        return self._evaluate(model, range(len(self.tasks)))

    def evaluate_only(self, model: nn.Module, metrics: Collection[str]) -> Metrics:
        """Only the tasks whose keys `metrics` names (`PROMPT_DRIFT`: the drift-tracking ones);
        every task when it names `UTILITY` or a key no task returns."""
        wanted = set(metrics)
        indices = [
            i
            for i, keys in enumerate(self._keys)
            if wanted.intersection(keys) or (PROMPT_DRIFT in wanted and i in self._drift_from)
        ]
        known = {key for keys in self._keys for key in keys} | {PROMPT_DRIFT}
        if UTILITY in wanted or not indices or not wanted <= known:
            return self(model)
        return self._evaluate(model, indices)

    def _evaluate(self, model: nn.Module, indices: Sequence[int]) -> Metrics:
        metrics: Metrics = {}
        utility, drift = [], []
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
                metrics[self._keys[i][0]], metrics[self._keys[i][1]] = top1, top5
                if task.in_utility:
                    utility.append(top1)
                if i in self._drift_from:
                    moved = text_f[self._bystander_rows[i]]
                    drift.append((1 - (moved * self._drift_from[i]).sum(-1)).mean().item())
        if utility and len(indices) == len(self.tasks):  # utility needs every task
            metrics[UTILITY] = sum(utility) / len(utility)
        if drift and len(drift) == len(self._drift_from):
            metrics[PROMPT_DRIFT] = sum(drift) / len(drift)
        return metrics

    early_exit = True  # forget trials stop early (the decision never changes; benchmarks compare)
    chunk = 2  # vision edit: the hardest images, scored before the rest
    keep_features = True  # reuse unedited towers' features across units (`_kept`)

    def evaluate_forget(
        self, model: nn.Module, metric: str, ceiling: float
    ) -> tuple[Metrics, bool]:
        """Vision edit: the hardest images first (`count_until`); text edit: only the prompts that
        decide (`lazy_recognised`); stops once `metric <= ceiling` cannot hold."""
        i = next((k for k, keys in enumerate(self._keys) if keys[0] == metric), None)
        if not self.early_exit or self._edit is None or i is None or not self.tasks[i].images:
            return self.evaluate_only(model, (metric,)), True
        from .early_exit import decide_early  # (early_exit reads this evaluator's caches)

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
        edited tower the hidden states entering the edited block, which no trial changes.
        """
        if self._edit is None:
            return self._kept(model, inputs)
        kind, first_block = self._edit
        if inputs.kind != kind:  # an edit in one tower leaves the other tower's features unchanged
            if inputs.base is None:
                inputs.base = self._kept(model, inputs)
            return inputs.base
        if first_block == 0:
            return self._features(model, inputs)
        if not inputs.replay:
            features, inputs.replay = self._features_and_replay(model, inputs, first_block)
            return features
        tower = self._tower(model, kind)
        parts = [
            self._encode(from_block(model, tower, first_block, cached), inputs.kind, batch)
            for batch, cached in zip(inputs.batches, inputs.replay)
        ]
        return torch.cat(parts)

    def _tower(self, model: nn.Module, kind: str) -> Tower | None:
        if self._towers is None or self._towers[0]() is not model:
            self._towers = (weakref.ref(model), find_towers(model))
        return next((t for t in self._towers[1] if t.kind == kind), None)

    def _features(self, model: nn.Module, inputs: _Inputs) -> torch.Tensor:
        return self._features_and_replay(model, inputs)[0]

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
        self, model: nn.Module, inputs: _Inputs, first_block: int = 0, *, below: bool = False
    ) -> tuple[torch.Tensor, list[Any]]:
        """Features of every batch; with `first_block` > 0, also each batch's hidden states
        entering that block (`below`: running only the blocks below it, whose features are
        then not the model's)."""
        captured: list[Any] = []
        runner = model
        if first_block > 0:
            tower = self._tower(model, inputs.kind)
            runner = recording(model, tower, first_block, captured, below=below)
        with torch.no_grad():
            features = torch.cat([self._encode(runner, inputs.kind, b) for b in inputs.batches])
        return features, captured

    @staticmethod
    def _encode(model: nn.Module, kind: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        if kind == "vision":
            features = encode_images(model, batch["pixel_values"])
        else:
            features = encode_texts(model, batch["input_ids"], batch.get("attention_mask"))
        if not torch.isfinite(features).all():
            raise NonFiniteOutputError(
                f"the {kind} tower gives NaN or inf features: the weights (or an edit of them) "
                "overflow the model's dtype; check the model is finite, or load it in float32."
            )
        return F.normalize(features.float(), dim=-1).cpu()


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


def _parameters(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    """The parameters named (those the model has)."""
    own = dict(model.named_parameters())
    return [own[n] for n in names if n in own]


def _tower_for(model: nn.Module, name: str) -> Tower:
    towers = find_towers(model)
    for tower in towers:
        if tower.path and name.startswith(tower.path + "."):
            return tower
    kind = "vision" if "visual" in name else "text"
    return next(t for t in towers if t.kind == kind)
