"""Adversarial checks of `hf_slug.null_space` (the forget gradient off the retain inputs):
precision, degenerate retain sets, projections, devices, hosts and old deltas."""

from __future__ import annotations

import dataclasses
import doctest
import warnings

import pytest
import torch

import hf_slug.null_space as null_space
from hf_slug import SLUGConfig, UnlearnOptions, unlearn
from hf_slug.config import UnlearningConfig
from hf_slug.data import PROCESSOR_KWARGS, ImageTextPairs
from hf_slug.delta import ConceptDelta
from hf_slug.errors import SLUGError
from hf_slug.gradients import compute_gradients
from hf_slug.hub import model_card
from hf_slug.null_space import (
    PROJECTED_FIRST,
    input_covariances,
    null_space_gradients,
    principal_directions,
    project_gradients,
)
from hf_slug.testing import random_images, tiny_clip

TEXT = "text_model.encoder.layers.0."
Q, K, V = (f"{TEXT}self_attn.{p}_proj.weight" for p in "qkv")
FC2 = f"{TEXT}mlp.fc2.weight"
TEXT_PROJECTION = "text_projection.weight"
VISION_FC1 = "vision_model.encoder.layers.0.mlp.fc1.weight"
NAMES = ["zorb", "quax", "blip", "frod"]


def _pairs(captions: list[str], seed: int = 0) -> ImageTextPairs:
    return ImageTextPairs(tuple(random_images(len(captions), seed=seed)), tuple(captions))


FORGET = _pairs(["a photo of zorb."] * 8, seed=1)
RETAIN = _pairs([f"a photo of {n}." for n in NAMES[1:] for _ in range(4)], seed=2)


def _config(**kwargs) -> SLUGConfig:
    settings = dict(concept="zorb", candidate_labels=NAMES, validation_share=0.0)
    return SLUGConfig(**{**settings, "forget_target": 1.0, **kwargs})  # the first trial meets it


def _unlearn(model, processor, config, retain=RETAIN, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # forget_target=1.0 is "already met"
        return unlearn(
            model,
            processor,
            FORGET,
            retain,
            config,
            options=UnlearnOptions(progress=False, **options),
        )


def _drift(model, deltas: dict, covariances: dict) -> float:
    """How much `deltas` move the covariances' inputs' outputs, relative to the outputs."""
    moved = total = 0.0
    for name, delta in deltas.items():
        cov = covariances[name]
        weight = model.get_parameter(name).detach().double()
        d = delta.detach().double()
        moved += float(torch.einsum("oi,ij,oj->", d, cov, d))
        total += float(torch.einsum("oi,ij,oj->", weight, cov, weight))
    return (moved / total) ** 0.5


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# -- confirmed bugs -------------------------------------------------------------------------------
def test_the_module_example_runs():
    """The module docstring's example (a float32 covariance) runs and gives what it shows."""
    failed, attempted = doctest.testmod(null_space, verbose=False)
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_covariances_of_any_float_dtype_are_projected(dtype):
    """A user's covariance need not be float64 (`input_covariances` gives float64)."""
    cov = torch.diag(torch.tensor([4.0, 1.0, 0.0])).to(dtype)
    out = project_gradients({"w": torch.ones(2, 3)}, {"w": cov}, 0.75)["w"]
    assert out.dtype == torch.float32
    assert out[0].tolist() == [0.0, 1.0, 1.0]


def test_energy_one_keeps_no_round_off_direction(model, processor):
    """All the energy of one short caption lies in its few tokens' span: fp32 round-off of the
    covariance is no retain input, so `energy=1.0` removes no more directions than tokens."""
    one = _pairs(["x"])
    tokens = int(processor(text=["x"], **PROCESSOR_KWARGS)["attention_mask"].sum())
    cov = input_covariances(model, processor, one, [Q], progress=False)[Q]
    assert principal_directions(cov, 1.0).shape[1] <= tokens


def test_energy_one_never_edits_along_round_off(model, processor, monkeypatch):
    """When the retain inputs span a tensor's whole input space (real CLIPs: thousands of
    tokens in 512-1280 dims; here a well-conditioned one), `retain_null_space=1.0` leaves
    nothing of its forget gradient: unlearn warns and cannot step along it, instead of
    rescaling round-off to s‖θ⁰‖."""
    width = model.get_parameter(FC2).shape[1]
    torch.manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(width, width, dtype=torch.float64))
    spanning = {FC2: rotation @ torch.diag(torch.linspace(1, 2, width).double()) @ rotation.T}
    monkeypatch.setattr(null_space, "input_covariances", lambda *_a, **_k: spanning)
    raw = compute_gradients(model, processor, FORGET, "forget", [FC2], progress=False)[FC2]
    with pytest.warns(UserWarning, match="lower retain_null_space"):  # and "already meets"
        result = unlearn(
            model,
            processor,
            FORGET,
            RETAIN,
            _config(layer=FC2, retain_null_space=1.0, forget_target=0.0),
            options=UnlearnOptions(progress=False),
        )
    # no direction is left to forget along: the edit is zero, not rescaled round-off
    assert all(not torch.any(t) for t in result.deltas.values())
    assert raw.norm() > 0


def test_projection_tensors_are_projected_or_the_result_says_so(model, processor):
    """`include_projections=True`: `text_projection` is a text-tower candidate; its edit must
    be projected, or the reported direction must not claim a projection."""
    kwargs = dict(layer=TEXT_PROJECTION, include_projections=True)
    projected = _unlearn(model, processor, _config(**kwargs))
    plain = _unlearn(model, processor, _config(retain_null_space=None, **kwargs))
    assert projected.chosen_names == (TEXT_PROJECTION,)
    same = torch.allclose(projected.deltas[TEXT_PROJECTION], plain.deltas[TEXT_PROJECTION])
    assert not same or projected.direction == plain.direction


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_covariance_is_an_error(bad):
    """NaN came back as the unprojected gradient (while the result claims a projection); inf
    as an arbitrary one. Either is an error that names the tensor."""
    cov = torch.eye(4, dtype=torch.float64)
    cov[0, 0] = bad
    with pytest.raises(SLUGError, match="some.weight"):
        project_gradients({"some.weight": torch.randn(4, 4)}, {"some.weight": cov}, 0.9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_given_gradients_on_the_gpu_are_projected():
    """`UnlearnOptions(forget_gradients={...})` may hold CUDA tensors; covariances are CPU."""
    cov = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    out = project_gradients({"w": torch.ones(2, 3, device="cuda")}, {"w": cov}, 0.75)["w"]
    assert out.device.type == "cuda" and out[0].tolist() == [0.0, 1.0, 1.0]


# -- edge cases that work: pinned -----------------------------------------------------------------
def test_siblings_share_one_covariance_whichever_are_named(model, processor):
    """q and v without k still alias (the hook of k is absent between them)."""
    both = input_covariances(model, processor, RETAIN, [V, Q], progress=False)
    alone = input_covariances(model, processor, RETAIN, [V], progress=False)
    assert both[Q] is both[V]
    assert torch.allclose(both[V], alone[V])


def test_qkv_groups_are_projected_and_tie_to_projected_edits(model, processor):
    result = _unlearn(model, processor, _config(layer=Q, group="qkv"))
    assert result.chosen_names == (Q, K, V)
    assert result.rule.startswith(PROJECTED_FIRST)
    raw = compute_gradients(model, processor, FORGET, "forget", [Q], progress=False)[Q]
    assert _cosine(result.deltas[Q], raw) < 0.99  # projected, not the plain gradient


def test_given_retain_gradients_still_project(model, processor):
    given = compute_gradients(model, processor, RETAIN, "retain", [Q], progress=False)
    computed = _unlearn(model, processor, _config(layer=Q))
    reused = _unlearn(model, processor, _config(layer=Q), retain_gradients=given)
    assert reused.direction == computed.direction != "the forget gradient (SLUG)"
    assert torch.allclose(reused.deltas[Q], computed.deltas[Q], atol=1e-7)


@pytest.mark.parametrize("captions", [["a photo of quax."], ["."] * 2, ["same."] * 3])
def test_tiny_and_degenerate_retain_sets(model, processor, captions):
    """One pair, a lone full stop, all-equal captions: a finite covariance of
    low rank, and an edit off it."""
    retain = _pairs(captions, seed=4)
    cov = input_covariances(model, processor, retain, [Q], progress=False)[Q]
    assert torch.isfinite(cov).all() and float(cov.trace()) > 0
    result = _unlearn(model, processor, _config(layer=Q), retain)
    assert result.converged
    assert _drift(model, result.deltas, {Q: cov}) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(processor, dtype):
    half = tiny_clip().to(dtype)
    covs = input_covariances(half, processor, RETAIN, [Q, VISION_FC1], progress=False)
    assert all(c.dtype == torch.float64 and c.device.type == "cpu" for c in covs.values())
    assert all(torch.isfinite(c).all() for c in covs.values())
    drift = _drift(half, {Q: torch.randn(32, 32, dtype=dtype)}, covs)
    assert 0 < drift < float("inf")
    result = _unlearn(half, processor, _config(top_k=2))
    assert result.converged and all(d.dtype == torch.float32 for d in result.deltas.values())


def test_vision_only_candidates_run_nothing(model):
    """`unlearn_vlm`'s candidates are vision blocks: with the default towers nothing runs
    (no processor is needed) and the gradients come back as they are."""
    grads = {VISION_FC1: torch.randn_like(model.get_parameter(VISION_FC1))}
    for config in (_config(), _config(retain_null_space=None)):
        out, covs = null_space_gradients(model, None, RETAIN, grads, config, progress=False)
        assert covs is None and out[VISION_FC1] is grads[VISION_FC1]


HOST_Q = "text_encoder." + Q.removeprefix("text_model.")


@pytest.fixture(scope="module")
def sd_runs(processor):
    """A tiny SD pipeline and its text edits at Q, with the default null space and without."""
    pytest.importorskip("diffusers")
    from hf_slug.hosts.diffusion import PipelineOptions, unlearn_pipeline
    from hf_slug.testing import tiny_sd_pipeline

    clip = tiny_clip(width=128)  # wider than the 77 positions a pipeline pads to
    pipe = tiny_sd_pipeline(clip)
    options = PipelineOptions(
        evaluator=lambda _m: {"forget_acc": 1.0, "utility": 1.0},
        unlearn=UnlearnOptions(progress=False),
    )
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # forget_target=1.0 is "already met"
        for energy in (0.999, None):
            config = _config(towers=("text",), layer=Q, retain_null_space=energy)
            runs[energy] = unlearn_pipeline(
                pipe, clip, processor, "zorb", RETAIN, forget=FORGET, config=config, options=options
            )
    return pipe, runs


def test_stable_diffusion_pipelines_edit_off_the_retain_inputs(sd_runs):
    _, runs = sd_runs
    assert "99.9 %" in runs[0.999].result.direction
    projected, plain = (runs[e].delta.tensors[HOST_Q] for e in (0.999, None))
    assert not torch.allclose(projected, plain)


def test_old_deltas_read_as_slug_gradients(model, processor, tmp_path):
    """A delta saved before the null space (no direction, no new settings) reads as SLUG's."""
    delta = _unlearn(model, processor, _config(layer=Q)).to_delta()
    settings = {
        k: v
        for k, v in delta.config.settings.items()
        if k not in ("retain_null_space", "null_space_towers")
    }
    metrics = {k: v for k, v in delta.config.metrics.items() if k != "direction"}
    old = dataclasses.replace(delta.config, settings=settings, metrics=metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = UnlearningConfig.from_dict(old.to_dict())
    assert SLUGConfig(**again.settings).retain_null_space == 0.999  # today's default, to know
    ConceptDelta(again, delta.tensors).save_pretrained(tmp_path / "old")
    assert "| update direction | the forget gradient (SLUG) |" in model_card(tmp_path / "old")


def test_a_zero_forget_gradient_is_no_emptied_direction(model, processor):
    """A tensor the forget loss does not reach has a zero gradient: nothing to warn about."""
    grads = {Q: torch.zeros_like(model.get_parameter(Q))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, covs = null_space_gradients(model, processor, RETAIN, grads, _config(), progress=False)
    assert covs is not None and not torch.any(out[Q])
