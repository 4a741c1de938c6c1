"""What the trust tests share: two weight names, the tiny CLIP `base` fixture and two deltas on it.

    from trust_fixtures import FC1, V_PROJ, base_fixture, two_deltas  # noqa: F401  (`base`)

The fixture is named `base` for the tests; its function has another name, so that a test's
`base` argument does not shadow the import (ruff F811).
"""

from __future__ import annotations

import pytest
from conftest import tiny_clip
from test_adapters import make_delta

from hf_slug import ConceptDelta

FC1 = "vision_model.encoder.layers.0.mlp.fc1.weight"
V_PROJ = "text_model.encoder.layers.0.self_attn.v_proj.weight"


@pytest.fixture(scope="module", name="base")
def base_fixture():
    return tiny_clip()


def two_deltas(base) -> dict[str, ConceptDelta]:
    """'a' (Ada Byron on FC1, seed 0) and 'b' (Bob Stone on V_PROJ, seed 1) made on `base`."""
    return {
        "a": make_delta(base, "Ada Byron", [FC1], 0),
        "b": make_delta(base, "Bob Stone", [V_PROJ], 1),
    }
