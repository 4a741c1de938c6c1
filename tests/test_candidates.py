"""Candidate layers: found by structure, never biases/norms/embeddings/logit_scale."""

from __future__ import annotations

import pytest
import torch
from conftest import clip_config
from transformers import BertConfig, BertModel, CLIPTextModel, CLIPVisionModel

from hf_slug import SLUGConfig, UnknownLayerError, UnsupportedModelError, unlearn
from hf_slug.towers import candidate_names, find_towers, require_clip, resolve_names


@pytest.mark.parametrize("towers", [("vision",), ("text",), ("vision", "text")])
def test_candidates_are_2d_block_weights_only(model, towers):
    names = candidate_names(model, towers, include_projections=True)
    params = dict(model.named_parameters())
    assert names
    for name in names:
        assert params[name].ndim == 2, name
        for banned in ("bias", "norm", "embedding", "logit_scale"):
            assert banned not in name, name
    assert {n.split(".")[0] for n in names} <= {
        "vision_model",
        "text_model",
        "visual_projection",
        "text_projection",
    }
    assert len([n for n in names if "layers" in n]) == 6 * 2 * len(towers)


@pytest.mark.parametrize(
    ("cls", "sub", "kind"),
    [(CLIPTextModel, "text_config", "text"), (CLIPVisionModel, "vision_config", "vision")],
)
def test_towers_found_by_structure_in_standalone_models(cls, sub, kind):
    standalone = cls(getattr(clip_config(), sub))
    (tower,) = find_towers(standalone)
    assert tower.kind == kind
    names = candidate_names(standalone, (kind,))
    assert names[0] in dict(standalone.named_parameters())


def test_unknown_layer_names_the_problem(model):
    allowed = candidate_names(model)
    with pytest.raises(UnknownLayerError, match="not a candidate layer"):
        resolve_names(model, ["vision_model.encoder.layers.9.mlp.fc1.weight"], allowed)
    with pytest.raises(UnknownLayerError):
        resolve_names(model, ["vision_model.encoder.layers.0.mlp.fc1.bias"], allowed)
    assert resolve_names(model, ["vision.L1.fc2"], allowed) == [
        "vision_model.encoder.layers.1.mlp.fc2.weight"
    ]


@pytest.mark.parametrize(
    "not_clip",
    [
        torch.nn.Linear(4, 4),
        BertModel(
            BertConfig(
                hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            )
        ),
    ],
)
def test_model_that_is_not_clip_is_refused(not_clip, processor):
    with pytest.raises(UnsupportedModelError, match="not a CLIP-like model"):
        require_clip(not_clip)
    with pytest.raises(UnsupportedModelError):
        unlearn(not_clip, processor, [], [], SLUGConfig(concept="x"))
