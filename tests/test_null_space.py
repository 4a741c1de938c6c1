"""The forget gradient projected off the retain inputs (`SLUGConfig.retain_null_space`)."""

from __future__ import annotations

import math

import pytest
import torch

from hf_slug import SLUGConfig, UnlearnOptions, unlearn
from hf_slug.cli import main as cli_main
from hf_slug.data import ImageTextPairs
from hf_slug.errors import ConfigError
from hf_slug.evaluation import StackedEvaluator, as_evaluator
from hf_slug.hub import model_card
from hf_slug.null_space import (
    PROJECTED_FIRST,
    choose_projected_first,
    input_covariances,
    principal_directions,
    project_gradients,
    tensors_of,
)
from hf_slug.search import SMALLER_STEP, Criterion, LayerSearch
from hf_slug.selection import LayerScore, units_to_search
from hf_slug.testing import random_images
from hf_slug.towers import short_name
from hf_slug.unlearn import default_evaluator

TEXT_Q = "text_model.encoder.layers.0.self_attn.q_proj.weight"
VISION_FC1 = "vision_model.encoder.layers.0.mlp.fc1.weight"


def _pairs(captions: list[str], seed: int = 0) -> ImageTextPairs:
    return ImageTextPairs(tuple(random_images(len(captions), seed=seed)), tuple(captions))


@pytest.mark.parametrize(
    ("eigenvalues", "energy", "kept"),
    [
        ([4.0, 1.0, 0.0], 0.5, 1),  # 0.8 of the trace in the first direction
        ([4.0, 1.0, 0.0], 0.8, 1),  # exactly 0.8: enough
        ([4.0, 1.0, 0.0], 0.999, 2),
        ([4.0, 1.0, 0.0], 1.0, 2),  # a direction without energy is no retain input
        ([1.0, 1.0, 1.0, 1.0], 0.6, 3),
    ],
)
def test_principal_directions_hold_the_asked_energy(eigenvalues, energy, kept):
    rotation, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues)).double())
    cov = rotation @ torch.diag(torch.tensor(eigenvalues).double()) @ rotation.T
    basis = principal_directions(cov, energy)
    assert basis.shape == (len(eigenvalues), kept)
    held = float(torch.trace(basis.T @ cov @ basis) / torch.trace(cov))
    assert held >= min(energy, 1.0) - 1e-9


def test_projected_gradient_leaves_retain_inputs_and_keeps_the_rest():
    torch.manual_seed(0)
    span = torch.randn(2, 6).double()  # retain inputs live in a 2-D subspace of R^6
    inputs = torch.randn(50, 2).double() @ span
    grad = torch.randn(4, 6)
    (projected,) = project_gradients({"w": grad}, {"w": inputs.T @ inputs}, 1.0).values()
    assert projected.dtype == grad.dtype
    assert (projected.double() @ inputs.T).abs().max() < 1e-5  # ΔW x_r = 0
    orthogonal = torch.linalg.svd(span).Vh[2:]  # directions no retain input has
    assert torch.allclose(projected.double() @ orthogonal.T, grad.double() @ orthogonal.T)


def test_tensors_without_inputs_are_returned_as_they_are():
    grad = torch.randn(3, 3)
    out = project_gradients({"a": grad, "b": grad}, {"b": torch.zeros(3, 3)}, 0.9)
    assert out["a"] is grad and out["b"] is grad


def test_a_shared_bases_dict_finds_each_covariance_s_directions_once(monkeypatch):
    """`unlearn` projects the plain and the misspelt forget gradients on the same covariances:
    the second projection reuses the first one's eigendecompositions, with the same result."""
    import hf_slug.null_space as null_space

    torch.manual_seed(2)
    inputs = torch.randn(20, 5).double()
    covs = {"q": inputs.T @ inputs}
    covs["k"] = covs["q"]  # q/k/v share one covariance object
    first, second = ({n: torch.randn(3, 5) for n in covs} for _ in range(2))
    expected = project_gradients(second, covs, 0.9)
    calls = []
    real = null_space.principal_directions
    monkeypatch.setattr(
        null_space, "principal_directions", lambda c, e: calls.append(1) or real(c, e)
    )
    bases: dict = {}
    project_gradients(first, covs, 0.9, bases)
    again = project_gradients(second, covs, 0.9, bases)
    assert len(calls) == 1
    assert all(torch.equal(again[n], expected[n]) for n in covs)


def test_padding_is_no_input(model, processor):
    """A caption's covariance does not depend on how far its batch pads it."""
    captions = ["a photo of zorb.", "a long caption that makes the batch pad the other one."]
    together = input_covariances(
        model, processor, _pairs(captions), [TEXT_Q], batch_size=2, progress=False
    )[TEXT_Q]
    alone = input_covariances(
        model, processor, _pairs(captions), [TEXT_Q], batch_size=1, progress=False
    )[TEXT_Q]
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert torch.allclose(together, together.T)
    assert float(torch.linalg.eigvalsh(together).min()) > -1e-6 * float(together.trace())


def test_only_the_named_towers_are_projected(model, processor):
    torch.manual_seed(1)
    params = dict(model.named_parameters())
    grads = {n: torch.randn_like(params[n]) for n in (TEXT_Q, VISION_FC1)}
    assert tensors_of(model, list(grads), ("text",)) == [TEXT_Q]
    retain = _pairs([f"a photo of person {i}." for i in range(6)])
    covs = input_covariances(model, processor, retain, [TEXT_Q], progress=False)
    out = project_gradients(grads, covs, 0.99)
    assert out[VISION_FC1] is grads[VISION_FC1]
    assert not torch.equal(out[TEXT_Q], grads[TEXT_Q])
    assert out[TEXT_Q].norm() < grads[TEXT_Q].norm()  # a projection never grows a row


def test_siblings_reading_one_input_share_its_covariance(model, processor):
    """q/k/v read the same tensor: one covariance, equal to what each would collect alone."""
    k_name = TEXT_Q.replace("q_proj", "k_proj")
    retain = _pairs([f"a photo of person {i}." for i in range(5)])
    both = input_covariances(model, processor, retain, [TEXT_Q, k_name], progress=False)
    alone = input_covariances(model, processor, retain, [k_name], progress=False)
    assert both[k_name] is both[TEXT_Q]
    assert torch.allclose(both[k_name], alone[k_name])


@pytest.mark.parametrize(
    ("covariances", "chosen"),
    [
        (None, "plain, best utility"),  # SLUG's rule: the best utility, ties to the smaller step
        ({"b": 1, "d": 1}, "projected, small step"),  # projected edits first, then the rule
        ({"b": 1, "d": 1, "c": 1}, "projected, small step"),  # a lower utility stays lower
        ({"e": 1}, "plain, best utility"),  # no projected edit is usable: the plain ones
    ],
)
def test_projected_edits_come_first_then_utility_then_the_smaller_step(covariances, chosen):
    searches = {
        "plain, best utility": LayerSearch(
            ("a",), step=0.2, metrics={"utility": 0.95}, status="met"
        ),
        "projected, small step": LayerSearch(
            ("b",), step=2.0, metrics={"utility": 0.9}, status="met"
        ),
        "lower utility": LayerSearch(("c",), step=0.1, metrics={"utility": 0.8}, status="met"),
        "projected, large step": LayerSearch(
            ("d",), step=5.0, metrics={"utility": 0.9}, status="met"
        ),
        "projected, not met": LayerSearch(("e",), step=1.0, metrics={"utility": 1.0}, status="no"),
    }
    covs = None if covariances is None else {k: torch.eye(2) for k in covariances}
    best, rule = choose_projected_first(list(searches.values()), Criterion(), covs)
    assert best is searches[chosen]
    assert rule.endswith(SMALLER_STEP)
    assert rule.startswith(PROJECTED_FIRST) == (covs is not None)


def _retain_and_forget_outputs(model, processor, delta, retain, forget):
    """‖ΔW x‖ / ‖x‖ averaged over the real tokens of the retain and of the forget captions."""
    layer = model.get_submodule(TEXT_Q.rsplit(".", 1)[0])
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    ratios = []
    for pairs in (retain, forget):
        seen.clear()
        inputs = processor(text=list(pairs.texts), return_tensors="pt", padding=True)
        with torch.no_grad():
            model.text_model(**inputs)
        x = seen[0][inputs["attention_mask"].bool()]
        ratios.append(float(((x @ delta.T).norm(dim=-1) / x.norm(dim=-1)).mean()))
    hook.remove()
    return ratios


def test_unlearn_edits_along_the_null_space_by_default(model, processor, tmp_path):
    """With the default, the chosen text edit barely moves the retain captions' tokens at its
    layer compared with SLUG's plain gradient; the forget captions' tokens still move."""
    names = ["zorb", "quax", "blip", "frod"]
    forget = _pairs(["a photo of zorb."] * 8, seed=1)
    retain = _pairs([f"a photo of {n}." for n in names[1:] for _ in range(4)], seed=2)
    results = {}
    for energy in (0.999, None):
        config = SLUGConfig(
            concept="zorb",
            layer=TEXT_Q,
            candidate_labels=names,
            validation_share=0.0,
            retain_null_space=energy,
            forget_target=1.0,  # the first trial meets it: same step for both
        )
        with pytest.warns(UserWarning, match="already meets"):  # forget_target=1.0
            results[energy] = unlearn(
                model, processor, forget, retain, config, options=UnlearnOptions(progress=False)
            )
    projected, plain = (results[e].deltas[TEXT_Q] for e in (0.999, None))
    assert results[0.999].step == results[None].step
    assert float(projected.norm()) == pytest.approx(
        float(plain.norm()), rel=1e-4
    )  # ‖Δθ‖ = s‖θ⁰‖ both
    retain_moved, forget_moved = _retain_and_forget_outputs(
        model, processor, projected, retain, forget
    )
    plain_retain, _ = _retain_and_forget_outputs(model, processor, plain, retain, forget)
    assert retain_moved < 0.2 * plain_retain
    assert forget_moved > 3 * retain_moved
    assert "99.9 % of the retain inputs" in results[0.999].summary()["direction"]
    assert results[None].summary()["direction"] == "the forget gradient (SLUG)"
    assert results[0.999].to_delta().config.settings["retain_null_space"] == 0.999
    results[0.999].to_delta().save_pretrained(tmp_path / "zorb")
    card = model_card(tmp_path / "zorb")
    assert "| update direction | the forget gradient off 99.9 % of the retain inputs" in card


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("retain_null_space", 0, "(0, 1]"),
        ("retain_null_space", 1.5, "(0, 1]"),
        ("retain_null_space", math.nan, "(0, 1]"),
        ("retain_null_space", "0.9", "(0, 1]"),
        ("null_space_towers", (), "non-empty subset"),
        ("null_space_towers", ("audio",), "non-empty subset"),
        ("null_space_towers", 5, "'text', 'vision'"),
    ],
)
def test_bad_null_space_settings_are_config_errors(field, value, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("]", r"\]")):
        SLUGConfig(concept="zorb", **{field: value})


def test_settings_round_trip_and_the_command_line_takes_them(capsys):
    config = SLUGConfig(concept="zorb", null_space_towers="text")
    assert config.null_space_towers == ("text",)
    assert config.to_dict()["null_space_towers"] == ["text"]
    assert SLUGConfig(**config.to_dict()).null_space_towers == ("text",)
    for bad in ("0", "1.5", "nan", "often"):
        argv = ["unlearn", "--model", "m", "--concept", "c", "--forget", "f", "--retain", "r"]
        assert cli_main([*argv, "--out", "o", "--retain-null-space", bad]) == 2
        assert "--retain-null-space" in capsys.readouterr().err


def test_a_vision_edit_reports_the_plain_gradient(model, processor):
    """Only text tensors are projected by default: a chosen vision tensor says so."""
    config = SLUGConfig(
        concept="zorb",
        layer=VISION_FC1,
        candidate_labels=["zorb", "quax"],
        validation_share=0.0,
        forget_target=1.0,
    )
    forget = _pairs(["a photo of zorb."] * 4, seed=1)
    retain = _pairs(["a photo of quax."] * 4, seed=2)
    with pytest.warns(UserWarning, match="already meets"):
        result = unlearn(
            model, processor, forget, retain, config, options=UnlearnOptions(progress=False)
        )
    assert result.chosen_names == (VISION_FC1,)
    assert result.direction == "the forget gradient (SLUG)"


def _score(tower: str, block: int, kind: str, on_front: bool) -> LayerScore:
    prefix = "text_model" if tower == "text" else "vision_model"
    module = "mlp" if kind.startswith("fc") else "self_attn"
    name = f"{prefix}.encoder.layers.{block}.{module}.{kind}.weight"
    return LayerScore(
        (name,), tower, importance=1.0 / (1 + block), alignment=0.1, on_front=on_front
    )


SCORES = [
    _score("text", 0, "v_proj", True),
    _score("text", 0, "fc2", False),
    _score("text", 1, "fc2", True),
    _score("text", 2, "fc2", False),
    _score("vision", 0, "fc1", True),
    _score("vision", 1, "fc2", False),
]


@pytest.mark.parametrize(
    ("settings", "searched"),
    [
        ({}, ["text.L0.v_proj", "text.L1.fc2", "text.L0.fc2", "text.L2.fc2", "vision.L0.fc1"]),
        ({"top_k": 1}, ["text.L0.v_proj", "vision.L0.fc1"]),  # top_k bounds every tower
        ({"retain_null_space": None}, ["text.L0.v_proj", "text.L1.fc2", "vision.L0.fc1"]),
        (
            {"null_space_towers": ("text", "vision")},
            [
                *("text.L0.v_proj", "text.L1.fc2", "text.L0.fc2", "text.L2.fc2"),
                *("vision.L0.fc1", "vision.L1.fc2"),
            ],
        ),
        ({"towers": ("vision",)}, ["vision.L0.fc1"]),
        ({"every_mlp_output": False}, ["text.L0.v_proj", "text.L1.fc2", "vision.L0.fc1"]),
    ],
)
def test_null_space_towers_search_every_mlp_output_besides_the_front(settings, searched):
    fields = {k: v for k, v in settings.items() if k != "every_mlp_output"}
    config = SLUGConfig(concept="zorb", **{"towers": ("text", "vision"), **fields})
    units = units_to_search(SCORES, config, settings.get("every_mlp_output", True))
    assert [short_name(u) for u in units] == searched


def test_only_an_evaluator_that_reports_prompt_drift_widens_the_candidates(processor):
    """The extra `fc2` candidates are chosen among by the least drift: the default evaluator
    reports it (also under a stack), a plain callable does not."""
    names = ["zorb", "quax"]
    config = SLUGConfig(concept="zorb", candidate_labels=names, validation_share=0.0)
    forget, retain = _pairs(["a photo of zorb."] * 2, seed=1), _pairs(["a photo of quax."] * 2)
    default = default_evaluator(processor, forget, retain, config)
    assert default.tracks_drift
    assert StackedEvaluator(default, []).tracks_drift
    assert not as_evaluator(lambda model: {"forget_acc": 0.0}).tracks_drift


def _without_drift(model: torch.nn.Module) -> dict[str, float]:
    return {"forget_acc": 0.0, "utility": 1.0}


def test_unlearn_searches_the_extra_fc2_only_with_the_drift(model, processor):
    """End to end: the default evaluator's search covers every text `fc2`; a user's evaluator
    without the drift searches SLUG's front only."""
    names = ["zorb", "quax", "blip"]
    config = SLUGConfig(
        concept="zorb",
        towers=("text",),
        candidate_labels=names,
        validation_share=0.0,
        forget_target=1.0,  # met at the first trial: one evaluation per unit
    )
    forget = _pairs(["a photo of zorb."] * 4, seed=1)
    retain = _pairs([f"a photo of {n}." for n in names[1:] for _ in range(2)], seed=2)
    searched = {}
    for label, evaluator in [("default", None), ("user", _without_drift)]:
        with pytest.warns(UserWarning, match="already meets"):
            result = unlearn(
                model, processor, forget, retain, config,
                evaluator=evaluator, options=UnlearnOptions(progress=False),
            )  # fmt: skip
        searched[label] = {s.label for s in result.searches}
    fc2 = {f"text.L{b}.fc2" for b in range(2)}  # the tiny model's two text blocks
    front = {s.label for s in result.layers if s.on_front}
    assert fc2 <= searched["default"]
    assert searched["user"] == front
    assert searched["default"] == front | fc2
