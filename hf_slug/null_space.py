"""Forget gradients projected off the retain inputs, so the edit leaves retain outputs alone.

A candidate tensor `W` of a linear layer maps each token's input `x` to `W x`; SLUG's update
`ΔW` (the forget gradient, scaled) changes that output by `ΔW x`. Here each row of `ΔW` is
projected off the principal directions of the inputs the *retain* pairs feed that layer (the
eigenvectors of `Σ x xᵀ` that hold `energy` of its trace), so `ΔW x ≈ 0` for retain inputs
while the concept's own inputs (e.g. its name's tokens) still move. The update stays one
gradient of one layer, taken once at θ⁰; the projection needs one forward pass over the retain
pairs (no backward) to collect the inputs. It is hf_slug's extension of SLUG (the idea of
editing in the retain inputs' null space is AlphaEdit's, Fang et al. 2025), measured in
`benchmarks/generalisation.md`; `SLUGConfig(retain_null_space=None)` gives SLUG's plain
gradient.

Text tokens are discrete, so a name's inputs are nearly orthogonal to the other captions' and
the projection keeps most of the forget gradient; image patches are not (on the embedded VLM a
projected vision gradient forgot far worse), hence the default towers `("text",)`. With a null
space, `unlearn` chooses among the projected edits that meet its criterion — the one that moves
the other labels' prompts least — and falls back to plain ones only when none does
(`choose_projected_first`).

Example:
    >>> import torch
    >>> cov = {"w": torch.diag(torch.tensor([4.0, 1.0, 0.0]))}
    >>> project_gradients({"w": torch.ones(2, 3)}, cov, energy=0.75)["w"][0].tolist()
    [0.0, 1.0, 1.0]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import SLUGConfig
from .data import PROCESSOR_KWARGS, ImageTextPairs
from .errors import NonFiniteOutputError
from .evaluation import PROMPT_DRIFT
from .search import Criterion, LayerSearch, choose, guard_clause
from .towers import PROJECTIONS, tower_kinds

PROJECTED_FIRST = (
    "edits along the retain null space first (plain ones only if none of them is usable)"
)
"""How `unlearn` chooses with a null space: a projected edit leaves the retain inputs' outputs
alone, a plain one (a vision tensor's, by default) does not — on the embedded world the plain
vision edits that passed the validation guard cost the test retain set most of what stacks of
them lost (`benchmarks/stacking.md`); among edits of one kind the smaller step changes what no
retain input covers least."""
DRIFT_TIE = 1e-6
"""Prompt drifts this close count as equal (float32 round-off of unit vectors is ~1e-7; the edits
the choice separates differ by 1e-4 and more, `benchmarks/generalisation.md`)."""
LEAST_DRIFT = (
    "among those whose smallest passing step met the forget criterion{guard}, the one that moves "
    f"the other labels' prompts least ({PROMPT_DRIFT}); ties go to the higher {{utility}}, then "
    "the smaller step"
)
"""The choice among usable projected edits (when the evaluator reports `PROMPT_DRIFT`): they all
leave the retain captions' outputs alone, so validation retain and utility barely tell them
apart; how far each moves phrasings the retain set does not hold does — on the embedded world
it separated the text edits that cost 3-15 points of test utility from those that cost none, and
it held on world B (`benchmarks/generalisation.md`)."""


def input_covariances(
    model: nn.Module,
    processor: Any,
    pairs: ImageTextPairs,
    names: Sequence[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """`Σ x xᵀ` (float64, on the CPU) of the inputs each named linear weight sees on `pairs`.

    Text tokens count where the attention mask is set (padding is no input a caption makes);
    every image token counts. Only the towers holding a named tensor run, without autograd.
    """
    kinds = tower_kinds(model, names)
    modules = {name: model.get_submodule(name.rsplit(".", 1)[0]) for name in names}
    sums: dict[str, torch.Tensor] = {}
    mask: dict[str, torch.Tensor] = {}

    same_input: dict[str, str] = {}  # q/k/v read one tensor: its covariance is kept once
    last: list[tuple[str, torch.Tensor, str]] = []  # (parent, input, reader) of the last hook

    def collect(name: str):
        parent = name.rsplit(".", 2)[0]

        def hook(_module: nn.Module, args: tuple, _output: Any) -> None:
            if last and last[0][0] == parent and last[0][1] is args[0]:
                same_input[name] = last[0][2]  # a sibling just read this very tensor
                return
            last[:] = [(parent, args[0], name)]
            x = args[0].detach()
            if kinds[name] == "text" and x.dim() == 3:
                x = x[mask["text"].bool()]  # the caption's own tokens, not its padding
            x = x.reshape(-1, x.shape[-1]).double()
            product = (x.T @ x).cpu()
            sums[name] = sums[name] + product if name in sums else product

        return hook

    hooks = [modules[name].register_forward_hook(collect(name)) for name in names]
    wanted = set(kinds.values())
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in tqdm(
                range(0, len(pairs), batch_size),
                desc="retain inputs",
                unit="batch",
                disable=not progress,
            ):
                stop = min(start + batch_size, len(pairs))
                last.clear()
                if "text" in wanted:  # the tokenizer alone: no image is decoded for text
                    texts = list(pairs.texts[start:stop])
                    tokens = processor(text=texts, **PROCESSOR_KWARGS)
                    mask["text"] = tokens["attention_mask"].to(device)
                    pooled = model.text_model(
                        input_ids=tokens["input_ids"].to(device), attention_mask=mask["text"]
                    ).pooler_output
                    if PROJECTIONS["text"] in names:
                        model.text_projection(pooled)
                if "vision" in wanted:
                    last.clear()
                    images = [pairs.image(i) for i in range(start, stop)]
                    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
                    pooled = model.vision_model(pixel_values=pixels.to(device, model.dtype))
                    if PROJECTIONS["vision"] in names:
                        model.visual_projection(pooled.pooler_output)
    finally:
        last.clear()
        for hook in hooks:
            hook.remove()
    return {**sums, **{name: sums[reader] for name, reader in same_input.items()}}


def project_gradients(
    gradients: Mapping[str, torch.Tensor],
    covariances: Mapping[str, torch.Tensor],
    energy: float,
    bases: dict[int, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Each gradient with its rows projected off the top directions holding `energy` of its
    covariance's trace; tensors without a covariance are returned as they are. `bases` caches
    each covariance object's directions: pass the same dict to project more gradients on it."""
    out = {}
    bases = {} if bases is None else bases  # q/k/v share one covariance: one eigendecomposition
    for name, grad in gradients.items():
        cov = covariances.get(name)
        if cov is not None and not torch.isfinite(cov).all():
            raise NonFiniteOutputError(
                f"the retain inputs' covariance of {name} holds NaN or inf values (an overflow "
                "in a half-precision forward?): run the model in float32, or pass "
                "retain_null_space=None."
            )
        if cov is None or not float(cov.trace()) > 0:
            out[name] = grad
            continue
        if id(cov) not in bases:
            bases[id(cov)] = principal_directions(cov, energy)
        basis = bases[id(cov)].to(grad.device)
        g = grad.double()
        out[name] = (g - (g @ basis) @ basis.T).to(grad.dtype)
    return out


def principal_directions(covariance: torch.Tensor, energy: float) -> torch.Tensor:
    """The fewest eigenvectors (as columns) of `covariance` whose eigenvalues hold `energy` of
    its trace."""
    values, vectors = torch.linalg.eigh(covariance.detach().double().cpu())
    values, vectors = values.flip(0), vectors.flip(1)
    floor = float(values[0]) * len(values) * torch.finfo(torch.float64).eps
    values = torch.where(values > floor, values, torch.zeros_like(values))  # round-off: no input
    share = values.cumsum(0) / values.sum()
    keep = int((share < energy - 1e-12).sum()) + 1  # float sums may land just below
    return vectors[:, : min(keep, len(values))]


def tensors_of(model: nn.Module, names: Sequence[str], towers: Sequence[str]) -> list[str]:
    """The 2-D tensors among `names` that belong to one of `towers`."""
    kinds = tower_kinds(model, names)
    return [n for n in names if kinds[n] in towers and model.get_parameter(n).dim() == 2]


def null_space_gradients(
    model: nn.Module,
    processor: Any,
    retain: ImageTextPairs,
    gradients: Mapping[str, torch.Tensor],
    config: SLUGConfig,
    *,
    progress: bool = True,
    covariances: Mapping[str, torch.Tensor] | None = None,
    bases: dict[int, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(`gradients` projected as `config` says, the covariances used), or (`gradients`, None)
    when `config.retain_null_space` is None or no candidate is in `config.null_space_towers`.
    `covariances` from an earlier call on the same retain pairs spare the forward pass, and the
    same `bases` dict with them the eigendecompositions (`project_gradients`).

    Example:
        >>> grads, covs = null_space_gradients(model, processor, retain, grads, config)  # doctest: +SKIP
    """
    energy = config.retain_null_space
    names = tensors_of(model, list(gradients), config.null_space_towers) if energy else []
    if not names:
        return dict(gradients), None
    if covariances is None or any(name not in covariances for name in names):
        covariances = input_covariances(
            model, processor, retain, names, batch_size=config.batch_size, progress=progress
        )
    projected = project_gradients(gradients, covariances, energy, bases)
    emptied = [
        name
        for name in names
        if float(gradients[name].float().norm()) > 0  # a zero gradient was never a direction
        and float(projected[name].float().norm()) <= 1e-6 * float(gradients[name].float().norm())
    ]
    for name in emptied:  # what is left is round-off: no direction to step along
        projected[name] = torch.zeros_like(projected[name])
    if emptied:
        warnings.warn(
            f"retain_null_space={energy} leaves nothing of the forget gradient of "
            f"{len(emptied)} tensor(s) ({emptied[0]}, ...): the retain inputs span their whole "
            "input space, so they cannot forget; lower retain_null_space (e.g. 0.99), or pass "
            "None for SLUG's plain gradient.",
            stacklevel=3,
        )
    return projected, covariances


def choose_projected_first(
    searches: Sequence[LayerSearch],
    criterion: Criterion,
    covariances: Mapping[str, torch.Tensor] | None,
) -> tuple[LayerSearch | None, str]:
    """With covariances, the usable edits whose every tensor was projected come first (the others
    only when none is usable). Among them the one with the least `PROMPT_DRIFT` when each reports
    it — drifts within `DRIFT_TIE` of the least tie, and ties go to the higher utility, then the
    smaller step — else `search.choose`'s rule. (A projected vision edit reports no drift — it
    moves no prompt — so with vision tensors in the null space, not the default, the choice
    falls back to the utility rule; `result.rule` says which rule chose.)"""
    if covariances is None:
        return choose(searches, criterion)
    projected = [s for s in searches if all(name in covariances for name in s.names)]
    usable = [s for s in projected if s.usable]
    if usable and all(PROMPT_DRIFT in s.metrics for s in usable):
        floor = min(s.metrics[PROMPT_DRIFT] for s in usable) + DRIFT_TIE
        least, _ = choose([s for s in usable if s.metrics[PROMPT_DRIFT] <= floor], criterion)
        utility = criterion.utility_metric  # the tied ones: `choose`'s utility, then step
        rule = LEAST_DRIFT.format(guard=guard_clause(criterion), utility=utility)
        return least, f"{PROJECTED_FIRST}; then {rule}"
    chosen, rule = choose(projected if usable else searches, criterion)
    return chosen, f"{PROJECTED_FIRST}; then {rule}"
