"""Early exit for the step search's trials: stop counting recognised images once the answer is
known (SLUG.md §4 only needs "is the forget metric within the criterion?").

`decide_early` is what `ZeroShotEvaluator.evaluate_forget` calls: it counts the recognised
forget images hardest-first and stops once more than the criterion allows are recognised (then
the count is a lower bound, `exact=False`); for the text tower it fetches as few (view, label)
prompt embeddings as it can (`lazy_recognised`). Either way the decision equals a full
evaluation's.

Example:
    >>> import torch
    >>> count_until([torch.tensor([1, 1]), torch.tensor([1])], lambda c: c, limit=1)
    (2, False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..towers import Tower
from .prefix_cache import _rows, from_block
from .tasks import _boosted, _logits, _view_hits


def leads(
    logits: torch.Tensor, truth: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best lead of its boosted label over the others (over views), each (image,
    view)'s closest other label, and whether each view ranks the image's label first."""
    boosted = _boosted(logits, truth, margin)
    index = truth.view(-1, 1, 1).expand(-1, logits.shape[1], 1)
    others = boosted.scatter(2, index, float("-inf"))
    lead = (boosted.gather(2, index)[..., 0] - others.amax(-1)).amax(-1)
    return lead, others.argmax(-1), _view_hits(boosted, truth)


@dataclass
class _Early:
    """Kept between early-exit trials of a unit: each image's lead, each (image, view)'s closest
    other label, and the edited tower's inputs row by row (`_rows`)."""

    lead: torch.Tensor
    rivals: torch.Tensor
    rows: list[dict[str, torch.Tensor]] | None = None


def decide_early(ev: Any, model: nn.Module, i: int, limit: int) -> tuple[int, bool] | None:
    """How many images of `ev`'s task `i` are recognised, stopping early: (count, exact), or
    None when the edited tower's inputs cannot be replayed row by row."""
    task, truth, owners = ev.tasks[i], ev._truth[i], ev._owners[i]
    kind, first_block = ev._edit
    tower = ev._tower(model, kind)
    state = ev._early.get(i)
    if state is None:  # nothing known yet: no rival (own label), no lead
        edited = ev._images[i] if kind == "vision" else ev._texts[i]
        if first_block > 0 and not edited.replay:  # only the unedited blocks below the edit
            edited.replay = ev._features_and_replay(model, edited, first_block, below=True)[1]
        views = 1 if task.scoring == "mean" else len(owners) // len(task.label_names)
        rivals = truth[:, None].repeat(1, views)
        state = ev._early[i] = _Early(torch.zeros(len(truth)), rivals, _rows(edited, first_block))
    if state.rows is None:
        return None
    if kind == "vision":
        text_f = ev._current(model, ev._texts[i])[ev._rows_of[i]]

        def hits_of(idx: torch.Tensor) -> torch.Tensor:
            image_f = _rows_features(ev, model, tower, [state.rows[j] for j in idx.tolist()])
            logits = _logits(image_f, text_f, owners, task)
            state.lead[idx], _, hits = leads(logits, truth[idx], task.margin)
            return hits.any(1)

        order = state.lead.argsort(descending=True, stable=True)  # hardest first
        chunks = [order[: ev.chunk], order[ev.chunk :]]  # the likeliest, then the rest
        return count_until([c for c in chunks if len(c)], hits_of, limit)
    image_f = ev._current(model, ev._images[i])
    rows_of = ev._rows_of[i]  # each label's prompts, as rows of the (shared) text inputs
    prompts = [rows_of[owners.eq(label)].tolist() for label in range(len(task.label_names))]
    feats: dict[int, torch.Tensor] = {}

    def columns(pairs: list[tuple[int, int]]) -> torch.Tensor:
        wanted = [
            [prompts[label][v]] if task.scoring == "any" else prompts[label] for v, label in pairs
        ]
        need = sorted({j for js in wanted for j in js} - feats.keys())
        if need:
            rows = [state.rows[j] for j in need]
            feats.update(zip(need, _rows_features(ev, model, tower, rows)))
        cols = torch.stack([sum(feats[j] for j in js) for js in wanted])
        return image_f @ (cols if task.scoring == "any" else F.normalize(cols, dim=-1)).T

    shape = (len(truth), state.rivals.shape[1], len(task.label_names))
    return lazy_recognised(columns, truth, shape, task.margin, limit, state.rivals)


def _rows_features(
    ev: Any, model: nn.Module, tower: Tower, rows: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """Features of some rows of the edited tower's inputs, replaying the block below."""
    batch = {key: _stack([r[key] for r in rows], key, ev._pad_id) for key in rows[0]}
    hidden = batch.pop("hidden", None)
    if hidden is None:
        return ev._encode(model, tower.kind, batch)
    return ev._encode(from_block(model, tower, ev._edit[1], hidden), tower.kind, batch)


def count_until(
    chunks: Sequence[Any], hits_of: Callable[[Any], torch.Tensor], limit: int
) -> tuple[int, bool]:
    """Recognised images, chunk by chunk, stopping once more than `limit`: (count, exact)."""
    count = 0
    for k, chunk in enumerate(chunks):
        count += int(hits_of(chunk).sum())
        if count > limit:
            return count, k == len(chunks) - 1
    return count, True


def lazy_recognised(
    columns: Callable[[list[tuple[int, int]]], torch.Tensor],
    truth: torch.Tensor,
    shape: tuple[int, int, int],
    margin: float,
    limit: int,
    rivals: torch.Tensor,
) -> tuple[int, bool]:
    """How many images are recognised, fetching as few (view, label) embeddings as it can.

    `columns(pairs)` gives the (images, pairs) cosines with the (view, label) embeddings;
    `shape` is (images, views, labels). It fetches each image's own label and its `rivals`
    (images, views), the labels that came closest last time, and updated here. A view where a
    fetched label beats the boosted own label strictly cannot rank it first; only views that
    might are completed (every label; the likeliest first, in doubling batches), and the count is
    exact, or a lower bound above `limit` (exact False) when it stops early: `count <= limit` is
    always as in full.
    """
    n, n_views, n_labels = shape
    sims = torch.full(shape, float("nan"))
    fetched: set[tuple[int, int]] = set()

    def fetch(pairs: Any) -> None:
        pairs = sorted(set(pairs) - fetched)
        if pairs:
            views, labels = (torch.tensor(x) for x in zip(*pairs))
            sims[:, views, labels] = columns(pairs)
            fetched.update(pairs)

    every = range(n_views)
    own_labels = [(v, int(t)) for t in truth.unique() for v in every]
    fetch(own_labels + [(v, int(rivals[i, v])) for i in range(n) for v in every])
    own = sims.gather(2, truth.view(-1, 1, 1).expand(-1, n_views, 1))[..., 0]
    own_mask = F.one_hot(truth, n_labels).bool()[:, None, :]
    complete = torch.zeros(n_views, dtype=torch.bool)
    while True:
        others = sims.masked_fill(own_mask, float("-inf")).nan_to_num(nan=float("-inf"))
        best = others.amax(-1)
        hit = torch.zeros(n, n_views, dtype=torch.bool)
        done = complete.nonzero().flatten()
        hit[:, done] = _view_hits(_boosted(sims[:, done], truth, margin), truth)
        recognised = hit.any(1)
        count = int(recognised.sum())
        open_ = ~(best > own + margin) & ~complete[None] & ~recognised[:, None]
        if count > limit or not open_.any():
            rivals.copy_(torch.where(best > float("-inf"), others.argmax(-1), rivals))
            return count, count <= limit or not open_.any()
        lead = (own + margin - best).masked_fill(~open_, float("-inf")).amax(0)
        # the likeliest views first, as many as are complete already (1, 1, 2, 4, ...)
        views = lead.argsort(descending=True, stable=True)[: max(1, int(complete.sum()))]
        views = [int(v) for v in views if lead[v] > float("-inf")]
        if not views:  # undecidable (non-finite similarities): they count as recognised
            return int((recognised | open_.any(1)).sum()), True
        fetch([(v, label) for v in views for label in range(n_labels)])
        complete[views] = True


def _stack(tensors: list[torch.Tensor], key: str, pad_id: int) -> torch.Tensor:
    """Stack rows, padding the shorter ones (text) at the end."""
    value = pad_id if key == "input_ids" else 0
    return pad_sequence(tensors, batch_first=True, padding_value=value)
