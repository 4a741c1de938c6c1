"""`ConceptRequest`: one concept to unlearn — its data, its config and how trials are scored.

The same object drives `unlearn`, `unlearn_stack`, the demo, the tests and the benchmarks, so a
concept is described once and never turned into an `unlearn(...)` call by hand.

Example:
    >>> from hf_slug import ConceptRequest, SLUGConfig, UnlearnOptions
    >>> request = ConceptRequest(forget_pairs, retain_pairs,  # doctest: +SKIP
    ...                          SLUGConfig(concept="Ada Byron", candidate_labels=names))
    >>> result = request.unlearn(model, processor, UnlearnOptions(progress=False))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from .config import SLUGConfig
from .data import PairSource
from .errors import ConfigError
from .evaluation import Evaluator
from .options import UnlearnOptions
from .unlearn import UnlearningResult, unlearn

EvaluatorLike = Evaluator | Callable[[nn.Module], Mapping[str, float]]


@dataclass(frozen=True)
class ConceptRequest:
    """One concept: forget and retain pairs, its `SLUGConfig`, and what scores its trials.

    `evaluator` scores every trial on validation data of its own; `validation=(forget, retain)`
    gives the default evaluator such data; with neither, `config.validation_share` of the pairs
    is held out (see `unlearn`).

    Example:
        >>> from hf_slug import SLUGConfig
        >>> ConceptRequest([], [], SLUGConfig(concept="Ada Byron")).config.concept
        'Ada Byron'
    """

    forget: PairSource
    retain: PairSource
    config: SLUGConfig
    evaluator: EvaluatorLike | None = None
    validation: tuple[PairSource, PairSource] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, SLUGConfig):
            raise ConfigError(
                f"a ConceptRequest's config must be an hf_slug.SLUGConfig, got a "
                f"{type(self.config).__name__}: pass SLUGConfig(concept=...)."
            )

    def unlearn(
        self, model: nn.Module, processor: Any, options: UnlearnOptions | None = None
    ) -> UnlearningResult:
        """`hf_slug.unlearn` on this concept (the model is not modified unless
        `options.inplace`)."""
        return unlearn(
            model,
            processor,
            self.forget,
            self.retain,
            self.config,
            evaluator=self.evaluator,
            validation=self.validation,
            options=options,
        )


__all__ = ["ConceptRequest", "EvaluatorLike"]
